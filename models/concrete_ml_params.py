"""Concrete ML's own plan for its built-in digits network: bootstraps and keyswitches per
parameter set, key sizes and error probabilities (issue 29's comparison with fhec's plan for
the exported graph, `fhec compile models/exports/cml_builtin.onnx --calib ...`).

    python models/concrete_ml_params.py            # the plan only
    python models/concrete_ml_params.py --time 4   # and Concrete ML's encrypted latency
    python models/concrete_ml_params.py --time 4 --save DIR   # and the network, for fhec

Needs concrete-ml (1.9.0 was measured) and torch in a venv outside the repository; CI never
runs it. Trains the network exactly as models/exports/make_exports.py does for cml_builtin
(same split, seed and settings), compiles it on the same 200 calibration samples, and
prints the compiled circuit's statistics. With `--time N` it also generates the keys (timed)
and runs N test samples with `fhe="execute"`, each timed (the first includes Concrete's
warm-up and is left out of the median), on every core torch and Concrete use by default.
`--save DIR` writes the very network it timed as Concrete ML exports it (DIR/cml_timed.onnx)
with its calibration and test inputs, so that fhec can be timed on the same network in the
same hour (`fhec compile DIR/cml_timed.onnx --calib DIR/cml_timed_calib.npy`, then
`fhec bench ... --input DIR/cml_timed_test_x.npy`).
"""

import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "exports"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from concrete.ml.sklearn import NeuralNetClassifier  # noqa: E402

import make_exports as me  # noqa: E402


def main():
    xtr, xte, ytr, _ = me.digits()
    torch.manual_seed(me.SEED)
    clf = NeuralNetClassifier(module__n_layers=3, max_epochs=60, verbose=0)
    clf.fit(xtr, ytr.astype(np.int64))
    clf.compile(xtr[: me.N_CALIB])
    # the network the shipped export came from? (its clear-mode outputs were saved then)
    shipped = os.path.join(HERE, "exports", "cml_builtin_cml_clear.npy")
    if os.path.exists(shipped):
        same = np.allclose(clf.predict_proba(xte, fhe="disable"), np.load(shipped), atol=1e-5)
        print(f"same network as models/exports/cml_builtin.onnx: {same}")
    if "--save" in sys.argv:
        import onnx

        out = sys.argv[sys.argv.index("--save") + 1]
        os.makedirs(out, exist_ok=True)
        onnx.save(clf.onnx_model, os.path.join(out, "cml_timed.onnx"))
        np.save(os.path.join(out, "cml_timed_calib.npy"), xtr[: me.N_CALIB].astype(np.float32))
        np.save(os.path.join(out, "cml_timed_test_x.npy"), xte.astype(np.float32))
    st = clf.fhe_circuit.statistics
    for k in (
        "programmable_bootstrap_count",
        "programmable_bootstrap_count_per_parameter",
        "key_switch_count_per_parameter",
        "size_of_bootstrap_keys",
        "size_of_keyswitch_keys",
        "p_error",
        "global_p_error",
    ):
        print(f"{k}: {st[k]}")
    if "--time" in sys.argv:
        n = int(sys.argv[sys.argv.index("--time") + 1])
        t = time.perf_counter()
        clf.fhe_circuit.keygen()
        print(f"keygen_s: {time.perf_counter() - t:.1f}")
        times = []
        for i in range(n):
            t = time.perf_counter()
            y = clf.predict(xte[i : i + 1], fhe="execute")
            times.append(time.perf_counter() - t)
            same = int(y[0]) == int(clf.predict(xte[i : i + 1], fhe="disable")[0])
            print(f"sample {i}: {times[-1]:.2f} s, same class as clear: {same}", flush=True)
        rest = sorted(times[1:] or times)
        print(f"latency_s_median (after the first): {rest[len(rest) // 2]:.2f}")


if __name__ == "__main__":
    main()
