"""pymusicrbm: restricted Boltzmann machines for music audio, on fused C++/CUDA PyTorch custom ops.

Importing the package is cheap and changes no process-wide setting: torch, the compiled ops (``pymusicrbm._C``,
loaded by ``pymusicrbm.ops``) and the models are imported on first use of a name below, so that the ``pymusicrbm``
command can choose OpenMP settings before torch starts (see ``cli.main``).
"""
import importlib

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "RBM": "rbm", "TrainingDivergedError": "_base", "DBN": "dbn", "DBNClassifier": "dbn",
    "ConvRBM": "conv_rbm", "ConvDBN": "conv_rbm", "ConvVAE": "vae",
}
_SUBMODULES = ("ops", "audio", "datasets", "pipelines", "checkpoint", "plots", "reporting", "ais")
__all__ = ["ops", *_EXPORTS]


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'pymusicrbm' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__) | set(_SUBMODULES))
