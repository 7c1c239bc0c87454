"""The study contract (pipelines._study) and the shared classifiers: options, thread scope, folds and official
splits, the results schema, voting."""
import numpy as np
import pytest
import torch

from pymusicrbm import datasets
from pymusicrbm.pipelines import _study, classifiers

DEFAULTS = dict(_study.COMMON, epochs=10)
QUICK = dict(folds=2, epochs=1)


def test_merge_options_layers_defaults_quick_and_given():
    opts = _study.merge_options("s", DEFAULTS, QUICK, {"quick": True, "epochs": 3, "seed": None})
    assert opts["folds"] == 2 and opts["epochs"] == 3 and opts["seed"] == 0  # None: the default
    assert _study.merge_options("s", DEFAULTS, QUICK, {})["folds"] == 5
    with pytest.raises(ValueError, match=r"s.run: unknown option\(s\) \['epoch'\]"):
        _study.merge_options("s", DEFAULTS, QUICK, {"epoch": 3})
    with pytest.raises(ValueError, match="folds must be an integer >= 2"):
        _study.merge_options("s", DEFAULTS, QUICK, {"folds": 1})
    with pytest.raises(ValueError, match="num_threads"):
        _study.merge_options("s", DEFAULTS, QUICK, {"num_threads": 0})
    # an official split replaces the folds
    assert _study.merge_options("s", DEFAULTS, QUICK, {"folds": 1, "split_files": ["a", "b"]})["split_files"] == \
        ["a", "b"]


def test_thread_scope_restores_on_error():
    n = torch.get_num_threads()
    with pytest.raises(RuntimeError):
        with _study.thread_scope(1):
            assert torch.get_num_threads() == 1
            raise RuntimeError
    assert torch.get_num_threads() == n


def test_folds_partition_the_usable_clips_and_the_official_split(synthetic_small, tmp_path):
    ds = synthetic_small
    usable = np.setdiff1d(np.arange(len(ds)), [0, 1])  # two skipped clips
    splits, protocol = _study.make_splits(ds, usable, dict(DEFAULTS, folds=4))
    assert protocol["kind"] == "stratified_kfold" and len(splits) == 4
    tests = np.concatenate([te for _, te, _ in splits])
    assert sorted(tests) == sorted(usable)  # each usable clip is tested exactly once, skipped ones never
    for tr, te, va in splits:
        assert not set(tr) & set(te) and len(va) == 0
    names = np.asarray(ds.names)
    for part, idx in (("train", usable[:40]), ("test", usable[40:60]), ("valid", usable[60:])):
        (tmp_path / f"{part}.txt").write_text("\n".join(names[idx]))
    files = [str(tmp_path / f"{p}.txt") for p in ("train", "test", "valid")]
    (tr, te, va), = _study.make_splits(ds, usable, dict(DEFAULTS, split_files=files))[0]
    assert sorted(te) == sorted(usable[40:60]) and sorted(va) == sorted(usable[60:])
    assert sorted(tr) == sorted(np.concatenate([usable[:40], usable[60:]]))  # valid is part of train


def test_results_schema_of_a_model():
    classes = ["a", "b"]
    folds = [{"clip_ids": [0, 1, 2], "clip_true": [0, 1, 1], "clip_pred": [0, 1, 0], "window_true": [0, 1],
              "window_pred": [0, 0]},
             {"clip_ids": [3, 4], "clip_true": [0, 1], "clip_pred": [0, 1], "window_true": [1], "window_pred": [1]}]
    base = [{"clip_ids": [2, 1, 0], "clip_true": [1, 1, 0], "clip_pred": [1, 1, 0]},
            {"clip_ids": [3, 4], "clip_true": [0, 1], "clip_pred": [1, 1]}]
    e = _study.entry(folds, base, classes, bootstrap=False, seed=0)
    assert e["clip_accuracy"]["folds"] == pytest.approx([2 / 3, 1.0])
    assert e["window_accuracy"]["folds"] == pytest.approx([0.5, 1.0])
    assert e["per_class_f1"]["a"]["folds"] == pytest.approx([2 / 3, 1.0])
    assert e["confusion"] == [[2, 0], [1, 2]]
    assert e["paired"]["baseline"] == "mfcc_svm"
    assert e["paired"]["clip_accuracy"]["folds"] == pytest.approx([2 / 3 - 1.0, 1.0 - 0.5])
    assert (e["paired"]["mcnemar"]["b"], e["paired"]["mcnemar"]["c"]) == (1, 1)


def test_vote_and_window_scores():
    ids, pred = classifiers.vote([5, 5, 5, 2], np.array([[1, 0, 0], [0, 1, 0], [0, 1, 0], [0, 0, 1]]))
    assert ids.tolist() == [2, 5] and pred.tolist() == [2, 1]
    X = np.r_[np.zeros((5, 2)), np.ones((5, 2))] + np.random.default_rng(0).normal(0, 0.1, (10, 2))
    y = np.r_[np.zeros(5, int), np.full(5, 2)]  # class 1 absent from training
    for model in (classifiers.make("logistic_regression").fit(X, y), classifiers.make("svm").fit(X, y)):
        s = classifiers.window_scores(model, X, 3)
        assert s.shape == (10, 3) and (s.argmax(1) == y).all()


def test_classify_windows_votes_per_clip():
    rng = np.random.default_rng(0)
    g = np.repeat(np.arange(12), 4)
    y = g % 3
    X = y[:, None] + rng.normal(0, 0.3, (48, 3))
    train, test = g < 9, g >= 9
    r = classifiers.classify_windows("svm", (X[train], y[train], g[train]), (X[test], y[test], g[test]), 3)
    assert r["clip_ids"].tolist() == [9, 10, 11] and r["clip_true"].tolist() == [0, 1, 2]
    assert (r["clip_pred"] == r["clip_true"]).all() and set(r["params"]) == {"C", "gamma"}
    with pytest.raises(ValueError, match="classifier must be one of"):
        classifiers.make("tree")


def test_split_name_selects_a_named_split(synthetic_small):
    ds = synthetic_small.subset(np.arange(len(synthetic_small)))
    ds.splits = {"train": np.arange(0, 50), "valid": np.arange(50, 60), "test": np.arange(60, 80)}
    usable = np.setdiff1d(np.arange(len(ds)), [55, 70])  # one skipped valid clip, one skipped test clip
    opts = _study.merge_options("s", DEFAULTS, QUICK, {"split_name": "official"})
    (tr, te, va), = _study.make_splits(ds, usable, opts)[0]
    assert list(te) == [i for i in range(60, 80) if i != 70] and list(va) == [i for i in range(50, 60) if i != 55]
    assert sorted(tr) == sorted([*range(50), *va])
    assert _study.make_splits(ds, usable, opts)[1]["name"] == "official"
    with pytest.raises(ValueError, match="give one of them, not both"):
        _study.merge_options("s", DEFAULTS, QUICK, {"split_name": "official", "split_files": ["a", "b"]})
    with pytest.raises(ValueError, match="split_name must be one of"):
        _study.merge_options("s", DEFAULTS, QUICK, {"split_name": "filtered"})
    with pytest.raises(ValueError, match="has no official split"):
        _study.make_splits(synthetic_small, usable, opts)


def test_clip_statistics_against_a_loop():
    rng = np.random.default_rng(0)
    X, g = rng.normal(size=(11, 3)), np.array([5, 2, 5, 5, 2, 9, 2, 5, 2, 2, 5])
    F, ids = classifiers.clip_statistics(X, g)
    np.testing.assert_array_equal(ids, [2, 5, 9])
    for row, c in zip(F, ids):
        np.testing.assert_allclose(row, np.concatenate([X[g == c].mean(0), X[g == c].std(0)]), rtol=1e-5,
                                   atol=1e-6)
    assert F.dtype == np.float32 and np.all(F[2, 3:] == 0)  # one excerpt: std 0


def test_time_estimate_scales_the_probe_to_every_row_epoch_fold_and_model():
    """The probe fits one batch (warm-up), then the first 3 batches; the latter's time (a fake clock: 6 s) is scaled by rows / probe rows, then
    by epochs, folds and models; the CPU suggestion comes only at an hour or more."""
    seen = []
    ticks = iter([100.0, 106.0] * 4)
    opts = dict(_study.COMMON, epochs=10, batch_size=16, device="cpu")

    def estimate(n_rows, **kw):
        return _study.time_estimate("s", lambda rows, device: seen.append((rows, device.type)), n_rows, opts,
                                    suggestion="use a GPU", clock=lambda: next(ticks), **kw)

    line = estimate(480, rows="clips")
    assert seen == [(16, "cpu"), (48, "cpu")]  # one batch untimed (warm-up), then 3 batches of 16 timed
    # 6 s for 48 rows -> 60 s an epoch over 480; x 10 epochs x 5 folds = 50 min
    assert line == "[s] on cpu: about 60 s an epoch over 480 clips; 10 epochs x 5 folds = 50 min of training"
    double = estimate(960, rows="clips", models=2, early_stopping=True)
    assert double.startswith("[s] on cpu: about 120 s an epoch over 960 clips; up to 10 epochs x 5 folds x 2 "
                             "models = up to 3.3 h of training (early stopping may end sooner)")
    assert double.endswith("\n[s] that is long for a CPU: use a GPU")
    # fewer rows than 3 batches: the probe is every row; an official split is one fold
    small = _study.time_estimate("s", lambda rows, device: seen.append(rows), 20, {**opts, "split_files": ["a", "b"]},
                                 clock=lambda: next(ticks))
    assert seen[-1] == 20 and "about 6 s an epoch over 20 rows; 10 epochs x 1 fold = 1 min of training" in small
