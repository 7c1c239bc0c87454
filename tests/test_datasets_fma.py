"""pymusicrbm.datasets.fma: FMA from generated files in its published layout (fma_metadata/tracks.csv with its
two header rows, genres.csv, fma_<subset>/NNN/NNNNNN.mp3)."""
import csv

import numpy as np
import pytest
from _audio_helpers import write_clip

from pymusicrbm import datasets
from pymusicrbm.audio import AudioWarning

# track_id: (subset, split, genre_top, genres_all) as in tracks.csv
TRACKS = {
    2: ("small", "training", "Hip-Hop", [21]),
    5: ("small", "test", "Hip-Hop", [21]),
    10: ("small", "training", "Pop", [10]),
    140: ("small", "validation", "Folk", [17]),
    1482: ("medium", "training", "Rock", [12, 25]),
    3000: ("medium", "test", "Folk", [17, 103]),
    99999: ("large", "training", "", [12, 26]),
    155320: ("large", "validation", "Electronic", [15]),
}
GENRES = {10: "Pop", 12: "Rock", 15: "Electronic", 17: "Folk", 21: "Hip-Hop", 25: "Punk", 26: "Post-Rock",
          103: "Singer-Songwriter"}
COLUMNS = [("album", "title"), ("artist", "bio"), ("set", "split"), ("set", "subset"), ("track", "genre_top"),
           ("track", "genres"), ("track", "genres_all"), ("track", "title")]


def write_tracks(path, tracks=TRACKS, columns=COLUMNS):
    """tracks.csv as pandas writes FMA's: level-0 names, level-1 names, the index name row, then the tracks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["", *(a for a, _ in columns)])
        w.writerow(["", *(b for _, b in columns)])
        w.writerow(["track_id", *([""] * len(columns))])
        for tid, (subset, split, top, genres_all) in tracks.items():
            values = {("album", "title"): "AWOL - A Way Of Life", ("artist", "bio"): "<p>A bio\nover, two lines</p>",
                      ("set", "split"): split, ("set", "subset"): subset, ("track", "genre_top"): top,
                      ("track", "genres"): str(genres_all[-1:]), ("track", "genres_all"): str(genres_all),
                      ("track", "title"): f"Track {tid}"}
            w.writerow([tid, *(values[c] for c in columns)])


def audio_path(root, subset, tid):
    return root / f"fma_{subset}" / f"{tid:06d}"[:3] / f"{tid:06d}.mp3"


@pytest.fixture
def fma(tmp_path):
    root = tmp_path / "fma"
    write_tracks(root / "fma_metadata" / "tracks.csv")
    with open(root / "fma_metadata" / "genres.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["genre_id", "#tracks", "parent", "title", "top_level"])
        for gid, title in GENRES.items():
            w.writerow([gid, 100, 12 if gid in (25, 26) else 17 if gid == 103 else 0, title, gid])
    for k, (tid, (subset, *_)) in enumerate(TRACKS.items()):
        if subset in ("small", "medium"):
            write_clip(audio_path(root, "medium", tid), seed=k, seconds=0.1)
        if subset == "small":
            write_clip(audio_path(root, "small", tid), seed=k, seconds=0.1)
    audio_path(root, "small", 5).write_bytes(b"")  # FMA has a few empty mp3s
    return root


def test_load_fma_small_genre_top_and_official_split(fma):
    with pytest.warns(AudioWarning, match="skipped 1 unreadable clips:\n  000/000005.mp3: zero-length"):
        ds = datasets.load_fma(fma)
    assert ds.classes == ["Folk", "Hip-Hop", "Pop"] and ds.root == fma / "fma_small"
    assert ds.names == ["000/000002.mp3", "000/000010.mp3", "000/000140.mp3"]
    assert [ds.classes[k] for k in ds.labels] == ["Hip-Hop", "Pop", "Folk"]
    assert {k: list(v) for k, v in ds.splits.items()} == {"train": [0, 1], "valid": [2], "test": []}
    assert ds.skipped == [("000/000005.mp3", "zero-length file (0 bytes)")]


def test_load_fma_medium_holds_small_and_a_split_part(fma):
    ds = datasets.load_fma(fma, subset="medium", split="training")
    assert ds.names == ["000/000002.mp3", "000/000010.mp3", "001/001482.mp3"]  # small is part of medium
    assert ds.classes == ["Hip-Hop", "Pop", "Rock"] and ds.splits == {}
    every = datasets.load_fma(fma, subset="medium")
    assert len(every) == 6 and sorted(np.concatenate(list(every.splits.values()))) == list(range(6))
    assert [every.names[i] for i in every.splits["test"]] == ["000/000005.mp3", "003/003000.mp3"]


def test_load_fma_large_skips_tracks_without_genre_top(fma):
    for k, tid in enumerate(TRACKS):
        write_clip(audio_path(fma, "large", tid), seed=k, seconds=0.05)
    with pytest.warns(AudioWarning, match=r"left out 1 tracks without track.genre_top \(e.g. 099/099999.mp3\)"):
        ds = datasets.load_fma(fma, subset="large", check=False)
    assert ds.skipped == [("099/099999.mp3", "no track.genre_top in tracks.csv")]
    assert ds.classes == ["Electronic", "Folk", "Hip-Hop", "Pop", "Rock"] and len(ds) == 7
    tags = datasets.load_fma(fma, subset="large", multilabel=True, check=False)  # it has genres_all
    assert len(tags) == 8 and "Post-Rock" in tags.tags and tags.skipped == []


def test_load_fma_multilabel_genres_all(fma):
    ds = datasets.load_fma(fma, subset="medium", multilabel=True)
    assert isinstance(ds, datasets.TaggedDataset)
    assert ds.tags == ["Pop", "Rock", "Folk", "Hip-Hop", "Punk", "Singer-Songwriter"]  # by genre id
    order = [2, 5, 10, 140, 1482, 3000]
    assert ds.names == [f"{t:06d}"[:3] + f"/{t:06d}.mp3" for t in order]
    expected = [[gid in TRACKS[t][3] for gid in (10, 12, 17, 21, 25, 103)] for t in order]
    assert np.array_equal(ds.targets, expected)
    assert {k: list(v) for k, v in ds.splits.items()} == {"train": [0, 2, 4], "valid": [3], "test": [1, 5]}


def test_load_dataset_detects_fma(fma):
    import shutil
    shutil.rmtree(fma / "fma_medium")
    with pytest.warns(AudioWarning):
        auto = datasets.load_dataset(fma)
    with pytest.warns(AudioWarning):
        ds = datasets.load_fma(fma, subset="small")
    assert auto.names == ds.names and auto.classes == ds.classes
    (fma / "fma_large").mkdir()
    with pytest.raises(ValueError, match=r"FMA audio folders of several subsets \['small', 'large'\]"):
        datasets.load_dataset(fma)


@pytest.mark.parametrize("edit,kwargs,msg", [
    (lambda r: (r / "fma_metadata" / "tracks.csv").unlink(), {}, r"tracks.csv' does not exist.*mdeff/fma"),
    (lambda r: write_tracks(r / "fma_metadata" / "tracks.csv", columns=COLUMNS[:4] + COLUMNS[5:]), {},
     r"tracks.csv:1-2: expected the two-row header .* missing \['track.genre_top'\]"),
    (lambda r: write_tracks(r / "fma_metadata" / "tracks.csv", {**TRACKS, 7: ("small", "training", "Pop", "21")}), {},
     r"tracks.csv:20: expected an integer track_id and genres_all like '\[21, 38\]', got '7' and '21'"),
    (lambda r: write_tracks(r / "fma_metadata" / "tracks.csv", {2: ("tiny", "training", "Pop", [10])}), {},
     r"tracks.csv:4: expected set.subset in \['small', 'medium', 'large'\]"),
    (lambda r: (r / "fma_metadata" / "genres.csv").write_text("genre_id,title\n10,Pop\n"), {"multilabel": True},
     r"tracks.csv:\d+: genre id 17 is not in genres.csv"),
    (None, {"subset": "tiny"}, r"subset must be one of \['small', 'medium', 'large', 'full'\]"),
    (None, {"split": "train"}, r"split must be None or one of \['training', 'validation', 'test'\]"),
    (None, {"subset": "full"}, r"audio folder .*fma_full' does not exist; unpack fma_full.zip"),
])
def test_load_fma_errors(fma, edit, kwargs, msg):
    if edit is not None:
        edit(fma)
    with pytest.raises(ValueError, match=msg):
        datasets.load_fma(fma, **kwargs)
