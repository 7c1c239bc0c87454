"""pymusicrbm.datasets.tagging: MagnaTagATune and MTG-Jamendo from generated files in their published layouts."""
import gzip
from pathlib import Path

import numpy as np
import pytest
from _audio_helpers import write_clip

import pymusicrbm.datasets as pkg
from pymusicrbm import datasets
from pymusicrbm.audio import AudioWarning

SPLITS_DATA = Path(pkg.__file__).parent / "splits_data"


# ------------------------------------------------------------------------------------------- MagnaTagATune
def write_mtat_annotations(root, clips, tags, quoted=True):
    """annotations_final.csv as published: tab-separated, every field in double quotes, CRLF line ends."""
    q = (lambda v: f'"{v}"') if quoted else str
    lines = ["\t".join(q(h) for h in ["clip_id", *tags, "mp3_path"])]
    for k, (name, carried) in enumerate(clips.items()):
        lines.append("\t".join(q(v) for v in [2 * k + 2, *("1" if t in carried else "0" for t in tags), name]))
    root.mkdir(parents=True, exist_ok=True)
    (root / "annotations_final.csv").write_text("\r\n".join(lines) + "\r\n")


SMALL_TAGS = ["no voice", "singer", "guitar", "classical", "slow", "techno"]
SMALL_CLIPS = {  # mp3_path -> tags; counts: guitar 4, slow 4, classical 3, techno 2, singer 1, no voice 0
    "0/american_bach_soloists-j_s__bach_solo_cantatas-01-bwv54__i_aria-30-59.mp3": {"classical", "slow"},
    "0/american_bach_soloists-j_s__bach_solo_cantatas-01-bwv54__i_aria-59-88.mp3": {"classical", "guitar"},
    "3/jacob_heringman-blame_not_my_lute-01-la_bernardina-0-29.mp3": {"guitar", "slow"},
    "c/lvx_nova-lvx_nova-01-contimune-30-59.mp3": {"techno"},
    "c/lvx_nova-lvx_nova-01-contimune-233-262.mp3": {"techno", "guitar", "singer"},
    "f/magnaloops-electronica_loops_1-43-osxivilion554-0-29.mp3": {"guitar", "classical", "slow"},
    "f/empty_clip-0-29.mp3": {"slow"},
}


@pytest.fixture
def small_mtat(tmp_path):
    root = tmp_path / "mtat"
    write_mtat_annotations(root, SMALL_CLIPS, SMALL_TAGS)
    for k, name in enumerate(SMALL_CLIPS):
        if "empty" in name:
            (root / "mp3" / name).parent.mkdir(parents=True, exist_ok=True)
            (root / "mp3" / name).write_bytes(b"")
        elif "contimune-233" not in name:  # left out: a missing clip
            write_clip(root / "mp3" / name, seed=k, seconds=0.1)
    return root


def test_load_magnatagatune_all_clips_top_tags(small_mtat):
    with pytest.warns(AudioWarning, match="skipped 2 unreadable clips") as rec:
        ds = datasets.load_magnatagatune(small_mtat, top_k=3, split=None)
    assert "contimune-233-262.mp3: file not found" in str(rec[0].message)
    assert ds.tags == ["guitar", "slow", "classical"]  # the 3 most frequent over all clips, ties by column
    usable = [n for n in SMALL_CLIPS if "empty" not in n and "contimune-233" not in n]
    assert ds.names == usable and ds.root == small_mtat / "mp3" and ds.splits == {}
    expected = np.array([[t in SMALL_CLIPS[n] for t in ds.tags] for n in usable])
    assert np.array_equal(ds.targets, expected)
    assert sorted(name for name, _ in ds.skipped) == ["c/lvx_nova-lvx_nova-01-contimune-233-262.mp3",
                                                      "f/empty_clip-0-29.mp3"]
    with pytest.warns(AudioWarning):
        every = datasets.load_magnatagatune(small_mtat, top_k=None, split=None, check=False)
    assert every.tags == SMALL_TAGS and len(every) == 6  # unchecked: the empty file is kept, the missing one not


def test_load_magnatagatune_unquoted(small_mtat):
    write_mtat_annotations(small_mtat, SMALL_CLIPS, SMALL_TAGS, quoted=False)
    with pytest.warns(AudioWarning):
        a = datasets.load_magnatagatune(small_mtat, split=None)
    assert a.tags == ["guitar", "slow", "classical", "techno", "singer", "no voice"] and len(a) == 5


def test_load_magnatagatune_won2020_split(tmp_path):
    lists = {}
    for part in ("train", "valid", "test"):
        with gzip.open(SPLITS_DATA / f"mtat_won2020_{part}.txt.gz", "rt") as f:
            lists[part] = [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")]
    assert [len(v) for v in lists.values()] == [15244, 1529, 4332]  # Won et al. 2020
    rng = np.random.default_rng(0)
    tags = [f"tag{j:02d}" for j in range(55)]
    extra = [f"{i % 16:x}/not_in_the_split-{i}-0-29.mp3" for i in range(30)]
    names = [*extra[:10], *lists["test"], *extra[10:20], *lists["train"], *lists["valid"], *extra[20:]]
    p = np.linspace(0.01, 0.5, len(tags))  # tag frequencies grow with the column
    clips = {n: {t for t, pj in zip(tags, p) if rng.random() < pj} for n in names}
    root = tmp_path / "mtat"
    write_mtat_annotations(root, clips, tags)
    for n in names:
        (root / n).parent.mkdir(parents=True, exist_ok=True)
        (root / n).touch()
    for n in (lists["train"][5], lists["test"][0]):
        (root / n).unlink()  # two clips of the split lack audio
    with pytest.warns(AudioWarning, match="skipped 2 unreadable clips"):
        ds = datasets.load_magnatagatune(root, check=False)
    counts = {t: sum(t in c for c in clips.values()) for t in tags}  # over every annotated clip, extras too
    assert set(ds.tags) == set(sorted(tags, key=lambda t: -counts[t])[:50]) and len(ds.tags) == 50
    assert [counts[t] for t in ds.tags] == sorted((counts[t] for t in ds.tags), reverse=True)
    kept = {part: [n for n in v if n not in (lists["train"][5], lists["test"][0])] for part, v in lists.items()}
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 15243, "valid": 1529, "test": 4331}
    names_now = ds.names
    for part, idx in ds.splits.items():
        assert [names_now[i] for i in idx] == kept[part]
    i = ds.splits["valid"][7]
    assert list(ds.targets[i]) == [t in clips[names_now[i]] for t in ds.tags]
    assert len(ds) == 15243 + 1529 + 4331  # clips outside the split are left out
    tr, va, te = datasets.named_split(ds, "official")
    assert np.array_equal(va, ds.splits["valid"])
    with pytest.warns(AudioWarning):
        auto = datasets.load_dataset(root, check=False)  # annotations_final.csv: MagnaTagATune's defaults
    assert isinstance(auto, datasets.TaggedDataset) and auto.names == ds.names and auto.tags == ds.tags


@pytest.mark.parametrize("edit,msg", [
    (lambda r: (r / "annotations_final.csv").unlink(), "annotations_final.csv' does not exist.*mirg.city.ac.uk"),
    (lambda r: (r / "annotations_final.csv").write_text('"id"\t"guitar"\t"mp3_path"\r\n'),
     r"annotations_final.csv:1: expected a tab-separated header 'clip_id'"),
    (lambda r: (r / "annotations_final.csv").write_text(
        '"clip_id"\t"guitar"\t"slow"\t"mp3_path"\r\n"2"\t"1"\t"0"\t"0/a.mp3"\r\n"4"\t"1"\t"0/b.mp3"\r\n'),
     r"annotations_final.csv:3: expected 4 tab-separated fields \(clip_id, 2 tags, mp3_path\), got 3"),
    (lambda r: (r / "annotations_final.csv").write_text(
        '"clip_id"\t"guitar"\t"slow"\t"mp3_path"\r\n"2"\t"1"\t"yes"\t"0/a.mp3"\r\n'),
     r"annotations_final.csv:2: tag 'slow' must be 0 or 1, got 'yes'"),
    (lambda r: write_mtat_annotations(r, {"0/a.mp3": {"x"}, "0/b.mp3": set()}, ["x"]),
     r"clips of the won2020 train list are not in"),
])
def test_load_magnatagatune_bad_annotations(small_mtat, edit, msg):
    edit(small_mtat)
    with pytest.raises(ValueError, match=msg):
        datasets.load_magnatagatune(small_mtat)


def test_load_magnatagatune_bad_arguments(small_mtat, tmp_path):
    with pytest.raises(ValueError, match="split must be 'won2020' or None"):
        datasets.load_magnatagatune(small_mtat, split="lee2017")
    with pytest.raises(ValueError, match="top_k must be None or an integer >= 1"):
        datasets.load_magnatagatune(small_mtat, top_k=0)
    with pytest.raises(ValueError, match="does not exist"):
        datasets.load_magnatagatune(tmp_path / "nope")
    with pytest.raises(ValueError, match="no MagnaTagATune audio folders 0-f"):
        datasets.load_magnatagatune(small_mtat, split=None, audio_dir=tmp_path)
    for f in (small_mtat / "mp3").rglob("*.mp3"):
        f.unlink()
    with pytest.raises(ValueError, match="none of the 7 mp3 files .* is the audio folder right"):
        with pytest.warns(AudioWarning):
            datasets.load_magnatagatune(small_mtat, split=None)


# --------------------------------------------------------------------------------------------- MTG-Jamendo
HEADER = "TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS\n"
TRACKS = {  # part -> [(track number, tags)]
    "train": [(215, ["genre---metal"]), (2634, ["genre---folk", "genre---instrumentalpop", "instrument---guitar"]),
              (1376256, ["genre---chillout", "mood/theme---corporate"])],
    "validation": [(3300, ["genre---rock", "mood/theme---happy"])],
    "test": [(17, ["instrument---piano"]), (1400, ["genre---metal", "genre---rock"])],
}


def jamendo_row(track, tags):
    return f"track_{track:07d}\tartist_000014\talbum_000031\t{track % 100:02d}/{track}.mp3\t151.4\t" + "\t".join(tags)


@pytest.fixture
def jamendo(tmp_path):
    repo = tmp_path / "mtg-jamendo-dataset"
    folder = repo / "data" / "splits" / "split-2"
    folder.mkdir(parents=True)
    for part, rows in TRACKS.items():
        (folder / f"autotagging_top50tags-{part}.tsv").write_text(HEADER + "\n".join(jamendo_row(*r) for r in rows)
                                                                  + "\n")
    whole = [r for rows in TRACKS.values() for r in rows]
    (repo / "data" / "autotagging_top50tags.tsv").write_text(HEADER + "\n".join(jamendo_row(*r) for r in whole))
    audio = tmp_path / "audio"
    for k, (track, _) in enumerate(whole):
        low = track == 2634  # the low-quality download names files NN/NNNN.low.mp3
        write_clip(audio / f"{track % 100:02d}" / f"{track}{'.low' if low else ''}.mp3", seed=k, seconds=0.1)
    return repo, audio


def test_load_mtg_jamendo_split(jamendo):
    repo, audio = jamendo
    ds = datasets.load_mtg_jamendo(repo, split=2, audio_dir=audio)
    every = sorted({t for rows in TRACKS.values() for _, tags in rows for t in tags})
    assert ds.tags == every and ds.root == audio and ds.skipped == []
    order = [r for part in ("train", "validation", "test") for r in TRACKS[part]]
    assert ds.names == [f"{t % 100:02d}/{t}{'.low' if t == 2634 else ''}.mp3" for t, _ in order]
    assert np.array_equal(ds.targets, [[t in tags for t in ds.tags] for _, tags in order])
    assert {k: list(v) for k, v in ds.splits.items()} == {"train": [0, 1, 2], "valid": [3], "test": [4, 5]}
    whole = datasets.load_mtg_jamendo(repo / "data", split=None, audio_dir=audio)  # data/ itself works too
    assert whole.splits == {} and whole.names == ds.names and whole.tags == ds.tags


def test_load_mtg_jamendo_missing_audio_is_skipped(jamendo):
    repo, audio = jamendo
    (audio / "17" / "17.mp3").unlink()
    with pytest.warns(AudioWarning, match=r"skipped 1 unreadable clips:\n  17/17.mp3: file not found"):
        ds = datasets.load_mtg_jamendo(repo, split=2, audio_dir=audio, check=False)
    assert len(ds) == 5 and list(ds.splits["test"]) == [4]


@pytest.mark.parametrize("edit,kwargs,msg", [
    (None, dict(split=0), r"split folder .*split-0' does not exist.*MTG/mtg-jamendo-dataset"),
    (None, dict(subset="genre"), r"autotagging_genre-train.tsv' does not exist"),
    (None, dict(subset="mood"), r"subset must be one of \['top50tags', 'genre', 'instrument', 'moodtheme', 'all'\]"),
    (None, dict(split="0"), "split must be None or a split number"),
    (None, dict(audio_dir="/nonexistent/audio"), "audio_dir '/nonexistent/audio' does not exist"),
    ("TRACK\tPATH\n", {}, r"validation.tsv:1: expected the header TRACK_ID ARTIST_ID ALBUM_ID PATH DURATION TAGS"),
    (HEADER + jamendo_row(3300, ["genre---rock"]) + "\n" + jamendo_row(3301, ["rock"]) + "\n", {},
     r"validation.tsv:3: tags must look like 'genre---rock', got \['rock'\]"),
    (HEADER + "track_0003300\tartist_1\talbum_1\t00/3300.mp3\n", {},
     r"validation.tsv:2: expected TRACK_ID, ARTIST_ID, ALBUM_ID, PATH, DURATION and at least one tag"),
    (HEADER + jamendo_row(215, ["genre---metal"]) + "\n", {},
     r"15/215.mp3 is listed in both autotagging_top50tags-train.tsv and autotagging_top50tags-validation.tsv"),
])
def test_load_mtg_jamendo_errors(jamendo, edit, kwargs, msg):
    repo, audio = jamendo
    if edit is not None:
        (repo / "data" / "splits" / "split-2" / "autotagging_top50tags-validation.tsv").write_text(edit)
    with pytest.raises(ValueError, match=msg):
        datasets.load_mtg_jamendo(repo, **{"split": 2, "audio_dir": audio, **kwargs})


def test_load_mtg_jamendo_without_audio(jamendo, tmp_path):
    repo, _ = jamendo
    with pytest.raises(ValueError, match="none of the 6 audio files"), pytest.warns(AudioWarning):
        datasets.load_mtg_jamendo(repo, split=2)  # audio_dir defaults to root, which holds no audio
