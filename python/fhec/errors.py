"""fhec's exceptions: one class per kind of failure, each carrying the one-line message the
``fhec`` command prints (naming the file, node, tensor or setting, and the fix).

Every class derives from :class:`FhecError`, and from the built-in exception a Python user
would catch for that kind of failure (``ValueError`` for bad input and settings, ``OSError``
for files), so ``except ValueError`` keeps working.
"""

__all__ = [
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


class FhecError(Exception):
    """Base class of every error fhec raises."""


class InputError(FhecError, ValueError):
    """Input data (arrays, labels, calibration data) that does not fit the model."""


class ModelError(FhecError, ValueError):
    """A model fhec cannot compile: an unsupported op or shape, an accumulator over budget."""


class SettingsError(FhecError, ValueError):
    """A setting out of range or unknown, or no TFHE parameters for the settings asked."""


class KeysError(FhecError, ValueError):
    """Keys or ciphertexts that do not belong to the model or to each other, or are corrupt."""


class ArtifactError(FhecError, ValueError):
    """A compiled model that cannot be read: corrupt, or written by another fhec version."""


class IoError(FhecError, OSError):
    """A file that cannot be read or written."""


class CancelledError(FhecError):
    """The work was stopped before it finished."""


class InternalError(FhecError, RuntimeError):
    """A bug in fhec; please report it with the message."""
