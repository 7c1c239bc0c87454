"""Features of one signal: |DFT| frames (Hamel & Eck), dB mel spectrograms, Griffin-Lim inversion, MFCCs, and the
PCA whitening fitted on training frames."""
from __future__ import annotations

import warnings
from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.exceptions import NotFittedError
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Hidden, Interval, StrOptions

from .io import SR, AudioError

__all__ = ["LOG_EPS", "dft_frames", "mel_spectrogram", "mel_to_audio", "mfcc_features", "PCAWhitener"]

# Floor for log="log" compression: about -100 dB of a unit-amplitude sine's |DFT| peak (512 for 1024 samples).
LOG_EPS = 1e-3


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


class PCAWhitener(TransformerMixin, BaseEstimator):
    """PCA whitening (sklearn ``PCA(whiten=True)``): ``z = (x - mean) @ components.T / sqrt(explained_variance)``.

    Fit on training frames only, then transform train, validation and test with the same statistics. Hamel & Eck
    keep about 80 components of the 513 |DFT| bins: dropping the weakest directions stops whitening from
    amplifying their noise.

    Parameters
    ----------
    n_components : int, default=80
        Number of principal directions kept (at most ``min(n_samples, n_features)`` of the data fitted).
    max_samples : int or None, default=None
        Fit on a seeded random subset of this many rows (enough for a 513 x 513 covariance, faster on 600 000+
        frames); None uses every row.
    random_state : int, RandomState instance or None, default=0
        Seeds the row subset and PCA's randomized solver; an int gives reproducible results.
    seed : int, default='deprecated'
        Deprecated alias of ``random_state`` (accepted with a FutureWarning for one release).

    Attributes
    ----------
    mean_ : ndarray of shape (n_features,)
        Per-feature mean of the data fitted.
    components_ : ndarray of shape (n_components, n_features)
        Principal directions kept, strongest first.
    scale_ : ndarray of shape (n_components,)
        Standard deviation of each kept direction (the whitening divisor).
    explained_variance_ratio_ : ndarray of shape (n_components,)
        Fraction of the total variance along each kept direction.
    n_features_in_ : int
        Number of features seen during ``fit``.

    See Also
    --------
    sklearn.decomposition.PCA : ``PCA(whiten=True)``, which this wraps.

    Examples
    --------
    >>> import numpy as np
    >>> from pymusicrbm.audio import PCAWhitener
    >>> X = np.random.default_rng(0).standard_normal((200, 10))
    >>> PCAWhitener(n_components=4).fit_transform(X).shape
    (200, 4)
    """

    _parameter_constraints: dict = {
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "max_samples": [Interval(Integral, 2, None, closed="left"), None],
        "random_state": ["random_state"],
        "seed": [Interval(Integral, 0, None, closed="left"), Hidden(StrOptions({"deprecated"}))],
    }

    def __init__(self, n_components: int = 80, *, max_samples: int | None = None, random_state=0,
                 seed="deprecated"):
        self.n_components = n_components
        self.max_samples = max_samples
        self.random_state = random_state
        self.seed = seed

    def _seed(self) -> int:
        """The int seed of this fit (``seed`` wins, with a FutureWarning, while it is still accepted)."""
        random_state = self.random_state
        if self.seed != "deprecated":
            warnings.warn("PCAWhitener: 'seed' was renamed 'random_state' and will be removed; pass "
                          f"random_state={self.seed!r} instead", FutureWarning, stacklevel=4)
            random_state = self.seed
        if isinstance(random_state, Integral):
            return int(random_state)
        return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))

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

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None) -> "PCAWhitener":
        """Fit on ``X`` (n_samples, n_features), or a list of per-clip (n_frames, n_features) arrays."""
        from sklearn.decomposition import PCA

        from .. import distributed

        seed = self._seed()
        X = self._as_matrix(X, "fit")
        if distributed.sharded_inputs():
            return self._fit_pooled(X, seed)
        if self.max_samples is not None and X.shape[0] > self.max_samples:
            rows = np.random.default_rng(seed).choice(X.shape[0], self.max_samples, replace=False)
            X = X[np.sort(rows)]
        if self.n_components > min(X.shape):
            raise ValueError(f"PCAWhitener.fit: n_components={self.n_components} must be <= min(n_samples, "
                             f"n_features) = {min(X.shape)} for X of shape {X.shape}")
        pca = PCA(n_components=self.n_components, whiten=True, random_state=seed).fit(X)
        var = pca.explained_variance_.astype(np.float64)
        # Floor only guards a zero-variance direction against division by zero (constant input columns).
        var = np.maximum(var, 1e-12 * max(float(var.max()), 1e-30))
        self.mean_ = pca.mean_.astype(np.float32)
        self.components_ = pca.components_.astype(np.float32)
        self.scale_ = np.sqrt(var).astype(np.float32)
        self.explained_variance_ratio_ = pca.explained_variance_ratio_.astype(np.float32)
        self.n_features_in_ = X.shape[1]
        return self

    def _fit_pooled(self, X: np.ndarray, seed: int) -> "PCAWhitener":
        """In a process group where each rank holds a shard of the frames: PCA of the covariance of all the
        shards, all-reduced in one buffer (row count, sums, scatter matrix; float64), so every rank gets the same
        whitener. ``max_samples`` is split between the ranks (each draws its rows with its own seed)."""
        from .. import distributed

        if self.max_samples is not None:
            cap = max(2, self.max_samples // distributed.world_size())
            if X.shape[0] > cap:
                rng = np.random.default_rng([seed, distributed.rank()])
                X = X[np.sort(rng.choice(X.shape[0], cap, replace=False))]
        d = X.shape[1]
        Xd = X.astype(np.float64)
        m = Xd.mean(0) if len(Xd) else np.zeros(d)
        Xc = Xd - m
        local = np.concatenate([[len(Xd)], len(Xd) * m, (Xc.T @ Xc + len(Xd) * np.outer(m, m)).ravel()])
        total = distributed.all_sum_array(local, what="the all-reduce of the PCA covariance")
        n = total[0]
        if self.n_components > min(n, d):
            raise ValueError(f"PCAWhitener.fit: n_components={self.n_components} must be <= min(n_samples, "
                             f"n_features) = {int(min(n, d))} for the {int(n)} rows of all ranks")
        mean = total[1:d + 1] / n
        cov = (total[d + 1:].reshape(d, d) - n * np.outer(mean, mean)) / max(n - 1, 1)
        var, vecs = np.linalg.eigh((cov + cov.T) / 2)
        order = np.argsort(var)[::-1][:self.n_components]
        comps = vecs[:, order].T
        comps *= np.sign(comps[np.arange(len(comps)), np.abs(comps).argmax(1)])[:, None]  # a fixed sign
        var = np.maximum(var[order], 0.0)
        ratio = var / max(float(np.trace(cov)), 1e-300)
        var = np.maximum(var, 1e-12 * max(float(var.max()), 1e-30))
        self.mean_ = mean.astype(np.float32)
        self.components_ = comps.astype(np.float32)
        self.scale_ = np.sqrt(var).astype(np.float32)
        self.explained_variance_ratio_ = ratio.astype(np.float32)
        self.n_features_in_ = d
        return self

    def _check_fitted(self, what: str, n_features: int | None = None) -> None:
        if not hasattr(self, "mean_"):
            raise NotFittedError(f"PCAWhitener.{what}: not fitted yet; call fit() on the training data first")
        if n_features is not None and n_features != self.mean_.shape[0]:
            raise ValueError(f"PCAWhitener.{what}: X has {n_features} features, the whitener was fitted on "
                             f"{self.mean_.shape[0]}")

    def transform(self, X) -> np.ndarray:
        """Whitened float32 (n_samples, n_components)."""
        X = self._as_matrix(X, "transform")
        self._check_fitted("transform", X.shape[1])
        return np.ascontiguousarray(((X - self.mean_) @ self.components_.T) / self.scale_, dtype=np.float32)

    def fit_transform(self, X, y=None) -> np.ndarray:
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
        w.n_features_in_ = mean.shape[0]
        return w
