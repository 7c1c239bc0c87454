"""pymusicrbm.datasets: GTZAN layouts, class folders, manifests, auto-detection, splits, the synthetic genre set."""
import os

import numpy as np
import pytest
import soundfile as sf

from pymusicrbm import audio, datasets
from pymusicrbm.audio import SR, AudioWarning
from pymusicrbm.datasets import GTZAN_GENRES


def write_clip(path, seed=0, sr=SR, channels=1, seconds=0.3):
    path.parent.mkdir(parents=True, exist_ok=True)
    y = 0.3 * np.random.default_rng(seed).uniform(-1, 1, (int(seconds * sr), channels))
    fmt = {".au": "AU", ".flac": "FLAC"}.get(path.suffix, "WAV")
    sf.write(path, y, sr, format=fmt, subtype="PCM_16")
    return path


def genre_of(path):
    return path.name.split(".")[0]


GENRES3 = ("metal", "blues", "classical")  # deliberately not in GTZAN order


def make_layout(root, layout, genres=GENRES3, n=2):
    """GTZAN clips <genre>.000NN.{au,wav} (alternating) in the given layout; returns the folder holding them."""
    base = {"genres": root / "genres", "genres_original": root / "genres_original",
            "kaggle": root / "Data" / "genres_original", "root": root, "flat": root}[layout]
    for g in genres:
        for i in range(n):
            name = f"{g}.{i:05d}{'.au' if i % 2 else '.wav'}"
            write_clip(base / name if layout == "flat" else base / g / name, seed=i)
    return base


# ------------------------------------------------------------------------------------------------- GTZAN
@pytest.mark.parametrize("layout", ["genres", "genres_original", "kaggle", "root", "flat"])
def test_load_gtzan_layouts(tmp_path, layout):
    base = make_layout(tmp_path, layout)
    for loader in (datasets.load_gtzan, datasets.load_dataset):
        ds = loader(tmp_path)
        assert ds.classes == ["blues", "classical", "metal"]  # GTZAN order, not directory order
        assert len(ds) == 6 and ds.skipped == [] and ds.root == base
        assert [ds.classes[k] for k in ds.labels] == [genre_of(p) for p in ds.paths]
        assert {p.suffix for p in ds.paths} == {".wav", ".au"}


def test_load_gtzan_all_ten_genres_in_standard_order(tmp_path):
    make_layout(tmp_path, "genres", genres=GTZAN_GENRES[::-1], n=1)
    ds = datasets.load_gtzan(tmp_path)
    assert ds.classes == list(GTZAN_GENRES)
    assert [GTZAN_GENRES[k] for k in ds.labels] == [genre_of(p) for p in ds.paths]
    assert ds.names[0] == "blues/blues.00000.wav"


def test_load_gtzan_mixed_rates_and_channels(tiny_gtzan):
    ds = datasets.load_gtzan(tiny_gtzan)
    assert ds.classes == ["blues", "jazz", "rock"] and list(ds.class_counts()) == [4, 4, 4]
    feats = audio.extract(ds, "dft", {}, n_jobs=1, verbose=0)
    freqs = {"blues": 220.0, "jazz": 330.0, "rock": 440.0}
    for path, f in zip(ds.paths, feats):  # every clip decoded at 22050 Hz mono: 2 s -> 43 frames, right pitch
        assert f.shape == (2 * SR // 1024, 513)
        assert abs(f.mean(0).argmax() * SR / 1024 - freqs[genre_of(path)]) < SR / 1024


def test_load_gtzan_skips_unreadable_clips_and_ignores_non_audio(tmp_path):
    make_layout(tmp_path, "kaggle", genres=("jazz", "pop"), n=3)
    base = tmp_path / "Data" / "genres_original"
    (base / "jazz" / "jazz.00054.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + os.urandom(64))  # Kaggle's
    (base / "pop" / "pop.00099.wav").write_bytes(b"")
    (base / "jazz" / "._jazz.00000.wav").write_bytes(b"\x00\x05\x16\x07")  # macOS resource fork
    (base / "bextract_single.mf").write_text("jazz/jazz.00000.wav\tjazz\n")
    (base / "features_30_sec.csv").write_text("filename,label\n")
    with pytest.warns(AudioWarning, match="skipped 2 unreadable clips") as rec:
        ds = datasets.load_gtzan(tmp_path)
    assert len(ds) == 6 and ds.classes == ["jazz", "pop"]
    skipped = dict(ds.skipped)
    assert set(skipped) == {"jazz/jazz.00054.wav", "pop/pop.00099.wav"}
    assert "zero-length" in skipped["pop/pop.00099.wav"]
    assert "jazz/jazz.00054.wav" in str(rec[0].message)


@pytest.mark.parametrize("setup,msg", [
    (lambda root: None, "does not exist"),
    (lambda root: root.mkdir(), "is empty"),
    (lambda root: (root.mkdir(), (root / "readme.txt").write_text("hi")), "no GTZAN clips"),
    (lambda root: write_clip(root / "genres" / "blues" / "blues.00000.wav"), "only one class"),
    (lambda root: write_clip(root / "techno" / "a.wav"), "no GTZAN clips"),
    (lambda root: (root.parent.mkdir(exist_ok=True), root.write_text("x")), "is not a folder"),
])
def test_load_gtzan_bad_folders(tmp_path, setup, msg):
    root = tmp_path / "data"
    setup(root)
    with pytest.raises(ValueError, match=msg):
        datasets.load_gtzan(root)


def test_load_gtzan_every_clip_unreadable(tmp_path):
    for g in ("blues", "rock"):
        (tmp_path / "genres" / g).mkdir(parents=True)
        (tmp_path / "genres" / g / f"{g}.00000.wav").write_bytes(b"")
    with pytest.warns(AudioWarning), pytest.raises(ValueError, match="no readable audio clips"):
        datasets.load_gtzan(tmp_path)


# ------------------------------------------------------------------------------------- folders and manifests
def test_load_folder_sorted_classes_nested_files(tmp_path):
    for cls, n in (("zouk", 2), ("ambient", 3), ("Drone", 1)):
        for i in range(n):
            write_clip(tmp_path / cls / ("sub" if i == 2 else "") / f"clip{i}.flac", seed=i)
    (tmp_path / "empty_class").mkdir()
    with pytest.warns(AudioWarning, match="empty_class"):
        ds = datasets.load_folder(tmp_path)
    assert ds.classes == sorted(["zouk", "ambient", "Drone"])
    assert [ds.classes[k] for k in ds.labels] == [p.relative_to(tmp_path).parts[0] for p in ds.paths]
    assert "ambient/sub/clip2.flac" in ds.names
    with pytest.warns(AudioWarning):
        auto = datasets.load_dataset(tmp_path)  # not genre names -> class folders
    assert auto.classes == ds.classes and auto.names == ds.names


def test_load_dataset_folder_with_genre_and_other_classes_is_a_class_folder(tmp_path):
    write_clip(tmp_path / "rock" / "a.wav")
    write_clip(tmp_path / "vaporwave" / "b.wav")
    ds = datasets.load_dataset(tmp_path)
    assert ds.classes == ["rock", "vaporwave"]


@pytest.mark.parametrize("setup,msg", [
    (lambda root: None, "does not exist"),
    (lambda root: root.mkdir(), "is empty"),
    (lambda root: (root / "a").mkdir(parents=True) or (root / "a" / "notes.txt").write_text("x"), "no audio files"),
    (lambda root: write_clip(root / "a.wav"), "no class subfolders"),
    (lambda root: write_clip(root / "only" / "a.wav"), "only one class"),
])
def test_load_folder_bad_folders(tmp_path, setup, msg):
    root = tmp_path / "data"
    setup(root)
    with pytest.raises(ValueError, match=msg):
        datasets.load_folder(root)


def test_load_manifest_relative_and_absolute_paths(tmp_path):
    a = write_clip(tmp_path / "audio" / "a.wav")
    b = write_clip(tmp_path / "audio" / "b.au", seed=1)
    c = write_clip(tmp_path / "elsewhere" / "c.flac", seed=2)
    csv = tmp_path / "meta" / "list.csv"
    csv.parent.mkdir()
    csv.write_text(f"path,label\n../audio/a.wav,speech\n# a comment\n\n../audio/b.au, music \n{c},speech\n")
    for loader in (datasets.load_manifest, datasets.load_dataset):
        ds = loader(csv)
        assert ds.classes == ["music", "speech"]
        assert [p.resolve() for p in ds.paths] == [a.resolve(), b.resolve(), c.resolve()]
        assert list(ds.labels) == [1, 0, 1]


@pytest.mark.parametrize("body,msg", [
    ("path,label\nmissing.wav,x\na.wav,y\n", r"1 files listed .* do not exist.*missing\.wav"),
    ("a.wav,x\nb.wav\n", r":2: expected 'path,label'"),
    ("a.wav,x\na.wav,y\n", "listed twice"),
    ("a.wav,x\nb.wav,x\n", "only one class"),
    ("path,label\n", "lists no clips"),
])
def test_load_manifest_bad_files(tmp_path, body, msg):
    write_clip(tmp_path / "a.wav")
    write_clip(tmp_path / "b.wav", seed=1)
    (tmp_path / "m.csv").write_text(body)
    with pytest.raises(ValueError, match=msg):
        datasets.load_manifest(tmp_path / "m.csv")


def test_load_dataset_bad_paths(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        datasets.load_dataset(tmp_path / "nope")
    write_clip(tmp_path / "a.wav")
    with pytest.raises(ValueError, match="not a CSV manifest"):
        datasets.load_dataset(tmp_path / "a.wav")
    with pytest.raises(ValueError, match="manifest .* does not exist"):
        datasets.load_manifest(tmp_path / "nope.csv")


def test_audio_dataset_subset_and_checks(tiny_gtzan):
    ds = datasets.load_gtzan(tiny_gtzan)
    sub = ds.subset([5, 0])
    assert len(sub) == 2 and sub.classes == ds.classes and sub.paths == [ds.paths[5], ds.paths[0]]
    assert list(sub.labels) == [ds.labels[5], ds.labels[0]]
    with pytest.raises(ValueError, match="out of range"):
        ds.subset([len(ds)])
    with pytest.raises(ValueError, match="2 paths but 1 labels"):
        datasets.AudioDataset(ds.paths[:2], [0], ["a", "b"], tiny_gtzan)
    with pytest.raises(ValueError, match="labels must lie in"):
        datasets.AudioDataset(ds.paths[:1], [2], ["a", "b"], tiny_gtzan)


# ---------------------------------------------------------------------------------------------------- splits
LABELS = np.repeat(np.arange(4), [10, 12, 7, 15])  # unbalanced on purpose


def test_stratified_folds_partition_by_clip_and_stratify():
    folds = datasets.stratified_folds(LABELS, n_folds=5, seed=0)
    assert len(folds) == 5
    tests = np.concatenate([te for _, te in folds])
    assert np.array_equal(np.sort(tests), np.arange(LABELS.size))  # every clip in exactly one test fold
    for tr, te in folds:
        assert np.intersect1d(tr, te).size == 0 and np.union1d(tr, te).size == LABELS.size
        counts = np.bincount(LABELS[te], minlength=4)
        expected = np.bincount(LABELS) / 5
        assert np.all(np.abs(counts - expected) < 1)  # each class in proportion, within one clip


def test_stratified_folds_seeded():
    a = datasets.stratified_folds(LABELS, 5, seed=1)
    b = datasets.stratified_folds(LABELS, 5, seed=1)
    c = datasets.stratified_folds(LABELS, 5, seed=2)
    assert all(np.array_equal(x[1], y[1]) for x, y in zip(a, b))
    assert not all(np.array_equal(x[1], y[1]) for x, y in zip(a, c))


@pytest.mark.parametrize("labels,n_folds,msg", [(LABELS, 1, "n_folds must be"), (LABELS, 8, "has 7 clips, fewer"),
                                                ([], 5, "labels is empty")])
def test_stratified_folds_errors(labels, n_folds, msg):
    with pytest.raises(ValueError, match=msg):
        datasets.stratified_folds(labels, n_folds)


def test_train_valid_test_split():
    tr, va, te = datasets.train_valid_test_split(LABELS, valid=0.2, test=0.2, seed=0)
    allidx = np.concatenate([tr, va, te])
    assert np.array_equal(np.sort(allidx), np.arange(LABELS.size))
    for part, frac in ((va, 0.2), (te, 0.2)):
        assert np.all(np.abs(np.bincount(LABELS[part], minlength=4) - frac * np.bincount(LABELS)) <= 1.5)
    again = datasets.train_valid_test_split(LABELS, valid=0.2, test=0.2, seed=0)
    assert all(np.array_equal(x, y) for x, y in zip((tr, va, te), again))
    tr0, va0, te0 = datasets.train_valid_test_split(LABELS, valid=0.0, test=0.25)
    assert va0.size == 0 and tr0.size + te0.size == LABELS.size


@pytest.mark.parametrize("valid,test,msg", [(-0.1, 0.2, "valid must be"), (0.1, 1.0, "test must be"),
                                            (0.5, 0.5, "valid \\+ test < 1"), (0.1, 0.0, "need test > 0"),
                                            (0.0, 0.02, "cannot stratify")])
def test_train_valid_test_split_errors(valid, test, msg):
    with pytest.raises(ValueError, match=msg):
        datasets.train_valid_test_split(LABELS, valid=valid, test=test)


@pytest.fixture
def kaggle_set(tmp_path):
    """Kaggle-like copy (.wav) of blues/classical/jazz x 3 clips, with the corrupt jazz.00054.wav."""
    make_layout(tmp_path / "gtzan", "kaggle", genres=("blues", "classical", "jazz"), n=3)
    (tmp_path / "gtzan" / "Data" / "genres_original" / "jazz" / "jazz.00054.wav").write_bytes(b"RIFF" + b"\0" * 40)
    with pytest.warns(AudioWarning):
        return datasets.load_gtzan(tmp_path / "gtzan")


def test_read_split_lists_matches_au_lists_to_wav_copy(kaggle_set, tmp_path):
    ds = kaggle_set
    idx = {n: i for i, n in enumerate(ds.names)}
    (tmp_path / "train.txt").write_text("# fault-filtered\nblues/blues.00000.au\nblues.00001.au\n\n"
                                        "classical/classical.00000.au\njazz/jazz.00000.au\n")
    (tmp_path / "test.txt").write_text("blues/blues.00002.au\r\nclassical.00001\r\njazz\\jazz.00001.au\r\n"
                                       "jazz/jazz.00054.au\r\n")  # a clip the loader skipped as unreadable
    (tmp_path / "valid.txt").write_text("genres/jazz/jazz.00002.au\n")
    with pytest.warns(AudioWarning, match="dropped 1 clips skipped as unreadable"):
        tr, te, va = datasets.read_split_lists(ds, tmp_path / "train.txt", tmp_path / "test.txt",
                                               tmp_path / "valid.txt")
    assert list(tr) == [idx["blues/blues.00000.wav"], idx["blues/blues.00001.au"],
                        idx["classical/classical.00000.wav"], idx["jazz/jazz.00000.wav"]]
    assert list(te) == [idx["blues/blues.00002.wav"], idx["classical/classical.00001.au"],
                        idx["jazz/jazz.00001.au"]]
    assert list(va) == [idx["jazz/jazz.00002.wav"]]
    tr2, te2, va2 = datasets.read_split_lists(ds, tmp_path / "train.txt", tmp_path / "valid.txt")
    assert va2.size == 0 and list(te2) == list(va)


@pytest.mark.parametrize("train,test,msg", [
    ("blues.00000.au\nrock.00007.au\n", "jazz.00000.au\n", r"names 1 clips that are not in the dataset.*rock\.00007"),
    ("blues.00000.au\njazz.00000.au\n", "jazz.00000.au\n", "in both the train and test lists"),
    ("# nothing\n", "jazz.00000.au\n", "lists no usable clips"),
    (None, "jazz.00000.au\n", "train_file .* does not exist"),
])
def test_read_split_lists_errors(kaggle_set, tmp_path, train, test, msg):
    if train is not None:
        (tmp_path / "train.txt").write_text(train)
    (tmp_path / "test.txt").write_text(test)
    with pytest.raises(ValueError, match=msg):
        datasets.read_split_lists(kaggle_set, tmp_path / "train.txt", tmp_path / "test.txt")


def test_read_split_lists_ambiguous_name(tmp_path):
    write_clip(tmp_path / "a" / "x.wav")
    write_clip(tmp_path / "b" / "x.wav", seed=1)
    ds = datasets.load_folder(tmp_path)
    (tmp_path / "tr.txt").write_text("x.wav\n")
    (tmp_path / "te.txt").write_text("b/x.wav\n")
    with pytest.raises(ValueError, match="matches 2 clips"):
        datasets.read_split_lists(ds, tmp_path / "tr.txt", tmp_path / "te.txt")
    (tmp_path / "tr.txt").write_text("a/x.wav\n")
    assert [list(x) for x in datasets.read_split_lists(ds, tmp_path / "tr.txt", tmp_path / "te.txt")] == \
        [[0], [1], []]


# --------------------------------------------------------------------------------------------- synthetic set
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


def test_synthetic_set_is_reused_resumed_and_regenerated(tmp_path, monkeypatch):
    calls = []
    real = datasets._synth_file
    monkeypatch.setattr(datasets, "_synth_file", lambda path, *a: (calls.append(path), real(path, *a)))
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
