"""fhec.compile from every kind of model source, its settings, the model's report and
parameters, and predict without keys."""

import numpy as np
import pytest

import fhec
from conftest import MODELS, data


def test_compile_from_path_runs_float_clear_and_simulate():
    m = fhec.compile(str(MODELS / "iris_mlp.onnx"), data("iris_mlp", "calib"))
    x = data("iris_mlp", "test_x")
    # float mode is the ONNX model as exported: it equals the framework's outputs
    np.testing.assert_allclose(m.predict(x, fhe="disable"), data("iris_mlp", "test_out"), rtol=1e-4, atol=1e-4)
    y = data("iris_mlp", "test_y")
    clear = np.argmax(m.predict(x, fhe="clear"), axis=1)
    sim = np.argmax(m.predict(x, fhe="simulate", seed=1), axis=1)
    assert (clear == y).mean() >= 0.9
    assert (sim == y).mean() >= 0.9
    assert isinstance(m.bootstraps, int) and m.bootstraps > 0
    assert m.bootstraps == m.parameters["bootstraps"]


def test_report_and_parameters_are_the_clis():
    m = fhec.compile(MODELS / "iris_mlp.onnx", data("iris_mlp", "calib"), n_bits=5, rounding_method="approximate")
    r = m.report
    assert isinstance(r, dict) and r["layers"], r.keys()
    p = m.parameters
    assert p["rounding"] == "approximate"
    assert p["security_bits"] >= 128
    assert 0 < p["p_error"] < 1e-3
    assert p["key_bytes"]["main_bsk"] > 0
    assert p["model_id"] == m.fingerprint
    assert "bootstraps per sample" in m.summary()
    assert m.input_names and m.output_names
    assert m.input_shapes[0][0] is None  # the batch axis
    assert "fhec.Model" in repr(m)


def test_settings_take_the_clis_names():
    calib = data("iris_mlp", "calib")
    a = fhec.compile(MODELS / "iris_mlp.onnx", calib, n_bits=4, rounding_bits=5, ranges="proven", p_error=1e-5)
    b = fhec.compile(MODELS / "iris_mlp.onnx", calib, n_bits=7, rounding_bits=7)
    assert a.fingerprint != b.fingerprint
    assert a.parameters["p_error"] <= 1e-5 * 1.0001
    # per-layer precision, as the CLI's spec or as a dict
    names = [l["layer"] for l in b.report["layers"] if l["precision"]]
    c = fhec.compile(MODELS / "iris_mlp.onnx", calib, layers={names[0]: "w4,i4"})
    d = fhec.compile(MODELS / "iris_mlp.onnx", calib, layers={names[0]: {"weight_bits": 4, "input_bits": 4}})
    assert c.fingerprint == d.fingerprint


def test_compile_from_bytes_and_external_data():
    onnx = (MODELS / "exports" / "torch_dynamo_bc.onnx").read_bytes()
    ext = (MODELS / "exports" / "torch_dynamo_bc.onnx.data").read_bytes()
    calib = np.load(MODELS / "exports" / "torch_dynamo_bc_calib.npy")
    from_path = fhec.compile(MODELS / "exports" / "torch_dynamo_bc.onnx", calib)
    from_bytes = fhec.compile(onnx, calib, external_data={"torch_dynamo_bc.onnx.data": ext})
    assert from_path.fingerprint == from_bytes.fingerprint
    # bytes without their external data: the error names the tensor and the fix
    with pytest.raises(fhec.ModelError, match="external"):
        fhec.compile(onnx, calib)


def test_compile_from_an_onnx_modelproto():
    onnx = pytest.importorskip("onnx", reason="the onnx package is not installed")
    proto = onnx.load(str(MODELS / "iris_mlp.onnx"))
    calib = data("iris_mlp", "calib")
    assert fhec.compile(proto, calib).fingerprint == fhec.compile(MODELS / "iris_mlp.onnx", calib).fingerprint


def test_several_samples_and_one_sample():
    m = fhec.compile(MODELS / "iris_mlp.onnx", data("iris_mlp", "calib"))
    x = data("iris_mlp", "test_x")
    assert m.predict(x[:1], fhe="clear").shape == (1, 3)
    assert m.predict(x.astype(np.float64), fhe="clear").shape == (len(x), 3)  # converted
    np.testing.assert_array_equal(m.predict(x[:5], fhe="clear"), m.predict(x, fhe="clear")[:5])


def test_with_settings_searches_parameters_again():
    m = fhec.compile(MODELS / "iris_mlp.onnx", data("iris_mlp", "calib"), rounding_method="exact")
    a = m.with_settings(rounding_method="approximate")
    assert a.parameters["rounding"] == "approximate"
    assert a.bootstraps <= m.bootstraps


def test_tune_finds_a_setting_within_the_budget():
    x = data("iris_mlp", "test_x")
    y = data("iris_mlp", "test_y").astype(np.float32)
    m = fhec.tune(
        MODELS / "iris_mlp.onnx",
        data("iris_mlp", "calib"),
        x,
        y,
        max_accuracy_drop=25.0,
        n_bits=(4, 6),
        rounding_bits=(5,),
        ranges=("calibrated",),
        per_layer=False,
    )
    t = m.tuning
    c = t["chosen"]
    assert c["drop_estimate"] <= 25.0 and t["margin"] >= 0
    assert 0 < c["drop_bound"] <= 100
    assert t["pareto"] and t["candidates"] >= 2
    assert m.bootstraps == t["chosen"]["pbs_count"]
    with pytest.raises(fhec.SettingsError, match="max_accuracy_drop"):
        fhec.tune(MODELS / "iris_mlp.onnx", data("iris_mlp", "calib"), x, y, max_accuracy_drop=-1)


def test_tune_raises_precision_past_its_grid_before_refusing():
    x = data("iris_mlp", "test_x")
    y = data("iris_mlp", "test_y").astype(np.float32)
    kw = dict(max_accuracy_drop=25.0, n_bits=(2,), rounding_bits=(2,), per_layer=False)
    m = fhec.tune(MODELS / "iris_mlp.onnx", data("iris_mlp", "calib"), x, y, **kw)
    c = m.tuning["chosen"]
    # nothing on the 2-bit grid is within 25 points; a raised setting is
    assert c["drop_estimate"] <= 25.0
    assert c["n_bits_flags"] != "--n-bits 2" or c["layers"], c
    kw.update(max_accuracy_drop=0.0, raise_steps=1)
    with pytest.raises(fhec.SettingsError, match="clear mode alone reached"):
        fhec.tune(MODELS / "iris_mlp.onnx", data("iris_mlp", "calib"), x, y, **kw)
    kw.update(raise_steps=0)
    with pytest.raises(fhec.SettingsError) as e:
        fhec.tune(MODELS / "iris_mlp.onnx", data("iris_mlp", "calib"), x, y, **kw)
    assert "raising precision" not in str(e.value)


def test_progress_callback_sees_the_work():
    seen = []
    x = data("iris_mlp", "test_x")
    y = data("iris_mlp", "test_y").astype(np.float32)
    fhec.tune(
        MODELS / "iris_mlp.onnx",
        data("iris_mlp", "calib"),
        x,
        y,
        max_accuracy_drop=5.0,
        n_bits=(5,),
        rounding_bits=(5,),
        ranges=("calibrated",),
        per_layer=False,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert seen and seen[-1][0] == seen[-1][1] > 0
    assert all(a[0] <= b[0] for a, b in zip(seen, seen[1:]))
