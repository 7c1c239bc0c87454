"""scripts/devset.py on a fake source: a temporary git repository of generated clips (no real audio in tests)."""
import hashlib
import importlib.util
import io
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pymusicrbm import datasets

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _load_script():
    spec = importlib.util.spec_from_file_location("devset", ROOT / "scripts" / "devset.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


devset = _load_script()


def _git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def fake_source(tmp_path_factory):
    """A git repo with music/<genre>/<i>.wav (two genres, two 1 s tones each), a README, and a later commit that
    changes one clip (so the pinned commit matters). Returns (repo path, pinned commit, {path: bytes})."""
    repo = tmp_path_factory.mktemp("source")
    _git(repo, "init", "-q")
    files = {}
    for genre, freq in (("calm", 220.0), ("loud", 660.0)):
        (repo / "music" / genre).mkdir(parents=True)
        for i in range(2):
            t = np.arange(8000) / 8000
            path = repo / "music" / genre / f"{i}.wav"
            sf.write(path, 0.3 * np.sin(2 * np.pi * (freq + 50 * i) * t), 8000, subtype="PCM_16")
            files[f"music/{genre}/{i}.wav"] = path.read_bytes()
    (repo / "README.md").write_text("not audio\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "clips")
    pinned = _git(repo, "rev-parse", "HEAD")
    sf.write(repo / "music" / "calm" / "0.wav", np.zeros(800), 8000, subtype="PCM_16")
    _git(repo, "commit", "-q", "-am", "change a clip")
    return repo, pinned, files


@pytest.fixture
def manifest(fake_source, tmp_path):
    repo, pinned, _ = fake_source
    entries = devset.manifest_rows(repo, "someone/fake", "music", "fake", commit=pinned)
    path = tmp_path / "manifest.csv"
    with open(path, "w") as f:
        f.write("# a comment line\n")
        devset.write_manifest(entries, f)
    return path


def test_manifest_rows_describe_the_pinned_files(fake_source):
    repo, pinned, files = fake_source
    entries = devset.manifest_rows(repo, "someone/fake", "music", "fake", commit=pinned)
    assert [e.path for e in entries] == sorted(files)
    for e in entries:
        assert e.commit == pinned and e.repo == "someone/fake"
        assert e.label == Path(e.path).parent.name and e.name == f"fake-{Path(e.path).name}"
        assert e.sha256 == hashlib.sha256(files[e.path]).hexdigest() and e.bytes == len(files[e.path])
        assert e.duration == pytest.approx(1.0)
        assert e.blob == _git(repo, "rev-parse", f"{pinned}:{e.path}")
    renamed = devset.manifest_rows(repo, "someone/fake", "music", "fake", commit=pinned, labels={"loud": ""})
    assert {e.label for e in renamed} == {"calm"}


def test_build_writes_verified_files_that_load_folder_reads(fake_source, manifest, tmp_path):
    repo, _, files = fake_source
    entries = devset.read_manifest(manifest)
    out = tmp_path / "set"
    report = devset.build(entries, out, mirrors=[repo])
    assert len(report["written"]) == 4 and not report["missing"] and not report["bad_checksum"]
    for e in entries:  # the pinned version, not the later commit's changed clip
        assert (out / e.label / e.name).read_bytes() == files[e.path]
    ds = datasets.load_dataset(out)
    assert ds.classes == ["calm", "loud"] and len(ds) == 4
    assert devset.check(entries, out) == {"ok": [str(e.rel) for e in entries], "missing": [],
                                          "bad_checksum": [], "extra": []}
    assert devset.build(entries, out, mirrors=[repo])["kept"] == [str(e.rel) for e in entries]


def test_build_from_a_bare_mirror_and_from_a_url(fake_source, manifest, tmp_path):
    repo, _, _ = fake_source
    bare = tmp_path / "mirror.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(bare)], check=True)
    entries = devset.read_manifest(manifest)
    assert len(devset.build(entries, tmp_path / "a", mirrors=[bare])["written"]) == 4
    # --download path: a URL template; here file:// into a checkout of the pinned commit
    checkout = tmp_path / "checkout"
    subprocess.run(["git", "clone", "-q", str(repo), str(checkout)], check=True)
    _git(checkout, "checkout", "-q", entries[0].commit)
    url = checkout.as_uri() + "/{path}"
    assert len(devset.build(entries, tmp_path / "b", url=url)["written"]) == 4


def test_build_finds_a_byte_identical_copy_in_another_repository(fake_source, manifest, tmp_path):
    """A repository with the same files under other paths and commits (a fork or copy) serves as a mirror through
    the blob ids; a copy whose bytes differ does not."""
    _, _, files = fake_source
    other = tmp_path / "copy"
    other.mkdir()
    _git(other, "init", "-q")
    for path, data in files.items():
        dest = other / "clips" / path.replace("/", "_")
        dest.parent.mkdir(exist_ok=True)
        dest.write_bytes(data if path != "music/loud/1.wav" else data + b"\0")
    _git(other, "add", ".")
    _git(other, "commit", "-q", "-m", "copy")
    entries = devset.read_manifest(manifest)
    report = devset.build(entries, tmp_path / "set", mirrors=[other])
    assert sorted(report["written"]) == sorted(str(e.rel) for e in entries if e.path != "music/loud/1.wav")
    assert report["missing"] == ["loud/fake-1.wav"]


def test_missing_and_corrupt_files_are_reported(fake_source, manifest, tmp_path):
    repo, _, _ = fake_source
    entries = devset.read_manifest(manifest)
    out = tmp_path / "set"
    devset.build(entries, out, mirrors=[repo])
    first, second = (out / e.rel for e in entries[:2])
    first.unlink()
    second.write_bytes(b"x" + second.read_bytes()[1:])
    (out / "calm" / "stray.wav").write_bytes(b"RIFF")
    report = devset.check(entries, out)
    assert report["missing"] == [str(entries[0].rel)] and report["bad_checksum"] == [str(entries[1].rel)]
    assert report["extra"] == ["calm/stray.wav"] and len(report["ok"]) == 2
    # build repairs both; a wrong checksum in the manifest is reported, not written
    assert sorted(devset.build(entries, out, mirrors=[repo])["written"]) == sorted(str(e.rel) for e in entries[:2])
    bad = [entries[0].__class__(**{**entries[0].__dict__, "sha256": "0" * 64})]
    report = devset.build(bad, tmp_path / "other", mirrors=[repo])
    assert report["bad_checksum"] == [str(bad[0].rel)] and not (tmp_path / "other" / bad[0].rel).exists()
    # nowhere to read from: missing
    assert devset.build(entries, tmp_path / "none", mirrors=[])["missing"] == [str(e.rel) for e in entries]


def test_main_exit_codes(fake_source, manifest, tmp_path, capsys):
    repo, _, _ = fake_source
    out = tmp_path / "set"
    assert devset.main(["check", "--manifest", str(manifest), "--out", str(out)]) == 1
    assert devset.main(["build", "--manifest", str(manifest), "--out", str(out), "--mirror", str(repo)]) == 0
    assert devset.main(["check", "--manifest", str(manifest), "--out", str(out)]) == 0
    assert "ok: 4, missing: 0, bad_checksum: 0, extra: 0" in capsys.readouterr().out
    assert devset.main(["build", "--manifest", str(manifest), "--out", str(out), "--mirror", str(tmp_path)]) == 2
    assert "is not a git repository" in capsys.readouterr().err


def test_bad_manifest_and_lfs_pointer(fake_source, tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        devset.read_manifest(tmp_path / "nope.csv")
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("path,label\nx.wav,a\n")
    with pytest.raises(ValueError, match="header must be"):
        devset.read_manifest(wrong)
    row = ["o/r", "a" * 40, "x.wav", "c" * 40, "a", "x.wav", "b" * 64, "3", "1.0"]
    twice = tmp_path / "twice.csv"
    twice.write_text(",".join(devset.FIELDS) + "\n" + (",".join(row) + "\n") * 2)
    with pytest.raises(ValueError, match="listed twice"):
        devset.read_manifest(twice)
    short = tmp_path / "short.csv"
    short.write_text(",".join(devset.FIELDS) + "\n" + ",".join(["o/r", "abc"] + row[2:]) + "\n")
    with pytest.raises(ValueError, match="40-hex commit and blob"):
        devset.read_manifest(short)
    repo = tmp_path / "lfs"
    (repo / "m" / "g").mkdir(parents=True)
    _git(repo, "init", "-q")
    (repo / "m" / "g" / "0.mp3").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 1\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "pointer")
    with pytest.raises(ValueError, match="Git LFS pointer"):
        devset.manifest_rows(repo, "o/r", "m", "x")


def test_committed_manifest_is_well_formed():
    entries = devset.read_manifest()
    assert len(entries) >= 400 and len({e.label for e in entries}) >= 4
    assert all(e.name.endswith(Path(e.path).suffix) for e in entries)
    buf = io.StringIO()
    devset.write_manifest(entries, buf)  # round trip: the committed file is what write_manifest produces
    body = [ln for ln in devset.DEFAULT_MANIFEST.read_text().splitlines() if not ln.startswith("#")]
    assert buf.getvalue().splitlines() == body
