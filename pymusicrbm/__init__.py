"""pymusicrbm: restricted Boltzmann machines for music audio, on fused C++/CUDA PyTorch custom ops."""
import os

# Training runs many small parallel regions: OpenMP workers that sleep at barriers instead of spinning keep a busy
# or shared machine from stalling (measured 4x faster steps on a loaded 2-core box). Effective only when torch has
# not been imported yet; a value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402, F401  (loads libtorch before our extension)

from . import _C, ops  # noqa: E402, F401  (_C registers the torch.ops.pymusicrbm ops)
from .conv_rbm import ConvDBN, ConvRBM
from .dbn import DBN, DBNClassifier
from ._base import TrainingDivergedError
from .rbm import RBM
from .vae import ConvVAE

__version__ = "0.1.0"
__all__ = ["ops", "RBM", "DBN", "DBNClassifier", "ConvRBM", "ConvDBN", "ConvVAE", "TrainingDivergedError"]
