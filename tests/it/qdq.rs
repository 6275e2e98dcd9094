//! Models that quantize themselves: QDQ graphs (QuantizeLinear / DequantizeLinear, ONNX's
//! semantics; the node tests check the operators), onnxruntime's QOperator graphs (QLinearConv,
//! QGemm, …), Brevitas' QONNX (`Quant`, `Trunc`) and QCDQ exports — every shipped one checked
//! against its framework's own outputs, in float mode and compiled on its own grids — and
//! refusals of grids fhec does not read.

use crate::common::{fhec, model, onnx_model, s, tmp, value_info};
use fhec::{npy, CompileOptions, Model};
use tract_onnx::pb;

fn tensor(name: &str, dtype: i32, dims: &[i64], raw: Vec<u8>) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        data_type: dtype,
        dims: dims.to_vec(),
        raw_data: raw,
        ..Default::default()
    }
}

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// x → QuantizeLinear(scale, zero point of `zp_type`) → DequantizeLinear → y.
fn qdq_model(zp_type: i32, zp_raw: Vec<u8>, scale: &[f32], axis: Option<i64>) -> Vec<u8> {
    let node = |op: &str, ins: &[&str], out: &str| pb::NodeProto {
        op_type: op.into(),
        name: format!("{op}_node"),
        input: ins.iter().map(|s| s.to_string()).collect(),
        output: vec![out.into()],
        attribute: axis
            .map(|a| {
                vec![pb::AttributeProto {
                    name: "axis".into(),
                    r#type: pb::attribute_proto::AttributeType::Int as i32,
                    i: a,
                    ..Default::default()
                }]
            })
            .unwrap_or_default(),
        ..Default::default()
    };
    let n = scale.len() as i64;
    let dims: Vec<i64> = if n == 1 { vec![] } else { vec![n] };
    onnx_model(
        vec![
            node("QuantizeLinear", &["x", "s", "z"], "q"),
            node("DequantizeLinear", &["q", "s", "z"], "y"),
        ],
        vec![
            tensor("s", 1, &dims, f32s(scale)),
            tensor("z", zp_type, &dims, zp_raw),
        ],
        vec![value_info("x", &[2, 3])],
        vec![value_info("y", &[2, 3])],
    )
}

/// A shipped model compiled with `quant` on its calibration set.
fn compile_with(name: &str, quant: fhec::QuantConfig) -> fhec::CompiledModel {
    let calib = npy::read_f32(&model(&format!("{name}_calib.npy"))).expect("calib");
    crate::common::quantize(&model(&format!("{name}.onnx")), &[calib], &quant)
}

/// A shipped model compiled with `quant` on its calibration set, with its TFHE plan exactly
/// as asked (no fallback).
fn compile_exactly(name: &str, quant: fhec::QuantConfig) -> fhec::Result<fhec::CompiledModel> {
    let calib = npy::read_f32(&model(&format!("{name}_calib.npy"))).expect("calib");
    let opts = CompileOptions {
        auto: fhec::AutoOptions::off(),
        quant,
        ..Default::default()
    };
    fhec::compile(&model(&format!("{name}.onnx")), &[calib], &opts)
}

fn run(bytes: &[u8], x: &[f32]) -> Result<Vec<f32>, String> {
    let p = tmp("qdq.onnx");
    std::fs::write(&p, bytes).expect("write");
    let m = Model::load(&p).map_err(|e| e.to_string())?;
    let x = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[2, 3]), x.to_vec()).expect("x");
    let y = m.run_float(&[x]).map_err(|e| e.to_string())?;
    Ok(y[0].iter().copied().collect())
}

#[test]
fn quantize_dequantize_follow_onnx_semantics() {
    // uint8 (zero point 10), scale 0.5: ties round to even, then saturate to [0, 255]
    let x = [1.25, 1.75, -100.0, 200.0, -4.75, 0.0];
    let y = run(&qdq_model(2, vec![10], &[0.5], None), &x).expect("runs");
    // 2.5 → 2, 3.5 → 4; −200 + 10 saturates at 0; 400 + 10 at 255; −9.5 → −10 (even)
    assert_eq!(y, vec![1.0, 2.0, -5.0, 122.5, -5.0, 0.0]);
    // int8, per axis (axis 1, three channels, zero points 0, 1, −1)
    let y = run(
        &qdq_model(3, vec![0, 1, 255], &[1.0, 0.25, 2.0], Some(1)),
        &[0.4, 0.6, 3.0, 1000.0, -1000.0, -256.0],
    )
    .expect("runs");
    assert_eq!(y, vec![0.0, 0.5, 4.0, 127.0, -32.25, -254.0]);
}

#[test]
fn unsupported_grids_are_refused_in_one_line() {
    // float8 (17 = FLOAT8E4M3FN) and int4 (22) zero points: the tensor reader refuses them
    // by name; an int32 grid (6) reaches QuantizeLinear, which names itself
    for (code, name) in [(17, "FLOAT8E4M3FN"), (22, "INT4"), (6, "QuantizeLinear")] {
        let raw = if code == 6 { vec![0; 4] } else { vec![0] };
        let e = run(&qdq_model(code, raw, &[0.5], None), &[0.0; 6]).expect_err("refused");
        assert!(e.contains(name) && e.contains("not supported"), "{e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    }
    // a zero scale
    let e = run(&qdq_model(2, vec![0], &[0.0], None), &[0.0; 6]).expect_err("refused");
    assert!(e.contains("scale must be finite and positive"), "{e}");
    // per-axis scales of the wrong length
    let e = run(&qdq_model(2, vec![0, 0], &[0.5, 0.5], Some(1)), &[0.0; 6]).expect_err("refused");
    assert!(e.contains("per-axis") && e.contains("3 values"), "{e}");
}

/// onnxruntime's QDQ digits MLP compiles on its own grids: the client quantizes inputs on
/// the model's input grid (no table for the input's QDQ pair), activations are requantized
/// to the model's uint8 grids and the weights are its int8 integers; with tables wide enough
/// (rounding 8) clear mode is within one step of the output grid of onnxruntime's own
/// quantized run on 99 % of the logits.
#[test]
fn onnxruntime_qdq_model_compiles_on_its_own_grids() {
    let name = "digits_mlp_qdq";
    let m = compile_with(
        name,
        fhec::QuantConfig {
            rounding_bits: Some(8),
            ..Default::default()
        },
    );
    let p = m.input_quant()[0];
    assert_eq!(
        (p.qmin, p.qmax),
        (0, 255),
        "the model's uint8 input grid: {p:?}"
    );
    // 32 + 32 hidden activations, nothing for the input
    assert_eq!(m.report().pbs_count, 64);
    let x = npy::read_f32(&model(&format!("{name}_test_x.npy"))).expect("x");
    let ort = npy::read_f32(&model(&format!("{name}_test_out.npy"))).expect("onnxruntime out");
    let clear = &m.run_clear(&[x]).expect("clear")[0];
    // the output grid: every onnxruntime logit is a multiple of it
    let step = ort
        .iter()
        .map(|v| v.abs())
        .filter(|&v| v > 0.0)
        .fold(f32::INFINITY, f32::min);
    let within = clear
        .iter()
        .zip(ort.iter())
        .filter(|(a, b)| (*a - *b).abs() <= step * 1.001)
        .count();
    let frac = within as f64 / ort.len() as f64;
    println!("{name}: {frac:.4} of logits within one output step ({step}) of onnxruntime");
    assert!(frac >= 0.98, "{frac}");
}

/// onnxruntime's QDQ digits MLP compiles with calibration like a float model; clear mode
/// keeps onnxruntime's accuracy.
#[test]
fn onnxruntime_qdq_model_compiles() {
    let name = "digits_mlp_qdq";
    let m = compile_with(name, fhec::QuantConfig::default());
    let x = npy::read_f32(&model(&format!("{name}_test_x.npy"))).expect("x");
    let y = npy::read_labels(&model(&format!("{name}_test_y.npy"))).expect("y");
    let float = fhec::accuracy(
        &m.run_float(std::slice::from_ref(&x)).expect("float")[0],
        &y,
    )
    .expect("accuracy");
    let clear = fhec::accuracy(&m.run_clear(&[x]).expect("clear")[0], &y).expect("accuracy");
    println!("{name}: onnxruntime/float {float:.4}, clear {clear:.4}");
    assert!(clear >= float - 0.01, "clear {clear} vs float {float}");
}

/// onnxruntime's int8 models (QDQ and QOperator) have no exact-rounding plan on their own
/// grids — the last bit of an 8-bit × 8-bit accumulator carries more noise than any 64-bit
/// parameter set reads — and the error says what does fix it: `--requantize`. Requantized on
/// fhec's 6-bit grids they get a two-partition exact plan; the input's clip runs at the
/// client, `--mode float` still runs the int8 model, and clear mode stays within a point of
/// it.
#[test]
fn int8_models_requantize_for_exact_rounding() {
    let y = npy::read_labels(&model("digits_mlp_qdq_test_y.npy")).expect("y");
    for name in ["digits_mlp_qdq", "digits_mlp_qop"] {
        let Err(e) = compile_exactly(name, fhec::QuantConfig::default()) else {
            panic!("{name}: an exact plan on its int8 grids")
        };
        let e = e.to_string();
        // it names the layer whose accumulator is read, then the table reading it
        assert!(
            e.contains("bit extraction at `/net/net.")
                && e.contains("Gemm")
                && e.contains(" → ")
                && e.contains("--requantize"),
            "{name}: {e}"
        );
        let rq = compile_exactly(
            name,
            fhec::QuantConfig {
                requantize: true,
                ..Default::default()
            },
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let plan = rq.plan().unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(plan.choice.extract.is_some(), "{name}: two partitions");
        assert!(!rq.program().carries_grids(), "{name}: grids left");
        assert!(
            rq.head().is_some(),
            "{name}: the input's clip is the client's"
        );
        let x = npy::read_f32(&model(&format!("{name}_test_x.npy"))).expect("x");
        let acc = |m: &fhec::CompiledModel, clear: bool| {
            let out = if clear {
                m.run_clear(std::slice::from_ref(&x))
            } else {
                m.run_float(std::slice::from_ref(&x))
            };
            fhec::accuracy(&out.expect("runs")[0], &y).expect("accuracy")
        };
        let (float, float_rq, clear_rq) = (
            acc(&compile_with(name, fhec::QuantConfig::default()), false),
            acc(&rq, false),
            acc(&rq, true),
        );
        println!(
            "{name}: int8 {float:.4}, requantized clear {clear_rq:.4}, {} bootstraps",
            plan.program.pbs_count
        );
        assert_eq!(float, float_rq, "{name}: --mode float is the int8 model");
        assert!(clear_rq >= float - 0.01, "{name}: {clear_rq} vs {float}");
    }
}

/// Brevitas' 3-bit QAT MLP (QONNX) compiles on its own 3-bit grids (inputs, weights, ReLU
/// activations); read whole (no rounding: 9-bit tables, beyond what the default parameters
/// encrypt) clear mode equals Brevitas' own quantized forward to float precision — the integer
/// program is the model's.
#[test]
fn brevitas_qat_model_is_compiled_on_its_grids() {
    let name = "digits_qat3";
    let m = compile_with(
        name,
        fhec::QuantConfig {
            rounding_bits: None,
            max_tlu_bits: 12,
            ..Default::default()
        },
    );
    let p = m.input_quant()[0];
    assert_eq!(
        (p.qmin, p.qmax),
        (-4, 3),
        "the signed 3-bit input grid: {p:?}"
    );
    assert_eq!(
        m.report().pbs_count,
        96,
        "64 + 32 activations, none for the input"
    );
    // 3-bit weights and activations: accumulators of at most 10 bits
    assert!(
        m.report()
            .layers
            .iter()
            .all(|l| l.acc_bits.is_none_or(|b| b <= 10)),
        "{:?}",
        m.report().layers
    );
    let x = npy::read_f32(&model(&format!("{name}_test_x.npy"))).expect("x");
    let want = npy::read_f32(&model(&format!("{name}_test_out.npy"))).expect("Brevitas out");
    let got = &m.run_clear(&[x]).expect("clear")[0];
    let worst = got
        .iter()
        .zip(want.iter())
        .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
        .fold(0f32, f32::max);
    assert!(worst <= 1e-5, "clear differs from Brevitas by {worst}");
}

/// QONNX quantizers fhec does not read are refused in one line.
#[test]
fn unsupported_qonnx_quantizers_are_refused() {
    let quant = |mode: &str, bits: f32| {
        let attr = |name: &str, s: &str| pb::AttributeProto {
            name: name.into(),
            r#type: pb::attribute_proto::AttributeType::String as i32,
            s: s.as_bytes().to_vec(),
            ..Default::default()
        };
        let n = pb::NodeProto {
            op_type: "Quant".into(),
            domain: "qonnx.custom_op.general".into(),
            name: "q".into(),
            input: vec!["x".into(), "s".into(), "z".into(), "b".into()],
            output: vec!["y".into()],
            attribute: vec![attr("rounding_mode", mode)],
            ..Default::default()
        };
        onnx_model(
            vec![n],
            vec![
                tensor("s", 1, &[], f32s(&[0.5])),
                tensor("z", 1, &[], f32s(&[0.0])),
                tensor("b", 1, &[], f32s(&[bits])),
            ],
            vec![value_info("x", &[2, 3])],
            vec![value_info("y", &[2, 3])],
        )
    };
    // the supported form runs: 4-bit signed, scale 0.5
    let y = run(
        &quant("ROUND", 4.0),
        &[0.25, 0.75, 100.0, -100.0, 1.0, -0.3],
    )
    .expect("runs");
    assert_eq!(y, vec![0.0, 1.0, 3.5, -4.0, 1.0, -0.5]);
    for (bytes, needle) in [
        (quant("HALF_UP", 4.0), "rounding_mode HALF_UP"),
        (quant("ROUND", 1.0), "1-bit"),
        (quant("ROUND", 2.5), "2.5-bit"),
    ] {
        let e = run(&bytes, &[0.0; 6]).expect_err("refused");
        assert!(e.contains(needle) && e.contains("`q`"), "{e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    }
}

/// A model that quantizes itself everywhere compiles without calibration data, to the same
/// program; a float model without it is refused in one line naming a value and `--calib`.
#[test]
fn self_quantized_model_compiles_without_calibration() {
    let name = "digits_qat3";
    let quant = fhec::QuantConfig {
        rounding_bits: None,
        max_tlu_bits: 12,
        ..Default::default()
    };
    let opts = CompileOptions {
        auto: fhec::AutoOptions::keep_precision(),
        quant: quant.clone(),
        ..Default::default()
    };
    let m = crate::common::quantize(&model(&format!("{name}.onnx")), &[], &opts.quant);
    let with = compile_with(name, quant);
    let x = npy::read_f32(&model(&format!("{name}_test_x.npy"))).expect("x");
    assert_eq!(m.input_quant(), with.input_quant());
    assert_eq!(
        m.run_clear(std::slice::from_ref(&x)).expect("clear"),
        with.run_clear(&[x]).expect("clear")
    );
    // from the command line too, and a float model is refused
    let out = fhec(&[
        "compile",
        s(&model(&format!("{name}.onnx"))),
        "-o",
        s(&tmp("qat3.fhe")),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = fhec(&["compile", s(&model("iris_mlp.onnx")), "-o", "/dev/null"]);
    crate::common::user_error(&out, &["no quantization grid of its own", "--calib"]);
}

/// Every shipped model that quantizes itself — the manifest names the framework that made it
/// (onnxruntime QDQ and QOperator: an MLP and a per-channel CNN; Brevitas QONNX MLPs at 2, 3
/// and 4 bits, CNNs with `Trunc` at 2, 3 and 4 bits, a QCDQ MLP, a 3-bit MLP with
/// power-of-two scales and 32-bit quantized biases).
fn self_quantized() -> Vec<String> {
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model("manifest.json")).expect("manifest"))
            .expect("json");
    let names: Vec<String> = manifest["models"]
        .as_array()
        .expect("models")
        .iter()
        .filter(|m| m.get("brevitas").is_some() || m.get("onnxruntime").is_some())
        .filter(|m| {
            m.get("float_nodes")
                .and_then(|f| f.as_array())
                .is_none_or(|f| f.is_empty())
        })
        .map(|m| m["name"].as_str().expect("name").to_string())
        .collect();
    assert_eq!(names.len(), 11, "{names:?}");
    names
}

/// For each: float mode reproduces the framework's quantized run to float precision; the
/// model compiles without calibration data; and read whole (no rounding, tables as wide as
/// the accumulators, a clear-mode-only setting) its integer program equals the framework's
/// quantized run on every logit to float precision — the issue asks for one output step —
/// and so predicts the same class on every sample.
#[test]
fn self_quantized_models_match_their_framework() {
    for name in &self_quantized() {
        let x = npy::read_f32(&model(&format!("{name}_test_x.npy"))).expect("x");
        let want = npy::read_f32(&model(&format!("{name}_test_out.npy"))).expect("framework out");
        let m = Model::load(&model(&format!("{name}.onnx"))).expect("loads");
        let float = &m.run_float(std::slice::from_ref(&x)).expect("float")[0];
        let rel = |a: &ndarray::ArrayD<f32>| {
            a.iter()
                .zip(want.iter())
                .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
                .fold(0f32, f32::max)
        };
        assert!(
            rel(float) <= 1e-5,
            "{name}: float differs by {}",
            rel(float)
        );
        let opts = CompileOptions {
            auto: fhec::AutoOptions::keep_precision(),
            quant: fhec::QuantConfig {
                rounding_bits: None,
                max_tlu_bits: 24,
                ..Default::default()
            },
            ..Default::default()
        };
        let c = fhec::quantize_model(
            &Model::load(&model(&format!("{name}.onnx"))).expect("model"),
            &[],
            &opts.quant,
        )
        .unwrap_or_else(|e| panic!("{name} compiles without calibration: {e}"));
        let clear = &c.run_clear(&[x]).expect("clear")[0];
        // the output grid: the smallest gap between distinct framework outputs
        let mut v: Vec<f32> = want.iter().copied().collect();
        v.sort_by(f32::total_cmp);
        let step = v
            .windows(2)
            .map(|w| w[1] - w[0])
            .filter(|&d| d > 1e-6)
            .fold(f32::INFINITY, f32::min);
        // beyond float precision, in output steps
        let worst = clear
            .iter()
            .zip(want.iter())
            .map(|(a, b)| ((a - b).abs() - 1e-5 * b.abs().max(1.0)).max(0.0) / step)
            .fold(0f32, f32::max);
        let argmax = |a: &ndarray::ArrayD<f32>| -> Vec<usize> {
            a.rows()
                .into_iter()
                .map(|r| {
                    r.iter()
                        .enumerate()
                        .max_by(|a, b| a.1.total_cmp(b.1))
                        .map_or(0, |(i, _)| i)
                })
                .collect()
        };
        let same = argmax(clear)
            .iter()
            .zip(argmax(&want))
            .filter(|(a, b)| **a == *b)
            .count() as f64
            / want.shape()[0] as f64;
        println!(
            "{name}: clear within {worst} output step(s) of the framework; same class {same:.4}; {} PBS",
            c.report().pbs_count
        );
        assert!(
            worst == 0.0,
            "{name}: clear differs by {worst} steps of {step}"
        );
        assert!(same == 1.0, "{name}: same class on {same}");
    }
}

/// Power-of-two requantizations fold into rounding: on Brevitas' 3-bit MLP with power-of-two
/// scales and 32-bit biases, each ReLU's requantization is a shift of its layer's accumulator.
/// At `--rounding-bits 8` fhec drops exactly those shifts (2 and 3 bits, bias moved into the
/// accumulator), the report names them, and clear mode equals Brevitas within one output step
/// of the ReLU grids — only ties, which Brevitas rounds to even, may differ — with the same
/// class on nearly every sample; at the default rounding 6 the bias still moves in, and the
/// accuracy is above what rounding the raw accumulator gave (95.00 %).
#[test]
fn power_of_two_shifts_fold_into_rounding() {
    let name = "digits_qat3_po2";
    let x = npy::read_f32(&model(&format!("{name}_test_x.npy"))).expect("x");
    let y = npy::read_labels(&model(&format!("{name}_test_y.npy"))).expect("y");
    let want = npy::read_f32(&model(&format!("{name}_test_out.npy"))).expect("Brevitas out");
    for (r, shifts) in [(8, vec![2, 3]), (6, vec![2, 3])] {
        let opts = CompileOptions {
            auto: fhec::AutoOptions::keep_precision(),
            quant: fhec::QuantConfig {
                rounding_bits: Some(r),
                ..Default::default()
            },
            ..Default::default()
        };
        let c = fhec::compile(&model(&format!("{name}.onnx")), &[], &opts).expect("compiles");
        let got: Vec<u32> = c.report().shifts.iter().map(|s| s.1).collect();
        assert_eq!(got, shifts, "{:?}", c.report().shifts);
        assert!(c.report().shifts.iter().all(|s| s.2), "bias moved in");
        assert!(c
            .report()
            .to_text()
            .contains("power-of-two requantizations folded"));
        let dense: Vec<_> = c
            .report()
            .layers
            .iter()
            .filter(|l| l.op == "IntDense")
            .collect();
        assert_eq!(dense.len(), 3, "report rows stay per layer");
        let clear = &c.run_clear(std::slice::from_ref(&x)).expect("clear")[0];
        let acc = fhec::accuracy(clear, &y).expect("labels");
        let same = (0..y.len())
            .filter(|&i| {
                let am = |a: &ndarray::ArrayD<f32>| {
                    a.index_axis(ndarray::Axis(0), i)
                        .iter()
                        .enumerate()
                        .max_by(|a, b| a.1.total_cmp(b.1))
                        .map(|(k, _)| k)
                };
                am(clear) == am(&want)
            })
            .count();
        println!(
            "rounding {r}: clear accuracy {acc:.4}, same class as Brevitas on {same}/{}",
            y.len()
        );
        assert!(acc > 0.955, "rounding {r}: accuracy {acc}");
        if r == 8 {
            assert!(c
                .report()
                .layers
                .iter()
                .filter(|l| l.op == "IntDense")
                .take(2)
                .all(|l| l.rounded_bits == 2 || l.rounded_bits == 3));
            assert!(same * 100 >= y.len() * 97, "same class on {same}");
        }
    }
}

/// A one-node QONNX model: `op` over `x` (2×3) and scalar constant inputs, with string and
/// int attributes.
fn qonnx_node(op: &str, consts: &[f32], strs: &[(&str, &str)], ints: &[(&str, i64)]) -> Vec<u8> {
    let mut attribute: Vec<pb::AttributeProto> = strs
        .iter()
        .map(|(k, v)| pb::AttributeProto {
            name: k.to_string(),
            r#type: pb::attribute_proto::AttributeType::String as i32,
            s: v.as_bytes().to_vec(),
            ..Default::default()
        })
        .collect();
    attribute.extend(ints.iter().map(|(k, v)| pb::AttributeProto {
        name: k.to_string(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i: *v,
        ..Default::default()
    }));
    let names: Vec<String> = (0..consts.len()).map(|i| format!("c{i}")).collect();
    let mut input = vec!["x".to_string()];
    input.extend(names.iter().cloned());
    let n = pb::NodeProto {
        op_type: op.into(),
        domain: "qonnx.custom_op.general".into(),
        name: "q".into(),
        input,
        output: vec!["y".into()],
        attribute,
        ..Default::default()
    };
    onnx_model(
        vec![n],
        names
            .iter()
            .zip(consts)
            .map(|(n, v)| tensor(n, 1, &[], f32s(&[*v])))
            .collect(),
        vec![value_info("x", &[2, 3])],
        vec![value_info("y", &[2, 3])],
    )
}

/// QONNX's `Trunc` (versions 1 and 2, FLOOR / ROUND / CEIL) and `BipolarQuant` in float mode
/// equal qonnx's own `trunc_v2`, `trunc_v1` and `binary_quant` on the same inputs (values
/// computed with qonnx 0.4 and pasted here).
#[test]
fn qonnx_trunc_and_bipolar_quant_follow_qonnx() {
    let x = [3.0, 3.9, 70.0, -1.0, 0.3, 2.124];
    // v2: scale 0.25, zero point 0, 8 → 4 unsigned bits at output scale 1
    let y = run(
        &qonnx_node(
            "Trunc",
            &[0.25, 0.0, 8.0, 1.0, 4.0],
            &[("rounding_mode", "FLOOR")],
            &[("signed", 0)],
        ),
        &x,
    )
    .expect("runs");
    assert_eq!(y, vec![3.0, 4.0, 15.0, 0.0, 0.0, 2.0]);
    // v2, signed 3-bit output, ROUND
    let y = run(
        &qonnx_node(
            "Trunc",
            &[0.25, 0.0, 8.0, 1.0, 3.0],
            &[("rounding_mode", "ROUND")],
            &[("signed", 1)],
        ),
        &x,
    )
    .expect("runs");
    assert_eq!(y, vec![3.0, 3.0, 3.0, -1.0, 0.0, 2.0]);
    // v1: 8 → 6 bits, CEIL, rescaled by the input scale
    let y = run(
        &qonnx_node(
            "Trunc",
            &[0.25, 0.0, 8.0, 6.0],
            &[("rounding_mode", "CEIL")],
            &[],
        ),
        &x,
    )
    .expect("runs");
    assert_eq!(y, vec![0.75, 1.0, 17.5, -0.25, 0.25, 0.5]);
    // BipolarQuant: x ≥ 0 (−0 included) → +s, else −s
    let y = run(
        &qonnx_node("BipolarQuant", &[0.5], &[], &[]),
        &[-1.5, -0.0, 0.0, 1e-30, -1e-30, 2.0],
    )
    .expect("runs");
    assert_eq!(y, vec![-0.5, 0.5, 0.5, 0.5, -0.5, 0.5]);
    // a rounding mode qonnx has and fhec does not evaluate is refused in one line
    let e = run(
        &qonnx_node(
            "Trunc",
            &[0.25, 0.0, 8.0, 1.0, 4.0],
            &[("rounding_mode", "HALF_DOWN")],
            &[],
        ),
        &x,
    )
    .expect_err("refused");
    assert!(e.contains("HALF_DOWN") && e.contains("`q`"), "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");
}

/// onnxruntime's `com.microsoft` QOperator ops, chained in one graph (`tests/data/ms_qop.onnx`,
/// made by `tests/data/make_ms_qop.py`), against onnxruntime's codes after every op: the
/// table-like ops (LeakyRelu, Sigmoid) and Add are equal; Mul and the poolings are within one
/// code (1 %, 20 % and 3 % of codes differ: onnxruntime's kernels requantize in their own
/// fixed-point arithmetic, which rounds some ties up where ONNX's QuantizeLinear, fhec's
/// definition, rounds to even); Concat and QGemm inherit those differences.
#[test]
fn onnxruntime_contrib_qoperator_ops_follow_onnxruntime() {
    let data = crate::common::repo().join("tests/data");
    let read = |n: &str| npy::read_f32(&data.join(format!("ms_qop_{n}.npy"))).expect("npy");
    let m = Model::load(&data.join("ms_qop.onnx")).expect("loads");
    let outs = m.run_float(&[read("x")]).expect("float");
    let names = ["y", "a", "b", "cc", "d", "p", "g", "cat", "qy"];
    assert_eq!(outs.len(), names.len());
    for (name, got) in names.iter().zip(&outs) {
        let want = read(name);
        assert_eq!(got.shape(), want.shape(), "{name}");
        let diffs: Vec<f32> = got
            .iter()
            .zip(want.iter())
            .map(|(a, b)| (a - b).abs())
            .collect();
        let worst = diffs.iter().copied().fold(0f32, f32::max);
        let equal = diffs.iter().filter(|&&d| d == 0.0).count() as f64 / diffs.len() as f64;
        println!("{name}: {equal:.3} equal, worst {worst}");
        let bound = match *name {
            "a" | "b" | "cc" => 0.0,
            "d" | "p" | "g" | "cat" => 1.0,
            // QGemm over codes that differ by one: a few output codes (scale 0.05)
            "qy" => 3.0,
            _ => 3.0 * 0.05 * 1.001,
        };
        assert!(worst <= bound, "{name}: worst {worst} > {bound}");
    }
}

/// Brevitas' 2-bit QAT MLP on real ciphertexts, compiled without calibration data on its own
/// grids (exact rounding to 4 bits): two test digits decrypt to exactly the integer program's
/// values, and to the class clear mode predicts.
#[test]
fn encrypted_qat_model_equals_clear_bit_for_bit() {
    let name = "digits_qat2";
    let opts = CompileOptions {
        auto: fhec::AutoOptions::keep_precision(),
        quant: fhec::QuantConfig {
            rounding_bits: Some(4),
            ..Default::default()
        },
        ..Default::default()
    };
    let m = fhec::compile(&model(&format!("{name}.onnx")), &[], &opts).expect("compiles");
    let session = fhec::Session::new(&m).expect("parameters and keys");
    let p = &session.plan().program;
    println!(
        "{name}: {} table lookups, {} bootstraps, table bits {}, params {:?}, p_error {:.2e}",
        p.tlu_count,
        p.pbs_count,
        p.tlu_bits,
        session.plan().choice.params,
        session.plan().choice.p_error
    );
    let x = npy::read_f32(&model(&format!("{name}_test_x.npy"))).expect("x");
    let x = x
        .slice_axis(ndarray::Axis(0), ndarray::Slice::from(0..2))
        .to_owned();
    let clear = &m.run_clear(std::slice::from_ref(&x)).expect("clear")[0];
    for (i, sample) in fhec::model::split_batch(m.float_graph(), &[x])
        .expect("batch")
        .into_iter()
        .enumerate()
    {
        let q = fhec::ir::quantize_sample(&sample, m.input_quant());
        let want = m.boundary_clear(p, &q).expect("clear");
        let (got, t) = session.run_sample(&q, None).expect("encrypted run");
        println!("sample {i}: evaluated in {:.2?}", t.evaluate);
        assert_eq!(
            got, want,
            "sample {i}: encrypted differs from the integer program"
        );
        let outs = m.client_tail(p, &got).expect("tail");
        let dec: Vec<f32> = outs[0].to_f32().iter().copied().collect();
        let row: Vec<f32> = clear
            .index_axis(ndarray::Axis(0), i)
            .iter()
            .copied()
            .collect();
        assert_eq!(
            dec, row,
            "sample {i}: decrypted logits differ from clear mode"
        );
    }
}

/// A mixed graph (onnxruntime's QDQ with the last two Gemms left in float): without
/// calibration data it is refused in one line naming the first value without a grid; with it,
/// the quantized layer keeps the model's grids (the client quantizes on its uint8 input grid)
/// and the float part is quantized from calibration, within one point of onnxruntime.
#[test]
fn mixed_graph_takes_calibration_for_its_float_part() {
    let name = "digits_mlp_mixed";
    let out = fhec(&[
        "compile",
        s(&model(&format!("{name}.onnx"))),
        "-o",
        "/dev/null",
    ]);
    crate::common::user_error(
        &out,
        &["`/net/net.3/Relu`", "no quantization grid", "--calib"],
    );
    let m = compile_with(name, fhec::QuantConfig::default());
    let p = m.input_quant()[0];
    assert_eq!((p.qmin, p.qmax), (0, 255), "the model's input grid: {p:?}");
    let x = npy::read_f32(&model(&format!("{name}_test_x.npy"))).expect("x");
    let y = npy::read_labels(&model(&format!("{name}_test_y.npy"))).expect("y");
    let ort = npy::read_f32(&model(&format!("{name}_test_out.npy"))).expect("onnxruntime out");
    let ort = fhec::accuracy(&ort, &y).expect("accuracy");
    let clear = fhec::accuracy(&m.run_clear(&[x]).expect("clear")[0], &y).expect("accuracy");
    println!("{name}: onnxruntime {ort:.4}, clear {clear:.4}");
    assert!(clear >= ort - 0.01, "clear {clear} vs onnxruntime {ort}");
}

/// QOperator forms fhec does not compile are refused in one line naming the node and the
/// fix: a QGemm with alpha ≠ 1, channels-last QLinear pooling, a QLinearConcat without whole
/// (tensor, scale, zero point) triples; and a BipolarQuant with a zero scale.
#[test]
fn unsupported_qoperator_forms_are_refused_in_one_line() {
    let node = |op: &str, domain: &str, ins: &[&str], attr: Option<(&str, pb::AttributeProto)>| {
        pb::NodeProto {
            op_type: op.into(),
            domain: domain.into(),
            name: "q".into(),
            input: ins.iter().map(|s| s.to_string()).collect(),
            output: vec!["y".into()],
            attribute: attr
                .map(|(name, mut a)| {
                    a.name = name.into();
                    vec![a]
                })
                .unwrap_or_default(),
            ..Default::default()
        }
    };
    let float = |v: f32| pb::AttributeProto {
        r#type: pb::attribute_proto::AttributeType::Float as i32,
        f: v,
        ..Default::default()
    };
    let int = |v: i64| pb::AttributeProto {
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i: v,
        ..Default::default()
    };
    let ms = "com.microsoft";
    let cases = [
        (
            node(
                "QGemm",
                ms,
                &["x", "s", "s", "x", "s", "s"],
                Some(("alpha", float(2.0))),
            ),
            "alpha",
        ),
        (
            node(
                "QLinearAveragePool",
                ms,
                &["x", "s", "s", "s", "s"],
                Some(("channels_last", int(1))),
            ),
            "channels_last",
        ),
        (
            node("QLinearConcat", ms, &["s", "s", "x", "s"], None),
            "triple",
        ),
        (
            node("BipolarQuant", "qonnx.custom_op.general", &["x", "z"], None),
            "scale must be finite and positive",
        ),
    ];
    for (n, needle) in cases {
        let bytes = onnx_model(
            vec![n],
            vec![
                tensor("s", 1, &[], f32s(&[0.5])),
                tensor("z", 1, &[], f32s(&[0.0])),
            ],
            vec![value_info("x", &[2, 3])],
            vec![value_info("y", &[2, 3])],
        );
        let e = run(&bytes, &[0.0; 6]).expect_err("refused");
        assert!(e.contains(needle) && e.contains("`q`"), "{e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    }
}

/// The test models the qonnx package ships (qonnx 1.0.0, `qonnx/data/onnx/`, copied to
/// `tests/data/qonnx/`; references from qonnx's own executor, `tests/data/make_qonnx_refs.py`):
/// float mode equals qonnx's execution, each model compiles (calibrated on its reference
/// input) and runs in clear mode; the FP8 `FloatQuant` model is refused in one line naming
/// both nodes and the form.
#[test]
fn qonnx_package_test_models() {
    let dir = crate::common::repo().join("tests/data/qonnx");
    let load = |f: &str| npy::read_f32(&dir.join(f)).expect(f);
    for (name, n_inputs) in [
        ("mnist_conv", 1),
        ("residual_block_clean", 1),
        ("sdp", 3),
        ("eltwise_chanlast_testcase", 0),
    ] {
        let path = dir.join(format!("{name}.onnx"));
        let m = Model::load(&path).expect(name);
        let inputs: Vec<ndarray::ArrayD<f32>> = if n_inputs == 0 {
            // a UINT8-annotated input: element i is (i·7919) mod 256, as the script made it
            let shape: Vec<usize> = m.graph.g[m.graph.inputs[0].node].ty.shape.clone();
            let n: usize = shape.iter().product();
            ndarray::ArrayD::from_shape_vec(
                ndarray::IxDyn(&shape),
                (0..n).map(|i| ((i * 7919) % 256) as f32).collect(),
            )
            .map(|x| vec![x])
            .expect("input")
        } else {
            (0..n_inputs)
                .map(|k| load(&format!("{name}_in{k}.npy")))
                .collect()
        };
        let want = load(&format!("{name}_out0.npy"));
        let c = fhec::compile_model(
            &m,
            &inputs,
            &CompileOptions {
                auto: fhec::AutoOptions::keep_precision(),
                ..Default::default()
            },
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let got = c.run_float(&inputs).expect("float")[0].clone();
        same_as_qonnx(name, got.iter().copied(), &want);
        let clear = c.run_clear(&inputs).expect("clear")[0].clone();
        assert!(clear.iter().all(|v| v.is_finite()), "{name}: clear mode");
    }
    // ESPCN super-resolution nets (QONNX, 3×128×128 → 3×256×256): one with DepthToSpace,
    // one with a nearest Resize; imported and run in float mode against qonnx (compiling
    // them is out of CI's budget: ~1 G multiply-adds per image)
    for name in ["espcn_subpixel_quant", "espcn_nn_resize_quant"] {
        let m = Model::load(&dir.join(format!("{name}.onnx"))).expect(name);
        let x = load(&format!("{name}_in0.npy"));
        let want = load(&format!("{name}_out0.npy"));
        let got = fhec::ir::eval_f32(&m.graph, &[fhec::ir::Tensor::F32(x)]).expect("float")[0]
            .f32_values();
        same_as_qonnx(name, got.into_iter(), &want);
    }
    let Err(e) = Model::load(&dir.join("qonnx_act_weight_fp8.onnx")) else {
        panic!("the FP8 model should be refused");
    };
    let e = e.to_string();
    assert!(
        e.contains("FloatQuant") && e.contains("minifloat") && e.lines().count() == 1,
        "{e}"
    );
}

/// `got`'s first values (qonnx's reference may be a prefix) equal `want` within 1e-4 of its
/// largest magnitude.
fn same_as_qonnx(name: &str, got: impl Iterator<Item = f32>, want: &ndarray::ArrayD<f32>) {
    let scale = want.iter().fold(0f32, |a, v| a.max(v.abs())).max(1e-6);
    let worst = got
        .zip(want.iter())
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    println!("{name}: float vs qonnx max |Δ| {worst:.2e} (max |y| {scale:.2e})");
    assert!(worst <= 1e-4 * scale, "{name}: {worst} vs {scale}");
}

/// A default compile of an int8 model writes a model that runs encrypted: exact rounding has
/// no plan on its 8-bit grids, so compile takes the cheapest plan that exists and says which;
/// the saved model makes keys, and an encrypted sample through the client and the server
/// predicts clear mode's class.
#[test]
fn int8_default_compile_runs_encrypted() {
    let name = "digits_mlp_qdq";
    let calib = npy::read_f32(&model(&format!("{name}_calib.npy"))).expect("calib");
    let m = fhec::compile(
        &model(&format!("{name}.onnx")),
        &[calib],
        &CompileOptions::default(),
    )
    .expect("the default compiles");
    let auto = &m.report().auto;
    assert!(
        auto.iter()
            .any(|l| l.contains("no exact plan exists") && l.contains("cheapest plan that does")),
        "{auto:?}"
    );
    let p = tmp("int8_default.fhe");
    m.save(&p).expect("save");
    let m = fhec::CompiledModel::load(&p).expect("load");
    let x = npy::read_f32(&model(&format!("{name}_test_x.npy"))).expect("x");
    let x = x
        .slice_axis(ndarray::Axis(0), ndarray::Slice::from(0..1))
        .to_owned();
    let (client, keys) = fhec::Client::keygen(&m).expect("keys");
    let server = fhec::Server::new(&m, &keys).expect("server");
    let out = server
        .run(&client.encrypt(std::slice::from_ref(&x)).expect("encrypt"))
        .expect("run");
    let y = client.decrypt(&out).expect("decrypt");
    let clear = m.run_clear(&[x]).expect("clear");
    assert_eq!(fhec::argmax(y[0].iter()), fhec::argmax(clear[0].iter()));
}
