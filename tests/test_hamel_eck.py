"""The Hamel & Eck pipeline and the pymusicrbm command, end to end on a tiny generated GTZAN-shaped set."""
import json

import numpy as np
import pytest

from pymusicrbm import cli, datasets
from pymusicrbm.pipelines import hamel_eck

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
    w = hamel_eck.windows(frames, size=10, hop=5)
    starts = [0, 5, 10]  # windows of 10 frames every 5 that fit in 23 frames
    assert w.shape == (len(starts), 6)
    for row, s in zip(w, starts):
        np.testing.assert_allclose(row[:3], frames[s:s + 10].mean(0), rtol=1e-5)
        np.testing.assert_allclose(row[3:], frames[s:s + 10].var(0), rtol=1e-5)
    assert hamel_eck.windows(frames[:4], size=10, hop=5).shape == (1, 6)  # short clip: one window of all of it
    assert [len(x) for x in hamel_eck.window_index([23, 4], 10, 5)] == [3, 1]


def test_pipeline_writes_results_report_and_plots(tiny_run, tiny_set):
    out, res = tiny_run
    on_disk = json.loads((out / "results.json").read_text())
    for key in ("clip_accuracy", "window_accuracy", "frame_accuracy", "per_class_f1", "baselines", "models"):
        assert key in on_disk, key
    assert set(on_disk["per_class_f1"]) == set(tiny_set.classes)
    assert len(on_disk["clip_accuracy"]["folds"]) == 2
    # every clip is tested exactly once over the folds
    confusion = np.asarray(on_disk["models"]["dbn_svm"]["confusion"])
    assert confusion.sum() == len(tiny_set)
    for name in ("report.md", "confusion_dbn_svm.png", "tsne_dbn_windows.png", "first_layer_weights.png"):
        assert (out / name).stat().st_size > 0, name
    # far from a trained model's reach on 40 clips of 6 s, but a broken pipeline would sit at chance (0.1)
    assert on_disk["clip_accuracy"]["mean"] > 0.2
    assert on_disk["baselines"]["mfcc_svm"]["clip_accuracy"]["mean"] > 0.2


def test_resume_reuses_finished_folds(tiny_run, tiny_set):
    out, res = tiny_run
    fold1 = out / "folds" / "fold1" / "fold_results.json"
    before = fold1.stat().st_mtime_ns
    again = hamel_eck.run(tiny_set, out, resume=True, **TINY)
    assert fold1.stat().st_mtime_ns == before
    assert again["models"]["dbn_svm"]["clip_accuracy"] == res["models"]["dbn_svm"]["clip_accuracy"]


@pytest.mark.parametrize("kwargs, match", [
    (dict(folds=1), "folds must be >= 2"),
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


def test_cli_help_for_every_subcommand(capsys):
    for sub in ("demo", "dbn", "convrbm", "vae", "features"):
        with pytest.raises(SystemExit) as e:
            cli.main([sub, "--help"])
        assert e.value.code == 0
        assert "usage: pymusicrbm" in capsys.readouterr().out


def test_cli_reports_bad_input_in_one_line(tmp_path, capsys):
    assert cli.main(["dbn", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pymusicrbm dbn: error:") and "Traceback" not in err


def test_cli_features_caches(tiny_set, tmp_path, capsys):
    assert cli.main(["features", "--data", str(tiny_set.root), "--kind", "mfcc", "--cache-dir", str(tmp_path),
                     "--jobs", "1"]) == 0
    assert f"{len(tiny_set)} of {len(tiny_set)} clips" in capsys.readouterr().out
    assert len(list((tmp_path / "mfcc").glob("*.npy"))) == len(tiny_set)
