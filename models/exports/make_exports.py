"""Models exported the way users export them today, as written, for docs/exports.md's table
"exports that work" and the tests that compile every shipped model.

    /path/to/torch-venv/bin/python models/exports/make_exports.py          # the torch/Brevitas rows
    /path/to/concrete-venv/bin/python models/exports/make_exports.py --concrete   # Concrete ML's row

Each export is left exactly as the tool wrote it (no re-saving, no dynamic axis added):

| name | how it was exported |
|---|---|
| torch_dynamo_cnn | torch 2.x default `torch.onnx.export(m, (x,), path)`: the dynamo exporter, opset 18+, weights in `torch_dynamo_cnn.onnx.data`, batch fixed at 1 |
| torch_dynamo_bc | the same exporter with `dynamic_shapes` (a symbolic batch axis), breast-cancer MLP |
| torch_legacy_silu | torch's TorchScript exporter (`dynamo=False`) with its defaults: batch fixed at 1 |
| torch_dynamo_rms | the dynamo exporter at opset 23 with a symbolic batch: `RMSNormalization`, `ReduceMean` with axes as input, `Gelu`, and the batch's `Shape`/`Slice`/`Concat` arithmetic around a `Reshape` |
| brevitas_qonnx, brevitas_qcdq | Brevitas `export_qonnx` / `export_onnx_qcdq` of a 3-bit QAT MLP, batch fixed at 1 |
| cml_builtin | Concrete ML's built-in `NeuralNetClassifier` (3-bit QAT) as it exports it (`clf.onnx_model`) |

For each NAME: NAME.onnx (and its data file), NAME_calib.npy, NAME_test_x.npy,
NAME_test_y.npy (int64 labels) and NAME_test_out.npy (the framework's own outputs on the test
inputs: torch, Brevitas, or Concrete ML's float module); Concrete ML's row also has
cml_builtin_cml_clear.npy (Concrete ML's clear-mode outputs, `fhe="disable"`). manifest.json
records versions, seeds and the framework's accuracies. CI never runs this script.
"""

import argparse
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
SEED = 0
N_CALIB = 200


def digits():
    """make_models' digits split: pixels / 16, 80/20 stratified, seed 0 (360 test samples)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    return train_test_split(x, d.target, test_size=0.2, random_state=SEED, stratify=d.target)


def save_data(name, x_train, x_test, y_test, out):
    rng = np.random.default_rng(SEED)
    calib = x_train[rng.choice(len(x_train), size=min(N_CALIB, len(x_train)), replace=False)]
    np.save(os.path.join(HERE, f"{name}_calib.npy"), calib.astype(np.float32))
    np.save(os.path.join(HERE, f"{name}_test_x.npy"), x_test.astype(np.float32))
    np.save(os.path.join(HERE, f"{name}_test_y.npy"), y_test.astype(np.int64))
    np.save(os.path.join(HERE, f"{name}_test_out.npy"), out.astype(np.float32))
    acc = float((out.argmax(1) == y_test).mean())
    print(f"{name}: framework test accuracy {acc:.4f} on {len(y_test)} samples")
    return acc


def torch_rows(only=None):
    """The torch and Brevitas rows (all, or the names in `only`)."""
    import torch
    import torch.nn as nn
    from make_models import standardized_split, train
    from sklearn.datasets import load_breast_cancer

    xtr, xte, ytr, yte = digits()
    builders = {}

    def row(fn):
        builders[fn.__name__] = fn
        return fn

    @row
    def torch_dynamo_cnn():
        class ConvLnGelu(nn.Module):
            """Conv → BatchNorm → ReLU → MaxPool → LayerNorm → GELU → Linear on 8×8 digits."""

            def __init__(self):
                super().__init__()
                self.c = nn.Conv2d(1, 8, 3, padding=1)
                self.bn = nn.BatchNorm2d(8)
                self.p = nn.MaxPool2d(2)
                self.ln = nn.LayerNorm(128)
                self.fc = nn.Linear(128, 10)

            def forward(self, x):
                x = self.p(torch.relu(self.bn(self.c(x)))).flatten(1)
                return self.fc(nn.functional.gelu(self.ln(x)))

        torch.manual_seed(SEED)
        xi, xti = xtr.reshape(-1, 1, 8, 8), xte.reshape(-1, 1, 8, 8)
        m = train(ConvLnGelu(), xi, ytr, epochs=30, lr=3e-3)
        path = os.path.join(HERE, "torch_dynamo_cnn.onnx")
        torch.onnx.export(m, (torch.tensor(xti[:1]),), path)  # today's default, as users call it
        with torch.no_grad():
            out = m(torch.tensor(xti)).numpy()
        return dict(exporter="torch.onnx.export (dynamo, default)", accuracy=save_data("torch_dynamo_cnn", xi, xti, yte, out))

    @row
    def torch_dynamo_bc():
        bxtr, bxte, bytr, byte = standardized_split(load_breast_cancer(), test_size=0.25)

        class BcMlp(nn.Module):
            def __init__(self):
                super().__init__()
                self.net = nn.Sequential(nn.Linear(30, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2))

            def forward(self, x):
                return self.net(x)

        torch.manual_seed(SEED)
        m = train(BcMlp(), bxtr, bytr, epochs=60, lr=3e-3)
        path = os.path.join(HERE, "torch_dynamo_bc.onnx")
        batch = torch.export.Dim("batch")
        torch.onnx.export(m, (torch.tensor(bxte[:2]),), path, dynamic_shapes={"x": {0: batch}})
        with torch.no_grad():
            out = m(torch.tensor(bxte)).numpy()
        return dict(exporter="torch.onnx.export (dynamo, dynamic_shapes)", accuracy=save_data("torch_dynamo_bc", bxtr, bxte, byte, out))

    @row
    def torch_legacy_silu():
        class SiluTanh(nn.Module):
            def __init__(self):
                super().__init__()
                self.a = nn.Linear(64, 32)
                self.b = nn.Linear(32, 16)
                self.c = nn.Linear(16, 10)

            def forward(self, x):
                return self.c(torch.tanh(self.b(nn.functional.silu(self.a(x)))))

        torch.manual_seed(SEED)
        m = train(SiluTanh(), xtr, ytr, epochs=60, lr=3e-3)
        path = os.path.join(HERE, "torch_legacy_silu.onnx")
        torch.onnx.export(m, (torch.tensor(xte[:1]),), path, dynamo=False)
        with torch.no_grad():
            out = m(torch.tensor(xte)).numpy()
        return dict(exporter="torch.onnx.export(dynamo=False)", accuracy=save_data("torch_legacy_silu", xtr, xte, yte, out))

    @row
    def torch_dynamo_rms():
        class TokensRms(nn.Module):
            """A digit as 8 tokens of 8 pixels: Linear 8 → 16, RMSNorm, minus the mean over
            tokens, GELU, Linear 128 → 10; `view(x.shape[0], …)` makes the exporter compute
            the batch."""

            def __init__(self):
                super().__init__()
                self.a = nn.Linear(8, 16)
                self.rms = nn.RMSNorm(16)
                self.b = nn.Linear(128, 10)

            def forward(self, x):
                t = x.view(x.shape[0], 8, 8)
                h = self.rms(self.a(t))
                h = h - h.mean(dim=1, keepdim=True)
                return self.b(nn.functional.gelu(h).reshape(x.shape[0], -1))

        torch.manual_seed(SEED)
        m = train(TokensRms(), xtr, ytr, epochs=60, lr=3e-3)
        path = os.path.join(HERE, "torch_dynamo_rms.onnx")
        batch = torch.export.Dim("batch")
        torch.onnx.export(m, (torch.tensor(xte[:2]),), path, opset_version=23, dynamic_shapes={"x": {0: batch}})
        with torch.no_grad():
            out = m(torch.tensor(xte)).numpy()
        return dict(exporter="torch.onnx.export (dynamo, opset 23, dynamic_shapes)", accuracy=save_data("torch_dynamo_rms", xtr, xte, yte, out))

    def brevitas(name, label):
        import brevitas
        import brevitas.nn as qnn
        from brevitas.export import export_onnx_qcdq, export_qonnx

        class QMLP(nn.Module):
            def __init__(self, bits=3):
                super().__init__()
                self.inp = qnn.QuantIdentity(bit_width=bits, return_quant_tensor=True)
                self.l1 = qnn.QuantLinear(64, 64, bias=True, weight_bit_width=bits)
                self.r1 = qnn.QuantReLU(bit_width=bits, return_quant_tensor=True)
                self.l2 = qnn.QuantLinear(64, 32, bias=True, weight_bit_width=bits)
                self.r2 = qnn.QuantReLU(bit_width=bits, return_quant_tensor=True)
                self.l3 = qnn.QuantLinear(32, 10, bias=True, weight_bit_width=bits)

            def forward(self, x):
                return self.l3(self.r2(self.l2(self.r1(self.l1(self.inp(x))))))

        torch.manual_seed(SEED)
        m = train(QMLP(), xtr, ytr, epochs=80, lr=1e-2, wd=0)
        with torch.no_grad():
            out = m(torch.tensor(xte))
        out = (out.value if hasattr(out, "value") else out).numpy()
        fn = export_qonnx if name == "brevitas_qonnx" else export_onnx_qcdq
        fn(m, torch.tensor(xte[:1]), export_path=os.path.join(HERE, f"{name}.onnx"))
        return dict(exporter=label, brevitas=brevitas.__version__, accuracy=save_data(name, xtr, xte, yte, out))

    builders["brevitas_qonnx"] = lambda: brevitas("brevitas_qonnx", "brevitas export_qonnx")
    builders["brevitas_qcdq"] = lambda: brevitas("brevitas_qcdq", "brevitas export_onnx_qcdq")
    rows = []
    for name, build in builders.items():
        if only and name not in only:
            continue
        r = build()
        r.update(name=name, torch=torch.__version__, seed=SEED)
        rows.append(r)
    return rows


def concrete_row():
    """Concrete ML's built-in NeuralNetClassifier (its defaults: 3-bit weights and
    activations, accumulators pruned to 8 bits) on the digits split, as it exports it."""
    import concrete.ml
    import torch
    from concrete.ml.sklearn import NeuralNetClassifier

    xtr, xte, ytr, yte = digits()
    torch.manual_seed(SEED)
    clf = NeuralNetClassifier(module__n_layers=3, max_epochs=60, verbose=0)
    clf.fit(xtr, ytr.astype(np.int64))
    clf.compile(xtr[:N_CALIB])
    import onnx

    onnx.save(clf.onnx_model, os.path.join(HERE, "cml_builtin.onnx"))
    with torch.no_grad():
        out = clf.base_module(torch.tensor(xte)).numpy()
    acc = save_data("cml_builtin", xtr, xte, yte, out)
    clear = clf.predict_proba(xte, fhe="disable")
    np.save(os.path.join(HERE, "cml_builtin_cml_clear.npy"), clear.astype(np.float32))
    cacc = float((clear.argmax(1) == yte).mean())
    print(f"cml_builtin: Concrete ML clear accuracy {cacc:.4f}")
    return [dict(name="cml_builtin", exporter="Concrete ML NeuralNetClassifier.onnx_model", concrete_ml=concrete.ml.__version__, torch=torch.__version__, seed=SEED, accuracy=acc, framework_clear_accuracy=cacc)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--concrete", action="store_true", help="only Concrete ML's row (run in its venv)")
    ap.add_argument("--only", help="comma-separated names of the torch/Brevitas rows to remake")
    a = ap.parse_args()
    path = os.path.join(HERE, "manifest.json")
    manifest = json.load(open(path)) if os.path.exists(path) else {}
    only = a.only.split(",") if a.only else None
    for r in concrete_row() if a.concrete else torch_rows(only):
        manifest[r["name"]] = r
    with open(path, "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
