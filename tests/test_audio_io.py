"""pymusicrbm.audio.io: loading every format, mono and resampling, offsets, and every unusable clip.

References are independent of the code under test: soundfile's own decoding, librosa's resampler, the pitch of
test tones.
"""
import os

import librosa
import numpy as np
import pytest
import soundfile as sf
from _audio_helpers import bad_file, noise, peak_hz, tone

from pymusicrbm import audio
from pymusicrbm.audio import SR, AudioError

Q16 = 1.0 / 32767  # 16-bit quantisation step


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



BAD = {"missing": "no such file", "zero_length": "zero-length", "corrupt": "cannot decode", "silent": "silent",
       "nan": "non-finite", "inf": "non-finite"}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_load_bad_files_raise_audio_error_naming_the_file(tmp_path, kind):
    path = bad_file(tmp_path, kind)
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
