"""Saved pipelines (pipelines.saved): the SVM stored as arrays, a study's --save-model folder reloaded in a fresh
process, predict / embed from Python and the command line, and unreadable files."""
import json
import subprocess
from collections import Counter
import sys
from pathlib import Path

import numpy as np
import pytest

from _audio_helpers import bad_file
from pymusicrbm import audio, cli, datasets
from pymusicrbm.pipelines import _study, conv_study, hamel_eck, load_pipeline, saved, tagging, vae_study

TINY = dict(folds=2, pretrain_epochs=1, pretrain_frames=3000, hidden=(12, 12), pca_components=12,
            window_seconds=2.0, n_jobs=1, verbose=0, num_threads=1)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tagged(tmp_path_factory):
    return datasets.make_synthetic_tags(tmp_path_factory.mktemp("tags"), n_clips=16, seconds=5.0, seed=2)


@pytest.fixture(scope="module")
def tag_model(tagged, tmp_path_factory):
    """(in-memory pipeline, its saved folder): the tagging study's final pipeline, fitted as --save-model does."""
    opts = _study.merge_options("tagging", tagging.DEFAULTS, {}, TINY)
    opts["hop"] = 1024
    feats = {"dft": audio.extract(tagged, "dft", {"log": True}, n_jobs=1, verbose=0)}
    pipe = saved.fit_tagging(feats, np.arange(len(tagged)), tagged, opts)
    return pipe, pipe.save(tmp_path_factory.mktemp("model") / "tags_model")


def _fresh_process(code: str) -> None:
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=300)


@pytest.mark.parametrize("n_classes", [2, 4])
def test_svm_arrays_decide_as_sklearn(n_classes):
    rng = np.random.default_rng(n_classes)
    y = rng.integers(0, n_classes, 120)
    X = rng.normal(size=(120, 5)) + y[:, None] * 0.7
    model, _ = hamel_eck.classifiers.fit_svm(X, y, np.arange(120) // 4, "small", 0)
    arrays = saved.SVMArrays.from_sklearn(model)
    Xt = rng.normal(size=(30, 5)) + 1.0
    np.testing.assert_allclose(arrays.decision_function(Xt), model.decision_function(Xt), rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_linear_arrays_give_sklearns_probabilities(n_classes):
    rng = np.random.default_rng(n_classes)
    y = rng.integers(0, n_classes, 90)
    X = rng.normal(size=(90, 4)) + y[:, None]
    model, _ = hamel_eck.classifiers.fit_logistic_regression(X, y, np.arange(90) // 3)
    Xt = rng.normal(size=(20, 4))
    np.testing.assert_allclose(saved.LinearArrays.from_sklearn(model).predict_proba(Xt), model.predict_proba(Xt),
                               rtol=1e-9, atol=1e-12)


def test_saved_tagger_in_a_fresh_process_predicts_as_in_memory(tag_model, tagged, tmp_path):
    pipe, folder = tag_model
    assert sorted(p.name for p in folder.iterdir()) == ["classifier.safetensors", "model.safetensors",
                                                        "pipeline.json", "whitener.safetensors"]
    files = [str(p) for p in tagged.paths[:5]]
    mine = pipe.predict_scores(files, verbose=0)
    assert mine.shape == (5, len(tagged.tags)) and ((mine >= 0) & (mine <= 1)).all()
    _fresh_process(
        "import json, numpy as np; from pymusicrbm.pipelines import load_pipeline\n"
        f"p = load_pipeline({str(folder)!r}); f = {files!r}\n"
        f"np.save({str(tmp_path / 's.npy')!r}, p.predict_scores(f, verbose=0, batch_size=2))\n"
        f"np.save({str(tmp_path / 'e.npy')!r}, p.embed(f, verbose=0))\n"
        f"json.dump(p.predict(f, verbose=0), open({str(tmp_path / 'p.json')!r}, 'w'))")
    np.testing.assert_array_equal(np.load(tmp_path / "s.npy"), mine)
    np.testing.assert_array_equal(np.load(tmp_path / "e.npy"), pipe.embed(files, verbose=0))
    tags = json.loads((tmp_path / "p.json").read_text())
    assert tags == [[pipe.labels[j] for j in np.argsort(-s, kind="stable") if s[j] >= 0.5] for s in mine]
    # the embedding is the clip's windows averaged: the features the classifier scores
    W = pipe._windows(files[:1], verbose=0)[0]
    np.testing.assert_allclose(pipe.embed(files[:1], verbose=0)[0], W.mean(0), rtol=1e-6)
    np.testing.assert_allclose(mine[0], pipe.classifier.predict_proba(W).mean(0), rtol=1e-12)


def test_unreadable_files_raise_or_are_skipped_by_name(tag_model, tagged, tmp_path):
    pipe, _ = tag_model
    broken = bad_file(tmp_path, "corrupt")
    with pytest.raises(audio.AudioError, match="corrupt.wav"):
        pipe.predict([tagged.paths[0], broken], verbose=0)
    with pytest.warns(audio.AudioWarning, match="corrupt.wav"):
        E = pipe.embed([tagged.paths[0], broken, tmp_path / "missing.wav"], verbose=0, on_error="skip")
    assert np.isfinite(E[0]).all() and np.isnan(E[1:]).all()
    assert [Path(p).name for p, _ in pipe.skipped_] == ["corrupt.wav", "missing.wav"]
    with pytest.warns(audio.AudioWarning):
        assert pipe.predict([broken, tagged.paths[0]], verbose=0, on_error="skip")[0] is None
    with pytest.raises(ValueError, match="on_error"):
        pipe.embed([tagged.paths[0]], on_error="ignore")


def test_load_pipeline_errors(tag_model, tmp_path):
    with pytest.raises(ValueError, match="holds no saved pipeline"):
        load_pipeline(tmp_path)
    _, folder = tag_model
    spec = json.loads((folder / "pipeline.json").read_text())
    (tmp_path / "pipeline.json").write_text(json.dumps({**spec, "version": 99}))
    with pytest.raises(ValueError, match="version"):
        load_pipeline(tmp_path)


def test_cli_predict_and_embed(tag_model, tagged, tmp_path, capsys):
    _, folder = tag_model
    good = [str(p) for p in tagged.paths[:3]]
    broken = str(bad_file(tmp_path, "zero_length"))
    rc = cli.main(["predict", "--model", str(folder), *good, broken, "--out", str(tmp_path / "p.csv"), "--quiet"])
    out, err = capsys.readouterr()
    assert rc == 1 and "zero_length.wav" in err and "skipped" in err  # the others are still predicted
    lines = (tmp_path / "p.csv").read_text().splitlines()
    assert lines[0].split(",")[:2] == ["path", "prediction"] and len(lines) == 4
    assert all(p in out for p in good)
    assert cli.main(["predict", "--model", str(folder), *good, "--out", str(tmp_path / "p.json"), "--quiet"]) == 0
    rows = json.loads((tmp_path / "p.json").read_text())["predictions"]
    pipe = load_pipeline(folder)
    assert [r["prediction"] for r in rows] == pipe.predict(good, verbose=0)
    assert cli.main(["embed", "--model", str(folder), *good, broken, "--out", str(tmp_path / "e.npy"),
                     "--batch-size", "2", "--cache-dir", str(tmp_path / "cache"), "--quiet"]) == 1
    E = np.load(tmp_path / "e.npy")
    np.testing.assert_allclose(E, pipe.embed(good, verbose=0), rtol=1e-6)
    assert (tmp_path / "e.txt").read_text().split() == good
    assert len(list((tmp_path / "cache" / "dft").glob("*.npy"))) == 3
    assert cli.main(["embed", "--model", str(folder), good[0], "--out", str(tmp_path / "e.csv")]) == 2
    assert "--out must end in .npy" in capsys.readouterr().err
    assert cli.main(["predict", "--model", str(tmp_path), good[0]]) == 2
    assert "holds no saved pipeline" in capsys.readouterr().err


def test_genre_study_saves_a_pipeline_that_predicts_genres(tmp_path):
    ds = datasets.make_synthetic_genres(tmp_path / "data", n_per_class=3, seconds=5.0, seed=4)
    ds = ds.subset(np.flatnonzero(np.isin(ds.labels, [1, 6])))  # classical and metal
    ds = datasets.AudioDataset(ds.paths, (ds.labels == 6).astype(int), ["classical", "metal"], ds.root)
    model_dir = tmp_path / "genre_model"
    hamel_eck.run(ds, tmp_path / "out", save_model=str(model_dir), finetune_epochs=2, **dict(TINY, folds=3))
    pipe = load_pipeline(model_dir)
    assert pipe.task == "genres" and pipe.labels == ["classical", "metal"] and pipe.front_end.finetuned
    files = [str(p) for p in ds.paths]
    pred = pipe.predict(files, verbose=0)
    assert set(pred) <= {"classical", "metal"}
    # trained on these clips, two very different genres: the pipeline tells them apart
    assert np.mean([p == ds.classes[y] for p, y in zip(pred, ds.labels)]) >= 5 / 6
    _fresh_process(
        "import numpy as np; from pymusicrbm.pipelines import load_pipeline\n"
        f"np.save({str(tmp_path / 's.npy')!r}, load_pipeline({str(model_dir)!r}).predict_scores({files!r}, "
        "verbose=0))")
    np.testing.assert_array_equal(np.load(tmp_path / "s.npy"), pipe.predict_scores(files, verbose=0))


def test_vae_study_saves_a_pipeline_that_reloads_identically(tmp_path):
    ds = datasets.make_synthetic_genres(tmp_path / "data", n_per_class=2, seconds=4.0, seed=5)
    model_dir = tmp_path / "vae_model"
    vae_study.run(ds, tmp_path / "out", save_model=str(model_dir), n_mels=64, seconds=4.0, excerpt_frames=64,
                  excerpt_hop=64, channels="8,16,16", latent_dim=4, epochs=1, kl_warmup_epochs=1, batch_size=16,
                  folds=2, grid_search=False, n_generate=1, verbose=0, n_jobs=1, num_threads=1, device="cpu",
                  classifier="logreg")
    pipe = load_pipeline(model_dir)
    assert pipe.task == "genres" and pipe.labels == ds.classes and isinstance(pipe.classifier, saved.LinearArrays)
    files = [str(p) for p in ds.paths[::3]]
    S = pipe.predict_scores(files, verbose=0)
    assert S.shape == (len(files), 10) and np.allclose(S.sum(1), 1)  # mean of the excerpts' probabilities
    assert pipe.embed(files[:1], verbose=0).shape == (1, 4)  # the latent means, averaged over excerpts
    _fresh_process(
        "import numpy as np; from pymusicrbm.pipelines import load_pipeline\n"
        f"np.save({str(tmp_path / 's.npy')!r}, load_pipeline({str(model_dir)!r}).predict_scores({files!r}, "
        "verbose=0))")
    np.testing.assert_array_equal(np.load(tmp_path / "s.npy"), S)


def test_forest_and_precomputed_svm_arrays_agree_with_the_fitted_models():
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(7)
    y = rng.integers(0, 3, 150)
    X = rng.normal(size=(150, 8)) + y[:, None] * 0.5
    Xt = rng.normal(size=(40, 8))
    rf = RandomForestClassifier(25, random_state=0).fit(X, y)
    np.testing.assert_array_equal(saved.ForestArrays.from_sklearn(rf).predict_proba(Xt), rf.predict_proba(Xt))
    svm = hamel_eck.classifiers.PrecomputedRBFSVM().fit(X, y)
    np.testing.assert_allclose(saved.SVMArrays.from_precomputed(svm).decision_function(Xt),
                               svm.decision_function(Xt), rtol=1e-4, atol=1e-5)  # its kernel is float32


def test_convrbm_study_saves_its_chosen_configuration(tmp_path):
    ds = datasets.make_synthetic_genres(tmp_path / "data", n_per_class=3, seconds=3.0, seed=6)
    model_dir = tmp_path / "conv_model"
    res = conv_study.run(ds, tmp_path / "out", save_model=str(model_dir), bins=(24,), seconds=3.0, n_filters=(6,),
                         filter_shapes=((3, 3),), epochs=1, batch_size=8, n_estimators=20, verbose=0,
                         tsne=("time_stats",), folds=3, inner_folds=2, n_jobs=1, classifiers=("random_forest", "svm"))
    pipe = load_pipeline(model_dir)
    assert pipe.task == "genres" and pipe.feature["params"]["n_mels"] == 24
    votes = Counter((s["bins"], s["pooling"], s["classifier"]) for s in res["selection"])
    b, p, c = votes.most_common(1)[0][0]  # the configuration the inner CV chose on most folds
    assert (pipe.info["bins"], pipe.front_end.pooling, pipe.info["classifier"]) == (int(b), p, c)
    files = [str(p) for p in ds.paths[::4]]
    S = pipe.predict_scores(files, verbose=0)
    assert S.shape == (len(files), 10) and np.isfinite(S).all()
    _fresh_process(
        "import numpy as np; from pymusicrbm.pipelines import load_pipeline\n"
        f"np.save({str(tmp_path / 's.npy')!r}, load_pipeline({str(model_dir)!r}).predict_scores({files!r}, "
        "verbose=0))")
    np.testing.assert_array_equal(np.load(tmp_path / "s.npy"), S)


def test_convrbm_whole_clip_pipeline_with_the_grid_svm(tmp_path):
    """Whole clips, a model trained on 1 s, time_stats and the grid-searched SVM: the saved pipeline reads whole
    files, transforms them in pieces of the training width and scores them as the fitted SVM does."""
    ds = datasets.make_synthetic_genres(tmp_path / "data", n_per_class=3, seconds=3.0, seed=6)
    model_dir = tmp_path / "conv_model"
    conv_study.run(ds, tmp_path / "out", save_model=str(model_dir), bins=(24,), seconds="all", train_seconds=1.0,
                   n_filters=(6,), filter_shapes=((3, 3),), epochs=1, batch_size=8, verbose=0, tsne=("time_stats",),
                   folds=3, inner_folds=2, n_jobs=1, classifiers=("svm",), poolings=("time_stats",))
    pipe = load_pipeline(model_dir)
    assert pipe.feature["params"]["seconds"] is None and isinstance(pipe.classifier, saved.SVMArrays)
    mel = audio.mel_spectrogram(audio.load_audio(ds.paths[0]), n_mels=24, seconds=None)
    F = conv_study.summarize_maps(conv_study.clip_maps(pipe.front_end.model, mel[None]), (4, 4), ("time_stats",))
    np.testing.assert_allclose(pipe.front_end.windows(mel), F["time_stats"])
    assert F["time_stats"].shape == (1, 6 * 3 * ((24 - 3 + 1) // 2))
    S = pipe.predict_scores([str(ds.paths[0])], verbose=0)
    assert S.shape == (1, 10) and np.isfinite(S).all()
