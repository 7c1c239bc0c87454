"""Convolutional RBM with probabilistic max-pooling (Lee, Grosse, Ranganath & Ng 2009) and a convolutional DBN
that stacks them, as scikit-learn style estimators on the ``pymusicrbm.ops.conv_*`` ops.

Inputs are batches of maps: (n, height, width) (one channel, e.g. mel spectrograms (n_mels, n_frames)) or
(n, channels, height, width). Probabilistic max-pooling needs the hidden map (input - filter + 1) to be a
multiple of ``pool`` on both axes; the estimators crop the last rows/columns of the input that do not fit (at most
``pool - 1`` of each, recorded in ``crop_shape_``) rather than pad, so that every modelled unit sees real data.
"""
from __future__ import annotations

import math
import time
from numbers import Integral

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.exceptions import NotFittedError

from . import ops
from .checkpoint import CheckpointMixin, load_state
from ._base import TrainingDivergedError
from ._utils import draw_seed, make_generator, resolve_device, resolve_dtype, split_indices
from ._legacy import check_in, check_number

__all__ = ["ConvRBM", "ConvDBN", "TrainingDivergedError", "as_maps", "cropped_size"]

_N_MONITOR = 256           # maps used for the per-epoch train/valid monitors
_MAX_ABS_WEIGHT = 1e3
INIT_SCALE = 0.01
TRAININGS = ("cd", "reconstruction")
# Default learning rates. CD's statistics are averages over all positions of a map, so they are small (about the
# sparsity target times a correlation): steps of ~0.5 suit them. Adam's steps are normalised: 0.01.
DEFAULT_LR = {"cd": 0.5, "reconstruction": 0.01}
STANDARDIZE = ("channel", "row", None)


def as_maps(X, name: str = "X") -> np.ndarray:
    """X as a float array (n, channels, height, width); (n, height, width) means one channel. ValueError with
    the reason for anything else (wrong rank, empty, NaN/Inf)."""
    if isinstance(X, torch.Tensor):
        X = X.detach().cpu().numpy()
    X = np.asarray(X)
    if X.dtype.kind not in "fiub":
        raise ValueError(f"{name} must be numeric, got dtype {X.dtype}")
    if X.ndim == 3:
        X = X[:, None]
    if X.ndim != 4:
        raise ValueError(f"{name} must be 3-D (n, height, width) or 4-D (n, channels, height, width) maps, got "
                         f"shape {X.shape}")
    if X.shape[0] == 0 or min(X.shape[1:]) == 0:
        raise ValueError(f"{name} is empty: shape {X.shape}")
    if X.dtype.kind != "f":
        X = X.astype(np.float32)
    if not np.isfinite(X).all():
        bad = int((~np.isfinite(X)).sum())
        raise ValueError(f"{name} contains {bad} NaN or Inf values (e.g. the log of a zero in a spectrogram: add "
                         f"a floor before the log)")
    return X


def cropped_size(n: int, f: int, pool: int) -> int:
    """Largest input size <= n whose hidden size n - f + 1 is a multiple of pool."""
    h = n - f + 1
    return h - h % pool + f - 1


class ConvRBM(CheckpointMixin, TransformerMixin, BaseEstimator):
    """Convolutional RBM: ``n_filters`` filters of ``filter_shape`` shared over the input maps, hidden units grouped
    by probabilistic max-pooling in ``pool`` x ``pool`` blocks (``pool=1``: independent sigmoid units).

    Training (``training``; ``learning_rate=None`` picks 0.5 for CD and 0.01 for Adam):
      - ``'cd'``: real contrastive divergence (CD-k, or PCD-k with ``persistent=True``) with the fused op
        :func:`pymusicrbm.ops.conv_cd_step_` (momentum, L2 ``weight_decay`` on the filters, and a sparsity target
        on the mean pooled-unit probability: ``c += sparsity_cost * (sparsity_target - q)``).
      - ``'reconstruction'``: the shortcut of the 2024 re-implementation, for comparison: the model as an
        autoencoder (hidden probabilities -> mean reconstruction) trained by Adam on the mean squared
        reconstruction error (+ ``sparsity_cost * (q - sparsity_target)^2`` when a target is set), through the
        same ops' autograd.

    ``visible='gaussian'`` (spectrograms): inputs are standardised (``standardize='channel'``: one mean/std per
    channel, ``'row'``: per channel and row, i.e. per mel band; None: as given) and sigma is 1 in standardised
    units. ``visible='bernoulli'``: inputs must lie in [0, 1] (e.g. the pooled probabilities of a lower layer).

    Fitted attributes: ``filters_`` (n_filters, channels, fh, fw), ``intercept_hidden_`` (n_filters,),
    ``intercept_visible_`` (channels,), ``input_shape_`` (channels, height, width), ``crop_shape_`` (the
    height, width the model uses), ``output_shape_`` (n_filters, pooled height, pooled width), ``mean_``/
    ``scale_``, ``n_iter_``, ``history_`` (per epoch: ``recon_error`` (the CD step's, during training),
    ``train_loss`` and, with ``validation_fraction``, ``valid_loss`` (mean-field reconstruction MSE, standardised
    units, on up to 256 maps), ``sparsity`` (mean pooled probability), ``learning_rate``, ``time``).
    """

    _tuple_params = ("filter_shape",)

    def __init__(self, n_filters=32, filter_shape=(5, 5), *, pool=2, visible="gaussian", training="cd",
                 learning_rate=None, batch_size=16, n_iter=10, k=1, persistent=False, momentum=0.5,
                 weight_decay=1e-4, sparsity_target=0.05, sparsity_cost=1.0, standardize="channel",
                 validation_fraction=0.1, verbose=0, random_state=None, device="cpu", dtype="float32"):
        self.n_filters = n_filters
        self.filter_shape = filter_shape
        self.pool = pool
        self.visible = visible
        self.training = training
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.n_iter = n_iter
        self.k = k
        self.persistent = persistent
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.sparsity_target = sparsity_target
        self.sparsity_cost = sparsity_cost
        self.standardize = standardize
        self.validation_fraction = validation_fraction
        self.verbose = verbose
        self.random_state = random_state
        self.device = device
        self.dtype = dtype

    # ---- parameters -----------------------------------------------------------------------------------------

    def _check_params(self):
        check_number("n_filters", self.n_filters, 1, integer=True)
        fs = self.filter_shape
        if isinstance(fs, Integral) and not isinstance(fs, bool):
            fs = (int(fs), int(fs))
        if (not isinstance(fs, (tuple, list)) or len(fs) != 2 or
                not all(isinstance(f, Integral) and not isinstance(f, bool) and f >= 1 for f in fs)):
            raise ValueError(f"filter_shape must be an int or a pair of positive ints (height, width), got "
                             f"{self.filter_shape!r}")
        self._fs = (int(fs[0]), int(fs[1]))
        check_number("pool", self.pool, 1, integer=True)
        check_in("visible", self.visible, ops.VISIBLE_TYPES)
        check_in("training", self.training, TRAININGS)
        check_number("learning_rate", self.learning_rate, 0, allow_none=True)
        self._lr = self.learning_rate if self.learning_rate is not None else DEFAULT_LR[self.training]
        check_number("batch_size", self.batch_size, 1, integer=True)
        check_number("n_iter", self.n_iter, 0, integer=True)
        check_number("k", self.k, 1, integer=True)
        if self.persistent not in (False, True):
            raise ValueError(f"persistent must be False (CD-k) or True (PCD-k), got {self.persistent!r}")
        if self.persistent and self.training != "cd":
            raise ValueError("persistent=True needs training='cd'")
        check_number("momentum", self.momentum, 0, 0.999999)
        check_number("weight_decay", self.weight_decay, 0)
        check_number("sparsity_target", self.sparsity_target, 0, 1, allow_none=True)
        check_number("sparsity_cost", self.sparsity_cost, 0)
        check_in("standardize", self.standardize, STANDARDIZE)
        check_number("validation_fraction", self.validation_fraction, 0, 0.9, allow_none=True)
        self._device = resolve_device(self.device)
        self._dtype = resolve_dtype(self.dtype)

    @property
    def _gaussian(self) -> bool:
        return self.visible == "gaussian"

    # ---- fitted attributes --------------------------------------------------------------------------------

    def __sklearn_is_fitted__(self):
        return "_W" in self.__dict__

    def _require_fitted(self):
        if not self.__sklearn_is_fitted__():
            raise NotFittedError(f"This {type(self).__name__} instance is not fitted yet; call fit first.")

    @property
    def filters_(self) -> np.ndarray:
        self._require_fitted()
        return self._W.detach().cpu().numpy().copy()

    @property
    def intercept_hidden_(self) -> np.ndarray:
        self._require_fitted()
        return self._c.detach().cpu().numpy().copy()

    @property
    def intercept_visible_(self) -> np.ndarray:
        self._require_fitted()
        return self._b.detach().cpu().numpy().copy()

    @property
    def output_shape_(self) -> tuple[int, int, int]:
        self._require_fitted()
        hp, wp = ops.conv_output_shape(self.crop_shape_, self._fs, self.pool)
        return (self.n_filters, hp, wp)

    # ---- data ---------------------------------------------------------------------------------------------

    def _crop_for(self, shape) -> tuple[int, int]:
        C, H, W = shape
        fh, fw = self._fs
        if H < fh + self.pool - 1 or W < fw + self.pool - 1:
            raise ValueError(f"{type(self).__name__}: the input maps ({H}x{W}) are too small for filter_shape="
                             f"{self._fs} and pool={self.pool} (need at least {fh + self.pool - 1}x"
                             f"{fw + self.pool - 1})")
        return cropped_size(H, fh, self.pool), cropped_size(W, fw, self.pool)

    def _prepare(self, X, reset: bool) -> np.ndarray:
        """Checked, cropped, standardised maps as float64/32 numpy (n, C, h, w)."""
        X = as_maps(X)
        if reset:
            self.input_shape_ = tuple(int(s) for s in X.shape[1:])
            self.crop_shape_ = self._crop_for(self.input_shape_)
        else:
            self._require_fitted()
            if tuple(X.shape[1:]) != self.input_shape_:
                if X.shape[1] != self.input_shape_[0]:
                    raise ValueError(f"X has {X.shape[1]} channels but {type(self).__name__} was fitted on "
                                     f"{self.input_shape_[0]}")
                if X.shape[2] < self.crop_shape_[0] or X.shape[3] < self.crop_shape_[1]:
                    raise ValueError(f"X maps are {X.shape[2]}x{X.shape[3]} but this model needs at least "
                                     f"{self.crop_shape_[0]}x{self.crop_shape_[1]} (it was fitted on "
                                     f"{self.input_shape_[1]}x{self.input_shape_[2]})")
        h, w = self.crop_shape_
        X = X[:, :, :h, :w]
        if self._gaussian:
            if reset:
                self._fit_standardization(X)
            if self.standardize is not None:
                X = (X - self.mean_) / self.scale_
        elif X.min() < 0 or X.max() > 1:
            raise ValueError(f"visible='bernoulli' needs inputs in [0, 1], got values in [{X.min():.3g}, "
                             f"{X.max():.3g}]; use visible='gaussian' for real-valued maps")
        return np.ascontiguousarray(X, dtype=np.float32 if self._dtype == torch.float32 else np.float64)

    def _fit_standardization(self, X: np.ndarray):
        if self.standardize is None:
            self.__dict__.pop("mean_", None)
            self.__dict__.pop("scale_", None)
            return
        axes = (0, 2, 3) if self.standardize == "channel" else (0, 3)
        mean = X.mean(axis=axes, dtype=np.float64, keepdims=True)[0]
        std = X.std(axis=axes, dtype=np.float64, keepdims=True)[0]
        self.mean_ = mean
        self.scale_ = np.where(std > 1e-8 * np.maximum(1.0, np.abs(mean)), std, 1.0)

    def _tensor(self, X: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(X).to(self._device)

    # ---- initialisation -------------------------------------------------------------------------------------

    def _initial_hidden_bias(self) -> float:
        # So that the initial pooled probability equals the sparsity target (or 1/2): with near-zero filters every
        # unit of a block has probability e^c / (1 + p^2 e^c).
        t = self.sparsity_target if self.sparsity_target else 0.5
        t = min(max(t, 1e-4), 1 - 1e-4)
        return math.log(t / ((1 - t) * self.pool ** 2))

    def _initialize(self, X: np.ndarray) -> torch.Tensor:
        self._seed = draw_seed(self.random_state)
        self._rng = make_generator(self._seed, self._device)
        self._shuffle_rng = torch.Generator().manual_seed(self._seed + 1)
        C = X.shape[1]
        opts = dict(dtype=self._dtype, device=self._device)
        fh, fw = self._fs
        self._W = torch.randn(self.n_filters, C, fh, fw, generator=self._rng, **opts).mul_(INIT_SCALE)
        Xt = self._tensor(X)
        if self._gaussian:
            self._b = Xt.mean((0, 2, 3)).contiguous()
        else:
            p = Xt.mean((0, 2, 3)).clamp(0.01, 0.99)
            self._b = torch.log(p / (1 - p)).contiguous()
        self._c = torch.full((self.n_filters,), self._initial_hidden_bias(), **opts)
        self._W_vel, self._b_vel, self._c_vel = (torch.zeros_like(t) for t in (self._W, self._b, self._c))
        self._chains = None
        if self.persistent:
            idx = torch.randint(Xt.shape[0], (self.batch_size,), generator=self._shuffle_rng).to(self._device)
            self._chains = Xt.index_select(0, idx).contiguous()
        self._adam = None
        self.n_iter_ = 0
        self.history_ = {}
        return Xt

    # ---- fitting --------------------------------------------------------------------------------------------

    _STRUCTURAL = ("n_filters", "filter_shape", "pool", "visible", "training", "persistent", "standardize")

    def fit(self, X, y=None, *, resume=None, checkpoint=None):
        """Train for ``n_iter`` epochs in total (a resumed fit runs only the missing ones).

        X: (n, height, width) or (n, channels, height, width). resume: a checkpoint written by ``save`` or by
        ``checkpoint=`` to continue from (same data and seed: bitwise the same result as an uninterrupted fit).
        checkpoint: a path saved to (atomically) after every epoch."""
        self._check_params()
        if resume is not None:
            tensors, meta = load_state(resume)
            saved = type(self)._params_from_meta(meta, resume)
            for name in self._STRUCTURAL:
                if saved.get(name) != getattr(self, name):
                    raise ValueError(f"resume: the checkpoint {str(resume)!r} was trained with {name}="
                                     f"{saved.get(name)!r} but this estimator has {name}={getattr(self, name)!r}")
            self._set_state(tensors, meta.get("state", {}))
        on_epoch = None if checkpoint is None else (lambda: self.save(checkpoint))
        return self._fit_prepared(X, resume is not None, on_epoch)

    def _fit_prepared(self, X, restored: bool, on_epoch=None):
        """Train on X: from scratch, or (``restored``) continuing the training state this estimator holds."""
        Xt = self._tensor(self._prepare(X, reset=False)) if restored else \
            self._initialize(self._prepare(X, reset=True))
        train_idx, valid_idx = split_indices(Xt.shape[0], self.validation_fraction, self._seed)
        X_train = Xt if len(valid_idx) == 0 else Xt.index_select(0, train_idx.to(self._device))
        X_valid = None if len(valid_idx) == 0 else Xt.index_select(0, valid_idx.to(self._device))
        self._train(X_train, X_valid, self.n_iter - self.n_iter_, on_epoch)
        return self

    def _train(self, X: torch.Tensor, X_valid, n_epochs: int, on_epoch=None):
        from tqdm.auto import tqdm

        n, B = X.shape[0], self.batch_size
        mon = X[:_N_MONITOR]
        epochs = tqdm(range(n_epochs), desc=f"{type(self).__name__} {self.n_filters}x{self._fs[0]}x{self._fs[1]} "
                      f"pool {self.pool} ({self.training})", disable=self.verbose < 1, leave=False, unit="epoch")
        for _ in epochs:
            epoch = self.n_iter_
            t0 = time.perf_counter()
            lr = self._lr
            perm = torch.randperm(n, generator=self._shuffle_rng).to(self._device)
            total = 0.0
            batches = tqdm(range(0, n, B), disable=self.verbose < 2, leave=False, unit="batch")
            for i in batches:
                idx = perm[i:i + B]
                v = X.index_select(0, idx)
                total += float(self._batch_update(v, lr, epoch)) * len(idx)
            recon = total / n
            self._check_divergence(recon, epoch, lr)
            self.n_iter_ = epoch + 1
            rec = {"epoch": epoch + 1, "learning_rate": lr, "recon_error": recon}
            rec.update(self._monitor(mon, X_valid))
            rec["time"] = time.perf_counter() - t0
            for key, val in rec.items():
                self.history_.setdefault(key, []).append(val)
            if self.verbose:
                epochs.set_postfix({k: f"{v:.4g}" for k, v in rec.items() if k in ("train_loss", "valid_loss",
                                                                                  "sparsity")})
            if on_epoch is not None:
                on_epoch()

    def _batch_update(self, v: torch.Tensor, lr: float, epoch: int) -> float:
        if self.training == "reconstruction":
            return self._reconstruction_step(v, lr, epoch)
        sparse = self.sparsity_target is not None
        try:
            return ops.conv_cd_step_(self._W, self._b, self._c, self._W_vel, self._b_vel, self._c_vel, v,
                                     chains=self._chains, visible=self.visible, pool=self.pool, k=self.k, lr=lr,
                                     momentum=self.momentum, weight_decay=self.weight_decay,
                                     sparsity_target=self.sparsity_target if sparse else 0.0,
                                     sparsity_cost=self.sparsity_cost if sparse else 0.0, generator=self._rng)
        except RuntimeError as e:
            if "not finite" in str(e):
                raise self._diverged(epoch, lr, "a parameter update was not finite") from None
            raise

    def _reconstruction_step(self, v: torch.Tensor, lr: float, epoch: int) -> float:
        params = [self._W, self._b, self._c]
        if self._adam is None:
            self._adam = {"step": 0, "m": [torch.zeros_like(p) for p in params],
                          "v": [torch.zeros_like(p) for p in params]}
        for p in params:
            p.requires_grad_(True)
        try:
            P, _, Q = ops.conv_sample_hidden(v, self._W, self._c, self.pool, generator=self._rng)
            mean, _ = ops.conv_sample_visible(P, self._W, self._b, None, self.visible, generator=self._rng)
            loss = F.mse_loss(mean, v)
            total = loss
            if self.sparsity_target is not None and self.sparsity_cost > 0:
                total = loss + self.sparsity_cost * (Q.mean((0, 2, 3)) - self.sparsity_target).square().sum()
            grads = torch.autograd.grad(total, params)
        finally:
            for p in params:
                p.requires_grad_(False)
        # Adam (Kingma & Ba), with L2 weight decay on the filters as in the CD update.
        st = self._adam
        st["step"] += 1
        b1, b2, eps = 0.9, 0.999, 1e-8
        for j, (p, g) in enumerate(zip(params, grads)):
            if j == 0 and self.weight_decay:
                g = g + self.weight_decay * p
            st["m"][j].mul_(b1).add_(g, alpha=1 - b1)
            st["v"][j].mul_(b2).addcmul_(g, g, value=1 - b2)
            mhat = st["m"][j] / (1 - b1 ** st["step"])
            vhat = st["v"][j] / (1 - b2 ** st["step"])
            step = lr * mhat / (vhat.sqrt() + eps)
            if not bool(torch.isfinite(step).all()):
                raise self._diverged(epoch, lr, "a parameter update was not finite")
            p.sub_(step)
        return float(loss.detach())

    def _diverged(self, epoch: int, lr: float, what: str) -> TrainingDivergedError:
        advice = [f"lower learning_rate (now {lr:.3g})", "add weight_decay (e.g. 1e-4)"]
        if self._gaussian and self.standardize is None:
            advice.append("standardise the inputs (standardize='channel')")
        return TrainingDivergedError(f"{type(self).__name__} training diverged in epoch {epoch + 1}: {what}. "
                                     f"Try to: {'; '.join(advice)}.")

    def _check_divergence(self, recon: float, epoch: int, lr: float):
        if not math.isfinite(recon):
            raise self._diverged(epoch, lr, f"the reconstruction error is {recon}")
        wmax = float(self._W.abs().max())
        if not math.isfinite(wmax) or wmax > _MAX_ABS_WEIGHT:
            raise self._diverged(epoch, lr, f"the filters exploded (max |W| = {wmax:.3g})")

    # ---- monitors and inference -------------------------------------------------------------------------------

    @torch.no_grad()
    def _mean_field(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean-field reconstruction E[v | p(h | v)], pooled probabilities), chunked."""
        recs, pooled = [], []
        for i in range(0, v.shape[0], max(1, 4 * self.batch_size)):
            x = v[i:i + 4 * self.batch_size]
            P, _, Q = ops.conv_sample_hidden(x, self._W, self._c, self.pool, generator=self._rng)
            m, _ = ops.conv_sample_visible(P, self._W, self._b, None, self.visible, generator=self._rng)
            recs.append(m)
            pooled.append(Q)
        return torch.cat(recs), torch.cat(pooled)

    def _monitor(self, X_mon: torch.Tensor, X_valid) -> dict:
        rec, q = self._mean_field(X_mon)
        out = {"train_loss": float(F.mse_loss(rec, X_mon)), "sparsity": float(q.mean())}
        if X_valid is not None:
            Xv = X_valid[:_N_MONITOR]
            out["valid_loss"] = float(F.mse_loss(self._mean_field(Xv)[0], Xv))
        return out

    @torch.no_grad()
    def transform(self, X, output: str = "pooled") -> np.ndarray:
        """Feature maps of X: ``output='pooled'`` -> pooled-unit probabilities (n, n_filters, hp, wp);
        ``'hidden'`` -> hidden-unit probabilities (n, n_filters, hh, wh). Inputs are cropped like the training
        data (so maps of a different length are fine as long as they are at least ``crop_shape_``)."""
        check_in("output", output, ("pooled", "hidden"))
        X = self._prepare(X, reset=False)
        h, w = self.crop_shape_
        out = []
        for i in range(0, X.shape[0], max(1, 4 * self.batch_size)):
            x = self._tensor(X[i:i + 4 * self.batch_size])
            P, _, Q = ops.conv_sample_hidden(x, self._W, self._c, self.pool, generator=self._rng)
            out.append((Q if output == "pooled" else P).cpu().numpy())
        return np.concatenate(out)

    @torch.no_grad()
    def reconstruct(self, X) -> np.ndarray:
        """Mean-field reconstruction of (the cropped part of) X, in the input's units."""
        X = self._prepare(X, reset=False)
        rec = self._mean_field(self._tensor(X))[0].cpu().numpy().astype(np.float64)
        if self._gaussian and self.standardize is not None:
            rec = rec * self.scale_ + self.mean_
        return rec

    def reconstruction_error(self, X) -> float:
        """Mean squared error of the mean-field reconstruction, in standardised units (as ``history_``)."""
        Xp = self._tensor(self._prepare(X, reset=False))
        return float(F.mse_loss(self._mean_field(Xp)[0], Xp))

    # ---- checkpoint state -----------------------------------------------------------------------------------

    _STATE_TENSORS = ("_W", "_b", "_c", "_W_vel", "_b_vel", "_c_vel", "_chains")

    def _get_state(self):
        self._require_fitted()
        tensors = {name[1:]: self.__dict__[name].detach() for name in self._STATE_TENSORS
                   if self.__dict__.get(name) is not None}
        tensors["rng_state"] = self._rng.get_state()
        tensors["shuffle_rng_state"] = self._shuffle_rng.get_state()
        if "mean_" in self.__dict__:
            tensors["mean_"] = torch.from_numpy(np.asarray(self.mean_, dtype=np.float64))
            tensors["scale_"] = torch.from_numpy(np.asarray(self.scale_, dtype=np.float64))
        state = {"n_iter_": self.n_iter_, "seed": self._seed, "input_shape_": list(self.input_shape_),
                 "crop_shape_": list(self.crop_shape_), "history_": self.history_}
        if self._adam is not None:
            state["adam_step"] = self._adam["step"]
            for j in range(3):
                tensors[f"adam_m{j}"] = self._adam["m"][j]
                tensors[f"adam_v{j}"] = self._adam["v"][j]
        return tensors, state

    def _set_state(self, tensors: dict, state: dict):
        self._check_params()
        self.input_shape_ = tuple(int(s) for s in state["input_shape_"])
        self.crop_shape_ = tuple(int(s) for s in state["crop_shape_"])
        W = tensors["W"]
        want = (self.n_filters, self.input_shape_[0], *self._fs)
        if tuple(W.shape) != want:
            raise ValueError(f"checkpoint filters have shape {tuple(W.shape)}, this {type(self).__name__} needs "
                             f"{want}")
        if self.persistent and "chains" not in tensors:
            raise ValueError("the checkpoint lacks the persistent chains (it was saved with persistent=False)")
        opts = dict(device=self._device, dtype=self._dtype)
        for name in self._STATE_TENSORS:
            t = tensors.get(name[1:])
            self.__dict__[name] = None if t is None else t.to(**opts).contiguous()
        self._seed = int(state["seed"])
        self._rng = torch.Generator(device=self._device)
        self._rng.set_state(tensors["rng_state"])
        self._shuffle_rng = torch.Generator()
        self._shuffle_rng.set_state(tensors["shuffle_rng_state"])
        if "mean_" in tensors:
            self.mean_ = tensors["mean_"].double().numpy()
            self.scale_ = tensors["scale_"].double().numpy()
        self._adam = None
        if "adam_step" in state:
            self._adam = {"step": int(state["adam_step"]),
                          "m": [tensors[f"adam_m{j}"].to(**opts) for j in range(3)],
                          "v": [tensors[f"adam_v{j}"].to(**opts) for j in range(3)]}
        self.n_iter_ = int(state["n_iter_"])
        self.history_ = {k: list(v) for k, v in state.get("history_", {}).items()}

    def __getstate__(self):
        state = dict(super().__getstate__())
        for name in ("_rng", "_shuffle_rng"):
            if isinstance(state.get(name), torch.Generator):
                g = state[name]
                state[name] = ("torch.Generator", str(g.device), g.get_state())
        return state

    def __setstate__(self, state):
        state = dict(state)
        for name in ("_rng", "_shuffle_rng"):
            if isinstance(state.get(name), tuple):
                g = torch.Generator(device=state[name][1])
                g.set_state(state[name][2])
                state[name] = g
        super().__setstate__(state)


# Settings a ConvDBN passes to every layer (layer_params may override them per layer).
_SHARED = ("training", "learning_rate", "batch_size", "n_iter", "k", "persistent", "momentum", "weight_decay",
           "sparsity_target", "sparsity_cost", "validation_fraction", "verbose", "device", "dtype")


class ConvDBN(CheckpointMixin, TransformerMixin, BaseEstimator):
    """Convolutional deep belief network: ConvRBMs trained greedily, each on the pooled-unit probabilities of the
    layer below (probabilistic max-pooling between the layers, Lee et al. 2009).

    ``n_filters``, ``filter_shapes`` and ``pools`` have one entry per layer. The first layer has ``visible``
    units (Gaussian by default, on standardised spectrograms), the layers above Bernoulli visible units (their
    inputs are probabilities). The other settings apply to every layer; ``layer_params`` (one dict per layer, or
    None) overrides them per layer (e.g. a smaller learning rate for the Gaussian layer).

    Fitted attributes: ``layers_`` (the ConvRBMs), ``history_`` (one history dict per layer), ``n_layers_fitted_``.
    """

    _tuple_params = ("n_filters", "filter_shapes", "pools", "layer_params")

    def __init__(self, n_filters=(32, 32), filter_shapes=((5, 5), (3, 3)), pools=(2, 2), *, visible="gaussian",
                 training="cd", learning_rate=None, batch_size=16, n_iter=10, k=1, persistent=False, momentum=0.5,
                 weight_decay=1e-4, sparsity_target=0.05, sparsity_cost=1.0, standardize="channel",
                 validation_fraction=0.1, layer_params=None, verbose=0, random_state=None, device="cpu",
                 dtype="float32"):
        self.n_filters = n_filters
        self.filter_shapes = filter_shapes
        self.pools = pools
        self.visible = visible
        self.training = training
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.n_iter = n_iter
        self.k = k
        self.persistent = persistent
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.sparsity_target = sparsity_target
        self.sparsity_cost = sparsity_cost
        self.standardize = standardize
        self.validation_fraction = validation_fraction
        self.layer_params = layer_params
        self.verbose = verbose
        self.random_state = random_state
        self.device = device
        self.dtype = dtype

    def _layer_specs(self) -> list[dict]:
        nf, fs, pl = self.n_filters, self.filter_shapes, self.pools
        for name, val in (("n_filters", nf), ("filter_shapes", fs), ("pools", pl)):
            if not isinstance(val, (tuple, list)) or len(val) == 0:
                raise ValueError(f"{name} must be a non-empty list with one entry per layer, got {val!r}")
        if not len(nf) == len(fs) == len(pl):
            raise ValueError(f"n_filters, filter_shapes and pools must have one entry per layer, got lengths "
                             f"{len(nf)}, {len(fs)}, {len(pl)}")
        lp = self.layer_params
        if lp is not None and (not isinstance(lp, (tuple, list)) or len(lp) != len(nf)):
            raise ValueError(f"layer_params must be None or one dict per layer ({len(nf)}), got {lp!r}")
        seed = draw_seed(self.random_state)
        specs = []
        for i in range(len(nf)):
            spec = {name: getattr(self, name) for name in _SHARED}
            spec.update(n_filters=nf[i], filter_shape=tuple(fs[i]) if isinstance(fs[i], (list, tuple)) else fs[i],
                        pool=pl[i], visible=self.visible if i == 0 else "bernoulli",
                        standardize=self.standardize if i == 0 else None, random_state=seed + 1000 * i)
            extra = (lp[i] if lp is not None else None) or {}
            if not isinstance(extra, dict):
                raise ValueError(f"layer_params[{i}] must be a dict of ConvRBM parameters, got {extra!r}")
            bad = set(extra) - set(_SHARED)
            if bad:
                raise ValueError(f"layer_params[{i}] has keys that are not per-layer ConvRBM settings: "
                                 f"{sorted(bad)}; allowed: {sorted(_SHARED)}")
            spec.update(extra)
            specs.append(spec)
        return specs

    def __sklearn_is_fitted__(self):
        return "layers_" in self.__dict__ and self.n_layers_fitted_ == len(self.layers_)

    def fit(self, X, y=None, *, resume=None, checkpoint=None):
        """Greedy layer-wise training. resume / checkpoint: as :meth:`ConvRBM.fit` (layers already trained in the
        checkpoint are kept, the interrupted layer continues)."""
        specs = self._layer_specs()
        for s in specs:
            ConvRBM(**s)._check_params()
        if resume is not None:
            tensors, meta = load_state(resume)
            saved = type(self)._params_from_meta(meta, resume)
            for name in ("n_filters", "filter_shapes", "pools", "visible", "training", "standardize"):
                if _norm(saved.get(name)) != _norm(getattr(self, name)):
                    raise ValueError(f"resume: the checkpoint {str(resume)!r} was trained with {name}="
                                     f"{saved.get(name)!r} but this estimator has {name}={getattr(self, name)!r}")
            self._set_state(tensors, meta.get("state", {}))
        else:
            self.layers_ = [ConvRBM(**s) for s in specs]
            self.n_layers_fitted_ = 0
        H = as_maps(X)
        for i, layer in enumerate(self.layers_):
            done = layer.__sklearn_is_fitted__() and layer.n_iter_ >= layer.n_iter
            if not done:  # a layer restored mid-training continues from its state
                on_epoch = None if checkpoint is None else (lambda: self.save(checkpoint))
                layer._check_params()
                layer._fit_prepared(H, layer.__sklearn_is_fitted__(), on_epoch)
            self.n_layers_fitted_ = i + 1
            if checkpoint is not None:
                self.save(checkpoint)
            if i + 1 < len(self.layers_):
                H = layer.transform(H)
        return self

    @property
    def history_(self) -> list[dict]:
        return [layer.history_ for layer in self.__dict__.get("layers_", []) if layer.__sklearn_is_fitted__()]

    def transform(self, X, layers: str = "last"):
        """Pooled feature maps of the top layer (``layers='last'``), or a list of every layer's (``'all'``)."""
        check_in("layers", layers, ("last", "all"))
        if not self.__sklearn_is_fitted__():
            raise NotFittedError(f"This {type(self).__name__} instance is not fitted yet; call fit first.")
        out, H = [], X
        for layer in self.layers_:
            H = layer.transform(H)
            out.append(H)
        return out[-1] if layers == "last" else out

    def _get_state(self):
        tensors, states = {}, []
        for i, layer in enumerate(self.layers_):
            if not layer.__sklearn_is_fitted__():
                break
            t, s = layer._get_state()
            tensors.update({f"layer{i}.{k}": v for k, v in t.items()})
            states.append(s)
        return tensors, {"layers": states, "n_layers_fitted_": self.n_layers_fitted_}

    def _set_state(self, tensors: dict, state: dict):
        specs = self._layer_specs()
        self.layers_ = [ConvRBM(**s) for s in specs]
        layer_states = state.get("layers", [])
        if len(layer_states) > len(specs):
            raise ValueError(f"the checkpoint has {len(layer_states)} layers, this ConvDBN {len(specs)}")
        for i, s in enumerate(layer_states):
            prefix = f"layer{i}."
            self.layers_[i]._set_state({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}, s)
        self.n_layers_fitted_ = int(state.get("n_layers_fitted_", 0))


def _norm(x):
    """Nested lists/tuples compared as tuples (JSON turns tuples into lists)."""
    if isinstance(x, (list, tuple)):
        return tuple(_norm(v) for v in x)
    return x

