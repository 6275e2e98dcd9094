//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::process::Output;
use tract_onnx::pb;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn model(name: &str) -> PathBuf {
    repo().join("models").join(name)
}

/// Every shipped model (models/*.onnx and models/exports/*.onnx), as the path without
/// `.onnx`: each has `_calib.npy`, `_test_x.npy`, `_test_y.npy` and `_test_out.npy` (its
/// framework's outputs) beside it.
pub fn shipped() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in [repo().join("models"), repo().join("models/exports")] {
        let mut here: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("models folder")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
            .map(|p| p.with_extension(""))
            .collect();
        here.sort();
        out.extend(here);
    }
    assert!(out.len() >= 30, "shipped models missing: {out:?}");
    out
}

/// A shipped model's file beside it: `prefix` + `suffix` (e.g. `_test_x.npy`).
pub fn beside(prefix: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}{suffix}", prefix.display()))
}

/// A shipped model's name (its file stem).
pub fn stem(prefix: &Path) -> String {
    prefix
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The largest `|a - b| / max(|b|_inf, 1e-6)` over two equally shaped arrays.
pub fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "arrays differ in length");
    let scale = b.iter().fold(0f64, |m, &v| m.max(v.abs() as f64)).max(1e-6);
    a.iter()
        .zip(b)
        .fold(0f64, |m, (&x, &y)| m.max((x as f64 - y as f64).abs()))
        / scale
}

/// A path in this test process's scratch folder.
pub fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fhec-it-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d.join(name)
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Asserts a user error: exit code 1, one line on stderr mentioning every `needles`, no
/// panic.
/// Runs the `fhec` binary with `args`.
pub fn fhec(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_fhec"))
        .args(args)
        .output()
        .expect("fhec runs")
}

pub fn user_error(out: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "exit code; stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    for n in needles {
        assert!(err.contains(n), "`{n}` missing from: {err}");
    }
}

/// The iris MLP compiled at `n_bits` with rounding to `rounding_bits` (small and fast: the
/// model of the encrypted and hostile-input tests).
pub fn compile_iris(n_bits: u32, rounding_bits: u32) -> fhec::CompiledModel {
    let calib = fhec::npy::read_f32(&model("iris_mlp_calib.npy")).expect("calib");
    let opts = fhec::CompileOptions {
        auto: fhec::AutoOptions::keep_precision(),
        quant: fhec::QuantConfig {
            rounding_bits: Some(rounding_bits),
            ..fhec::QuantConfig::with_n_bits(n_bits)
        },
        ..Default::default()
    };
    fhec::compile(&model("iris_mlp.onnx"), &[calib], &opts).expect("compiles")
}

/// A model compiled for clear mode only (the passes, no TFHE parameters): for tests of
/// settings whose encrypted plan does not matter, or that have none.
pub fn quantize(
    path: &Path,
    calib: &[ndarray::ArrayD<f32>],
    quant: &fhec::QuantConfig,
) -> fhec::CompiledModel {
    let m = fhec::Model::load(path).expect("model");
    fhec::quantize_model(&m, calib, quant).expect("compiles")
}

/// A float32 graph input or output of static shape `dims`.
pub fn value_info(name: &str, dims: &[i64]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{dimension::Value, Dimension};
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: 1,
                shape: Some(pb::TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| Dimension {
                            value: Some(Value::DimValue(d)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// An opset-17 ONNX model of `nodes`, encoded.
pub fn onnx_model(
    nodes: Vec<pb::NodeProto>,
    inits: Vec<pb::TensorProto>,
    inputs: Vec<pb::ValueInfoProto>,
    outputs: Vec<pb::ValueInfoProto>,
) -> Vec<u8> {
    use prost::Message;
    pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(pb::GraphProto {
            node: nodes,
            initializer: inits,
            input: inputs,
            output: outputs,
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

/// An ONNX node `op` reading `ins`, writing `out` (also its name).
pub fn node(op: &str, ins: &[&str], out: &str, attrs: Vec<pb::AttributeProto>) -> pb::NodeProto {
    pb::NodeProto {
        name: out.into(),
        op_type: op.into(),
        input: ins.iter().map(|s| s.to_string()).collect(),
        output: vec![out.into()],
        attribute: attrs,
        ..Default::default()
    }
}

/// An int attribute.
pub fn attr_int(name: &str, v: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i: v,
        ..Default::default()
    }
}

/// An ints attribute.
pub fn attr_ints(name: &str, v: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Ints as i32,
        ints: v.to_vec(),
        ..Default::default()
    }
}

/// A float32 initializer.
pub fn init_f32(name: &str, dims: &[i64], v: Vec<f32>) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: 1,
        float_data: v,
        ..Default::default()
    }
}

/// Deterministic weights in [−0.7, 0.7) for `n` values.
pub fn pseudo_weights(n: usize, seed: u32) -> Vec<f32> {
    (0..n as u32)
        .map(|i| ((i.wrapping_mul(2_654_435_761) ^ seed) % 1000) as f32 / 700.0 - 0.7)
        .collect()
}

/// A float32 value of shape `[N, dims…]` with a dynamic batch axis `N`.
pub fn batched_value_info(name: &str, dims: &[i64]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{dimension::Value, Dimension};
    let mut vi = value_info(name, dims);
    if let Some(pb::type_proto::Value::TensorType(t)) =
        vi.r#type.as_mut().and_then(|t| t.value.as_mut())
    {
        if let Some(s) = t.shape.as_mut() {
            s.dim.insert(
                0,
                Dimension {
                    value: Some(Value::DimParam("N".into())),
                    ..Default::default()
                },
            );
        }
    }
    vi
}
