"""scikit-learn-compatible estimators on ``fhec train``'s core: a quantization-aware network
trained on your data, compiled for encrypted inference.

They follow scikit-learn's conventions (``fit`` / ``predict`` / ``predict_proba`` / ``score``
/ ``get_params`` / ``set_params``; parameters stored as given; fitted attributes end in
``_``), so they work in a ``Pipeline`` or ``GridSearchCV``. Then, as in Concrete ML::

    clf = fhec.NeuralNetClassifier(n_w_bits=3, n_a_bits=3).fit(X_train, y_train)
    clf.compile(X_train)                       # the encrypted program
    clf.predict(X_test, fhe="simulate")        # or "disable", "clear", "execute"

scikit-learn itself is optional: without it the estimators still work, with the same
methods, but cannot be cloned by scikit-learn's tools.
"""

from __future__ import annotations

import inspect
import json
from typing import Any, Dict, List, Optional

import numpy as np

from . import _fhec
from ._api import Model, OnnxModel, compile as _compile
from ._progress import Progress, reporter

try:  # scikit-learn's base classes when installed (clone, tags, Pipeline, GridSearchCV)
    from sklearn.base import BaseEstimator as _Base
    from sklearn.base import ClassifierMixin as _ClassifierMixin
    from sklearn.base import RegressorMixin as _RegressorMixin
    from sklearn.exceptions import NotFittedError
except ImportError:  # pragma: no cover - exercised only without scikit-learn

    class NotFittedError(ValueError, AttributeError):
        """The estimator is used before ``fit``."""

    class _Base:
        @classmethod
        def _get_param_names(cls) -> List[str]:
            sig = inspect.signature(cls.__init__)
            return sorted(p for p in sig.parameters if p != "self")

        def get_params(self, deep: bool = True) -> Dict[str, Any]:
            return {k: getattr(self, k) for k in self._get_param_names()}

        def set_params(self, **params: Any) -> "_Base":
            valid = self._get_param_names()
            for k, v in params.items():
                if k not in valid:
                    raise ValueError(f"invalid parameter {k!r} for {type(self).__name__}; valid: {valid}")
                setattr(self, k, v)
            return self

    class _ClassifierMixin:
        _estimator_type = "classifier"

    class _RegressorMixin:
        _estimator_type = "regressor"


__all__ = ["NeuralNetClassifier", "NeuralNetRegressor"]


def _features(X: Any) -> np.ndarray:
    if hasattr(X, "to_numpy"):  # pandas
        X = X.to_numpy()
    a = np.asarray(X, dtype=np.float32)
    if a.ndim != 2:
        from .errors import InputError

        raise InputError(f"X: expected [samples, features], got shape {a.shape}")
    return np.ascontiguousarray(a)


class _NeuralNet(_Base):
    _task = "classification"

    def __init__(
        self,
        n_layers: int = 3,
        n_hidden_multiplier: int = 4,
        n_w_bits: int = 3,
        n_a_bits: int = 3,
        n_accum_bits: Optional[int] = 8,
        prune_neurons: float = 0.0,
        activation: str = "relu",
        power_of_two: bool = False,
        epochs: int = 60,
        lr: float = 3e-3,
        batch_size: int = 64,
        class_weight: Optional[str] = None,
        val_split: float = 0.1,
        random_state: int = 42,
        rounding_bits: Optional[int] = None,
        rounding_method: str = "approximate",
        compile_settings: Optional[Dict[str, Any]] = None,
        progress: Progress = None,
    ):
        self.n_layers = n_layers
        self.n_hidden_multiplier = n_hidden_multiplier
        self.n_w_bits = n_w_bits
        self.n_a_bits = n_a_bits
        self.n_accum_bits = n_accum_bits
        self.prune_neurons = prune_neurons
        self.activation = activation
        self.power_of_two = power_of_two
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.class_weight = class_weight
        self.val_split = val_split
        self.random_state = random_state
        self.rounding_bits = rounding_bits
        self.rounding_method = rounding_method
        self.compile_settings = compile_settings
        self.progress = progress

    # -- training ----------------------------------------------------------------------

    def _targets(self, y: Any) -> np.ndarray:
        raise NotImplementedError

    def fit(self, X: Any, y: Any) -> "_NeuralNet":
        """Trains the quantization-aware network (``fhec train``: AdamW, the epoch with the
        best validation score kept, pruned to ``n_accum_bits`` accumulators)."""
        from .errors import SettingsError

        x = _features(X)
        t = self._targets(y)
        if self.class_weight not in (None, "balanced"):
            raise SettingsError(f"class_weight={self.class_weight!r}: expected None or 'balanced'")
        opts = {
            "task": self._task,
            "n_layers": int(self.n_layers),
            "n_hidden_multiplier": int(self.n_hidden_multiplier),
            "n_w_bits": int(self.n_w_bits),
            "n_a_bits": int(self.n_a_bits),
            "n_accum_bits": None if self.n_accum_bits is None else int(self.n_accum_bits),
            "prune_neurons": float(self.prune_neurons),
            "activation": str(self.activation),
            "power_of_two": bool(self.power_of_two),
            "epochs": int(self.epochs),
            "lr": float(self.lr),
            "batch_size": int(self.batch_size),
            "balanced": self.class_weight == "balanced",
            "val_split": float(self.val_split),
            "seed": int(self.random_state),
        }
        with reporter(self.progress, "train", "epoch") as cb:
            onnx, log = _fhec.train(x, t, json.dumps(opts), cb)
        self.onnx_model_: bytes = onnx
        self.training_log_: Dict[str, Any] = json.loads(log)
        self.n_features_in_ = x.shape[1]
        self._float = OnnxModel(onnx)
        self.fhe_model_: Optional[Model] = None
        return self

    # -- compiling ---------------------------------------------------------------------

    def compile(self, X: Any, **settings: Any) -> Model:
        """Compiles the trained network for encrypted inference, ``X`` as calibration inputs
        (as Concrete ML's ``compile(X)``). Defaults: approximate rounding to ``n_a_bits + 2``
        bits (low-bit activations tolerate an off-by-one table index), the training's
        accumulator budget; ``compile_settings`` and ``settings`` (any :func:`fhec.compile`
        setting) override them."""
        self._check_fitted()
        s: Dict[str, Any] = {
            "rounding_bits": self.rounding_bits if self.rounding_bits is not None else int(self.n_a_bits) + 2,
            "rounding_method": self.rounding_method,
        }
        if self.n_accum_bits is not None:
            s["n_accum_bits"] = int(self.n_accum_bits)
        s.update(self.compile_settings or {})
        s.update(settings)
        self.fhe_model_ = _compile(self.onnx_model_, _features(X), progress=self.progress, **s)
        return self.fhe_model_

    @property
    def fhe_circuit(self) -> Optional[Model]:
        """The compiled model (``None`` before :meth:`compile`)."""
        return getattr(self, "fhe_model_", None)

    def _check_fitted(self) -> None:
        if not hasattr(self, "onnx_model_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit(X, y) first")

    def _outputs(self, X: Any, fhe: str) -> np.ndarray:
        self._check_fitted()
        x = _features(X)
        if x.shape[1] != self.n_features_in_:
            from .errors import InputError

            raise InputError(f"X has {x.shape[1]} features, the model was fitted on {self.n_features_in_}")
        if fhe == "disable":
            y = self._float.predict(x)
        else:
            if self.fhe_circuit is None:
                raise RuntimeError(
                    f"fhe={fhe!r} runs the compiled model: call compile(X) first (fhe='disable' runs the trained network in float)"
                )
            y = self.fhe_circuit.predict(x, fhe=fhe, progress=self.progress)
        return np.asarray(y)

    # -- persistence -------------------------------------------------------------------

    def __getstate__(self) -> Dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_float", None)
        if state.get("fhe_model_") is not None:
            state["fhe_model_"] = state["fhe_model_"].to_bytes()
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        fhe = state.get("fhe_model_")
        if isinstance(fhe, bytes):
            state["fhe_model_"] = Model.from_bytes(fhe)
        self.__dict__.update(state)
        if "onnx_model_" in state:
            self._float = OnnxModel(state["onnx_model_"])


class NeuralNetClassifier(_ClassifierMixin, _NeuralNet):
    """A quantization-aware MLP classifier trained by fhec (``fhec train``), compiled for
    encrypted inference. Labels may be any values ``np.unique`` sorts (``classes_``).

    Parameters are ``fhec train``'s (``n_layers``, ``n_hidden_multiplier``, ``n_w_bits``,
    ``n_a_bits``, ``n_accum_bits`` — ``None``: no pruning —, ``prune_neurons``,
    ``activation``, ``power_of_two``, ``epochs``, ``lr``, ``batch_size``, ``class_weight``,
    ``val_split``, ``random_state``), then the compile defaults (``rounding_bits``,
    ``rounding_method``, ``compile_settings``) and ``progress``.
    """

    _task = "classification"

    def _targets(self, y: Any) -> np.ndarray:
        y = np.asarray(y)
        if y.ndim != 1:
            y = y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y
        if y.ndim != 1:
            from .errors import InputError

            raise InputError(f"y: a classifier takes one label per sample, got shape {y.shape}")
        self.classes_, idx = np.unique(y, return_inverse=True)
        return idx.astype(np.float64)

    def predict_proba(self, X: Any, fhe: str = "disable") -> np.ndarray:
        """Class probabilities (softmax of the network's outputs), columns in ``classes_``
        order."""
        z = self._outputs(X, fhe).astype(np.float64)
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def decision_function(self, X: Any, fhe: str = "disable") -> np.ndarray:
        """The network's outputs (logits)."""
        return self._outputs(X, fhe)

    def predict(self, X: Any, fhe: str = "disable") -> np.ndarray:
        """Predicted labels. ``fhe``: ``"disable"`` (the trained network in float),
        ``"clear"``, ``"simulate"`` or ``"execute"`` (the compiled model; see
        :meth:`fhec.Model.predict`)."""
        z = self._outputs(X, fhe)
        return self.classes_[np.argmax(z, axis=1)]

    def score(self, X: Any, y: Any, sample_weight: Any = None, fhe: str = "disable") -> float:
        """Mean accuracy of ``predict(X, fhe=fhe)``."""
        p = self.predict(X, fhe=fhe)
        w = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        return float(np.average(p == np.asarray(y).reshape(-1), weights=w))


class NeuralNetRegressor(_RegressorMixin, _NeuralNet):
    """A quantization-aware MLP regressor trained by fhec (``fhec train --task regression``),
    compiled for encrypted inference; targets ``[N]`` or ``[N, K]``. Parameters as
    :class:`NeuralNetClassifier`'s (``class_weight`` must stay ``None``)."""

    _task = "regression"

    def _targets(self, y: Any) -> np.ndarray:
        y = np.asarray(y, dtype=np.float64)
        self._y_ndim = y.ndim
        return np.ascontiguousarray(y)

    def predict(self, X: Any, fhe: str = "disable") -> np.ndarray:
        """Predicted targets (``[N]`` when fitted on ``[N]``)."""
        y = self._outputs(X, fhe)
        if getattr(self, "_y_ndim", 2) == 1 and y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        return y

    def score(self, X: Any, y: Any, sample_weight: Any = None, fhe: str = "disable") -> float:
        """R² of ``predict(X, fhe=fhe)``."""
        y = np.asarray(y, dtype=np.float64)
        p = self.predict(X, fhe=fhe).astype(np.float64).reshape(y.shape)
        w = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        mean = np.average(y, axis=0, weights=w)
        ss_res = np.average((y - p) ** 2, axis=0, weights=w).sum()
        ss_tot = np.average((y - mean) ** 2, axis=0, weights=w).sum()
        return float(1.0 - ss_res / ss_tot) if ss_tot > 0 else 0.0
