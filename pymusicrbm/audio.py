"""Audio loading and features for music.

- ``load_audio``: wav / au / flac / mp3 / ogg / aiff via soundfile (libsndfile), other formats through librosa's
  audioread fallback; mono, resampled to 22050 Hz; unusable clips raise :class:`AudioError` naming the file.
- ``dft_frames``: |DFT| of 1024-sample frames (46.44 ms at 22050 Hz), non-overlapping by default as in Hamel & Eck
  (ISMIR 2010), 513 bins, optional log compression; ``PCAWhitener`` whitens them (fit on training clips only).
- ``mel_spectrogram`` (dB, fixed frame count for the convolutional models), ``mel_to_audio`` (Griffin-Lim),
  ``mfcc_features`` (baseline).
- ``extract``: the same features for every clip of a dataset, cached on disk (key: file content, parameters,
  :data:`FEATURE_VERSION`), computed in parallel with joblib, with a tqdm progress bar; a clip that fails gives
  ``None`` and is reported by name, it never stops the run.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

__all__ = [
    "SR", "FEATURE_VERSION", "AUDIO_EXTENSIONS", "AudioError", "AudioWarning", "load_audio", "dft_frames",
    "mel_spectrogram", "mel_to_audio", "mfcc_features", "feature_params", "extract", "PCAWhitener",
]

SR = 22050
# Part of every cache key: bump it whenever a feature's computation changes so stale cache entries are never used.
FEATURE_VERSION = "1"
AUDIO_EXTENSIONS = frozenset({".wav", ".au", ".snd", ".flac", ".mp3", ".ogg", ".oga", ".aif", ".aiff", ".m4a"})
# A clip whose peak is at or below this is "silent": below the 24-bit quantisation step (2**-23 = 1.2e-7).
SILENCE_PEAK = 1e-7
# Floor for log="log" compression: about -100 dB of a unit-amplitude sine's |DFT| peak (512 for 1024 samples).
LOG_EPS = 1e-3


class AudioError(ValueError):
    """A clip that cannot be used: missing, unreadable, empty, silent, non-finite or too short.

    ``str(err)`` is ``"<path>: <reason>"``; ``err.path`` and ``err.reason`` hold the parts.
    """

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # picklable across processes despite the two-argument constructor
        return type(self), (self.path, self.reason)


class AudioWarning(UserWarning):
    """Clips skipped while loading a dataset or extracting features (each named, with the reason)."""


# --------------------------------------------------------------------------------------------------- loading
def _check_load_args(sr, duration, offset) -> None:
    if not (isinstance(sr, (int, np.integer)) and sr > 0):
        raise ValueError(f"sr must be a positive integer sample rate, got {sr!r}")
    if duration is not None and not duration > 0:
        raise ValueError(f"duration must be None or > 0 seconds, got {duration!r}")
    if not offset >= 0:
        raise ValueError(f"offset must be >= 0 seconds, got {offset!r}")


# Formats libsndfile reads itself; anything else (m4a, ...) is handed to librosa's audioread fallback.
_LIBSNDFILE_EXTENSIONS = frozenset({".wav", ".au", ".snd", ".flac", ".ogg", ".oga", ".aif", ".aiff", ".mp3"})


def _fallback_ok(path: Path) -> bool:
    return path.suffix.lower() not in _LIBSNDFILE_EXTENSIONS


def _decode(source, path: Path, duration, offset) -> tuple[np.ndarray, int]:
    """Decode ``source`` (a path or a file-like holding the file's bytes) to (samples[, channels], native rate)."""
    try:
        with sf.SoundFile(source) as f:
            native = f.samplerate
            start = int(round(offset * native))
            if start:
                if start >= f.frames:
                    return np.zeros(0, np.float32), native
                f.seek(start)
            n = -1 if duration is None else int(round(duration * native))
            return f.read(frames=n, dtype="float32", always_2d=True), native
    except Exception as sf_err:
        if not _fallback_ok(path):
            # audioread (librosa's fallback) has nothing better for these, and leaks the file handle on failure
            raise AudioError(path, f"cannot decode audio: {sf_err}") from None
        import librosa

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # librosa warns that soundfile failed; we know, and report below
                y, native = librosa.load(path, sr=None, mono=True, offset=offset, duration=duration)
            return y, int(native)
        except Exception as lr_err:
            detail = f"{type(lr_err).__name__}: {lr_err}" if str(lr_err) else type(lr_err).__name__
            raise AudioError(path, f"cannot decode audio (soundfile: {sf_err}; audioread: {detail})") from None


def _finish(y: np.ndarray, native: int, sr: int, path: Path) -> np.ndarray:
    if y.ndim == 2:
        y = y.mean(axis=1)  # mono: average the channels
    if y.size == 0:
        raise AudioError(path, "no audio samples (empty, or offset past the end)")
    if not np.isfinite(y).all():
        raise AudioError(path, f"{int(np.sum(~np.isfinite(y)))} non-finite (NaN/Inf) samples")
    if float(np.max(np.abs(y))) <= SILENCE_PEAK:
        raise AudioError(path, "silent (all samples are zero)")
    if native != sr:
        import librosa

        y = librosa.resample(y, orig_sr=native, target_sr=sr)  # soxr_hq
    return np.ascontiguousarray(y, dtype=np.float32)


def load_audio(path, sr: int = SR, duration: float | None = None, offset: float = 0.0) -> np.ndarray:
    """Load ``path`` as float32 mono at ``sr`` Hz, ``duration`` seconds (None: to the end) from ``offset``.

    Channels are averaged; other sample rates are resampled (soxr, high quality). Raises :class:`AudioError`
    (a ValueError naming the file) for a missing, unreadable/corrupt, zero-length, silent or NaN/Inf clip.
    """
    _check_load_args(sr, duration, offset)
    path = Path(path)
    if not path.is_file():
        raise AudioError(path, "not a regular file" if path.exists() else "no such file")
    if path.stat().st_size == 0:
        raise AudioError(path, "zero-length file (0 bytes)")
    y, native = _decode(path, path, duration, offset)
    return _finish(y, native, sr, path)


def _load_bytes(data: bytes, path: Path, sr: int, duration, offset) -> np.ndarray:
    """``load_audio`` on bytes already read (``extract`` hashes and decodes one read of the file)."""
    if len(data) == 0:
        raise AudioError(path, "zero-length file (0 bytes)")
    y, native = _decode(io.BytesIO(data), path, duration, offset)
    return _finish(y, native, sr, path)


# -------------------------------------------------------------------------------------------------- features
def _check_signal(y, fn: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{fn}: y must be a 1-D mono signal, got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.floating):
        y = y.astype(np.float32)
    if y.size == 0:
        raise AudioError("<signal>", f"{fn}: empty signal")
    if not np.isfinite(y).all():
        raise AudioError("<signal>", f"{fn}: signal contains NaN/Inf")
    return np.ascontiguousarray(y, dtype=np.float32)


def _positive_int(value, name: str, fn: str, minimum: int = 1) -> int:
    if not (isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= minimum):
        raise ValueError(f"{fn}: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _log_mode(log) -> str | None:
    if log is False or log is None:
        return None
    if log is True or log == "log1p":
        return "log1p"
    if log == "log":
        return "log"
    raise ValueError(f"dft_frames: log must be False, True, 'log1p' or 'log', got {log!r}")


def dft_frames(y, frame_length: int = 1024, hop_length: int | None = None, log=False, *,
               window: str | None = None, log_scale: float = 1.0) -> np.ndarray:
    """|DFT| of frames of ``y``: float32 array (n_frames, frame_length // 2 + 1), 513 bins for 1024 samples.

    Frames start every ``hop_length`` samples (default ``frame_length``: non-overlapping, as in Hamel & Eck);
    a trailing partial frame is dropped. ``window=None`` is the rectangular window of the plain DFT (Hamel & Eck);
    any scipy window name (e.g. ``"hann"``) may be given. ``log``: ``False``; ``True``/``"log1p"`` for
    ``log1p(log_scale * |X|)`` (linear near 0, logarithmic for loud bins); ``"log"`` for ``log(LOG_EPS + |X|)``.
    Raises :class:`AudioError` if ``y`` is shorter than one frame.
    """
    fn = "dft_frames"
    y = _check_signal(y, fn)
    frame_length = _positive_int(frame_length, "frame_length", fn, 2)
    hop = frame_length if hop_length is None else _positive_int(hop_length, "hop_length", fn)
    mode = _log_mode(log)
    if not (np.isfinite(log_scale) and log_scale > 0):
        raise ValueError(f"{fn}: log_scale must be a finite number > 0, got {log_scale!r}")
    if y.size < frame_length:
        raise AudioError("<signal>", f"signal of {y.size} samples is shorter than one frame of {frame_length} "
                                     f"samples ({1000 * frame_length / SR:.2f} ms at {SR} Hz)")
    frames = np.lib.stride_tricks.sliding_window_view(y, frame_length)[::hop]
    if window is not None:
        import scipy.signal

        try:
            w = scipy.signal.get_window(window, frame_length, fftbins=True).astype(np.float32)
        except ValueError as err:
            raise ValueError(f"{fn}: unknown window {window!r}: {err}") from None
        frames = frames * w
    mag = np.abs(np.fft.rfft(frames, axis=1)).astype(np.float32, copy=False)
    if mode == "log1p":
        mag = np.log1p(np.float32(log_scale) * mag)
    elif mode == "log":
        mag = np.log(np.float32(LOG_EPS) + mag)
    return np.ascontiguousarray(mag, dtype=np.float32)


def mel_spectrogram(y, sr: int = SR, n_mels: int = 64, n_fft: int = 1024, hop_length: int = 512,
                    seconds: float | None = 10.0, *, ref="max", top_db: float | None = 80.0) -> np.ndarray:
    """Mel power spectrogram in dB, float32 (n_mels, n_frames), Hann window ``n_fft``, centred frames.

    The first ``seconds`` of ``y`` are used, zero-padded if the clip is shorter, giving exactly
    ``1 + int(seconds * sr) // hop_length`` frames (431 for 10 s at 22050 Hz, hop 512); ``seconds=None`` uses
    the whole clip.

    dB scale: ``ref="max"`` (default) puts each clip's loudest bin at 0 dB and clamps at ``-top_db``, so values
    lie in [-80, 0]: the features do not depend on recording gain (GTZAN levels differ widely between clips),
    zero padding lands exactly on the floor, and ``x / 80 + 1`` maps to [0, 1] for the models. A number for
    ``ref`` gives absolute levels ``10 log10(S / ref)`` instead (still clamped ``top_db`` below the maximum).
    """
    import librosa

    fn = "mel_spectrogram"
    y = _check_signal(y, fn)
    _positive_int(sr, "sr", fn)
    n_mels = _positive_int(n_mels, "n_mels", fn)
    n_fft = _positive_int(n_fft, "n_fft", fn, 2)
    hop_length = _positive_int(hop_length, "hop_length", fn)
    if ref != "max" and not (isinstance(ref, (int, float, np.integer, np.floating)) and ref > 0):
        raise ValueError(f"{fn}: ref must be 'max' or a positive number, got {ref!r}")
    if top_db is not None and not top_db > 0:
        raise ValueError(f"{fn}: top_db must be None or > 0, got {top_db!r}")
    if seconds is not None:
        if not seconds > 0:
            raise ValueError(f"{fn}: seconds must be None or > 0, got {seconds!r}")
        n = int(seconds * sr)
        y = y[:n] if y.size >= n else np.pad(y, (0, n - y.size))
    S = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels, power=2.0,
                                       center=True, pad_mode="constant")
    db = librosa.power_to_db(S, ref=np.max if ref == "max" else float(ref), top_db=top_db)
    return np.ascontiguousarray(db, dtype=np.float32)


def mel_to_audio(mel_db, sr: int = SR, n_fft: int = 1024, hop_length: int = 512, n_iter: int = 32, *,
                 seed: int = 0, normalize: bool = True) -> np.ndarray:
    """Invert a dB mel spectrogram (as from :func:`mel_spectrogram`) to audio with Griffin-Lim, float32.

    Equivalent to ``librosa.feature.inverse.mel_to_audio`` on ``db_to_power(mel_db)``, but with a seeded phase
    initialisation so the result is reproducible. ``ref="max"`` spectrograms have lost the absolute level, so with
    ``normalize`` (default) the output is scaled to a peak of 0.9.
    """
    import librosa

    fn = "mel_to_audio"
    M = np.asarray(mel_db, dtype=np.float32)
    if M.ndim != 2 or M.shape[1] < 1:
        raise ValueError(f"{fn}: mel_db must be 2-D (n_mels, n_frames), got shape {M.shape}")
    if not np.isfinite(M).all():
        raise ValueError(f"{fn}: mel_db contains NaN/Inf")
    n_iter = _positive_int(n_iter, "n_iter", fn)
    S = librosa.feature.inverse.mel_to_stft(librosa.db_to_power(M), sr=sr, n_fft=n_fft, power=2.0)
    y = librosa.griffinlim(S, n_iter=n_iter, hop_length=hop_length, n_fft=n_fft, random_state=seed)
    if normalize:
        peak = float(np.max(np.abs(y))) if y.size else 0.0
        if peak > 0:
            y = y * (0.9 / peak)
    return np.ascontiguousarray(y, dtype=np.float32)


def mfcc_features(y, sr: int = SR, n_mfcc: int = 20, *, n_fft: int = 1024, hop_length: int = 512,
                  n_mels: int = 40) -> np.ndarray:
    """MFCCs, float32 (n_frames, n_mfcc): DCT-II of the log mel power spectrum (librosa), centred frames."""
    import librosa

    fn = "mfcc_features"
    y = _check_signal(y, fn)
    n_mfcc = _positive_int(n_mfcc, "n_mfcc", fn)
    n_mels = _positive_int(n_mels, "n_mels", fn)
    if n_mfcc > n_mels:
        raise ValueError(f"{fn}: n_mfcc ({n_mfcc}) must be <= n_mels ({n_mels})")
    M = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=n_mfcc, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels)
    return np.ascontiguousarray(M.T, dtype=np.float32)


# ---------------------------------------------------------------------------------------------- extraction
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

    jobs = ((path, kind, p, cache_dir, key_prefix) for path in paths)
    if n_jobs == 1 or len(paths) <= 1:
        results = (_extract_one(*job) for job in jobs)
    else:
        from joblib import Parallel, delayed

        # Threads, not processes: decoding, FFTs and file I/O release the GIL, and a worker process would spend
        # seconds importing the package (and torch) before its first clip.
        results = Parallel(n_jobs=n_jobs, prefer="threads", return_as="generator")(
            delayed(_extract_one)(*job) for job in jobs)
    features: list[np.ndarray | None] = []
    errors: list[tuple[str, str]] = []
    write_failures = 0
    for name, (feat, reason, _hit, write_failed) in zip(
            names, tqdm(results, total=len(paths), desc=f"features ({kind})", disable=not verbose, unit="clip")):
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


# ----------------------------------------------------------------------------------------------- whitening
class PCAWhitener:
    """PCA whitening (sklearn ``PCA(whiten=True)``): ``z = (x - mean) @ components.T / sqrt(explained_variance)``.

    Fit on training frames only, then transform train, validation and test with the same statistics. Hamel & Eck
    keep about 80 components of the 513 |DFT| bins: dropping the weakest directions stops whitening from
    amplifying their noise. ``max_samples`` fits on a seeded random subset of rows (enough for a 513 x 513
    covariance, faster on 600 000+ frames).
    """

    def __init__(self, n_components: int = 80, *, max_samples: int | None = None, seed: int = 0):
        self.n_components = _positive_int(n_components, "n_components", "PCAWhitener")
        if max_samples is not None:
            _positive_int(max_samples, "max_samples", "PCAWhitener", 2)
        self.max_samples = max_samples
        self.seed = seed
        self.mean_: np.ndarray | None = None
        self.components_: np.ndarray | None = None
        self.scale_: np.ndarray | None = None
        self.explained_variance_ratio_: np.ndarray | None = None

    @staticmethod
    def _as_matrix(X, what: str) -> np.ndarray:
        if isinstance(X, (list, tuple)):
            if any(x is None for x in X):
                raise ValueError(f"PCAWhitener.{what}: X contains None (a clip that failed); drop those clips first")
            if not X:
                raise ValueError(f"PCAWhitener.{what}: X is an empty list")
            X = np.concatenate([np.asarray(x, dtype=np.float32) for x in X], axis=0)
        X = np.asarray(X)
        if X.ndim != 2:
            raise ValueError(f"PCAWhitener.{what}: X must be 2-D (n_samples, n_features), got shape {X.shape}")
        if not np.isfinite(X).all():
            raise ValueError(f"PCAWhitener.{what}: X contains NaN/Inf")
        return X.astype(np.float32, copy=False)

    def fit(self, X) -> "PCAWhitener":
        """Fit on ``X`` (n_samples, n_features), or a list of per-clip (n_frames, n_features) arrays."""
        from sklearn.decomposition import PCA

        X = self._as_matrix(X, "fit")
        if self.max_samples is not None and X.shape[0] > self.max_samples:
            rows = np.random.default_rng(self.seed).choice(X.shape[0], self.max_samples, replace=False)
            X = X[np.sort(rows)]
        if self.n_components > min(X.shape):
            raise ValueError(f"PCAWhitener.fit: n_components={self.n_components} must be <= min(n_samples, "
                             f"n_features) = {min(X.shape)} for X of shape {X.shape}")
        pca = PCA(n_components=self.n_components, whiten=True, random_state=self.seed).fit(X)
        var = pca.explained_variance_.astype(np.float64)
        # Floor only guards a zero-variance direction against division by zero (constant input columns).
        var = np.maximum(var, 1e-12 * max(float(var.max()), 1e-30))
        self.mean_ = pca.mean_.astype(np.float32)
        self.components_ = pca.components_.astype(np.float32)
        self.scale_ = np.sqrt(var).astype(np.float32)
        self.explained_variance_ratio_ = pca.explained_variance_ratio_.astype(np.float32)
        return self

    def _check_fitted(self, what: str, n_features: int | None = None) -> None:
        if self.mean_ is None:
            raise ValueError(f"PCAWhitener.{what}: not fitted yet; call fit() on the training data first")
        if n_features is not None and n_features != self.mean_.shape[0]:
            raise ValueError(f"PCAWhitener.{what}: X has {n_features} features, the whitener was fitted on "
                             f"{self.mean_.shape[0]}")

    def transform(self, X) -> np.ndarray:
        """Whitened float32 (n_samples, n_components)."""
        X = self._as_matrix(X, "transform")
        self._check_fitted("transform", X.shape[1])
        return np.ascontiguousarray(((X - self.mean_) @ self.components_.T) / self.scale_, dtype=np.float32)

    def fit_transform(self, X) -> np.ndarray:
        X = self._as_matrix(X, "fit_transform")
        return self.fit(X).transform(X)

    def inverse_transform(self, Z) -> np.ndarray:
        """Back to the input space (exact within the kept components)."""
        self._check_fitted("inverse_transform")
        Z = np.asarray(Z, dtype=np.float32)
        if Z.ndim != 2 or Z.shape[1] != self.components_.shape[0]:
            raise ValueError(f"PCAWhitener.inverse_transform: Z must be (n, {self.components_.shape[0]}), "
                             f"got shape {Z.shape}")
        return np.ascontiguousarray((Z * self.scale_) @ self.components_ + self.mean_, dtype=np.float32)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Plain arrays (e.g. for a safetensors checkpoint); :meth:`from_state_dict` restores the whitener."""
        self._check_fitted("state_dict")
        return {"mean": self.mean_, "components": self.components_, "scale": self.scale_,
                "explained_variance_ratio": self.explained_variance_ratio_}

    @classmethod
    def from_state_dict(cls, state: dict) -> "PCAWhitener":
        missing = {"mean", "components", "scale"} - set(state)
        if missing:
            raise ValueError(f"PCAWhitener.from_state_dict: missing keys {sorted(missing)}")
        comps = np.asarray(state["components"], dtype=np.float32)
        mean = np.asarray(state["mean"], dtype=np.float32)
        scale = np.asarray(state["scale"], dtype=np.float32)
        if comps.ndim != 2 or mean.shape != (comps.shape[1],) or scale.shape != (comps.shape[0],):
            raise ValueError(f"PCAWhitener.from_state_dict: inconsistent shapes mean {mean.shape}, components "
                             f"{comps.shape}, scale {scale.shape}")
        w = cls(n_components=comps.shape[0])
        w.mean_, w.components_, w.scale_ = mean, comps, scale
        evr = state.get("explained_variance_ratio")
        w.explained_variance_ratio_ = None if evr is None else np.asarray(evr, dtype=np.float32)
        return w
