"""Writes tests/data/external/: models/iris_mlp.onnx with its weights moved to files beside
it by onnx's own external-data helper (tests/it/external.rs reads them).

    /path/to/venv/bin/python tests/data/make_external.py   # needs onnx (1.23.2 was used)

- iris.onnx + iris.onnx.data: every initializer in one file (`all_tensors_to_one_file`),
  as torch's dynamo exporter writes them;
- split/iris.onnx + split/weights/*: one file per tensor, in a subfolder.
CI never runs this script; the files are committed.
"""
import os

import onnx
from onnx.external_data_helper import convert_model_to_external_data

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "..", "..", "models", "iris_mlp.onnx")
OUT = os.path.join(HERE, "external")


def main():
    os.makedirs(os.path.join(OUT, "split", "weights"), exist_ok=True)
    m = onnx.load(SRC)
    convert_model_to_external_data(m, all_tensors_to_one_file=True, location="iris.onnx.data", size_threshold=0)
    onnx.save_model(m, os.path.join(OUT, "iris.onnx"))
    m = onnx.load(SRC)
    # one file per tensor, named after it, moved under weights/
    convert_model_to_external_data(m, all_tensors_to_one_file=False, size_threshold=0)
    for t in m.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "weights/" + e.value
    onnx.save_model(m, os.path.join(OUT, "split", "iris.onnx"))
    print(onnx.__version__, sorted(os.listdir(OUT)), sorted(os.listdir(os.path.join(OUT, "split", "weights"))))


if __name__ == "__main__":
    main()
