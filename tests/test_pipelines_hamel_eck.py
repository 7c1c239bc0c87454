"""The Hamel & Eck pipeline end to end on a tiny synthetic set: the one results schema, report, plots, resume."""
import json

import numpy as np
import pytest

from pymusicrbm import datasets
from pymusicrbm.pipelines import classifiers, hamel_eck

TINY = dict(folds=2, pretrain_epochs=2, pretrain_frames=5000, finetune_epochs=3, hidden=(16, 16), pca_components=16,
            window_seconds=2.0, n_jobs=1, verbose=0)


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    return datasets.make_synthetic_genres(tmp_path_factory.mktemp("synth"), n_per_class=4, seconds=6.0, seed=3)


@pytest.fixture(scope="module")
def tiny_run(tiny_set, tmp_path_factory):
    out = tmp_path_factory.mktemp("he_out")
    return out, hamel_eck.run(tiny_set, out, **TINY)


def test_windows_are_mean_and_variance_of_frame_runs():
    frames = np.random.default_rng(0).normal(size=(23, 3)).astype(np.float32)
    w = classifiers.windows(frames, size=10, hop=5)
    starts = [0, 5, 10]  # windows of 10 frames every 5 that fit in 23 frames
    assert w.shape == (len(starts), 6)
    for row, s in zip(w, starts):
        np.testing.assert_allclose(row[:3], frames[s:s + 10].mean(0), rtol=1e-5)
        np.testing.assert_allclose(row[3:], frames[s:s + 10].var(0), rtol=1e-5)
    assert classifiers.windows(frames[:4], size=10, hop=5).shape == (1, 6)  # short clip: one window of all of it
    assert [len(x) for x in classifiers.window_index([23, 4], 10, 5)] == [3, 1]


def test_frame_rows_gathers_the_same_rows_as_concatenating_first():
    rng = np.random.default_rng(1)
    per_clip = [rng.normal(size=(n, 4)).astype(np.float32) for n in (7, 1, 12, 5)]
    idx = [3, 0, 2]
    every = np.concatenate([per_clip[i] for i in idx])
    rows = rng.choice(len(every), 15, replace=False)  # unsorted, as the whitener's subset
    np.testing.assert_array_equal(hamel_eck.frame_rows(per_clip, idx, rows), every[rows])
    np.testing.assert_array_equal(hamel_eck.frame_rows(per_clip, idx, np.sort(rows)), every[np.sort(rows)])
    all_rows = hamel_eck.frame_rows(per_clip, idx)
    assert all_rows.dtype == np.float32
    np.testing.assert_array_equal(all_rows, every)


def test_pipeline_writes_results_report_and_plots(tiny_run, tiny_set):
    out, res = tiny_run
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["study"] == "hamel_eck" and on_disk["headline"] == "dbn_svm"
    assert set(on_disk["models"]) == {"dbn_svm", "dbn_pretrained_svm", "dbn_finetuned", "input_svm"}
    assert set(on_disk["baselines"]) == {"mfcc_svm"}
    head = on_disk["models"]["dbn_svm"]
    for key in ("clip_accuracy", "window_accuracy", "f1_macro"):
        assert set(head[key]) == {"mean", "std", "folds"} and len(head[key]["folds"]) == 2, key
        assert np.isclose(head[key]["mean"], np.mean(head[key]["folds"]))
    assert "frame_accuracy" in on_disk["models"]["dbn_finetuned"]
    assert set(head["per_class_f1"]) == set(tiny_set.classes)
    assert set(head["per_class_f1"]["rock"]) == {"mean", "std", "folds"}
    # the paired block: per-fold differences against the baseline on the same folds
    base = on_disk["baselines"]["mfcc_svm"]
    diffs = np.subtract(head["clip_accuracy"]["folds"], base["clip_accuracy"]["folds"])
    np.testing.assert_allclose(head["paired"]["clip_accuracy"]["folds"], diffs)
    assert 0 <= head["paired"]["mcnemar"]["p_value"] <= 1
    # every clip is tested exactly once over the folds
    assert np.sum(head["confusion"]) == len(tiny_set) == np.sum(base["confusion"])
    for name in ("report.md", "confusion_dbn_svm.png", "tsne_dbn_windows.png", "first_layer_weights.png"):
        assert (out / name).stat().st_size > 0, name
    report = (out / "report.md").read_text()
    assert "Δ accuracy vs MFCC+SVM" in report and "McNemar" in report
    # far from a trained model's reach on 40 clips of 6 s, but a broken pipeline would sit at chance (0.1)
    assert head["clip_accuracy"]["mean"] > 0.2
    assert base["clip_accuracy"]["mean"] > 0.2


def test_resume_reuses_finished_folds(tiny_run, tiny_set):
    out, res = tiny_run
    fold1 = out / "folds" / "fold1" / "fold_results.json"
    before = fold1.stat().st_mtime_ns
    again = hamel_eck.run(tiny_set, out, resume=True, **TINY)
    assert fold1.stat().st_mtime_ns == before
    assert again["models"]["dbn_svm"]["clip_accuracy"] == res["models"]["dbn_svm"]["clip_accuracy"]
    assert again["baselines"]["mfcc_svm"] == res["baselines"]["mfcc_svm"]


def test_input_row_classifies_the_whitened_input_not_the_dbn(tiny_run, tiny_set, tmp_path):
    # other DBN layers, the same whitening (same seed, same frames): the input row must not move
    _, res = tiny_run
    other = hamel_eck.run(tiny_set, tmp_path, **{**TINY, "hidden": (8,), "finetune": False})
    assert other["models"]["input_svm"]["clip_accuracy"] == res["models"]["input_svm"]["clip_accuracy"]
    assert other["models"]["input_svm"]["confusion"] == res["models"]["input_svm"]["confusion"]
    assert "dbn_finetuned" not in other["models"]
    without = hamel_eck.run(tiny_set, tmp_path / "no_input", **{**TINY, "finetune": False, "input_svm": False})
    assert set(without["models"]) == {"dbn_svm"}


@pytest.mark.parametrize("kwargs, match", [
    (dict(folds=1), "folds must be an integer >= 2"),
    (dict(split_files=["only_one.txt"]), "give train and test"),
    (dict(bogus=3), "unknown option"),
])
def test_bad_options(tiny_set, tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        hamel_eck.run(tiny_set, tmp_path, **kwargs)


def test_missing_data_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="does not exist|not found|no such"):
        hamel_eck.run(tmp_path / "nowhere", tmp_path / "out")


def test_unwritable_output_folder(tiny_set, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="not a writable folder"):
        hamel_eck.run(tiny_set, blocker / "out", **TINY)


def test_frame_file_reads_back_every_clip_and_gathers_like_a_list(tmp_path):
    rng = np.random.default_rng(2)
    per_clip = [rng.normal(size=(n, 3)).astype(np.float32) for n in (4, 9)] + [None] + \
        [rng.normal(size=(6, 3)).astype(np.float32)]
    store = hamel_eck.FrameFile(tmp_path / "f.f32", per_clip)
    assert len(store) == 4 and store[2] is None and [x is None for x in store] == [False, False, True, False]
    for i in (0, 1, 3):
        np.testing.assert_array_equal(store[i], per_clip[i])
    rows = rng.choice(19, 7, replace=False)
    np.testing.assert_array_equal(hamel_eck.frame_rows(store, [3, 0, 1], rows),
                                  hamel_eck.frame_rows(per_clip, [3, 0, 1], rows))
