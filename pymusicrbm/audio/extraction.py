"""Features of every clip of a dataset: checked parameters, a content-keyed disk cache, parallel extraction."""
from __future__ import annotations

import hashlib
import json
import os
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .. import distributed
from .features import _log_mode, dft_frames, mel_spectrogram, mfcc_features
from .io import SR, AudioError, AudioWarning, _check_load_args, _load_bytes

__all__ = ["FEATURE_VERSION", "feature_params", "extract"]

# Part of every cache key: bump it whenever a feature's computation changes so stale cache entries are never used.
FEATURE_VERSION = "1"


_KIND_DEFAULTS: dict[str, dict[str, Any]] = {
    # sr/offset/duration (mel: seconds) say which audio is loaded; the rest go to the feature function.
    "dft": {"sr": SR, "offset": 0.0, "duration": None, "frame_length": 1024, "hop_length": None, "log": False,
            "log_scale": 1.0, "window": None},
    "mel": {"sr": SR, "offset": 0.0, "seconds": 10.0, "n_mels": 64, "n_fft": 1024, "hop_length": 512, "ref": "max",
            "top_db": 80.0},
    "mfcc": {"sr": SR, "offset": 0.0, "duration": None, "n_mfcc": 20, "n_fft": 1024, "hop_length": 512,
             "n_mels": 40},
}


def feature_params(kind: str, params: dict | None = None) -> dict:
    """The full parameter dict ``extract`` uses for ``kind``: defaults filled in, values checked.

    Equal feature settings give equal dicts (so ``{}`` and the explicit defaults share cache entries).
    Raises ValueError for an unknown kind, an unknown parameter name or a bad value.
    """
    if kind not in _KIND_DEFAULTS:
        raise ValueError(f"kind must be one of {sorted(_KIND_DEFAULTS)}, got {kind!r}")
    params = dict(params or {})
    unknown = sorted(set(params) - set(_KIND_DEFAULTS[kind]))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for kind {kind!r}; expected some of "
                         f"{sorted(_KIND_DEFAULTS[kind])}")
    p = {**_KIND_DEFAULTS[kind], **params}
    _check_load_args(p["sr"], p.get("duration", p.get("seconds")), p["offset"])
    p["offset"] = float(p["offset"])
    if kind == "dft":
        p["hop_length"] = p["frame_length"] if p["hop_length"] is None else p["hop_length"]
        p["log"] = _log_mode(p["log"])
        p["log_scale"] = float(p["log_scale"])
    if kind == "mel" and p["seconds"] is not None:
        p["seconds"] = float(p["seconds"])
    # Run the feature once on a short test tone so a bad value fails here, not in every worker.
    n = max(2 * int(p.get("frame_length", p.get("n_fft", 1024))), 4096)
    t = np.arange(n, dtype=np.float32) / p["sr"]
    _feature(kind, (0.5 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32), {**p, "seconds": n / p["sr"]}
             if kind == "mel" else p)
    json.dumps(p)  # every value must be plain JSON (it is part of the cache key)
    return p


def _compute(kind: str, y: np.ndarray, p: dict) -> np.ndarray:
    """The feature of one clip (what ``extract`` runs per clip and caches)."""
    return _feature(kind, y, p)


def _feature(kind: str, y: np.ndarray, p: dict) -> np.ndarray:
    if kind == "dft":
        return dft_frames(y, p["frame_length"], p["hop_length"], p["log"] or False, window=p["window"],
                          log_scale=p["log_scale"])
    if kind == "mel":
        return mel_spectrogram(y, p["sr"], p["n_mels"], p["n_fft"], p["hop_length"], p["seconds"], ref=p["ref"],
                               top_db=p["top_db"])
    return mfcc_features(y, p["sr"], p["n_mfcc"], n_fft=p["n_fft"], hop_length=p["hop_length"], n_mels=p["n_mels"])


def _cache_load(path: Path) -> np.ndarray | None:
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        return None
    except Exception:  # truncated / foreign file: recompute and overwrite it
        return None


def _cache_save(path: Path, arr: np.ndarray) -> bool:
    """Write atomically (temp file + os.replace): an interrupted run never leaves a half-written entry."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            np.save(f, arr, allow_pickle=False)
        os.replace(tmp, path)
        return True
    except OSError:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        return False


def _extract_one(path: str, kind: str, p: dict, cache_dir: str | None, key_prefix: str):
    """-> (features or None, reason or None, cache_hit, cache_write_failed). Runs in a joblib worker."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        return None, f"cannot read file: {err.strerror or err}", False, False
    cache_file = None
    if cache_dir is not None:
        key = hashlib.sha256((key_prefix + hashlib.sha256(data).hexdigest()).encode()).hexdigest()
        cache_file = Path(cache_dir) / kind / f"{key}.npy"
        cached = _cache_load(cache_file)
        if cached is not None:
            return cached, None, True, False
    duration = p["duration"] if kind != "mel" else None if p["seconds"] is None else p["seconds"] + 0.25
    # (mel reads a little past `seconds` so resampling has no edge effect inside the kept part)
    try:
        y = _load_bytes(data, path, p["sr"], duration, p["offset"])
        feat = _compute(kind, y, p)
    except AudioError as err:
        return None, err.reason, False, False
    except Exception as err:  # anything else a strange file provokes: report it, keep the run going
        return None, f"{type(err).__name__}: {err}", False, False
    write_failed = cache_file is not None and not _cache_save(cache_file, feat)
    return feat, None, False, write_failed


def _clip_list(dataset) -> tuple[list[str], list[str]]:
    paths = [str(p) for p in (dataset.paths if hasattr(dataset, "paths") else dataset)]
    names = list(dataset.names) if hasattr(dataset, "names") else paths
    return paths, names


def _sharded(run, n: int, cached: bool) -> list:
    """``run(indices)`` over all n clips in a process group: each rank extracts its share (rows rank, rank +
    world, ...). With a cache folder the ranks then read the others' clips from it (one shared by every machine:
    each clip is extracted once; a folder per machine: a machine recomputes what it lacks); the failures, which
    are not cached, are exchanged. Without a cache the features themselves are exchanged by collectives."""
    mine = distributed.shard_indices(n).tolist()
    done = dict(zip(mine, run(mine)))
    if cached:
        failed = {i: r for i, r in done.items() if r[0] is None}
        for part in distributed.all_gather_object(failed, what="exchanging the clips that failed"):
            done.update(part)  # (also waits until every rank has written its share to the cache)
        rest = [i for i in range(n) if i not in done]
        done.update(zip(rest, run(rest)))
    else:
        for part in distributed.all_gather_object(done, what="exchanging the extracted features"):
            done.update(part)
    return [done[i] for i in range(n)]


def extract(dataset, kind: str, params: dict | None = None, cache_dir=None, n_jobs: int = 2, verbose: int = 1,
            *, return_errors: bool = False):
    """Features of every clip of ``dataset`` (an ``AudioDataset`` or a sequence of paths), in dataset order.

    ``kind``: ``"dft"`` -> (n_frames, 513) from :func:`dft_frames`; ``"mel"`` -> (n_mels, n_frames) from
    :func:`mel_spectrogram`; ``"mfcc"`` -> (n_frames, n_mfcc). ``params`` overrides the defaults of
    :func:`feature_params` (e.g. ``{"n_mels": 96}``, ``{"log": True}``, ``{"duration": 30}``).

    ``cache_dir``: entries ``<cache_dir>/<kind>/<sha256>.npy`` keyed by the file's content, the full parameters and
    :data:`FEATURE_VERSION` (renaming or moving clips keeps their cache; editing a file or a parameter does not),
    plain ``.npy`` arrays written atomically, read with ``allow_pickle=False``. ``n_jobs`` joblib threads
    (1: a plain loop). A clip that fails gives ``None`` and is reported, with its name and the reason, in one
    :class:`AudioWarning`; ``return_errors=True`` also returns that list as ``(features, [(name, reason)])``.

    In a ``torch.distributed`` process group (``torchrun``) every rank calls ``extract`` with the same dataset:
    each extracts its share of the clips and every rank returns all of them, through ``cache_dir`` when given
    (a folder every machine sees extracts each clip once) or else through collectives.
    """
    p = feature_params(kind, params)
    if not isinstance(n_jobs, (int, np.integer)) or n_jobs == 0:
        raise ValueError(f"n_jobs must be a nonzero integer (negative: all cores but n_jobs+1), got {n_jobs!r}")
    paths, names = _clip_list(dataset)
    if cache_dir is not None:
        cache_dir = Path(cache_dir)
        try:
            (cache_dir / kind).mkdir(parents=True, exist_ok=True)
            probe = cache_dir / kind / f".write-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as err:
            raise ValueError(f"cache_dir {str(cache_dir)!r} is not a writable folder: {err}") from None
        cache_dir = str(cache_dir)
    key_prefix = json.dumps({"version": FEATURE_VERSION, "kind": kind, "params": p}, sort_keys=True)

    from tqdm.auto import tqdm

    def run(indices) -> list:
        jobs = ((paths[i], kind, p, cache_dir, key_prefix) for i in indices)
        if n_jobs == 1 or len(indices) <= 1:
            results = (_extract_one(*job) for job in jobs)
        else:
            from joblib import Parallel, delayed

            # Threads, not processes: decoding, FFTs and file I/O release the GIL, and a worker process would spend
            # seconds importing the package (and torch) before its first clip.
            results = Parallel(n_jobs=n_jobs, prefer="threads", return_as="generator")(
                delayed(_extract_one)(*job) for job in jobs)
        return list(tqdm(results, total=len(indices), desc=f"features ({kind})", unit="clip",
                         disable=not verbose or not distributed.is_main()))

    results = _sharded(run, len(paths), cache_dir is not None) if distributed.is_distributed() else \
        run(range(len(paths)))
    features: list[np.ndarray | None] = []
    errors: list[tuple[str, str]] = []
    write_failures = 0
    for name, (feat, reason, _hit, write_failed) in zip(names, results):
        features.append(feat)
        write_failures += write_failed
        if reason is not None:
            errors.append((name, reason))
    if errors:
        lines = "\n".join(f"  {name}: {reason}" for name, reason in errors)
        warnings.warn(f"extract({kind!r}): {len(errors)} of {len(paths)} clips failed and are None:\n{lines}",
                      AudioWarning, stacklevel=2)
    if write_failures:
        warnings.warn(f"extract({kind!r}): could not write {write_failures} cache entries under {cache_dir}",
                      AudioWarning, stacklevel=2)
    return (features, errors) if return_errors else features
