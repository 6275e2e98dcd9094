"""Regenerates the ONNX models and data in models/ (needs torch, scikit-learn, onnx, numpy).

    python models/make_models.py            # writes models/*.onnx, *.npy, manifest.json

Every model is trained on a dataset that ships inside scikit-learn, with a fixed seed, and
exported with torch's TorchScript ONNX exporter (dynamo=False) at the opset recorded in
manifest.json, with a dynamic batch axis. For each model NAME the files are:

    NAME.onnx            the model
    NAME_calib.npy       float32 calibration inputs (from the training split)
    NAME_test_x.npy      float32 test inputs
    NAME_test_y.npy      int64 test labels
    NAME_test_out.npy    float32 outputs of the torch model on the test inputs

CI never runs this script; the files are committed.
"""

import json
import os

import numpy as np
import torch
import torch.nn as nn
from sklearn.datasets import load_breast_cancer, load_digits, load_iris
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


def train(model, x, y, epochs, lr=1e-2, wd=1e-4):
    torch.manual_seed(SEED)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=wd)
    xt, yt = torch.tensor(x), torch.tensor(y)
    loss_fn = nn.CrossEntropyLoss()
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
    np.save(os.path.join(OUT, f"{name}_test_y.npy"), y_test.astype(np.int64))
    np.save(os.path.join(OUT, f"{name}_test_out.npy"), out)
    acc = float((out.argmax(1) == y_test).mean())
    print(f"{name}: opset {opset}, float test accuracy {acc:.4f} on {len(y_test)} samples")
    return {"name": name, "opset": opset, "seed": SEED, "float_accuracy": acc, "n_test": int(len(y_test))}


def main():
    torch.manual_seed(SEED)
    np.random.seed(SEED)
    manifest = {"torch": torch.__version__, "models": []}

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    xtr, xte, ytr, yte = train_test_split(x, d.target, test_size=0.2, random_state=SEED, stratify=d.target)

    torch.manual_seed(SEED)
    mlp = train(MLP([64, 32, 32, 10]), xtr, ytr, epochs=60)
    manifest["models"].append(export("digits_mlp", mlp, xtr, xte, yte, opset=13))

    torch.manual_seed(SEED)
    cnn = train(CNN(), xtr.reshape(-1, 1, 8, 8), ytr, epochs=40)
    manifest["models"].append(
        export("digits_cnn", cnn, xtr.reshape(-1, 1, 8, 8), xte.reshape(-1, 1, 8, 8), yte, opset=17)
    )

    torch.manual_seed(SEED)
    poly = train(PolyNet(64, 16, 10), xtr, ytr, epochs=60, lr=3e-3)
    manifest["models"].append(export("digits_poly", poly, xtr, xte, yte, opset=14))

    torch.manual_seed(SEED)
    res = train(ResNetMax(), xtr.reshape(-1, 1, 8, 8), ytr, epochs=30)
    manifest["models"].append(
        export("digits_resnet", res, xtr.reshape(-1, 1, 8, 8), xte.reshape(-1, 1, 8, 8), yte, opset=13)
    )

    torch.manual_seed(SEED)
    gated = train(GatedMLP(), xtr, ytr, epochs=40, lr=3e-3)
    manifest["models"].append(export("digits_gated", gated, xtr, xte, yte, opset=13))

    xtr, xte, ytr, yte = standardized_split(load_breast_cancer(), test_size=0.25)
    torch.manual_seed(SEED)
    bc = train(MLP([30, 16, 16, 2]), xtr, ytr, epochs=60, lr=3e-3)
    manifest["models"].append(export("breast_cancer_mlp", bc, xtr, xte, yte, opset=11))

    # the tiny model of the encrypted CLI tests: 4 → 8 → ReLU → 3
    xtr, xte, ytr, yte = standardized_split(load_iris(), test_size=0.3)
    torch.manual_seed(SEED)
    iris = train(MLP([4, 8, 3]), xtr, ytr, epochs=200, lr=1e-2)
    manifest["models"].append(export("iris_mlp", iris, xtr, xte, yte, opset=13))

    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
