"""Restricted Boltzmann machine (Bernoulli or Gaussian visible units, Bernoulli hidden units) as a scikit-learn
estimator trained by the fused ``pymusicrbm.ops.cd_step_`` op (CD-k, PCD-k) or, for fast PCD, by the sampling ops.
"""
from __future__ import annotations

import contextlib
import math
import warnings
from numbers import Integral, Real

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.sparsefuncs import mean_variance_axis
from sklearn.utils.validation import check_is_fitted

from . import distributed, ops
from ._base import COMMON_CONSTRAINTS, Interval, StrOptions, TrainedEstimator, TrainingDivergedError
from ._utils import (draw_seed, finite_range, float_dtypes, input_dtype, is_float32, make_generator, numpy_dtype,
                     randn, to_tensor, validate_finite)
from .ais import AISResult, ais_log_partition, exact_log_partition

__all__ = ["RBM", "TrainingDivergedError"]

_N_MONITOR = 1000          # rows of training (and held-out) data used for the per-epoch monitors
_SIGMA_BOUNDS = (0.1, 10.0)
_CHUNK = 1 << 16           # rows per chunk in transform / scoring
_CHUNK_ELEMENTS = 1 << 22  # values per chunk when data are converted (densified, clipped, standardised)
_ACCEPT_SPARSE = ("csr", "csc")  # other sparse formats (LIL, COO, ...) are converted to CSR by validation


def row_chunks(X, n_columns: int) -> list[slice]:
    """Row slices of about ``_CHUNK_ELEMENTS`` values: bounded memory when X is densified or converted."""
    rows = max(1, _CHUNK_ELEMENTS // max(1, n_columns))
    return [slice(i, min(i + rows, X.shape[0])) for i in range(0, X.shape[0], rows)]


class RBM(ClassNamePrefixFeaturesOutMixin, TransformerMixin, TrainedEstimator):
    """Restricted Boltzmann machine with Bernoulli hidden units and Bernoulli or Gaussian visible units.

    Training: CD-k (``persistent=False``), PCD-k (``persistent=True``, ``n_chains`` fantasy particles) or fast PCD
    (``persistent='fast'``, Tieleman & Hinton 2009: the chains run on ``W + W_fast``, whose fast part learns with
    ``fast_learning_rate`` and decays by ``fast_decay`` every step; the gradient statistics use the regular
    weights). Updates use momentum, L2 ``weight_decay`` and an optional sparsity target on the mean hidden
    probability; the learning rate of epoch ``e`` is ``learning_rate / (1 + learning_rate_decay * e)``.

    Gaussian visible units (``visible='gaussian'``, for real-valued inputs such as whitened spectra): the estimator
    standardises its inputs (``mean_``, ``scale_``; ``standardize=True``), and the per-unit sigma is either fixed
    at 1 (in standardised units) or learned (``learn_sigma=True``, on log sigma, bounded to [0.1, 10]). Divergence
    (non-finite update, NaN reconstruction error, |W| > 1e3) stops training with :class:`TrainingDivergedError`.

    Parameters follow scikit-learn's ``BernoulliRBM`` where they overlap (``n_components``, ``learning_rate``,
    ``batch_size``, ``n_iter``, ``verbose``, ``random_state``). All sampling and shuffling draw from a private
    ``torch.Generator`` seeded from ``random_state``, so a seed fixes the result (and the same initial weights in
    float32 and float64).

    Input: dense arrays or sparse matrices (CSR, CSC; other formats are converted), densified in chunks of rows.
    Bernoulli visible units read X as probabilities of being on: values outside [0, 1] are clipped into it, with
    a warning (scale X, e.g. with ``MinMaxScaler``, or use ``visible='gaussian'`` for real-valued data).

    Parameters
    ----------
    n_components : int, default=256
        Number of hidden units.
    learning_rate : float, default=0.1
        Step size of the contrastive-divergence updates (the model's own, unsupervised training). Gaussian
        visible units usually need ``learning_rate <= 0.01``.
    batch_size : int, default=10
        Rows per mini-batch.
    n_iter : int, default=10
        Unsupervised training epochs (passes over the training data).
    verbose : int, default=0
        0 silent; 1 prints a line per epoch, as scikit-learn does; 2 adds a progress bar over the mini-batches.
    random_state : int, RandomState instance or None, default=None
        The seed: None (fresh entropy), an int or a ``RandomState``. Seeds the private ``torch.Generator`` of
        initialisation, sampling and shuffling; an int gives reproducible results.
    visible : {'bernoulli', 'gaussian'}, default='bernoulli'
        Type of the visible units: 'bernoulli' for data in [0, 1], 'gaussian' for real-valued data.
    k : int, default=1
        Gibbs steps per update (CD-k / PCD-k).
    persistent : bool or 'fast', default=False
        False: CD-k; True: persistent CD (PCD-k); 'fast': fast PCD (Tieleman & Hinton 2009).
    n_chains : int or None, default=None
        Number of persistent chains (fantasy particles) for ``persistent=True`` or ``'fast'``; None uses
        ``batch_size``.
    momentum : float, default=0.5
        Momentum of the parameter updates, in [0, 1).
    weight_decay : float, default=0.0
        L2 penalty on the weights.
    sparsity_target : float or None, default=None
        Target mean hidden probability, in [0, 1]; None: no sparsity penalty.
    sparsity_cost : float, default=0.1
        Weight of the sparsity penalty (used only with ``sparsity_target``).
    learning_rate_decay : float, default=0.0
        The learning rate of epoch ``e`` is ``learning_rate / (1 + learning_rate_decay * e)``.
    learn_sigma : bool, default=False
        Learn the per-unit sigma of Gaussian visible units (on log sigma, bounded to [0.1, 10]); needs
        ``visible='gaussian'``. False fixes sigma at 1 in standardised units.
    sigma_learning_rate : float or None, default=None
        Step size of the log-sigma updates (``learn_sigma=True``); None uses the epoch's learning rate / 10.
    standardize : bool, default=True
        Gaussian visible units: standardise the inputs (``mean_``, ``scale_``) before training and inference.
    fast_learning_rate : float or None, default=None
        Step size of the fast weights (``persistent='fast'``); None uses ``learning_rate``.
    fast_decay : float, default=0.95
        Factor by which the fast weights decay every step (``persistent='fast'``), in [0, 1].
    validation_fraction : float or None, default=None
        Fraction of the training rows held out (fixed by the seed) for the free-energy and pseudo-likelihood
        monitors on unseen data; None holds out nothing.
    monitor : bool or 'exact', default=True
        Per-epoch ``pseudo_likelihood`` monitor (Bernoulli units, up to 1000 training rows): True is
        scikit-learn's one-flip estimate (cheap beside an epoch), 'exact' the exact form (can cost more than the
        epoch), False none.
    device : str or torch.device, default='cpu'
        Device of the parameters and the computation ('cpu', 'cuda', ...).
    dtype : {'float32', 'float64'}, torch dtype or None, default=None
        Precision of the computation; None computes in the input's precision (float32 data -> float32, anything
        else -> float64).

    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_features)
        Weights, as scikit-learn's ``BernoulliRBM``.
    intercept_hidden_ : ndarray of shape (n_components,)
        Hidden biases.
    intercept_visible_ : ndarray of shape (n_features,)
        Visible biases.
    sigma_ : ndarray of shape (n_features,) or None
        Per-unit standard deviation of Gaussian visible units (standardised units); None for Bernoulli units.
    mean_, scale_ : ndarray of shape (n_features,)
        Standardisation statistics (Gaussian visible units with ``standardize=True`` only).
    h_samples_ : ndarray of shape (n_chains, n_components)
        Persistent chains only: a sample of the chains' hidden states, as scikit-learn's PCD keeps.
    n_features_in_ : int
        Number of features seen during ``fit``.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of the features seen during ``fit`` (only when X has string feature names).
    n_iter_ : int
        Epochs done.
    history_ : dict of lists
        Per-epoch monitors: ``recon_error`` (mean squared error of the first mean-field reconstruction during
        training, standardised units for Gaussian), ``pseudo_likelihood`` (Bernoulli; mean log pseudo-likelihood
        of up to 1000 training rows, see ``monitor``), and with ``validation_fraction``: ``free_energy_train``,
        ``free_energy_valid``, ``free_energy_gap`` (valid - train; growing = overfitting),
        ``pseudo_likelihood_valid``; plus ``learning_rate``, ``time``, ``sigma_mean`` when sigma is learned.

    See Also
    --------
    sklearn.neural_network.BernoulliRBM : scikit-learn's Bernoulli RBM (PCD-1), whose parameters this follows.
    DBN : A stack of RBMs trained greedily.
    DBNClassifier : DBN pre-training, then supervised fine-tuning.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import load_digits
    >>> from pymusicrbm import RBM
    >>> X = (load_digits().data[:200] > 8).astype(np.float32)
    >>> rbm = RBM(n_components=16, n_iter=2, random_state=0).fit(X)
    >>> rbm.transform(X).shape
    (200, 16)
    >>> rbm.components_.shape
    (16, 64)
    >>> rbm.n_iter_, len(rbm.history_["recon_error"])
    (2, 2)
    """

    def __init__(self, n_components=256, *, learning_rate=0.1, batch_size=10, n_iter=10, verbose=0,
                 random_state=None, visible="bernoulli", k=1, persistent=False, n_chains=None, momentum=0.5,
                 weight_decay=0.0, sparsity_target=None, sparsity_cost=0.1, learning_rate_decay=0.0,
                 learn_sigma=False, sigma_learning_rate=None, standardize=True, fast_learning_rate=None,
                 fast_decay=0.95, validation_fraction=None, monitor=True, device="cpu", dtype=None):
        self.n_components = n_components
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.n_iter = n_iter
        self.verbose = verbose
        self.random_state = random_state
        self.visible = visible
        self.k = k
        self.persistent = persistent
        self.n_chains = n_chains
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.sparsity_target = sparsity_target
        self.sparsity_cost = sparsity_cost
        self.learning_rate_decay = learning_rate_decay
        self.learn_sigma = learn_sigma
        self.sigma_learning_rate = sigma_learning_rate
        self.standardize = standardize
        self.fast_learning_rate = fast_learning_rate
        self.fast_decay = fast_decay
        self.validation_fraction = validation_fraction
        self.monitor = monitor
        self.device = device
        self.dtype = dtype

    # ---- parameters ---------------------------------------------------------------------------------------

    _parameter_constraints = {
        **COMMON_CONSTRAINTS,
        "dtype": [*COMMON_CONSTRAINTS["dtype"], None],  # None: follow the input
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="left")],
        "visible": [StrOptions(set(ops.VISIBLE_TYPES))],
        "k": [Interval(Integral, 1, None, closed="left")],
        "persistent": ["boolean", StrOptions({"fast"})],
        "n_chains": [Interval(Integral, 1, None, closed="left"), None],
        "momentum": [Interval(Real, 0, 0.999999, closed="both")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "sparsity_target": [Interval(Real, 0, 1, closed="both"), None],
        "sparsity_cost": [Interval(Real, 0, None, closed="left")],
        "learning_rate_decay": [Interval(Real, 0, None, closed="left")],
        "learn_sigma": ["boolean"],
        "sigma_learning_rate": [Interval(Real, 0, None, closed="left"), None],
        "standardize": ["boolean"],
        "fast_learning_rate": [Interval(Real, 0, None, closed="left"), None],
        "fast_decay": [Interval(Real, 0, 1, closed="both")],
        "monitor": ["boolean", StrOptions({"exact"})],
    }
    _structural_params = ("visible", "n_components", "persistent", "learn_sigma", "standardize")
    _progress_keys = ("recon_error", "pseudo_likelihood", "free_energy_gap")
    _loss_name = "the reconstruction error"
    _verbose_lines = True
    _weights = ("_W", "weights")
    _STATE_TENSORS = ("_W", "_b", "_c", "_W_vel", "_b_vel", "_c_vel", "_base_b", "_log_sigma", "_chains",
                      "_W_fast", "_b_fast", "_c_fast")

    def _check_combinations(self):
        if self.learn_sigma and self.visible != "gaussian":
            raise ValueError("learn_sigma=True needs visible='gaussian' (Bernoulli units have no sigma)")

    @property
    def _gaussian(self) -> bool:
        return self.visible == "gaussian"

    # ---- public fitted attributes (numpy, sklearn layout) --------------------------------------------------

    @property
    def components_(self) -> np.ndarray:
        """Weights, shape (n_components, n_features), as scikit-learn's BernoulliRBM."""
        self._require_fitted()
        return self._W.t().cpu().numpy().copy()

    @property
    def intercept_hidden_(self) -> np.ndarray:
        self._require_fitted()
        return self._c.cpu().numpy().copy()

    @property
    def intercept_visible_(self) -> np.ndarray:
        self._require_fitted()
        return self._b.cpu().numpy().copy()

    @property
    def sigma_(self) -> np.ndarray | None:
        """Per-unit standard deviation of Gaussian visible units (standardised units); None for Bernoulli."""
        self._require_fitted()
        if not self._gaussian:
            return None
        s = self._sigma()
        return np.ones(self.n_features_in_) if s is None else s.cpu().numpy().copy()

    @property
    def _n_features_out(self):
        return self.n_components

    def __sklearn_is_fitted__(self):
        return "_W" in self.__dict__

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        tags.input_tags.sparse = True
        return tags

    @property
    def h_samples_(self) -> np.ndarray:
        """Hidden states of the persistent chains (``persistent=True`` or ``'fast'``), shape (n_chains,
        n_components): a sample of p(h | chains) (on ``W + W_fast`` for fast PCD) from a generator seeded by the
        model's seed and ``n_iter_``, so it is reproducible and leaves training's random stream alone. CD-k keeps
        no chains, so the attribute does not exist then."""
        self._require_fitted()
        if self._chains is None:
            raise AttributeError("h_samples_ exists only for persistent chains (persistent=True or 'fast'); "
                                 "CD-k (persistent=False) keeps none")
        W, c = self._W, self._c
        if self.persistent == "fast":
            W, c = W + self._W_fast, c + self._c_fast
        seed = int(np.random.SeedSequence([self._seed, 4, self.n_iter_]).generate_state(1, np.uint64)[0] >> 1)
        with torch.no_grad():
            _, h = ops.sample_hidden(self._chains, W, c, self._sigma(), make_generator(seed, self._device))
        return h.cpu().numpy()

    def _sigma(self) -> torch.Tensor | None:
        ls = self.__dict__.get("_log_sigma")
        return None if ls is None else ls.exp()

    # ---- data --------------------------------------------------------------------------------------------

    def _input(self, X, clip=True) -> torch.Tensor:
        """Validated X (dense or sparse) as one tensor of the model's dtype on its device (see :meth:`_chunks`)."""
        parts = self._chunks(X, clip)
        if len(parts) == 1 and not sp.issparse(X):
            return parts[0][1]()
        out = torch.empty(X.shape, dtype=self._dtype, device=self._device)
        for rows, convert in parts:
            out[rows] = convert()
        return out

    def _chunks(self, X, clip=True) -> list:
        """(rows, convert) pairs; ``convert()`` gives those rows of X as a tensor of the model's dtype on its
        device: densified (sparse X), standardised (Gaussian units) or clipped to [0, 1] (Bernoulli units, with a
        warning; ``clip=False`` for a network that takes any real input), in the model's precision (a float64 copy
        of a large float32 data set would double its memory). Dense X that needs no conversion is one chunk,
        without a copy where its dtype is the model's."""
        dt = numpy_dtype(self._dtype)
        standardize = self._gaussian and self.standardize
        clip = clip and not self._gaussian and self._out_of_range(X)
        if not (sp.issparse(X) or standardize or clip):
            return [(slice(None), lambda: to_tensor(X, self._dtype, self._device))]
        if sp.issparse(X) and X.format != "csr":
            X = X.tocsr()  # row slices of CSR are cheap

        def convert(rows):
            x = X[rows]
            x = x.toarray() if sp.issparse(x) else x
            x = np.array(x, dtype=dt)  # a copy: X stays untouched
            if standardize:
                x -= self.mean_.astype(dt)
                x /= self.scale_.astype(dt)
            elif clip:
                np.clip(x, 0.0, 1.0, out=x)
            return torch.from_numpy(x).to(self._device)

        return [(rows, lambda rows=rows: convert(rows)) for rows in row_chunks(X, X.shape[1])]

    def _out_of_range(self, X) -> bool:
        lo, hi = finite_range(X)
        if lo >= 0 and hi <= 1:
            return False
        warnings.warn(f"{type(self).__name__}: X has values outside [0, 1]; Bernoulli visible units read X as "
                      "probabilities and clip it to [0, 1] (scale X into [0, 1], e.g. with MinMaxScaler, or use "
                      "visible='gaussian' for real-valued data)", UserWarning, stacklevel=4)
        return True

    # ---- initialisation ----------------------------------------------------------------------------------

    def _initialize(self, X):
        V, H = X.shape[1], self.n_components
        if self._dtype is None:
            self._dtype = input_dtype(X)
        self._seed_generators()
        if self._gaussian and self.standardize:
            if sp.issparse(X):
                self.mean_, var = mean_variance_axis(X.astype(np.float64), axis=0)
                scale = np.sqrt(var)
            else:
                self.mean_ = X.mean(0, dtype=np.float64)
                scale = X.std(0, dtype=np.float64)
            if distributed.sharded_inputs():  # every rank holds a shard: the statistics of all of them
                self.mean_, var = distributed.pooled_moments(X.shape[0], self.mean_, scale ** 2)
                scale = np.sqrt(var)
            self.scale_ = np.where(scale > 1e-12 * np.maximum(1.0, np.abs(self.mean_)), scale, 1.0)
        opts = dict(dtype=self._dtype, device=self._device)
        self._W = randn((V, H), self._rng, scale=0.01, **opts)
        Xt = self._input(X)
        if self._gaussian:
            self._b = Xt.mean(0).contiguous()
            self._base_b = self._b.clone()
        else:
            # Hinton's guide: visible biases start at the data's log-odds (also the AIS base-rate model)
            p = Xt.mean(0).clamp(0.01, 0.99)
            self._b = torch.log(p / (1 - p)).contiguous()
            self._base_b = self._b.clone()
        self._c = torch.zeros(H, **opts)
        self._W_vel, self._b_vel, self._c_vel = (torch.zeros_like(t) for t in (self._W, self._b, self._c))
        self._log_sigma = torch.zeros(V, **opts) if self.learn_sigma else None
        self._chains = self._W_fast = self._b_fast = self._c_fast = None
        if not (self._gaussian and self.standardize):
            self.__dict__.pop("mean_", None)
            self.__dict__.pop("scale_", None)
        if self.persistent:
            n = self.n_chains or self.batch_size
            idx = torch.randint(Xt.shape[0], (n,), generator=self._shuffle_rng).to(self._device)
            self._chains = Xt.index_select(0, idx).contiguous()
        if self.persistent == "fast":
            self._W_fast, self._b_fast, self._c_fast = (torch.zeros_like(t) for t in (self._W, self._b, self._c))
        self._reset_training()
        return Xt

    # ---- fitting -----------------------------------------------------------------------------------------

    def _validate_input(self, X, reset: bool):
        return validate_finite(self, X, dtype=float_dtypes(X), accept_sparse=_ACCEPT_SPARSE, reset=reset)

    def partial_fit(self, X, y=None):
        """One epoch over X (in mini-batches), starting from the current parameters; the first call initialises
        the model (and, for Gaussian units, the standardisation from this X)."""
        first = not self.__sklearn_is_fitted__()
        if first:
            self._check_params()
        X = self._validate_input(X, reset=first)
        Xt = self._initialize(X) if first else self._input(X)
        self._run_epochs(Xt, None, 1)
        return self

    def _learning_rate(self, epoch: int) -> float:
        return self.learning_rate / (1.0 + self.learning_rate_decay * epoch)

    def _progress_desc(self) -> str:
        return f"{type(self).__name__} {self.visible} {self._W.shape[0]}->{self.n_components}"

    def _epoch_record(self, loss: float, lr: float, X: torch.Tensor, X_valid: torch.Tensor | None) -> dict:
        rec = {"learning_rate": lr, "recon_error": loss}
        if self.monitor:
            rec.update(self._monitor(X[:_N_MONITOR], X_valid))
        if self.learn_sigma:
            rec["sigma_mean"] = float(self._sigma().mean())
        if self.verbose and not self.monitor and not self._gaussian:  # for the verbose line only
            rec["_pseudo_likelihood"] = float(self._monitor_pseudo_likelihood(X[:_N_MONITOR]))
        return rec

    def _epoch_line(self, rec: dict) -> str:
        """scikit-learn's verbose line (``[BernoulliRBM] Iteration 1, pseudo-likelihood = -21.32, time = 0.05s``),
        with this class's name; Gaussian units report the reconstruction error instead."""
        if self._gaussian:
            value = f"reconstruction error = {rec['recon_error']:.4f}"
        else:
            value = f"pseudo-likelihood = {rec.get('pseudo_likelihood', rec.get('_pseudo_likelihood')):.2f}"
        return f"[{type(self).__name__}] Iteration {rec['epoch']}, {value}, time = {rec['time']:.2f}s"

    def _batch_update(self, v: torch.Tensor, lr: float, epoch: int) -> torch.Tensor:
        if self.persistent == "fast":
            return self._fpcd_update(v, lr, epoch)
        with self._diverging(epoch, lr):
            r = ops.cd_step_(*self._params_and_velocities(), v, **self._cd_options(lr))
        if self.learn_sigma:
            self._update_sigma(v, lr)
        return r

    def _epoch_update(self, X: torch.Tensor, order: torch.Tensor, lr: float, epoch: int) -> torch.Tensor | None:
        # CD-k / PCD-k with a fixed sigma need nothing in Python between steps: one ops.cd_steps_ call, the same
        # steps as _batch_update's, bit for bit
        if self.persistent == "fast" or self.learn_sigma:
            return None
        with self._diverging(epoch, lr):
            return ops.cd_steps_(*self._params_and_velocities(), X, order, self.batch_size, **self._cd_options(lr))

    def _params_and_velocities(self) -> tuple:
        return self._W, self._b, self._c, self._W_vel, self._b_vel, self._c_vel

    def _cd_options(self, lr: float) -> dict:
        """The keyword arguments of ops.cd_step_ / cd_steps_ after the parameters and the data."""
        sparse = self.sparsity_target is not None
        return dict(chains=self._chains, sigma=self._sigma(), visible=self.visible, k=self.k, lr=lr,
                    momentum=self.momentum, weight_decay=self.weight_decay,
                    sparsity_target=self.sparsity_target if sparse else 0.0,
                    sparsity_cost=self.sparsity_cost if sparse else 0.0, generator=self._rng)

    @contextlib.contextmanager
    def _diverging(self, epoch: int, lr: float):
        """The CD ops' error for a non-finite update (nothing applied) as a TrainingDivergedError."""
        try:
            yield
        except RuntimeError as e:
            if "not finite" in str(e):
                raise self._diverged(epoch, lr, "a parameter update was not finite") from None
            raise

    def _negative_samples(self, v: torch.Tensor, W, b, c, k: int | None = None) -> torch.Tensor:
        """k (default ``self.k``) steps of block Gibbs sampling from v."""
        s = self._sigma()
        for _ in range(self.k if k is None else k):
            _, h = ops.sample_hidden(v, W, c, s, self._rng)
            _, v = ops.sample_visible(h, W, b, s, self.visible, self._rng)
        return v

    def _update_sigma(self, v: torch.Tensor, lr: float):
        # d log p / d log sigma_i = <(v_i-b_i)^2/sigma_i^2 - (v_i/sigma_i) (W p(h|v))_i>_data - <same>_model
        neg = self._chains if self._chains is not None else self._negative_samples(v, self._W, self._b, self._c)
        s = self._sigma()
        self._step_sigma(self._sigma_statistic(v, s).mean(0) - self._sigma_statistic(neg, s).mean(0), lr)

    def _sigma_statistic(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """Per row: (x - b)^2 / sigma^2 - (x / sigma) (W p(h | x)), the log-sigma gradient's summand."""
        xs = x / s
        p = torch.sigmoid(torch.addmm(self._c, xs, self._W))
        return ((x - self._b) / s).square() - xs * (p @ self._W.t())

    def _step_sigma(self, g: torch.Tensor, lr: float):
        slr = self.sigma_learning_rate if self.sigma_learning_rate is not None else lr / 10
        if not bool(torch.isfinite(g).all()):
            raise self._diverged(self.n_iter_, lr, "the sigma update was not finite")
        self._log_sigma.add_(g, alpha=slr).clamp_(math.log(_SIGMA_BOUNDS[0]), math.log(_SIGMA_BOUNDS[1]))

    def _fpcd_update(self, v: torch.Tensor, lr: float, epoch: int) -> torch.Tensor:
        """Fast PCD (Tieleman & Hinton 2009) from the sampling ops: chains run on the regular + fast weights."""
        recon, stats = self._statistics(v, lr, v.shape[0], sigma=False)
        self._apply_statistics(stats, lr, epoch)
        if self.learn_sigma:
            self._update_sigma(v, lr)
        return recon

    # ---- the statistics step (fast PCD; every mode in a process group, all-reduced between the two halves) ----

    def _statistics(self, v: torch.Tensor, lr: float, global_rows: int, sigma: bool = True):
        """(this batch's reconstruction error, statistics): the gradient statistics of this rank's rows, summed
        and weighted by 1 / the global batch size (data) and 1 / the global number of negative samples (chains),
        so that a SUM over the ranks gives the statistics of the global batch. CD-k / PCD-k: ``ops.cd_stats``'s
        [dW, db, dc] (sparsity term included); fast PCD (from the sampling ops, the chains on W + W_fast):
        [gW, gb, gc, the data's mean hidden probability (``sparsity_target``)]. Then, with ``learn_sigma`` and
        ``sigma``, the log-sigma statistic (parameters before this step's update; negative samples: the chains,
        or k Gibbs steps from the data for CD). Chains advance in place; the parameters are not touched."""
        s = self._sigma()
        W, b, c = self._W, self._b, self._c
        B = global_rows
        N = B if self._chains is None else self._chains.shape[0] * distributed.world_size()
        if self.persistent == "fast":
            recon, stats, neg = self._fast_statistics(v, B, N)
        else:
            sparse = self.sparsity_target is not None
            dW, db, dc, sq_err = ops.cd_stats(W, b, c, v, chains=self._chains, sigma=s, visible=self.visible,
                                              k=self.k, sparsity_target=self.sparsity_target if sparse else 0.0,
                                              sparsity_cost=self.sparsity_cost if sparse else 0.0,
                                              data_weight=1.0 / B, chain_weight=1.0 / N, generator=self._rng)
            recon, stats, neg = sq_err / v.numel(), [dW, db, dc], self._chains
        if sigma and self.learn_sigma:
            if neg is None:
                neg = self._negative_samples(v, W, b, c)
            stats.append(self._sigma_statistic(v, s).sum(0) / B - self._sigma_statistic(neg, s).sum(0) / N)
        return recon, stats

    def _fast_statistics(self, v: torch.Tensor, B: int, N: int):
        s = self._sigma()
        W, b, c = self._W, self._b, self._c
        x0 = v if s is None else v / s
        p0, h0 = ops.sample_hidden(v, W, c, s, self._rng)
        recon_mean = torch.addmm(b, h0, W.t()).sigmoid_() if not self._gaussian else \
            b + (h0 @ W.t()) * (1.0 if s is None else s)
        recon = torch.nn.functional.mse_loss(recon_mean, v)
        neg = self._negative_samples(self._chains, W + self._W_fast, b + self._b_fast, c + self._c_fast)
        self._chains.copy_(neg)
        xk = neg if s is None else neg / s
        pk = torch.sigmoid(torch.addmm(c, xk, W))
        gW = torch.addmm(x0.t() @ p0, xk.t(), pk, beta=1.0 / B, alpha=-1.0 / N)
        gb = x0.sum(0) / B - xk.sum(0) / N
        if s is not None:
            gb = gb / s
        stats = [gW, gb, p0.sum(0) / B - pk.sum(0) / N]
        if self.sparsity_target is not None:
            stats.append(p0.sum(0) / B)
        return recon, stats, neg

    def _apply_statistics(self, stats: list, lr: float, epoch: int):
        """The update rule of ``cd_step_`` from (all-reduced) statistics, by ``ops.cd_apply_`` (fast PCD: the same
        rule in PyTorch, and the fast weights decay and learn); then log sigma steps and is clamped."""
        n_core = 4 if self.persistent == "fast" and self.sparsity_target is not None else 3
        stats, sigma_stat = stats[:n_core], (stats[n_core] if len(stats) > n_core else None)
        if self.persistent != "fast":
            ok = ops.cd_apply_(self._W, self._b, self._c, self._W_vel, self._b_vel, self._c_vel, *stats, lr=lr,
                               momentum=self.momentum, weight_decay=self.weight_decay)
            if not bool(ok):
                raise self._diverged(epoch, lr, "a parameter update was not finite")
        else:
            self._apply_fast(stats, lr, epoch)
        if sigma_stat is not None:
            self._step_sigma(sigma_stat, lr)

    def _apply_fast(self, stats: list, lr: float, epoch: int):
        gW, gb, gc = stats[:3]
        if self.sparsity_target is not None:
            gc = gc + self.sparsity_cost * (self.sparsity_target - stats[3])
        W, b, c = self._W, self._b, self._c
        new_vel = [self.momentum * self._W_vel + lr * (gW - self.weight_decay * W),
                   self.momentum * self._b_vel + lr * gb, self.momentum * self._c_vel + lr * gc]
        if not all(bool(torch.isfinite(t).all()) for t in new_vel):
            raise self._diverged(epoch, lr, "a parameter update was not finite")
        flr = self.fast_learning_rate if self.fast_learning_rate is not None else self.learning_rate
        for p, vel, nv, fast, g in ((W, self._W_vel, new_vel[0], self._W_fast, gW),
                                    (b, self._b_vel, new_vel[1], self._b_fast, gb),
                                    (c, self._c_vel, new_vel[2], self._c_fast, gc)):
            vel.copy_(nv)
            p.add_(nv)
            fast.mul_(self.fast_decay).add_(g, alpha=flr)

    def _divergence_advice(self, lr: float) -> list[str]:
        advice = ["lower learning_rate (now %.3g)" % lr]
        if self._gaussian:
            advice.append("Gaussian visible units usually need learning_rate <= 0.01")
            if not self.standardize:
                advice.append("set standardize=True")
            if self.learn_sigma:
                advice.append("set learn_sigma=False")
        advice.append("add weight_decay (e.g. 1e-4)")
        if self.momentum > 0.5:
            advice.append("lower momentum")
        return advice

    # ---- monitoring --------------------------------------------------------------------------------------

    @torch.no_grad()
    def _monitor(self, X_mon: torch.Tensor, X_valid: torch.Tensor | None) -> dict:
        out = {}
        if not self._gaussian:
            out["pseudo_likelihood"] = float(self._monitor_pseudo_likelihood(X_mon))
        if X_valid is not None:
            Xv = X_valid[:_N_MONITOR]
            fe_t = float(self._free_energy(X_mon).mean())
            fe_v = float(self._free_energy(Xv).mean())
            out.update(free_energy_train=fe_t, free_energy_valid=fe_v, free_energy_gap=fe_v - fe_t)
            if not self._gaussian:
                out["pseudo_likelihood_valid"] = float(self._monitor_pseudo_likelihood(Xv))
        return out

    def _monitor_pseudo_likelihood(self, v: torch.Tensor) -> torch.Tensor:
        """Mean log pseudo-likelihood of v for the history: exact with ``monitor='exact'`` (n_features flips per row,
        which can cost more than the epoch it monitors), else scikit-learn's unbiased one-flip estimate
        ``n_features * log p(v_i | v_-i)`` with one random feature i per row, the same features every epoch (a
        generator of their own, so training's random stream is untouched) so that epochs compare on equal terms."""
        if self.monitor == "exact":
            return self._pseudo_likelihood(v).mean()
        sp = torch.nn.functional.softplus
        W, b, c, _ = self._params()
        v = v.to(W.dtype)
        i = torch.randint(W.shape[0], (v.shape[0],), generator=torch.Generator().manual_seed(self._seed + 4))
        i = i.to(v.device)
        a = torch.addmm(c, v, W)                                        # (r, H)
        d = 1.0 - 2.0 * v.gather(1, i.unsqueeze(1))                     # (r, 1): +1 turns a 0 on, -1 a 1 off
        delta = -b[i] * d.squeeze(1) - (sp(a + d * W[i]) - sp(a)).sum(1)  # F(v with unit i flipped) - F(v)
        return W.shape[0] * torch.nn.functional.logsigmoid(delta).mean()

    def _params(self, double=False):
        W, b, c, s = self._W, self._b, self._c, self._sigma()
        if double:
            W, b, c = W.double(), b.double(), c.double()
            s = None if s is None else s.double()
        return W, b, c, s

    def _free_energy(self, v: torch.Tensor, double=False) -> torch.Tensor:
        W, b, c, s = self._params(double)
        return ops.free_energy(v.to(W.dtype), W, b, c, s, self.visible)

    def _pseudo_likelihood(self, v: torch.Tensor, double=False) -> torch.Tensor:
        """Exact log pseudo-likelihood sum_i log p(v_i | v_-i) per row (all features flipped, not one at random).
        Flipping unit i changes F by -b_i d_i - sum_j [softplus(a_j + d_i W_ij) - softplus(a_j)], d = 1 - 2v."""
        sp = torch.nn.functional.softplus
        W, b, c, _ = self._params(double)
        v = v.to(W.dtype)
        V, H = W.shape
        rows = max(1, (1 << 22) // (V * H))
        out = []
        for i in range(0, v.shape[0], rows):
            x = v[i:i + rows]
            a = torch.addmm(c, x, W)                                    # (r, H)
            d = 1.0 - 2.0 * x                                           # (r, V)
            flipped = sp(a.unsqueeze(1) + d.unsqueeze(2) * W)           # (r, V, H)
            delta = -b * d - (flipped - sp(a).unsqueeze(1)).sum(2)      # F(v^i) - F(v)
            out.append(torch.nn.functional.logsigmoid(delta).sum(1))
        return torch.cat(out)

    # ---- inference ---------------------------------------------------------------------------------------

    def _checked(self, X):
        check_is_fitted(self)
        return self._validate_input(X, reset=False)

    def _checked_input(self, X):
        X = self._checked(X)
        return X, self._input(X)

    def _map_chunks(self, X, fn) -> np.ndarray:
        """``fn`` over X's rows chunk by chunk (bounded memory for large or sparse X), concatenated (numpy)."""
        X = self._checked(X)
        return np.concatenate([fn(convert()).cpu().numpy() for _, convert in self._chunks(X)])

    @torch.no_grad()
    def _hidden_probs(self, v: torch.Tensor) -> torch.Tensor:
        s = self._sigma()
        x = v if s is None else v / s
        return torch.cat([torch.sigmoid(torch.addmm(self._c, x[i:i + _CHUNK], self._W))
                          for i in range(0, x.shape[0], _CHUNK)]) if x.shape[0] else x.new_empty(0, self._W.shape[1])

    def transform(self, X):
        """Hidden unit probabilities p(h = 1 | v = X), shape (n_samples, n_components), in X's float dtype
        (float64 for integer X)."""
        out = self._map_chunks(X, self._hidden_probs)
        return out.astype(np.float32 if is_float32(X) else np.float64, copy=False)

    @torch.no_grad()
    def sample_hidden(self, X):
        """A sample of h ~ p(h | v = X) (0/1 values, shape (n_samples, n_components), in X's float dtype) from the
        fitted model's private generator; :meth:`transform` gives its mean."""
        X, Xt = self._checked_input(X)
        _, h = self._sample_hidden(Xt, self._rng)
        return h.cpu().numpy().astype(X.dtype, copy=False)

    @torch.no_grad()
    def score_samples(self, X):
        """Bernoulli visible units: the log pseudo-likelihood ``sum_i log p(x_i | x_-i)`` of each row, computed
        exactly over all features (scikit-learn's BernoulliRBM returns the unbiased one-feature estimate
        ``n_features * log p(x_i | x_-i)`` with a random i, which has the same expectation).
        Gaussian visible units: the unnormalised log-density ``-F(x) - sum(log scale_)`` of each row in the
        original units (add ``-log Z``, e.g. from :meth:`ais_log_partition`, for the log-likelihood)."""
        # float64, so that a row's score does not depend on its position in the batch (GEMM blocking)
        if self._gaussian:
            return -self._map_chunks(X, lambda v: self._free_energy(v, double=True)) - self._log_jacobian()
        return self._map_chunks(X, lambda v: self._pseudo_likelihood(v, double=True))

    def _log_jacobian(self) -> float:
        return float(np.log(self.scale_).sum()) if self._gaussian and self.standardize else 0.0

    @torch.no_grad()
    def gibbs(self, v):
        """One block Gibbs step v -> h -> v' (a sample, in X's units) from the fitted model's private generator."""
        X, Xt = self._checked_input(v)
        s = self._sigma()
        _, h = ops.sample_hidden(Xt, self._W, self._c, s, self._rng)
        _, out = ops.sample_visible(h, self._W, self._b, s, self.visible, self._rng)
        out = out.double().cpu().numpy()
        if self._gaussian and self.standardize:
            out = out * self.scale_ + self.mean_
        return out.astype(X.dtype, copy=False)

    # ---- what a stack of RBMs (DBN, DBNClassifier) needs of a layer -----------------------------------------------

    def _sample_hidden(self, v: torch.Tensor, generator: torch.Generator):
        """(p(h | v), a sample of h) for standardised v."""
        return ops.sample_hidden(v, self._W, self._c, self._sigma(), generator)

    def _sample_visible(self, h: torch.Tensor, generator: torch.Generator):
        """(E[v | h], a sample of v), in standardised units."""
        return ops.sample_visible(h, self._W, self._b, self._sigma(), self.visible, generator)

    def _unstandardize(self, x: np.ndarray) -> np.ndarray:
        return x * self.scale_ + self.mean_ if self._gaussian and self.standardize else x

    def _affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """p(h | v) = sigmoid(v @ weight.T + bias) for standardised v: (weight (H, V) with 1/sigma folded in,
        bias (H,)), the initial weights of a fine-tuned network."""
        s = self._sigma()
        return (self._W if s is None else self._W / s.unsqueeze(1)).t(), self._c

    # ---- partition function and likelihood -------------------------------------------------------------------

    def ais_log_partition(self, n_chains=100, n_betas=10000, random_state=None) -> AISResult:
        """AIS estimate of log Z (Salakhutdinov & Murray 2008) from a base-rate model with the training data's
        visible log-odds (Bernoulli) or mean (Gaussian). Returns :class:`pymusicrbm.ais.AISResult` (log_z, std,
        lower, upper, log_weights). Uses its own generator (seeded from ``random_state``, by default from the
        model's seed), so it never disturbs training's random stream. Z is that of the standardised model for
        Gaussian units."""
        self._require_fitted()
        seed = draw_seed(random_state) if random_state is not None else self._seed + 3
        g = make_generator(seed, self._device)
        return ais_log_partition(self._W, self._b, self._c, self._sigma(), self.visible, self._base_b,
                                 n_chains=n_chains, n_betas=n_betas, generator=g)

    def exact_log_partition(self) -> float:
        """log Z by enumerating the 2^n_components hidden states (n_components <= 20)."""
        self._require_fitted()
        return exact_log_partition(self._W, self._b, self._c, self._sigma(), self.visible)

    @torch.no_grad()
    def log_likelihood(self, X, log_z=None, **ais_kwargs) -> float:
        """Average log-likelihood per row, ``mean(-F(x)) - log Z`` (log-density in X's units for Gaussian units).
        ``log_z`` defaults to an AIS estimate (``ais_kwargs`` go to :meth:`ais_log_partition`)."""
        free_energy = self._map_chunks(X, lambda v: self._free_energy(v, double=True))
        if log_z is None:
            log_z = self.ais_log_partition(**ais_kwargs).log_z
        return float(-free_energy.mean()) - float(log_z) - self._log_jacobian()

    # ---- checkpoint state --------------------------------------------------------------------------------

    def _get_state(self):
        self._require_fitted()
        state = {"seed": self._seed, "n_features_in_": self.n_features_in_, "rng_device": str(self._rng.device),
                 **self._training_state()}
        return self._state_tensors(), state

    def _set_state(self, tensors: dict, state: dict, check_against=None):
        """Restore a checkpoint's state; ``check_against``: the (validated) X a resumed fit continues on."""
        self._check_params()
        V = int(state["n_features_in_"])
        if check_against is not None and check_against.shape[1] != V:
            raise ValueError(f"resume: the checkpoint was trained on {V} features but X has "
                             f"{check_against.shape[1]}")
        needs = {"W", "b", "c", "W_vel", "b_vel", "c_vel", "base_b", "rng_state", "shuffle_rng_state"}
        needs |= {"mean_", "scale_"} if self._gaussian and self.standardize else set()
        needs |= {"chains"} if self.persistent else set()
        needs |= {"W_fast", "b_fast", "c_fast"} if self.persistent == "fast" else set()
        needs |= {"log_sigma"} if self.learn_sigma else set()
        missing = needs - set(tensors)
        if missing:
            raise ValueError(f"the checkpoint lacks the tensors {sorted(missing)} that an RBM with visible="
                             f"{self.visible!r}, persistent={self.persistent!r}, learn_sigma={self.learn_sigma!r} "
                             "needs (incomplete or inconsistent state)")
        H = self.n_components
        n_chains = tensors["chains"].shape[0] if "chains" in tensors else 0
        shapes = {"W": (V, H), "W_vel": (V, H), "W_fast": (V, H), "b": (V,), "b_vel": (V,), "b_fast": (V,),
                  "base_b": (V,), "log_sigma": (V,), "c": (H,), "c_vel": (H,), "c_fast": (H,), "mean_": (V,),
                  "scale_": (V,), "chains": (n_chains, V)}
        for name, shape in shapes.items():
            if name in tensors and tuple(tensors[name].shape) != shape:
                raise ValueError(f"checkpoint tensor {name!r} has shape {tuple(tensors[name].shape)}, but "
                                 f"n_components={H} and {V} features need {shape}")
        if self._dtype is None:  # dtype=None: the checkpoint's precision
            self._dtype = tensors["W"].dtype
        self._load_state_tensors(tensors, state["seed"])
        self.n_features_in_ = V
        self._restore_training_state(state)
