"""Concrete ML's accuracy on the shipped models at given settings (the comparison in README).

    python models/concrete_ml_compare.py --n-bits 6 --rounding-bits 6 [--models a,b] [--fhe disable|simulate]

Needs concrete-ml (1.9.0 was measured) and onnx in a venv outside the repository; CI never
runs it. Each ONNX model is converted to opset 14 (the only one Concrete ML compiles) and
compiled with `compile_onnx_model` on the model's calibration set; accuracy is scored on
the model's test split in the chosen mode (`disable`: the quantized integer program in the
clear, which is what `fhec run --mode clear` is compared with). Prints one JSON line per model.
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import onnx
from onnx import version_converter

OUT = os.path.dirname(os.path.abspath(__file__))


def load_opset14(path):
    """The ONNX model at `path` at opset 14, the only opset Concrete ML compiles."""
    model = onnx.load(path)
    if model.opset_import[0].version != 14:
        try:
            model = version_converter.convert_version(model, 14)
        except RuntimeError:
            # no down-converter for an op (Shape 15 → 14): its semantics agree
            # when the newer attributes are unused, so relabel the opset
            model.opset_import[0].version = 14
    return model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-bits", type=int, default=6)
    ap.add_argument("--rounding-bits", type=int, default=6)
    ap.add_argument("--method", default="exact", choices=["exact", "approximate"])
    ap.add_argument("--models", default=None)
    ap.add_argument("--fhe", default="disable", choices=["disable", "simulate"])
    ap.add_argument("--p-error", type=float, default=None)
    args = ap.parse_args()
    from concrete.ml.torch.compile import compile_onnx_model

    manifest = json.load(open(os.path.join(OUT, "manifest.json")))
    names = args.models.split(",") if args.models else [m["name"] for m in manifest["models"]]
    for name in names:
        entry = next(m for m in manifest["models"] if m["name"] == name)
        calib = np.load(os.path.join(OUT, f"{name}_calib.npy"))
        x = np.load(os.path.join(OUT, f"{name}_test_x.npy"))
        y = np.load(os.path.join(OUT, f"{name}_test_y.npy"))
        row = {"model": name, "n_bits": args.n_bits, "rounding_bits": args.rounding_bits, "mode": args.fhe}
        t0 = time.time()
        try:
            model = load_opset14(os.path.join(OUT, f"{name}.onnx"))
            kw = {}
            if args.p_error is not None:
                kw["p_error"] = args.p_error
            qm = compile_onnx_model(
                model,
                calib,
                n_bits=args.n_bits,
                rounding_threshold_bits={"n_bits": args.rounding_bits, "method": args.method},
                **kw,
            )
            row["compile_s"] = round(time.time() - t0, 1)
            out = qm.forward(x, fhe=args.fhe)
            if "float_r2" in entry:
                row["r2"] = float(1 - ((out - y) ** 2).sum() / ((y - y.mean(0)) ** 2).sum())
            else:
                row["accuracy"] = float((out.argmax(1) == y).mean())
            row["max_bits"] = qm.fhe_circuit.graph.maximum_integer_bit_width()
        except Exception as e:  # noqa: BLE001 - report what Concrete ML refuses
            row["error"] = f"{type(e).__name__}: {(str(e).splitlines() or [repr(e)])[0][:200]}"
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    sys.exit(main())
