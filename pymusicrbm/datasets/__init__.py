"""Labelled audio datasets: GTZAN in its common layouts, class folders, CSV manifests, the research sets for
genres and tags (MagnaTagATune, MTG-Jamendo, FMA), splits, and a synthetic set.

- :func:`load_gtzan`, :func:`load_folder`, :func:`load_manifest`, :func:`load_dataset` (auto-detect; :mod:`.loaders`)
  return an :class:`AudioDataset` (:mod:`.core`: paths, integer labels, class names). Clips whose header cannot be
  read (e.g. the corrupt ``jazz.00054.wav`` of the Kaggle GTZAN copy) or that are empty are skipped and reported by
  name (an :class:`~pymusicrbm.audio.AudioWarning` and ``dataset.skipped``); clips that fail later (silent, NaN) are
  reported by :func:`pymusicrbm.audio.extract`. Bad datasets raise ValueError saying what was expected.
- :class:`TaggedDataset` (:mod:`.core`): clips with sets of tags (multi-label, a ``(n_clips, n_tags)`` bool
  ``targets`` matrix), for autotagging. :func:`load_magnatagatune` (``annotations_final.csv``, top-50 tags, the
  split of Won et al. 2020) and :func:`load_mtg_jamendo` (its subsets ``top50tags``/``genre``/``instrument``/
  ``moodtheme``/``all`` and splits 0-4) (:mod:`.tagging`) return one; :func:`load_fma` (:mod:`.fma`) reads FMA's
  ``tracks.csv`` and ``fma_<subset>`` audio as an :class:`AudioDataset` of ``genre_top`` or, with
  ``multilabel=True``, a :class:`TaggedDataset` of ``genres_all``. A dataset's published split is in
  ``dataset.splits`` (``'train'``, ``'valid'``, ``'test'`` -> clip indices). :func:`load_dataset` also recognises a
  MagnaTagATune folder (``annotations_final.csv``) and an FMA folder with one audio subset.
- Splits are by clip (:mod:`.splits`), so frames or windows of one clip never straddle train and test:
  :func:`stratified_folds`, :func:`train_valid_test_split`, :func:`read_split_lists` for published split files
  (lines ``blues/blues.00012.au`` or ``blues.00012.au``), :func:`gtzan_split` for the "fault-filtered" GTZAN split
  of Kereliuk, Sturm & Larsen shipped with the package (443/197/290 clips, torchaudio's lists), and
  :func:`named_split` (:data:`SPLIT_NAMES`: ``'fault-filtered'`` or ``'official'``, the loader's split; the
  studies' ``--split-name``). Shipped lists, their sources, licences and checksums: ``splits_data/SOURCES.md``.
- :func:`load_tag_manifest` / :func:`write_tag_manifest` (:mod:`.tag_manifest`): ``path<TAB>tag1,tag2`` lists of
  tagged clips; :func:`make_synthetic_tags` (:mod:`.synthetic_tags`): a synthetic multi-label set.
- :func:`make_synthetic_genres` (:mod:`.synthetic`): ten classes of generated music written in the GTZAN layout
  (the default data).
"""
from .core import AudioDataset, TaggedDataset
from .fma import FMA_SUBSETS, load_fma
from .loaders import GTZAN_GENRES, load_dataset, load_folder, load_gtzan, load_manifest
from .splits import SPLIT_NAMES, gtzan_split, named_split, read_split_lists, stratified_folds, train_valid_test_split
from .synthetic import make_synthetic_genres
from .synthetic_tags import make_synthetic_tags
from .tag_manifest import load_tag_manifest, write_tag_manifest
from .tagging import MTG_JAMENDO_SUBSETS, load_magnatagatune, load_mtg_jamendo

__all__ = [
    "GTZAN_GENRES", "AudioDataset", "TaggedDataset", "load_gtzan", "load_folder", "load_manifest", "load_dataset",
    "make_synthetic_genres", "stratified_folds", "train_valid_test_split", "read_split_lists", "gtzan_split",
    "named_split", "SPLIT_NAMES", "load_magnatagatune", "load_mtg_jamendo", "MTG_JAMENDO_SUBSETS",
    "load_fma", "FMA_SUBSETS", "make_synthetic_tags", "load_tag_manifest", "write_tag_manifest",
]
