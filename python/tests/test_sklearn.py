"""The scikit-learn estimators: fit / predict / predict_proba / score / get_params /
set_params, clone, Pipeline and GridSearchCV, then compile(X) and predict(X, fhe=...)."""

import pickle

import numpy as np
import pytest

import fhec

sklearn = pytest.importorskip("sklearn", reason="scikit-learn is not installed")
from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_breast_cancer, load_diabetes  # noqa: E402
from sklearn.model_selection import GridSearchCV, train_test_split  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402


@pytest.fixture(scope="module")
def cancer():
    X, y = load_breast_cancer(return_X_y=True)
    names = np.array(["malignant", "benign"])[y]  # string labels
    return train_test_split(X.astype(np.float32), names, test_size=0.25, random_state=0, stratify=y)


@pytest.fixture(scope="module")
def fitted(cancer):
    Xtr, Xte, ytr, yte = cancer
    return fhec.NeuralNetClassifier(n_layers=2, n_hidden_multiplier=1, epochs=20).fit(Xtr, ytr)


def test_classifier_fit_predict_score(cancer, fitted):
    Xtr, Xte, ytr, yte = cancer
    assert set(fitted.classes_) == {"malignant", "benign"}
    p = fitted.predict(Xte)
    assert p.dtype == fitted.classes_.dtype and set(p) <= set(fitted.classes_)
    proba = fitted.predict_proba(Xte)
    assert proba.shape == (len(Xte), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(fitted.classes_[proba.argmax(axis=1)], p)
    assert fitted.score(Xte, yte) >= 0.9
    assert fitted.n_features_in_ == Xtr.shape[1]
    assert fitted.training_log_["history"]


def test_compile_then_predict_in_every_mode(cancer, fitted):
    Xtr, Xte, ytr, yte = cancer
    with pytest.raises(RuntimeError, match="compile"):
        clone(fitted).set_params().fit(Xtr[:40], ytr[:40]).predict(Xte, fhe="clear")
    m = fitted.compile(Xtr)
    assert isinstance(m, fhec.Model) and fitted.fhe_circuit is m
    assert m.parameters["rounding"] == "approximate"
    clear = fitted.score(Xte, yte, fhe="clear")
    sim = fitted.score(Xte, yte, fhe="simulate")
    assert clear >= 0.9 and sim >= 0.88, (clear, sim)
    enc = fitted.predict(Xte[:2], fhe="execute")
    assert set(enc) <= set(fitted.classes_)
    # pickling keeps the trained and the compiled model
    again = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(again.predict(Xte, fhe="clear"), fitted.predict(Xte, fhe="clear"))


def test_params_clone_pipeline_and_grid_search(cancer):
    Xtr, Xte, ytr, yte = cancer
    clf = fhec.NeuralNetClassifier(n_layers=2, n_hidden_multiplier=1, epochs=8)
    params = clf.get_params()
    assert params["n_w_bits"] == 3 and params["epochs"] == 8
    assert clf.set_params(n_w_bits=4) is clf and clf.n_w_bits == 4
    c2 = clone(clf)
    assert c2.get_params() == clf.get_params() and c2 is not clf
    pipe = make_pipeline(StandardScaler(), clf).fit(Xtr, ytr)
    assert pipe.score(Xte, yte) >= 0.85
    grid = GridSearchCV(clf, {"n_a_bits": [2, 3]}, cv=2).fit(Xtr, ytr)
    assert grid.best_params_["n_a_bits"] in (2, 3)
    assert grid.best_estimator_.score(Xte, yte) >= 0.85


def test_regressor(tmp_path):
    X, y = load_diabetes(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X.astype(np.float32), y, test_size=0.25, random_state=0)
    reg = fhec.NeuralNetRegressor(n_layers=2, n_hidden_multiplier=2, n_w_bits=4, n_a_bits=4, epochs=60)
    reg.fit(Xtr, ytr)
    assert reg.predict(Xte).shape == (len(Xte),)
    r2 = reg.score(Xte, yte)
    assert r2 >= 0.25, r2  # a linear model scores about 0.35 on this split
    reg.compile(Xtr)
    assert reg.score(Xte, yte, fhe="clear") >= r2 - 0.1
    assert reg.predict(Xte[:1], fhe="execute").shape == (1,)


def test_estimator_errors(cancer):
    Xtr, Xte, ytr, yte = cancer
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        fhec.NeuralNetClassifier().predict(Xte)
    with pytest.raises(fhec.SettingsError, match="n_layers"):
        fhec.NeuralNetClassifier(n_layers=0).fit(Xtr, ytr)
    with pytest.raises(fhec.InputError):
        fhec.NeuralNetClassifier(epochs=1).fit(Xtr[:, :, None], ytr)
    with pytest.raises(fhec.InputError):
        fhec.NeuralNetClassifier(epochs=1).fit(np.full_like(Xtr, np.nan), ytr)
