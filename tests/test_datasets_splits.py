"""pymusicrbm.datasets.splits: stratified folds, train/valid/test split, published split lists."""
import numpy as np
import pytest
from _audio_helpers import make_layout, write_clip

from pymusicrbm import datasets
from pymusicrbm.audio import AudioWarning


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


# ------------------------------------------------------------------------------------------- shipped splits
def full_gtzan(root, ext=".wav", skip=()):
    """All 1000 GTZAN names (genres/<genre>/<genre>.000NN<ext>), each a copy of one tiny clip, except ``skip``."""
    clip = write_clip(root / "_clip.wav", seconds=0.01).read_bytes()
    for g in datasets.GTZAN_GENRES:
        (root / "genres" / g).mkdir(parents=True)
        for i in range(100):
            if f"{g}.{i:05d}" not in skip:
                (root / "genres" / g / f"{g}.{i:05d}{ext}").write_bytes(clip)
    (root / "_clip.wav").unlink()
    return root


def test_gtzan_fault_filtered_split_sizes_and_known_clips(tmp_path):
    ds = datasets.load_gtzan(full_gtzan(tmp_path))
    tr, va, te = datasets.gtzan_split(ds, "fault-filtered")
    assert (len(tr), len(va), len(te)) == (443, 197, 290)  # Kereliuk, Sturm & Larsen; torchaudio's lists
    parts = [set(tr), set(va), set(te)]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    stem = {i: n.split("/")[-1][:-4] for i, n in enumerate(ds.names)}
    # a few clips checked by hand against torchaudio/datasets/gtzan.py (filtered_train / _valid / _test)
    assert {"blues.00029", "jazz.00054", "rock.00099"} <= {stem[i] for i in tr}
    assert {"blues.00000", "hiphop.00081", "rock.00085"} <= {stem[i] for i in va}
    assert {"blues.00012", "disco.00001", "jazz.00099"} <= {stem[i] for i in te}
    # 70 faulty clips belong to no part, e.g. the repeated/mislabelled jazz.00033..00040 and hiphop.00001
    left = {stem[i] for i in range(len(ds))} - {stem[i] for p in parts for i in p}
    assert len(left) == 70 and {"hiphop.00001", "jazz.00040"} <= left
    # the same through named_split, and per genre every list holds each of the 10 genres
    assert all(np.array_equal(a, b) for a, b in zip(datasets.named_split(ds, "fault-filtered"), (tr, va, te)))
    for part in (tr, va, te):
        assert set(ds.labels[part]) == set(range(10))


def test_gtzan_split_on_a_copy_without_some_clips(tmp_path):
    """A copy without the Kaggle-corrupt jazz.00054 (train) and with an unreadable pop.00010 (valid) still splits:
    the absent clip is dropped with a warning naming it, the unreadable one as the loader skipped it."""
    root = full_gtzan(tmp_path, ext=".au", skip={"jazz.00054"})
    (root / "genres" / "pop" / "pop.00010.au").write_bytes(b"")
    with pytest.warns(AudioWarning, match="skipped 1 unreadable"):
        ds = datasets.load_gtzan(root)
    with pytest.warns(AudioWarning) as rec:
        tr, va, te = datasets.gtzan_split(ds)
    msgs = " ".join(str(w.message) for w in rec)
    assert "names 1 clips that are not in the dataset" in msgs and "jazz/jazz.00054.wav" in msgs
    assert "dropped 1 clips skipped as unreadable" in msgs and "pop.00010" in msgs
    assert (len(tr), len(va), len(te)) == (442, 196, 290)


def test_gtzan_split_on_some_genres_and_errors(tmp_path):
    make_layout(tmp_path / "g", "genres", genres=("blues", "rock"), n=30)
    ds = datasets.load_gtzan(tmp_path / "g")
    with pytest.warns(AudioWarning, match="not in the dataset"):
        tr, va, te = datasets.gtzan_split(ds)
    stems = [n.split("/")[-1].rsplit(".", 1)[0] for n in ds.names]

    def named(genre, *ranges):
        return [f"{genre}.{i:05d}" for r in ranges for i in r]

    # the torchaudio lists restricted to clips 0-29 of blues and rock, by hand
    assert [stems[i] for i in tr] == named("blues", [29]) + named("rock", range(10), range(16, 27))
    assert [stems[i] for i in va] == named("blues", range(12))
    assert [stems[i] for i in te] == named("blues", range(12, 29)) + named("rock", range(10, 16), range(27, 30))
    with pytest.raises(ValueError, match="name must be 'fault-filtered'"):
        datasets.gtzan_split(ds, "filtered")
    with pytest.raises(ValueError, match="name must be one of"):
        datasets.named_split(ds, "random")
    with pytest.raises(ValueError, match="has no official split"):
        datasets.named_split(ds, "official")
    with pytest.raises(ValueError, match="missing must be"):
        datasets.read_split_lists(ds, "a", "b", missing="ignore")


def test_named_split_official_reads_the_loaders_split(tmp_path):
    ds = datasets.TaggedDataset([tmp_path / f"{i}.wav" for i in range(5)], np.eye(5, 2, dtype=bool), ["a", "b"],
                                tmp_path, splits={"train": [0, 1, 2], "test": [4]})
    tr, va, te = datasets.named_split(ds, "official")
    assert list(tr) == [0, 1, 2] and va.size == 0 and list(te) == [4]


def test_shipped_split_files_match_their_recorded_checksums():
    import hashlib
    from pathlib import Path

    import pymusicrbm.datasets as pkg

    folder = Path(pkg.__file__).parent / "splits_data"
    recorded = {}
    for line in (folder / "SOURCES.md").read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and len(parts[0]) == 64:
            recorded[parts[1]] = parts[0]
    shipped = {p.name for p in folder.iterdir() if p.name != "SOURCES.md"}
    assert shipped and set(recorded) == shipped
    for name, digest in recorded.items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, name
