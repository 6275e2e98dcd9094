"""fhec's Python API: compile, run, encrypt, serve. A thin layer over the native module; every
check and decision is the Rust library's, so Python, the ``fhec`` command and ``fhec serve``
behave the same and exchange the same bytes."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import _fhec
from ._progress import Progress, reporter

__all__ = ["Model", "Client", "Server", "OnnxModel", "compile", "load", "tune"]

ArrayLike = Any
Inputs = Union[ArrayLike, Sequence[ArrayLike]]
ModelSource = Union[str, "os.PathLike[str]", bytes, Any]

FHE_MODES = ("disable", "clear", "simulate", "execute")


# ---------------------------------------------------------------------------------------
# arrays


def _array(x: ArrayLike, what: str) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.dtype.kind not in "fiub":
        raise _errors().InputError(f"{what}: an array of numbers was expected, got dtype {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.float32)


def _inputs(x: Inputs, n_inputs: int, what: str = "input") -> List[np.ndarray]:
    """One float32 array per graph input: a single array for a one-input model, a list or
    tuple of arrays otherwise."""
    if isinstance(x, (list, tuple)) and (n_inputs > 1 or (len(x) == 1 and n_inputs == 1 and _is_array(x[0]))):
        return [_array(a, f"{what} {i}") for i, a in enumerate(x)]
    return [_array(x, what)]


def _is_array(x: Any) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype")


def _outputs(ys: List[np.ndarray]) -> Union[np.ndarray, Tuple[np.ndarray, ...]]:
    return ys[0] if len(ys) == 1 else tuple(ys)


def _errors():
    from . import errors

    return errors


# ---------------------------------------------------------------------------------------
# where a model comes from


def _source(model: ModelSource, example: Optional[List[np.ndarray]], tmp: List[Any]) -> Dict[str, Any]:
    """The native module's keyword arguments for an ONNX model given as a path, bytes, an
    ``onnx.ModelProto`` or a ``torch.nn.Module``."""
    if isinstance(model, (str, os.PathLike)):
        return {"path": os.fspath(model)}
    if isinstance(model, (bytes, bytearray, memoryview)):
        return {"data": bytes(model)}
    kind = type(model).__module__ + "." + type(model).__name__
    if hasattr(model, "SerializeToString") and type(model).__name__ == "ModelProto":
        return {"data": model.SerializeToString(), "source": "<onnx.ModelProto>"}
    if _is_torch_module(model):
        d = tempfile.TemporaryDirectory(prefix="fhec-torch-")
        tmp.append(d)
        path = Path(d.name) / f"{type(model).__name__}.onnx"
        export_torch(model, example, path)
        return {"path": str(path)}
    raise TypeError(
        f"model: expected a path, ONNX bytes, an onnx.ModelProto or a torch.nn.Module, got {kind}"
    )


def _is_torch_module(m: Any) -> bool:
    for cls in type(m).__mro__:
        if cls.__module__.startswith("torch.nn") and cls.__name__ == "Module":
            return True
    return False


def export_torch(module: Any, example: Optional[List[np.ndarray]], path: Union[str, Path]) -> None:
    """Exports a ``torch.nn.Module`` to ONNX at ``path`` with a symbolic batch axis (torch's
    default exporter; the legacy one if that fails), from example inputs (a few calibration
    samples). Needs torch (and, for torch's default exporter, onnxscript)."""
    import torch  # noqa: F401  (only here: torch stays optional)

    if not example:
        raise _errors().InputError(
            "compiling a torch.nn.Module needs calibration data: its first samples are the example inputs of the export"
        )
    # two samples at least: a batch of 1 is specialized away by torch.export
    xs = []
    for a in example:
        a = a[:2] if a.shape[0] >= 2 else np.concatenate([a[:1], a[:1]])
        xs.append(torch.from_numpy(np.ascontiguousarray(a)))
    was_training = module.training
    module.eval()
    try:
        batch = torch.export.Dim("batch", min=1)
        try:
            torch.onnx.export(
                module,
                tuple(xs),
                str(path),
                dynamo=True,
                dynamic_shapes=tuple({0: batch} for _ in xs),
                verbose=False,
            )
            return
        except Exception as first:  # the dynamo exporter refuses some modules; try legacy
            names = [f"input{i}" for i in range(len(xs))]
            try:
                torch.onnx.export(
                    module,
                    tuple(xs),
                    str(path),
                    dynamo=False,
                    input_names=names,
                    dynamic_axes={n: {0: "batch"} for n in names},
                )
            except Exception as second:
                raise _errors().ModelError(
                    f"torch could not export the module to ONNX (default exporter: {first}; legacy exporter: {second}); export it yourself and pass the .onnx file"
                ) from second
    finally:
        module.train(was_training)


def _layers(layers: Mapping[str, Any]) -> Dict[str, str]:
    out = {}
    for name, spec in layers.items():
        if isinstance(spec, Mapping):
            keys = {"weight_bits": "w", "input_bits": "i", "rounding_bits": "r"}
            unknown = set(spec) - set(keys)
            if unknown:
                raise _errors().SettingsError(
                    f"layers[{name!r}]: unknown field(s) {sorted(unknown)}; expected weight_bits, input_bits, rounding_bits"
                )
            spec = ",".join(f"{keys[k]}{v}" for k, v in spec.items() if v is not None)
        out[name] = str(spec)
    return out


def _settings_json(settings: Mapping[str, Any]) -> str:
    s = dict(settings)
    if "layers" in s and s["layers"] is not None:
        s["layers"] = _layers(s["layers"])
    for k, v in list(s.items()):
        if isinstance(v, np.generic):
            s[k] = v.item()
    return json.dumps(s)


# ---------------------------------------------------------------------------------------
# the compiled model


class Model:
    """A compiled model: the integer program, the client's quantizers, the compile report and
    the TFHE parameters. Nothing secret, nothing per key; the same file ``fhec compile``
    writes (:meth:`save`, :func:`load`, :meth:`to_bytes`).

    Run it with :meth:`predict`; split it into a client (keys, encryption, decryption) and a
    server (evaluation on ciphertexts) with :meth:`client` and :class:`Server`.
    """

    def __init__(self, raw: "_fhec.CompiledModel"):
        self._raw = raw
        self._report: Optional[Dict[str, Any]] = None
        self._params: Optional[Dict[str, Any]] = None
        self._keys: Optional[Tuple[Client, Server, bytes]] = None
        #: For a model from :func:`tune`: the search (float score, chosen candidate, margin,
        #: Pareto front).
        self.tuning: Optional[Dict[str, Any]] = None

    # -- what it is ------------------------------------------------------------------

    @property
    def report(self) -> Dict[str, Any]:
        """The compile report (per layer: bits, tables, rounding; bootstraps; what compile
        decided on its own), as the JSON ``fhec compile --report`` writes."""
        if self._report is None:
            self._report = json.loads(self._raw.report_json())
        return self._report

    @property
    def parameters(self) -> Dict[str, Any]:
        """The encrypted program's plan: TFHE parameters per partition, security bits, error
        probabilities, bootstraps, expected key sizes (bytes) and the model fingerprint."""
        if self._params is None:
            self._params = json.loads(self._raw.plan_json())
        return self._params

    @property
    def bootstraps(self) -> int:
        """Programmable bootstraps per sample (table lookups and bit extractions)."""
        return self._raw.bootstraps

    @property
    def fingerprint(self) -> str:
        """The model id every key and ciphertext for this model carries (hex)."""
        return self._raw.fingerprint

    @property
    def input_names(self) -> List[str]:
        return [n for n, _, _ in self._raw.inputs()]

    @property
    def input_shapes(self) -> List[Tuple[Optional[int], ...]]:
        """Each input's shape; ``None`` marks the batch axis."""
        return [tuple([None] + list(s[1:])) if b else tuple(s) for _, s, b in self._raw.inputs()]

    @property
    def output_names(self) -> List[str]:
        return list(self._raw.outputs())

    def summary(self) -> str:
        """The report and plan as ``fhec compile`` prints them."""
        return self._raw.report_text() + self._raw.plan_text()

    def __repr__(self) -> str:
        p = self.parameters
        return (
            f"<fhec.Model {self.fingerprint}: {p['bootstraps']} bootstraps/sample, "
            f"{p['rounding']} rounding, {p['params']}, {p['security_bits']}-bit security>"
        )

    # -- running ---------------------------------------------------------------------

    def predict(
        self,
        x: Inputs,
        fhe: str = "disable",
        *,
        seed: int = 0,
        progress: Progress = None,
    ) -> Union[np.ndarray, Tuple[np.ndarray, ...]]:
        """Runs the model on a batch (axis 0 = samples; a list of arrays for a model with
        several inputs) and returns its outputs (a tuple for several).

        ``fhe``:

        - ``"disable"``: the float model (as imported);
        - ``"clear"``: the integer program in the clear (exact-rounding encrypted results
          equal it bit for bit);
        - ``"simulate"``: the integer program with the encrypted program's noise and failure
          rate (approximate rounding's off-by-one reads), drawn from ``seed``;
        - ``"execute"``: encrypted: keys made on first use (:meth:`keygen`), inputs
          encrypted, evaluated on ciphertexts, decrypted.
        """
        xs = _inputs(x, len(self.input_names))
        if fhe in ("disable", "clear", "simulate"):
            mode = {"disable": "float", "clear": "clear", "simulate": "simulate"}[fhe]
            return _outputs(self._raw.run(xs, mode, seed))
        if fhe == "execute":
            client, server, keys = self.keygen(progress=progress)
            cts = client.encrypt(xs if len(xs) > 1 else xs[0])
            out = server.run(cts, keys, progress=progress)
            return client.decrypt(out)
        raise _errors().SettingsError(f"fhe={fhe!r}: expected one of {', '.join(FHE_MODES)}")

    def keygen(self, force: bool = False, progress: Progress = None) -> Tuple["Client", "Server", bytes]:
        """The key pair :meth:`predict` uses for ``fhe="execute"`` (made once, or again with
        ``force``): the client, a server holding the expanded evaluation keys, and those
        keys' bytes."""
        if self._keys is None or force:
            c = self.client()
            c.keygen(progress=progress)
            self._keys = (c, Server(self), c.evaluation_keys())
        return self._keys

    def with_settings(self, **settings: Any) -> "Model":
        """The same program under other encrypted-program settings (``p_error``,
        ``global_p_error``, ``rounding_method``, ``params``, ``max_off_by_one``,
        ``split_tables``): its TFHE parameters are searched again."""
        return Model(self._raw.with_fhe_settings(_settings_json(settings)))

    # -- files -----------------------------------------------------------------------

    def save(self, path: Union[str, "os.PathLike[str]"]) -> None:
        """Writes the compiled model (``fhec keygen``, ``run``, ``serve`` read it)."""
        self._raw.save(os.fspath(path))

    def to_bytes(self) -> bytes:
        """The bytes of the compiled model file."""
        return self._raw.to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> "Model":
        """A compiled model from the bytes of its file."""
        return cls(_fhec.CompiledModel.from_bytes(bytes(data)))

    @classmethod
    def load(cls, path: Union[str, "os.PathLike[str]"]) -> "Model":
        """Reads a compiled model file (from ``fhec compile`` or :meth:`save`)."""
        return cls(_fhec.CompiledModel.load(os.fspath(path)))

    def client(self) -> "Client":
        """A client for this model, without keys yet (:meth:`Client.keygen`)."""
        return Client(self)


def load(path: Union[str, "os.PathLike[str]"]) -> Model:
    """Reads a compiled model file (from ``fhec compile`` or :meth:`Model.save`)."""
    return Model.load(path)


# ---------------------------------------------------------------------------------------
# client and server


class Client:
    """The client side of one key pair: makes the keys, keeps the secret one, encrypts inputs
    and decrypts results. Everything it hands out is bytes — the same bytes the ``fhec``
    command writes to files — so they can travel over any transport::

        client = model.client()
        client.keygen()
        keys = client.evaluation_keys()      # to the server, once
        ct = client.encrypt(x)               # to the server
        y = client.decrypt(server_reply)     # from the server
    """

    def __init__(self, model: Model):
        self.model = model
        self._raw: Optional[_fhec.Client] = None
        self._eval: Optional[bytes] = None

    def keygen(self, progress: Progress = None) -> None:
        """Makes a fresh key pair (secret key kept here; evaluation keys for the server)."""
        with reporter(progress, "keygen", "step") as cb:
            self._raw, self._eval = _fhec.Client.keygen(self.model._raw, cb)

    @classmethod
    def from_key_bytes(cls, model: Model, data: bytes) -> "Client":
        """A client from its secret key's bytes (:meth:`key_bytes`, or a ``client.key``
        file from ``fhec keygen``)."""
        c = cls(model)
        c._raw = _fhec.Client.from_key_bytes(model._raw, bytes(data))
        return c

    def _key(self) -> "_fhec.Client":
        if self._raw is None:
            raise _errors().KeysError("this client has no keys yet: call keygen() first (or Client.from_key_bytes)")
        return self._raw

    def evaluation_keys(self) -> bytes:
        """The evaluation keys for the server (a ``server.key`` file's bytes; no secret)."""
        self._key()
        if self._eval is None:
            raise _errors().KeysError(
                "a client loaded from its secret key does not hold the evaluation keys; use the server.key made with it"
            )
        return self._eval

    def key_bytes(self) -> bytes:
        """The secret key's bytes (a ``client.key`` file). Keep them secret."""
        return self._key().key_bytes()

    @property
    def key_id(self) -> str:
        """The key pair's id (hex); every ciphertext under it carries it."""
        return self._key().key_id

    def encrypt(self, x: Inputs) -> bytes:
        """Quantizes and encrypts a batch (axis 0 = samples; a list of arrays for a model with
        several inputs): the bytes of an ``X.ct`` file (``fhec encrypt`` writes the same)."""
        return self._key().encrypt(_inputs(x, len(self.model.input_names)))

    def decrypt(self, data: bytes) -> Union[np.ndarray, Tuple[np.ndarray, ...]]:
        """Decrypts encrypted results (a ``Y.ct`` file's bytes, from :meth:`Server.run` or
        ``fhec serve-run``) and runs the client-side tail (dequantization, softmax…)."""
        return _outputs(self._key().decrypt(bytes(data)))

    def decrypt_integers(self, data: bytes) -> List[List[List[int]]]:
        """The decrypted integers at the encrypted boundary (per sample, per output): what
        clear mode computes, before the client-side tail."""
        return self._key().decrypt_integers(bytes(data))


class Server:
    """The server side: a compiled model; computes on ciphertexts with the evaluation keys a
    client sent, never sees a secret::

        server = fhec.Server(model_bytes)
        reply = server.run(ciphertexts, evaluation_keys)

    ``model``: the compiled model's bytes, a path to its file, or a :class:`Model`. The last
    ``key_cache`` evaluation keys used are kept expanded in memory (expanding takes about as
    long as a few bootstraps' worth of work per key size).
    """

    def __init__(self, model: Union[bytes, str, "os.PathLike[str]", Model], key_cache: int = 2):
        if isinstance(model, Model):
            m = model
        elif isinstance(model, (bytes, bytearray, memoryview)):
            m = Model.from_bytes(bytes(model))
        elif isinstance(model, (str, os.PathLike)):
            m = Model.load(model)
        else:
            raise TypeError(f"model: expected bytes, a path or an fhec.Model, got {type(model).__name__}")
        self.model = m
        self._raw = _fhec.Server(m._raw, key_cache)

    def run(self, ciphertexts: bytes, evaluation_keys: bytes, progress: Progress = None) -> bytes:
        """Evaluates encrypted inputs (an ``X.ct`` file's bytes) under the evaluation keys (a
        ``server.key`` file's bytes): the encrypted results (a ``Y.ct`` file's bytes, what
        ``fhec serve-run`` writes)."""
        with reporter(progress, "encrypted run", "table") as cb:
            return self._raw.run(ciphertexts, evaluation_keys, cb)


# ---------------------------------------------------------------------------------------
# float models


class OnnxModel:
    """An imported ONNX model, run in float (no compile)."""

    def __init__(self, model: ModelSource, external_data: Optional[Mapping[str, bytes]] = None):
        tmp: List[Any] = []
        src = _source(model, None, tmp)
        if external_data:
            src["external"] = {k: bytes(v) for k, v in external_data.items()}
        self._raw = _fhec.OnnxModel(**src)
        self.notes: List[str] = list(self._raw.notes())

    @property
    def input_names(self) -> List[str]:
        return [n for n, _, _ in self._raw.inputs()]

    def predict(self, x: Inputs) -> Union[np.ndarray, Tuple[np.ndarray, ...]]:
        return _outputs(self._raw.run(_inputs(x, len(self.input_names))))


# ---------------------------------------------------------------------------------------
# compile and tune


def _calib(calib: Optional[Inputs], what: str = "calib") -> List[np.ndarray]:
    if calib is None:
        return []
    if isinstance(calib, (list, tuple)) and calib and _is_array(calib[0]):
        return [_array(a, f"{what} {i}") for i, a in enumerate(calib)]
    return [_array(calib, what)]


def compile(
    model: ModelSource,
    calib: Optional[Inputs] = None,
    *,
    external_data: Optional[Mapping[str, bytes]] = None,
    progress: Progress = None,
    **settings: Any,
) -> Model:
    """Compiles an ONNX model into a program that runs on encrypted data.

    ``model``: a path to an ``.onnx`` file (its external data, e.g. ``m.onnx.data``, is read
    from beside it), the model's bytes (with ``external_data={"m.onnx.data": bytes}`` if it
    has any), an ``onnx.ModelProto``, or a ``torch.nn.Module`` (exported inside with a
    symbolic batch axis; needs torch).

    ``calib``: calibration inputs, axis 0 = samples (a list of arrays for several inputs);
    optional for a model that quantizes itself everywhere (QDQ, QONNX, Brevitas).

    ``settings``: every ``fhec compile`` flag, by its name with underscores — ``n_bits``,
    ``n_bits_inputs``, ``n_bits_weights``, ``n_bits_activations``, ``n_bits_decrypted``,
    ``rounding_bits``, ``no_rounding``, ``n_accum_bits``, ``per_channel``,
    ``max_tlu_bits``, ``layers`` (``{"NODE": "w4,i4,r5"}`` or
    ``{"NODE": {"weight_bits": 4}}``), ``ranges`` (``"calibrated"``/``"proven"``),
    ``range_margin``, ``requantize``, ``p_error``, ``global_p_error``,
    ``rounding_method`` (``"exact"``/``"approximate"``), ``params``
    (``"optimized"``/``"vetted"``), ``max_off_by_one``, ``split_tables``
    (``"auto"``/``"on"``/``"off"``), ``agreement_target`` (percent), ``max_cost_factor``,
    ``no_auto``, ``max_elements``. ``fhec compile --help`` (docs/cli.md) says what each does.
    An unknown name raises :class:`fhec.SettingsError`.

    Returns a :class:`Model`. Raises :class:`fhec.ModelError` (unsupported op, shape,
    accumulator), :class:`fhec.InputError` (calibration data), :class:`fhec.SettingsError`,
    :class:`fhec.IoError`, each with a one-line message naming the node or file and the fix.
    """
    cal = _calib(calib)
    tmp: List[Any] = []
    try:
        src = _source(model, cal, tmp)
        if external_data:
            src["external"] = {k: bytes(v) for k, v in external_data.items()}
        with reporter(progress, "compile", "step") as cb:
            raw = _fhec.compile(cal, _settings_json(settings), progress=cb, **src)
        return Model(raw)
    finally:
        for d in tmp:
            d.cleanup()


def tune(
    model: ModelSource,
    calib: Inputs,
    val_x: Inputs,
    val_y: ArrayLike,
    *,
    metric: str = "accuracy",
    max_accuracy_drop: float = 0.5,
    n_bits: Sequence[int] = (3, 4, 5, 6, 7, 8),
    rounding_bits: Sequence[int] = (4, 5, 6, 7, 8),
    ranges: Sequence[str] = ("calibrated", "proven"),
    p_errors: Optional[Sequence[float]] = None,
    per_layer: bool = True,
    raise_steps: int = 8,
    seed: int = 0,
    external_data: Optional[Mapping[str, bytes]] = None,
    progress: Progress = None,
) -> Model:
    """Searches the cheapest settings (estimated latency) whose estimated drop below the float
    model's score on unseen data stays within ``max_accuracy_drop`` points (``fhec tune``;
    each candidate also carries its 95 % confidence bound, ``drop_bound``).

    ``metric``: ``"accuracy"`` (``val_y`` = class indices) or ``"r2"`` (float targets).
    Returns the chosen :class:`Model`; its ``tuning`` attribute holds the search (float score,
    the chosen candidate and its margin, the Pareto front). Raises :class:`fhec.SettingsError`
    when no setting stays within the budget (the message gives the best estimate found);
    before that, ``raise_steps`` steps up in precision past the grid are tried (0: none).
    """
    cal = _calib(calib)
    tmp: List[Any] = []
    try:
        src = _source(model, cal, tmp)
        if external_data:
            src["external"] = {k: bytes(v) for k, v in external_data.items()}
        opts = {
            "metric": metric,
            "max_accuracy_drop": float(max_accuracy_drop),
            "n_bits": [int(b) for b in n_bits],
            "rounding_bits": [int(b) for b in rounding_bits],
            "ranges": list(ranges),
            "p_errors": None if p_errors is None else [float(p) for p in p_errors],
            "per_layer": bool(per_layer),
            "raise_steps": int(raise_steps),
            "seed": int(seed),
        }
        xs = _calib(val_x, "val_x")
        y = _array(val_y, "val_y")
        with reporter(progress, "tune", "setting") as cb:
            raw, summary = _fhec.tune(cal, xs, y, json.dumps(opts), progress=cb, **src)
        m = Model(raw)
        m.tuning = json.loads(summary)
        return m
    finally:
        for d in tmp:
            d.cleanup()
