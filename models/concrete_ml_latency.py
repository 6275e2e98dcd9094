"""Concrete ML's encrypted latency on a shipped model (the comparisons in README).

    python models/concrete_ml_latency.py MODEL [--method exact|approximate] [--samples N]

Needs concrete-ml (1.9.0 was measured), onnx and torch in a venv outside the repository; CI
never runs it. The model is compiled at n_bits 6 with rounding to 6 bits (`--method`), keys
are generated, and N test samples run with `fhe="execute"`; prints the bootstrap count per
parameter set, the clear accuracy, the key generation time and each sample's time (the first
sample includes Concrete's warm-up).

Most models go through `compile_onnx_model` on the ONNX file converted to opset 14 (the only
opset Concrete ML compiles). Concrete ML cannot import our `digits_cnn` export, so that one
is rebuilt in torch from the export's weights (outputs checked equal) and compiled with
`compile_torch_model`.
"""

import argparse
import os
import sys
import time

import numpy as np
import onnx
from concrete_ml_compare import load_opset14
from onnx import numpy_helper

OUT = os.path.dirname(os.path.abspath(__file__))


def digits_cnn_torch():
    """`digits_cnn` as a torch module carrying the ONNX export's weights."""
    import torch
    from make_models import CNN

    class FlatCNN(CNN):
        # `flatten` instead of the export's `view`, whose Shape → Gather → … sub-graph
        # Concrete ML cannot trace
        def forward(self, x):
            x = self.pool(torch.relu(self.c1(x)))
            x = self.pool(torch.relu(self.c2(x)))
            return self.fc(x.flatten(1))

    m = FlatCNN()
    init = onnx.load(os.path.join(OUT, "digits_cnn.onnx")).graph.initializer
    w = {i.name: torch.tensor(numpy_helper.to_array(i)) for i in init}
    sd = m.state_dict()
    m.load_state_dict({k: w[k].reshape(sd[k].shape) for k in sd})
    x = np.load(os.path.join(OUT, "digits_cnn_test_x.npy"))
    ref = np.load(os.path.join(OUT, "digits_cnn_test_out.npy"))
    with torch.no_grad():
        diff = np.abs(m(torch.tensor(x)).numpy() - ref).max()
    assert diff < 1e-4, f"the torch rebuild differs from the export by {diff}"
    return m


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--method", default="exact", choices=["exact", "approximate"])
    ap.add_argument("--samples", type=int, default=3)
    args = ap.parse_args()
    from concrete.ml.torch.compile import compile_onnx_model, compile_torch_model

    name = args.model
    calib = np.load(os.path.join(OUT, f"{name}_calib.npy"))
    x = np.load(os.path.join(OUT, f"{name}_test_x.npy"))
    y = np.load(os.path.join(OUT, f"{name}_test_y.npy"))
    rounding = {"n_bits": 6, "method": args.method}
    if name == "digits_cnn":
        qm = compile_torch_model(digits_cnn_torch(), calib, n_bits=6, rounding_threshold_bits=rounding)
    else:
        model = load_opset14(os.path.join(OUT, f"{name}.onnx"))
        qm = compile_onnx_model(model, calib, n_bits=6, rounding_threshold_bits=rounding)
    c = qm.fhe_circuit
    print("bootstraps", c.programmable_bootstrap_count, c.statistics.get("programmable_bootstrap_count_per_parameter"))
    print("clear accuracy", float((qm.forward(x, fhe="disable").argmax(1) == y).mean()))
    t = time.time()
    c.keygen()
    print("keygen s", round(time.time() - t, 2), flush=True)
    for i in range(args.samples):
        t = time.time()
        qm.forward(x[i : i + 1], fhe="execute")
        print("sample", i, "s", round(time.time() - t, 2), flush=True)


if __name__ == "__main__":
    sys.exit(main())
