"""Checkpoints: safetensors + JSON round trips, atomic writes, corrupt / foreign / pickle files refused, and resumed
training bitwise identical to uninterrupted training (RBM, DBN, DBNClassifier)."""
import json
import os
import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from sklearn.datasets import load_digits

from pymusicrbm import checkpoint as ckpt
from pymusicrbm.dbn import DBN, DBNClassifier
from pymusicrbm.rbm import RBM


@pytest.fixture(scope="module")
def data():
    X, y = load_digits(return_X_y=True)
    return X[:300] / 16.0, y[:300]


# ---- save_state / load_state --------------------------------------------------------------------------------

def test_round_trip(tmp_path):
    tensors = {"W": torch.randn(3, 4), "rng": torch.Generator().manual_seed(1).get_state(),
               "d": torch.arange(5, dtype=torch.float64)}
    meta = {"a": 1, "b": [1.5, None, "x"], "nested": {"nan": float("nan")}}
    path = ckpt.save_state(tmp_path / "sub" / "m.safetensors", tensors, meta)
    t2, m2 = ckpt.load_state(path)
    assert set(t2) == set(tensors)
    for k in tensors:
        assert torch.equal(t2[k], tensors[k]) and t2[k].dtype == tensors[k].dtype
    assert m2["a"] == 1 and m2["b"] == [1.5, None, "x"] and np.isnan(m2["nested"]["nan"])
    assert os.listdir(tmp_path / "sub") == ["m.safetensors"]  # no temporary file left behind


def test_failed_write_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    ckpt.save_state(path, {"x": torch.ones(2)}, {"v": 1})

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_state(path, {"x": torch.zeros(2)}, {"v": 2})
    monkeypatch.undo()
    tensors, meta = ckpt.load_state(path)
    assert meta == {"v": 1} and torch.equal(tensors["x"], torch.ones(2))
    assert os.listdir(tmp_path) == ["m.safetensors"]


def test_missing_file(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        ckpt.load_state(tmp_path / "nope.safetensors")


def test_corrupt_file(tmp_path):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(os.urandom(1000))
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        ckpt.load_state(path)


def test_truncated_file(tmp_path):
    path = tmp_path / "m.safetensors"
    ckpt.save_state(path, {"x": torch.randn(100, 100)}, {"v": 1})
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        ckpt.load_state(path)


def test_foreign_safetensors_file(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"weight": torch.randn(2, 2)}, str(path), metadata={"format": "pt"})
    with pytest.raises(ValueError, match="not a pymusicrbm checkpoint"):
        ckpt.load_state(path)
    with pytest.raises(ValueError, match="not a pymusicrbm checkpoint"):
        RBM.load(path)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # unpickling this would create the marker file
        return (open, (self.marker, "w"))


def test_pickle_file_is_refused_without_executing(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.safetensors"
    with open(path, "wb") as f:
        pickle.dump({"W": _Payload(str(marker))}, f)
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        RBM.load(path)
    assert not marker.exists()


def test_wrong_estimator_class(tmp_path, data):
    path = tmp_path / "dbn.safetensors"
    DBN((4,), n_iter=1, random_state=0).fit(data[0]).save(path)
    with pytest.raises(ValueError, match="holds a 'DBN', not a RBM"):
        RBM.load(path)


def test_unreadable_meta(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file({"x": torch.ones(1)}, str(path), metadata={"format": ckpt.FORMAT, "version": "1", "meta": "{oops"})
    with pytest.raises(ValueError, match="unreadable JSON metadata"):
        ckpt.load_state(path)
    save_file({"x": torch.ones(1)}, str(path), metadata={"format": ckpt.FORMAT, "version": "99", "meta": "{}"})
    with pytest.raises(ValueError, match="format version '99'"):
        ckpt.load_state(path)


def test_incomplete_state(tmp_path, data):
    path = tmp_path / "m.safetensors"
    rbm = RBM(n_components=4, n_iter=1, random_state=0).fit(data[0])
    tensors, state = rbm._get_state()
    del tensors["c"]
    ckpt.save_state(path, tensors, rbm._checkpoint_meta(state))
    with pytest.raises(ValueError, match="incomplete or inconsistent state"):
        RBM.load(path)


# ---- estimators: save -> load ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kw", [{}, {"visible": "gaussian", "learning_rate": 0.01, "learn_sigma": True,
                                     "persistent": True, "dtype": torch.float64}])
def test_rbm_save_load_identical(tmp_path, data, kw):
    X = data[0]
    rbm = RBM(n_components=6, n_iter=2, random_state=0, **kw).fit(X)
    path = rbm.save(tmp_path / "rbm.safetensors")
    back = RBM.load(path)
    assert back.get_params() == rbm.get_params()
    np.testing.assert_array_equal(back.transform(X), rbm.transform(X))
    np.testing.assert_array_equal(back.score_samples(X), rbm.score_samples(X))
    np.testing.assert_array_equal(back.gibbs(X[:5]), rbm.gibbs(X[:5]))  # the generator state travels too
    assert back.history_ == rbm.history_ and back.n_iter_ == rbm.n_iter_


def test_dbn_and_classifier_save_load_identical(tmp_path, data):
    X, y = data
    dbn = DBN((8, 5), n_iter=1, random_state=0, visible="gaussian",
              layer_params=[{"learning_rate": 0.01}, {}]).fit(X)
    back = DBN.load(dbn.save(tmp_path / "dbn.safetensors"))
    np.testing.assert_array_equal(back.transform(X, layers="all"), dbn.transform(X, layers="all"))
    np.testing.assert_array_equal(back.sample(4, 5, random_state=1), dbn.sample(4, 5, random_state=1))

    clf = DBNClassifier((8,), n_iter=1, max_iter=3, dropout=0.2, random_state=0).fit(X, y)
    back = DBNClassifier.load(clf.save(tmp_path / "clf.safetensors"))
    np.testing.assert_array_equal(back.predict_proba(X), clf.predict_proba(X))
    np.testing.assert_array_equal(back.predict(X), clf.predict(X))
    strs = np.array(["a", "bb"])[(y > 4).astype(int)]
    clf = DBNClassifier((8,), n_iter=1, max_iter=2, random_state=0).fit(X, strs)
    back = DBNClassifier.load(clf.save(tmp_path / "clf2.safetensors"))
    np.testing.assert_array_equal(back.predict(X), clf.predict(X))
    assert back.classes_.tolist() == ["a", "bb"]


# ---- resume == uninterrupted --------------------------------------------------------------------------------

def rbm_state(rbm):
    tensors, state = rbm._get_state()
    hist = {k: v for k, v in state["history_"].items() if k != "time"}
    return tensors, hist


def assert_same(a, b):
    ta, ha = a
    tb, hb = b
    assert set(ta) == set(tb)
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k
    assert ha == hb


@pytest.mark.parametrize("kw", [{}, {"persistent": True, "validation_fraction": 0.2},
                                {"persistent": "fast", "sparsity_target": 0.1},
                                {"visible": "gaussian", "learning_rate": 0.01, "learn_sigma": True,
                                 "learning_rate_decay": 0.5}])
def test_rbm_resume_matches_uninterrupted(tmp_path, data, kw):
    X = data[0]
    full = RBM(n_components=6, n_iter=4, random_state=0, **kw).fit(X)
    path = tmp_path / "run.safetensors"
    RBM(n_components=6, n_iter=2, random_state=0, **kw).fit(X, checkpoint=path)
    resumed = RBM(n_components=6, n_iter=4, random_state=0, **kw).fit(X, resume=path)
    assert resumed.n_iter_ == 4
    assert_same(rbm_state(resumed), rbm_state(full))


def test_rbm_resume_without_seed(tmp_path, data):
    # random_state=None: the seed drawn by the first run travels in the checkpoint
    X = data[0]
    path = tmp_path / "run.safetensors"
    first = RBM(n_components=4, n_iter=1).fit(X, checkpoint=path)
    a = RBM(n_components=4, n_iter=2).fit(X, resume=path)
    b = RBM(n_components=4, n_iter=2).fit(X, resume=path)
    np.testing.assert_array_equal(a.components_, b.components_)
    assert a._seed == first._seed


def test_resume_mismatch(tmp_path, data):
    path = tmp_path / "run.safetensors"
    RBM(n_components=4, n_iter=1, random_state=0).fit(data[0], checkpoint=path)
    with pytest.raises(ValueError, match="n_components=4 but this estimator has n_components=5"):
        RBM(n_components=5, n_iter=2).fit(data[0], resume=path)
    with pytest.raises(ValueError, match="trained on 64 features but X has 10"):
        RBM(n_components=4, n_iter=2).fit(data[0][:, :10], resume=path)


class Interrupted(Exception):
    pass


def interrupt_after(monkeypatch, cls, n_saves):
    """Make cls.save raise after its n-th successful call, like a crash right after a checkpoint."""
    original = cls.save
    calls = {"n": 0}

    def save(self, path):
        out = original(self, path)
        calls["n"] += 1
        if calls["n"] == n_saves:
            raise Interrupted
        return out

    monkeypatch.setattr(cls, "save", save)


def dbn_state(dbn):
    return [rbm_state(r) for r in dbn.rbms_]


@pytest.mark.parametrize("n_saves", [1, 3])  # inside layer 0, inside layer 1
def test_dbn_resume_matches_uninterrupted(tmp_path, data, monkeypatch, n_saves):
    X = data[0]
    make = lambda: DBN((8, 6), n_iter=2, random_state=0, persistent=True)  # noqa: E731
    full = make().fit(X)
    path = tmp_path / "dbn.safetensors"
    interrupt_after(monkeypatch, DBN, n_saves)
    with pytest.raises(Interrupted):
        make().fit(X, checkpoint=path)
    monkeypatch.undo()
    resumed = make().fit(X, resume=path)
    for a, b in zip(dbn_state(resumed), dbn_state(full)):
        assert_same(a, b)
    np.testing.assert_array_equal(resumed.transform(X), full.transform(X))


@pytest.mark.parametrize("n_saves", [2, 5])  # during pre-training, during fine-tuning
def test_classifier_resume_matches_uninterrupted(tmp_path, data, monkeypatch, n_saves):
    X, y = data
    make = lambda: DBNClassifier((8, 6), n_iter=2, max_iter=4, dropout=0.1,  # noqa: E731
                                 batch_size=32, random_state=0)
    full = make().fit(X, y)
    path = tmp_path / "clf.safetensors"
    interrupt_after(monkeypatch, DBNClassifier, n_saves)
    with pytest.raises(Interrupted):
        make().fit(X, y, checkpoint=path)
    monkeypatch.undo()
    resumed = make().fit(X, y, resume=path)
    for p, q in zip(resumed.network_.parameters(), full.network_.parameters()):
        assert torch.equal(p, q)
    np.testing.assert_array_equal(resumed.predict_proba(X), full.predict_proba(X))
    assert json.dumps({k: v for k, v in resumed.history_.items() if k != "time"}) == \
        json.dumps({k: v for k, v in full.history_.items() if k != "time"})
