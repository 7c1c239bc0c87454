"""Labelled audio datasets: GTZAN in its common layouts, class folders, CSV manifests, splits, and a synthetic set.

- :func:`load_gtzan`, :func:`load_folder`, :func:`load_manifest`, :func:`load_dataset` (auto-detect; :mod:`.loaders`)
  return an :class:`AudioDataset` (:mod:`.core`: paths, integer labels, class names). Clips whose header cannot be
  read (e.g. the corrupt ``jazz.00054.wav`` of the Kaggle GTZAN copy) or that are empty are skipped and reported by
  name (an :class:`~pymusicrbm.audio.AudioWarning` and ``dataset.skipped``); clips that fail later (silent, NaN) are
  reported by :func:`pymusicrbm.audio.extract`. Bad datasets raise ValueError saying what was expected.
- Splits are by clip (:mod:`.splits`), so frames or windows of one clip never straddle train and test:
  :func:`stratified_folds`, :func:`train_valid_test_split`, and :func:`read_split_lists` for published split files
  such as the "fault-filtered" GTZAN split of Kereliuk & Sturm (lines ``blues/blues.00012.au`` or
  ``blues.00012.au``).
- :class:`TaggedDataset` (:mod:`.core`): clips with sets of tags (multi-label), for autotagging.
- :func:`make_synthetic_genres` (:mod:`.synthetic`): ten classes of generated music written in the GTZAN layout
  (the default data).
"""
from .core import AudioDataset, TaggedDataset
from .fma import FMA_SUBSETS, load_fma
from .loaders import GTZAN_GENRES, load_dataset, load_folder, load_gtzan, load_manifest
from .splits import SPLIT_NAMES, gtzan_split, named_split, read_split_lists, stratified_folds, train_valid_test_split
from .synthetic import make_synthetic_genres
from .tagging import MTG_JAMENDO_SUBSETS, load_magnatagatune, load_mtg_jamendo

__all__ = [
    "GTZAN_GENRES", "AudioDataset", "TaggedDataset", "load_gtzan", "load_folder", "load_manifest", "load_dataset",
    "make_synthetic_genres", "stratified_folds", "train_valid_test_split", "read_split_lists", "gtzan_split",
    "named_split", "SPLIT_NAMES", "load_magnatagatune", "load_mtg_jamendo", "MTG_JAMENDO_SUBSETS",
    "load_fma", "FMA_SUBSETS",
]
