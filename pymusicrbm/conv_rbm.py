"""Convolutional RBM with probabilistic max-pooling (Lee, Grosse, Ranganath & Ng 2009) and a convolutional DBN
that stacks them, as scikit-learn style estimators on the ``pymusicrbm.ops.conv_*`` ops.

Inputs are batches of maps: (n, height, width) (one channel, e.g. mel spectrograms (n_mels, n_frames)) or
(n, channels, height, width). Probabilistic max-pooling needs the hidden map (input - filter + 1) to be a
multiple of ``pool`` on both axes; the estimators crop the last rows/columns of the input that do not fit (at most
``pool - 1`` of each, recorded in ``crop_shape_``) rather than pad, so that every modelled unit sees real data.
"""
from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import TransformerMixin

from . import distributed, ops
from ._base import COMMON_CONSTRAINTS, Interval, StackEstimator, StrOptions, TrainedEstimator, TrainingDivergedError

__all__ = ["ConvRBM", "ConvDBN", "TrainingDivergedError", "as_maps", "cropped_size"]

_N_MONITOR = 256           # maps used for the per-epoch train/valid monitors
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


class ConvRBM(TransformerMixin, TrainedEstimator):
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

    Inputs are batches of maps, (n, height, width) (one channel) or (n, channels, height, width); the last
    rows/columns that do not fit the pooling are cropped (``crop_shape_``).

    Parameters
    ----------
    n_filters : int, default=32
        Number of filters (hidden maps).
    filter_shape : tuple of int, default=(5, 5)
        Filter height and width.
    pool : int, default=2
        Side of the probabilistic max-pooling blocks (``pool`` x ``pool``); 1: independent sigmoid units.
    visible : {'gaussian', 'bernoulli'}, default='gaussian'
        Type of the visible units: 'gaussian' for real-valued maps (standardised), 'bernoulli' for maps in [0, 1].
    training : {'cd', 'reconstruction'}, default='cd'
        Contrastive divergence, or Adam on the reconstruction error (see above).
    learning_rate : float or None, default=None
        Step size of the model's own (unsupervised) training: of CD, or of Adam; None picks 0.5 for
        ``training='cd'`` and 0.01 for ``'reconstruction'``.
    batch_size : int, default=16
        Maps per mini-batch.
    n_iter : int, default=10
        Unsupervised training epochs.
    k : int, default=1
        Gibbs steps per CD update (CD-k / PCD-k).
    persistent : bool, default=False
        Persistent CD (PCD-k); needs ``training='cd'``.
    momentum : float, default=0.5
        Momentum of the CD updates.
    weight_decay : float, default=1e-4
        L2 penalty on the filters.
    sparsity_target : float or None, default=0.05
        Target mean pooled-unit probability; None: no sparsity term.
    sparsity_cost : float, default=1.0
        Weight of the sparsity term.
    standardize : {'channel', 'row'} or None, default='channel'
        Gaussian visible units: one mean/std per channel ('channel'), per channel and row ('row', i.e. per mel
        band), or the inputs as given (None).
    validation_fraction : float or None, default=0.1
        Fraction of the maps held out (fixed by the seed) for the ``valid_loss`` monitor; None holds out nothing.
    verbose : int, default=0
        0 silent; 1 a progress bar over the epochs; 2 adds one over the mini-batches.
    random_state : int, RandomState instance or None, default=None
        The seed: None (fresh entropy), an int or a ``RandomState``; seeds initialisation, sampling, shuffling
        and the validation split.
    device : str or torch.device, default='cpu'
        Device of the parameters and the computation.
    dtype : {'float32', 'float64'} or torch dtype, default='float32'
        Precision of the computation.

    Attributes
    ----------
    filters_ : ndarray of shape (n_filters, channels, fh, fw)
        The filters.
    intercept_hidden_ : ndarray of shape (n_filters,)
        Hidden biases, one per filter.
    intercept_visible_ : ndarray of shape (channels,)
        Visible biases, one per channel.
    input_shape_ : tuple of int
        (channels, height, width) of the maps fitted.
    crop_shape_ : tuple of int
        The (height, width) the model uses.
    output_shape_ : tuple of int
        (n_filters, pooled height, pooled width).
    mean_, scale_ : ndarray
        Standardisation statistics (Gaussian visible units with ``standardize``).
    n_iter_ : int
        Epochs done.
    history_ : dict of lists
        Per epoch: ``recon_error`` (the CD step's, during training), ``train_loss`` and, with
        ``validation_fraction``, ``valid_loss`` (mean-field reconstruction MSE, standardised units, on up to 256
        maps), ``sparsity`` (mean pooled probability), ``learning_rate``, ``time``.

    See Also
    --------
    ConvDBN : ConvRBMs stacked and trained greedily.
    RBM : The dense model.

    Examples
    --------
    >>> import numpy as np
    >>> from pymusicrbm import ConvRBM
    >>> X = np.random.default_rng(0).standard_normal((8, 12, 12)).astype(np.float32)
    >>> crbm = ConvRBM(n_filters=4, filter_shape=(3, 3), batch_size=4, n_iter=2, random_state=0).fit(X)
    >>> crbm.filters_.shape
    (4, 1, 3, 3)
    >>> crbm.transform(X).shape
    (8, 4, 5, 5)
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

    _parameter_constraints = {
        **COMMON_CONSTRAINTS,
        "n_filters": [Interval(Integral, 1, None, closed="left")],
        "filter_shape": [Interval(Integral, 1, None, closed="left"), tuple, list],
        "pool": [Interval(Integral, 1, None, closed="left")],
        "visible": [StrOptions(set(ops.VISIBLE_TYPES))],
        "training": [StrOptions(set(TRAININGS))],
        "learning_rate": [Interval(Real, 0, None, closed="left"), None],
        "k": [Interval(Integral, 1, None, closed="left")],
        "persistent": ["boolean"],
        "momentum": [Interval(Real, 0, 0.999999, closed="both")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "sparsity_target": [Interval(Real, 0, 1, closed="both"), None],
        "sparsity_cost": [Interval(Real, 0, None, closed="left")],
        "standardize": [StrOptions({"channel", "row"}), None],
    }
    _structural_params = ("n_filters", "filter_shape", "pool", "visible", "training", "persistent", "standardize")
    _progress_keys = ("train_loss", "valid_loss", "sparsity")
    _loss_name = "the reconstruction error"
    _weights = ("_W", "filters")
    _STATE_TENSORS = ("_W", "_b", "_c", "_W_vel", "_b_vel", "_c_vel", "_chains")

    def _check_combinations(self):
        fs = self.filter_shape
        if isinstance(fs, Integral) and not isinstance(fs, bool):
            fs = (int(fs), int(fs))
        if (not isinstance(fs, (tuple, list)) or len(fs) != 2 or
                not all(isinstance(f, Integral) and not isinstance(f, bool) and f >= 1 for f in fs)):
            raise ValueError(f"filter_shape must be an int or a pair of positive ints (height, width), got "
                             f"{self.filter_shape!r}")
        self._fs = (int(fs[0]), int(fs[1]))
        self._lr = self.learning_rate if self.learning_rate is not None else DEFAULT_LR[self.training]
        if self.persistent and self.training != "cd":
            raise ValueError("persistent=True needs training='cd'")

    @property
    def _gaussian(self) -> bool:
        return self.visible == "gaussian"

    # ---- fitted attributes --------------------------------------------------------------------------------

    def __sklearn_is_fitted__(self):
        return "_W" in self.__dict__

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
        if distributed.sharded_inputs():  # every rank holds a shard: the statistics of all of them
            mean, var = distributed.pooled_moments(X.size // mean.size, mean, std ** 2)
            std = np.sqrt(var)
        self.mean_ = mean
        self.scale_ = np.where(std > 1e-8 * np.maximum(1.0, np.abs(mean)), std, 1.0)

    def _tensor(self, X: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(X).to(self._device)

    def _validate_input(self, X, reset: bool) -> np.ndarray:
        return as_maps(X)

    def _input(self, X) -> torch.Tensor:
        """Maps of a fitted (or restored) model, cropped and standardised, as a tensor."""
        return self._tensor(self._prepare(X, reset=False))

    # ---- initialisation -------------------------------------------------------------------------------------

    def _initial_hidden_bias(self) -> float:
        # So that the initial pooled probability equals the sparsity target (or 1/2): with near-zero filters every
        # unit of a block has probability e^c / (1 + p^2 e^c).
        t = self.sparsity_target if self.sparsity_target else 0.5
        t = min(max(t, 1e-4), 1 - 1e-4)
        return math.log(t / ((1 - t) * self.pool ** 2))

    def _initialize(self, X: np.ndarray) -> torch.Tensor:
        X = self._prepare(X, reset=True)
        self._seed_generators()
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
        self._reset_training()
        return Xt

    # ---- the epoch loop's hooks ----------------------------------------------------------------------------

    def _learning_rate(self, epoch: int) -> float:
        return self._lr

    def _progress_desc(self) -> str:
        return f"{type(self).__name__} {self.n_filters}x{self._fs[0]}x{self._fs[1]} pool {self.pool} ({self.training})"

    def _epoch_record(self, loss: float, lr: float, X: torch.Tensor, X_valid) -> dict:
        return {"learning_rate": lr, "recon_error": loss, **self._monitor(X[:_N_MONITOR], X_valid)}

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

    # ---- the statistics step (in a process group: all-reduced between the two halves) --------------------------

    def _statistics(self, v: torch.Tensor, lr: float, global_rows: int):
        """(this batch's reconstruction error, statistics that SUM over the ranks to the global batch's).
        CD/PCD: ``ops.conv_cd_stats``'s [dW, db, dc] weighted by 1 / the global batch size (chains: 1 / the
        global number of chains); chains advance in place. Reconstruction training: the gradients of this rank's
        loss divided by the number of ranks (so the sum is the gradient of the global mean loss)."""
        if self.training == "reconstruction":
            loss, grads = self._reconstruction_grads(v)
            return loss, [g / distributed.world_size() for g in grads]
        B = global_rows
        N = B if self._chains is None else self._chains.shape[0] * distributed.world_size()
        sparse = self.sparsity_target is not None
        dW, db, dc, sq_err = ops.conv_cd_stats(self._W, self._b, self._c, v, chains=self._chains,
                                               visible=self.visible, pool=self.pool, k=self.k,
                                               sparsity_target=self.sparsity_target if sparse else 0.0,
                                               sparsity_cost=self.sparsity_cost if sparse else 0.0,
                                               data_weight=1.0 / B, chain_weight=1.0 / N, generator=self._rng)
        return sq_err / v.numel(), [dW, db, dc]

    def _apply_statistics(self, stats: list, lr: float, epoch: int):
        """``ops.cd_apply_`` (``conv_cd_step_``'s update rule) on (all-reduced) statistics; reconstruction training:
        an Adam step on the all-reduced gradients."""
        params = [self._W, self._b, self._c]
        if self.training == "reconstruction":
            self._adam_step(params, stats, lr, epoch)
            return
        ok = ops.cd_apply_(*params, self._W_vel, self._b_vel, self._c_vel, *stats, lr=lr, momentum=self.momentum,
                           weight_decay=self.weight_decay)
        if not bool(ok):
            raise self._diverged(epoch, lr, "a parameter update was not finite")

    def _make_adam(self) -> torch.optim.Adam:
        # L2 weight decay on the filters only, as in the CD update
        return torch.optim.Adam([{"params": [self._W], "weight_decay": self.weight_decay},
                                 {"params": [self._b, self._c], "weight_decay": 0.0}], lr=self._lr)

    def _reconstruction_step(self, v: torch.Tensor, lr: float, epoch: int) -> torch.Tensor:
        loss, grads = self._reconstruction_grads(v)
        self._adam_step([self._W, self._b, self._c], grads, lr, epoch)
        return loss

    def _reconstruction_grads(self, v: torch.Tensor):
        """(mean-field reconstruction MSE, its gradients (plus the sparsity penalty's) for W, b, c)."""
        params = [self._W, self._b, self._c]
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
        return loss.detach(), list(grads)

    def _adam_step(self, params: list, grads: list, lr: float, epoch: int):
        if self._adam is None:
            self._adam = self._make_adam()
        for p, g in zip(params, grads):
            p.grad = g
        for group in self._adam.param_groups:
            group["lr"] = lr
        self._adam.step()
        for p in params:
            p.grad = None
        if not all(bool(torch.isfinite(p).all()) for p in params):
            raise self._diverged(epoch, lr, "a parameter update was not finite")

    def _divergence_advice(self, lr: float) -> list[str]:
        advice = [f"lower learning_rate (now {lr:.3g})", "add weight_decay (e.g. 1e-4)"]
        if self._gaussian and self.standardize is None:
            advice.append("standardise the inputs (standardize='channel')")
        return advice

    # ---- monitors and inference -------------------------------------------------------------------------------

    @torch.no_grad()
    def _mean_field(self, v: torch.Tensor):
        """(chunk of v, its mean-field reconstruction E[v | p(h | v)], its pooled probabilities), chunk by chunk of
        ``batch_size`` maps: a caller keeps what it needs, not the hidden maps of every input (at 32 filters
        they are ~30x the input)."""
        for i in range(0, v.shape[0], max(1, self.batch_size)):
            x = v[i:i + self.batch_size]
            P, _, Q = ops.conv_sample_hidden(x, self._W, self._c, self.pool, generator=self._rng)
            m, _ = ops.conv_sample_visible(P, self._W, self._b, None, self.visible, generator=self._rng)
            yield x, m, Q

    def _mean_field_sums(self, v: torch.Tensor) -> tuple[float, float]:
        """(mean squared error of v's mean-field reconstruction, mean pooled probability), summed chunk by chunk."""
        sq = q_sum = 0.0
        q_n = 0
        for x, m, q in self._mean_field(v):
            sq += float(F.mse_loss(m, x, reduction="sum"))
            q_sum, q_n = q_sum + float(q.sum()), q_n + q.numel()
        return sq / max(1, v.numel()), q_sum / max(1, q_n)

    def _monitor(self, X_mon: torch.Tensor, X_valid) -> dict:
        train_loss, sparsity = self._mean_field_sums(X_mon)
        out = {"train_loss": train_loss, "sparsity": sparsity}
        if X_valid is not None:
            out["valid_loss"] = self._mean_field_sums(X_valid[:_N_MONITOR])[0]
        return out

    @torch.no_grad()
    def transform(self, X, output: str = "pooled") -> np.ndarray:
        """Feature maps of X: ``output='pooled'`` -> pooled-unit probabilities (n, n_filters, hp, wp);
        ``'hidden'`` -> hidden-unit probabilities (n, n_filters, hh, wh). Inputs are cropped like the training
        data (so maps of a different length are fine as long as they are at least ``crop_shape_``)."""
        if output not in ("pooled", "hidden"):
            raise ValueError(f"output must be one of ('pooled', 'hidden'), got {output!r}")
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
        rec = np.concatenate([m.cpu().numpy() for _, m, _ in self._mean_field(self._tensor(X))]).astype(np.float64)
        if self._gaussian and self.standardize is not None:
            rec = rec * self.scale_ + self.mean_
        return rec

    def reconstruction_error(self, X) -> float:
        """Mean squared error of the mean-field reconstruction, in standardised units (as ``history_``)."""
        Xp = self._tensor(self._prepare(X, reset=False))
        return self._mean_field_sums(Xp)[0]

    # ---- checkpoint state -----------------------------------------------------------------------------------

    def _get_state(self):
        self._require_fitted()
        tensors = self._state_tensors()
        if self._adam is not None:
            tensors.update(self._optimizer_tensors(self._adam, "adam."))
        state = {"seed": self._seed, "input_shape_": list(self.input_shape_), "crop_shape_": list(self.crop_shape_),
                 **self._training_state()}
        return tensors, state

    def _set_state(self, tensors: dict, state: dict, check_against=None):
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
        self._load_state_tensors(tensors, state["seed"])
        self._adam = None
        if "adam_step" in state:  # version 1: the hand-written Adam's moments -> torch.optim.Adam's state
            step = torch.tensor(float(state["adam_step"]))
            for j in range(3):
                tensors[f"adam.{j}.step"] = step
                tensors[f"adam.{j}.exp_avg"] = tensors[f"adam_m{j}"]
                tensors[f"adam.{j}.exp_avg_sq"] = tensors[f"adam_v{j}"]
        if any(k.startswith("adam.") for k in tensors):
            self._adam = self._make_adam()
            self._load_optimizer(self._adam, tensors, "adam.")
        self._restore_training_state(state)


# Settings a ConvDBN passes to every layer (layer_params may override them, and verbose, device, dtype, per layer).
_SHARED = ("training", "learning_rate", "batch_size", "n_iter", "k", "persistent", "momentum", "weight_decay",
           "sparsity_target", "sparsity_cost", "validation_fraction")


class ConvDBN(TransformerMixin, StackEstimator):
    """Convolutional deep belief network: ConvRBMs trained greedily, each on the pooled-unit probabilities of the
    layer below (probabilistic max-pooling between the layers, Lee et al. 2009).

    ``n_filters``, ``filter_shapes`` and ``pools`` have one entry per layer. The first layer has ``visible``
    units (Gaussian by default, on standardised spectrograms), the layers above Bernoulli visible units (their
    inputs are probabilities). The other settings apply to every layer; ``layer_params`` (one dict per layer, or
    None) overrides them per layer (e.g. a smaller learning rate for the Gaussian layer).

    Layer i is seeded with ``layer_seed(seed, i)`` (the one scheme of every stack). ``transform(X, layers='top')``
    gives the top layer's pooled maps, ``layers='all'`` a list of every layer's.

    Parameters
    ----------
    n_filters : tuple of int, default=(32, 32)
        Number of filters of each layer, bottom to top.
    filter_shapes : tuple of tuple of int, default=((5, 5), (3, 3))
        Filter (height, width) of each layer.
    pools : tuple of int, default=(2, 2)
        Pooling block side of each layer.
    visible : {'gaussian', 'bernoulli'}, default='gaussian'
        Visible units of the first layer; the layers above are Bernoulli.
    training : {'cd', 'reconstruction'}, default='cd'
        Training of every layer, as in :class:`ConvRBM`.
    learning_rate : float or None, default=None
        Step size of each layer's own (unsupervised) training; None picks 0.5 for CD and 0.01 for Adam.
    batch_size : int, default=16
        Maps per mini-batch.
    n_iter : int, default=10
        Unsupervised training epochs of each layer.
    k : int, default=1
        Gibbs steps per CD update.
    persistent : bool, default=False
        Persistent CD (needs ``training='cd'``).
    momentum : float, default=0.5
        Momentum of each layer's CD updates.
    weight_decay : float, default=1e-4
        L2 penalty on each layer's filters.
    sparsity_target : float or None, default=0.05
        Target mean pooled-unit probability of each layer; None: no sparsity term.
    sparsity_cost : float, default=1.0
        Weight of each layer's sparsity term.
    standardize : {'channel', 'row'} or None, default='channel'
        Standardisation of a Gaussian first layer's inputs, as in :class:`ConvRBM`.
    validation_fraction : float or None, default=0.1
        Fraction of each layer's maps held out for its ``valid_loss`` monitor; None holds out nothing.
    layer_params : list of dict or None, default=None
        One dict per layer of :class:`ConvRBM` settings that override the shared ones for that layer; None: every
        layer uses the shared settings.
    verbose : int, default=0
        Verbosity of each layer's training, as in :class:`ConvRBM`.
    random_state : int, RandomState instance or None, default=None
        The seed: None (fresh entropy), an int or a ``RandomState``; layer i gets ``layer_seed(seed, i)``.
    device : str or torch.device, default='cpu'
        Device of the parameters and the computation.
    dtype : {'float32', 'float64'} or torch dtype, default='float32'
        Precision of the computation.

    Attributes
    ----------
    layers_ : list of ConvRBM
        The ConvRBM layers, bottom to top.
    n_layers_fitted_ : int
        Number of layers trained so far (``len(layers_)`` after a complete fit).
    history_ : list of dict
        One history dict per layer (see :class:`ConvRBM`).

    See Also
    --------
    ConvRBM : One layer.
    DBN : The dense stack.

    Examples
    --------
    >>> import numpy as np
    >>> from pymusicrbm import ConvDBN
    >>> X = np.random.default_rng(0).standard_normal((8, 12, 12)).astype(np.float32)
    >>> cdbn = ConvDBN(n_filters=(4, 4), filter_shapes=((3, 3), (2, 2)), pools=(2, 1), batch_size=4, n_iter=2,
    ...                random_state=0).fit(X)
    >>> cdbn.transform(X).shape
    (8, 4, 4, 4)
    >>> [maps.shape for maps in cdbn.transform(X, layers="all")]
    [(8, 4, 5, 5), (8, 4, 4, 4)]
    """

    _tuple_params = ("n_filters", "filter_shapes", "pools", "layer_params")
    _parameter_constraints = {
        **{k: v for k, v in ConvRBM._parameter_constraints.items() if k in _SHARED + ("visible", "standardize")},
        **COMMON_CONSTRAINTS,
        "n_filters": ["array-like"],
        "filter_shapes": ["array-like"],
        "pools": ["array-like"],
        "layer_params": [list, tuple, None],
    }
    _structural_params = ("n_filters", "filter_shapes", "pools", "visible", "training", "standardize")
    _layer_class = ConvRBM
    _layer_shared = _SHARED
    _layer_overridable = _SHARED + ("verbose", "device", "dtype")

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

    def _check_combinations(self):
        nf, fs, pl = self.n_filters, self.filter_shapes, self.pools
        for name, val in (("n_filters", nf), ("filter_shapes", fs), ("pools", pl)):
            if not isinstance(val, (tuple, list)) or len(val) == 0:
                raise ValueError(f"{name} must be a non-empty list with one entry per layer, got {val!r}")
        if not len(nf) == len(fs) == len(pl):
            raise ValueError(f"n_filters, filter_shapes and pools must have one entry per layer, got lengths "
                             f"{len(nf)}, {len(fs)}, {len(pl)}")

    def _layer_specs(self) -> list[dict]:
        fs = self.filter_shapes
        return [dict(n_filters=self.n_filters[i], pool=self.pools[i],
                     filter_shape=tuple(fs[i]) if isinstance(fs[i], (list, tuple)) else fs[i],
                     visible=self.visible if i == 0 else "bernoulli",
                     standardize=self.standardize if i == 0 else None) for i in range(len(self.n_filters))]

    def _validate_input(self, X, reset: bool) -> np.ndarray:
        return as_maps(X)

    def transform(self, X, layers: str = "top"):
        """Pooled feature maps of the top layer (``layers='top'``), or a list of every layer's (``'all'``)."""
        self._require_fitted()
        return self._transform_layers(X, layers)
