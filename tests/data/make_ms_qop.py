"""Writes ms_qop.onnx and its reference data (ms_qop_x.npy; ms_qop_y.npy and the codes of
every op, ms_qop_{a,b,cc,d,p,g,cat,qy}.npy, as float32): one graph
chaining onnxruntime's com.microsoft QOperator ops that fhec imports (QLinearLeakyRelu,
QLinearSigmoid, QLinearAdd, QLinearMul, QLinearAveragePool, QLinearGlobalAveragePool,
QLinearConcat, QGemm) between a QuantizeLinear and a DequantizeLinear, run by onnxruntime.
Needs onnx, onnxruntime and numpy; the tests only read the committed files."""

import os

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

OUT = os.path.dirname(os.path.abspath(__file__))
rng = np.random.default_rng(0)


def c(name, v, dtype=None):
    return numpy_helper.from_array(np.asarray(v, dtype=dtype), name)


inits = [
    c("s_in", 0.05, np.float32), c("z_in", 128, np.uint8),
    c("s_a", 0.04, np.float32), c("z_a", 100, np.uint8),
    c("s_b", 1 / 256, np.float32), c("z_b", 0, np.uint8),
    c("s_c", 0.05, np.float32), c("z_c", 60, np.uint8),
    c("k", rng.integers(0, 255, size=(2, 4, 4)).astype(np.uint8)), c("s_k", 0.02, np.float32), c("z_k", 120, np.uint8),
    c("s_d", 0.03, np.float32), c("z_d", 90, np.uint8),
    c("s_p", 0.03, np.float32), c("z_p", 85, np.uint8),
    c("s_g", 0.02, np.float32), c("z_g", 70, np.uint8),
    c("s_cat", 0.03, np.float32), c("z_cat", 80, np.uint8),
    c("w", rng.integers(-127, 127, size=(3, 18)).astype(np.int8)), c("s_w", 0.01, np.float32), c("z_w", 0, np.int8),
    c("bias", rng.integers(-500, 500, size=(3,)).astype(np.int32)),
    c("s_y", 0.05, np.float32), c("z_y", 128, np.uint8),
]
ms = "com.microsoft"
# every op's codes are outputs too, so that the test checks each op on its own
CODES = [
    ("a", ["batch", 2, 4, 4]),
    ("b", ["batch", 2, 4, 4]),
    ("cc", ["batch", 2, 4, 4]),
    ("d", ["batch", 2, 4, 4]),
    ("p", ["batch", 2, 2, 2]),
    ("g", ["batch", 2, 1, 1]),
    ("cat", ["batch", 18]),
    ("qy", ["batch", 3]),
]
nodes = [
    helper.make_node("QuantizeLinear", ["x", "s_in", "z_in"], ["q"]),
    helper.make_node("QLinearLeakyRelu", ["q", "s_in", "z_in", "s_a", "z_a"], ["a"], domain=ms, alpha=0.1),
    helper.make_node("QLinearSigmoid", ["a", "s_a", "z_a", "s_b", "z_b"], ["b"], domain=ms),
    helper.make_node("QLinearAdd", ["b", "s_b", "z_b", "a", "s_a", "z_a", "s_c", "z_c"], ["cc"], domain=ms),
    helper.make_node("QLinearMul", ["cc", "s_c", "z_c", "k", "s_k", "z_k", "s_d", "z_d"], ["d"], domain=ms),
    helper.make_node("QLinearAveragePool", ["d", "s_d", "z_d", "s_p", "z_p"], ["p"], domain=ms, kernel_shape=[2, 2], strides=[2, 2]),
    helper.make_node("QLinearGlobalAveragePool", ["d", "s_d", "z_d", "s_g", "z_g"], ["g"], domain=ms),
    helper.make_node("Reshape", ["p", "shape_p"], ["pf"]),
    helper.make_node("Reshape", ["g", "shape_g"], ["gf"]),
    helper.make_node("QLinearConcat", ["s_cat", "z_cat", "pf", "s_p", "z_p", "gf", "s_g", "z_g", "pf", "s_p", "z_p"], ["cat"], domain=ms, axis=1),
    helper.make_node("QGemm", ["cat", "s_cat", "z_cat", "w", "s_w", "z_w", "bias", "s_y", "z_y"], ["qy"], domain=ms, transB=1),
    helper.make_node("DequantizeLinear", ["qy", "s_y", "z_y"], ["y"]),
]
inits += [c("shape_p", [-1, 8], np.int64), c("shape_g", [-1, 2], np.int64)]
# the bias is an int32 tensor with scale s_cat · s_w
g = helper.make_graph(
    nodes, "ms_qop",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2, 4, 4])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])]
    + [helper.make_tensor_value_info(n, TensorProto.UINT8, s) for n, s in CODES],
    inits,
)
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(ms, 1)])
m.ir_version = 8
path = os.path.join(OUT, "ms_qop.onnx")
onnx.save(m, path)
x = rng.normal(0, 2, size=(16, 2, 4, 4)).astype(np.float32)
outs = ort.InferenceSession(path).run(None, {"x": x})
np.save(os.path.join(OUT, "ms_qop_x.npy"), x)
for (name, _), o in zip([("y", None)] + CODES, outs):
    np.save(os.path.join(OUT, f"ms_qop_{name}.npy"), o.astype(np.float32))
print("wrote", path, f"onnxruntime {ort.__version__}")
