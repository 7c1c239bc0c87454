"""pymusicrbm.datasets.synthetic: layout, format, determinism, reuse and resumption, and a learnable but not
trivial set."""
import hashlib

import numpy as np
import pytest
import soundfile as sf
from _audio_helpers import write_clip

from pymusicrbm import audio, datasets
from pymusicrbm.audio import SR
from pymusicrbm.datasets import GTZAN_GENRES, synthetic


def test_synthetic_set_layout_and_format(synthetic_small):
    ds = synthetic_small
    assert ds.classes == list(GTZAN_GENRES) and list(ds.class_counts()) == [8] * 10
    assert ds.root.name == "genres" and (ds.root / "synthetic.json").is_file()
    for path, label in zip(ds.paths, ds.labels):
        assert path.parent.name == GTZAN_GENRES[label] and path.name.startswith(GTZAN_GENRES[label] + ".000")
    info = sf.info(ds.paths[0])
    assert (info.samplerate, info.channels, info.subtype, info.frames) == (SR, 1, "PCM_16", 5 * SR)
    for path in ds.paths[::7]:  # usable audio: not silent, not clipped
        y = audio.load_audio(path)
        assert 0.2 < np.abs(y).max() < 1.0


def test_synthetic_set_is_deterministic(tmp_path):
    a = datasets.make_synthetic_genres(tmp_path / "a", n_per_class=1, seconds=2.0, seed=0)
    b = datasets.make_synthetic_genres(tmp_path / "b", n_per_class=1, seconds=2.0, seed=0)
    c = datasets.make_synthetic_genres(tmp_path / "c", n_per_class=1, seconds=2.0, seed=1, n_jobs=2)
    for pa, pb, pc in zip(a.paths, b.paths, c.paths):
        assert pa.read_bytes() == pb.read_bytes()
        assert pa.read_bytes() != pc.read_bytes()
    # clip i of class c does not depend on how many clips were asked for, nor on n_jobs
    d = datasets.make_synthetic_genres(tmp_path / "d", n_per_class=2, seconds=2.0, seed=1)
    assert d.paths[0].read_bytes() == c.paths[0].read_bytes()


# Clip 1 of each genre, seed 0, 3 s at 22050 Hz: SHA-256 of the float32 samples and six of them (evenly spaced),
# computed with the generator as it stood before it moved into datasets/synthetic.py (pymusicrbm/datasets.py at
# commit 738378e, numpy 2.4 on x86-64). The set promises "same seed, same bytes" (a stamped folder is reused, not
# regenerated), so any change to the output must bump _SYNTH_VERSION and these values together. The samples are
# compared first, loosely, so a failure says whether the generator changed (samples differ) or only the last bits
# (another platform's float32 sin/exp; the hashes then need recomputing there).
SYNTH_REFERENCE = {
    "blues": ("29fd35a9ae4a31b95bb3a3fd95691426e15fe38a5ce41e8768cbd7aa7d1f183f",
              [-0.00051011215, 0.3239752, 0.39832225, 0.021325205, -0.05240918, -0.003890896]),
    "classical": ("1977d1f6fcfee767fe6da9d83bc3321f6c7ad686597da103297d012b963bbabd",
                  [-6.044772e-05, -0.11623043, -0.17849812, -0.08478084, 0.064874694, -0.00059211353]),
    "country": ("e825a957d5dbe2769ee27d93bca7995189aacd9a417c7ee96b80cff9b817c6aa",
                [0.00037633936, -0.020436002, -0.046758477, -0.09527688, -0.020887379, -0.0001945718]),
    "disco": ("45898da98673b696234880c71a2c1d1d424e1cdbaf1a5c5f2599679f26b1b7d5",
              [-0.00041991562, 0.024396673, -0.16435006, 0.07743594, 0.20111315, -0.011400234]),
    "hiphop": ("954db3029894c29d051b3351d7132711bfc323596862dbc55d06e4190b75d42c",
               [0.0015992952, -0.0014840416, 0.00146462, 0.00015100805, 0.1594236, -0.002007934]),
    "jazz": ("b8941d7746be667c98db0efd5c901c8460480dcfa6fef46023feded6503a9e6e",
             [-0.0024815975, 0.07129944, 0.04680059, -0.29744536, -0.036775343, 0.003007393]),
    "metal": ("e743f5bb8756e1981ea7c8eb7d027415734870b79bf228eb5a7f6d57d7b4f528",
              [2.7351462e-05, -0.11812247, 0.22104317, -0.14883482, 0.04685992, 0.036168836]),
    "pop": ("793f46da7bf945a8d91bc613b578b636f4c421d9eb7df3ca360aebbf38933a3e",
            [0.0008208778, 0.68617654, 0.519961, 0.07502885, 0.07583201, 0.021823574]),
    "reggae": ("ae8cf72aab77d9e185278f4cfa37249e17e8e5f61daf2b064f061a02c1784dd4",
               [-0.000495312, -0.00040637355, 0.07887792, 0.044209063, 0.07835706, 0.00016547307]),
    "rock": ("ccf14ae5a748010942db6d2cbc2c72197c7df69bec5cdb856f02e659768b55e7",
             [-0.00019340382, 0.060546353, 0.24157038, -0.007567787, 0.08351233, 0.049356606]),
}


@pytest.mark.parametrize("genre", GTZAN_GENRES)
def test_synthetic_clip_is_pinned(genre):
    c = GTZAN_GENRES.index(genre)
    y = synthetic._synth_clip(genre, 3.0, SR, np.random.default_rng([0, c, 1]))
    digest, samples = SYNTH_REFERENCE[genre]
    assert y.dtype == np.float32 and y.shape == (3 * SR,)
    np.testing.assert_allclose(y[np.linspace(0, y.size - 1, 6).astype(int)], samples, rtol=0, atol=1e-6)
    assert hashlib.sha256(y.tobytes()).hexdigest() == digest


def test_synthetic_set_is_reused_resumed_and_regenerated(tmp_path, monkeypatch):
    calls = []
    real = synthetic._synth_file
    monkeypatch.setattr(synthetic, "_synth_file", lambda path, *a: (calls.append(path), real(path, *a)))
    first = datasets.make_synthetic_genres(tmp_path, n_per_class=2, seconds=1.5, seed=0)
    assert len(calls) == 20
    mtimes = {p: p.stat().st_mtime_ns for p in first.paths}
    calls.clear()
    again = datasets.make_synthetic_genres(tmp_path, n_per_class=2, seconds=1.5, seed=0)
    assert calls == [] and again.paths == first.paths
    assert {p: p.stat().st_mtime_ns for p in again.paths} == mtimes
    # an interrupted run (stamp not complete, one clip missing) regenerates only the missing clip
    stamp = tmp_path / "genres" / "synthetic.json"
    stamp.write_text(stamp.read_text().replace('"complete": true', '"complete": false'))
    content = first.paths[3].read_bytes()
    first.paths[3].unlink()
    assert len(datasets.make_synthetic_genres(tmp_path, n_per_class=2, seconds=1.5, seed=0)) == 20
    assert calls == [str(first.paths[3])] and first.paths[3].read_bytes() == content
    # other parameters: the old clips are replaced
    fewer = datasets.make_synthetic_genres(tmp_path, n_per_class=1, seconds=1.0, seed=0)
    assert len(fewer) == 10 and sf.info(fewer.paths[0]).frames == SR
    assert not first.paths[1].exists()  # blues.00001.wav


def test_synthetic_set_refuses_foreign_audio(tmp_path):
    write_clip(tmp_path / "genres" / "blues" / "blues.00000.wav")
    with pytest.raises(ValueError, match="did not write"):
        datasets.make_synthetic_genres(tmp_path, n_per_class=1, seconds=1.0)


@pytest.mark.parametrize("kwargs,msg", [({"n_per_class": 0}, "n_per_class must be"),
                                        ({"seconds": 0.5}, "seconds must be"), ({"seed": -1}, "seed must be"),
                                        ({"sr": 100}, "sr must be"), ({"n_jobs": 0}, "n_jobs must be")])
def test_synthetic_set_bad_arguments(tmp_path, kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        datasets.make_synthetic_genres(tmp_path, **kwargs)


def test_synthetic_set_unwritable_root(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="cannot write under"):
        datasets.make_synthetic_genres(tmp_path / "file" / "data", n_per_class=1, seconds=1.0)


def test_mfcc_baseline_is_well_above_chance_but_not_perfect(synthetic_small):
    """The synthetic genres must be learnable but not trivial: MFCC means + an RBF SVM, 4-fold CV by clip.

    Chance is 0.1 for 10 classes; 0.3 (three times chance) is far below what the class structure gives (about 0.6
    here), and 0.95 leaves room above: the set is meant to be hard enough that this baseline is not perfect.
    """
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    feats = audio.extract(synthetic_small, "mfcc", {}, n_jobs=2, verbose=0)
    X = np.stack([f.mean(axis=0) for f in feats])
    y = synthetic_small.labels
    correct = 0
    for tr, te in datasets.stratified_folds(y, n_folds=4, seed=0):
        clf = make_pipeline(StandardScaler(), SVC(C=10.0)).fit(X[tr], y[tr])
        correct += int((clf.predict(X[te]) == y[te]).sum())
    accuracy = correct / len(y)
    assert 0.3 < accuracy < 0.95, accuracy
