"""The studies behind the `pymusicrbm` subcommands: each module has `run(data, out_dir, **options) -> dict` and
`add_arguments(parser)`; `_study` holds what they share (options, folds, the results schema), `classifiers` the
classifiers and window voting, `saved` the trained pipelines a study saves (``save_model``) and
:func:`load_pipeline` reads back to apply to new audio files."""
import importlib

__all__ = ["load_pipeline", "SavedPipeline"]


def __getattr__(name):  # lazily: importing the package must not import torch
    if name in __all__:
        return getattr(importlib.import_module(".saved", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
