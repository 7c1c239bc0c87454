"""The classifiers every study puts on its features, and window voting.

- :func:`fit_svm`: standardise -> RBF SVM, C and gamma searched by cross-validation on the training rows grouped by
  clip (the windows of one clip never sit on both sides of a split).
- :func:`make`: ``"svm"`` (that grid-searched SVM, or :class:`PrecomputedRBFSVM` for very wide features),
  ``"logistic_regression"``, ``"random_forest"``.
- :func:`windows` / :func:`window_set`: mean and variance of frame runs; :func:`classify_windows`: fit on training
  windows, predict test windows, vote per clip (:func:`vote`).
"""
from __future__ import annotations

import numpy as np

CLASSIFIERS = ("random_forest", "svm", "logistic_regression")

# gamma as multiples of 1 / n_features ('scale' on standardised data): sound whatever the feature size
SVM_GRIDS = {
    "small": {"C": [1.0, 10.0, 100.0], "gamma_factor": [0.1, 0.3, 1.0]},
    "large": {"C": [0.3, 1.0, 3.0, 10.0, 30.0, 100.0], "gamma_factor": [0.1, 0.3, 1.0, 3.0]},
    "none": None,
}


def _grouped_cv(y, groups, seed: int, max_splits: int = 3):
    """Stratified, grouped k-fold (k <= 3) over the training rows, or None when there are too few clips."""
    from sklearn.model_selection import StratifiedGroupKFold

    n_splits = min(max_splits, int(np.bincount(y).min()), len(np.unique(groups)))
    return None if n_splits < 2 else StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)


def _search(search, X, y, groups, n_jobs: int):
    """``search.fit`` with its candidates on ``n_jobs`` threads: libsvm and BLAS release the GIL, and threads share
    the training windows where worker processes would each copy them. The choice is the same for any n_jobs."""
    from joblib import parallel_config

    with parallel_config(backend="threading", n_jobs=n_jobs):
        return search.fit(X, y, groups=groups)


def fit_svm(X, y, groups, grid: str = "small", seed: int = 0, n_jobs: int = 1):
    """Standardise -> RBF SVC (one-vs-rest decision values); C and gamma by grouped CV over ``SVM_GRIDS[grid]``
    (candidates on ``n_jobs`` threads). Returns (fitted model, chosen parameters)."""
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    if grid not in SVM_GRIDS:
        raise ValueError(f"svm_grid must be one of {sorted(SVM_GRIDS)}, got {grid!r}")
    model = make_pipeline(StandardScaler(), SVC(C=10.0, kernel="rbf", gamma="scale", decision_function_shape="ovr"))
    y = np.asarray(y)
    cv = None if SVM_GRIDS[grid] is None else _grouped_cv(y, groups, seed)
    if cv is None:
        return model.fit(X, y), {}
    d = X.shape[1]
    params = {"svc__C": SVM_GRIDS[grid]["C"], "svc__gamma": [f / d for f in SVM_GRIDS[grid]["gamma_factor"]]}
    search = _search(GridSearchCV(model, params, cv=cv), X, y, groups, n_jobs)
    return search.best_estimator_, {k.replace("svc__", ""): float(v) for k, v in search.best_params_.items()}


class PrecomputedRBFSVM:
    """Standardised features -> RBF SVM (C=10, gamma = 1 / n_features, i.e. sklearn's 'scale' on unit-variance
    data) on a precomputed kernel: libsvm's own kernel evaluations are slow for 10^5-dimensional features, one
    matrix product is not."""

    def __init__(self, seed: int = 0, C: float = 10.0):
        self.seed, self.C = seed, C

    def fit(self, X, y):
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import SVC

        self.scaler_ = StandardScaler().fit(X)
        self.train_ = self.scaler_.transform(X).astype(np.float32)
        self.gamma_ = 1.0 / X.shape[1]
        self.svc_ = SVC(C=self.C, kernel="precomputed", random_state=self.seed).fit(self._kernel(self.train_), y)
        self.classes_ = self.svc_.classes_
        return self

    def _kernel(self, A):
        from sklearn.metrics.pairwise import rbf_kernel

        return rbf_kernel(A, self.train_, gamma=self.gamma_)

    def decision_function(self, X):
        return self.svc_.decision_function(self._kernel(self.scaler_.transform(X).astype(np.float32)))

    def predict(self, X):
        return self.svc_.predict(self._kernel(self.scaler_.transform(X).astype(np.float32)))


def make(name: str, seed: int = 0, n_estimators: int = 300, n_jobs: int = 1, wide: bool = False):
    """A fresh, unfitted classifier by name (no hyper-parameter search): ``wide`` picks the precomputed-kernel
    SVM and a loose logistic-regression tolerance, for features of 10^4-10^5 columns."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    if name == "random_forest":
        return RandomForestClassifier(n_estimators=n_estimators, random_state=seed, n_jobs=n_jobs)
    if name == "svm":
        return PrecomputedRBFSVM(seed) if wide else make_pipeline(
            StandardScaler(), SVC(C=10.0, kernel="rbf", gamma="scale", random_state=seed))
    if name == "logistic_regression":
        # tol 1e-3 on wide features: L-BFGS otherwise spends most of a study polishing digits
        return make_pipeline(StandardScaler(), LogisticRegression(C=0.1 if wide else 1.0, tol=1e-3 if wide else 1e-4,
                                                                  max_iter=500 if wide else 2000))
    raise ValueError(f"classifier must be one of {CLASSIFIERS}, got {name!r}")


def fit_logistic_regression(X, y, groups, grid: bool = True, seed: int = 0, n_jobs: int = 1):
    """Standardise -> logistic regression, C in {0.01, 0.1, 1, 10} by grouped CV when ``grid`` (on ``n_jobs``
    threads). Returns (model, chosen parameters)."""
    from sklearn.model_selection import GridSearchCV

    model = make("logistic_regression", seed)
    y = np.asarray(y)
    cv = _grouped_cv(y, groups, seed) if grid else None
    if cv is None:
        return model.fit(X, y), {}
    search = _search(GridSearchCV(model, {"logisticregression__C": [0.01, 0.1, 1.0, 10.0]}, cv=cv), X, y, groups,
                     n_jobs)
    return search.best_estimator_, {"C": float(search.best_params_["logisticregression__C"])}


# ------------------------------------------------------------------------------------------------- windows
def windows(frames: np.ndarray, size: int, hop: int) -> np.ndarray:
    """Mean and variance of ``frames`` (n, d) over windows of ``size`` rows every ``hop`` rows -> (n_win, 2d).
    A clip shorter than one window gives one window of all its frames."""
    n = len(frames)
    starts = range(0, max(n - size, 0) + 1, hop)
    out = [np.concatenate([frames[s:s + size].mean(0), frames[s:s + size].var(0)]) for s in starts]
    return np.asarray(out, dtype=np.float32)


def window_index(lengths, size: int, hop: int) -> list[list[tuple[int, int]]]:
    """(start, stop) frame range of each window of each clip, in the order :func:`windows` makes them."""
    return [[(s, min(s + size, n)) for s in range(0, max(n - size, 0) + 1, hop)] for n in lengths]


def window_set(per_clip, idx, size: int, hop: int, labels):
    """Windows of the clips ``idx`` of ``per_clip`` (frame arrays) -> (X, y, clip index of each row)."""
    W = [windows(per_clip[i], size, hop) for i in idx]
    X = np.concatenate(W)
    g = np.concatenate([np.full(len(w), i) for i, w in zip(idx, W)])
    return X, np.asarray(labels)[g], g


def clip_statistics(X, groups) -> tuple[np.ndarray, np.ndarray]:
    """Per-clip mean and standard deviation of the rows ``X`` (n, d) of each clip (``groups``: clip index of each
    row) -> (clip features (n_clips, 2d), clip ids in sorted order). A clip of one row has std 0."""
    groups = np.asarray(groups)
    ids, inv = np.unique(groups, return_inverse=True)
    n = np.bincount(inv).astype(np.float64)[:, None]
    X = np.asarray(X, np.float64)
    mean = np.zeros((len(ids), X.shape[1]))
    sq = np.zeros_like(mean)
    np.add.at(mean, inv, X)
    mean /= n
    np.add.at(sq, inv, (X - mean[inv]) ** 2)
    return np.hstack([mean, np.sqrt(sq / n)]).astype(np.float32), ids


def vote(groups, scores) -> tuple[np.ndarray, np.ndarray]:
    """Clip-level decision from window/frame scores: sum of the scores (probabilities or votes) of each clip.

    groups: (n,) clip index of each row; scores: (n, n_classes). Returns (clip ids, argmax class per clip)."""
    groups = np.asarray(groups)
    ids, inv = np.unique(groups, return_inverse=True)
    sums = np.zeros((len(ids), scores.shape[1]))
    np.add.at(sums, inv, scores)
    return ids, sums.argmax(1)


def window_scores(model, X, n_classes: int) -> np.ndarray:
    """Per-class scores of each window for voting (n, n_classes): the mean-probability vote of a probabilistic
    model; otherwise a one-hot vote plus a small share of the decision values to break ties."""
    classes = np.asarray(getattr(model, "classes_", np.arange(n_classes)))
    if hasattr(model, "predict_proba"):
        part = model.predict_proba(X)
    else:
        dec = model.decision_function(X)
        if dec.ndim == 1:
            dec = np.stack([-dec, dec], 1)
        part = np.eye(dec.shape[1])[dec.argmax(1)] + 1e-3 * dec
    full = np.full((len(X), n_classes), -1.0 if not hasattr(model, "predict_proba") else 0.0)
    full[:, classes] = part  # a class absent from training gets no vote
    return full


def classify_windows(kind: str, train: tuple, test: tuple, n_classes: int, grid="small", seed: int = 0,
                     n_jobs: int = 1) -> dict:
    """Fit ``kind`` ("svm": :func:`fit_svm`; "logistic_regression": :func:`fit_logistic_regression`; a grid search
    on ``n_jobs`` threads) on the training windows ``(X, y, groups)``, score the test windows and vote per clip.
    Returns the fold record
    ``{"window_true", "window_pred", "clip_ids", "clip_true", "clip_pred", "params"}``."""
    X, y, g = train
    if kind == "svm":
        model, params = fit_svm(X, y, g, grid if isinstance(grid, str) else ("small" if grid else "none"), seed, n_jobs)
    elif kind == "logistic_regression":
        model, params = fit_logistic_regression(X, y, g, grid not in (False, "none"), seed, n_jobs)
    else:
        raise ValueError(f"window classifier must be 'svm' or 'logistic_regression', got {kind!r}")
    Xt, yt, gt = test
    scores = window_scores(model, Xt, n_classes)
    clips, clip_pred = vote(gt, scores)
    clip_true = np.array([yt[gt == c][0] for c in clips])
    return {"window_true": yt, "window_pred": scores.argmax(1), "clip_ids": clips, "clip_true": clip_true,
            "clip_pred": clip_pred, "params": params}


# ------------------------------------------------------------------------------------------------- tagging
class TagClassifier:
    """Multi-label one-vs-rest classifier: standardised features -> one L2 logistic regression per tag (sklearn's
    ``LogisticRegression``, as ``OneVsRestClassifier`` would fit). A tag that is constant in the training rows
    gets a constant score, its training rate. The fitted model is plain arrays (``mean_``, ``scale_``, ``coef_``
    (n_tags, n_features), ``intercept_``): :meth:`state_dict` / :meth:`from_state_dict` save and restore it
    without pickle, and a restored model scores exactly as the fitted one."""

    def __init__(self, C: float = 1.0, max_iter: int = 1000, n_jobs: int = 1):
        self.C, self.max_iter, self.n_jobs = C, max_iter, n_jobs

    def fit(self, X, Y):
        from joblib import Parallel, delayed
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        X, Y = np.asarray(X, np.float64), np.asarray(Y, bool)
        if Y.ndim != 2 or len(Y) != len(X):
            raise ValueError(f"TagClassifier.fit: Y must be (n_samples, n_tags) with n_samples = {len(X)}, got "
                             f"{Y.shape}")
        scaler = StandardScaler().fit(X)
        Xs = scaler.transform(X)

        def one(y):
            rate = float(y.mean())
            if rate in (0.0, 1.0):  # no positive (or no negative) row: the training rate, clipped off 0 and 1
                p = min(max(rate, 1e-6), 1 - 1e-6)
                return np.zeros(X.shape[1]), float(np.log(p / (1 - p)))
            lr = LogisticRegression(C=self.C, max_iter=self.max_iter).fit(Xs, y)
            return lr.coef_[0], float(lr.intercept_[0])

        fits = Parallel(n_jobs=self.n_jobs, prefer="threads")(delayed(one)(Y[:, j]) for j in range(Y.shape[1]))
        self.mean_, self.scale_ = scaler.mean_, scaler.scale_
        self.coef_ = np.stack([w for w, _ in fits])
        self.intercept_ = np.array([b for _, b in fits])
        return self

    def decision_function(self, X) -> np.ndarray:
        """Per-tag log-odds, (n_samples, n_tags)."""
        X = np.asarray(X, np.float64)
        if X.ndim != 2 or X.shape[1] != self.coef_.shape[1]:
            raise ValueError(f"TagClassifier: X must be (n_samples, {self.coef_.shape[1]}), got {X.shape}")
        return ((X - self.mean_) / self.scale_) @ self.coef_.T + self.intercept_

    def predict_proba(self, X) -> np.ndarray:
        """Per-tag probabilities (independent sigmoids), (n_samples, n_tags)."""
        from scipy.special import expit

        return expit(self.decision_function(X))

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean_, "scale": self.scale_, "coef": self.coef_, "intercept": self.intercept_}

    @classmethod
    def from_state_dict(cls, state: dict) -> "TagClassifier":
        model = cls()
        model.mean_, model.scale_, model.coef_, model.intercept_ = (
            np.asarray(state[k], np.float64) for k in ("mean", "scale", "coef", "intercept"))
        return model
