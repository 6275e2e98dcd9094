"""Every failure is an exception of its kind carrying the CLI's one-line message."""

import numpy as np
import pytest

import fhec
from conftest import MODELS, data


def one_line(e):
    msg = str(e.value)
    assert msg and "\n" not in msg, msg
    return msg


def test_the_classes_are_python_exceptions_of_their_kind():
    assert issubclass(fhec.InputError, ValueError)
    assert issubclass(fhec.SettingsError, ValueError)
    assert issubclass(fhec.IoError, OSError)
    assert issubclass(fhec.InternalError, RuntimeError)
    for c in (fhec.InputError, fhec.ModelError, fhec.SettingsError, fhec.KeysError, fhec.ArtifactError,
              fhec.IoError, fhec.CancelledError, fhec.InternalError):
        assert issubclass(c, fhec.FhecError)


def test_unknown_and_out_of_range_settings():
    calib = data("iris_mlp", "calib")
    with pytest.raises(fhec.SettingsError) as e:
        fhec.compile(MODELS / "iris_mlp.onnx", calib, n_bitz=4)
    assert "n_bitz" in one_line(e)
    with pytest.raises(fhec.SettingsError) as e:
        fhec.compile(MODELS / "iris_mlp.onnx", calib, n_bits=40)
    assert one_line(e).startswith("n_bits 40")
    with pytest.raises(fhec.SettingsError) as e:
        fhec.compile(MODELS / "iris_mlp.onnx", calib, rounding_method="fast")
    one_line(e)


def test_calibration_data_that_does_not_fit():
    with pytest.raises(fhec.InputError) as e:
        fhec.compile(MODELS / "iris_mlp.onnx", np.zeros((8, 5), np.float32))
    assert "input" in one_line(e)
    with pytest.raises(fhec.InputError):
        fhec.compile(MODELS / "iris_mlp.onnx", np.full((8, 4), np.nan, np.float32))


def test_files_and_models():
    with pytest.raises(fhec.IoError) as e:
        fhec.compile("/nonexistent/model.onnx", data("iris_mlp", "calib"))
    assert "/nonexistent/model.onnx" in one_line(e)
    with pytest.raises(fhec.ModelError) as e:
        fhec.compile(b"\x08\x07garbage", data("iris_mlp", "calib"))
    one_line(e)
    with pytest.raises(fhec.ArtifactError) as e:
        fhec.Model.from_bytes(b"not a model")
    one_line(e)
    with pytest.raises(TypeError):
        fhec.compile(42, None)


def test_keys_and_ciphertexts_of_another_model(iris_exact, iris_keys):
    client, keys = iris_keys
    other = fhec.compile(MODELS / "iris_mlp.onnx", data("iris_mlp", "calib"), n_bits=5)
    with pytest.raises(fhec.KeysError) as e:
        fhec.Server(other).run(client.encrypt(data("iris_mlp", "test_x")[:1]), keys)
    assert "another model" in one_line(e)
    with pytest.raises(fhec.KeysError):
        fhec.Server(iris_exact).run(b"garbage", keys)
    with pytest.raises(fhec.KeysError):
        fhec.Server(iris_exact).run(client.encrypt(data("iris_mlp", "test_x")[:1]), keys[: len(keys) // 2])
    with pytest.raises(fhec.KeysError):
        client.decrypt(client.encrypt(data("iris_mlp", "test_x")[:1]))  # inputs, not results
    with pytest.raises(fhec.KeysError):
        iris_exact.client().encrypt(data("iris_mlp", "test_x"))  # no keys yet


def test_predict_with_a_wrong_input():
    m = fhec.compile(MODELS / "iris_mlp.onnx", data("iris_mlp", "calib"))
    with pytest.raises(fhec.InputError) as e:
        m.predict(np.zeros((2, 7), np.float32), fhe="clear")
    one_line(e)
    with pytest.raises(fhec.SettingsError):
        m.predict(data("iris_mlp", "test_x"), fhe="fast")
