//! ONNX's own backend node tests (from the onnx 1.22.0 wheel) as the conformance suite of the
//! importer and `eval_f32`. A case is *eligible* when every node's op type is one fhec
//! supports; eligible cases that fhec refuses (an unsupported attribute value, dtype, …) count
//! as failures, not as skips. One form is counted apart and listed, as fhec refuses it by
//! design: `Resize` interpolation (linear, cubic), which would multiply encrypted values by
//! per-position weights and add them — not a move of values; nearest mode is supported.

use crate::common::repo;
use fhec::import::{import_model_with, tensor_from_proto, ImportOptions, SUPPORTED_OPS};
use fhec::ir::{eval_f32, Tensor};
use prost::Message;
use std::path::{Path, PathBuf};
use std::process::Command;
use tract_onnx::pb;

fn node_dir() -> PathBuf {
    let out = Command::new("bash")
        .arg(repo().join("tests/fetch-onnx-node-tests.sh"))
        .output()
        .expect("bash runs tests/fetch-onnx-node-tests.sh");
    assert!(
        out.status.success(),
        "fetching ONNX node tests failed (needs python3 + pip and the PyPI registry): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn read_tensor(p: &Path) -> Result<Tensor, String> {
    let bytes = std::fs::read(p).map_err(|e| e.to_string())?;
    let t = pb::TensorProto::decode(&bytes[..]).map_err(|e| e.to_string())?;
    tensor_from_proto(&t).map_err(|e| e.to_string())
}

/// ONNX's backend-test tolerance: |a - b| <= atol + rtol * |b|, NaN == NaN.
fn close(a: &Tensor, b: &Tensor) -> Result<(), String> {
    if a.shape() != b.shape() {
        return Err(format!("shape {:?} vs expected {:?}", a.shape(), b.shape()));
    }
    let (x, y) = (a.to_f32(), b.to_f32());
    for (i, (&p, &q)) in x.iter().zip(y.iter()).enumerate() {
        let ok = (p.is_nan() && q.is_nan()) || p == q || (p - q).abs() <= 1e-7 + 1e-3 * q.abs();
        if !ok {
            return Err(format!("element {i}: {p} vs expected {q}"));
        }
    }
    Ok(())
}

/// Element types fhec reads: float32/64, float16, bfloat16 (computed in f32) and the
/// integer types up to 64 bits (computed in i64). Not float8, float4, int4/2, sequences or
/// optionals.
fn supported_elem_type(vi: &pb::ValueInfoProto) -> bool {
    use pb::tensor_proto::DataType as D;
    match vi.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(pb::type_proto::Value::TensorType(t)) => matches!(
            D::try_from(t.elem_type),
            Ok(D::Float
                | D::Double
                | D::Float16
                | D::Bfloat16
                | D::Int8
                | D::Int16
                | D::Int32
                | D::Int64
                | D::Uint8
                | D::Uint16
                | D::Uint32
                | D::Uint64
                | D::Bool)
        ),
        None => false,
    }
}

enum Outcome {
    /// Some op type is not supported.
    Ineligible,
    /// All ops supported, but an input or output has an element type fhec does not read.
    OtherTypes,
    /// A form fhec refuses by design (Resize interpolation).
    ByDesign,
    Pass,
    Fail(String),
}

fn run_case(dir: &Path) -> Outcome {
    let Ok(bytes) = std::fs::read(dir.join("model.onnx")) else {
        return Outcome::Ineligible;
    };
    let Ok(model) = pb::ModelProto::decode(&bytes[..]) else {
        return Outcome::Ineligible;
    };
    let Some(g) = model.graph.as_ref() else {
        return Outcome::Ineligible;
    };
    let ops_ok = g.node.iter().all(|n| {
        (n.domain.is_empty() || n.domain == "ai.onnx")
            && SUPPORTED_OPS.contains(&n.op_type.as_str())
    });
    if !ops_ok {
        return Outcome::Ineligible;
    }
    if !g.input.iter().chain(&g.output).all(supported_elem_type) {
        return Outcome::OtherTypes;
    }
    let interpolates = g.node.iter().any(|n| {
        matches!(n.op_type.as_str(), "Resize" | "Upsample")
            && n.attribute
                .iter()
                .any(|a| a.name == "mode" && a.s != b"nearest")
    });
    if interpolates {
        return Outcome::ByDesign;
    }
    // fhec compiles static graphs: integer inputs (shapes, axes, pads, indices, starts) and
    // quantizer parameters are frozen to the test's values at compile time, as a user would
    // bind them.
    let data = dir.join("test_data_set_0");
    let inits: Vec<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
    // a quantizer's scales and zero points (and a QLinearConv's weights) are model
    // parameters (initializers in real models); the data inputs stay inputs
    let params: Vec<&str> = g
        .node
        .iter()
        .flat_map(|n| {
            let data: &[usize] = match n.op_type.as_str() {
                "QuantizeLinear" | "DequantizeLinear" | "QLinearConv" => &[0],
                "QLinearMatMul" => &[0, 3],
                "MatMulInteger" | "ConvInteger" => &[0, 1],
                // roi, scales and sizes are fixed by the model; so are a layer's weights and
                // bias (initializers in real models)
                "Resize" | "Upsample" | "ConvTranspose" => &[0],
                _ => &[],
            };
            let quantized = !data.is_empty();
            n.input
                .iter()
                .enumerate()
                .filter(move |(i, _)| quantized && !data.contains(i))
                .map(|(_, s)| s.as_str())
        })
        .collect();
    let mut opts = ImportOptions::default();
    let mut runtime = Vec::new();
    for (i, vi) in g
        .input
        .iter()
        .filter(|vi| !inits.contains(&vi.name.as_str()))
        .enumerate()
    {
        let t = match read_tensor(&data.join(format!("input_{i}.pb"))) {
            Ok(t) => t,
            Err(e) => return Outcome::Fail(format!("input {i}: {e}")),
        };
        if t.dtype() == fhec::ir::DType::I64 || params.contains(&vi.name.as_str()) {
            opts.frozen_inputs.insert(vi.name.clone(), t);
        } else {
            runtime.push(t);
        }
    }
    let graph = match import_model_with(&model, &dir.display().to_string(), &opts) {
        Ok(g) => g,
        Err(e) => return Outcome::Fail(format!("import: {e}")),
    };
    let inputs = runtime;
    let outs = match eval_f32(&graph, &inputs) {
        Ok(o) => o,
        Err(e) => return Outcome::Fail(format!("eval: {e}")),
    };
    for (i, o) in outs.iter().enumerate() {
        let want = match read_tensor(&data.join(format!("output_{i}.pb"))) {
            Ok(t) => t,
            Err(e) => return Outcome::Fail(format!("output {i}: {e}")),
        };
        if let Err(e) = close(o, &want) {
            return Outcome::Fail(format!("output {i}: {e}"));
        }
    }
    Outcome::Pass
}

/// Eligible cases that pass, and eligible cases, with onnx 1.22.0's node tests.
const PASSED: usize = 626;
const ELIGIBLE: usize = 645;

#[test]
fn onnx_backend_node_tests() {
    let root = node_dir();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", root.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    let (mut eligible, mut passed, mut other_types, mut by_design) = (0, 0, 0, 0);
    let mut failures = Vec::new();
    for d in &dirs {
        match run_case(d) {
            Outcome::Ineligible => {}
            Outcome::OtherTypes => other_types += 1,
            Outcome::ByDesign => by_design += 1,
            Outcome::Pass => {
                eligible += 1;
                passed += 1;
            }
            Outcome::Fail(why) => {
                eligible += 1;
                failures.push(format!(
                    "{}: {why}",
                    d.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default()
                ));
            }
        }
    }
    for f in &failures {
        println!("FAIL {f}");
    }
    let rate = passed as f64 / eligible.max(1) as f64;
    println!(
        "ONNX node tests: {passed}/{eligible} eligible cases pass ({:.1}%); {other_types} more cases with supported ops use element types fhec does not read (float8/float4/int4/int2/sequence); {by_design} Resize interpolation cases refused by design; {} cases in total",
        rate * 100.0,
        dirs.len()
    );
    // the counts as they stand (onnx 1.22.0's 1,765 cases): a case lost or gained shows
    // here; every failure is listed above with its one-line reason (training-mode ops,
    // outputs fhec does not compute, run-time pad values, opset 1)
    assert_eq!(
        (passed, eligible),
        (PASSED, ELIGIBLE),
        "the node-test counts changed under {}; update PASSED/ELIGIBLE with the reason",
        root.display()
    );
}
