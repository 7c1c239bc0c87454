"""Convolutional variational autoencoder on fixed-length mel-spectrogram excerpts.

Plain PyTorch (no custom ops): the VAE is a feature learner and a generator to compare with the RBM models.
Spectrograms are standardised per mel band (statistics of the training data, stored with the model) and the
decoder is a Gaussian with a learned per-band standard deviation, so the reconstruction term is a real
log-likelihood and the balance with the KL term does not depend on the dB scale of the input.
"""
from __future__ import annotations

import math
import warnings
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import torch
from sklearn.base import TransformerMixin
from torch import nn

from . import distributed
from ._base import COMMON_CONSTRAINTS, Interval, TrainedEstimator
from ._utils import draw_seed, split_indices
from .checkpoint import load_state

__all__ = ["ConvVAE", "cut_excerpts", "receptive_field"]

_KERNEL, _STRIDE = 4, 2
# The formats of pymusicrbm 0.1 (checkpoint version 1), before ConvVAE used the shared CheckpointMixin: a saved
# model still loads; a training checkpoint cannot be resumed (its validation split was drawn differently).
_V1_TRAIN_FORMAT = "pymusicrbm.ConvVAE.training"
_V1_MODEL_FORMAT = "pymusicrbm.ConvVAE"


def receptive_field(n_layers: int) -> int:
    """Receptive field (in bins/frames) of ``n_layers`` stacked kernel-4 stride-2 convolutions."""
    return 1 + (_KERNEL - 1) * (2 ** n_layers - 1)


def cut_excerpts(mel: np.ndarray, n_frames: int, hop: int | None = None) -> np.ndarray:
    """Cut a (n_mels, T) spectrogram into excerpts (k, n_mels, n_frames) starting every ``hop`` frames.

    ``hop`` defaults to ``n_frames`` (no overlap). The tail that does not fill a whole excerpt is dropped.
    """
    mel = np.asarray(mel)
    if mel.ndim != 2:
        raise ValueError(f"cut_excerpts: mel must be 2-D (n_mels, n_frames), got shape {mel.shape}")
    hop = n_frames if hop is None else int(hop)
    if n_frames < 1 or hop < 1:
        raise ValueError(f"cut_excerpts: n_frames and hop must be >= 1, got n_frames={n_frames}, hop={hop}")
    if mel.shape[1] < n_frames:
        raise ValueError(f"cut_excerpts: spectrogram has {mel.shape[1]} frames, shorter than one excerpt "
                         f"of n_frames={n_frames}")
    starts = range(0, mel.shape[1] - n_frames + 1, hop)
    return np.stack([mel[:, s:s + n_frames] for s in starts])


class _Net(nn.Module):
    """Encoder: strided Conv2d + BatchNorm + GELU, then a linear map to (mu, logvar); decoder mirrors it."""

    def __init__(self, n_mels, n_frames, latent_dim, channels):
        super().__init__()
        self.n_mels, self.n_frames = n_mels, n_frames
        scale = 2 ** len(channels)
        # Inputs are padded up to a multiple of 2**depth so every stride-2 layer halves the size exactly.
        self.h, self.w = -(-n_mels // scale), -(-n_frames // scale)
        self.pad_h, self.pad_w = self.h * scale - n_mels, self.w * scale - n_frames
        enc, c_in = [], 1
        for c in channels:
            enc += [nn.Conv2d(c_in, c, _KERNEL, _STRIDE, 1), nn.BatchNorm2d(c), nn.GELU()]
            c_in = c
        self.encoder = nn.Sequential(*enc)
        flat = channels[-1] * self.h * self.w
        self.to_latent = nn.Linear(flat, 2 * latent_dim)
        self.from_latent = nn.Sequential(nn.Linear(latent_dim, flat), nn.GELU())
        dec = []
        rev = list(channels[::-1]) + [1]
        for i, (a, b) in enumerate(zip(rev[:-1], rev[1:])):
            dec.append(nn.ConvTranspose2d(a, b, _KERNEL, _STRIDE, 1))
            if i < len(rev) - 2:
                dec += [nn.BatchNorm2d(b), nn.GELU()]
        self.decoder = nn.Sequential(*dec)
        # log standard deviation of the Gaussian decoder, one per mel band (the "calibrated decoder").
        self.log_sigma = nn.Parameter(torch.zeros(n_mels))
        self.channels_last = channels[-1]

    def encode(self, x):  # x: (B, n_mels, n_frames), standardised
        x = nn.functional.pad(x.unsqueeze(1), (0, self.pad_w, 0, self.pad_h))
        mu, logvar = self.to_latent(self.encoder(x).flatten(1)).chunk(2, dim=1)
        return mu, logvar.clamp(-12.0, 8.0)

    def forward(self, x, eps=None):
        """(mu, logvar, reconstruction) of standardised x; eps None decodes the posterior mean."""
        mu, logvar = self.encode(x)
        z = mu if eps is None else mu + eps * torch.exp(0.5 * logvar)
        return mu, logvar, self.decode(z)

    def decode(self, z):
        h = self.from_latent(z).view(-1, self.channels_last, self.h, self.w)
        return self.decoder(h)[:, 0, :self.n_mels, :self.n_frames]


def _to_state(d: dict, prefix: str) -> dict:
    return {prefix + k: v.detach() for k, v in d.items()}


def _from_state(tensors: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


class ConvVAE(TransformerMixin, TrainedEstimator):
    """Convolutional VAE on mel-spectrogram excerpts of shape (n_mels, n_frames), in dB.

    Parameters
    ----------
    n_mels, n_frames : int, default=64 and 128
        Excerpt size (64 or 96 mel bands; 128 frames is about 3 s at 22050 Hz, hop 512). Both must be at least
        the encoder's receptive field, ``receptive_field(len(channels))`` (46 for the default 4 layers).
    latent_dim : int, default=32
        Dimension of the Gaussian latent.
    channels : tuple of int, default=(32, 64, 128, 256)
        Output channels of the strided convolutions (the decoder mirrors them).
    beta : float, default=1.0
        Weight of the KL term (beta < 1 gives sharper reconstructions and more informative latents).
    kl_warmup_epochs : int, default=10
        The KL weight rises linearly from beta/kl_warmup_epochs to beta over these epochs (0: no warm-up).
        Early stopping does not count epochs inside the warm-up.
    learning_rate : float, default=1e-3
        Step size of Adam, the model's own (unsupervised) training (was ``lr``).
    batch_size : int, default=64
        Excerpts per mini-batch.
    weight_decay : float, default=0.0
        Adam's L2 weight decay.
    n_iter, n_iter_no_change : int, default=100 and 10
        At most ``n_iter`` epochs (was ``n_epochs``); stop after ``n_iter_no_change`` epochs (was ``patience``)
        without improvement of the validation objective (the negative ELBO with the target beta: the ELBO itself
        when beta=1). The weights of the best epoch are kept. ``n_iter_no_change=None`` disables early stopping.
    validation_fraction : float, default=0.1
        Fraction of the excerpts held out for validation when ``fit`` gets no ``X_valid``.
    device : str, torch.device or None, default='cpu'
        'cpu' (default), 'cuda', ...; None picks cuda when available.
    dtype : {'float32', 'float64'} or torch dtype, default='float32'
        Precision of the computation.
    random_state : int, RandomState instance or None, default=None
        The seed: None (fresh entropy), an int or a ``RandomState``. Seeds initialisation, shuffling, the
        validation split and the reparameterisation noise.
    verbose : int, default=0
        0 silent, 1 a progress bar over epochs.

    Attributes
    ----------
    history_ : dict of lists
        Per epoch, in nats per excerpt: ``elbo``, ``recon`` (Gaussian negative log-likelihood) and ``kl`` on the
        training excerpts, the same with ``_valid`` on the validation excerpts (NaN without any), the
        ``kl_weight`` used, and ``epoch``, ``time``.
    n_iter_ : int
        Epochs run.
    best_epoch_ : int
        The epoch (1-based, as ``n_iter_``) whose weights are kept.
    mean_, std_ : ndarray (n_mels,)
        Per-band standardisation statistics, dB.
    range_ : ndarray (2,)
        Min and max dB of the training data; decoded spectrograms are clipped to it.

    See Also
    --------
    ConvRBM : The convolutional RBM these features are compared with.

    Examples
    --------
    Random "spectrograms" in dB, 16 bands x 16 frames (two layers have a receptive field of 10):

    >>> import numpy as np
    >>> from pymusicrbm import ConvVAE
    >>> X = np.random.default_rng(0).normal(-40.0, 10.0, (16, 16, 16)).astype(np.float32)
    >>> vae = ConvVAE(n_mels=16, n_frames=16, latent_dim=2, channels=(4, 8), batch_size=8, n_iter=2,
    ...               random_state=0).fit(X)
    >>> vae.transform(X).shape
    (16, 2)
    >>> vae.n_iter_, vae.mean_.shape
    (2, (16,))
    """

    _tuple_params = ("channels",)
    _renamed_params = {"lr": "learning_rate", "n_epochs": "n_iter", "patience": "n_iter_no_change"}
    _parameter_constraints = {
        **COMMON_CONSTRAINTS,
        "n_mels": [Interval(Integral, 1, None, closed="left")],
        "n_frames": [Interval(Integral, 1, None, closed="left")],
        "latent_dim": [Interval(Integral, 1, None, closed="left")],
        "channels": ["array-like"],
        "beta": [Interval(Real, 0, None, closed="left")],
        "kl_warmup_epochs": [Interval(Integral, 0, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left"), None],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "device": [str, torch.device, None],
    }
    # settings a resumed fit must share with its checkpoint (the run would differ otherwise)
    _structural_params = ("n_mels", "n_frames", "latent_dim", "channels", "beta", "kl_warmup_epochs",
                          "learning_rate", "batch_size", "validation_fraction", "weight_decay")
    _progress_keys = ("elbo", "elbo_valid")

    def __init__(self, n_mels=64, n_frames=128, latent_dim=32, channels=(32, 64, 128, 256), beta=1.0,
                 kl_warmup_epochs=10, learning_rate=1e-3, batch_size=64, n_iter=100, n_iter_no_change=10,
                 validation_fraction=0.1, weight_decay=0.0, device="cpu", dtype="float32", random_state=None,
                 verbose=0, **renamed):
        self.n_mels = n_mels
        self.n_frames = n_frames
        self.latent_dim = latent_dim
        self.channels = channels
        self.beta = beta
        self.kl_warmup_epochs = kl_warmup_epochs
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.n_iter = n_iter
        self.n_iter_no_change = n_iter_no_change
        self.validation_fraction = validation_fraction
        self.weight_decay = weight_decay
        self.device = device
        self.dtype = dtype
        self.random_state = random_state
        self.verbose = verbose
        self._apply_renamed(renamed)

    # ------------------------------------------------------------------ checks
    def _check_combinations(self):
        channels = self.channels
        if (len(channels) == 0 or not all(isinstance(c, Integral) and not isinstance(c, bool) and c >= 1
                                          for c in channels)):
            raise ValueError(f"channels must be a non-empty tuple of positive ints, got {channels!r}")
        self._channels = tuple(int(c) for c in channels)
        rf = receptive_field(len(channels))
        for name in ("n_mels", "n_frames"):
            v = getattr(self, name)
            if v < rf:
                raise ValueError(f"{name}={v!r} is smaller than the receptive field of the {len(channels)}-"
                                 f"layer encoder ({rf}); use longer excerpts / more mel bands or fewer layers")

    def _check_X(self, X, name="X"):
        X = np.asarray(X, dtype=np.float32)
        if X.ndim == 2:
            X = X[None]
        if X.ndim != 3:
            raise ValueError(f"{name} must be 3-D (n_excerpts, n_mels, n_frames), got shape {X.shape}")
        if X.shape[1] != self.n_mels:
            raise ValueError(f"{name} has {X.shape[1]} mel bins but the model expects n_mels={self.n_mels}")
        if X.shape[2] != self.n_frames:
            raise ValueError(f"{name} has {X.shape[2]} frames but the model expects excerpts of "
                             f"n_frames={self.n_frames} (cut longer spectrograms with cut_excerpts)")
        if X.shape[0] == 0:
            raise ValueError(f"{name} holds no excerpts")
        if not np.isfinite(X).all():
            raise ValueError(f"{name} contains NaN or infinite values (spectrograms must be finite dB values)")
        return X

    def __sklearn_is_fitted__(self):
        return "net_" in self.__dict__

    @property
    def n_epochs_(self) -> int:
        warnings.warn("ConvVAE.n_epochs_ was renamed n_iter_; n_epochs_ will stop working in the next release",
                      FutureWarning, stacklevel=2)
        return self.n_iter_

    # ------------------------------------------------------------------ core
    def _standardise(self, xb):
        return (xb - self._mean_t[:, None]) / self._std_t[:, None]

    def _terms(self, x, eps, net=None):
        """Per-excerpt reconstruction NLL and KL (nats); eps None decodes the posterior mean. ``net``: the network
        called (training: wrapped in DistributedDataParallel in a process group)."""
        mu, logvar, xhat = (self.net_ if net is None else net)(x, eps)
        log_sigma = self.net_.log_sigma.clamp(min=-4.0)[:, None]
        nll = 0.5 * (((x - xhat) * torch.exp(-log_sigma)) ** 2 + 2 * log_sigma + math.log(2 * math.pi))
        kl = 0.5 * (mu ** 2 + logvar.exp() - 1.0 - logvar)
        return nll.flatten(1).sum(1), kl.sum(1)

    def _kl_weight(self, epoch):
        if self.kl_warmup_epochs <= 0:
            return float(self.beta)
        return float(self.beta) * min(1.0, (epoch + 1) / self.kl_warmup_epochs)

    def _batch_tensor(self, X: np.ndarray, idx) -> torch.Tensor:
        x = torch.from_numpy(X[idx]).to(self._device, self._dtype, non_blocking=True)
        return self._standardise(x)

    def _batches(self, X, perm):
        # the excerpts stay on the host; each batch goes to the device on its own
        for idx in torch.split(perm, self.batch_size):
            yield len(idx), self._batch_tensor(X, idx.numpy())

    @torch.no_grad()
    def _evaluate(self, X):
        """Single-sample ELBO estimate with fixed noise, so successive epochs are compared on equal terms."""
        self.net_.eval()
        g = torch.Generator(device=self._device).manual_seed(self._seed + 7919)
        total = torch.zeros(2, dtype=torch.float64, device=self._device)
        for rows, xb in self._batches(X, torch.arange(len(X))):
            eps = torch.randn((rows, self.latent_dim), generator=g, device=self._device, dtype=self._dtype)
            nll, kl = self._terms(xb, eps)
            total += torch.stack([nll.sum(), kl.sum()]).double()
        nll, kl = (total / len(X)).tolist()
        return nll, kl

    # ------------------------------------------------------------------ fitting
    def fit(self, X, y=None, *, X_valid=None, resume=None, checkpoint=None):
        """Train on excerpts X (n, n_mels, n_frames) in dB. ``y`` is ignored (scikit-learn compatibility).

        X_valid : held-out excerpts for early stopping (better: excerpts of other clips than X). When None, a
            random ``validation_fraction`` of X is held out.
        resume : a checkpoint (``save`` or ``checkpoint=``) to continue from: training ends exactly as an
            uninterrupted run would. (``resume=True`` with ``checkpoint=path``: continue from that path if it
            exists; accepted for one release.)
        checkpoint : path rewritten (atomically) after every epoch with the whole training state.
        """
        if isinstance(resume, bool):
            if resume:
                warnings.warn("ConvVAE.fit(resume=True, checkpoint=path) is deprecated: pass resume=path",
                              FutureWarning, stacklevel=2)
            resume = checkpoint if resume and checkpoint is not None and Path(checkpoint).exists() else None
        self._check_params()
        X = self._check_X(X)
        if X_valid is not None:
            X_valid = self._check_X(X_valid, "X_valid")
        tensors = state = None
        resume = self._agreed_resume(resume)
        if resume is not None:
            tensors, state = self._read_resume(resume)
        seed = draw_seed(self.random_state) if state is None else int(state["seed"])
        if X_valid is None and self.validation_fraction > 0:
            if len(X) < 2:
                raise ValueError(f"X has {len(X)} excerpts: too few to hold out a validation set")
            tr, va = split_indices(len(X), self.validation_fraction, seed)
            X, X_valid = X[np.sort(tr.numpy())], X[np.sort(va.numpy())]
        X = np.ascontiguousarray(X)
        if state is None:
            self._initialize(X, seed)
        else:
            self._set_state(tensors, state, check_against=X)
        self._run_epochs(X, X_valid, self.n_iter - self.n_iter_, self._checkpointer(checkpoint))
        return self

    def _initialize(self, X: np.ndarray, seed: int):
        # per-band statistics over all training excerpts and frames (float64 against cancellation)
        mean, std = X.mean(axis=(0, 2), dtype=np.float64), X.std(axis=(0, 2), dtype=np.float64)
        lo, hi = X.min(), X.max()
        if distributed.sharded_inputs():  # every rank holds a shard: the statistics of all of them
            mean, var = distributed.pooled_moments(X.shape[0] * X.shape[2], mean, std ** 2)
            std = np.sqrt(var)
            lo, hi = distributed.all_min_max(lo, hi)
        self.mean_ = mean.astype(np.float32)
        self.std_ = np.maximum(std, 1e-3).astype(np.float32)
        self.range_ = np.array([lo, hi], dtype=np.float32)
        self._seed_generators(seed)
        self._build(seed)
        self._fingerprint = self._fingerprint_of(X)
        self._reset_training()
        self.best_epoch_ = 0
        self._best = self._snapshot()

    def _build(self, seed: int):
        """The network (initialised from ``seed``), its optimizer and the standardisation tensors."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net_ = _Net(self.n_mels, self.n_frames, self.latent_dim, self._channels).to(self._device,
                                                                                             self._dtype)
        self._optimizer = torch.optim.Adam(self.net_.parameters(), lr=self.learning_rate,
                                           weight_decay=self.weight_decay)
        self._mean_t = torch.as_tensor(self.mean_, device=self._device, dtype=self._dtype)
        self._std_t = torch.as_tensor(self.std_, device=self._device, dtype=self._dtype)

    @staticmethod
    def _fingerprint_of(X) -> list:
        fp = [len(X), float(X.sum(dtype=np.float64))]
        if distributed.sharded_inputs():  # of all the shards: a run resumes on any number of ranks
            n, total = distributed.all_sum(fp, what="fingerprinting the training data")
            fp = [int(n), total]
        return fp

    # ---- the epoch loop's hooks ----

    _ddp_module = "net_"

    def _progress_desc(self) -> str:
        return "ConvVAE"

    def _batch_update(self, xb, lr: float, epoch: int) -> torch.Tensor:
        self.net_.train()
        w = self._kl_weight(epoch)
        eps = torch.randn((len(xb), self.latent_dim), generator=self._rng, device=self._device, dtype=self._dtype)
        nll, kl = self._terms(xb, eps, self._train_module())
        loss = (nll + w * kl).mean()
        self._optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self._optimizer.step()
        return torch.stack([nll.mean(), kl.mean()]).detach()

    def _epoch_record(self, loss, lr, X, X_valid) -> dict:
        nll, kl = loss
        v_nll, v_kl = self._evaluate(X_valid) if X_valid is not None else (math.nan, math.nan)
        return {"elbo": -(nll + kl), "recon": nll, "kl": kl, "elbo_valid": -(v_nll + v_kl), "recon_valid": v_nll,
                "kl_valid": v_kl, "kl_weight": self._kl_weight(self.n_iter_ - 1),
                # the objective early stopping watches: the negative ELBO with the target beta
                "_score": (v_nll + self.beta * v_kl) if X_valid is not None else (nll + self.beta * kl)}

    def _early_stopping_score(self, record: dict):
        return record["_score"]

    def _improved(self, score: float) -> bool:
        # during warm-up the objective is still moving, so the latest epoch is the best so far
        return score < self._best_score or self.n_iter_ < self.kl_warmup_epochs

    def _snapshot(self):
        return {k: v.detach().clone() for k, v in self.net_.state_dict().items()}

    def _restore_snapshot(self, best):
        self.net_.load_state_dict(best)

    def _end_training(self):
        super()._end_training()
        self.net_.eval()

    def _divergence_advice(self, lr: float) -> list[str]:
        return [f"lower learning_rate (now {lr:.3g})"]

    # ------------------------------------------------------------------ checkpoints
    def _get_state(self):
        self._require_fitted()
        tensors = _to_state(self.net_.state_dict(), "model.")
        if self.__dict__.get("_best") is not None:
            tensors |= _to_state(self._best, "best.")
        tensors |= self._optimizer_tensors(self._optimizer)
        tensors |= self._generator_tensors()
        tensors |= {"norm.mean": torch.from_numpy(self.mean_.copy()), "norm.std": torch.from_numpy(self.std_.copy()),
                    "norm.range": torch.from_numpy(self.range_.copy())}
        state = {"seed": self._seed, "fingerprint": self._fingerprint, **self._training_state()}
        return tensors, state

    def _set_state(self, tensors: dict, state: dict, check_against=None):
        """Restore a checkpoint: to continue training on ``check_against`` (resume), or to predict (load: with
        the best epoch's weights when the checkpoint was written during training)."""
        self._check_params()
        if check_against is not None and state.get("fingerprint") != self._fingerprint_of(check_against):
            raise ValueError(f"resume: the checkpoint was written for other training data ({state.get('fingerprint')}"
                             f" vs {self._fingerprint_of(check_against)} [n_excerpts, sum]); cannot resume")
        self.mean_, self.std_ = tensors["norm.mean"].numpy(), tensors["norm.std"].numpy()
        self.range_ = tensors["norm.range"].numpy()
        seed = int(state["seed"])
        self._build(seed)
        self.net_.load_state_dict(_from_state(tensors, "model."))
        self._fingerprint = state.get("fingerprint")
        self._restore_training_state(state)
        best = _from_state(tensors, "best.")
        self._best = {k: v.to(self._device) for k, v in best.items()} if best else None
        if "rng_state" in tensors:
            self._load_optimizer(self._optimizer, tensors)
            self._restore_generators(tensors, seed)
        else:
            self._seed_generators(seed)
        if check_against is None:
            self._end_training()

    @classmethod
    def _params_from_meta(cls, meta: dict, path) -> dict:
        if meta.get("format") == _V1_TRAIN_FORMAT:
            raise ValueError(f"{path} is a ConvVAE training checkpoint of pymusicrbm 0.1 (checkpoint format "
                             f"version 1, {_V1_TRAIN_FORMAT!r}); it can be neither loaded nor resumed by this "
                             "version: train again")
        return super()._params_from_meta(meta, path)

    @classmethod
    def load(cls, path, device=None, verbose=None):
        """Load a model written by ``save`` (or a per-epoch checkpoint: the best epoch's weights).
        ``device`` / ``verbose`` override the saved settings."""
        tensors, meta = load_state(path)
        if meta.get("format") == _V1_MODEL_FORMAT:  # a model saved by pymusicrbm 0.1
            params = {cls._renamed_params.get(k, k): v for k, v in meta["config"].items()}
            state = {"seed": draw_seed(params.get("random_state")), "n_iter_": meta["n_epochs_run"],
                     "history_": meta["history"], "best_epoch_": meta["best_epoch"] + 1}
        elif meta.get("class") == cls.__name__ or meta.get("format") == _V1_TRAIN_FORMAT:
            params, state = cls._params_from_meta(meta, path), meta.get("state", {})
        else:
            raise ValueError(f"{path} is not a saved ConvVAE (format {meta.get('format')!r}, class "
                             f"{meta.get('class')!r})")
        params["channels"] = tuple(params["channels"])
        if device is not None or "device" not in params:
            params["device"] = device
        if verbose is not None:
            params["verbose"] = verbose
        model = cls(**params)
        model._set_state(tensors, state)
        return model

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def _encode(self, X):
        self._require_fitted()
        X = self._check_X(X)
        self.net_.eval()
        mus, lvs = [], []
        for _, xb in self._batches(X, torch.arange(len(X))):
            mu, lv = self.net_.encode(xb)
            mus.append(mu.cpu())
            lvs.append(lv.cpu())
        return torch.cat(mus).numpy(), torch.cat(lvs).numpy()
    def transform(self, X, return_logvar=False):
        """Posterior means (n, latent_dim); with ``return_logvar`` the log-variances are appended: (n, 2*latent)."""
        mu, lv = self._encode(X)
        return np.hstack([mu, lv]) if return_logvar else mu

    @torch.no_grad()
    def decode(self, z):
        """Decode latents (n, latent_dim) to mel spectrograms in dB, (n, n_mels, n_frames)."""
        self._require_fitted()
        z = np.asarray(z, dtype=np.float32)
        if z.ndim == 1:
            z = z[None]
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z must have shape (n, latent_dim={self.latent_dim}), got {z.shape}")
        if not np.isfinite(z).all():
            raise ValueError("z contains NaN or infinite values")
        self.net_.eval()
        out = []
        for s in range(0, len(z), self.batch_size):
            xhat = self.net_.decode(torch.from_numpy(z[s:s + self.batch_size]).to(self._device, self._dtype))
            xhat = xhat * self._std_t[:, None] + self._mean_t[:, None]
            # Never beyond the dB range seen in training (e.g. above the 0 dB reference of ref='max' spectrograms).
            out.append(xhat.clamp(float(self.range_[0]), float(self.range_[1])).cpu())
        return torch.cat(out).numpy()

    def reconstruct(self, X):
        """Decode the posterior means of X: reconstructions in dB, same shape as X."""
        return self.decode(self.transform(X))

    def sample(self, n, center=None, scale=1.0, random_state=None):
        """Draw ``n`` spectrograms: z ~ N(center, scale^2) decoded (center None: the prior's 0).

        ``scale`` is a scalar or a per-dimension vector (e.g. the spread of one genre's latent means).
        Returns (spectrograms in dB (n, n_mels, n_frames), z (n, latent_dim)).
        """
        self._require_fitted()
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        rng = np.random.default_rng(random_state)
        center = np.zeros(self.latent_dim) if center is None else np.asarray(center, dtype=np.float64)
        if center.shape != (self.latent_dim,):
            raise ValueError(f"center must have shape ({self.latent_dim},), got {center.shape}")
        z = center + rng.standard_normal((n, self.latent_dim)) * np.asarray(scale, dtype=np.float64)
        return self.decode(z), z.astype(np.float32)

    def interpolate(self, x_a, x_b, n_steps=8):
        """Decode ``n_steps`` points on the line between the posterior means of excerpts x_a and x_b."""
        if n_steps < 2:
            raise ValueError(f"n_steps must be >= 2, got {n_steps}")
        z = self.transform(np.stack([np.asarray(x_a), np.asarray(x_b)]))
        t = np.linspace(0.0, 1.0, n_steps)[:, None]
        return self.decode((1 - t) * z[0] + t * z[1])

    @torch.no_grad()
    def score(self, X, y=None):
        """Mean ELBO per excerpt (nats, beta=1, one fixed-seed posterior sample): higher is better."""
        self._require_fitted()
        nll, kl = self._evaluate(self._check_X(X))
        return -(nll + kl)
