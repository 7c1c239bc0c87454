"""The VAE study end to end on a small synthetic set: the one results schema with the paired MFCC baseline, the
report's links (images, generated audio), resume, an official split with bootstrap intervals, bad options."""
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from pymusicrbm import audio, datasets
from pymusicrbm.pipelines import vae_study

OPTS = dict(n_mels=64, seconds=6.0, excerpt_frames=64, excerpt_hop=64, channels="8,16,16", latent_dim=8, epochs=3,
            kl_warmup_epochs=1, batch_size=16, folds=2, grid_search=False, n_generate=1, verbose=0, n_jobs=1,
            num_threads=1)


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return datasets.make_synthetic_genres(tmp_path_factory.mktemp("synth"), n_per_class=4, seconds=6.0, seed=0)


@pytest.fixture(scope="module")
def study(ds, tmp_path_factory):
    out = tmp_path_factory.mktemp("vae_out")
    return out, vae_study.run(ds, out, cache_dir=str(out / "cache"), **OPTS)


def test_study_end_to_end(ds, study):
    out, res = study
    saved = json.loads((out / "results.json").read_text())
    classes = list(datasets.GTZAN_GENRES)
    assert saved["study"] == "vae_study" and saved["headline"] == "vae_svm"
    assert set(saved["models"]) == {"vae_svm", "vae_logreg"}
    assert set(saved["baselines"]) == {"mfcc_svm", "pca_svm", "mel_stats_svm"}
    head = saved["models"]["vae_svm"]
    for key in ("clip_accuracy", "window_accuracy", "f1_macro"):
        assert set(head[key]) == {"mean", "std", "folds"} and len(head[key]["folds"]) == 2
        assert 0.0 <= head[key]["mean"] <= 1.0
    assert list(head["per_class_f1"]) == classes
    base = saved["baselines"]["mfcc_svm"]
    np.testing.assert_allclose(head["paired"]["f1_macro"]["folds"],
                               np.subtract(head["f1_macro"]["folds"], base["f1_macro"]["folds"]))
    for fold in saved["vae"]["clips_per_fold"]:
        # 2 training clips a class: too few to hold one a class out for early stopping
        assert fold["train"] + fold["valid"] + fold["test"] == len(ds) and fold["valid"] == 0
    assert int(np.sum(head["confusion"])) == len(ds)
    # every image and audio file the report links to exists; every wav is real audio
    report = (out / "report.md").read_text()
    assert "Δ accuracy vs MFCC+SVM" in report
    links = [s.split(")")[0] for s in report.split("](")[1:]]
    assert links and all((out / link).is_file() for link in links)
    wavs = sorted((out / "audio").glob("*.wav"))
    assert len(wavs) >= 6
    for w in wavs:
        y, sr = sf.read(w)
        assert sr == audio.SR and np.isfinite(y).all() and np.abs(y).max() > 0.01


def test_resume_reuses_models(ds, study):
    out, res = study
    before = (out / "folds" / "fold1" / "fold_results.json").stat().st_mtime_ns
    again = vae_study.run(ds, out, resume=True, cache_dir=str(out / "cache"), **OPTS)
    assert (out / "folds" / "fold1" / "fold_results.json").stat().st_mtime_ns == before
    assert again["models"]["vae_svm"]["clip_accuracy"] == res["models"]["vae_svm"]["clip_accuracy"]
    assert again["vae"]["recon_mse_db"] == res["vae"]["recon_mse_db"]


def test_official_split_gives_one_fold_with_bootstrap_intervals(ds, tmp_path):
    clip_no = np.array([int(p.stem.split(".")[1]) for p in ds.paths])
    names = np.asarray(ds.names)
    files = []
    for part, sel in (("train", clip_no < 2), ("test", clip_no == 3), ("valid", clip_no == 2)):
        files.append(tmp_path / f"{part}.txt")
        files[-1].write_text("\n".join(names[sel]) + "\n")
    res = vae_study.run(ds, tmp_path / "out", split_files=files, cache_dir=str(tmp_path / "cache"),
                        **{**OPTS, "folds": None})
    assert res["protocol"]["kind"] == "official_split"
    assert res["vae"]["clips_per_fold"] == [{"train": 20, "valid": 10, "test": 10}]
    head = res["models"]["vae_svm"]
    assert head["clip_accuracy"]["std"] == 0 and len(head["clip_accuracy"]["folds"]) == 1
    lo, hi = head["clip_accuracy"]["ci95"]
    assert lo <= head["clip_accuracy"]["mean"] <= hi
    assert "ci95" in head["paired"]["clip_accuracy"]


def test_study_bad_options(ds, tmp_path):
    with pytest.raises(ValueError, match="shorter than the receptive field"):
        vae_study.run(ds, tmp_path, excerpt_frames=32, verbose=0)
    with pytest.raises(ValueError, match="unknown option"):
        vae_study.run(ds, tmp_path, epoch=3)
    with pytest.raises(ValueError, match="n_mels must be 64 or 96"):
        vae_study.run(ds, tmp_path, n_mels=40)
    with pytest.raises(ValueError, match="folds must be an integer >= 2"):
        vae_study.run(ds, tmp_path, folds=1)


def test_thread_setting_is_restored(ds, tmp_path):
    n = torch.get_num_threads()
    with pytest.raises(ValueError):
        vae_study.run(ds, tmp_path, num_threads=1, excerpt_frames=32, verbose=0)
    assert torch.get_num_threads() == n


def test_time_estimate_before_training_scales_to_every_epoch_and_fold():
    X = np.random.default_rng(0).normal(-40.0, 10.0, (48, 64, 64)).astype(np.float32)
    opts = vae_study._options({**OPTS, "channels": (8, 16, 16), "device": "cpu"})
    line = vae_study._time_estimate(X, opts)
    assert line.startswith("[vae] on cpu: about ") and "over 48 excerpts" in line
    assert "up to 3 epochs x 2 folds" in line and "--quick" not in line  # seconds, not hours: no advice
    # a run that would take hours on a CPU gets the suggestion before it starts
    long = vae_study._time_estimate(X, {**opts, "epochs": 10**7})
    assert "up to 10000000 epochs x 2 folds" in long and "--quick" in long and "--device cuda" in long


def test_clip_statistics_features(ds, study, tmp_path):
    """clip_features='stats': one row a clip, the mean and std of its excerpts' features; the mel-stats baseline's
    predictions match the same features and SVM built here by hand from the fold's clips (same VAE, reloaded)."""
    import shutil

    from pymusicrbm.pipelines import classifiers

    out, _ = study
    shutil.copytree(out / "checkpoints", tmp_path / "checkpoints")
    res = vae_study.run(ds, tmp_path, resume=True, cache_dir=str(out / "cache"), clip_features="stats", **OPTS)
    assert "mean and std of the features of its excerpts" in res["protocol"]["description"]
    for name in ("vae_svm", "vae_logreg"):  # one row a clip: excerpt ("window") and clip accuracy coincide
        assert res["models"][name]["window_accuracy"]["folds"] == res["models"][name]["clip_accuracy"]["folds"]
    mels = audio.extract(ds, "mel", {"n_mels": 64, "seconds": 6.0}, cache_dir=out / "cache", verbose=0)
    labels = np.asarray(ds.labels)

    def clip_rows(idx):
        X = [vae_study._excerpts(mels, [i], 64, 64)[0] for i in idx]
        return np.stack([np.concatenate([f.mean(0), f.std(0)]) for f in
                         (np.hstack([x.mean(2), x.std(2)]) for x in X)])

    for k in range(2):
        rec = json.loads((tmp_path / "folds" / f"fold{k}" / "fold_results.json").read_text())["baselines"]
        test = np.asarray(rec["mel_stats_svm"]["clip_ids"])
        assert len(rec["mel_stats_svm"]["window_true"]) == len(test)
        train = np.setdiff1d(np.arange(len(ds)), test)
        model, _ = classifiers.fit_svm(clip_rows(train), labels[train], train, "none")
        np.testing.assert_array_equal(rec["mel_stats_svm"]["clip_pred"], model.predict(clip_rows(test)))
    with pytest.raises(ValueError, match="clip_features must be 'vote' or 'stats'"):
        vae_study.run(ds, tmp_path / "x", clip_features="median", **OPTS)


def test_whole_clips_equal_their_seconds_when_clips_are_that_long(ds, study, tmp_path):
    """seconds='all' reads whole clips: on clips of exactly 6 s, the run with seconds=6.0 (same seed, same VAE)."""
    out, res = study
    whole = vae_study.run(ds, tmp_path, cache_dir=str(tmp_path / "cache"), **{**OPTS, "seconds": "all"})
    assert whole["config"]["seconds"] == "all" and "whole clips" in (tmp_path / "report.md").read_text()
    assert whole["models"]["vae_svm"]["clip_accuracy"] == res["models"]["vae_svm"]["clip_accuracy"]
    assert whole["vae"]["recon_mse_db"] == pytest.approx(res["vae"]["recon_mse_db"], rel=1e-5)
    with pytest.raises(ValueError, match="seconds must be > 0 or 'all'"):
        vae_study.run(ds, tmp_path / "x", **{**OPTS, "seconds": "half"})


def test_saved_front_end_with_clip_statistics(study):
    """The saved pipeline's VAE front end gives the study's clip row: mean and std of the excerpts' latents."""
    from pymusicrbm.pipelines import classifiers
    from pymusicrbm.pipelines.saved import VAEFrontEnd
    from pymusicrbm.vae import ConvVAE, cut_excerpts

    out, _ = study
    vae = ConvVAE.load(out / "checkpoints" / "vae_fold0.safetensors")
    mel = np.random.default_rng(0).normal(-40, 10, (64, 300)).astype(np.float32)
    F = vae.transform(cut_excerpts(mel, 64, 64))
    row = VAEFrontEnd(vae, 64, 64, False, clip_stats=True).windows(mel)
    assert row.shape == (1, 2 * F.shape[1])
    np.testing.assert_allclose(row[0], np.concatenate([F.mean(0), F.std(0)]), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(VAEFrontEnd(vae, 64, 64, False).windows(mel), F)
    assert VAEFrontEnd(vae, 64, 64, False, clip_stats=True).save(out / "probe")["clip_stats"] is True
    assert classifiers.clip_statistics(F, np.zeros(len(F)))[0].shape == row.shape
