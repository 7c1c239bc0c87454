"""Trained pipelines saved to a folder and applied to new audio files.

A study run with ``save_model=DIR`` (``--save-model DIR``) trains its final pipeline on all usable clips (front
end, whitening, model, classifier) and saves it; :func:`load_pipeline` gives it back as a :class:`SavedPipeline`::

    pipe = pymusicrbm.pipelines.load_pipeline("my_model")
    pipe.predict(["a.wav", "b.mp3"])         # genres: class names; tags: the tags scored >= threshold per clip
    pipe.predict_scores(["a.wav"])           # (n_files, n_labels): vote shares (genres) or probabilities (tags)
    pipe.embed(["a.wav"])                    # (n_files, n_features): the clip's window features, averaged

Front ends: |DFT| frames -> whitening -> DBN activations -> 5 s windows (``dbn``, ``tags``); mel excerpts ->
ConvVAE latents (``vae``); mel spectrogram -> ConvRBM / ConvDBN maps -> one pooling summary (``convrbm``: the
configuration its inner CV chose on most folds). The folder, all safetensors + JSON (no pickle anywhere, so a
downloaded model cannot run code when loaded)::

    pipeline.json            format, version, task ("genres" | "tags"), labels, feature parameters, the front end
                             (type, settings, model class) and the classifier's kind (written last: it marks a
                             complete save)
    whitener.safetensors     PCA whitening (mean, components, scale; DBN front ends)
    model.safetensors        the model's checkpoint (pymusicrbm.checkpoint)
    classifier.safetensors   the classifier as arrays: per-tag logistic regressions (TagClassifier), an RBF SVM
                             (:class:`SVMArrays`), a logistic regression (:class:`LinearArrays`) or a random forest
                             (:class:`ForestArrays`), each scoring as the scikit-learn model it came from (to
                             float32 rounding for the precomputed-kernel SVM of wide features, else exactly)

Files are read in batches (``batch_size``) through :func:`pymusicrbm.audio.extract`, so features are cached
(``cache_dir``) and extracted in parallel (``n_jobs``), with a progress bar (``verbose``). A file that cannot be
used (missing, unreadable, silent, ...): with ``on_error="raise"`` (the default) an
:class:`~pymusicrbm.audio.AudioError` naming the file; with ``on_error="skip"`` its row is NaN (``predict``: None), an AudioWarning names
it, and ``skipped_`` lists ``(path, reason)``.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from .. import audio, checkpoint, reporting
from . import _study, classifiers, hamel_eck

__all__ = ["SavedPipeline", "SVMArrays", "LinearArrays", "ForestArrays", "DBNFrontEnd", "VAEFrontEnd",
           "ConvFrontEnd", "load_pipeline", "fit_hamel_eck", "fit_tagging", "fit_vae", "fit_conv", "FORMAT",
           "VERSION"]

FORMAT, VERSION = "pymusicrbm-pipeline", 1
_MANIFEST = "pipeline.json"


class SVMArrays:
    """A fitted ``StandardScaler -> SVC(kernel="rbf")`` pipeline of scikit-learn as arrays, with the same
    ``decision_function`` (one-vs-rest shape) and ``classes_``: what :func:`classifiers.window_scores` needs."""

    def __init__(self, state: dict, gamma: float):
        self.state = {k: np.asarray(v, np.float64) for k, v in state.items()}
        self.gamma = float(gamma)
        self.classes_ = self.state["classes"].astype(np.int64)

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

    @classmethod
    def from_precomputed(cls, model: "classifiers.PrecomputedRBFSVM") -> "SVMArrays":
        """The same from a :class:`~.classifiers.PrecomputedRBFSVM` (its support rows are the support vectors)."""
        svc = model.svc_
        state = {"mean": model.scaler_.mean_, "scale": model.scaler_.scale_,
                 "support_vectors": model.train_[svc.support_], "dual_coef": svc._dual_coef_,
                 "intercept": svc._intercept_, "n_support": svc.n_support_, "classes": svc.classes_}
        return cls(state, model.gamma_)

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


class LinearArrays:
    """A fitted ``StandardScaler -> LogisticRegression`` pipeline of scikit-learn as arrays, with the same
    ``predict_proba`` and ``classes_`` (multinomial softmax; two classes: the sigmoid of one decision)."""

    def __init__(self, state: dict):
        self.state = {k: np.asarray(v, np.float64) for k, v in state.items()}
        self.classes_ = self.state["classes"].astype(np.int64)

    @classmethod
    def from_sklearn(cls, model) -> "LinearArrays":
        scaler, lr = model.steps[0][1], model.steps[-1][1]
        return cls({"mean": scaler.mean_, "scale": scaler.scale_, "coef": lr.coef_, "intercept": lr.intercept_,
                    "classes": lr.classes_})

    def predict_proba(self, X) -> np.ndarray:
        from scipy.special import expit, softmax

        s = self.state
        d = ((np.asarray(X, np.float64) - s["mean"]) / s["scale"]) @ s["coef"].T + s["intercept"]
        if d.shape[1] == 1:
            p = expit(d[:, 0])
            return np.stack([1 - p, p], 1)
        return softmax(d, axis=1)


class ForestArrays:
    """A fitted ``RandomForestClassifier`` of scikit-learn as arrays (every tree's nodes side by side), with the
    same ``predict_proba`` (the mean over trees of the leaf's class fractions) and ``classes_``."""

    def __init__(self, state: dict):
        self.state = {k: np.asarray(v) for k, v in state.items()}
        self.classes_ = self.state["classes"].astype(np.int64)

    @classmethod
    def from_sklearn(cls, forest) -> "ForestArrays":
        trees = [t.tree_ for t in forest.estimators_]
        offset = np.cumsum([0] + [t.node_count for t in trees])[:-1]

        def joined(name, shift=False):
            parts = [getattr(t, name) for t in trees]
            if shift:  # child indices into the joined node arrays (-1: a leaf, kept)
                parts = [np.where(a >= 0, a + o, -1) for a, o in zip(parts, offset)]
            return np.concatenate(parts)

        value = joined("value")[:, 0, :]
        return cls({"left": joined("children_left", True), "right": joined("children_right", True),
                    "feature": joined("feature"), "threshold": joined("threshold"),
                    "value": value / value.sum(1, keepdims=True), "roots": offset, "classes": forest.classes_})

    def predict_proba(self, X) -> np.ndarray:
        s, X = self.state, np.asarray(X, np.float32)  # sklearn's trees compare float32 features
        rows = np.arange(len(X))
        out = np.zeros((len(X), s["value"].shape[1]))
        for root in s["roots"]:
            node = np.full(len(X), root)
            while True:
                inner = s["left"][node] >= 0
                if not inner.any():
                    break
                go_left = X[rows, np.maximum(s["feature"][node], 0)] <= s["threshold"][node]
                node = np.where(inner, np.where(go_left, s["left"][node], s["right"][node]), node)
            out += s["value"][node]
        return out / len(s["roots"])


class DBNFrontEnd:
    """|DFT| frames -> whitening -> DBN activations of every layer -> windows (mean and variance)."""

    kind = "dft"

    def __init__(self, whitener, model, finetuned: bool, window: dict):
        # rebuilt from its arrays made C-contiguous, as loading gives them (a fitted PCA's components are not, and
        # BLAS rounds float32 products of other layouts differently): saved and in-memory predict bit for bit alike
        self.whitener = audio.PCAWhitener.from_state_dict({k: np.ascontiguousarray(v) for k, v in
                                                           whitener.state_dict().items() if v is not None})
        self.model, self.finetuned = model, bool(finetuned)
        self.window = {k: int(v) for k, v in window.items()}

    def windows(self, frames) -> np.ndarray:
        act = hamel_eck.activations(self.model, self.whitener, frames, self.finetuned)
        return classifiers.windows(act, self.window["size"], self.window["hop"])

    def save(self, folder: Path) -> dict:
        import torch

        state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in self.whitener.state_dict().items()
                 if v is not None}
        checkpoint.save_state(folder / "whitener.safetensors", state, {})
        self.model.save(folder / "model.safetensors")
        return {"type": "dbn", "class": type(self.model).__name__, "finetuned": self.finetuned,
                "window": self.window}

    @classmethod
    def load(cls, folder: Path, spec: dict) -> "DBNFrontEnd":
        from ..dbn import DBN, DBNClassifier

        models = {"DBN": DBN, "DBNClassifier": DBNClassifier}
        if spec.get("class") not in models:
            raise ValueError(f"load_pipeline: unknown model class {spec.get('class')!r} in {folder / _MANIFEST}")
        w, _ = checkpoint.load_state(folder / "whitener.safetensors")
        whitener = audio.PCAWhitener.from_state_dict({k: v.numpy() for k, v in w.items()})
        return cls(whitener, models[spec["class"]].load(folder / "model.safetensors"), spec["finetuned"],
                   spec["window"])


class VAEFrontEnd:
    """Mel spectrogram -> excerpts -> the ConvVAE's posterior means (and log-variances) per excerpt, or with
    ``clip_stats`` one row a clip: their mean and std over the clip's excerpts."""

    kind = "mel"

    def __init__(self, vae, excerpt_frames: int, excerpt_hop: int, with_logvar: bool, clip_stats: bool = False):
        self.model, self.with_logvar, self.clip_stats = vae, bool(with_logvar), bool(clip_stats)
        self.excerpt_frames, self.excerpt_hop = int(excerpt_frames), int(excerpt_hop)

    def windows(self, mel) -> np.ndarray:
        from ..vae import cut_excerpts

        X = cut_excerpts(mel, self.excerpt_frames, self.excerpt_hop).astype(np.float32, copy=False)
        if not len(X):
            raise ValueError(f"shorter than one excerpt of {self.excerpt_frames} frames")
        F = self.model.transform(X, return_logvar=self.with_logvar)
        return classifiers.clip_statistics(F, np.zeros(len(F)))[0] if self.clip_stats else F

    def save(self, folder: Path) -> dict:
        self.model.save(folder / "model.safetensors")
        return {"type": "vae", "excerpt_frames": self.excerpt_frames, "excerpt_hop": self.excerpt_hop,
                "with_logvar": self.with_logvar, "clip_stats": self.clip_stats}

    @classmethod
    def load(cls, folder: Path, spec: dict) -> "VAEFrontEnd":
        from ..vae import ConvVAE

        return cls(ConvVAE.load(folder / "model.safetensors", device="cpu", verbose=0), spec["excerpt_frames"],
                   spec["excerpt_hop"], spec["with_logvar"], spec.get("clip_stats", False))


class ConvFrontEnd:
    """Mel spectrogram -> ConvRBM / ConvDBN pooled maps of the top layer -> one summary (:mod:`.conv_study`'s
    poolings): one row a clip."""

    kind = "mel"

    def __init__(self, model, pooling: str, grid):
        self.model, self.pooling, self.grid = model, str(pooling), tuple(int(g) for g in grid)

    def windows(self, mel) -> np.ndarray:
        from .conv_study import clip_maps, summarize_maps

        maps = clip_maps(self.model, np.asarray(mel, np.float32)[None])
        return summarize_maps(maps, self.grid, (self.pooling,))[self.pooling]

    def save(self, folder: Path) -> dict:
        self.model.save(folder / "model.safetensors")
        return {"type": "conv", "class": type(self.model).__name__, "pooling": self.pooling, "grid": self.grid}

    @classmethod
    def load(cls, folder: Path, spec: dict) -> "ConvFrontEnd":
        from ..conv_rbm import ConvDBN, ConvRBM

        models = {"ConvRBM": ConvRBM, "ConvDBN": ConvDBN}
        if spec.get("class") not in models:
            raise ValueError(f"load_pipeline: unknown model class {spec.get('class')!r} in {folder / _MANIFEST}")
        return cls(models[spec["class"]].load(folder / "model.safetensors"), spec["pooling"], spec["grid"])


_FRONT_ENDS = {"dbn": DBNFrontEnd, "vae": VAEFrontEnd, "conv": ConvFrontEnd}
_CLASSIFIERS = {"svm": SVMArrays, "linear": LinearArrays, "forest": ForestArrays, "tags": classifiers.TagClassifier}


class SavedPipeline:
    """A trained pipeline: features of each file (``feature`` ``{"kind", "params"}`` of
    :func:`pymusicrbm.audio.extract`) -> ``front_end.windows`` (one row a window or excerpt) -> ``classifier``.

    ``task``: ``"genres"`` (one class a clip: the windows' scores, probabilities or SVM votes, summed per clip, as
    the studies vote) or ``"tags"`` (the mean window probability of each tag). Built by the studies'
    ``save_model`` option (:func:`fit_hamel_eck`, :func:`fit_tagging`, :func:`fit_vae`) and by
    :func:`load_pipeline`.
    """

    def __init__(self, task: str, labels, feature: dict, front_end, classifier, info: dict | None = None,
                 threshold: float = 0.5):
        if task not in ("genres", "tags"):
            raise ValueError(f"SavedPipeline: task must be 'genres' or 'tags', got {task!r}")
        self.task, self.labels = task, list(labels)
        self.feature = {"kind": feature["kind"], "params": audio.feature_params(feature["kind"], feature["params"])}
        self.front_end, self.classifier = front_end, classifier
        self.info, self.threshold = dict(info or {}), float(threshold)
        self.skipped_: list[tuple[str, str]] = []

    def __repr__(self) -> str:
        return (f"SavedPipeline(task={self.task!r}, {len(self.labels)} labels, front end "
                f"{type(self.front_end).__name__}, trained on {self.info.get('n_clips', '?')} clips)")

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
                    feats, errors = audio.extract(batch, self.feature["kind"], self.feature["params"],
                                                  cache_dir=cache_dir, n_jobs=n_jobs, verbose=0, return_errors=True)
                for path, f in zip(batch, feats):
                    w = None
                    if f is not None:
                        try:
                            w = self.front_end.windows(f)
                        except ValueError as err:  # e.g. a clip shorter than one excerpt
                            errors.append((path, str(err)))
                    out.append(w)
                if errors and on_error == "raise":
                    raise audio.AudioError(*errors[0])
                self.skipped_ += errors
                bar.update(len(batch))
        if self.skipped_:
            lines = "\n".join(f"  {p}: {r}" for p, r in self.skipped_)
            warnings.warn(f"skipped {len(self.skipped_)} of {len(paths)} files:\n{lines}", audio.AudioWarning,
                          stacklevel=3)
        return out

    def embed(self, paths, **kw) -> np.ndarray:
        """(n_files, n_features): each file's window features (what the classifier sees) averaged over its
        windows. Keywords: ``batch_size``, ``cache_dir``, ``n_jobs``, ``on_error``, ``verbose`` (see the
        module)."""
        W = self._windows(paths, **kw)
        d = next((w.shape[1] for w in W if w is not None), 0)
        return np.stack([w.mean(0) if w is not None else np.full(d, np.nan) for w in W])

    transform = embed

    def predict_scores(self, paths, **kw) -> np.ndarray:
        """(n_files, n_labels): tags: probabilities (mean over windows); genres: the windows' class scores
        averaged (probabilities, or the share of SVM votes plus a little of the decision values, which breaks
        ties)."""
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
        """Write the pipeline into the folder ``path`` (created; files replaced atomically). Under torchrun only
        rank 0 writes ``path`` (every rank trained the same pipeline); the others go through the same steps, whose
        model saves meet rank 0's, into a folder they throw away."""
        import tempfile

        from .. import distributed

        if not distributed.is_main():
            with tempfile.TemporaryDirectory(prefix="pymusicrbm-save-") as scratch:
                self._save(Path(scratch))
            return Path(path)
        return self._save(path)

    def _save(self, path) -> Path:
        import torch

        folder = reporting.prepare_out_dir(path)
        (folder / _MANIFEST).unlink(missing_ok=True)  # absent until the save is complete
        front = self.front_end.save(folder)
        kind = next(k for k, c in _CLASSIFIERS.items() if isinstance(self.classifier, c))
        state = self.classifier.state_dict() if kind == "tags" else self.classifier.state
        checkpoint.save_state(folder / "classifier.safetensors",
                              {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}, {})
        reporting.write_json(folder / _MANIFEST, {
            "format": FORMAT, "version": VERSION, "task": self.task, "labels": self.labels, "feature": self.feature,
            "front_end": front, "classifier": {"kind": kind, **({"gamma": self.classifier.gamma} if kind == "svm"
                                                                else {})},
            "threshold": self.threshold, "info": self.info})
        return folder


def load_pipeline(path) -> SavedPipeline:
    """The pipeline saved in the folder ``path`` (by a study's ``save_model`` or :meth:`SavedPipeline.save`).
    ValueError for a folder that holds none, an unfinished save, or a newer format."""
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
    missing = {"task", "labels", "feature", "front_end", "classifier"} - set(spec)
    if missing:
        raise ValueError(f"load_pipeline: {manifest} lacks {sorted(missing)}")
    front, clf = spec["front_end"], spec["classifier"]
    if front.get("type") not in _FRONT_ENDS or clf.get("kind") not in _CLASSIFIERS:
        raise ValueError(f"load_pipeline: unknown front end {front.get('type')!r} or classifier "
                         f"{clf.get('kind')!r} in {manifest}")
    c, _ = checkpoint.load_state(folder / "classifier.safetensors")
    c = {k: v.numpy() for k, v in c.items()}
    classifier = {"svm": lambda: SVMArrays(c, clf["gamma"]), "linear": lambda: LinearArrays(c),
                  "forest": lambda: ForestArrays(c), "tags": lambda: classifiers.TagClassifier.from_state_dict(c)
                  }[clf["kind"]]()
    return SavedPipeline(spec["task"], spec["labels"], spec["feature"], _FRONT_ENDS[front["type"]].load(folder, front),
                         classifier, spec.get("info"), spec.get("threshold", 0.5))


# ------------------------------------------------------------------------------------------- final pipelines
def _dbn_front_end(feats, usable, opts, labels=None):
    """(front end, feature dict) of the DFT -> DBN pipelines, fitted on the clips ``usable``."""
    whitener, model = hamel_eck.fit_front_end(feats["dft"], usable, opts, opts["seed"], labels=labels)
    size, hop = _study.window_frames(opts["window_seconds"], opts["hop"], opts["window_overlap"])
    finetuned = labels is not None and opts["finetune"]
    feature = {"kind": "dft", "params": {"frame_length": opts["frame_length"], "hop_length": opts["hop_length"],
                                         "log": opts["log"]}}
    return DBNFrontEnd(whitener, model, finetuned, {"size": size, "hop": hop}), feature


def _window_rows(front, per_clip, usable, targets):
    """(windows of the clips ``usable`` stacked, their clips' targets, their clip indices)."""
    W = [front.windows(per_clip[i]) for i in usable]
    n = [len(w) for w in W]
    return np.concatenate(W), np.repeat(np.asarray(targets)[usable], n, axis=0), np.repeat(usable, n)


def _info(study: str, ds, usable, **more) -> dict:
    return {"study": study, "root": str(ds.root), "n_clips": int(len(usable)), **more}


def fit_hamel_eck(feats, usable, ds, opts) -> SavedPipeline:
    """The genre pipeline's headline (DBN activations, fine-tuned when ``opts["finetune"]``, -> windows -> SVM
    with C and gamma by grouped CV) trained on every usable clip of ``ds``."""
    labels = np.asarray(ds.labels)
    front, feature = _dbn_front_end(feats, usable, opts, labels)
    X, y, g = _window_rows(front, feats["dft"], usable, labels)
    svm, params = classifiers.fit_svm(X, y, g, opts["svm_grid"], opts["seed"])
    return SavedPipeline("genres", ds.classes, feature, front, SVMArrays.from_sklearn(svm),
                         _info("hamel_eck", ds, usable, svm=params))


def fit_tagging(feats, usable, ds, opts) -> SavedPipeline:
    """The tagging study's headline (pre-trained DBN activations -> windows -> logistic regression per tag)
    trained on every usable clip of ``ds``."""
    front, feature = _dbn_front_end(feats, usable, opts)
    X, Y, _ = _window_rows(front, feats["dft"], usable, ds.targets)
    tagger = classifiers.TagClassifier(C=opts["C"], n_jobs=opts["n_jobs"]).fit(X, Y)
    return SavedPipeline("tags", ds.tags, feature, front, tagger, _info("tagging", ds, usable))


def fit_vae(vae, feats, usable, ds, opts) -> SavedPipeline:
    """The VAE study's headline (the fitted ``vae``'s latent means per excerpt -> ``opts["classifier"]``, SVM or
    logistic regression, hyper-parameters by grouped CV with ``grid_search``) on every usable clip of ``ds``."""
    labels = np.asarray(ds.labels)
    front = VAEFrontEnd(vae, opts["excerpt_frames"], opts["excerpt_hop"], opts["features"] == "mean+logvar",
                        opts["clip_features"] == "stats")
    X, y, g = _window_rows(front, feats["mel"], usable, labels)
    if opts["classifier"] == "svm":
        model, params = classifiers.fit_svm(X, y, g, opts["svm_grid"] if opts["grid_search"] else "none",
                                            opts["seed"])
        clf = SVMArrays.from_sklearn(model)
    else:
        model, params = classifiers.fit_logistic_regression(X, y, g, opts["grid_search"], opts["seed"])
        clf = LinearArrays.from_sklearn(model)
    feature = {"kind": "mel", "params": {"n_mels": opts["n_mels"], "seconds": _study.mel_seconds(opts["seconds"])}}
    return SavedPipeline("genres", ds.classes, feature, front, clf, _info("vae_study", ds, usable, classifier=params))


def fit_conv(X, usable, ds, bins: int, pooling: str, classifier: str, opts) -> SavedPipeline:
    """The ConvRBM study's chosen configuration (``bins`` mel bins, ``pooling``, ``classifier``) trained on the
    clips ``usable`` of ``ds``, whose mel spectrograms are the rows of ``X``."""
    from .conv_study import _features, _make_model, make_classifier, training_maps

    y = np.asarray(ds.labels)[usable]
    model = _make_model(opts, opts["training"], opts["seed"]).fit(training_maps(X, opts["train_seconds"]))
    front = ConvFrontEnd(model, pooling, opts["grid"])
    F = _features(model, X, opts["grid"], (pooling,))[pooling]
    est = make_classifier(classifier, F.shape[1], opts, opts["seed"]).fit(F, y)
    if classifier == "svm":
        arrays = SVMArrays.from_sklearn(est.model_) if hasattr(est, "model_") else SVMArrays.from_precomputed(est)
    else:
        arrays = {"random_forest": ForestArrays.from_sklearn,
                  "logistic_regression": LinearArrays.from_sklearn}[classifier](est)
    feature = {"kind": "mel", "params": {"n_mels": int(bins), "seconds": _study.mel_seconds(opts["seconds"])}}
    return SavedPipeline("genres", ds.classes, feature, front, arrays,
                         _info("conv_study", ds, usable, bins=int(bins), pooling=pooling, classifier=classifier))
