"""ConvRBM / ConvDBN estimators and the ConvRBM study: training lowers the reconstruction error, the features
classify synthetic textures above chance, checkpoints round-trip and resume exactly, cropping, bad input."""
import json

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score

from pymusicrbm.conv_rbm import ConvDBN, ConvRBM, as_maps, cropped_size


def textures(n_per_class=24, shape=(14, 22), noise=0.4, seed=0):
    """Three classes of 1-channel maps: horizontal stripes, vertical stripes, checkerboard blobs (random phase),
    plus Gaussian noise. Returns X (n, H, W), y."""
    rng = np.random.default_rng(seed)
    H, W = shape
    yy, xx = np.mgrid[0:H, 0:W]
    X, y = [], []
    for cls in range(3):
        for _ in range(n_per_class):
            ph = rng.uniform(0, 2 * np.pi)
            if cls == 0:
                m = np.sin(yy * 1.3 + ph)
            elif cls == 1:
                m = np.sin(xx * 1.3 + ph)
            else:
                m = np.sin(yy * 0.9 + ph) * np.sin(xx * 0.9 + ph)
            X.append(3.0 * m + 1.0 + noise * rng.standard_normal(shape))
            y.append(cls)
    return np.asarray(X, dtype=np.float32), np.asarray(y)


# Small 3x3 filters on Gaussian inputs learn slowly at the default step size: a larger one, and a denser target.
FAST = dict(n_filters=6, filter_shape=(3, 3), pool=2, batch_size=8, random_state=0, learning_rate=2.0,
            sparsity_target=0.1)


def test_cd_training_lowers_reconstruction_error_and_features_classify():
    X, y = textures()
    m = ConvRBM(n_iter=8, **FAST).fit(X)
    h = m.history_
    assert len(h["train_loss"]) == 8 and len(h["valid_loss"]) == 8 and len(h["recon_error"]) == 8
    assert h["train_loss"][-1] < 0.7 * h["train_loss"][0]
    assert h["valid_loss"][-1] < 0.7 * h["valid_loss"][0]
    assert m.reconstruction_error(X) < 0.7 * h["train_loss"][0]
    F = m.transform(X)
    assert F.shape == (len(X), 6) + m.output_shape_[1:] and F.dtype == np.float32
    assert ((F >= 0) & (F <= 1)).all()
    feats = np.concatenate([F.max((2, 3)), F.mean((2, 3))], 1)
    acc = cross_val_score(LogisticRegression(max_iter=2000), feats, y, cv=3).mean()
    assert acc > 0.85  # chance is 1/3
    # the learned model reconstructs far better than an untrained one
    untrained = ConvRBM(n_iter=0, **FAST).fit(X)
    assert m.reconstruction_error(X) < 0.7 * untrained.reconstruction_error(X)


def test_reconstruction_training_lowers_error():
    X, _ = textures(n_per_class=12)
    m = ConvRBM(**{**FAST, "n_iter": 6, "training": "reconstruction", "learning_rate": 0.03}).fit(X)
    assert m.history_["train_loss"][-1] < 0.7 * m.history_["train_loss"][0]
    assert "recon_error" in m.history_ and m.n_iter_ == 6


def test_sparsity_target_is_approached():
    X, _ = textures(n_per_class=12)
    lo = ConvRBM(**{**FAST, "n_iter": 5, "sparsity_target": 0.05, "sparsity_cost": 2.0}).fit(X)
    hi = ConvRBM(**{**FAST, "n_iter": 5, "sparsity_target": 0.4, "sparsity_cost": 2.0}).fit(X)
    assert abs(lo.history_["sparsity"][-1] - 0.05) < 0.05
    assert hi.history_["sparsity"][-1] > 0.25


def test_same_seed_same_model_and_pcd_runs():
    X, _ = textures(n_per_class=6)
    a = ConvRBM(n_iter=2, **FAST).fit(X)
    b = ConvRBM(n_iter=2, **FAST).fit(X)
    assert np.array_equal(a.filters_, b.filters_)
    p = ConvRBM(n_iter=2, persistent=True, k=2, **FAST).fit(X)
    assert np.isfinite(p.filters_).all() and p._chains.shape == (8, 1) + p.crop_shape_


def test_cropping_to_the_pooling_grid():
    X = np.random.default_rng(0).standard_normal((10, 1, 20, 23)).astype(np.float32)
    m = ConvRBM(n_iter=1, n_filters=4, filter_shape=(3, 4), pool=3, batch_size=5, random_state=0).fit(X)
    assert m.crop_shape_ == (cropped_size(20, 3, 3), cropped_size(23, 4, 3)) == (20, 21)
    assert m.output_shape_ == (4, 6, 6)
    assert m.transform(X).shape == (10, 4, 6, 6)
    longer = np.concatenate([X, X], axis=3)  # longer clips are cropped the same way
    assert np.array_equal(m.transform(longer), m.transform(X))
    assert m.transform(X, output="hidden").shape == (10, 4, 18, 18)
    assert m.reconstruct(X).shape == (10, 1, 20, 21)


def test_checkpoint_round_trip_and_exact_resume(tmp_path):
    X, _ = textures(n_per_class=8)
    full = ConvRBM(n_iter=3, **FAST).fit(X)
    ckpt = tmp_path / "crbm.safetensors"
    part = ConvRBM(n_iter=2, **FAST).fit(X, checkpoint=ckpt)
    loaded = ConvRBM.load(ckpt)
    assert np.array_equal(loaded.filters_, part.filters_)
    assert np.array_equal(loaded.transform(X[:4]), part.transform(X[:4]))
    assert loaded.history_ == part.history_ and loaded.get_params() == part.get_params()
    resumed = ConvRBM(n_iter=3, **FAST).fit(X, resume=ckpt)
    assert resumed.n_iter_ == 3
    for name in ("filters_", "intercept_hidden_", "intercept_visible_"):
        assert np.array_equal(getattr(resumed, name), getattr(full, name))
    with pytest.raises(ValueError, match="was trained with n_filters=6"):
        ConvRBM(n_iter=3, **{**FAST, "n_filters": 5}).fit(X, resume=ckpt)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        ConvRBM.load(bad)


def test_reconstruction_training_resumes_exactly(tmp_path):
    X, _ = textures(n_per_class=6)
    kw = {**FAST, "training": "reconstruction", "learning_rate": 0.03}
    full = ConvRBM(n_iter=2, **kw).fit(X)
    ckpt = tmp_path / "r.safetensors"
    ConvRBM(n_iter=1, **kw).fit(X, checkpoint=ckpt)
    resumed = ConvRBM(n_iter=2, **kw).fit(X, resume=ckpt)
    assert np.array_equal(resumed.filters_, full.filters_)


def test_conv_dbn_stacks_layers_and_round_trips(tmp_path):
    X, y = textures(n_per_class=10, shape=(18, 26))
    kw = dict(n_filters=(6, 5), filter_shapes=((3, 3), (2, 2)), pools=(2, 1), n_iter=2, batch_size=8,
              random_state=0, layer_params=({"learning_rate": 0.5}, {"learning_rate": 0.3}))
    dbn = ConvDBN(**kw).fit(X, checkpoint=tmp_path / "dbn.safetensors")
    assert len(dbn.layers_) == 2 and len(dbn.history_) == 2
    assert dbn.layers_[1].visible == "bernoulli" and dbn.layers_[1].input_shape_[0] == 6
    top = dbn.transform(X)
    both = dbn.transform(X, layers="all")
    assert top.shape == (len(X), 5) + dbn.layers_[1].output_shape_[1:]
    assert np.array_equal(both[-1], top) and both[0].shape[1] == 6
    loaded = ConvDBN.load(tmp_path / "dbn.safetensors")
    assert np.array_equal(loaded.transform(X[:3]), dbn.transform(X[:3]))
    assert clone(dbn).get_params()["filter_shapes"] == ((3, 3), (2, 2))
    with pytest.raises(ValueError, match="one entry per layer"):
        ConvDBN(n_filters=(4, 4), filter_shapes=((3, 3),), pools=(2, 2)).fit(X)
    with pytest.raises(ValueError, match="not per-layer ConvRBM settings"):
        ConvDBN(**{**kw, "layer_params": ({"pool": 3}, {})}).fit(X)


def test_sklearn_api():
    m = ConvRBM(n_filters=3)
    assert clone(m).get_params() == m.get_params()
    m.set_params(n_filters=4)
    assert m.n_filters == 4
    with pytest.raises(NotFittedError):
        m.transform(np.zeros((1, 8, 8)))


@pytest.mark.parametrize("kwargs, X, match", [
    (dict(filter_shape=(3,)), None, r"filter_shape must be an int or a pair"),
    (dict(filter_shape=(0, 3)), None, r"filter_shape must be an int or a pair"),
    (dict(pool=0), None, r"'pool' parameter of ConvRBM must be an int in the range \[1, inf\)"),
    (dict(training="adam"), None, r"'training' parameter of ConvRBM must be a str among"),
    (dict(visible="poisson"), None, r"'visible' parameter of ConvRBM must be a str among"),
    (dict(standardize="global"), None, r"'standardize' parameter of ConvRBM must be a str among .* or None"),
    (dict(learning_rate=-1.0), None, r"'learning_rate' parameter of ConvRBM must be a float in the range \[0.0, inf\) or None"),
    (dict(persistent=True, training="reconstruction"), None, r"persistent=True needs training='cd'"),
    (dict(), np.zeros((4, 16)), r"X must be 3-D \(n, height, width\) or 4-D"),
    (dict(), np.zeros((0, 8, 8)), r"X is empty"),
    (dict(), np.full((3, 8, 8), np.nan), r"X contains 192 NaN or Inf values \(e.g. the log of a zero"),
    (dict(), np.full((3, 8, 8), -np.inf), r"NaN or Inf"),  # as log(0)
    (dict(filter_shape=(7, 7)), np.zeros((3, 6, 12)), r"input maps \(6x12\) are too small"),
    (dict(visible="bernoulli"), np.full((3, 8, 8), 2.0), r"visible='bernoulli' needs inputs in \[0, 1\]"),
])
def test_bad_input_is_a_clear_value_error(kwargs, X, match):
    if X is None:
        X = np.zeros((4, 8, 8), dtype=np.float32)
    with pytest.raises(ValueError, match=match):
        ConvRBM(**{**dict(n_filters=2, filter_shape=(3, 3), n_iter=1), **kwargs}).fit(X)


def test_transform_rejects_other_channels_and_short_maps():
    X, _ = textures(n_per_class=3)
    m = ConvRBM(n_iter=1, **FAST).fit(X)
    with pytest.raises(ValueError, match="X has 2 channels but ConvRBM was fitted on 1"):
        m.transform(np.zeros((2, 2, 14, 22), np.float32))
    with pytest.raises(ValueError, match="X maps are 14x10 but this model needs at least"):
        m.transform(np.zeros((2, 14, 10), np.float32))


def test_divergence_is_reported():
    from pymusicrbm.rbm import TrainingDivergedError

    X, _ = textures(n_per_class=4)
    with pytest.raises(TrainingDivergedError, match="lower learning_rate"):
        ConvRBM(n_iter=3, **{**FAST, "learning_rate": 1e30}).fit(X)


def test_as_maps_accepts_tensors_and_ints():
    assert as_maps(torch.zeros(2, 5, 6)).shape == (2, 1, 5, 6)
    assert as_maps(np.ones((2, 3, 5, 6), dtype=np.int64)).dtype == np.float32


# ---- the study --------------------------------------------------------------------------------------------------

def test_conv_study_end_to_end(tmp_path, synthetic_small):
    from pymusicrbm.pipelines import conv_study

    res = conv_study.run(synthetic_small, tmp_path / "out", bins=(24, 32), seconds=3.0, n_filters=(6,),
                         filter_shapes=((3, 3),), epochs=2, batch_size=8, n_estimators=30, verbose=0,
                         tsne=("global_max",), compare_training=True)
    on_disk = json.loads((tmp_path / "out" / "results.json").read_text())
    classes = synthetic_small.classes
    for bins in ("24", "32"):
        for pooling in conv_study.POOLINGS:
            entry = on_disk[bins][pooling]
            assert 0 <= entry["f1_macro"] <= 1 and 0 <= entry["accuracy"] <= 1
            assert set(entry["per_class_f1"]) == set(classes)
            assert set(entry["by_classifier"]) == set(conv_study.CLASSIFIERS)
        assert on_disk[bins]["global_max"]["n_features"] == 6
        assert on_disk[bins]["max_pooling"]["n_features"] == 6 * 16
    # 10 classes: chance is 0.1; the learned features do better with at least one summary
    assert max(on_disk[b][p]["f1_macro"] for b in ("24", "32") for p in conv_study.POOLINGS) > 0.2
    assert res["best"]["f1_macro"] == max(res[b][p]["f1_macro"] for b in ("24", "32") for p in conv_study.POOLINGS)
    # the 2024 shortcut, trained on the same splits, is reported beside real CD
    assert set(on_disk["reconstruction_training"]) == {"24", "32"}
    assert set(on_disk["reconstruction_training"]["32"]) == set(conv_study.POOLINGS)
    assert len(on_disk["histories"]) == 4
    report = (tmp_path / "out" / "report.md").read_text()
    assert "Comparison: reconstruction training" in report
    assert "| class | flatten | global_average | max_pooling | global_max | average_pooling |" in report
    assert "**overall (macro F1)**" in report
    for f in ("loss_curves.png", "filters_24.png", "tsne_32_global_max.png", "models/cd_24_fold0.safetensors"):
        assert (tmp_path / "out" / f).exists(), f
    with pytest.raises(ValueError, match="unknown option"):
        conv_study.run(synthetic_small, tmp_path / "x", n_mels=64)


def test_summarize_maps():
    from pymusicrbm.pipelines.conv_study import POOLINGS, summarize_maps

    F = np.random.default_rng(0).random((3, 4, 8, 12)).astype(np.float32)
    s = summarize_maps(F, grid=(2, 3))
    assert list(s) == list(POOLINGS)
    np.testing.assert_allclose(s["global_max"], F.max((2, 3)))
    np.testing.assert_allclose(s["global_average"], F.mean((2, 3)), rtol=1e-6)
    np.testing.assert_allclose(s["max_pooling"].reshape(3, 4, 2, 3)[:, :, 1, 2], F[:, :, 4:, 8:].max((2, 3)))
    np.testing.assert_allclose(s["average_pooling"].reshape(3, 4, 2, 3)[:, :, 0, 0], F[:, :, :4, :4].mean((2, 3)),
                               rtol=1e-6)
    assert s["flatten"].shape == (3, 4 * 8 * 12)
