"""pymusicrbm.datasets.loaders: GTZAN layouts, class folders, manifests, auto-detection, unreadable clips."""
import os

import pytest
from _audio_helpers import make_layout, write_clip

from pymusicrbm import audio, datasets
from pymusicrbm.audio import SR, AudioWarning
from pymusicrbm.datasets import GTZAN_GENRES


def genre_of(path):
    return path.name.split(".")[0]


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
