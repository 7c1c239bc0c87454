"""pymusicrbm: restricted Boltzmann machines for music audio, on fused C++/CUDA PyTorch custom ops."""
import torch  # noqa: F401  (loads libtorch before our extension)

from . import _C, ops  # noqa: F401  (_C registers the torch.ops.pymusicrbm ops)
from .conv_rbm import ConvDBN, ConvRBM
from .dbn import DBN, DBNClassifier
from .rbm import RBM, TrainingDivergedError
from .vae import ConvVAE

__version__ = "0.1.0"
__all__ = ["ops", "RBM", "DBN", "DBNClassifier", "ConvRBM", "ConvDBN", "ConvVAE", "TrainingDivergedError"]
