"""pymusicrbm.datasets.core: AudioDataset."""
import pytest

from pymusicrbm import datasets


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


def test_tagged_dataset_checks_and_selection(tmp_path):
    import numpy as np
    paths = [tmp_path / f"{i}.wav" for i in range(4)]
    y = np.array([[1, 0, 1], [0, 0, 1], [1, 1, 1], [0, 0, 0]])
    ds = datasets.TaggedDataset(paths, y, ["rock", "piano", "slow"], tmp_path, splits={"train": [0, 1], "test": [3]})
    assert ds.targets.dtype == bool and list(ds.tag_counts()) == [2, 1, 3]
    assert ds.names == ["0.wav", "1.wav", "2.wav", "3.wav"]
    top = ds.top_tags(2)
    assert top.tags == ["slow", "rock"] and (top.targets == y[:, [2, 0]].astype(bool)).all()
    assert list(top.splits["train"]) == [0, 1]
    sub = ds.subset([2, 3])
    assert sub.paths == paths[2:] and (sub.targets == y[2:].astype(bool)).all() and sub.splits == {}
    with pytest.raises(ValueError, match=r"shape \(n_clips, n_tags\) = \(4, 2\)"):
        datasets.TaggedDataset(paths, y, ["rock", "piano"], tmp_path)
    with pytest.raises(ValueError, match="0/1 or bool"):
        datasets.TaggedDataset(paths, y * 2, ["a", "b", "c"], tmp_path)
    with pytest.raises(ValueError, match="unique"):
        datasets.TaggedDataset(paths, y, ["a", "a", "c"], tmp_path)
    with pytest.raises(ValueError, match="split 'test' has indices outside"):
        datasets.TaggedDataset(paths, y, ["a", "b", "c"], tmp_path, splits={"test": [4]})
    with pytest.raises(ValueError, match=r"unknown tags \['jazz'\]"):
        ds.select_tags(["jazz"])
    with pytest.raises(ValueError, match="k must be >= 1"):
        ds.top_tags(0)
