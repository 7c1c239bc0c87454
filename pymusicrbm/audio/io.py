"""Loading audio: any format libsndfile reads (wav, au, flac, mp3, ogg, aiff), others through librosa's audioread
fallback; mono, resampled to :data:`SR`; an unusable clip raises :class:`AudioError` naming the file."""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf

__all__ = ["SR", "AUDIO_EXTENSIONS", "SILENCE_PEAK", "AudioError", "AudioWarning", "load_audio"]

SR = 22050
AUDIO_EXTENSIONS = frozenset({".wav", ".au", ".snd", ".flac", ".mp3", ".ogg", ".oga", ".aif", ".aiff", ".m4a"})
# A clip whose peak is at or below this is "silent": below the 24-bit quantisation step (2**-23 = 1.2e-7).
SILENCE_PEAK = 1e-7


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
