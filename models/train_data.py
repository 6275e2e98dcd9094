"""Data sets for `fhec train` (README's train table and the tests), and Concrete ML's built-in
quantization-aware networks on the same splits as the reference.

    /path/to/venv/bin/python models/train_data.py            # writes models/data/*.npy
    /path/to/concrete-venv/bin/python models/train_data.py --concrete   # the reference scores

Splits: 75/25, stratified for classification, random_state 42 (as the issue specifies);
features are written raw (`fhec train` standardizes them inside the exported model).
"""
import json
import os
import sys
import time

import numpy as np
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits
from sklearn.model_selection import train_test_split

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def splits():
    d = load_digits()
    b = load_breast_cancer()
    r = load_diabetes()
    out = {}
    for name, ds, strat in (("digits", d, True), ("breast_cancer", b, True), ("diabetes", r, False)):
        x = ds.data.astype(np.float32)
        y = ds.target
        xtr, xte, ytr, yte = train_test_split(
            x, y, test_size=0.25, random_state=42, stratify=y if strat else None
        )
        out[name] = (xtr, xte, ytr, yte, strat)
    return out


def write():
    os.makedirs(OUT, exist_ok=True)
    for name, (xtr, xte, ytr, yte, cls) in splits().items():
        np.save(os.path.join(OUT, f"{name}_train_x.npy"), xtr)
        np.save(os.path.join(OUT, f"{name}_test_x.npy"), xte)
        ty = np.int64 if cls else np.float32
        np.save(os.path.join(OUT, f"{name}_train_y.npy"), ytr.astype(ty))
        np.save(os.path.join(OUT, f"{name}_test_y.npy"), yte.astype(ty))
        print(name, xtr.shape, xte.shape)
    # the diabetes set as CSV with a named target column (the CSV path of `fhec train`)
    xtr, _, ytr, _, _ = splits()["diabetes"]
    names = load_diabetes().feature_names
    with open(os.path.join(OUT, "diabetes_train.csv"), "w") as f:
        f.write(",".join(names + ["progression"]) + "\n")
        for row, t in zip(xtr, ytr):
            f.write(",".join(f"{v:.6g}" for v in row) + f",{t:g}\n")


def concrete():
    import torch
    from concrete.ml.sklearn import NeuralNetClassifier, NeuralNetRegressor
    from sklearn.metrics import r2_score

    torch.manual_seed(42)
    results = []
    for name, (xtr, xte, ytr, yte, cls) in splits().items():
        for label, kw in (
            ("defaults", {}),
            ("3 bits, 60 epochs", dict(module__n_w_bits=3, module__n_a_bits=3, max_epochs=60)),
        ):
            torch.manual_seed(42)
            if cls:
                m = NeuralNetClassifier(module__n_layers=3, verbose=0, **kw)
                m.fit(xtr, ytr.astype(np.int64))
                score = float((m.predict(xte) == yte).mean())
            else:
                m = NeuralNetRegressor(module__n_layers=3, verbose=0, **kw)
                m.fit(xtr, ytr.astype(np.float32).reshape(-1, 1))
                score = float(r2_score(yte, m.predict(xte).reshape(-1)))
            r = {"data": name, "settings": label, "score": score, "metric": "accuracy" if cls else "r2"}
            print(json.dumps(r), flush=True)
            results.append(r)
    return results


def float_mlp():
    """The float reference: scikit-learn's MLP (hidden layers as the built-in's: 3 linear
    layers, width 4 × features), features standardized on the training split."""
    from sklearn.metrics import r2_score
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    for name, (xtr, xte, ytr, yte, cls) in splits().items():
        h = (4 * xtr.shape[1],) * 2
        if cls:
            m = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=h, max_iter=500, random_state=42))
            m.fit(xtr, ytr)
            score = float((m.predict(xte) == yte).mean())
        else:
            m = make_pipeline(StandardScaler(), MLPRegressor(hidden_layer_sizes=h, max_iter=2000, early_stopping=True, random_state=42))
            m.fit(xtr, ytr)
            score = float(r2_score(yte, m.predict(xte)))
        print(json.dumps({"data": name, "float_mlp": score}), flush=True)


if __name__ == "__main__":
    if "--concrete" in sys.argv:
        concrete()
    elif "--float" in sys.argv:
        float_mlp()
    else:
        write()
