"""Shared fixtures: the shipped models, the `fhec` binary, and a small model compiled once
(iris MLP: 4 inputs, 3 classes) for the encrypted tests."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import fhec

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"

fhec.set_progress(False)


def data(name, part):
    return np.load(MODELS / f"{name}_{part}.npy")


@pytest.fixture(scope="session")
def fhec_bin():
    """The `fhec` command (built by `cargo test --release`; FHEC_BIN overrides)."""
    p = os.environ.get("FHEC_BIN") or str(ROOT / "target" / "release" / "fhec")
    if not Path(p).exists():
        p = shutil.which("fhec")
    if not p:
        pytest.fail("the fhec binary is missing: run `cargo build --release` or set FHEC_BIN")
    return p


@pytest.fixture(scope="session")
def iris_exact():
    """The iris MLP compiled with exact rounding (encrypted results equal clear mode bit for
    bit)."""
    return fhec.compile(MODELS / "iris_mlp.onnx", data("iris_mlp", "calib"), rounding_method="exact")


@pytest.fixture(scope="session")
def iris_keys(iris_exact):
    """One key pair for it: (client, evaluation keys' bytes)."""
    c = iris_exact.client()
    c.keygen()
    return c, c.evaluation_keys()
