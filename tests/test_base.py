"""The estimator contract (pymusicrbm._base): parameter validation of every estimator, the renamed parameters'
FutureWarnings, old-name checkpoints, seeding, and a new RBM-family estimator written by subclassing the base only
(plain-PyTorch CD-1), which trains, checkpoints and resumes bitwise, alone and stacked."""
import json
from numbers import Integral, Real

import numpy as np
import pytest
import torch
from sklearn.base import TransformerMixin
from sklearn.datasets import load_digits
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.validation import validate_data

from pymusicrbm import DBN, RBM, ConvDBN, ConvRBM, ConvVAE, DBNClassifier, TrainingDivergedError
from pymusicrbm import checkpoint as ckpt
from pymusicrbm._base import COMMON_CONSTRAINTS, Interval, StackEstimator, TrainedEstimator
from pymusicrbm._utils import layer_seed, to_tensor


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return (X[:240] / 16.0).astype(np.float32), y[:240]


MAPS = np.random.default_rng(0).standard_normal((12, 10, 10)).astype(np.float32)
EXCERPTS = np.random.default_rng(1).standard_normal((12, 24, 24)).astype(np.float32) * 10 - 40
VAE = dict(n_mels=24, n_frames=24, latent_dim=3, channels=(4, 4, 4), batch_size=4, kl_warmup_epochs=0)


def _fit(est, X, y=None):
    return est.fit(X, y) if isinstance(est, DBNClassifier) else est.fit(X)


# ---- parameter validation, the scikit-learn way ---------------------------------------------------------------

@pytest.mark.parametrize("make, data, param, value", [
    (lambda **kw: RBM(4, **kw), "digits", "batch_size", 0),
    (lambda **kw: RBM(4, **kw), "digits", "random_state", "seven"),
    (lambda **kw: RBM(4, **kw), "digits", "dtype", "float16"),
    (lambda **kw: DBN((4,), **kw), "digits", "n_iter", -1),
    (lambda **kw: DBN((4,), **kw), "digits", "weight_decay", -1.0),
    (lambda **kw: DBNClassifier((4,), **kw), "digits", "max_iter", 1.5),
    (lambda **kw: DBNClassifier((4,), **kw), "digits", "learning_rate_init", 0.0),
    (lambda **kw: ConvRBM(2, 3, **kw), "maps", "momentum", 2.0),
    (lambda **kw: ConvRBM(2, 3, **kw), "maps", "verbose", "loud"),
    (lambda **kw: ConvDBN((2,), ((3, 3),), (1,), **kw), "maps", "training", "adam"),
    (lambda **kw: ConvDBN((2,), ((3, 3),), (1,), **kw), "maps", "device", 3),
    (lambda **kw: ConvVAE(**VAE, **kw), "excerpts", "beta", -1.0),
    (lambda **kw: ConvVAE(**VAE, **kw), "excerpts", "n_iter_no_change", 0),
])
def test_invalid_parameter_names_the_parameter(digits, make, data, param, value):
    X = {"digits": digits[0], "maps": MAPS, "excerpts": EXCERPTS}[data]
    est = make(**{param: value})
    with pytest.raises(InvalidParameterError, match=f"The '{param}' parameter of {type(est).__name__} must be"):
        _fit(est, X, digits[1])


# ---- renamed parameters ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("cls, old, new, value", [
    (DBNClassifier, "pretrain_epochs", "n_iter", 3),
    (DBNClassifier, "pretrain_learning_rate", "learning_rate", 0.02),
    (ConvVAE, "lr", "learning_rate", 0.02),
    (ConvVAE, "n_epochs", "n_iter", 3),
    (ConvVAE, "patience", "n_iter_no_change", 3),
])
def test_renamed_parameters_warn_and_map(cls, old, new, value):
    with pytest.warns(FutureWarning, match=f"'{old}' was renamed '{new}'"):
        est = cls(**{old: value})
    assert getattr(est, new) == value and old not in est.get_params()
    with pytest.warns(FutureWarning, match=f"'{old}' was renamed '{new}'"):
        est = cls().set_params(**{old: value})
    assert est.get_params()[new] == value
    with pytest.raises(TypeError, match="unexpected keyword argument 'n_epoch'"):
        cls(n_epoch=3)


def test_transform_layers_last_is_top_with_a_warning():
    dbn = ConvDBN((2,), ((3, 3),), (2,), n_iter=1, batch_size=4, random_state=0).fit(MAPS)
    with pytest.warns(FutureWarning, match=r"layers='last'\) was renamed layers='top'"):
        last = dbn.transform(MAPS, layers="last")
    np.testing.assert_array_equal(last, dbn.transform(MAPS))
    with pytest.raises(ValueError, match="layers must be one of"):
        dbn.transform(MAPS, layers="bottom")


def _write_v1(path, tensors, meta):
    """A checkpoint as pymusicrbm 0.1 wrote it (format version 1)."""
    from safetensors.torch import save_file
    header = {"format": ckpt.FORMAT, "version": "1", "meta": json.dumps(meta)}
    save_file({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}, str(path), metadata=header)


def test_a_version_1_checkpoint_with_the_old_names_loads(digits, tmp_path):
    X, y = digits
    clf = DBNClassifier((8,), n_iter=1, max_iter=2, random_state=0).fit(X, y)
    tensors, state = clf._get_state()
    meta = clf._checkpoint_meta(state)
    params = meta["params"]
    params["pretrain_epochs"], params["pretrain_learning_rate"] = params.pop("n_iter"), params.pop("learning_rate")
    state["best_loss"] = state.pop("best_score")  # the 0.1 name of the early-stopping state
    _write_v1(tmp_path / "old.safetensors", tensors, meta)
    back = DBNClassifier.load(tmp_path / "old.safetensors")
    assert back.get_params() == clf.get_params()
    np.testing.assert_array_equal(back.predict_proba(X), clf.predict_proba(X))


def test_a_convvae_saved_by_version_1_loads(tmp_path):
    vae = ConvVAE(**VAE, n_iter=2, random_state=0).fit(EXCERPTS)
    tensors = {f"model.{k}": v for k, v in vae.net_.state_dict().items()}
    tensors.update({"norm.mean": torch.from_numpy(vae.mean_), "norm.std": torch.from_numpy(vae.std_),
                    "norm.range": torch.from_numpy(vae.range_)})
    config = {k: v for k, v in vae.get_params().items() if k not in ("device", "dtype", "verbose",
                                                                       "n_iter", "learning_rate",
                                                                       "n_iter_no_change")}
    config.update(channels=list(vae.channels), lr=vae.learning_rate, n_epochs=vae.n_iter,
                  patience=vae.n_iter_no_change, random_state=0)
    meta = {"format": "pymusicrbm.ConvVAE", "config": config, "history": vae.history_,
            "best_epoch": vae.best_epoch_ - 1, "n_epochs_run": vae.n_iter_}
    _write_v1(tmp_path / "vae.safetensors", tensors, meta)
    back = ConvVAE.load(tmp_path / "vae.safetensors", device="cpu")
    np.testing.assert_array_equal(back.transform(EXCERPTS), vae.transform(EXCERPTS))
    assert (back.n_iter_, back.best_epoch_, back.learning_rate) == (vae.n_iter_, vae.best_epoch_, vae.learning_rate)
    _write_v1(tmp_path / "train.safetensors", tensors, {"format": "pymusicrbm.ConvVAE.training"})
    with pytest.raises(ValueError, match="format version 1"):
        ConvVAE.load(tmp_path / "train.safetensors")


# ---- one seeding scheme -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("make, data", [
    (lambda: DBN((6, 4), n_iter=2, random_state=3), "digits"),
    (lambda: DBNClassifier((6,), n_iter=1, max_iter=3, dropout=0.2, random_state=3), "digits"),
    (lambda: ConvRBM(3, 3, n_iter=2, batch_size=4, training="reconstruction", random_state=3), "maps"),
    (lambda: ConvDBN((3, 2), ((3, 3), (2, 2)), (2, 1), n_iter=1, batch_size=4, random_state=3), "maps"),
    (lambda: ConvVAE(**VAE, n_iter=2, random_state=3), "excerpts"),
])
def test_same_seed_same_result(digits, make, data):
    X = {"digits": digits[0], "maps": MAPS, "excerpts": EXCERPTS}[data]
    a, b = _fit(make(), X, digits[1]), _fit(make(), X, digits[1])
    out = (lambda m: m.predict_proba(X)) if isinstance(a, DBNClassifier) else (lambda m: m.transform(X))
    np.testing.assert_array_equal(out(a), out(b))
    c = _fit(make().set_params(random_state=4), X, digits[1])
    assert not np.array_equal(out(a), out(c))


def test_stack_layers_are_seeded_by_layer_seed(digits):
    dbn = ConvDBN((3, 2), ((3, 3), (2, 2)), (2, 1), n_iter=1, batch_size=4, random_state=3).fit(MAPS)
    assert [layer.random_state for layer in dbn.layers_] == [layer_seed(3, 0), layer_seed(3, 1)]
    second = ConvRBM(2, (2, 2), pool=1, visible="bernoulli", standardize=None, n_iter=1, batch_size=4,
                     random_state=layer_seed(3, 1)).fit(dbn.layers_[0].transform(MAPS))
    np.testing.assert_array_equal(dbn.layers_[1].filters_, second.filters_)


# ---- a new RBM-family estimator: subclass the base, write only what is its own --------------------------------

class CD1RBM(TransformerMixin, TrainedEstimator):
    """Bernoulli RBM trained by plain CD-1 in PyTorch: initialisation, the batch update, a monitor."""

    _parameter_constraints = {**COMMON_CONSTRAINTS, "n_components": [Interval(Integral, 1, None, closed="left")],
                              "learning_rate": [Interval(Real, 0, None, closed="neither")]}
    _structural_params = ("n_components",)
    _STATE_TENSORS = ("_W", "_b", "_c")
    _weights = ("_W", "weights")

    def __init__(self, n_components=8, *, learning_rate=0.1, batch_size=10, n_iter=3, random_state=None,
                 verbose=0, device="cpu", dtype="float32"):
        self.n_components = n_components
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.n_iter = n_iter
        self.random_state = random_state
        self.verbose = verbose
        self.device = device
        self.dtype = dtype

    def __sklearn_is_fitted__(self):
        return "_W" in self.__dict__

    def _validate_input(self, X, reset):
        return validate_data(self, X, dtype=(np.float64, np.float32), reset=reset)

    def _input(self, X):
        return to_tensor(X, self._dtype, self._device)

    def _initialize(self, X):
        self._seed_generators()
        opts = dict(dtype=self._dtype, device=self._device)
        self._W = 0.01 * torch.randn(X.shape[1], self.n_components, generator=self._rng, **opts)
        self._b = torch.zeros(X.shape[1], **opts)
        self._c = torch.zeros(self.n_components, **opts)
        self._reset_training()
        self.batch_losses = []
        return self._input(X)

    def _batch_update(self, v, lr, epoch):
        W, b, c, g = self._W, self._b, self._c, self._rng
        p0 = torch.sigmoid(v @ W + c)
        v1 = torch.bernoulli(torch.sigmoid(torch.bernoulli(p0, generator=g) @ W.t() + b), generator=g)
        p1 = torch.sigmoid(v1 @ W + c)
        W += lr * (v.t() @ p0 - v1.t() @ p1) / len(v)
        b += lr * (v - v1).mean(0)
        c += lr * (p0 - p1).mean(0)
        loss = (v - v1).square().mean()
        self.__dict__.setdefault("batch_losses", []).append((len(v), float(loss)))
        return loss

    def _epoch_record(self, loss, lr, X, X_valid):
        return {"recon_error": loss}

    def transform(self, X):
        return torch.sigmoid(self._input(self._validate_input(X, reset=False)) @ self._W + self._c).cpu().numpy()

    def _get_state(self):
        return self._state_tensors(), {"seed": self._seed, "n_features_in_": self.n_features_in_,
                                       **self._training_state()}

    def _set_state(self, tensors, state, check_against=None):
        self._check_params()
        self._load_state_tensors(tensors, state["seed"])
        self.n_features_in_ = int(state["n_features_in_"])
        self._restore_training_state(state)


class CD1DBN(TransformerMixin, StackEstimator):
    """...and a stack of them: only the layer structure is its own."""

    _parameter_constraints = {**COMMON_CONSTRAINTS, "hidden_layer_sizes": [tuple],
                              "learning_rate": [Interval(Real, 0, None, closed="neither")],
                              "layer_params": [list, None]}
    _layer_class = CD1RBM
    _layer_shared = ("learning_rate", "batch_size", "n_iter")

    def __init__(self, hidden_layer_sizes=(8, 4), *, learning_rate=0.1, batch_size=10, n_iter=2, layer_params=None,
                 random_state=None, verbose=0, device="cpu", dtype="float32"):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.n_iter = n_iter
        self.layer_params = layer_params
        self.random_state = random_state
        self.verbose = verbose
        self.device = device
        self.dtype = dtype

    def _layer_specs(self):
        return [{"n_components": h} for h in self.hidden_layer_sizes]

    def _validate_input(self, X, reset):
        return validate_data(self, X, dtype=(np.float64, np.float32), reset=reset)

    def transform(self, X, layers="top"):
        return self._transform_layers(self._validate_input(X, reset=False), layers)

    def _combine(self, outputs):
        return np.hstack(outputs)


def test_new_estimator_trains_through_the_base(digits):
    X = digits[0]
    m = CD1RBM(16, n_iter=4, batch_size=32, random_state=5).fit(X)
    h = m.history_
    assert h["epoch"] == [1, 2, 3, 4] and m.n_iter_ == 4 and h["recon_error"][-1] < h["recon_error"][0]
    # the loop shuffles with the seed + 1 generator and reports the row-weighted mean of the batch losses
    perm = torch.randperm(len(X), generator=torch.Generator().manual_seed(5 + 1))
    assert [n for n, _ in m.batch_losses[:8]] == [len(i) for i in torch.split(perm, 32)]
    first = m.batch_losses[:8]
    assert h["recon_error"][0] == pytest.approx(sum(n * v for n, v in first) / len(X), rel=1e-6)
    with pytest.raises(InvalidParameterError, match="'n_components' parameter of CD1RBM"):
        CD1RBM(0).fit(X)
    with pytest.raises(TrainingDivergedError, match="CD1RBM training diverged in epoch 1: .*lower learning_rate"):
        CD1RBM(4, learning_rate=1e30, n_iter=1).fit(X)


def test_new_estimator_checkpoints_and_resumes_bitwise(digits, tmp_path):
    X = digits[0]
    full = CD1RBM(16, n_iter=4, batch_size=32, random_state=5).fit(X)
    path = tmp_path / "cd1.safetensors"
    part = CD1RBM(16, n_iter=2, batch_size=32, random_state=5).fit(X, checkpoint=path)
    loaded = CD1RBM.load(path)
    np.testing.assert_array_equal(loaded.transform(X), part.transform(X))
    resumed = CD1RBM(16, n_iter=4, batch_size=32, random_state=5).fit(X, resume=path)
    np.testing.assert_array_equal(resumed.transform(X), full.transform(X))
    assert resumed.history_["recon_error"] == full.history_["recon_error"]
    with pytest.raises(ValueError, match="was trained with n_components=16 but this estimator has n_components=8"):
        CD1RBM(8, n_iter=4).fit(X, resume=path)


def test_new_stack_trains_layer_by_layer_and_resumes_bitwise(digits, tmp_path, monkeypatch):
    X = digits[0]
    kw = dict(hidden_layer_sizes=(12, 6), n_iter=3, batch_size=32, random_state=2)
    full = CD1DBN(**kw).fit(X)
    second = CD1RBM(6, n_iter=3, batch_size=32, random_state=layer_seed(2, 1)).fit(full.layers_[0].transform(X))
    np.testing.assert_array_equal(full.transform(X), second.transform(full.layers_[0].transform(X)))
    assert full.transform(X, layers="all").shape == (len(X), 18) and len(full.history_) == 2

    # interrupt in the middle of the second layer; the checkpoint holds layer 1 and the epochs of layer 2 so far
    path = tmp_path / "stack.safetensors"
    real, calls = CD1RBM._batch_update, []

    def interrupt(self, v, lr, epoch):
        calls.append(1)
        if len(calls) == 3 * 8 + 2 * 8 + 3:  # layer 1's 3 epochs of 8 batches, 2 epochs of layer 2, and then some
            raise KeyboardInterrupt
        return real(self, v, lr, epoch)

    monkeypatch.setattr(CD1RBM, "_batch_update", interrupt)
    with pytest.raises(KeyboardInterrupt):
        CD1DBN(**kw).fit(X, checkpoint=path)
    monkeypatch.undo()
    resumed = CD1DBN(**kw).fit(X, resume=path)
    assert [layer.n_iter_ for layer in resumed.layers_] == [3, 3]
    np.testing.assert_array_equal(resumed.transform(X, layers="all"), full.transform(X, layers="all"))
