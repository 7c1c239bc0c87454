"""pymusicrbm.audio.extraction: extract against direct computation, serial vs parallel, the disk cache, bad clips."""
import os
import warnings

import numpy as np
import pytest
import soundfile as sf
from _audio_helpers import bad_file, noise

from pymusicrbm import audio
from pymusicrbm.audio import SR, AudioWarning, extraction


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
    real = extraction._compute

    def counting(kind, y, p):
        calls.append(kind)
        return real(kind, y, p)
    monkeypatch.setattr(extraction, "_compute", counting)
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
    bad = {kind: bad_file(tmp_path, kind) for kind in ("zero_length", "corrupt", "silent", "nan", "missing")}
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
