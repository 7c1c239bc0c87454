"""Audio loading and features for music.

- ``load_audio`` (:mod:`.io`): wav / au / flac / mp3 / ogg / aiff via soundfile (libsndfile), other formats through
  librosa's audioread fallback; mono, resampled to 22050 Hz; unusable clips raise :class:`AudioError` naming the file.
- ``dft_frames`` (:mod:`.features`): |DFT| of 1024-sample frames (46.44 ms at 22050 Hz), non-overlapping by default
  as in Hamel & Eck (ISMIR 2010), 513 bins, optional log compression; ``PCAWhitener`` whitens them (fit on training
  clips only).
- ``mel_spectrogram`` (dB, fixed frame count for the convolutional models), ``mel_to_audio`` (Griffin-Lim),
  ``mfcc_features`` (baseline).
- ``extract`` (:mod:`.extraction`): the same features for every clip of a dataset, cached on disk (key: file
  content, parameters, :data:`FEATURE_VERSION`), computed in parallel with joblib, with a tqdm progress bar; a clip
  that fails gives ``None`` and is reported by name, it never stops the run.
"""
# LOG_EPS and SILENCE_PEAK are constants of the package, outside __all__ as before.
from .extraction import FEATURE_VERSION, extract, feature_params
from .features import LOG_EPS, PCAWhitener, dft_frames, mel_spectrogram, mel_to_audio, mfcc_features  # noqa: F401
from .io import AUDIO_EXTENSIONS, SILENCE_PEAK, SR, AudioError, AudioWarning, load_audio  # noqa: F401

__all__ = [
    "SR", "FEATURE_VERSION", "AUDIO_EXTENSIONS", "AudioError", "AudioWarning", "load_audio", "dft_frames",
    "mel_spectrogram", "mel_to_audio", "mfcc_features", "feature_params", "extract", "PCAWhitener",
]
