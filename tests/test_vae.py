"""ConvVAE and the VAE study: learning (against trivial references), generation, checkpoints, bad input.

Tiny models on a small synthetic genre set (6 clips of 6 s per class, 32 mel bands) keep the file fast.
"""
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from pymusicrbm import audio, datasets
from pymusicrbm.pipelines import vae_study
from pymusicrbm.vae import ConvVAE, cut_excerpts, receptive_field

N_MELS, N_FRAMES = 32, 64
TINY = dict(n_mels=N_MELS, n_frames=N_FRAMES, latent_dim=8, channels=(8, 16, 16), batch_size=16,
            kl_warmup_epochs=3, verbose=0, device="cpu")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # Tiny convolutions: synchronising two threads costs more than it saves (and much more on a busy machine).
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    ds = datasets.make_synthetic_genres(root, n_per_class=6, seconds=6.0, seed=0)
    mels = audio.extract(ds, "mel", {"n_mels": N_MELS, "seconds": 6.0}, n_jobs=1, verbose=0)
    clip_no = np.array([int(p.stem.split(".")[1]) for p in ds.paths])

    def excerpts(sel):
        X, y, g = [], [], []
        for i in np.flatnonzero(sel):
            e = cut_excerpts(mels[i], N_FRAMES, N_FRAMES // 2)
            X.append(e)
            y += [ds.labels[i]] * len(e)
            g += [i] * len(e)
        return np.concatenate(X), np.array(y), np.array(g)

    Xtr, ytr, _ = excerpts(clip_no < 4)  # clips 0-3 of each class train, clips 4-5 are held out
    Xte, yte, gte = excerpts(clip_no >= 4)
    return {"root": root, "ds": ds, "Xtr": Xtr, "ytr": ytr, "Xte": Xte, "yte": yte, "gte": gte}


@pytest.fixture(scope="module")
def trained(synth):
    return ConvVAE(**TINY, n_iter=20, random_state=0).fit(synth["Xtr"])


# ------------------------------------------------------------------------------------------ learning
def test_reconstruction_beats_mean_spectrogram(synth, trained):
    Xtr, Xte = synth["Xtr"], synth["Xte"]
    mse_vae = np.mean((trained.reconstruct(Xte) - Xte) ** 2)
    mse_mean = np.mean((Xtr.mean(0) - Xte) ** 2)  # the best constant prediction from the training data
    assert mse_vae < 0.7 * mse_mean, (mse_vae, mse_mean)
    # training raised the ELBO, and the best epoch's weights are the ones kept
    h = trained.history_
    assert h["elbo"][-1] > h["elbo"][0]
    # warm-up epochs (KL weight < beta) always replace the best weights; from the last one on, the best ELBO wins
    last_warmup = TINY["kl_warmup_epochs"] - 2
    # best_epoch_ counts epochs from 1, as n_iter_ (in every estimator)
    assert trained.best_epoch_ == int(np.argmax(h["elbo_valid"][last_warmup:])) + last_warmup + 1


def test_latents_classify_genres_far_above_chance(synth, trained):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    clf = make_pipeline(StandardScaler(), SVC(C=10.0)).fit(trained.transform(synth["Xtr"]), synth["ytr"])
    acc = np.mean(clf.predict(trained.transform(synth["Xte"])) == synth["yte"])
    chance = 1 / len(synth["ds"].classes)
    assert acc >= 3 * chance, acc


def test_inference_shapes_and_consistency(synth, trained):
    X = synth["Xte"][:5]
    mu = trained.transform(X)
    both = trained.transform(X, return_logvar=True)
    assert mu.shape == (5, 8) and both.shape == (5, 16)
    np.testing.assert_array_equal(both[:, :8], mu)
    assert np.isfinite(both).all()
    R = trained.reconstruct(X)
    assert R.shape == X.shape
    np.testing.assert_allclose(R, trained.decode(mu), rtol=1e-5, atol=1e-4)
    S1, z1 = trained.sample(3, random_state=5)
    S2, z2 = trained.sample(3, random_state=5)
    np.testing.assert_array_equal(S1, S2)
    assert S1.shape == (3, N_MELS, N_FRAMES) and z1.shape == (3, 8)
    # decoded spectrograms stay inside the dB range of the training data
    assert S1.min() >= synth["Xtr"].min() - 1e-4 and S1.max() <= synth["Xtr"].max() + 1e-4
    steps = trained.interpolate(X[0], X[1], n_steps=4)
    np.testing.assert_allclose(steps[[0, -1]], trained.decode(mu[:2]), rtol=1e-5, atol=1e-4)


# ------------------------------------------------------------------------------------------ generation
def _close(mel, back):
    """(correlation, mean absolute dB error) on ref='max' terms: mel_spectrogram puts the loudest bin at 0 dB and
    clamps at -80 dB. Griffin-Lim typically misses by 1-2.5 dB here; another generated clip differs by 8-20 dB.
    Smooth generated spectrograms have little variance, so the correlation bound is looser than for music."""
    ref = np.maximum(mel - mel.max(), -80.0)
    corr = np.corrcoef(ref.ravel(), back.ravel())[0, 1]
    return corr, np.mean(np.abs(ref - back))


def test_mel_audio_mel_round_trip_of_a_generated_clip(trained):
    mel = trained.sample(1, random_state=1)[0][0]
    y = audio.mel_to_audio(mel)
    back = audio.mel_spectrogram(y, n_mels=N_MELS, seconds=None)
    assert back.shape == mel.shape
    corr, mae = _close(mel, back)
    assert corr > 0.7 and mae < 4.0, (corr, mae)


def test_generated_wav_files(trained, tmp_path):
    mels = list(trained.sample(3, random_state=2)[0])
    paths = vae_study._write_wavs([(tmp_path / f"g{i}.wav", m) for i, m in enumerate(mels)], audio.SR)
    for i, (path, mel) in enumerate(zip(paths, mels)):
        y, sr = sf.read(path, dtype="float32")
        assert sr == audio.SR
        assert y.ndim == 1 and len(y) == (N_FRAMES - 1) * 512  # what mel_to_audio gives for one excerpt
        assert np.isfinite(y).all() and np.sqrt(np.mean(y ** 2)) > 0.01
        # each piece of the joint inversion is its own spectrogram, not its neighbour's
        back = audio.mel_spectrogram(y, n_mels=N_MELS, seconds=None)
        corr, mae = _close(mel, back)
        assert corr > 0.7 and mae < 4.0, (path, corr, mae)
        assert mae < _close(mels[(i + 1) % 3], back)[1] / 2


# ------------------------------------------------------------------------------------------ checkpoints
def test_save_load_gives_identical_outputs(synth, trained, tmp_path):
    trained.save(tmp_path / "vae.safetensors")
    loaded = ConvVAE.load(tmp_path / "vae.safetensors")
    X = synth["Xte"][:8]
    np.testing.assert_array_equal(loaded.transform(X, return_logvar=True), trained.transform(X, return_logvar=True))
    np.testing.assert_array_equal(loaded.reconstruct(X), trained.reconstruct(X))
    np.testing.assert_array_equal(loaded.sample(2, random_state=0)[0], trained.sample(2, random_state=0)[0])
    assert loaded.history_ == trained.history_ and loaded.best_epoch_ == trained.best_epoch_


def test_interrupted_training_resumes_identically(synth, tmp_path, monkeypatch):
    X = synth["Xtr"][::3]
    settings = dict(TINY, n_iter=5, n_iter_no_change=2, random_state=3)
    reference = ConvVAE(**settings).fit(X)

    ckpt = tmp_path / "train.safetensors"
    interrupted = ConvVAE(**settings)
    real = ConvVAE._kl_weight

    def stop_at_epoch_3(self, epoch):
        if epoch == 3:
            raise KeyboardInterrupt
        return real(self, epoch)

    monkeypatch.setattr(ConvVAE, "_kl_weight", stop_at_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit(X, checkpoint=ckpt)
    monkeypatch.undo()
    assert ckpt.exists()

    resumed = ConvVAE(**settings).fit(X, checkpoint=ckpt, resume=ckpt)
    untimed = lambda h: {k: v for k, v in h.items() if k != "time"}  # noqa: E731
    assert untimed(resumed.history_) == untimed(reference.history_)
    assert (resumed.best_epoch_, resumed.n_iter_) == (reference.best_epoch_, reference.n_iter_)
    np.testing.assert_array_equal(resumed.transform(X, return_logvar=True), reference.transform(X, return_logvar=True))
    np.testing.assert_array_equal(resumed.decode(np.ones((1, 8))), reference.decode(np.ones((1, 8))))

    with pytest.raises(ValueError, match="was trained with latent_dim=8 but this estimator has latent_dim=4"):
        ConvVAE(**dict(settings, latent_dim=4)).fit(X, resume=ckpt)
    # the old spelling, resume=True with checkpoint=path, still works for one release
    with pytest.warns(FutureWarning, match="resume=path"), pytest.raises(ValueError, match="other training data"):
        ConvVAE(**settings).fit(X[1:], checkpoint=ckpt, resume=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_training_and_loading_on_cpu(synth, tmp_path):
    X = synth["Xtr"][::4]
    gpu = ConvVAE(**dict(TINY, device="cuda"), n_iter=3).fit(X, checkpoint=tmp_path / "train.safetensors")
    assert next(gpu.net_.parameters()).is_cuda
    gpu.save(tmp_path / "vae.safetensors")
    cpu = ConvVAE.load(tmp_path / "vae.safetensors", device="cpu")
    np.testing.assert_allclose(cpu.transform(X), gpu.transform(X), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(cpu.decode(np.zeros((1, 8))), gpu.decode(np.zeros((1, 8))), rtol=1e-3, atol=1e-2)


# ------------------------------------------------------------------------------------------ bad input
def test_excerpt_shorter_than_receptive_field():
    rf = receptive_field(3)
    assert rf == 22  # 1 + 3 * (1 + 2 + 4) for kernel 4, stride 2
    with pytest.raises(ValueError, match=r"n_frames=21 is smaller than the receptive field .* \(22\)"):
        ConvVAE(**dict(TINY, n_frames=rf - 1)).fit(np.zeros((4, N_MELS, rf - 1), np.float32))
    with pytest.raises(ValueError, match="X has 30 frames but the model expects excerpts of n_frames=64"):
        ConvVAE(**TINY).fit(np.zeros((4, N_MELS, 30), np.float32))


def test_wrong_number_of_mel_bins_for_a_loaded_model(trained, tmp_path):
    trained.save(tmp_path / "vae.safetensors")
    loaded = ConvVAE.load(tmp_path / "vae.safetensors")
    with pytest.raises(ValueError, match="X has 64 mel bins but the model expects n_mels=32"):
        loaded.transform(np.zeros((2, 64, N_FRAMES), np.float32))


def test_nan_in_spectrogram(synth, trained):
    X = synth["Xte"][:4].copy()
    X[1, 3, 5] = np.nan
    with pytest.raises(ValueError, match="X contains NaN"):
        ConvVAE(**TINY).fit(X)
    with pytest.raises(ValueError, match="X contains NaN"):
        trained.transform(X)
    with pytest.raises(ValueError, match="X_valid contains NaN"):
        ConvVAE(**TINY).fit(synth["Xte"][:4], X_valid=X)


@pytest.mark.parametrize("latent_dim", [0, -3])
def test_latent_dim_below_one(latent_dim):
    with pytest.raises(ValueError, match=f"'latent_dim' parameter of ConvVAE must be an int in the range "
                                         f"\\[1, inf\\). Got {latent_dim}"):
        ConvVAE(**dict(TINY, latent_dim=latent_dim)).fit(np.zeros((4, N_MELS, N_FRAMES), np.float32))


def test_loading_a_foreign_file(tmp_path):
    from pymusicrbm.checkpoint import save_state

    save_state(tmp_path / "other.safetensors", {"w": torch.zeros(2)}, {"format": "something else"})
    with pytest.raises(ValueError, match="is not a saved ConvVAE"):
        ConvVAE.load(tmp_path / "other.safetensors")


# ------------------------------------------------------------------------------------------ the study
def test_study_end_to_end_and_resume(synth, tmp_path):
    opts = dict(n_mels=64, seconds=6.0, excerpt_frames=64, excerpt_hop=64, channels="8,16,16", latent_dim=8,
                epochs=3, kl_warmup_epochs=1, batch_size=16, single_split=True, grid_search=False, n_generate=1,
                verbose=0, n_jobs=1, cache_dir=str(tmp_path / "cache"))
    out = tmp_path / "out"
    ds = synth["ds"].subset(np.flatnonzero([int(p.stem.split(".")[1]) < 4 for p in synth["ds"].paths]))
    res = vae_study.run(ds, out, **opts)
    saved = json.loads((out / "results.json").read_text())
    classes = list(datasets.GTZAN_GENRES)
    for key in ("clip_accuracy", "window_accuracy"):
        assert set(saved[key]) == {"mean", "std", "folds"} and len(saved[key]["folds"]) == 1
        assert 0.0 <= saved[key]["mean"] <= 1.0
    assert list(saved["per_class_f1"]) == classes
    assert set(saved["models"]) == {"vae_svm", "vae_logreg"}
    assert set(saved["baselines"]) == {"pca_svm", "mel_stats_svm"}
    clips = saved["vae"]["clips_per_fold"][0]
    assert sum(clips.values()) == len(ds) and min(clips.values()) >= len(classes)  # >= 1 clip per class
    assert int(np.sum(saved["models"]["vae_svm"]["confusion"])) == clips["test"]
    # every image and audio file the report links to exists; every wav is real audio
    report = (out / "report.md").read_text()
    links = [s.split(")")[0] for s in report.split("](")[1:]]
    assert links and all((out / link).is_file() for link in links)
    wavs = sorted((out / "audio").glob("*.wav"))
    assert len(wavs) >= 6
    for w in wavs:
        y, sr = sf.read(w)
        assert sr == audio.SR and np.isfinite(y).all() and np.abs(y).max() > 0.01

    # resume: the saved model is reused, so the features and results are the same
    again = vae_study.run(ds, out, resume=True, **opts)
    assert again["clip_accuracy"] == res["clip_accuracy"]
    assert again["vae"]["recon_mse_db"] == res["vae"]["recon_mse_db"]


def test_study_bad_options(synth, tmp_path):
    with pytest.raises(ValueError, match="shorter than the receptive field"):
        vae_study.run(synth["root"], tmp_path, excerpt_frames=32, verbose=0)
    with pytest.raises(ValueError, match="unknown option"):
        vae_study.run(synth["root"], tmp_path, epoch=3)
    with pytest.raises(ValueError, match="n_mels must be 64 or 96"):
        vae_study.run(synth["root"], tmp_path, n_mels=40)


def test_cut_excerpts():
    mel = np.arange(3 * 10, dtype=np.float32).reshape(3, 10)
    E = cut_excerpts(mel, 4, 3)
    assert E.shape == (3, 3, 4)
    np.testing.assert_array_equal(E[2], mel[:, 6:10])
    with pytest.raises(ValueError, match="shorter than one excerpt"):
        cut_excerpts(mel, 11)
