"""The ``pymusicrbm`` command: help, options shared by every study, one-line errors, a study and the demo run from
the command line (tiny settings), feature caching."""
import json

import pytest

from pymusicrbm import cli, datasets

TINY_DBN = ["--hidden", "16", "16", "--pretrain-epochs", "1", "--pretrain-frames", "3000", "--finetune-epochs", "2",
            "--pca-components", "16", "--window-seconds", "2", "--folds", "2", "--jobs", "1", "--threads", "1"]


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    return datasets.make_synthetic_genres(tmp_path_factory.mktemp("synth"), n_per_class=3, seconds=5.0, seed=3)


def test_cli_help_for_every_subcommand(capsys):
    for sub in ("demo", "dbn", "convrbm", "vae", "tags", "features", "predict", "embed"):
        with pytest.raises(SystemExit) as e:
            cli.main([sub, "--help"])
        assert e.value.code == 0
        out = capsys.readouterr().out
        assert "usage: pymusicrbm" in out
        if sub not in ("features", "predict", "embed"):
            assert "--folds" in out, sub
        if sub not in ("demo", "features", "predict", "embed"):
            assert "--save-model" in out, sub


@pytest.mark.parametrize("sub", ["dbn", "convrbm", "vae", "tags"])
def test_every_study_takes_the_shared_protocol_options(sub):
    args = cli.build_parser().parse_args([sub, "--data", "d", "--folds", "4", "--seed", "7", "--split", "a", "b",
                                          "--resume", "--quick"])
    opts = cli._options(args)
    assert opts["folds"] == 4 and opts["seed"] == 7 and opts["split_files"] == ["a", "b"]
    assert opts["resume"] is True and opts["quick"] is True
    # flags not given stay out, so the study's own defaults (or its quick settings) apply
    assert "device" not in opts and "num_threads" not in opts
    assert set(opts) - {"quick"} <= set(cli._pipeline(cli.STUDIES[sub][0]).DEFAULTS)


def test_cli_reports_bad_input_in_one_line(tmp_path, capsys):
    assert cli.main(["dbn", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pymusicrbm dbn: error:") and "Traceback" not in err


def test_cli_rejects_one_fold(tiny_set, tmp_path, capsys):
    assert cli.main(["vae", "--data", str(tiny_set.root), "--out", str(tmp_path / "o"), "--folds", "1"]) == 2
    assert "folds must be an integer >= 2" in capsys.readouterr().err


def test_cli_study_run_prints_the_headline_against_the_baseline(tiny_set, tmp_path, capsys):
    out = tmp_path / "o"
    assert cli.main(["dbn", "--data", str(tiny_set.root), "--out", str(out)] + TINY_DBN) == 0
    printed = capsys.readouterr().out
    res = json.loads((out / "results.json").read_text())
    acc = res["models"]["dbn_svm"]["clip_accuracy"]
    assert f"dbn_svm: clip accuracy {acc['mean']:.3f} ± {acc['std']:.3f}" in printed
    assert "vs MFCC+SVM" in printed and "2-fold stratified by clip" in printed
    assert res["config"]["folds"] == 2 and res["config"]["hidden"] == [16, 16]


def test_cli_features_caches(tiny_set, tmp_path, capsys):
    assert cli.main(["features", "--data", str(tiny_set.root), "--kind", "mfcc", "--cache-dir", str(tmp_path),
                     "--jobs", "1"]) == 0
    assert f"{len(tiny_set)} of {len(tiny_set)} clips" in capsys.readouterr().out
    assert len(list((tmp_path / "mfcc").glob("*.npy"))) == len(tiny_set)


def test_demo_runs_the_tagging_study_on_the_synthetic_tagged_set(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli.main(["demo", "--out", str(out), "--skip", "dbn", "convrbm", "vae", "--tag-clips", "12",
                     "--seconds", "4", "--folds", "2"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert set(res) == {"tags", "total_seconds"} and res["tags"]["study"] == "tagging"
    assert res["tags"]["dataset"]["n_clips"] == 12 and res["tags"]["protocol"]["folds"] == 2
    assert "macro ROC-AUC" in (out / "report.md").read_text() and (out / "tags" / "report.md").is_file()
    assert "dbn_logreg: macro ROC-AUC" in capsys.readouterr().out
