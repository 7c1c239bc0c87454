"""pymusicrbm.audio: loading, |DFT| frames, mel spectrograms, MFCCs, Griffin-Lim, PCA whitening, cached extract.

References are independent of the code under test: numpy's rfft frame by frame, soundfile's own decoding, the
physics of test tones (peak bins), sample covariances, and librosa called directly where we wrap it.
"""
import os
import warnings

import librosa
import numpy as np
import pytest
import scipy.signal
import soundfile as sf

from pymusicrbm import audio
from pymusicrbm.audio import SR, AudioError, AudioWarning

Q16 = 1.0 / 32767  # 16-bit quantisation step


def tone(freq, seconds, sr=SR, amp=0.5):
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def noise(n, seed=0, amp=0.3):
    return (amp * np.random.default_rng(seed).uniform(-1, 1, n)).astype(np.float32)


def peak_hz(y, sr=SR):
    spec = np.abs(np.fft.rfft(y * np.hanning(y.size)))
    return np.argmax(spec) * sr / y.size


# ------------------------------------------------------------------------------------------------ load_audio
def test_load_wav_mono_roundtrip(tmp_path):
    y = noise(5000)
    sf.write(tmp_path / "a.wav", y, SR, subtype="PCM_16")
    x = audio.load_audio(tmp_path / "a.wav")
    assert x.dtype == np.float32 and x.shape == y.shape
    np.testing.assert_allclose(x, y, atol=Q16)


@pytest.mark.parametrize("ext,fmt", [(".au", "AU"), (".flac", "FLAC"), (".wav", "WAV")])
def test_load_formats_match_soundfile(tmp_path, ext, fmt):
    y = noise(3000, seed=1)
    path = tmp_path / f"a{ext}"
    sf.write(path, y, SR, format=fmt, subtype="PCM_16")
    ref, sr = sf.read(path, dtype="float32")
    assert sr == SR
    np.testing.assert_array_equal(audio.load_audio(path), ref)


def test_load_stereo_is_channel_mean(tmp_path):
    left, right = noise(4000, seed=2), noise(4000, seed=3)
    sf.write(tmp_path / "s.wav", np.stack([left, right], 1), SR, subtype="FLOAT")
    np.testing.assert_allclose(audio.load_audio(tmp_path / "s.wav"), (left + right) / 2, atol=1e-7)


@pytest.mark.parametrize("native", [44100, 16000])
def test_load_resamples_to_22050(tmp_path, native):
    y = tone(1000.0, 1.0, sr=native)
    sf.write(tmp_path / "r.wav", y, native, subtype="FLOAT")
    x = audio.load_audio(tmp_path / "r.wav")
    assert abs(x.size - SR) <= 1  # one second at 22050 Hz
    assert abs(peak_hz(x) - 1000.0) <= 2.0  # the tone keeps its pitch
    np.testing.assert_allclose(x, librosa.resample(y, orig_sr=native, target_sr=SR), atol=1e-6)


def test_load_offset_and_duration(tmp_path):
    y = noise(3 * SR, seed=4)
    sf.write(tmp_path / "o.wav", y, SR, subtype="FLOAT")
    x = audio.load_audio(tmp_path / "o.wav", offset=0.5, duration=1.0)
    np.testing.assert_array_equal(x, y[SR // 2: SR // 2 + SR])


def test_load_mp3_if_libsndfile_can_write_it(tmp_path):
    y = tone(440.0, 2.0)
    try:
        sf.write(tmp_path / "m.mp3", y, SR, format="MP3")
    except Exception as err:  # libsndfile built without an MP3 encoder
        pytest.skip(f"cannot write MP3 here: {err}")
    x = audio.load_audio(tmp_path / "m.mp3")
    assert abs(x.size - y.size) < 0.1 * SR  # encoder padding only
    assert abs(peak_hz(x) - 440.0) <= 3.0


def _bad_file(tmp_path, kind):
    path = tmp_path / f"{kind}.wav"
    if kind == "missing":
        pass
    elif kind == "zero_length":
        path.write_bytes(b"")
    elif kind == "corrupt":
        path.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" + os.urandom(200))
    elif kind == "silent":
        sf.write(path, np.zeros(SR, np.float32), SR, subtype="PCM_16")
    elif kind == "nan":
        y = noise(SR)
        y[100] = np.nan
        sf.write(path, y, SR, subtype="FLOAT")
    elif kind == "inf":
        y = noise(SR)
        y[5] = np.inf
        sf.write(path, y, SR, subtype="FLOAT")
    return path


BAD = {"missing": "no such file", "zero_length": "zero-length", "corrupt": "cannot decode", "silent": "silent",
       "nan": "non-finite", "inf": "non-finite"}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_load_bad_files_raise_audio_error_naming_the_file(tmp_path, kind):
    path = _bad_file(tmp_path, kind)
    with pytest.raises(AudioError, match=BAD[kind]) as info:
        audio.load_audio(path)
    assert str(path) in str(info.value) and info.value.path == str(path)
    assert isinstance(info.value, ValueError)


def test_load_other_formats_go_through_the_audioread_fallback(tmp_path):
    path = tmp_path / "x.m4a"
    path.write_bytes(os.urandom(300))
    with pytest.raises(AudioError, match="cannot decode audio .*audioread"):
        audio.load_audio(path)


def test_audio_error_survives_pickling(tmp_path):
    import pickle

    err = pickle.loads(pickle.dumps(AudioError(tmp_path / "x.wav", "silent")))
    assert (err.path, err.reason, str(err)) == (str(tmp_path / "x.wav"), "silent", f"{tmp_path / 'x.wav'}: silent")


def test_load_offset_past_end(tmp_path):
    sf.write(tmp_path / "a.wav", noise(SR), SR)
    with pytest.raises(AudioError, match="no audio samples"):
        audio.load_audio(tmp_path / "a.wav", offset=5.0)


@pytest.mark.parametrize("kwargs,msg", [({"sr": 0}, "sr must be"), ({"duration": 0}, "duration must be"),
                                        ({"offset": -1}, "offset must be")])
def test_load_bad_arguments(tmp_path, kwargs, msg):
    sf.write(tmp_path / "a.wav", noise(SR), SR)
    with pytest.raises(ValueError, match=msg):
        audio.load_audio(tmp_path / "a.wav", **kwargs)


# ------------------------------------------------------------------------------------------------ dft_frames
@pytest.mark.parametrize("hop", [None, 512, 300])
def test_dft_frames_match_numpy_rfft(hop):
    y = noise(5000, seed=5)
    step = 1024 if hop is None else hop
    ref = np.array([np.abs(np.fft.rfft(y[s:s + 1024].astype(np.float64)))
                    for s in range(0, y.size - 1024 + 1, step)])
    got = audio.dft_frames(y, hop_length=hop)
    assert got.dtype == np.float32 and got.shape == ref.shape and got.shape[1] == 513
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * ref.max())


def test_dft_frames_default_is_non_overlapping_46ms():
    y = noise(30 * SR, seed=6)
    assert audio.dft_frames(y).shape == (30 * SR // 1024, 513)  # 646 frames of 46.44 ms in 30 s


def test_dft_tone_peaks_in_its_bin():
    k = 40  # a tone exactly on bin 40 of a 1024-point DFT: amplitude 0.5 -> |X| = 0.5 * 1024 / 2
    y = tone(k * SR / 1024, 1.0)
    X = audio.dft_frames(y)
    assert np.all(X.argmax(axis=1) == k)
    np.testing.assert_allclose(X[:, k], 256.0, rtol=1e-3)


def test_dft_log_compression_and_window():
    y = noise(4096, seed=7)
    ref = audio.dft_frames(y)
    np.testing.assert_allclose(audio.dft_frames(y, log=True), np.log1p(ref), rtol=1e-5)
    np.testing.assert_allclose(audio.dft_frames(y, log="log1p", log_scale=10.0), np.log1p(10 * ref), rtol=1e-5)
    np.testing.assert_allclose(audio.dft_frames(y, log="log"), np.log(audio.LOG_EPS + ref), rtol=1e-5, atol=1e-5)
    w = scipy.signal.get_window("hann", 1024)
    ref_w = np.array([np.abs(np.fft.rfft(y[s:s + 1024] * w)) for s in range(0, 4096, 1024)])
    np.testing.assert_allclose(audio.dft_frames(y, window="hann"), ref_w, rtol=1e-4, atol=1e-4 * ref_w.max())


def test_dft_clip_shorter_than_a_frame():
    with pytest.raises(AudioError, match="shorter than one frame of 1024 samples"):
        audio.dft_frames(noise(1000))


@pytest.mark.parametrize("args,kwargs,msg", [
    ((np.zeros((2, 2048), np.float32),), {}, "1-D"),
    ((noise(4096),), {"hop_length": 0}, "hop_length must be"),
    ((noise(4096),), {"frame_length": 1}, "frame_length must be"),
    ((noise(4096),), {"log": "db"}, "log must be"),
    ((noise(4096),), {"log_scale": -1.0}, "log_scale must be"),
    ((noise(4096),), {"window": "nosuchwindow"}, "unknown window"),
])
def test_dft_bad_arguments(args, kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        audio.dft_frames(*args, **kwargs)


def test_dft_non_finite_signal():
    y = noise(4096)
    y[3] = np.nan
    with pytest.raises(AudioError, match="NaN"):
        audio.dft_frames(y)


# ---------------------------------------------------------------------------------------------------- mel
@pytest.mark.parametrize("clip_s,n_mels", [(3.0, 64), (12.0, 96), (10.0, 64)])
def test_mel_frame_count_is_exact(clip_s, n_mels):
    M = audio.mel_spectrogram(noise(int(clip_s * SR)), n_mels=n_mels, seconds=10.0)
    assert M.shape == (n_mels, 1 + int(10.0 * SR) // 512) == (n_mels, 431)
    assert M.dtype == np.float32


def test_mel_frame_count_other_hop_and_seconds():
    M = audio.mel_spectrogram(noise(SR), hop_length=256, seconds=2.5)
    assert M.shape == (64, 1 + int(2.5 * SR) // 256)


def test_mel_db_range_padding_and_reference():
    y = noise(3 * SR, seed=8)
    M = audio.mel_spectrogram(y, seconds=10.0)
    assert M.max() == 0.0 and M.min() >= -80.0
    # frames whose window lies wholly in the zero padding sit on the -80 dB floor
    first_pad = (3 * SR + 512) // 512 + 1
    assert np.all(M[:, first_pad:] == -80.0)
    padded = np.pad(y, (0, 10 * SR - y.size))
    ref = librosa.power_to_db(librosa.feature.melspectrogram(y=padded, sr=SR, n_fft=1024, hop_length=512, n_mels=64,
                                                             pad_mode="constant"), ref=np.max, top_db=80.0)
    np.testing.assert_allclose(M, ref, atol=1e-3)


def test_mel_tone_peaks_in_the_nearest_band():
    M = audio.mel_spectrogram(tone(1000.0, 2.0), seconds=2.0)
    centres = librosa.mel_frequencies(n_mels=64 + 2, fmax=SR / 2)[1:-1]
    assert abs(int(M[:, 5:-5].mean(axis=1).argmax()) - int(np.argmin(np.abs(centres - 1000.0)))) <= 1


def test_mel_gain_invariant_with_max_ref_absolute_with_fixed_ref():
    y = tone(500.0, 1.0) + noise(SR, amp=0.05)
    np.testing.assert_allclose(audio.mel_spectrogram(2 * y, seconds=1.0), audio.mel_spectrogram(y, seconds=1.0),
                               atol=1e-3)
    a = audio.mel_spectrogram(y, seconds=1.0, ref=1.0, top_db=None)
    b = audio.mel_spectrogram(2 * y, seconds=1.0, ref=1.0, top_db=None)
    np.testing.assert_allclose(b - a, 20 * np.log10(2), atol=1e-2)


@pytest.mark.parametrize("kwargs,msg", [({"ref": "min"}, "ref must be"), ({"seconds": 0}, "seconds must be"),
                                        ({"n_mels": 0}, "n_mels must be"), ({"top_db": -1}, "top_db must be")])
def test_mel_bad_arguments(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        audio.mel_spectrogram(noise(SR), **kwargs)


def test_mel_to_audio_recovers_the_pitch_and_is_seeded():
    M = audio.mel_spectrogram(tone(1000.0, 1.0), seconds=1.0)
    y = audio.mel_to_audio(M, n_iter=16)
    assert y.dtype == np.float32 and abs(y.size - (M.shape[1] - 1) * 512) <= 512
    assert abs(peak_hz(y) - 1000.0) < 40.0  # within a mel band at 1 kHz
    assert np.isclose(np.abs(y).max(), 0.9)
    np.testing.assert_array_equal(y, audio.mel_to_audio(M, n_iter=16))


def test_mel_to_audio_bad_input():
    with pytest.raises(ValueError, match="must be 2-D"):
        audio.mel_to_audio(np.zeros(64, np.float32))


def test_mfcc_features_match_librosa():
    y = noise(2 * SR, seed=9) + tone(300.0, 2.0)
    got = audio.mfcc_features(y)
    ref = librosa.feature.mfcc(y=y, sr=SR, n_mfcc=20, n_fft=1024, hop_length=512, n_mels=40).T
    assert got.shape == (1 + 2 * SR // 512, 20)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-3)
    with pytest.raises(ValueError, match="n_mfcc"):
        audio.mfcc_features(y, n_mfcc=50)


# ----------------------------------------------------------------------------------------------- whitening
def _correlated(n=3000, d=12, seed=0):
    r = np.random.default_rng(seed)
    return (r.standard_normal((n, d)) @ r.standard_normal((d, d)) + r.standard_normal(d) * 5).astype(np.float32)


def test_pca_whitener_gives_identity_covariance_and_matches_sklearn():
    from sklearn.decomposition import PCA

    X = _correlated()
    w = audio.PCAWhitener(n_components=8).fit(X)
    Z = w.transform(X)
    assert Z.shape == (3000, 8) and Z.dtype == np.float32
    np.testing.assert_allclose(np.cov(Z.T), np.eye(8), atol=2e-3)
    np.testing.assert_allclose(Z, PCA(8, whiten=True, random_state=0).fit(X).transform(X), atol=2e-3)


def test_pca_whitener_fit_on_train_only_and_round_trips():
    X = _correlated()
    train, test = X[:2000], X[2000:] + 1.0
    w = audio.PCAWhitener(n_components=12).fit([train[:1000], train[1000:]])  # a list of clips = the stacked rows
    mean = w.mean_.copy()
    Zt = w.transform(test)
    np.testing.assert_array_equal(w.mean_, mean)  # transforming test data leaves the fit alone
    np.testing.assert_allclose(w.mean_, train.mean(0), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(w.inverse_transform(Zt), test, atol=1e-3 * np.abs(test).max())
    w2 = audio.PCAWhitener.from_state_dict(w.state_dict())
    np.testing.assert_array_equal(w2.transform(test), Zt)


def test_pca_whitener_max_samples_is_seeded():
    X = _correlated(n=5000)
    a = audio.PCAWhitener(6, max_samples=1000, seed=1).fit(X).transform(X[:10])
    b = audio.PCAWhitener(6, max_samples=1000, seed=1).fit(X).transform(X[:10])
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("action,msg", [
    (lambda: audio.PCAWhitener(4).transform(np.zeros((3, 4))), "not fitted"),
    (lambda: audio.PCAWhitener(20).fit(_correlated()), "n_components=20 must be <="),
    (lambda: audio.PCAWhitener(4).fit(_correlated()).transform(np.zeros((3, 5))), "has 5 features"),
    (lambda: audio.PCAWhitener(4).fit([_correlated(), None]), "contains None"),
    (lambda: audio.PCAWhitener(4).fit(np.full((10, 5), np.nan)), "NaN"),
    (lambda: audio.PCAWhitener(0), "n_components must be"),
    (lambda: audio.PCAWhitener.from_state_dict({"mean": np.zeros(3)}), "missing keys"),
])
def test_pca_whitener_errors(action, msg):
    with pytest.raises(ValueError, match=msg):
        action()


# ------------------------------------------------------------------------------------------------- extract
@pytest.fixture
def clips(tmp_path):
    """Three good clips (wav 22050 mono, au 44100 stereo, flac 16000) in tmp_path/clips."""
    d = tmp_path / "clips"
    d.mkdir()
    sf.write(d / "a.wav", noise(SR, seed=10), SR, subtype="PCM_16")
    sf.write(d / "b.au", np.stack([noise(2 * 44100, seed=11)] * 2, 1), 44100, format="AU", subtype="PCM_16")
    sf.write(d / "c.flac", noise(16000, seed=12), 16000, format="FLAC", subtype="PCM_16")
    return [d / "a.wav", d / "b.au", d / "c.flac"]


@pytest.fixture
def count_compute(monkeypatch):
    calls = []
    real = audio._compute

    def counting(kind, y, p):
        calls.append(kind)
        return real(kind, y, p)
    monkeypatch.setattr(audio, "_compute", counting)
    return calls


def test_extract_matches_direct_computation(clips):
    feats = audio.extract(clips, "dft", {}, n_jobs=1, verbose=0)
    for path, f in zip(clips, feats):
        np.testing.assert_array_equal(f, audio.dft_frames(audio.load_audio(path)))
    mels = audio.extract(clips, "mel", {"n_mels": 96, "seconds": 1.5}, n_jobs=1, verbose=0)
    for path, m in zip(clips, mels):
        assert m.shape == (96, 1 + int(1.5 * SR) // 512)
        ref = audio.mel_spectrogram(audio.load_audio(path), n_mels=96, seconds=1.5)
        np.testing.assert_allclose(m, ref, atol=1e-3)  # extract decodes only the first 1.5 s (+ a margin)


def test_extract_parallel_equals_serial(clips):
    serial = audio.extract(clips, "mfcc", {}, n_jobs=1, verbose=0)
    parallel = audio.extract(clips, "mfcc", {}, n_jobs=2, verbose=0)
    for a, b in zip(serial, parallel):
        np.testing.assert_array_equal(a, b)


def test_extract_cache_hit_is_identical_and_skips_work(clips, tmp_path, count_compute):
    cache = tmp_path / "cache"
    first = audio.extract(clips, "dft", {}, cache_dir=cache, n_jobs=1, verbose=0)
    assert len(count_compute) == 3
    files = sorted((cache / "dft").iterdir())
    assert len(files) == 3 and all(f.suffix == ".npy" for f in files)  # no temp files left behind
    for f in files:
        np.load(f, allow_pickle=False)  # plain arrays
    count_compute.clear()
    # the same settings spelled differently hit the same entries
    again = audio.extract(clips, "dft", {"hop_length": 1024, "log": False}, cache_dir=cache, n_jobs=1, verbose=0)
    assert count_compute == []
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)


def test_extract_cache_keys_on_content_and_params(clips, tmp_path, count_compute):
    cache = tmp_path / "cache"
    audio.extract(clips, "dft", {}, cache_dir=cache, n_jobs=1, verbose=0)
    count_compute.clear()
    audio.extract(clips, "dft", {"log": True}, cache_dir=cache, n_jobs=1, verbose=0)
    assert len(count_compute) == 3  # other parameters: recomputed
    count_compute.clear()
    moved = clips[0].with_name("renamed.wav")
    os.replace(clips[0], moved)  # same content under another name: still a hit
    sf.write(clips[1], noise(SR, seed=99), SR, format="AU")  # new content: a miss
    feats = audio.extract([moved, clips[1], clips[2]], "dft", {}, cache_dir=cache, n_jobs=1, verbose=0)
    assert len(count_compute) == 1
    np.testing.assert_array_equal(feats[1], audio.dft_frames(audio.load_audio(clips[1])))


def test_extract_corrupt_cache_entry_is_recomputed(clips, tmp_path):
    cache = tmp_path / "cache"
    ref = audio.extract(clips, "dft", {}, cache_dir=cache, n_jobs=1, verbose=0)
    for f in (cache / "dft").iterdir():
        f.write_bytes(f.read_bytes()[:50])  # truncated entries
    got = audio.extract(clips, "dft", {}, cache_dir=cache, n_jobs=1, verbose=0)
    for a, b in zip(ref, got):
        np.testing.assert_array_equal(a, b)


def test_extract_reports_bad_clips_and_keeps_going(clips, tmp_path):
    bad = {kind: _bad_file(tmp_path, kind) for kind in ("zero_length", "corrupt", "silent", "nan", "missing")}
    short = tmp_path / "short.wav"
    sf.write(short, noise(500), SR)  # shorter than one 1024-sample frame
    paths = [clips[0], *bad.values(), short, clips[1]]
    with pytest.warns(AudioWarning, match="6 of 8 clips failed") as rec:
        feats, errors = audio.extract(paths, "dft", {}, n_jobs=1, verbose=0, return_errors=True)
    report = "\n".join(str(w.message) for w in rec if w.category is AudioWarning)
    assert feats[0] is not None and feats[-1] is not None and all(f is None for f in feats[1:-1])
    reasons = dict(errors)
    for kind, path in bad.items():
        assert str(path) in reasons and str(path) in report
    assert "zero-length" in reasons[str(bad["zero_length"])] and "silent" in reasons[str(bad["silent"])]
    assert "cannot decode" in reasons[str(bad["corrupt"])] and "non-finite" in reasons[str(bad["nan"])]
    assert "cannot read" in reasons[str(bad["missing"])]
    assert "shorter than one frame" in reasons[str(short)]
    # a short clip is fine for the mel spectrogram: zero-padded to the full frame count
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mel = audio.extract([short], "mel", {}, n_jobs=1, verbose=0)
    assert mel[0].shape == (64, 431)


def test_extract_empty_dataset():
    assert audio.extract([], "dft", {}, verbose=0) == []


@pytest.mark.parametrize("kind,params,msg", [
    ("cqt", {}, "kind must be one of"),
    ("dft", {"n_mels": 64}, r"unknown parameter\(s\) \['n_mels'\]"),
    ("mel", {"n_mels": 0}, "n_mels must be"),
    ("dft", {"log": "db"}, "log must be"),
    ("mfcc", {"sr": -1}, "sr must be"),
])
def test_extract_bad_parameters(clips, kind, params, msg):
    with pytest.raises(ValueError, match=msg):
        audio.extract(clips, kind, params, verbose=0)


def test_extract_unwritable_cache_dir_and_bad_n_jobs(clips, tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    with pytest.raises(ValueError, match="not a writable folder"):
        audio.extract(clips, "dft", {}, cache_dir=blocker / "cache", verbose=0)
    with pytest.raises(ValueError, match="n_jobs must be"):
        audio.extract(clips, "dft", {}, n_jobs=0, verbose=0)
