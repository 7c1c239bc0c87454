"""The ConvRBM study end to end on the small synthetic set: k-fold tables in the one schema, the configuration
chosen by inner CV on training clips only, the paired MFCC baseline, the report and figures."""
import json

import numpy as np
import pytest

from pymusicrbm.pipelines import conv_study

TINY = dict(bins=(24, 32), seconds=3.0, n_filters=(6,), filter_shapes=((3, 3),), epochs=2, batch_size=8,
            n_estimators=30, verbose=0, tsne=("global_max",), folds=2, inner_folds=2, n_jobs=1,
            classifiers=("random_forest", "svm"), poolings=conv_study.POOLINGS)  # logistic regression: the slowest, covered by classifiers tests


@pytest.fixture(scope="module")
def study(synthetic_small, tmp_path_factory):
    out = tmp_path_factory.mktemp("conv_out")
    return out, conv_study.run(synthetic_small, out, compare_training=True, **TINY)


def test_conv_study_end_to_end(study, synthetic_small):
    out, res = study
    on_disk = json.loads((out / "results.json").read_text())
    classes = synthetic_small.classes
    assert on_disk["study"] == "conv_study" and on_disk["headline"] == "convrbm"
    assert on_disk["protocol"]["kind"] == "stratified_kfold" and on_disk["protocol"]["folds"] == 2
    assert set(on_disk["tables"]) == {"24", "32"}
    for bins in ("24", "32"):
        assert set(on_disk["tables"][bins]) == set(conv_study.POOLINGS)
        for pooling in conv_study.POOLINGS:
            assert set(on_disk["tables"][bins][pooling]) == {"random_forest", "svm"}
            for cell in on_disk["tables"][bins][pooling].values():
                for metric in ("clip_accuracy", "f1_macro"):
                    assert set(cell[metric]) >= {"mean", "std", "folds"} and len(cell[metric]["folds"]) == 2
                    assert 0 <= cell[metric]["mean"] <= 1
                assert set(cell["per_class_f1"]) == set(classes)
                assert "paired" in cell and np.sum(cell["confusion"]) == len(synthetic_small)
        assert on_disk["feature_sizes"][bins]["global_max"] == 6
        assert on_disk["feature_sizes"][bins]["max_pooling"] == 6 * 16
    # 10 classes: chance is 0.1; the learned features do better with at least one summary
    assert max(on_disk["tables"][b][p]["random_forest"]["f1_macro"]["mean"] for b in ("24", "32")
               for p in conv_study.POOLINGS) > 0.2
    # the 2024 shortcut, trained on the same folds, is reported beside real CD
    assert on_disk["comparison"]["training"] == "reconstruction"
    assert set(on_disk["comparison"]["tables"]["32"]) == set(conv_study.POOLINGS)
    assert len(on_disk["histories"]) == 4 and all(len(h) == 2 for h in on_disk["histories"].values())
    report = (out / "report.md").read_text()
    assert "Comparison: reconstruction training" in report
    assert "| class | flatten | global_average | max_pooling | global_max | average_pooling |" in report
    assert "**overall (macro F1)**" in report and "Δ macro F1 vs MFCC+SVM" in report
    for f in ("loss_curves.png", "filters_24.png", "tsne_32_global_max.png", "confusion_convrbm.png",
              "models/cd_24_fold0.safetensors", "folds/fold1/fold_results.json"):
        assert (out / f).exists(), f


def test_reported_configuration_is_chosen_on_training_clips(study):
    """Each fold reports the configuration with the best inner-CV score, and its outer (test) score is that
    configuration's cell on that fold: not the best of the test scores."""
    out, res = study
    for k, sel in enumerate(res["selection"]):
        rec = json.loads((out / "folds" / f"fold{k}" / "fold_results.json").read_text())
        inner = rec["inner_f1"]
        best = max(v for b in inner.values() for p in b.values() for v in p.values())
        assert sel["inner_f1"] == best == inner[sel["bins"]][sel["pooling"]][sel["classifier"]]
        cell = res["tables"][sel["bins"]][sel["pooling"]][sel["classifier"]]
        assert res["models"]["convrbm"]["f1_macro"]["folds"][k] == pytest.approx(cell["f1_macro"]["folds"][k])


def test_unknown_option(synthetic_small, tmp_path):
    with pytest.raises(ValueError, match="unknown option"):
        conv_study.run(synthetic_small, tmp_path / "x", n_mels=64)
    with pytest.raises(ValueError, match="inner_folds must be an integer >= 2"):
        conv_study.run(synthetic_small, tmp_path / "x", inner_folds=1)


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
    # time_stats: per filter and frequency row, the mean, std and max over time, in that order
    ts = s["time_stats"].reshape(3, 4, 3, 8)
    np.testing.assert_allclose(ts[:, :, 0], F.mean(3), rtol=1e-5)
    np.testing.assert_allclose(ts[:, :, 1], F.std(3), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ts[:, :, 2], F.max(3))
    only = summarize_maps(F, grid=(2, 3), poolings=("time_stats", "global_max"))
    assert set(only) == {"time_stats", "global_max"}
    np.testing.assert_array_equal(only["time_stats"], s["time_stats"])


def test_poolings_option(synthetic_small, tmp_path):
    """Only the chosen summaries are scored, and the inner CV chooses among them only."""
    res = conv_study.run(synthetic_small, tmp_path / "p", **{**TINY, "bins": (24,), "classifiers": ("svm",),
                                                             "poolings": ("time_stats", "global_max")})
    assert set(res["tables"]["24"]) == {"global_max", "time_stats"}
    assert res["feature_sizes"]["24"]["time_stats"] == 6 * 3 * ((24 - 3 + 1) // 2)  # 6 filters x 3 statistics x 11 pooled rows
    assert {s["pooling"] for s in res["selection"]} <= {"global_max", "time_stats"}
    with pytest.raises(ValueError, match="poolings must be some of"):
        conv_study.run(synthetic_small, tmp_path / "x", poolings=("median",))
    with pytest.raises(ValueError, match="tsne poolings must be some of the poolings"):
        conv_study.run(synthetic_small, tmp_path / "x", poolings=("time_stats",), tsne=("global_max",))


def test_training_maps_is_the_middle_of_the_clip():
    X = np.arange(2 * 3 * 200, dtype=np.float32).reshape(2, 3, 200)
    assert conv_study.training_maps(X, None) is X
    n = 1 + int(1.0 * 22050) // 512  # 44 frames of hop 512 at 22050 Hz
    np.testing.assert_array_equal(conv_study.training_maps(X, 1.0), X[..., 78:78 + n])


def test_train_seconds_trains_on_the_middle_and_transforms_every_second(synthetic_small, tmp_path):
    """The fold's ConvRBM is the one fitted by hand on the middle train_seconds of its training clips (same seed),
    and its features still cover the whole `seconds` of every clip (the classifiers' inputs are unchanged in
    size: time_stats does not depend on the length)."""
    from pymusicrbm import audio
    from pymusicrbm.conv_rbm import ConvRBM

    opts = {**TINY, "bins": (24,), "classifiers": ("svm",), "poolings": ("time_stats", "max_pooling"),
            "tsne": ("time_stats",)}
    res = conv_study.run(synthetic_small, tmp_path / "t", train_seconds=1.0, **opts)
    rec = json.loads((tmp_path / "t" / "folds" / "fold0" / "fold_results.json").read_text())
    test = np.asarray(rec["tables"]["24"]["time_stats"]["svm"]["clip_ids"])
    train = np.setdiff1d(np.arange(len(synthetic_small)), test)
    mels = audio.extract(synthetic_small, "mel", {"n_mels": 24, "seconds": 3.0}, cache_dir=tmp_path / "t" / "cache",
                         verbose=0)
    X = np.stack([mels[i] for i in train]).astype(np.float32)
    ref = conv_study._make_model(conv_study._check_options({**conv_study.DEFAULTS, **opts, "train_seconds": 1.0}),
                                 "cd", 0).fit(conv_study.training_maps(X, 1.0))
    got = ConvRBM.load(tmp_path / "t" / "models" / "cd_24_fold0.safetensors")
    np.testing.assert_allclose(got.filters_, ref.filters_, rtol=1e-5, atol=1e-6)
    assert ref.filters_.shape[0] == 6 and not np.allclose(
        ref.filters_, conv_study._make_model(conv_study._check_options({**conv_study.DEFAULTS, **opts}), "cd", 0)
        .fit(X).filters_)  # trained on the whole 3 s, the filters differ
    # the features cover all 3 s: the test clips' max_pooling summary is that of the joined maps of the pieces
    F = conv_study._features(got, np.stack([mels[i] for i in test]).astype(np.float32), (4, 4), ("max_pooling",))
    assert got.crop_shape_[1] < 100 <= mels[0].shape[1]  # trained on 1 s, 3 s of frames transformed
    np.testing.assert_allclose(F["max_pooling"], conv_study.summarize_maps(
        conv_study.clip_maps(got, np.stack([mels[i] for i in test])), (4, 4))["max_pooling"])
    with pytest.raises(ValueError, match="train_seconds must be None or > 0"):
        conv_study.run(synthetic_small, tmp_path / "x", train_seconds=0.0, **opts)


def test_clip_maps_joins_pieces_of_the_training_width():
    from pymusicrbm.conv_rbm import ConvRBM

    rng = np.random.default_rng(0)
    model = ConvRBM(n_filters=3, filter_shape=(3, 3), pool=2, n_iter=1, batch_size=4, random_state=0).fit(
        rng.normal(size=(8, 10, 21)).astype(np.float32))
    w = model.crop_shape_[1]  # 20: the largest width <= 21 whose hidden width (18) the pool divides
    X = rng.normal(size=(2, 10, 47)).astype(np.float32)
    got = conv_study.clip_maps(model, X)
    pieces = [model.transform(X[..., s:s + w]) for s in (0, 20, 27)]  # the last piece ends at the clip's end
    np.testing.assert_array_equal(got, np.concatenate(pieces, axis=-1))
    np.testing.assert_array_equal(conv_study.clip_maps(model, X[..., :w]), model.transform(X[..., :w]))
    short = conv_study.clip_maps(model, X[..., :12])  # padded to the training width with the minimum
    assert short.shape == model.transform(X[..., :w]).shape


def test_whole_clips_of_different_lengths(tmp_path):
    """seconds='all': clips of different lengths, each transformed whole; the training pieces their middle."""
    from pymusicrbm import datasets

    ds = datasets.make_synthetic_genres(tmp_path / "d", n_per_class=4, seconds=3.0, seed=0)
    import soundfile as sf
    y, sr = sf.read(ds.paths[0])
    sf.write(ds.paths[0], y[: len(y) * 2 // 3], sr)  # one clip of 2 s
    opts = {**TINY, "bins": (24,), "classifiers": ("svm",), "poolings": ("time_stats",), "tsne": ("time_stats",),
            "seconds": "all"}
    res = conv_study.run(ds, tmp_path / "o", train_seconds=1.0, **opts)
    assert res["config"]["seconds"] == "all" and res["models"]["convrbm"]["clip_accuracy"]["mean"] >= 0
    X = conv_study._stack([np.ones((4, 10)), np.ones((4, 12))])
    assert X.dtype == object and conv_study.training_maps(X, 0.2).shape == (2, 4, 9)
    with pytest.raises(ValueError, match="needs train_seconds"):
        conv_study._check_options({**conv_study.DEFAULTS, "train_seconds": None})
    with pytest.raises(ValueError, match="'flatten' needs clips of one length"):
        conv_study.run(ds, tmp_path / "x", **{**opts, "poolings": conv_study.POOLINGS}, train_seconds=1.0)


def test_svm_grid_for_narrow_summaries():
    """Up to SVM_GRID_MAX_FEATURES columns the study's SVM is classifiers.fit_svm (C and gamma by CV on its training
    rows); wider ones, or svm_grid='none', the precomputed-kernel SVM with C=10."""
    from pymusicrbm.pipelines import classifiers

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 12)
    X = (rng.normal(size=(36, 20)) + y[:, None] * 0.7).astype(np.float32)
    opts = {**conv_study.DEFAULTS, "n_jobs": 1}
    est = conv_study.make_classifier("svm", 20, opts, 0).fit(X[::2], y[::2])
    ref, params = classifiers.fit_svm(X[::2], y[::2], np.arange(18), "small", 0)
    assert est.params_ == params and params["C"] in classifiers.SVM_GRIDS["small"]["C"]
    np.testing.assert_array_equal(est.predict(X[1::2]), ref.predict(X[1::2]))
    wide = conv_study.SVM_GRID_MAX_FEATURES + 1
    assert isinstance(conv_study.make_classifier("svm", wide, opts, 0), classifiers.PrecomputedRBFSVM)
    assert isinstance(conv_study.make_classifier("svm", 20, {**opts, "svm_grid": "none"}, 0),
                      classifiers.PrecomputedRBFSVM)


def test_time_estimate_is_printed_before_the_first_fold_trains(synthetic_small, tmp_path, capsys):
    opts = {**TINY, "bins": (24,), "poolings": ("global_average",), "classifiers": ("random_forest",),
            "n_estimators": 10, "tsne": ("global_average",), "verbose": 1}
    conv_study.run(synthetic_small, tmp_path, **opts)
    lines = [s for s in capsys.readouterr().out.splitlines() if s.startswith("[convrbm] on cpu: about ")]
    # once, for fold 1's 40 training clips (2 folds of 80 clips), 2 epochs x 2 folds of one model
    assert len(lines) == 1 and " s an epoch over 40 clips (3 s each); 2 epochs x 2 folds = " in lines[0]
    assert lines[0].endswith("of training; each fold's features and classifiers come on top")
