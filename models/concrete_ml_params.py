"""Concrete ML's own plan for its built-in digits network: bootstraps and keyswitches per
parameter set, key sizes and error probabilities (issue 29's comparison with fhec's plan for
the exported graph, `fhec compile models/exports/cml_builtin.onnx --calib ...`).

    python models/concrete_ml_params.py

Needs concrete-ml (1.9.0 was measured) and torch in a venv outside the repository; CI never
runs it. Trains the network exactly as models/exports/make_exports.py does for cml_builtin
(same split, seed and settings), compiles it on the same 200 calibration samples, and
prints the compiled circuit's statistics. Nothing is timed.
"""

import os
import sys

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


if __name__ == "__main__":
    main()
