"""fhec: compile ONNX neural networks into programs that run on encrypted data (TFHE).

Quick start::

    import fhec
    model = fhec.compile("model.onnx", calib)          # or a torch.nn.Module
    model.predict(x, fhe="simulate")                   # "disable", "clear", "execute"
    model.save("model.fhe")

    client = model.client(); client.keygen()           # the client keeps the secret key
    server = fhec.Server(model.to_bytes())             # the server sees bytes only
    y = client.decrypt(server.run(client.encrypt(x), client.evaluation_keys()))

Everything fhec does is the Rust library's (the ``fhec`` command's); the bytes here are the
files the command writes, so a Python client talks to a ``fhec`` server and back. Errors are
:mod:`fhec.errors` classes carrying the command's one-line message. Long work releases the GIL
and stops on Ctrl-C; progress bars use tqdm when installed (:func:`set_progress`).
"""

from . import errors
from ._api import Client, Model, OnnxModel, Server, compile, export_torch, load, tune
from ._fhec import version as _version
from ._progress import set_progress
from .errors import (
    ArtifactError,
    CancelledError,
    FhecError,
    InputError,
    InternalError,
    IoError,
    KeysError,
    ModelError,
    SettingsError,
)
from .sklearn import NeuralNetClassifier, NeuralNetRegressor

__version__ = _version()

__all__ = [
    "compile",
    "load",
    "tune",
    "export_torch",
    "set_progress",
    "Model",
    "Client",
    "Server",
    "OnnxModel",
    "NeuralNetClassifier",
    "NeuralNetRegressor",
    "errors",
    "FhecError",
    "InputError",
    "ModelError",
    "SettingsError",
    "KeysError",
    "ArtifactError",
    "IoError",
    "CancelledError",
    "InternalError",
]
