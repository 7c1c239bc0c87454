"""DBN and DBNClassifier: stacked transforms against a numpy reference, generative sampling, load_digits accuracy
and the gain of fine-tuning over frozen features, scikit-learn estimator checks, bad input."""
import numpy as np
import pytest
from scipy.special import expit
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import Pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks
from threadpoolctl import threadpool_limits

from pymusicrbm.dbn import DBN, DBNClassifier


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X / 16.0, y


def ref_up(dbn, X):
    """Layer-by-layer hidden probabilities from the fitted parameters (numpy, float64)."""
    out, h = [], X
    for i, rbm in enumerate(dbn.rbms_):
        if i == 0 and rbm.visible == "gaussian":
            h = (h - rbm.mean_) / rbm.scale_ / rbm.sigma_
        h = expit(h @ rbm.components_.T.astype(np.float64) + rbm.intercept_hidden_)
        out.append(h)
    return out


def test_dbn_transform_matches_reference(digits):
    X = digits[0][:500]
    dbn = DBN((16, 8, 4), n_iter=2, random_state=0).fit(X)
    assert [r.n_components for r in dbn.rbms_] == [16, 8, 4]
    assert [r.components_.shape for r in dbn.rbms_] == [(16, 64), (8, 16), (4, 8)]
    ref = ref_up(dbn, X)
    np.testing.assert_allclose(dbn.transform(X), ref[-1], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dbn.transform(X, layers="all"), np.hstack(ref), rtol=1e-4, atol=1e-5)
    assert len(dbn.history_) == 3 and all(len(h["recon_error"]) == 2 for h in dbn.history_)
    assert dbn.get_feature_names_out().tolist() == [f"dbn{i}" for i in range(4)]


def test_gaussian_first_layer_and_layer_params(digits):
    X = digits[0][:500] * 16.0
    dbn = DBN((12, 6), visible="gaussian", learn_sigma=True, n_iter=2, random_state=0,
              layer_params=[{"learning_rate": 0.01}, {"n_iter": 3, "persistent": True}],
              transform_layers="all").fit(X)
    r0, r1 = dbn.rbms_
    assert (r0.visible, r0.learning_rate, r0.learn_sigma, r0.n_iter_) == ("gaussian", 0.01, True, 2)
    assert (r1.visible, r1.learning_rate, r1.learn_sigma, r1.n_iter_, r1.persistent) == \
        ("bernoulli", 0.1, False, 3, True)
    np.testing.assert_allclose(dbn.transform(X), np.hstack(ref_up(dbn, X)), rtol=1e-4, atol=1e-5)


def test_layers_are_trained_on_the_layer_below(digits):
    # the second layer of a DBN is an RBM trained on the first layer's hidden probabilities
    from pymusicrbm._utils import layer_seed as _layer_seed
    from pymusicrbm.rbm import RBM
    X = digits[0][:300]
    dbn = DBN((10, 5), n_iter=2, random_state=7).fit(X)
    H = dbn.rbms_[0].transform(X)
    second = RBM(5, n_iter=2, random_state=_layer_seed(7, 1)).fit(H)
    np.testing.assert_allclose(dbn.rbms_[1].components_, second.components_, rtol=1e-5, atol=1e-6)


def test_sample(digits):
    X = digits[0]
    dbn = DBN((64, 32), n_iter=5, random_state=0, learning_rate=0.05).fit(X)
    s = dbn.sample(200, gibbs_steps=50, random_state=1)
    assert s.shape == (200, 64) and np.all((s >= 0) & (s <= 1))
    np.testing.assert_array_equal(s, dbn.sample(200, gibbs_steps=50, random_state=1))
    # generated digits share the data's mean image (ink in the middle, none at the borders)
    assert np.corrcoef(s.mean(0), X.mean(0))[0, 1] > 0.8


def test_classifier_accuracy_and_finetuning_gain(digits):
    X, y = digits
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
    clf = DBNClassifier((100, 100), n_iter=10, pretrain_batch_size=20, batch_size=64,
                        learning_rate_init=3e-3, early_stopping=True, n_iter_no_change=20, alpha=1e-4,
                        random_state=0).fit(Xtr, ytr)
    acc = clf.score(Xte, yte)
    with threadpool_limits(1):
        frozen = LogisticRegression(max_iter=500).fit(clf.dbn_.transform(Xtr), ytr).score(
            clf.dbn_.transform(Xte), yte)
    print(f"DBNClassifier test accuracy {acc:.4f}; logistic regression on frozen DBN features {frozen:.4f}")
    assert acc >= 0.95
    assert acc > frozen + 0.02
    proba = clf.predict_proba(Xte)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(clf.classes_[proba.argmax(1)], clf.predict(Xte))
    h = clf.history_
    assert len(h["loss"]) == clf.n_iter_ and h["loss"][-1] < h["loss"][0]
    assert h["val_loss"][clf.best_epoch_ - 1] == min(h["val_loss"])


@pytest.mark.parametrize("kw", [{"solver": "sgd", "learning_rate_init": 0.1, "dropout": 0.2},
                                {"visible": "gaussian", "learning_rate": 0.01, "early_stopping": False},
                                {"n_iter": 0, "learning_rate_init": 0.01}])
def test_classifier_variants_are_seeded(digits, kw):
    X, y = digits[0][:400], digits[1][:400]
    a = DBNClassifier((16,), n_iter=kw.pop("n_iter", 2), max_iter=10, batch_size=32,
                      random_state=0, **kw)
    b = DBNClassifier(**a.get_params())
    np.testing.assert_array_equal(a.fit(X, y).predict_proba(X), b.fit(X, y).predict_proba(X))
    assert a.score(X, y) > 0.5


def test_pipeline_and_grid_search(digits):
    X, y = digits[0][:300], digits[1][:300]
    # 10 epochs: after 1 both settings were near chance (0.16 vs 0.26), the choice hung on the random stream
    pipe = Pipeline([("dbn", DBN((8,), n_iter=10, random_state=0, monitor=False)),
                     ("clf", LogisticRegression(max_iter=200))])
    with threadpool_limits(1):
        gs = GridSearchCV(pipe, {"dbn__hidden_layer_sizes": [(2,), (16,)]}, cv=2).fit(X, y)
    assert gs.best_params_ == {"dbn__hidden_layer_sizes": (16,)}


# ---- scikit-learn estimator checks -------------------------------------------------------------------------------

@parametrize_with_checks([DBN((4, 3), n_iter=2, random_state=0),
                          DBN((4, 3), n_iter=2, random_state=0, visible="gaussian", learning_rate=0.01,
                              transform_layers="all"),
                          DBNClassifier((16,), n_iter=2, max_iter=50, learning_rate_init=0.01,
                                        random_state=0)])
def test_sklearn_compatible(estimator, check):
    check(estimator)


# ---- bad input --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fitted(digits):
    X, y = digits[0][:100], digits[1][:100]
    return DBN((4,), n_iter=1, random_state=0).fit(X), DBNClassifier((4,), n_iter=1, max_iter=2,
                                                                        random_state=0).fit(X, y)


def test_one_class(digits):
    with pytest.raises(ValueError, match="at least 2 classes"):
        DBNClassifier((4,), n_iter=1).fit(digits[0][:20], np.zeros(20))


def test_wrong_feature_count(fitted):
    dbn, clf = fitted
    with pytest.raises(ValueError, match="X has 3 features, but DBN is expecting 64 features"):
        dbn.transform(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="X has 3 features, but DBNClassifier is expecting 64 features"):
        clf.predict(np.zeros((2, 3)))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite(digits, fitted, bad):
    X = digits[0][:20].copy()
    X[0, 0] = bad
    with pytest.raises(ValueError, match="NaN|infinity"):
        DBN((4,)).fit(X)
    with pytest.raises(ValueError, match="NaN|infinity"):
        fitted[1].predict_proba(X)


def test_empty(digits):
    with pytest.raises(ValueError, match="0 sample"):
        DBNClassifier((4,)).fit(np.zeros((0, 64)), np.zeros(0))
    with pytest.raises(ValueError, match="0 sample"):
        DBN((4,)).fit(np.zeros((0, 64)))


@pytest.mark.parametrize("cls, kw, msg", [
    (DBN, {"visible": "binary"}, "'visible' parameter of DBN must be a str among"),
    (DBN, {"hidden_layer_sizes": (10, 0)}, "hidden_layer_sizes must be"),
    (DBN, {"layer_params": [{"n_components": 3}]}, "not per-layer RBM settings"),
    (DBN, {"layer_params": [{}, {}]}, "one dict per layer"),
    (DBN, {"transform_layers": "middle"}, "'transform_layers' parameter of DBN must be"),
    (DBNClassifier, {"visible": "binary"}, "'visible' parameter of DBNClassifier must be"),
    (DBNClassifier, {"solver": "lbfgs"}, "'solver' parameter of DBNClassifier must be a str among"),
    (DBNClassifier, {"dropout": 1.0}, "'dropout' parameter of DBNClassifier must be a float in the range"),
])
def test_bad_parameters(digits, cls, kw, msg):
    X, y = digits[0][:20], digits[1][:20]
    with pytest.raises(ValueError, match=msg):
        cls(**{"hidden_layer_sizes": (4,), **kw}).fit(X, y)


def test_unknown_transform_layers(fitted, digits):
    with pytest.raises(ValueError, match="layers must be one of"):
        fitted[0].transform(digits[0][:2], layers="bottom")


def test_plot_dbn_history(tmp_path, fitted):
    from pymusicrbm.plots import plot_learning_curves
    dbn, clf = fitted
    assert plot_learning_curves(dbn.history_, tmp_path / "dbn.png").stat().st_size > 1000
    assert plot_learning_curves(clf.history_, tmp_path / "clf.png").stat().st_size > 1000


def test_classifier_pickle_with_dropout(digits, tmp_path):
    import pickle
    X, y = digits[0][:200], digits[1][:200]
    clf = DBNClassifier((8,), n_iter=1, max_iter=2, dropout=0.3, random_state=0).fit(X, y)
    back = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(back.predict_proba(X), clf.predict_proba(X))
    back.save(tmp_path / "c.safetensors")  # the optimizer state survives pickling too
    np.testing.assert_array_equal(DBNClassifier.load(tmp_path / "c.safetensors").predict(X), clf.predict(X))


def test_classifier_pretraining_only(digits, tmp_path):
    X, y = digits[0][:200], digits[1][:200]
    path = tmp_path / "c.safetensors"
    clf = DBNClassifier((8,), n_iter=2, max_iter=0, random_state=0).fit(X, y, checkpoint=path)
    assert clf.n_iter_ == 0 and clf.dbn_.rbms_[0].n_iter_ == 2
    back = DBNClassifier.load(path)  # the final checkpoint holds the finished model
    np.testing.assert_array_equal(back.dbn_.transform(X), clf.dbn_.transform(X))
    np.testing.assert_array_equal(back.predict_proba(X), clf.predict_proba(X))
