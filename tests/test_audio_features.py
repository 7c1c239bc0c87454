"""pymusicrbm.audio.features: |DFT| frames, mel spectrograms, MFCCs, Griffin-Lim, PCA whitening.

References are independent of the code under test: numpy's rfft frame by frame, the physics of test tones (peak
bins), sample covariances, and librosa / scikit-learn called directly where we wrap them.
"""
import librosa
import numpy as np
import pytest
import scipy.signal
from _audio_helpers import noise, peak_hz, tone

from pymusicrbm import audio
from pymusicrbm.audio import SR, AudioError


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
    a = audio.PCAWhitener(6, max_samples=1000, random_state=1).fit(X).transform(X[:10])
    b = audio.PCAWhitener(6, max_samples=1000, random_state=1).fit(X).transform(X[:10])
    np.testing.assert_array_equal(a, b)
    c = audio.PCAWhitener(6, max_samples=1000, random_state=2).fit(X).transform(X[:10])
    assert not np.array_equal(a, c)  # another subset of rows


@pytest.mark.parametrize("action,msg", [
    (lambda: audio.PCAWhitener(4).transform(np.zeros((3, 4))), "not fitted"),
    (lambda: audio.PCAWhitener(20).fit(_correlated()), "n_components=20 must be <="),
    (lambda: audio.PCAWhitener(4).fit(_correlated()).transform(np.zeros((3, 5))), "has 5 features"),
    (lambda: audio.PCAWhitener(4).fit([_correlated(), None]), "contains None"),
    (lambda: audio.PCAWhitener(4).fit(np.full((10, 5), np.nan)), "NaN"),
    (lambda: audio.PCAWhitener(0).fit(_correlated()), "'n_components' parameter of PCAWhitener must be"),
    (lambda: audio.PCAWhitener(4, max_samples=1).fit(_correlated()), "'max_samples' parameter of PCAWhitener"),
    (lambda: audio.PCAWhitener.from_state_dict({"mean": np.zeros(3)}), "missing keys"),
])
def test_pca_whitener_errors(action, msg):
    with pytest.raises(ValueError, match=msg):
        action()


def test_pca_whitener_is_a_scikit_learn_transformer():
    """get_params / clone / Pipeline work; parameters are checked at fit, not in __init__; fitted state ends in _."""
    from sklearn.base import clone
    from sklearn.exceptions import NotFittedError
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    w = audio.PCAWhitener(5, max_samples=2000, random_state=3)
    assert w.get_params() == {"n_components": 5, "max_samples": 2000, "random_state": 3, "seed": "deprecated"}
    assert audio.PCAWhitener(0).n_components == 0  # stored as given; fit raises
    X = _correlated()
    pipe = make_pipeline(StandardScaler(), clone(w)).fit(X)
    Z = make_pipeline(StandardScaler(), w).fit_transform(X)
    np.testing.assert_allclose(pipe.transform(X), Z, rtol=1e-5, atol=1e-5)
    assert w.n_features_in_ == 12 and not hasattr(clone(w), "mean_")
    with pytest.raises(NotFittedError):
        clone(w).transform(X)


def test_pca_whitener_seed_is_a_deprecated_alias_of_random_state():
    X = _correlated(n=5000)
    want = audio.PCAWhitener(6, max_samples=1000, random_state=4).fit(X)
    with pytest.warns(FutureWarning, match="'seed' was renamed 'random_state'"):
        got = audio.PCAWhitener(6, max_samples=1000, seed=4).fit(X)
    np.testing.assert_array_equal(got.components_, want.components_)
    np.testing.assert_array_equal(got.mean_, want.mean_)
