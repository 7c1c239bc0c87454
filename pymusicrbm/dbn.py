"""Deep belief networks: greedy layer-wise RBM pre-training (:class:`DBN`) and supervised fine-tuning of the stack
with a softmax layer (:class:`DBNClassifier`), both scikit-learn estimators with safe checkpoints."""
from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import ClassifierMixin, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn

from . import ops
from ._base import COMMON_CONSTRAINTS, Interval, StackEstimator, StrOptions, TrainedEstimator
from ._utils import draw_seed, float_dtypes, input_dtype, make_generator, to_tensor, validate_finite
from .rbm import RBM

__all__ = ["DBN", "DBNClassifier"]

_CHUNK = 1 << 16
# RBM settings a DBN passes to every layer
_SHARED = ("learning_rate", "batch_size", "n_iter", "k", "persistent", "momentum", "weight_decay",
           "sparsity_target", "sparsity_cost", "learning_rate_decay", "validation_fraction", "monitor")
# ... and those layer_params may set per layer
_PER_LAYER = tuple(sorted(set(RBM().get_params()) - {"n_components", "visible", "random_state", "device", "dtype",
                                                      "verbose"}))
_STACK_CONSTRAINTS = {
    "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
    "visible": [StrOptions(set(ops.VISIBLE_TYPES))],
    "layer_params": [list, tuple, None],
    "dtype": RBM._parameter_constraints["dtype"],  # None (the default): follow the input, as the RBM
}


def _check_hidden_layer_sizes(sizes):
    if isinstance(sizes, Integral):
        sizes = (sizes,)
    sizes = tuple(sizes)
    if not sizes or not all(isinstance(s, Integral) and not isinstance(s, bool) and s > 0 for s in sizes):
        raise ValueError(f"hidden_layer_sizes must be a non-empty sequence of positive ints, got {sizes!r}")
    return tuple(int(s) for s in sizes)


def _validate_X(est, X, reset):
    return validate_finite(est, X, dtype=float_dtypes(X), reset=reset)


class DBN(ClassNamePrefixFeaturesOutMixin, TransformerMixin, StackEstimator):
    """Deep belief network: a stack of RBMs trained greedily, layer by layer, each on the hidden probabilities of
    the one below (e.g. 513 -> 50 -> 50 -> 50). The first layer has ``visible`` units ('gaussian' for real-valued
    inputs, which it standardises; 'bernoulli' for data in [0, 1]); the others are Bernoulli.

    The RBM settings (``learning_rate``, ``batch_size``, ``n_iter`` epochs a layer, ``k``, ``persistent``,
    ``momentum``, ``weight_decay``, ``sparsity_target``, ...) apply to every layer; ``layer_params`` (one dict a
    layer, or None) overrides them per layer, e.g. ``[{"learning_rate": 0.01}, {}, {}]`` for a Gaussian first
    layer. ``transform`` returns the top layer's probabilities, or (``transform_layers='all'`` or
    ``transform(X, layers='all')``) those of every layer side by side, as Hamel & Eck (2010) use.

    Parameters
    ----------
    hidden_layer_sizes : int or tuple of int, default=(50, 50, 50)
        Number of hidden units of each layer, bottom to top.
    visible : {'bernoulli', 'gaussian'}, default='bernoulli'
        Visible units of the first layer ('gaussian': real-valued inputs, standardised); the layers above are
        Bernoulli.
    learning_rate : float, default=0.1
        Step size of each RBM's contrastive-divergence updates (the model's own, unsupervised training).
    batch_size : int, default=10
        Rows per mini-batch.
    n_iter : int, default=10
        Unsupervised training epochs of each layer.
    k : int, default=1
        Gibbs steps per update (CD-k / PCD-k), as in :class:`RBM`.
    persistent : bool or 'fast', default=False
        CD-k (False), PCD-k (True) or fast PCD ('fast'), as in :class:`RBM`.
    momentum : float, default=0.5
        Momentum of the parameter updates.
    weight_decay : float, default=0.0
        L2 penalty on the weights.
    sparsity_target : float or None, default=None
        Target mean hidden probability; None: no sparsity penalty.
    sparsity_cost : float, default=0.1
        Weight of the sparsity penalty.
    learning_rate_decay : float, default=0.0
        The learning rate of epoch ``e`` is ``learning_rate / (1 + learning_rate_decay * e)``.
    learn_sigma : bool, default=False
        Learn the sigma of a Gaussian first layer (needs ``visible='gaussian'``), as in :class:`RBM`.
    layer_params : list of dict or None, default=None
        One dict per layer of :class:`RBM` settings that override the shared ones for that layer (e.g.
        ``[{"learning_rate": 0.01}, {}, {}]``); None: every layer uses the shared settings.
    transform_layers : {'top', 'all'}, default='top'
        What ``transform(X)`` returns by default: the top layer's hidden probabilities, or those of every layer
        concatenated.
    validation_fraction : float or None, default=None
        Fraction of each layer's training rows held out for its monitors, as in :class:`RBM`; None holds out
        nothing.
    monitor : bool or 'exact', default=True
        Per-epoch pseudo-likelihood monitor of each layer, as in :class:`RBM`.
    random_state : int, RandomState instance or None, default=None
        The seed: None (fresh entropy), an int or a ``RandomState``; layer i gets ``layer_seed(seed, i)``.
    verbose : int, default=0
        Verbosity of each layer's training, as in :class:`RBM`.
    device : str or torch.device, default='cpu'
        Device of the parameters and the computation.
    dtype : {'float32', 'float64'}, torch dtype or None, default=None
        Precision of the computation; None computes in the input's precision.

    Attributes
    ----------
    layers_ : list of RBM
        The fitted :class:`RBM` layers, bottom to top (also ``rbms_``).
    n_layers_fitted_ : int
        Number of layers trained so far (``len(layers_)`` after a complete fit).
    history_ : list of dict
        One history dict per layer (see :class:`RBM`).
    n_features_in_ : int
        Number of features seen during ``fit``.

    See Also
    --------
    RBM : One layer.
    DBNClassifier : DBN pre-training, then supervised fine-tuning with a softmax layer.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import load_digits
    >>> from pymusicrbm import DBN
    >>> X = (load_digits().data[:200] > 8).astype(np.float32)
    >>> dbn = DBN(hidden_layer_sizes=(32, 16), n_iter=2, random_state=0).fit(X)
    >>> dbn.transform(X).shape
    (200, 16)
    >>> dbn.transform(X, layers="all").shape
    (200, 48)
    >>> len(dbn.layers_)
    2
    """

    _tuple_params = ("hidden_layer_sizes",)
    _parameter_constraints = {
        **{k: v for k, v in RBM._parameter_constraints.items() if k in _SHARED + ("learn_sigma",)},
        **COMMON_CONSTRAINTS,
        **_STACK_CONSTRAINTS,
        "transform_layers": [StrOptions({"top", "all"})],
    }
    _structural_params = ("hidden_layer_sizes", "visible")
    _layer_class = RBM
    _layer_shared = _SHARED
    _layer_overridable = _PER_LAYER

    def __init__(self, hidden_layer_sizes=(50, 50, 50), *, visible="bernoulli", learning_rate=0.1, batch_size=10,
                 n_iter=10, k=1, persistent=False, momentum=0.5, weight_decay=0.0, sparsity_target=None,
                 sparsity_cost=0.1, learning_rate_decay=0.0, learn_sigma=False, layer_params=None,
                 transform_layers="top", validation_fraction=None, monitor=True, random_state=None, verbose=0,
                 device="cpu", dtype=None):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.visible = visible
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.n_iter = n_iter
        self.k = k
        self.persistent = persistent
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.sparsity_target = sparsity_target
        self.sparsity_cost = sparsity_cost
        self.learning_rate_decay = learning_rate_decay
        self.learn_sigma = learn_sigma
        self.layer_params = layer_params
        self.transform_layers = transform_layers
        self.validation_fraction = validation_fraction
        self.monitor = monitor
        self.random_state = random_state
        self.verbose = verbose
        self.device = device
        self.dtype = dtype

    def _check_combinations(self):
        _check_hidden_layer_sizes(self.hidden_layer_sizes)

    def _layer_specs(self) -> list[dict]:
        sizes = _check_hidden_layer_sizes(self.hidden_layer_sizes)
        # the first layer has the DBN's visible units (and learns sigma if asked); the others are Bernoulli
        return [dict(n_components=h, visible=self.visible if i == 0 else "bernoulli",
                     learn_sigma=bool(self.learn_sigma) and i == 0) for i, h in enumerate(sizes)]

    def _validate_input(self, X, reset: bool):
        return _validate_X(self, X, reset)

    @property
    def rbms_(self) -> list[RBM]:
        """The fitted RBM layers (``layers_``)."""
        check_is_fitted(self)
        return self.layers_

    @property
    def _n_features_out(self):
        sizes = _check_hidden_layer_sizes(self.hidden_layer_sizes)
        return sizes[-1] if self.transform_layers == "top" else sum(sizes)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    def transform(self, X, layers=None):
        """Hidden probabilities of the top layer (``layers='top'``) or of every layer, concatenated
        (``'all'``); default: ``transform_layers``."""
        check_is_fitted(self)
        X = self._validate_input(X, reset=False)
        return self._transform_layers(X, self.transform_layers if layers is None else layers)

    def _combine(self, outputs):
        return np.hstack(outputs)

    def _input(self, X) -> torch.Tensor:
        """Validated X as the first layer's (standardised) tensor."""
        return self.layers_[0]._input(X)

    @torch.no_grad()
    def sample(self, n_samples=1, gibbs_steps=100, random_state=None):
        """Generate ``n_samples`` rows: ``gibbs_steps`` steps of block Gibbs sampling in the top RBM (from a
        uniform random binary state), then one top-down pass through the lower layers' p(v | h); the bottom layer
        gives its mean (in X's units). Returns an array (n_samples, n_features_in_)."""
        check_is_fitted(self)
        for name, value in (("n_samples", n_samples), ("gibbs_steps", gibbs_steps)):
            if not isinstance(value, Integral) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        top = self.layers_[-1]
        g = make_generator(draw_seed(random_state) if random_state is not None else self._seed + 5, self._device)
        v = (torch.rand(n_samples, top.n_features_in_, generator=g, device=self._device) < 0.5).to(top._dtype)
        mean = v
        for _ in range(gibbs_steps):
            _, h = top._sample_hidden(v, g)
            mean, v = top._sample_visible(h, g)
        x = v
        for rbm in reversed(self.layers_[:-1]):
            mean, x = rbm._sample_visible(x, g)
        return self.layers_[0]._unstandardize(mean.double().cpu().numpy())

    def _stack_state(self) -> dict:
        return {"n_features_in_": self.n_features_in_}

    def _set_state(self, tensors, state, check_against=None):
        super()._set_state(tensors, state)
        self.n_features_in_ = int(state["n_features_in_"])


class _Dropout(nn.Module):
    """Dropout drawing its masks from a given torch.Generator (nn.Dropout only uses the global one)."""

    def __init__(self, p: float, generator: torch.Generator):
        super().__init__()
        self.p, self.generator = p, generator

    def __getstate__(self):  # generators do not pickle; the owning classifier re-attaches its own
        state = self.__dict__.copy()
        state["generator"] = None
        return state

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        keep = torch.empty_like(x).bernoulli_(1 - self.p, generator=self.generator)
        return x * keep / (1 - self.p)


class DBNClassifier(ClassifierMixin, TrainedEstimator):
    """DBN pre-training, then supervised fine-tuning of the whole stack with a softmax output layer.

    The network is ``[Linear -> Sigmoid (-> dropout)] x n_layers -> Linear`` with the hidden layers initialised
    from the RBMs (weights and hidden biases; a Gaussian first layer's standardisation and 1/sigma are folded in),
    trained with cross-entropy by Adam (``solver='adam'``) or SGD with Nesterov-free momentum (``solver='sgd'``),
    ``learning_rate_init``, L2 penalty ``alpha`` and mini-batches of ``batch_size``. With ``early_stopping`` a
    stratified ``validation_fraction`` of the training data is held out (also from pre-training); training stops
    when the validation loss has not improved by ``tol`` for ``n_iter_no_change`` epochs and the best weights are
    restored. Without it, training stops when the training loss stalls in the same way. ``max_iter=0`` stops after
    pre-training (the softmax layer stays untrained: use ``dbn_`` for features, not ``predict``).

    Renamed in 0.2: ``pretrain_epochs`` -> ``n_iter``, ``pretrain_learning_rate`` -> ``learning_rate`` (the old
    keywords still work for one release, with a ``FutureWarning``).

    Parameters
    ----------
    hidden_layer_sizes : int or tuple of int, default=(50, 50, 50)
        Number of hidden units of each layer, bottom to top.
    visible : {'bernoulli', 'gaussian'}, default='bernoulli'
        Visible units of the first RBM ('gaussian': real-valued inputs, standardised).
    n_iter : int, default=10
        Unsupervised pre-training epochs of each RBM (was ``pretrain_epochs``); ``n_iter=0`` skips pre-training
        (random initial weights, for comparison).
    learning_rate : float, default=0.1
        Step size of the RBMs' pre-training (was ``pretrain_learning_rate``).
    pretrain_batch_size : int, default=10
        Rows per mini-batch in pre-training.
    pretrain_momentum : float, default=0.5
        Momentum of the RBMs' pre-training updates.
    k : int, default=1
        Gibbs steps per pre-training update (CD-k / PCD-k), as in :class:`RBM`.
    persistent : bool or 'fast', default=False
        CD-k (False), PCD-k (True) or fast PCD ('fast') in pre-training, as in :class:`RBM`.
    weight_decay : float, default=0.0
        L2 penalty on the RBM weights in pre-training.
    sparsity_target : float or None, default=None
        Target mean hidden probability in pre-training; None: no sparsity penalty.
    sparsity_cost : float, default=0.1
        Weight of the sparsity penalty in pre-training.
    layer_params : list of dict or None, default=None
        Per-layer overrides of the pre-training settings, as in :class:`DBN`.
    solver : {'adam', 'sgd'}, default='adam'
        Supervised optimiser: Adam, or SGD with (Nesterov-free) ``momentum``.
    learning_rate_init : float, default=1e-2
        Step size of the supervised optimiser.
    momentum : float, default=0.9
        Momentum of SGD (``solver='sgd'``) in fine-tuning.
    alpha : float, default=0.0
        L2 penalty in fine-tuning.
    dropout : float, default=0.0
        Dropout probability after each hidden layer in fine-tuning, in [0, 0.95].
    batch_size : int, default=32
        Rows per mini-batch in fine-tuning.
    max_iter : int, default=100
        Supervised (fine-tuning) epochs at most; 0 stops after pre-training.
    early_stopping : bool, default=False
        Hold out a stratified ``validation_fraction`` of the training data (also from pre-training) and stop
        when the validation loss stalls, restoring the best weights; False stops when the training loss stalls.
    validation_fraction : float, default=0.1
        Fraction of the training data held out with ``early_stopping``.
    n_iter_no_change : int, default=10
        Epochs without an improvement of at least ``tol`` before fine-tuning stops.
    tol : float, default=1e-4
        Smallest loss improvement that counts as one.
    random_state : int, RandomState instance or None, default=None
        The seed: None (fresh entropy), an int or a ``RandomState``; seeds pre-training (layer i gets
        ``layer_seed(seed, i)``), the validation split, the initialisation, dropout and shuffling.
    verbose : int, default=0
        0 silent; 1 a progress bar over the epochs of pre-training and fine-tuning; 2 adds one over the
        mini-batches.
    device : str or torch.device, default='cpu'
        Device of the parameters and the computation.
    dtype : {'float32', 'float64'}, torch dtype or None, default=None
        Precision of the computation; None computes in the input's precision.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels.
    dbn_ : DBN
        The pre-trained :class:`DBN`, before fine-tuning.
    network_ : torch.nn.Sequential
        The fine-tuned network.
    history_ : dict of lists
        ``loss``, ``val_loss``, ``val_accuracy`` per fine-tuning epoch.
    n_iter_ : int
        Fine-tuning epochs run.
    best_epoch_ : int
        The epoch (from 1) whose weights are kept.
    n_features_in_ : int
        Number of features seen during ``fit``.

    See Also
    --------
    DBN : The unsupervised stack this pre-trains.
    sklearn.neural_network.MLPClassifier : The same network without pre-training.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import load_digits
    >>> from pymusicrbm import DBNClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> X, y = (X[:200] > 8).astype(np.float32), y[:200]
    >>> clf = DBNClassifier(hidden_layer_sizes=(32,), n_iter=2, max_iter=10, random_state=0).fit(X, y)
    >>> clf.predict_proba(X[:3]).shape
    (3, 10)
    >>> clf.classes_
    array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    >>> print(clf.score(X, y) > 0.5)
    True
    """

    _tuple_params = ("hidden_layer_sizes",)
    _renamed_params = {"pretrain_epochs": "n_iter", "pretrain_learning_rate": "learning_rate"}
    _parameter_constraints = {
        **COMMON_CONSTRAINTS,
        **_STACK_CONSTRAINTS,
        **{k: RBM._parameter_constraints[k] for k in ("k", "persistent", "weight_decay", "sparsity_target",
                                                       "sparsity_cost", "learning_rate")},
        "pretrain_batch_size": [Interval(Integral, 1, None, closed="left")],
        "pretrain_momentum": [Interval(Real, 0, 0.999999, closed="both")],
        "solver": [StrOptions({"adam", "sgd"})],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
        "momentum": [Interval(Real, 0, 1, closed="both")],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "dropout": [Interval(Real, 0, 0.95, closed="both")],
        "max_iter": [Interval(Integral, 0, None, closed="left")],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 0.9, closed="right")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
    }
    _structural_params = ("hidden_layer_sizes", "visible", "dropout", "solver")

    def __init__(self, hidden_layer_sizes=(50, 50, 50), *, visible="bernoulli", n_iter=10, learning_rate=0.1,
                 pretrain_batch_size=10, pretrain_momentum=0.5, k=1, persistent=False, weight_decay=0.0,
                 sparsity_target=None, sparsity_cost=0.1, layer_params=None, solver="adam", learning_rate_init=1e-2,
                 momentum=0.9, alpha=0.0, dropout=0.0, batch_size=32, max_iter=100, early_stopping=False,
                 validation_fraction=0.1, n_iter_no_change=10, tol=1e-4, random_state=None, verbose=0,
                 device="cpu", dtype=None, **renamed):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.visible = visible
        self.n_iter = n_iter
        self.learning_rate = learning_rate
        self.pretrain_batch_size = pretrain_batch_size
        self.pretrain_momentum = pretrain_momentum
        self.k = k
        self.persistent = persistent
        self.weight_decay = weight_decay
        self.sparsity_target = sparsity_target
        self.sparsity_cost = sparsity_cost
        self.layer_params = layer_params
        self.solver = solver
        self.learning_rate_init = learning_rate_init
        self.momentum = momentum
        self.alpha = alpha
        self.dropout = dropout
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.random_state = random_state
        self.verbose = verbose
        self.device = device
        self.dtype = dtype
        self._apply_renamed(renamed)

    def _check_combinations(self):
        _check_hidden_layer_sizes(self.hidden_layer_sizes)

    def __sklearn_is_fitted__(self):
        return "network_" in self.__dict__

    def __setstate__(self, state):
        super().__setstate__(state)
        if "network_" in self.__dict__:
            self._rewire_dropout()

    def _rewire_dropout(self):
        for m in self.network_.modules():
            if isinstance(m, _Dropout):
                m.generator = self._rng

    def _make_dbn(self) -> DBN:
        """The pre-training stack, seeded with the classifier's seed."""
        return DBN(_check_hidden_layer_sizes(self.hidden_layer_sizes), visible=self.visible,
                   layer_params=self.layer_params, random_state=self._seed, verbose=self.verbose, device=self.device,
                   dtype=self.dtype, learning_rate=self.learning_rate, batch_size=self.pretrain_batch_size,
                   n_iter=self.n_iter, k=self.k, persistent=self.persistent, momentum=self.pretrain_momentum,
                   weight_decay=self.weight_decay, sparsity_target=self.sparsity_target,
                   sparsity_cost=self.sparsity_cost)

    # ---- fitting -------------------------------------------------------------------------------------------

    def _split(self, y_idx: np.ndarray):
        n = len(y_idx)
        if not self.early_stopping or n < 2:
            return np.arange(n), np.arange(0)
        from sklearn.model_selection import train_test_split
        n_valid = min(max(1, int(round(self.validation_fraction * n))), n - 1)
        counts = np.bincount(y_idx)
        stratify = y_idx if (counts.min() >= 2 and n_valid >= len(counts) and n - n_valid >= len(counts)) \
            else None
        tr, va = train_test_split(np.arange(n), test_size=n_valid, stratify=stratify,
                                  random_state=(self._seed + 2) % (2**32))
        return np.sort(tr), np.sort(va)

    def fit(self, X, y, *, resume=None, checkpoint=None):
        """Pre-train the DBN on X (the training part, without the validation split) and fine-tune the stack on
        (X, y). ``resume``/``checkpoint`` as in :meth:`RBM.fit`: checkpoints are written after every epoch of
        pre-training and of fine-tuning, and resuming gives the same model as an uninterrupted fit."""
        self._check_params()
        X, y = validate_data(self, X, y, dtype=float_dtypes(X), reset=True)
        if self._dtype is None:  # dtype=None: follow the input, as the RBM layers do
            self._dtype = input_dtype(X)
        check_classification_targets(y)
        classes, y_idx = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(f"DBNClassifier needs samples of at least 2 classes in y; got only one class: "
                             f"{classes.tolist()}")
        state, tensors = {}, {}
        resume = self._agreed_resume(resume)
        if resume is not None:
            tensors, state = self._read_resume(resume)
            if state.get("classes") is not None and list(map(str, classes)) != list(map(str, state["classes"])):
                raise ValueError("resume: y has other classes than the checkpoint")
            self._seed = int(state["seed"])
        else:
            self._seed = draw_seed(self.random_state)
        self.classes_ = classes
        self._phase = "pretrain"
        on_epoch = self._checkpointer(checkpoint)
        tr, va = self._split(y_idx)

        # 1. greedy pre-training (resumable layer by layer, epoch by epoch)
        self.dbn_ = self._make_dbn()
        dbn_tensors = {k[4:]: v for k, v in tensors.items() if k.startswith("dbn.")}
        dbn_state = {"seed": self._seed, "n_features_in_": X.shape[1], "layers": state.get("layers", [])}
        if state.get("phase") == "finetune":  # pre-training had finished: restore without training
            self.dbn_._set_state(dbn_tensors, dbn_state)
        else:
            self.dbn_._fit_layers(X[tr], self._seed, self.dbn_._split_layers(dbn_tensors, dbn_state), on_epoch)

        # 2. fine-tuning
        self._phase = "finetune"
        self._build_network(len(classes))
        Xt = self._input(X)
        yt = torch.from_numpy(y_idx.astype(np.int64)).to(self._device)
        tr_t, va_t = torch.from_numpy(tr).to(self._device), torch.from_numpy(va).to(self._device)
        if state.get("phase") == "finetune":
            self._restore_finetune(tensors, state)
        valid = (Xt.index_select(0, va_t), yt.index_select(0, va_t)) if len(va) else None
        self._keep_best_weights = valid is not None
        self._run_epochs((Xt.index_select(0, tr_t), yt.index_select(0, tr_t)), valid, self.max_iter - self.n_iter_,
                         on_epoch)
        if on_epoch is not None:  # the checkpoint ends with the finished model (best epoch restored)
            on_epoch()
        return self

    def _input(self, X) -> torch.Tensor:
        # the network's first layer is linear in v, so it takes X as given: only pre-training (a Bernoulli RBM)
        # needs X in [0, 1]
        return self.dbn_.layers_[0]._input(X, clip=False) if "dbn_" in self.__dict__ else \
            to_tensor(X, self._dtype, self._device)

    def _build_network(self, n_classes: int):
        self._seed_generators(self._seed)
        layers = []
        opts = dict(dtype=self._dtype, device=self._device)
        for rbm in self.dbn_.layers_:
            weight, bias = rbm._affine()
            lin = nn.utils.skip_init(nn.Linear, weight.shape[1], weight.shape[0], **opts)
            with torch.no_grad():
                if self.n_iter > 0:
                    lin.weight.copy_(weight)
                    lin.bias.copy_(bias)
                else:  # no pre-training: Glorot-uniform for logistic units, as scikit-learn's MLP
                    bound = math.sqrt(2.0 / sum(weight.shape))
                    for p in (lin.weight, lin.bias):
                        p.copy_((torch.rand(p.shape, generator=self._rng, **opts) * 2 - 1) * bound)
            layers += [lin, nn.Sigmoid()]
            if self.dropout > 0:
                layers.append(_Dropout(self.dropout, self._rng))
        head = nn.utils.skip_init(nn.Linear, lin.out_features, n_classes, **opts)
        with torch.no_grad():
            head.weight.copy_(torch.randn(head.weight.shape, generator=self._rng, **opts) * 0.01)
            head.bias.zero_()
        layers.append(head)
        self.network_ = nn.Sequential(*layers)
        params = self.network_.parameters()
        if self.solver == "adam":
            self._optimizer = torch.optim.Adam(params, lr=self.learning_rate_init, weight_decay=self.alpha)
        else:
            self._optimizer = torch.optim.SGD(params, lr=self.learning_rate_init, momentum=self.momentum,
                                              weight_decay=self.alpha)
        self._reset_training()
        self.best_epoch_ = 0

    # ---- the epoch loop's hooks ------------------------------------------------------------------------------

    def _learning_rate(self, epoch: int) -> float:
        return self.learning_rate_init

    def _progress_desc(self) -> str:
        return "fine-tuning"

    _progress_keys = ("loss", "val_loss", "val_accuracy")
    _ddp_module = "network_"

    def _batch_update(self, batch, lr: float, epoch: int) -> torch.Tensor:
        self.network_.train()
        xb, yb = batch
        loss = nn.functional.cross_entropy(self._train_module()(xb), yb)
        self._optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self._optimizer.step()
        return loss

    def _divergence_advice(self, lr: float) -> list[str]:
        return [f"lower learning_rate_init (now {self.learning_rate_init})"]

    def _epoch_record(self, loss: float, lr: float, data, valid) -> dict:
        rec = {"loss": loss}
        if valid is not None:
            logits = self._logits(valid[0])
            rec.update(val_loss=float(nn.functional.cross_entropy(logits, valid[1])),
                       val_accuracy=float((logits.argmax(1) == valid[1]).double().mean()))
        return rec

    def _early_stopping_score(self, record: dict):
        return record.get("val_loss", record["loss"])

    def _keep_best(self) -> bool:
        return self._keep_best_weights

    def _snapshot(self):
        return [p.detach().clone() for p in self.network_.parameters()]

    def _restore_snapshot(self, best):
        with torch.no_grad():
            for p, b in zip(self.network_.parameters(), best):
                p.copy_(b)

    def _end_training(self):
        super()._end_training()
        self.network_.eval()

    @torch.no_grad()
    def _logits(self, X: torch.Tensor) -> torch.Tensor:
        was = self.network_.training
        self.network_.eval()
        out = torch.cat([self.network_(X[i:i + _CHUNK]) for i in range(0, X.shape[0], _CHUNK)])
        self.network_.train(was)
        return out

    # ---- prediction ----------------------------------------------------------------------------------------

    def predict_proba(self, X):
        """Class probabilities (softmax of the fine-tuned network), shape (n_samples, n_classes)."""
        check_is_fitted(self)
        X = _validate_X(self, X, reset=False)
        return torch.softmax(self._logits(self._input(X)).double(), 1).cpu().numpy()

    def predict(self, X):
        check_is_fitted(self)
        X = _validate_X(self, X, reset=False)
        return self.classes_[self._logits(self._input(X)).argmax(1).cpu().numpy()]

    # ---- checkpoint state ----------------------------------------------------------------------------------

    def _get_state(self):
        if "dbn_" not in self.__dict__:
            check_is_fitted(self)
        dbn_tensors, dbn_state = self.dbn_._get_state()
        tensors = {f"dbn.{k}": v for k, v in dbn_tensors.items()}
        classes = self.classes_
        state = {"seed": self._seed, "n_features_in_": self.n_features_in_, "layers": dbn_state["layers"],
                 "phase": self._phase, "classes": classes.tolist(), "classes_dtype": classes.dtype.str
                 if classes.dtype != object else "object"}
        if self._phase == "finetune":
            for i, p in enumerate(self.network_.parameters()):
                tensors[f"net.{i}"] = p.detach()
            if self._best is not None:
                for i, p in enumerate(self._best):
                    tensors[f"best.{i}"] = p
            tensors.update(self._optimizer_tensors(self._optimizer))
            tensors.update(self._generator_tensors())
            state.update(self._training_state())
        return tensors, state

    def _restore_finetune(self, tensors, state):
        with torch.no_grad():
            for i, p in enumerate(self.network_.parameters()):
                p.copy_(tensors[f"net.{i}"])
        self._load_optimizer(self._optimizer, tensors)
        self._restore_generators(tensors, self._seed)
        self._restore_training_state(state)
        n_params = len(list(self.network_.parameters()))
        self._best = [tensors[f"best.{i}"].to(self._device) for i in range(n_params)] \
            if "best.0" in tensors else None
        self._rewire_dropout()

    def _set_state(self, tensors, state, check_against=None):
        self._check_params()
        if state.get("phase") != "finetune":
            raise ValueError("the checkpoint was saved during pre-training; finish it with fit(X, y, resume=path)")
        self._seed = int(state["seed"])
        self.n_features_in_ = int(state["n_features_in_"])
        dt = state["classes_dtype"]
        self.classes_ = np.asarray(state["classes"], dtype=object if dt == "object" else np.dtype(dt))
        self.dbn_ = self._make_dbn()
        self.dbn_._set_state({k[4:]: v for k, v in tensors.items() if k.startswith("dbn.")},
                             {"seed": self._seed, "n_features_in_": self.n_features_in_, "layers": state["layers"]})
        if self._dtype is None:  # dtype=None: the checkpoint's precision
            self._dtype = self.dbn_.layers_[0]._dtype
        self._phase = "finetune"
        self._build_network(len(self.classes_))
        self._restore_finetune(tensors, state)
        if self._best is not None:  # a checkpoint written during fine-tuning: predict with the best epoch so far
            self._restore_snapshot(self._best)
        self.network_.eval()
