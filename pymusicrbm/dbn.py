"""Deep belief networks: greedy layer-wise RBM pre-training (:class:`DBN`) and supervised fine-tuning of the stack
with a softmax layer (:class:`DBNClassifier`), both scikit-learn estimators with safe checkpoints."""
from __future__ import annotations

import math
import time
from numbers import Integral

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted
from torch import nn

from . import ops
from .checkpoint import CheckpointMixin, load_state
from .rbm import (RBM, _validate_data, check_in, check_number, draw_seed, generator_from_state,
                  generator_to_state, make_generator, resolve_device, resolve_dtype, to_tensor)

__all__ = ["DBN", "DBNClassifier"]

_CHUNK = 1 << 16
# RBM settings a DBN passes to every layer (layer_params can override them per layer)
_SHARED = ("learning_rate", "batch_size", "n_iter", "k", "persistent", "momentum", "weight_decay",
           "sparsity_target", "sparsity_cost", "learning_rate_decay", "validation_fraction", "monitor")
_RBM_PARAMS = set(RBM().get_params()) - {"n_components", "visible", "random_state", "device", "dtype", "verbose"}


def _layer_seed(seed: int, layer: int) -> int:
    return int(np.random.SeedSequence([seed, layer]).generate_state(1)[0])


def _check_hidden_layer_sizes(sizes):
    if isinstance(sizes, Integral):
        sizes = (sizes,)
    try:
        sizes = tuple(sizes)
    except TypeError:
        raise ValueError(f"hidden_layer_sizes must be a sequence of positive ints, got {sizes!r}") from None
    if not sizes or not all(isinstance(s, Integral) and not isinstance(s, bool) and s > 0 for s in sizes):
        raise ValueError(f"hidden_layer_sizes must be a non-empty sequence of positive ints, got {sizes!r}")
    return tuple(int(s) for s in sizes)


class _StackMixin:
    """Building and checkpointing a stack of RBMs (shared by DBN and DBNClassifier)."""

    def _layer_rbm(self, i: int, sizes, shared: dict) -> RBM:
        params = dict(shared)
        if self.layer_params is not None:
            if len(self.layer_params) != len(sizes):
                raise ValueError(f"layer_params must have one dict per hidden layer ({len(sizes)}), got "
                                 f"{len(self.layer_params)}")
            extra = self.layer_params[i] or {}
            if not isinstance(extra, dict):
                raise ValueError(f"layer_params[{i}] must be a dict of RBM parameters, got {extra!r}")
            unknown = set(extra) - _RBM_PARAMS
            if unknown:
                raise ValueError(f"layer_params[{i}] has keys that are not per-layer RBM parameters: "
                                 f"{sorted(unknown)} (allowed: {sorted(_RBM_PARAMS)})")
            params.update(extra)
        return RBM(n_components=sizes[i], visible=self.visible if i == 0 else "bernoulli",
                   random_state=_layer_seed(self._seed, i), verbose=self.verbose, device=self.device,
                   dtype=self.dtype, **params)

    def _pretrain(self, X: np.ndarray, sizes, shared: dict, layer_states=(), on_epoch=None):
        """Greedy layer-wise training; ``layer_states`` are (tensors, state) of layers restored from a
        checkpoint (the last one possibly unfinished)."""
        self.rbms_ = []
        H = X
        for i in range(len(sizes)):
            rbm = self._layer_rbm(i, sizes, shared)
            rbm._check_params()
            rbm.n_features_in_ = H.shape[1]
            resumed = i < len(layer_states)
            if resumed:
                rbm._set_state(*layer_states[i], check_against=H.shape[1])
            self.rbms_.append(rbm)
            if not resumed or rbm.n_iter_ < rbm.n_iter:
                rbm._fit_validated(H, resumed, on_epoch)
            if i + 1 < len(sizes):
                H = rbm._hidden_probs(rbm._input(H)).cpu().numpy()

    def _stack_state(self, prefix=""):
        tensors, layers = {}, []
        for i, rbm in enumerate(self.rbms_):
            t, s = rbm._get_state()
            tensors.update({f"{prefix}layer{i}.{k}": v for k, v in t.items()})
            layers.append(s)
        return tensors, layers

    @staticmethod
    def _split_layers(tensors: dict, n_layers: int, prefix=""):
        out = []
        for i in range(n_layers):
            p = f"{prefix}layer{i}."
            out.append({k[len(p):]: v for k, v in tensors.items() if k.startswith(p)})
        return out


class DBN(CheckpointMixin, _StackMixin, ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Deep belief network: a stack of RBMs trained greedily, layer by layer, each on the hidden probabilities of
    the one below (e.g. 513 -> 50 -> 50 -> 50). The first layer has ``visible`` units ('gaussian' for real-valued
    inputs, which it standardises; 'bernoulli' for data in [0, 1]); the others are Bernoulli.

    The RBM settings (``learning_rate``, ``batch_size``, ``n_iter`` epochs a layer, ``k``, ``persistent``,
    ``momentum``, ``weight_decay``, ``sparsity_target``, ...) apply to every layer; ``layer_params`` (one dict a
    layer, or None) overrides them per layer, e.g. ``[{"learning_rate": 0.01}, {}, {}]`` for a Gaussian first
    layer. ``transform`` returns the top layer's probabilities, or (``transform_layers='all'`` or
    ``transform(X, layers='all')``) those of every layer side by side, as Hamel & Eck (2010) use.

    Fitted attributes: ``rbms_`` (the fitted :class:`RBM` layers), ``history_`` (one history dict per layer),
    ``n_features_in_``.
    """

    _tuple_params = ("hidden_layer_sizes",)

    def __init__(self, hidden_layer_sizes=(50, 50, 50), *, visible="bernoulli", learning_rate=0.1, batch_size=10,
                 n_iter=10, k=1, persistent=False, momentum=0.5, weight_decay=0.0, sparsity_target=None,
                 sparsity_cost=0.1, learning_rate_decay=0.0, learn_sigma=False, layer_params=None,
                 transform_layers="top", validation_fraction=None, monitor=True, random_state=None, verbose=0,
                 device="cpu", dtype="float32"):
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

    def _check_params(self):
        sizes = _check_hidden_layer_sizes(self.hidden_layer_sizes)
        check_in("visible", self.visible, ops.VISIBLE_TYPES)
        check_in("transform_layers", self.transform_layers, ("top", "all"))
        if self.layer_params is not None and not isinstance(self.layer_params, (list, tuple)):
            raise ValueError(f"layer_params must be None or a list of dicts (one per layer), got "
                             f"{self.layer_params!r}")
        resolve_device(self.device)
        resolve_dtype(self.dtype)
        return sizes

    def _shared(self) -> dict:
        shared = {name: getattr(self, name) for name in _SHARED}
        shared["learn_sigma"] = False
        return shared

    def _layer_rbm(self, i, sizes, shared):
        rbm = super()._layer_rbm(i, sizes, shared)
        if i == 0 and self.learn_sigma and (self.layer_params is None or "learn_sigma" not in
                                             (self.layer_params[0] or {})):
            rbm.set_params(learn_sigma=True)
        return rbm

    def fit(self, X, y=None, *, resume=None, checkpoint=None):
        """Greedy layer-wise pre-training. ``resume``/``checkpoint`` as in :meth:`RBM.fit` (the checkpoint holds
        the finished layers and the state of the layer in training)."""
        sizes = self._check_params()
        X = _validate_data(self, X, dtype=(np.float64, np.float32), reset=True)
        layer_states = ()
        if resume is not None:
            tensors, meta = load_state(resume)
            saved = type(self)._params_from_meta(meta, resume)
            for name in ("hidden_layer_sizes", "visible"):
                if saved.get(name) != (sizes if name == "hidden_layer_sizes" else self.visible):
                    raise ValueError(f"resume: the checkpoint {str(resume)!r} has {name}={saved.get(name)!r}, "
                                     f"this estimator {getattr(self, name)!r}")
            state = meta["state"]
            self._seed = int(state["seed"])
            layer_states = list(zip(self._split_layers(tensors, len(state["layers"])), state["layers"]))
        else:
            self._seed = draw_seed(self.random_state)
        on_epoch = None if checkpoint is None else (lambda: self.save(checkpoint))
        self._pretrain(X, sizes, self._shared(), layer_states, on_epoch)
        return self

    @property
    def history_(self):
        check_is_fitted(self)
        return [rbm.history_ for rbm in self.rbms_]

    @property
    def _n_features_out(self):
        sizes = _check_hidden_layer_sizes(self.hidden_layer_sizes)
        return sizes[-1] if self.transform_layers == "top" else sum(sizes)

    def __sklearn_is_fitted__(self):
        return "rbms_" in self.__dict__

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    def transform(self, X, layers=None):
        """Hidden probabilities of the top layer (``layers='top'``) or of every layer, concatenated
        (``'all'``); default: ``transform_layers``."""
        check_is_fitted(self)
        layers = self.transform_layers if layers is None else layers
        check_in("layers", layers, ("top", "all"))
        X = _validate_data(self, X, dtype=(np.float64, np.float32), reset=False)
        outs = []
        with torch.no_grad():
            h = self.rbms_[0]._input(X)
            for rbm in self.rbms_:
                h = rbm._hidden_probs(h)
                outs.append(h)
            out = torch.cat(outs, 1) if layers == "all" else outs[-1]
        return out.cpu().numpy().astype(X.dtype, copy=False)

    @torch.no_grad()
    def sample(self, n_samples=1, gibbs_steps=100, random_state=None):
        """Generate ``n_samples`` rows: ``gibbs_steps`` steps of block Gibbs sampling in the top RBM (from a
        uniform random binary state), then one top-down pass through the lower layers' p(v | h); the bottom layer
        gives its mean (in X's units). Returns an array (n_samples, n_features_in_)."""
        check_is_fitted(self)
        check_number("n_samples", n_samples, 1, integer=True)
        check_number("gibbs_steps", gibbs_steps, 1, integer=True)
        top = self.rbms_[-1]
        g = make_generator(draw_seed(random_state) if random_state is not None else self._seed + 5,
                           top._device)
        V = top._W.shape[0]
        v = (torch.rand(n_samples, V, generator=g, device=top._device) < 0.5).to(top._dtype)
        mean = v
        for _ in range(gibbs_steps):
            _, h = ops.sample_hidden(v, top._W, top._c, top._sigma(), g)
            mean, v = ops.sample_visible(h, top._W, top._b, top._sigma(), top.visible, g)
        x = v
        for rbm in reversed(self.rbms_[:-1]):
            mean, x = ops.sample_visible(x, rbm._W, rbm._b, rbm._sigma(), rbm.visible, g)
        out = mean.double().cpu().numpy()
        bottom = self.rbms_[0]
        if bottom._gaussian and bottom.standardize:
            out = out * bottom.scale_ + bottom.mean_
        return out

    def _get_state(self):
        check_is_fitted(self)
        tensors, layers = self._stack_state()
        return tensors, {"seed": self._seed, "n_features_in_": self.n_features_in_, "layers": layers}

    def _set_state(self, tensors, state):
        sizes = self._check_params()
        self._seed = int(state["seed"])
        self.n_features_in_ = int(state["n_features_in_"])
        if len(state["layers"]) != len(sizes):
            raise ValueError(f"the checkpoint has {len(state['layers'])} trained layers, hidden_layer_sizes "
                             f"{sizes} needs {len(sizes)} (was it saved mid-training? resume it with fit)")
        shared = self._shared()
        self.rbms_ = []
        for i, (t, s) in enumerate(zip(self._split_layers(tensors, len(sizes)), state["layers"])):
            rbm = self._layer_rbm(i, sizes, shared)
            rbm._set_state(t, s)
            self.rbms_.append(rbm)


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


class DBNClassifier(CheckpointMixin, _StackMixin, ClassifierMixin, BaseEstimator):
    """DBN pre-training, then supervised fine-tuning of the whole stack with a softmax output layer.

    The network is ``[Linear -> Sigmoid (-> dropout)] x n_layers -> Linear`` with the hidden layers initialised
    from the RBMs (weights and hidden biases; a Gaussian first layer's standardisation and 1/sigma are folded in),
    trained with cross-entropy by Adam (``solver='adam'``) or SGD with Nesterov-free momentum (``solver='sgd'``),
    ``learning_rate_init``, L2 penalty ``alpha`` and mini-batches of ``batch_size``. With ``early_stopping`` a
    stratified ``validation_fraction`` of the training data is held out (also from pre-training); training stops
    when the validation loss has not improved by ``tol`` for ``n_iter_no_change`` epochs and the best weights are
    restored. Without it, training stops when the training loss stalls in the same way. ``max_iter=0`` stops after
    pre-training (the softmax layer stays untrained: use ``dbn_`` for features, not ``predict``).

    Pre-training settings: ``pretrain_epochs`` (n_iter of each RBM), ``pretrain_learning_rate``,
    ``pretrain_batch_size``, ``pretrain_momentum``, ``k``, ``persistent``, ``weight_decay``, ``sparsity_target``,
    ``sparsity_cost``, ``layer_params`` (per-layer overrides, as in :class:`DBN`); ``pretrain_epochs=0`` skips
    pre-training (random initial weights, for comparison).

    Fitted attributes: ``classes_``, ``dbn_`` (the pre-trained :class:`DBN`, before fine-tuning), ``network_``
    (the fine-tuned ``torch.nn.Sequential``), ``history_`` (``loss``, ``val_loss``, ``val_accuracy`` per epoch),
    ``n_iter_`` (fine-tuning epochs run), ``best_epoch_``, ``n_features_in_``.
    """

    _tuple_params = ("hidden_layer_sizes",)

    def __init__(self, hidden_layer_sizes=(50, 50, 50), *, visible="bernoulli", pretrain_epochs=10,
                 pretrain_learning_rate=0.1, pretrain_batch_size=10, pretrain_momentum=0.5, k=1, persistent=False,
                 weight_decay=0.0, sparsity_target=None, sparsity_cost=0.1, layer_params=None, solver="adam",
                 learning_rate_init=1e-3, momentum=0.9, alpha=0.0, dropout=0.0, batch_size=256, max_iter=100,
                 early_stopping=True, validation_fraction=0.1, n_iter_no_change=10, tol=1e-4, random_state=None,
                 verbose=0, device="cpu", dtype="float32"):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.visible = visible
        self.pretrain_epochs = pretrain_epochs
        self.pretrain_learning_rate = pretrain_learning_rate
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

    # ---- parameters ----------------------------------------------------------------------------------------

    def _check_params(self):
        sizes = _check_hidden_layer_sizes(self.hidden_layer_sizes)
        check_in("visible", self.visible, ops.VISIBLE_TYPES)
        check_in("solver", self.solver, ("adam", "sgd"))
        check_number("pretrain_epochs", self.pretrain_epochs, 0, integer=True)
        check_number("learning_rate_init", self.learning_rate_init, 0, low_open=True)
        check_number("momentum", self.momentum, 0, 1)
        check_number("alpha", self.alpha, 0)
        check_number("dropout", self.dropout, 0, 0.95)
        check_number("batch_size", self.batch_size, 1, integer=True)
        check_number("max_iter", self.max_iter, 0, integer=True)
        check_number("validation_fraction", self.validation_fraction, 0, 0.9, low_open=True)
        check_number("n_iter_no_change", self.n_iter_no_change, 1, integer=True)
        check_number("tol", self.tol, 0)
        if self.layer_params is not None and not isinstance(self.layer_params, (list, tuple)):
            raise ValueError(f"layer_params must be None or a list of dicts (one per layer), got "
                             f"{self.layer_params!r}")
        self._device = resolve_device(self.device)
        self._dtype = resolve_dtype(self.dtype)
        return sizes

    def _shared(self) -> dict:
        return dict(learning_rate=self.pretrain_learning_rate, batch_size=self.pretrain_batch_size,
                    n_iter=self.pretrain_epochs, k=self.k, persistent=self.persistent,
                    momentum=self.pretrain_momentum, weight_decay=self.weight_decay,
                    sparsity_target=self.sparsity_target, sparsity_cost=self.sparsity_cost)

    def __sklearn_is_fitted__(self):
        return "network_" in self.__dict__

    # ---- pickling ------------------------------------------------------------------------------------------

    def __getstate__(self):
        state = dict(super().__getstate__())
        for name in ("_rng", "_shuffle_rng"):
            if isinstance(state.get(name), torch.Generator):
                state[name] = generator_to_state(state[name])
        return state

    def __setstate__(self, state):
        state = dict(state)
        for name in ("_rng", "_shuffle_rng"):
            if isinstance(state.get(name), tuple):
                state[name] = generator_from_state(state[name])
        super().__setstate__(state)
        if "network_" in self.__dict__:
            self._rewire_dropout()

    def _rewire_dropout(self):
        for m in self.network_.modules():
            if isinstance(m, _Dropout):
                m.generator = self._rng

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
        sizes = self._check_params()
        X, y = _validate_data(self, X, y, dtype=(np.float64, np.float32), reset=True)
        check_classification_targets(y)
        classes, y_idx = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(f"DBNClassifier needs samples of at least 2 classes in y; got only one class: "
                             f"{classes.tolist()}")
        state, tensors = {}, {}
        if resume is not None:
            tensors, meta = load_state(resume)
            saved = type(self)._params_from_meta(meta, resume)
            for name in ("hidden_layer_sizes", "visible", "dropout", "solver"):
                mine = sizes if name == "hidden_layer_sizes" else getattr(self, name)
                if saved.get(name) != mine:
                    raise ValueError(f"resume: the checkpoint {str(resume)!r} has {name}={saved.get(name)!r}, "
                                     f"this estimator {mine!r}")
            state = meta["state"]
            if state.get("classes") is not None and list(map(str, classes)) != list(map(str, state["classes"])):
                raise ValueError("resume: y has other classes than the checkpoint")
            self._seed = int(state["seed"])
        else:
            self._seed = draw_seed(self.random_state)
        self.classes_ = classes
        self._phase = "pretrain"
        on_epoch = None if checkpoint is None else (lambda: self.save(checkpoint))
        tr, va = self._split(y_idx)

        # 1. greedy pre-training (resumable layer by layer, epoch by epoch)
        dbn = DBN(sizes, visible=self.visible, layer_params=self.layer_params, random_state=self._seed,
                  verbose=self.verbose, device=self.device, dtype=self.dtype, **self._dbn_shared())
        dbn._seed = self._seed
        dbn.n_features_in_ = X.shape[1]
        self.dbn_ = dbn
        layer_states = ()
        if state.get("layers"):
            layer_states = list(zip(self._split_layers(tensors, len(state["layers"]), "dbn."), state["layers"]))
        if state.get("phase") == "finetune":  # pre-training had finished: restore without training
            dbn._set_state({k[4:]: v for k, v in tensors.items() if k.startswith("dbn.")},
                           {"seed": self._seed, "n_features_in_": X.shape[1], "layers": state["layers"]})
        else:
            dbn._pretrain(X[tr], sizes, dbn._shared(), layer_states, on_epoch)

        # 2. fine-tuning
        self._phase = "finetune"
        self._build_network(len(classes))
        Xt = self._input(X)
        yt = torch.from_numpy(y_idx.astype(np.int64)).to(self._device)
        tr_t, va_t = torch.from_numpy(tr).to(self._device), torch.from_numpy(va).to(self._device)
        if state.get("phase") == "finetune":
            self._restore_finetune(tensors, state)
        self._finetune(Xt.index_select(0, tr_t), yt.index_select(0, tr_t),
                       Xt.index_select(0, va_t) if len(va) else None, yt.index_select(0, va_t) if len(va) else None,
                       on_epoch)
        if on_epoch is not None:  # the checkpoint ends with the finished model (best epoch restored)
            on_epoch()
        return self

    def _dbn_shared(self):
        s = self._shared()
        return dict(learning_rate=s["learning_rate"], batch_size=s["batch_size"], n_iter=s["n_iter"], k=s["k"],
                    persistent=s["persistent"], momentum=s["momentum"], weight_decay=s["weight_decay"],
                    sparsity_target=s["sparsity_target"], sparsity_cost=s["sparsity_cost"])

    def _input(self, X) -> torch.Tensor:
        # the network's first layer is linear in v, so it takes X as given: only pre-training (a Bernoulli RBM)
        # needs X in [0, 1]
        return self.dbn_.rbms_[0]._input(X, clip=False) if "dbn_" in self.__dict__ else \
            to_tensor(X, self._dtype, self._device)

    def _build_network(self, n_classes: int):
        self._rng = make_generator(self._seed + 7, self._device)
        self._shuffle_rng = torch.Generator().manual_seed(self._seed + 8)
        layers = []
        opts = dict(dtype=self._dtype, device=self._device)
        for rbm in self.dbn_.rbms_:
            lin = nn.utils.skip_init(nn.Linear, rbm._W.shape[0], rbm._W.shape[1], **opts)
            s = rbm._sigma()
            with torch.no_grad():
                if self.pretrain_epochs > 0:
                    lin.weight.copy_((rbm._W if s is None else rbm._W / s.unsqueeze(1)).t())
                    lin.bias.copy_(rbm._c)
                else:  # no pre-training: Glorot-uniform for logistic units, as scikit-learn's MLP
                    bound = math.sqrt(2.0 / sum(rbm._W.shape))
                    for p in (lin.weight, lin.bias):
                        p.copy_((torch.rand(p.shape, generator=self._rng, **opts) * 2 - 1) * bound)
            layers += [lin, nn.Sigmoid()]
            if self.dropout > 0:
                layers.append(_Dropout(self.dropout, self._rng))
        head = nn.utils.skip_init(nn.Linear, self.dbn_.rbms_[-1]._W.shape[1], n_classes, **opts)
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
        self.n_iter_ = 0
        self.history_ = {}
        self._best = None
        self._best_loss = math.inf
        self._no_improve = 0
        self.best_epoch_ = 0

    def _finetune(self, X, y, X_valid, y_valid, on_epoch):
        from tqdm.auto import tqdm

        n = X.shape[0]
        B = min(self.batch_size, n)
        loss_fn = nn.functional.cross_entropy
        bar = tqdm(range(self.n_iter_, self.max_iter), desc="fine-tuning", disable=self.verbose < 1, leave=False,
                   unit="epoch")
        for epoch in bar:
            if self._no_improve >= self.n_iter_no_change:
                break
            t0 = time.perf_counter()
            self.network_.train()
            perm = torch.randperm(n, generator=self._shuffle_rng).to(self._device)
            total = torch.zeros((), dtype=self._dtype, device=self._device)
            for i in range(0, n, B):
                idx = perm[i:i + B]
                xb, yb = X.index_select(0, idx), y.index_select(0, idx)
                loss = loss_fn(self.network_(xb), yb)
                self._optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self._optimizer.step()
                total += loss.detach() * len(idx)
            train_loss = float(total) / n
            if not math.isfinite(train_loss):
                raise FloatingPointError(f"DBNClassifier fine-tuning diverged in epoch {epoch + 1} (loss "
                                         f"{train_loss}); lower learning_rate_init (now {self.learning_rate_init})")
            rec = {"epoch": epoch + 1, "loss": train_loss}
            if X_valid is not None:
                logits = self._logits(X_valid)
                val_loss = float(loss_fn(logits, y_valid))
                rec.update(val_loss=val_loss, val_accuracy=float((logits.argmax(1) == y_valid).double().mean()))
                watched = val_loss
            else:
                watched = train_loss
            rec["time"] = time.perf_counter() - t0
            for key, val in rec.items():
                self.history_.setdefault(key, []).append(val)
            self.n_iter_ = epoch + 1
            if watched < self._best_loss - self.tol:
                self._best_loss, self._no_improve, self.best_epoch_ = watched, 0, epoch + 1
                if X_valid is not None:
                    self._best = [p.detach().clone() for p in self.network_.parameters()]
            else:
                self._no_improve += 1
            if self.verbose:
                bar.set_postfix({k: f"{v:.4g}" for k, v in rec.items() if k != "epoch"})
            if on_epoch is not None:
                on_epoch()
        if self._best is not None:  # early stopping: keep the weights of the best validation epoch
            with torch.no_grad():
                for p, b in zip(self.network_.parameters(), self._best):
                    p.copy_(b)
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
        X = _validate_data(self, X, dtype=(np.float64, np.float32), reset=False)
        return torch.softmax(self._logits(self._input(X)).double(), 1).cpu().numpy()

    def predict(self, X):
        check_is_fitted(self)
        X = _validate_data(self, X, dtype=(np.float64, np.float32), reset=False)
        return self.classes_[self._logits(self._input(X)).argmax(1).cpu().numpy()]

    # ---- checkpoint state ----------------------------------------------------------------------------------

    def _get_state(self):
        if "dbn_" not in self.__dict__:
            check_is_fitted(self)
        tensors, layers = self.dbn_._stack_state("dbn.")
        classes = self.classes_
        state = {"seed": self._seed, "n_features_in_": self.n_features_in_, "layers": layers,
                 "phase": self._phase, "classes": classes.tolist(), "classes_dtype": classes.dtype.str
                 if classes.dtype != object else "object"}
        if self._phase == "finetune":
            for i, p in enumerate(self.network_.parameters()):
                tensors[f"net.{i}"] = p.detach()
            if self._best is not None:
                for i, p in enumerate(self._best):
                    tensors[f"best.{i}"] = p
            for i, st in self._optimizer.state_dict()["state"].items():
                for key, val in st.items():
                    tensors[f"opt.{i}.{key}"] = val if torch.is_tensor(val) else torch.tensor(val)
            tensors["rng_state"] = self._rng.get_state()
            tensors["shuffle_rng_state"] = self._shuffle_rng.get_state()
            state.update(n_iter_=self.n_iter_, history_=self.history_, best_loss=self._best_loss,
                         no_improve=self._no_improve, best_epoch_=self.best_epoch_)
        return tensors, state

    def _restore_finetune(self, tensors, state):
        with torch.no_grad():
            for i, p in enumerate(self.network_.parameters()):
                p.copy_(tensors[f"net.{i}"])
        n_params = len(list(self.network_.parameters()))
        self._best = [tensors[f"best.{i}"].to(self._device) for i in range(n_params)] \
            if "best.0" in tensors else None
        opt_state = {}
        for name, val in tensors.items():
            if name.startswith("opt."):
                _, i, key = name.split(".", 2)
                opt_state.setdefault(int(i), {})[key] = val.to(self._device) if key != "step" else val
        sd = self._optimizer.state_dict()
        sd["state"] = opt_state
        self._optimizer.load_state_dict(sd)
        self._rng.set_state(tensors["rng_state"])
        self._shuffle_rng.set_state(tensors["shuffle_rng_state"])
        self.n_iter_ = int(state["n_iter_"])
        self.history_ = {k: list(v) for k, v in state["history_"].items()}
        self._best_loss = float(state["best_loss"])
        self._no_improve = int(state["no_improve"])
        self.best_epoch_ = int(state["best_epoch_"])
        self._rewire_dropout()

    def _set_state(self, tensors, state):
        sizes = self._check_params()
        if state.get("phase") != "finetune":
            raise ValueError("the checkpoint was saved during pre-training; finish it with fit(X, y, resume=path)")
        self._seed = int(state["seed"])
        self.n_features_in_ = int(state["n_features_in_"])
        dt = state["classes_dtype"]
        self.classes_ = np.asarray(state["classes"], dtype=object if dt == "object" else np.dtype(dt))
        self.dbn_ = DBN(sizes, visible=self.visible, layer_params=self.layer_params, random_state=self._seed,
                        verbose=self.verbose, device=self.device, dtype=self.dtype, **self._dbn_shared())
        self.dbn_._set_state({k[4:]: v for k, v in tensors.items() if k.startswith("dbn.")},
                             {"seed": self._seed, "n_features_in_": self.n_features_in_, "layers": state["layers"]})
        self._phase = "finetune"
        self._build_network(len(self.classes_))
        self._restore_finetune(tensors, state)
        if self._best is not None:  # a checkpoint written during fine-tuning: predict with the best epoch so far
            with torch.no_grad():
                for p, b in zip(self.network_.parameters(), self._best):
                    p.copy_(b)
        self.network_.eval()
