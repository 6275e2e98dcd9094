"""fhec.compile on a torch.nn.Module: exported inside with a symbolic batch axis."""

import numpy as np
import pytest

import fhec

torch = pytest.importorskip(
    "torch", reason="torch is not installed (optional: pip install torch onnx onnxscript to test this path)"
)
pytest.importorskip("onnxscript", reason="torch's ONNX exporter needs onnxscript")


def test_a_torch_module_compiles_and_agrees():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    x = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
    m = fhec.compile(net, x, rounding_method="approximate")
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(m.predict(x, fhe="disable"), want, rtol=1e-4, atol=1e-5)
    agree = (m.predict(x, fhe="clear").argmax(1) == want.argmax(1)).mean()
    assert agree >= 0.9, agree
    assert m.input_shapes[0][0] is None  # symbolic batch
    assert net.training  # the module's mode is given back
