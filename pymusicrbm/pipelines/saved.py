"""Trained pipelines saved to a folder and applied to new audio files.

A study run with ``save_model=DIR`` (``--save-model DIR``) trains its final pipeline on all usable clips (front
end, whitening, model, classifier) and saves it; :func:`load_pipeline` gives it back as a :class:`SavedPipeline`::

    pipe = pymusicrbm.pipelines.load_pipeline("my_model")
    pipe.predict(["a.wav", "b.mp3"])         # genres: class names; tags: the tags scored >= threshold per clip
    pipe.predict_scores(["a.wav"])           # (n_files, n_labels): vote shares (genres) or probabilities (tags)
    pipe.embed(["a.wav"])                    # (n_files, n_features): the clip's window features, averaged

The folder, all safetensors + JSON (no pickle anywhere, so a downloaded model cannot run code when loaded)::

    pipeline.json            format, version, task ("genres" | "tags"), labels, feature parameters, windows,
                             the model's class and the classifier's kind (written last: it marks a complete save)
    whitener.safetensors     PCA whitening (mean, components, scale)
    model.safetensors        the DBN / DBNClassifier checkpoint (pymusicrbm.checkpoint)
    classifier.safetensors   the classifier as arrays: standardisation, then per-tag logistic regressions
                             (TagClassifier) or an RBF SVM (support vectors, dual coefficients, intercepts:
                             :class:`SVMArrays` rebuilds scikit-learn's decision function from them)

Files are read in batches (``batch_size``) through :func:`pymusicrbm.audio.extract`, so features are cached
(``cache_dir``) and extracted in parallel (``n_jobs``), with a progress bar (``verbose``). A file that cannot be
used (missing, unreadable, silent, ...): with ``on_error="raise"`` (the default) an :class:`~pymusicrbm.audio.
AudioError` naming the file; with ``on_error="skip"`` its row is NaN (``predict``: None), an AudioWarning names
it, and ``skipped_`` lists ``(path, reason)``.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from .. import audio, checkpoint, reporting
from . import _study, classifiers, hamel_eck

__all__ = ["SavedPipeline", "SVMArrays", "load_pipeline", "fit_hamel_eck", "fit_tagging", "FORMAT", "VERSION"]

FORMAT, VERSION = "pymusicrbm-pipeline", 1
_MANIFEST = "pipeline.json"


class SVMArrays:
    """A fitted ``StandardScaler -> SVC(kernel="rbf")`` pipeline of scikit-learn as arrays, with the same
    ``decision_function`` (one-vs-rest shape) and ``classes_``: what :func:`classifiers.window_scores` needs."""

    def __init__(self, state: dict, gamma: float):
        self.state = {k: np.asarray(v, np.float64) for k, v in state.items()}
        self.gamma = float(gamma)
        self.classes_ = np.arange(len(self.state["n_support"]))

    @classmethod
    def from_sklearn(cls, model) -> "SVMArrays":
        scaler, svc = model.steps[0][1], model.steps[-1][1]
        if svc.kernel != "rbf":
            raise ValueError(f"SVMArrays: only RBF SVMs are stored, got kernel={svc.kernel!r}")
        # the raw libsvm coefficients and intercepts (sklearn flips the public ones' sign for two classes)
        state = {"mean": scaler.mean_, "scale": scaler.scale_, "support_vectors": svc.support_vectors_,
                 "dual_coef": svc._dual_coef_, "intercept": svc._intercept_, "n_support": svc.n_support_,
                 "classes": svc.classes_}
        return cls(state, svc._gamma)

    def decision_function(self, X) -> np.ndarray:
        from sklearn.metrics.pairwise import rbf_kernel
        from sklearn.utils.multiclass import _ovr_decision_function

        s = self.state
        K = rbf_kernel((np.asarray(X, np.float64) - s["mean"]) / s["scale"], s["support_vectors"], gamma=self.gamma)
        n_sv = s["n_support"].astype(int)
        start = np.r_[0, np.cumsum(n_sv)]
        n = len(n_sv)
        dec = []  # libsvm's one-vs-one decisions, pairs (0, 1), (0, 2), ..., (1, 2), ...: > 0 votes for i
        for i in range(n):
            for j in range(i + 1, n):
                si, sj = slice(start[i], start[i + 1]), slice(start[j], start[j + 1])
                dec.append(K[:, si] @ s["dual_coef"][j - 1, si] + K[:, sj] @ s["dual_coef"][i, sj])
        dec = np.stack(dec, 1) + s["intercept"]
        if n == 2:
            return -dec[:, 0]
        return _ovr_decision_function(dec < 0, -dec, n)


class SavedPipeline:
    """A trained pipeline: |DFT| frames -> whitening -> DBN activations -> windows (mean, variance) -> classifier.

    ``task``: ``"genres"`` (one class a clip: the SVM's window votes summed per clip) or ``"tags"`` (the mean
    window probability of each tag). Built by the studies' ``save_model`` option (:func:`fit_hamel_eck`,
    :func:`fit_tagging`) and by :func:`load_pipeline`.
    """

    def __init__(self, task: str, labels, feature_params: dict, window: dict, whitener, model, finetuned: bool,
                 classifier, info: dict | None = None, threshold: float = 0.5):
        if task not in ("genres", "tags"):
            raise ValueError(f"SavedPipeline: task must be 'genres' or 'tags', got {task!r}")
        self.task, self.labels = task, list(labels)
        self.feature_params, self.window = dict(feature_params), {k: int(v) for k, v in window.items()}
        # rebuilt from its arrays made C-contiguous, as loading gives them (a fitted PCA's components are not, and
        # BLAS rounds float32 products of other layouts differently): saved and in-memory predict bit for bit alike
        whitener = audio.PCAWhitener.from_state_dict({k: np.ascontiguousarray(v) for k, v in
                                                      whitener.state_dict().items() if v is not None})
        self.whitener, self.model, self.finetuned = whitener, model, bool(finetuned)
        self.classifier, self.info, self.threshold = classifier, dict(info or {}), float(threshold)
        self.skipped_: list[tuple[str, str]] = []

    def __repr__(self) -> str:
        return (f"SavedPipeline(task={self.task!r}, {len(self.labels)} labels, model={type(self.model).__name__}, "
                f"trained on {self.info.get('n_clips', '?')} clips)")

    # ---- features -------------------------------------------------------------------------------------------
    def _windows(self, paths, batch_size=32, cache_dir=None, n_jobs=1, on_error="raise", verbose=1) -> list:
        """Window features of each file (None for a file skipped with ``on_error="skip"``)."""
        from tqdm.auto import tqdm

        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if not (isinstance(batch_size, (int, np.integer)) and batch_size >= 1):
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        paths = [str(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
        if not paths:
            raise ValueError("paths: give at least one audio file")
        out, self.skipped_ = [], []
        with tqdm(total=len(paths), desc="clips", unit="clip", disable=not verbose) as bar:
            for b in range(0, len(paths), batch_size):
                batch = paths[b:b + batch_size]
                with warnings.catch_warnings():  # failures are reported below, once, by name
                    warnings.simplefilter("ignore", audio.AudioWarning)
                    frames, errors = audio.extract(batch, "dft", self.feature_params, cache_dir=cache_dir,
                                                   n_jobs=n_jobs, verbose=0, return_errors=True)
                if errors and on_error == "raise":
                    raise audio.AudioError(*errors[0])
                self.skipped_ += errors
                for f in frames:
                    out.append(None if f is None else classifiers.windows(
                        hamel_eck.activations(self.model, self.whitener, f, self.finetuned),
                        self.window["size"], self.window["hop"]))
                bar.update(len(batch))
        if self.skipped_:
            lines = "\n".join(f"  {p}: {r}" for p, r in self.skipped_)
            warnings.warn(f"skipped {len(self.skipped_)} of {len(paths)} files:\n{lines}", audio.AudioWarning,
                          stacklevel=3)
        return out

    def embed(self, paths, **kw) -> np.ndarray:
        """(n_files, n_features): each file's window features (mean and variance of the DBN activations over
        windows) averaged over its windows. Keywords: ``batch_size``, ``cache_dir``, ``n_jobs``, ``on_error``,
        ``verbose`` (see the module)."""
        W = self._windows(paths, **kw)
        d = next((w.shape[1] for w in W if w is not None), 0)
        return np.stack([w.mean(0) if w is not None else np.full(d, np.nan) for w in W])

    transform = embed

    def predict_scores(self, paths, **kw) -> np.ndarray:
        """(n_files, n_labels): tags: probabilities (mean over windows); genres: share of the windows' SVM votes
        (plus a small share of the decision values, which breaks ties), summing to about 1."""
        W = self._windows(paths, **kw)
        out = np.full((len(W), len(self.labels)), np.nan)
        for i, w in enumerate(W):
            if w is not None:
                out[i] = self._window_scores(w).mean(0)
        return out

    def _window_scores(self, w):
        if self.task == "tags":
            return self.classifier.predict_proba(w)
        return classifiers.window_scores(self.classifier, w, len(self.labels))

    def predict(self, paths, **kw) -> list:
        """Per file: the genre (a class name), or the list of tags scored >= ``threshold`` (best first); None for
        a skipped file."""
        S = self.predict_scores(paths, **kw)
        out = []
        for s in S:
            if np.isnan(s).any():
                out.append(None)
            elif self.task == "genres":
                out.append(self.labels[int(s.argmax())])
            else:
                out.append([self.labels[j] for j in np.argsort(-s, kind="stable") if s[j] >= self.threshold])
        return out

    # ---- saving ---------------------------------------------------------------------------------------------
    def save(self, path) -> Path:
        """Write the pipeline into the folder ``path`` (created; files replaced atomically)."""
        import torch

        folder = reporting.prepare_out_dir(path)
        (folder / _MANIFEST).unlink(missing_ok=True)  # absent until the save is complete

        def tensors(state):
            return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items() if v is not None}

        checkpoint.save_state(folder / "whitener.safetensors", tensors(self.whitener.state_dict()), {})
        self.model.save(folder / "model.safetensors")
        if isinstance(self.classifier, SVMArrays):
            clf = {"kind": "svm", "gamma": self.classifier.gamma}
            state = self.classifier.state
        else:
            clf, state = {"kind": "logistic"}, self.classifier.state_dict()
        checkpoint.save_state(folder / "classifier.safetensors", tensors(state), {})
        reporting.write_json(folder / _MANIFEST, {
            "format": FORMAT, "version": VERSION, "task": self.task, "labels": self.labels,
            "feature": {"kind": "dft", "params": self.feature_params}, "window": self.window,
            "model": {"class": type(self.model).__name__, "finetuned": self.finetuned}, "classifier": clf,
            "threshold": self.threshold, "info": self.info})
        return folder


def load_pipeline(path) -> SavedPipeline:
    """The pipeline saved in the folder ``path`` (by a study's ``save_model`` or :meth:`SavedPipeline.save`).
    ValueError for a folder that holds none, an unfinished save, or a newer format."""
    from ..dbn import DBN, DBNClassifier

    folder = Path(path)
    manifest = folder / _MANIFEST
    if not manifest.is_file():
        raise ValueError(f"load_pipeline: {str(folder)!r} holds no saved pipeline (no {_MANIFEST}; train one with "
                         f"a study's --save-model {folder})")
    try:
        spec = json.loads(manifest.read_text())
    except ValueError as err:
        raise ValueError(f"load_pipeline: {manifest} is not valid JSON: {err}") from None
    if spec.get("format") != FORMAT or not isinstance(spec.get("version"), int) or spec["version"] > VERSION:
        raise ValueError(f"load_pipeline: {manifest} is not a {FORMAT} of version <= {VERSION} (format "
                         f"{spec.get('format')!r}, version {spec.get('version')!r})")
    models = {"DBN": DBN, "DBNClassifier": DBNClassifier}
    if spec["model"]["class"] not in models:
        raise ValueError(f"load_pipeline: unknown model class {spec['model']['class']!r} in {manifest}")
    model = models[spec["model"]["class"]].load(folder / "model.safetensors")
    w, _ = checkpoint.load_state(folder / "whitener.safetensors")
    whitener = audio.PCAWhitener.from_state_dict({k: v.numpy() for k, v in w.items()})
    c, _ = checkpoint.load_state(folder / "classifier.safetensors")
    c = {k: v.numpy() for k, v in c.items()}
    classifier = SVMArrays(c, spec["classifier"]["gamma"]) if spec["classifier"]["kind"] == "svm" else \
        classifiers.TagClassifier.from_state_dict(c)
    return SavedPipeline(spec["task"], spec["labels"], spec["feature"]["params"], spec["window"], whitener, model,
                         spec["model"]["finetuned"], classifier, spec.get("info"), spec.get("threshold", 0.5))


# ------------------------------------------------------------------------------------------- final pipelines
def _window(opts) -> dict:
    size, hop = _study.window_frames(opts["window_seconds"], opts["hop"], opts["window_overlap"])
    return {"size": size, "hop": hop}


def _feature_params(opts) -> dict:
    return audio.feature_params("dft", {"frame_length": opts["frame_length"], "hop_length": opts["hop_length"],
                                        "log": opts["log"]})


def fit_hamel_eck(feats, usable, ds, opts) -> SavedPipeline:
    """The genre pipeline's headline (DBN activations, fine-tuned when ``opts["finetune"]``, -> windows -> SVM
    with C and gamma by grouped CV) trained on every usable clip of ``ds``."""
    labels, win = np.asarray(ds.labels), _window(opts)
    whitener, clf = hamel_eck.fit_front_end(feats["dft"], usable, opts, opts["seed"], labels=labels)
    act = {i: hamel_eck.activations(clf, whitener, feats["dft"][i], opts["finetune"]) for i in usable}
    X, y, g = classifiers.window_set(act, usable, win["size"], win["hop"], labels)
    svm, params = classifiers.fit_svm(X, y, g, opts["svm_grid"], opts["seed"])
    info = {"study": "hamel_eck", "root": str(ds.root), "n_clips": int(len(usable)), "svm": params}
    return SavedPipeline("genres", ds.classes, _feature_params(opts), win, whitener, clf, opts["finetune"],
                         SVMArrays.from_sklearn(svm), info)


def fit_tagging(feats, usable, ds, opts) -> SavedPipeline:
    """The tagging study's headline (pre-trained DBN activations -> windows -> logistic regression per tag)
    trained on every usable clip of ``ds``."""
    win = _window(opts)
    whitener, dbn = hamel_eck.fit_front_end(feats["dft"], usable, opts, opts["seed"])
    act = {i: hamel_eck.activations(dbn, whitener, feats["dft"][i], False) for i in usable}
    X, Y, _ = classifiers.window_set(act, usable, win["size"], win["hop"], ds.targets)
    tagger = classifiers.TagClassifier(C=opts["C"], n_jobs=opts["n_jobs"]).fit(X, Y)
    info = {"study": "tagging", "root": str(ds.root), "n_clips": int(len(usable))}
    return SavedPipeline("tags", ds.tags, _feature_params(opts), win, whitener, dbn, False, tagger, info)
