"""Regenerates the ONNX models and data in models/ (needs torch, scikit-learn, onnx, numpy;
onnxruntime for the QDQ and QOperator models; brevitas, qonnx and onnxoptimizer for the QAT
models).

    python models/make_models.py                    # every model, manifest.json
    python models/make_models.py --only digits_deep # just these (comma-separated)

Every model is trained on a dataset that ships inside scikit-learn, with a fixed seed, and
exported with torch's TorchScript ONNX exporter (dynamo=False) at the opset recorded in
manifest.json, with a dynamic batch axis. For each model NAME the files are:

    NAME.onnx            the model
    NAME_calib.npy       float32 calibration inputs (from the training split)
    NAME_test_x.npy      float32 test inputs
    NAME_test_y.npy      int64 test labels (float32 targets for regression models)
    NAME_test_out.npy    float32 outputs of the torch model on the test inputs

CI never runs this script; the files are committed.
"""

import argparse
import json
import os

import numpy as np
import torch
import torch.nn as nn
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, load_iris
from sklearn.model_selection import train_test_split

OUT = os.path.dirname(os.path.abspath(__file__))
SEED = 0
N_CALIB = 200


class MLP(nn.Module):
    def __init__(self, sizes):
        super().__init__()
        layers = []
        for i in range(len(sizes) - 1):
            layers.append(nn.Linear(sizes[i], sizes[i + 1]))
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class CNN(nn.Module):
    """Conv → ReLU → AvgPool, twice, then Linear. Flattens with `view`, which the exporter
    writes as a Shape → Gather → Unsqueeze → Concat → Reshape sub-graph."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 16, 3, padding=1)
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Linear(16 * 2 * 2, 10)

    def forward(self, x):
        x = self.pool(torch.relu(self.c1(x)))
        x = self.pool(torch.relu(self.c2(x)))
        x = x.view(x.size(0), -1)
        return self.fc(x)


class PolyNet(nn.Module):
    """PolyKervNet style: Linear → (x + c)^2 → Linear, no ReLU."""

    def __init__(self, d_in, d_hidden, d_out):
        super().__init__()
        self.fc1 = nn.Linear(d_in, d_hidden)
        self.c = nn.Parameter(torch.tensor(1.0))
        self.fc2 = nn.Linear(d_hidden, d_out)

    def forward(self, x):
        h = self.fc1(x)
        return self.fc2(torch.pow(h + self.c, 2))


class ResNetMax(nn.Module):
    """A residual block and a max-pool: encrypted + encrypted Add and encrypted maxima."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 6, 3, padding=1)
        self.c2 = nn.Conv2d(6, 6, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(6 * 4 * 4, 10)

    def forward(self, x):
        h = torch.relu(self.c1(x))
        h = torch.relu(h + self.c2(h))
        return self.fc(torch.flatten(self.pool(h), 1))


class GatedMLP(nn.Module):
    """A multiplicative gate: encrypted × encrypted Mul."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(64, 16)
        self.b = nn.Linear(64, 16)
        self.out = nn.Linear(16, 10)

    def forward(self, x):
        return self.out(torch.relu(self.a(x)) * torch.sigmoid(self.b(x)))


class DeepMLP(nn.Module):
    """Saturating activations, as users write them: Sigmoid, Dropout, Tanh, Hardtanh."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(64, 32),
            nn.Sigmoid(),
            nn.Dropout(0.1),
            nn.Linear(32, 32),
            nn.Tanh(),
            nn.Linear(32, 16),
            nn.Hardtanh(),
            nn.Linear(16, 10),
        )

    def forward(self, x):
        return self.net(x)


class Conv1dNet(nn.Module):
    """A digit as a 1×64 sequence: Conv1d + BatchNorm1d + ReLU + MaxPool1d + Linear."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(1, 6, 5)
        self.bn = nn.BatchNorm1d(6)
        self.pool = nn.MaxPool1d(4)
        self.fc = nn.Linear(6 * 15, 10)

    def forward(self, x):
        h = self.pool(torch.relu(self.bn(self.conv(x))))
        return self.fc(torch.flatten(h, 1))


class LnGeluMLP(nn.Module):
    """64 → 32 → LayerNorm → GELU → 32 → LayerNorm → GELU → 10 (LayerNormalization, opset 17)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(64, 32), nn.LayerNorm(32), nn.GELU(),
            nn.Linear(32, 32), nn.LayerNorm(32), nn.GELU(),
            nn.Linear(32, 10),
        )

    def forward(self, x):
        return self.net(x)


class TinyAutoencoder(nn.Module):
    """A digit (1×8×8) through an encoder–decoder: Conv 1→8 stride 2 → ReLU →
    ConvTranspose 8→4 stride 2 → ReLU → Conv 4→1, flattened: the 64 pixels back."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Conv2d(1, 8, 3, stride=2, padding=1)
        self.dec = nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.out = nn.Conv2d(4, 1, 3, padding=1)

    def forward(self, x):
        y = self.out(torch.relu(self.dec(torch.relu(self.enc(x)))))
        return y.flatten(1)


class TinyTransformer(nn.Module):
    """A digit as 8 tokens of 8 pixels: token embedding 8 → 8 plus a learned position
    embedding, one pre-norm encoder block
    (LayerNorm, one-head self-attention with softmax, residual; LayerNorm, MLP 8 → 16 → 8 with
    GELU, residual), mean over tokens, linear → 10."""

    def __init__(self, d=8):
        super().__init__()
        self.d = d
        self.embed = nn.Linear(8, d)
        self.pos = nn.Parameter(torch.zeros(8, d))
        self.ln1 = nn.LayerNorm(d)
        self.q = nn.Linear(d, d)
        self.k = nn.Linear(d, d)
        self.v = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        self.head = nn.Linear(d, 10)

    def forward(self, x):
        t = self.embed(x.reshape(-1, 8, 8)) + self.pos
        h = self.ln1(t)
        att = torch.softmax(self.q(h) @ self.k(h).transpose(1, 2) / self.d**0.5, dim=-1)
        t = t + att @ self.v(h)
        t = t + self.mlp(self.ln2(t))
        return self.head(t.mean(dim=1))


class OneHeadAttention(nn.Module):
    """A digit as 8 tokens of 8 pixels: embedding 8 → 32 plus a learned position embedding,
    one head of softmax self-attention with a residual, mean over tokens, linear → 10. No
    normalization: the attention scores' range is what quantization must get right (the
    model of issue 25's "one-head attention net")."""

    def __init__(self, d=32):
        super().__init__()
        self.d = d
        self.embed = nn.Linear(8, d)
        self.pos = nn.Parameter(torch.zeros(8, d))
        self.q = nn.Linear(d, d)
        self.k = nn.Linear(d, d)
        self.v = nn.Linear(d, d)
        self.head = nn.Linear(d, 10)

    def forward(self, x):
        t = self.embed(x.reshape(-1, 8, 8)) + self.pos
        att = torch.softmax(self.q(t) @ self.k(t).transpose(1, 2) / self.d**0.5, dim=-1)
        t = t + att @ self.v(t)
        return self.head(t.mean(dim=1))


def train(model, x, y, epochs, lr=1e-2, wd=1e-4, regression=False):
    torch.manual_seed(SEED)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=wd)
    xt, yt = torch.tensor(x), torch.tensor(y)
    loss_fn = nn.MSELoss() if regression else nn.CrossEntropyLoss()
    for _ in range(epochs):
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), 64):
            idx = perm[i : i + 64]
            opt.zero_grad()
            loss = loss_fn(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
    model.eval()
    return model


def standardized_split(dataset, test_size):
    """Stratified train/test split, features standardized with the training statistics."""
    xtr, xte, ytr, yte = train_test_split(
        dataset.data.astype(np.float32),
        dataset.target,
        test_size=test_size,
        random_state=SEED,
        stratify=dataset.target,
    )
    mean, std = xtr.mean(0), xtr.std(0) + 1e-6
    xtr, xte = ((xtr - mean) / std).astype(np.float32), ((xte - mean) / std).astype(np.float32)
    return xtr, xte, ytr, yte


def export(name, model, x_train, x_test, y_test, opset):
    path = os.path.join(OUT, f"{name}.onnx")
    dummy = torch.tensor(x_test[:1])
    torch.onnx.export(
        model,
        (dummy,),
        path,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=opset,
        dynamo=False,
    )
    with torch.no_grad():
        out = model(torch.tensor(x_test)).numpy().astype(np.float32)
    rng = np.random.default_rng(SEED)
    calib = x_train[rng.choice(len(x_train), size=min(N_CALIB, len(x_train)), replace=False)]
    np.save(os.path.join(OUT, f"{name}_calib.npy"), calib.astype(np.float32))
    np.save(os.path.join(OUT, f"{name}_test_x.npy"), x_test.astype(np.float32))
    np.save(os.path.join(OUT, f"{name}_test_out.npy"), out)
    entry = {"name": name, "opset": opset, "seed": SEED, "torch": torch.__version__, "n_test": int(len(y_test))}
    if y_test.dtype.kind == "f":
        np.save(os.path.join(OUT, f"{name}_test_y.npy"), y_test.astype(np.float32))
        # R² over all output values (fhec's Metric::R2): one mean for every value
        r2 = float(1 - ((out - y_test) ** 2).sum() / ((y_test - y_test.mean()) ** 2).sum())
        print(f"{name}: opset {opset}, float test R² {r2:.4f} on {len(y_test)} samples")
        entry["float_r2"] = r2
    else:
        np.save(os.path.join(OUT, f"{name}_test_y.npy"), y_test.astype(np.int64))
        acc = float((out.argmax(1) == y_test).mean())
        print(f"{name}: opset {opset}, float test accuracy {acc:.4f} on {len(y_test)} samples")
        entry["float_accuracy"] = acc
    return entry


def digits_split():
    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    return train_test_split(x, d.target, test_size=0.2, random_state=SEED, stratify=d.target)


def as_images(x):
    return x.reshape(-1, 1, 8, 8)


def as_sequences(x):
    return x.reshape(-1, 1, 64)


def build(name):
    """Trains and exports one model; returns its manifest entry."""
    torch.manual_seed(SEED)
    np.random.seed(SEED)
    xtr, xte, ytr, yte = digits_split()
    if name == "digits_mlp":
        return export(name, train(MLP([64, 32, 32, 10]), xtr, ytr, epochs=60), xtr, xte, yte, opset=13)
    if name == "digits_cnn":
        cnn = train(CNN(), as_images(xtr), ytr, epochs=40)
        return export(name, cnn, as_images(xtr), as_images(xte), yte, opset=17)
    if name == "digits_poly":
        return export(name, train(PolyNet(64, 16, 10), xtr, ytr, epochs=60, lr=3e-3), xtr, xte, yte, opset=14)
    if name == "digits_resnet":
        res = train(ResNetMax(), as_images(xtr), ytr, epochs=30)
        return export(name, res, as_images(xtr), as_images(xte), yte, opset=13)
    if name == "digits_gated":
        return export(name, train(GatedMLP(), xtr, ytr, epochs=40, lr=3e-3), xtr, xte, yte, opset=13)
    if name == "digits_deep":
        return export(name, train(DeepMLP(), xtr, ytr, epochs=80, lr=3e-3), xtr, xte, yte, opset=13)
    if name == "digits_conv1d":
        net = train(Conv1dNet(), as_sequences(xtr), ytr, epochs=40, lr=3e-3)
        return export(name, net, as_sequences(xtr), as_sequences(xte), yte, opset=13)
    if name == "breast_cancer_mlp":
        xtr, xte, ytr, yte = standardized_split(load_breast_cancer(), test_size=0.25)
        torch.manual_seed(SEED)
        return export(name, train(MLP([30, 16, 16, 2]), xtr, ytr, epochs=60, lr=3e-3), xtr, xte, yte, opset=11)
    if name == "iris_mlp":
        # the tiny model of the encrypted CLI tests: 4 → 8 → ReLU → 3
        xtr, xte, ytr, yte = standardized_split(load_iris(), test_size=0.3)
        torch.manual_seed(SEED)
        return export(name, train(MLP([4, 8, 3]), xtr, ytr, epochs=200, lr=1e-2), xtr, xte, yte, opset=13)
    if name == "diabetes_mlp":
        # regression: disease progression from 10 standardized features, target standardized
        d = load_diabetes()
        xtr, xte, ytr, yte = train_test_split(
            d.data.astype(np.float32), d.target.astype(np.float32), test_size=0.25, random_state=SEED
        )
        mx, sx = xtr.mean(0), xtr.std(0) + 1e-6
        my, sy = ytr.mean(), ytr.std()
        xtr, xte = ((xtr - mx) / sx).astype(np.float32), ((xte - mx) / sx).astype(np.float32)
        ytr, yte = ((ytr - my) / sy).reshape(-1, 1).astype(np.float32), ((yte - my) / sy).reshape(-1, 1).astype(np.float32)
        torch.manual_seed(SEED)
        net = train(MLP([10, 16, 8, 1]), xtr, ytr, epochs=60, lr=1e-3, regression=True)
        return export(name, net, xtr, xte, yte, opset=13)
    if name == "digits_lngelu":
        return export(name, train(LnGeluMLP(), xtr, ytr, epochs=60, lr=3e-3), xtr, xte, yte, opset=17)
    if name == "digits_autoenc":
        # reconstruction (R²): targets are the images themselves
        xi, xti = as_images(xtr), as_images(xte)
        net = train(TinyAutoencoder(), xi, xtr.astype(np.float32), epochs=60, lr=3e-3, regression=True)
        return export(name, net, xi, xti, xte.astype(np.float32), opset=17)
    if name == "digits_attention":
        return export(name, train(OneHeadAttention(), xtr, ytr, epochs=200, lr=3e-3), xtr, xte, yte, opset=17)
    if name == "digits_transformer":
        return export(name, train(TinyTransformer(), xtr, ytr, epochs=80, lr=3e-3), xtr, xte, yte, opset=17)
    if name in ("digits_qat2", "digits_qat3", "digits_qat4"):
        return qat_net(name, "mlp", xtr, xte, ytr, yte, bits=int(name[-1]))
    if name in ("digits_qcnn2", "digits_qcnn3", "digits_qcnn4"):
        return qat_net(name, "cnn", xtr, xte, ytr, yte, bits=int(name[-1]))
    if name == "digits_qat3_qcdq":
        return qat_net(name, "mlp", xtr, xte, ytr, yte, bits=3, fmt="qcdq")
    if name == "digits_qat3_po2":
        return qat_net(name, "mlp", xtr, xte, ytr, yte, bits=3, po2=True)
    if name == "digits_mlp_qdq":
        return qdq("digits_mlp", name, xte, yte)
    if name == "digits_mlp_mixed":
        return qdq("digits_mlp", name, xte, yte, exclude=["/net/net.2/Gemm", "/net/net.4/Gemm"])
    if name == "digits_mlp_qop":
        return qdq("digits_mlp", name, xte, yte, fmt="QOperator")
    if name == "digits_cnn_qop":
        return qdq("digits_cnn", name, as_images(xte), yte, fmt="QOperator", per_channel=True)
    raise SystemExit(f"unknown model {name}")


def qat_net(name, kind, xtr, xte, ytr, yte, bits, fmt="qonnx", po2=False):
    """A quantization-aware network trained with Brevitas at `bits` bits (inputs, weights and
    ReLU activations), exported as QONNX (`Quant` / `Trunc` nodes, domain
    qonnx.custom_op.general; `fmt="qonnx"`) or as QCDQ (QuantizeLinear → Clip →
    DequantizeLinear; `fmt="qcdq"`), with a dynamic batch axis. `kind` is "mlp"
    (64 → 64 → 32 → 10) or "cnn" (conv 8 → TruncAvgPool → conv 16 → MaxPool → linear, on 8×8
    images). The test outputs are Brevitas' own quantized forward."""
    import brevitas.nn as qnn
    import onnx
    from brevitas.export import export_onnx_qcdq, export_qonnx

    # po2: power-of-two scales everywhere (Brevitas' fixed-point quantizers, as Concrete ML's
    # built-in networks use for ReLU) and biases at the accumulator's scale, so that every
    # requantization is a shift
    kw = {}
    if po2:
        from brevitas.quant import (
            Int8ActPerTensorFixedPoint,
            Int8WeightPerTensorFixedPoint,
            Int32Bias,
            Uint8ActPerTensorFixedPoint,
        )

        kw = dict(
            inp=dict(act_quant=Int8ActPerTensorFixedPoint),
            lin=dict(weight_quant=Int8WeightPerTensorFixedPoint, bias_quant=Int32Bias),
            relu=dict(act_quant=Uint8ActPerTensorFixedPoint),
        )

    class QMLP(nn.Module):
        def __init__(self):
            super().__init__()
            i, l, r = kw.get("inp", {}), kw.get("lin", {}), kw.get("relu", {})
            self.inp = qnn.QuantIdentity(bit_width=bits, return_quant_tensor=True, **i)
            self.l1 = qnn.QuantLinear(64, 64, bias=True, weight_bit_width=bits, **l)
            self.r1 = qnn.QuantReLU(bit_width=bits, return_quant_tensor=True, **r)
            self.l2 = qnn.QuantLinear(64, 32, bias=True, weight_bit_width=bits, **l)
            self.r2 = qnn.QuantReLU(bit_width=bits, return_quant_tensor=True, **r)
            self.l3 = qnn.QuantLinear(32, 10, bias=True, weight_bit_width=bits, **l)

        def forward(self, x):
            return self.l3(self.r2(self.l2(self.r1(self.l1(self.inp(x))))))

    class QCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = qnn.QuantIdentity(bit_width=bits, return_quant_tensor=True)
            self.c1 = qnn.QuantConv2d(1, 8, 3, padding=1, bias=True, weight_bit_width=bits)
            self.r1 = qnn.QuantReLU(bit_width=bits, return_quant_tensor=True)
            self.p1 = qnn.TruncAvgPool2d(2, bit_width=bits)
            self.c2 = qnn.QuantConv2d(8, 16, 3, padding=1, bias=True, weight_bit_width=bits)
            self.r2 = qnn.QuantReLU(bit_width=bits, return_quant_tensor=True)
            self.p2 = nn.MaxPool2d(2)
            self.fc = qnn.QuantLinear(64, 10, bias=True, weight_bit_width=bits)

        def forward(self, x):
            y = self.p2(self.r2(self.c2(self.p1(self.r1(self.c1(self.inp(x)))))))
            return self.fc(y.flatten(1))

    if kind == "cnn":
        xtr, xte = as_images(xtr), as_images(xte)
    torch.manual_seed(SEED)
    model = train(QMLP() if kind == "mlp" else QCNN(), xtr, ytr, epochs=80 if kind == "mlp" else 40, lr=1e-2, wd=0)
    path = os.path.join(OUT, f"{name}.onnx")
    (export_qonnx if fmt == "qonnx" else export_onnx_qcdq)(model, torch.tensor(xte[:1]), export_path=path)
    g = onnx.load(path)
    for v in list(g.graph.input) + list(g.graph.output):
        dim = v.type.tensor_type.shape.dim[0]
        dim.ClearField("dim_value")
        dim.dim_param = "batch"
    onnx.save(g, path)
    with torch.no_grad():
        out = model(torch.tensor(xte))
    out = (out.value if hasattr(out, "value") else out).numpy().astype(np.float32)
    rng = np.random.default_rng(SEED)
    calib = xtr[rng.choice(len(xtr), size=min(N_CALIB, len(xtr)), replace=False)]
    np.save(os.path.join(OUT, f"{name}_calib.npy"), calib.astype(np.float32))
    np.save(os.path.join(OUT, f"{name}_test_x.npy"), xte.astype(np.float32))
    np.save(os.path.join(OUT, f"{name}_test_y.npy"), yte.astype(np.int64))
    np.save(os.path.join(OUT, f"{name}_test_out.npy"), out)
    import brevitas

    acc = float((out.argmax(1) == yte).mean())
    print(f"{name}: Brevitas {brevitas.__version__} QAT {kind} at {bits} bits ({fmt}{', power-of-two scales' if po2 else ''}), test accuracy {acc:.4f}")
    return {
        "name": name,
        "opset": int(g.opset_import[0].version),
        "seed": SEED,
        "torch": torch.__version__,
        "brevitas": brevitas.__version__,
        "format": fmt,
        "float_accuracy": acc,
        "n_test": int(len(yte)),
    }


def qdq(src, name, x_test, y_test, fmt="QDQ", per_channel=False, exclude=()):
    """onnxruntime's static quantization of a shipped float model, calibrated on its
    calibration set: `fmt="QDQ"` (QuantizeLinear/DequantizeLinear around every Gemm or Conv)
    or `"QOperator"` (QLinearConv, QGemm, QLinearAveragePool, …); uint8 activations, int8
    weights, per tensor or per channel. The test outputs are onnxruntime's run of the
    quantized model. `exclude` names nodes left in float (a mixed graph)."""
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    calib = np.load(os.path.join(OUT, f"{src}_calib.npy"))

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"input": calib[i : i + 1]} for i in range(len(calib))])

        def get_next(self):
            return next(self.it, None)

    path = os.path.join(OUT, f"{name}.onnx")
    quantize_static(
        os.path.join(OUT, f"{src}.onnx"),
        path,
        Reader(),
        quant_format=getattr(QuantFormat, fmt),
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=per_channel,
        nodes_to_exclude=list(exclude),
    )
    out = ort.InferenceSession(path).run(None, {"input": x_test})[0].astype(np.float32)
    np.save(os.path.join(OUT, f"{name}_calib.npy"), calib)
    np.save(os.path.join(OUT, f"{name}_test_x.npy"), x_test.astype(np.float32))
    np.save(os.path.join(OUT, f"{name}_test_y.npy"), y_test.astype(np.int64))
    np.save(os.path.join(OUT, f"{name}_test_out.npy"), out)
    acc = float((out.argmax(1) == y_test).mean())
    import onnx

    opset = next(o.version for o in onnx.load(path).opset_import if o.domain in ("", "ai.onnx"))
    print(f"{name}: onnxruntime {ort.__version__} {fmt} of {src}, test accuracy {acc:.4f}")
    return {
        "name": name,
        "opset": int(opset),
        "seed": SEED,
        "onnxruntime": ort.__version__,
        "format": fmt,
        "per_channel": per_channel,
        "float_nodes": list(exclude),
        "float_accuracy": acc,
        "n_test": int(len(y_test)),
    }


ALL = [
    "digits_mlp",
    "digits_cnn",
    "digits_poly",
    "digits_resnet",
    "digits_gated",
    "digits_deep",
    "digits_conv1d",
    "breast_cancer_mlp",
    "iris_mlp",
    "diabetes_mlp",
    "digits_mlp_qdq",
    "digits_mlp_qop",
    "digits_cnn_qop",
    "digits_mlp_mixed",
    "digits_qat2",
    "digits_qat3",
    "digits_qat4",
    "digits_qat3_qcdq",
    "digits_qat3_po2",
    "digits_qcnn2",
    "digits_qcnn3",
    "digits_qcnn4",
    "digits_lngelu",
    "digits_transformer",
    "digits_attention",
    "digits_autoenc",
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", help="comma-separated model names (default: all)")
    args = ap.parse_args()
    names = args.only.split(",") if args.only else ALL
    path = os.path.join(OUT, "manifest.json")
    manifest = {"models": []}
    if os.path.exists(path):
        with open(path) as f:
            manifest = json.load(f)
    old = manifest.pop("torch", None)
    entries = {m["name"]: m for m in manifest["models"]}
    for m in entries.values():
        if old:
            m.setdefault("torch", old)
    for name in names:
        entries[name] = build(name)
    manifest["models"] = [entries[n] for n in ALL if n in entries]
    with open(path, "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
