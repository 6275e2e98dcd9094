"""Reference outputs for the test models the qonnx package ships (qonnx 1.0.0,
`qonnx/data/onnx/`, Apache-2.0; copied to tests/data/qonnx/ with their qonnx names noted
below). One seeded random input per model, run with qonnx's own executor
(`qonnx.core.onnx_exec.execute_onnx`, which runs QONNX custom ops such as `Quant` in numpy
and the rest with onnxruntime). Regenerate with the venv of models/make_models.py:

    python tests/data/make_qonnx_refs.py
"""
import os

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx
from qonnx.transformation.infer_shapes import InferShapes

# Outputs larger than this many values are stored as their first PREFIX values (the test
# compares that prefix). Inputs with a QONNX integer datatype are a formula the test
# recomputes, not stored.
PREFIX = 8192

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "qonnx")
# file here: (qonnx path, input shape)
MODELS = {
    "residual_block_clean": ("residual_block_clean.onnx", None),
    "eltwise_chanlast_testcase": ("eltwise_chanlast_testcase.onnx", None),
    "mnist_conv": ("mnist-conv/model.onnx", None),
    "sdp": ("matmul_update/sdp.onnx", None),
    "espcn_subpixel_quant": ("bsd300x3-espcn/subpixel/quant_model.onnx", None),
    "espcn_nn_resize_quant": ("bsd300x3-espcn/nn_resize/quant_model.onnx", None),
}

for name in MODELS:
    m = ModelWrapper(os.path.join(HERE, f"{name}.onnx")).transform(InferShapes())
    inits = {i.name for i in m.graph.initializer}
    rng = np.random.default_rng(0)
    feed = {}
    formula = set()
    for i in m.graph.input:
        if i.name in inits:
            continue
        shape = [d.dim_value for d in i.type.tensor_type.shape.dim]
        dt = m.get_tensor_datatype(i.name)
        if dt.is_integer():
            # an input annotated with a QONNX integer datatype takes integers in its range:
            # element i is (i·7919) mod (range size) + min, which the test recomputes
            n = int(np.prod(shape))
            span = int(dt.max()) - int(dt.min()) + 1
            x = ((np.arange(n, dtype=np.int64) * 7919) % span + int(dt.min())).astype(np.float32).reshape(shape)
            formula.add(i.name)
        else:
            x = rng.uniform(-1.0, 1.0, size=shape).astype(np.float32)
        feed[i.name] = x
    out = execute_onnx(m, feed)
    for k, (iname, x) in enumerate(feed.items()):
        if iname not in formula:
            np.save(os.path.join(HERE, f"{name}_in{k}.npy"), x)
    for k, o in enumerate(m.graph.output):
        y = np.asarray(out[o.name], dtype=np.float32)
        if y.size > PREFIX:
            y = y.reshape(-1)[:PREFIX]
        np.save(os.path.join(HERE, f"{name}_out{k}.npy"), y)
    print(name, {k: v.shape for k, v in feed.items()}, [np.asarray(out[o.name]).shape for o in m.graph.output])
