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
