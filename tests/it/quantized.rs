//! The integer program: accuracy of clear mode, passes that must not change `eval_int`, the
//! soundness of the interval analysis, and refusals.

use crate::common::model;
use fhec::ir::{eval_all, eval_int, Graph, Tensor};
use fhec::passes::{self, bitwidth, Pass, PassContext, QuantConfig, Stage};
use fhec::{npy, CompileOptions, Model};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};

/// Inputs or outputs of several runs.
type Samples = Vec<Vec<Tensor>>;

fn manifest() -> Vec<(String, f64)> {
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model("manifest.json")).expect("manifest"))
            .expect("json");
    m["models"]
        .as_array()
        .expect("models")
        .iter()
        // float classifiers (regression models are scored by R², below; models that quantize
        // themselves are checked against their framework in `qdq::`)
        .filter(|e| e.get("brevitas").is_none() && e.get("onnxruntime").is_none())
        .filter_map(|e| {
            Some((
                e["name"].as_str().expect("name").to_string(),
                e["float_accuracy"].as_f64()?,
            ))
        })
        .collect()
}

fn calib(name: &str) -> ndarray::ArrayD<f32> {
    npy::read_f32(&model(&format!("{name}_calib.npy"))).expect("calibration data")
}

/// The digits MLP compiled with `cfg` on its calibration set.
fn compile_mlp(cfg: QuantConfig) -> fhec::CompiledModel {
    let opts = CompileOptions {
        auto: fhec::AutoOptions::keep_precision(),
        quant: cfg,
        ..Default::default()
    };
    fhec::compile(&model("digits_mlp.onnx"), &[calib("digits_mlp")], &opts).expect("compiles")
}

#[test]
fn clear_accuracy_is_within_one_point_of_float_at_6_bits_rounding_6() {
    // digits_attention is the model that falls short at a fixed 6 bits (issue 25's attention
    // net): `compile_raises_precision_until_clear_agrees_with_float` covers it
    for (name, float_acc) in manifest()
        .into_iter()
        .filter(|(n, _)| n != "digits_attention")
    {
        let opts = CompileOptions {
            auto: fhec::AutoOptions::keep_precision(),
            quant: QuantConfig::with_n_bits(6),
            ..Default::default()
        };
        assert_eq!(opts.quant.rounding_bits, Some(6));
        let m = crate::common::quantize(
            &model(&format!("{name}.onnx")),
            &[calib(&name)],
            &opts.quant,
        );
        let x = npy::read_f32(&model(&format!("{name}_test_x.npy"))).expect("x");
        let y = npy::read_labels(&model(&format!("{name}_test_y.npy"))).expect("y");
        let acc = fhec::accuracy(&m.run_clear(&[x]).expect("runs")[0], &y).expect("accuracy");
        println!(
            "{name}: float {:.2}%, clear {:.2}%, {} PBS, widest table {} bits",
            float_acc * 100.0,
            acc * 100.0,
            m.report().pbs_count,
            m.report().max_tlu_bits
        );
        // one point, or one sample on small test sets (iris: 45 samples); the transformer-style
        // models are held to issue 12's bar (two points; README "Transformer-style blocks")
        let tol = match name.as_str() {
            "digits_lngelu" | "digits_transformer" => 0.02,
            _ => 0.01f64.max(1.0 / y.len() as f64 + 1e-9),
        };
        assert!(
            acc >= float_acc - tol,
            "{name}: clear {acc} vs float {float_acc}"
        );
        assert!(
            m.report().max_tlu_bits <= 6,
            "{name}: a table input wider than the rounding"
        );
    }
}

/// A decrypted layer (the last: no table reads it) gets `n_bits_weights + 4` bits as two
/// limbs: the top one is the 6-bit layer of `--n-bits-decrypted 6`, so the tables, the
/// decrypted widths and the parameters do not change, and the logits move towards float.
#[test]
fn decrypted_layer_limbs_cost_nothing_and_track_float() {
    let x = npy::read_f32(&model("digits_mlp_test_x.npy")).expect("x");
    let float = npy::read_f32(&model("digits_mlp_test_out.npy")).expect("float logits");
    let run = |dec: Option<u32>| {
        let m = compile_mlp(QuantConfig {
            n_bits_decrypted: dec,
            ..QuantConfig::with_n_bits(6)
        });
        let y = m
            .run_clear(std::slice::from_ref(&x))
            .expect("runs")
            .remove(0);
        let f: Vec<f32> = float.iter().copied().collect();
        let mean = f.iter().sum::<f32>() / f.len() as f32;
        let var = f.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / f.len() as f32;
        let mse = y.iter().zip(&f).map(|(a, b)| (a - b).powi(2)).sum::<f32>() / f.len() as f32;
        let plan = m.plan().expect("a plan");
        let est = plan.choice.est_ms;
        ((mse / var).sqrt(), m, est)
    };
    let (err6, m6, est6) = run(Some(6));
    let (err, m, est) = run(None);
    println!("logits' relative RMS error vs float: 6-bit head {err6:.4}, 10-bit in limbs {err:.4}");
    assert!(err < 0.95 * err6, "{err} vs {err6}");
    assert_eq!(m.report().pbs_count, m6.report().pbs_count);
    assert_eq!(est, est6, "the same parameters and program cost");
    let last = "/net/net.4/Gemm";
    let rows: Vec<_> = m
        .report()
        .layers
        .iter()
        .filter(|r| r.layer.starts_with(last))
        .collect();
    assert_eq!(rows.len(), 2, "two limbs");
    assert!(rows.iter().all(|r| r.precision.map(|p| p.0) == Some(10)));
    // the top limb decrypts as wide as the 6-bit layer; the low one is narrower
    let width =
        |rep: &fhec::CompileReport, n: &str| rep.outputs.iter().find(|(o, _)| o == n).map(|o| o.1);
    assert_eq!(width(m.report(), last), width(m6.report(), last));
    assert!(width(m.report(), &format!("{last}:limb0")) <= width(m6.report(), last));
    // out of range through the library (the CLI refuses it before): a config error
    let bad = fhec::compile(
        &model("digits_mlp.onnx"),
        &[calib("digits_mlp")],
        &CompileOptions {
            auto: fhec::AutoOptions::keep_precision(),
            quant: QuantConfig {
                n_bits_decrypted: Some(40),
                ..QuantConfig::with_n_bits(6)
            },
            ..Default::default()
        },
    );
    let e = match bad {
        Err(e) => e.to_string(),
        Ok(_) => panic!("n_bits_decrypted 40 compiled"),
    };
    assert!(e.contains("n_bits_decrypted 40 is outside [2, 16]"), "{e}");
}

/// Runs the standard pipeline one pass at a time, handing each intermediate graph to `check`.
fn stepwise(name: &str, cfg: QuantConfig, mut check: impl FnMut(&str, &Graph, &PassContext)) {
    let m = Model::load(&model(&format!("{name}.onnx"))).expect("imports");
    let samples: Vec<Vec<Tensor>> = calib(name)
        .outer_iter()
        .take(40)
        .map(|row| vec![Tensor::F32(row.to_owned().insert_axis(ndarray::Axis(0)))])
        .collect();
    let mut g = m.graph.clone();
    let mut cx = PassContext::new(cfg, samples);
    for p in passes::Pipeline::standard().passes {
        p.run(&mut g, &mut cx)
            .unwrap_or_else(|e| panic!("{name}: {}: {e}", p.name()));
        g.verify().expect("verifies");
        cx.stage = Some(p.produces());
        check(p.name(), &g, &cx);
    }
}

fn random_inputs(g: &Graph, cx: &PassContext, seed: u64, n: usize) -> Vec<Vec<Tensor>> {
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        proptest::test_runner::TestRng::from_seed(proptest::test_runner::RngAlgorithm::ChaCha, &{
            let mut s = [0u8; 32];
            s[..8].copy_from_slice(&seed.to_le_bytes());
            s
        }),
    );
    (0..n)
        .map(|_| {
            g.inputs
                .iter()
                .zip(&cx.quant.input_quant)
                .map(|(gi, p)| {
                    let shape = g.g[gi.node].ty.shape.clone();
                    let len: usize = shape.iter().product();
                    let v = proptest::collection::vec(p.qmin..=p.qmax, len)
                        .new_tree(&mut runner)
                        .expect("strategy")
                        .current();
                    Tensor::I64(
                        ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&shape), v).expect("shape"),
                    )
                })
                .collect()
        })
        .collect()
}

#[test]
fn fusion_does_not_change_eval_int_and_intervals_hold_on_random_inputs() {
    for name in [
        "digits_mlp",
        "digits_cnn",
        "digits_resnet",
        "digits_gated",
        "digits_poly",
        "digits_lngelu",
        "digits_transformer",
        "digits_autoenc",
    ] {
        let mut before_fuse: Option<(Samples, Samples)> = None;
        let mut checked_bounds = false;
        stepwise(name, QuantConfig::with_n_bits(6), |pass, g, cx| {
            if pass == "quantize" {
                // the extremes of the input range plus random codes
                let mut ins = random_inputs(g, cx, 7, 12);
                ins.extend(bitwidth::quantized_calib(cx).into_iter().take(8));
                let outs = ins.iter().map(|x| eval_int(g, x).expect("runs")).collect();
                before_fuse = Some((ins, outs));
            }
            if pass == "fuse_tlu" {
                let (ins, outs) = before_fuse.take().expect("quantize ran");
                for (x, want) in ins.iter().zip(&outs) {
                    assert_eq!(
                        &eval_int(g, x).expect("runs"),
                        want,
                        "{name}: fusion changed eval_int"
                    );
                }
            }
            if pass == "bitwidth"
                && cx.stage == Some(Stage::Fused)
                && g.g.node_weights().any(|n| n.op.name() == "Round")
            {
                for x in random_inputs(g, cx, 11, 16) {
                    for (n, v) in eval_all(g, &x).expect("runs") {
                        let (Tensor::I64(a), Some(b)) = (v, cx.analysis.bounds.get(&n)) else {
                            continue;
                        };
                        for (i, &q) in a.iter().enumerate() {
                            assert!(
                                b.at(i).contains(q),
                                "{name}: `{}` element {i} = {q} outside {:?}",
                                g.g[n].name,
                                b.at(i)
                            );
                        }
                    }
                }
                checked_bounds = true;
            }
        });
        assert!(
            checked_bounds,
            "{name}: the final bitwidth pass did not run"
        );
    }
}

#[test]
fn rounding_to_enough_bits_changes_nothing() {
    let run = |rounding| {
        let cfg = QuantConfig {
            rounding_bits: rounding,
            max_tlu_bits: 16,
            ..QuantConfig::with_n_bits(6)
        };
        let m = crate::common::quantize(&model("digits_mlp.onnx"), &[calib("digits_mlp")], &cfg);
        let x = npy::read_f32(&model("digits_mlp_test_x.npy")).expect("x");
        m.run_clear(&[x]).expect("runs")
    };
    assert_eq!(run(None), run(Some(16)));
}

/// A 3×3 convolution, stride 1, padded to keep its input's size.
fn same_3x3() -> fhec::ir::ConvAttrs {
    fhec::ir::ConvAttrs {
        kernel: vec![3, 3],
        strides: vec![1, 1],
        pads_begin: vec![1, 1],
        pads_end: vec![1, 1],
        dilations: vec![1, 1],
        group: 1,
    }
}

#[test]
fn canonicalize_folds_batch_norm_into_conv() {
    use fhec::ir::{Op, TensorType};
    use ndarray::{ArrayD, IxDyn};
    let mut g = Graph::new();
    let x = g.add_input("x", TensorType::f32(vec![1, 2, 5, 5]), true);
    let w = g.add_const(
        "w",
        Tensor::F32(ArrayD::from_shape_fn(IxDyn(&[3, 2, 3, 3]), |i| {
            (i[0] + 2 * i[1] + i[2]) as f32 * 0.1 - 0.4
        })),
    );
    let b = g.add_const(
        "b",
        Tensor::F32(ArrayD::from_shape_vec(IxDyn(&[3]), vec![0.1, -0.2, 0.3]).expect("b")),
    );
    let attrs = same_3x3();
    let conv = g.add_op("conv", Op::Conv(attrs), &[x, w, b]).expect("conv");
    let p = |v: [f32; 3], n: &str| g_const(n, v);
    fn g_const(n: &str, v: [f32; 3]) -> (String, Tensor) {
        (
            n.to_string(),
            Tensor::F32(ArrayD::from_shape_vec(IxDyn(&[3]), v.to_vec()).expect("p")),
        )
    }
    let params: Vec<_> = [
        p([1.5, 0.5, 2.0], "g"),
        p([0.1, 0.0, -0.1], "beta"),
        p([0.2, -0.3, 0.0], "mean"),
        p([1.0, 4.0, 0.25], "var"),
    ]
    .into_iter()
    .map(|(n, t)| g.add_const(&n, t))
    .collect();
    let bn = g
        .add_op(
            "bn",
            Op::BatchNorm { epsilon: 1e-5 },
            &[conv, params[0], params[1], params[2], params[3]],
        )
        .expect("bn");
    g.add_output("y", bn);
    let input = vec![Tensor::F32(ArrayD::from_shape_fn(
        IxDyn(&[1, 2, 5, 5]),
        |i| ((i[1] * 25 + i[2] * 5 + i[3]) as f32).sin(),
    ))];
    let want = fhec::ir::eval_f32(&g, &input).expect("runs");
    let mut cx = PassContext::default();
    passes::canonicalize::Canonicalize
        .run(&mut g, &mut cx)
        .expect("runs");
    g.verify().expect("verifies");
    assert!(!g.dump().contains("BatchNormalization"), "{}", g.dump());
    let got = fhec::ir::eval_f32(&g, &input).expect("runs");
    let err = crate::common::rel_err(&got[0].f32_values(), &want[0].f32_values());
    assert!(err < 1e-5, "rel. error {err}");
}

/// A residual `x + Conv(x)` (stride 1, same padding, C → C) becomes one Conv whose kernel
/// holds the identity at its centre tap — the same function, no Add left — while a Conv that
/// changes the channel count keeps its Add; on digits_resnet the skip branch's
/// requantization tables disappear (1,824 → 1,056 lookups) at the float model's accuracy.
#[test]
fn canonicalize_folds_a_residual_skip_into_its_conv() {
    use fhec::ir::{Binary, Op, TensorType};
    use ndarray::{ArrayD, IxDyn};
    for (c_out, folds) in [(2, true), (3, false)] {
        let mut g = Graph::new();
        let x = g.add_input("x", TensorType::f32(vec![1, 2, 5, 5]), true);
        let w = g.add_const(
            "w",
            Tensor::F32(ArrayD::from_shape_fn(IxDyn(&[c_out, 2, 3, 3]), |i| {
                (i[0] + 2 * i[1] + i[2] * i[3]) as f32 * 0.07 - 0.3
            })),
        );
        let attrs = same_3x3();
        let conv = g.add_op("conv", Op::Conv(attrs), &[x, w]).expect("conv");
        // a 2 → 3 Conv does not add to x; broadcast it against a 3-channel input instead
        let skip = if folds {
            x
        } else {
            g.add_input("e", TensorType::f32(vec![1, 3, 5, 5]), true)
        };
        let add = g
            .add_op("add", Op::Binary(Binary::Add), &[conv, skip])
            .expect("add");
        g.add_output("y", add);
        let mut input = vec![Tensor::F32(ArrayD::from_shape_fn(
            IxDyn(&[1, 2, 5, 5]),
            |i| ((i[1] * 25 + i[2] * 5 + i[3]) as f32).cos(),
        ))];
        if !folds {
            input.push(Tensor::F32(ArrayD::ones(IxDyn(&[1, 3, 5, 5]))));
        }
        let want = fhec::ir::eval_f32(&g, &input).expect("runs");
        let mut cx = PassContext::default();
        passes::canonicalize::Canonicalize
            .run(&mut g, &mut cx)
            .expect("runs");
        g.verify().expect("verifies");
        let adds =
            g.g.node_weights()
                .filter(|n| n.op == Op::Binary(Binary::Add))
                .count();
        assert_eq!(adds, usize::from(!folds), "{}", g.dump());
        let got = fhec::ir::eval_f32(&g, &input).expect("runs");
        let err = crate::common::rel_err(&got[0].f32_values(), &want[0].f32_values());
        assert!(err < 1e-5, "rel. error {err}");
    }
    let calib = npy::read_f32(&model("digits_resnet_calib.npy")).expect("calib");
    let m = fhec::compile(
        &model("digits_resnet.onnx"),
        &[calib],
        &fhec::CompileOptions {
            auto: fhec::AutoOptions::keep_precision(),
            ..Default::default()
        },
    )
    .expect("compiles");
    assert_eq!(m.report().pbs_count, 1056, "{}", m.report().to_text());
    let x = npy::read_f32(&model("digits_resnet_test_x.npy")).expect("x");
    let y = npy::read_labels(&model("digits_resnet_test_y.npy")).expect("y");
    let acc = fhec::accuracy(&m.run_clear(&[x]).expect("runs")[0], &y).expect("acc");
    assert!(acc >= 0.97, "digits_resnet clear accuracy {acc}");
}

#[test]
fn pruning_meets_the_accumulator_budget() {
    let cfg = QuantConfig {
        rounding_bits: None,
        n_accum_bits: Some(8),
        ..QuantConfig::with_n_bits(3)
    };
    let m = compile_mlp(cfg);
    let zeroed: usize = m.report().pruned.iter().map(|(_, z)| z).sum();
    assert!(zeroed > 0, "nothing pruned: {:?}", m.report().pruned);
    assert!(m.report().max_tlu_bits <= 8);
    let x = npy::read_f32(&model("digits_mlp_test_x.npy")).expect("x");
    let y = npy::read_labels(&model("digits_mlp_test_y.npy")).expect("y");
    let acc = fhec::accuracy(&m.run_clear(&[x]).expect("runs")[0], &y).expect("acc");
    println!("3-bit digits MLP pruned to 8-bit accumulators: {zeroed} weights zeroed, clear accuracy {:.2}%", acc * 100.0);
    assert!(acc > 0.8, "accuracy collapsed: {acc}");
}

#[test]
fn artifact_round_trips() {
    let m = fhec::compile(
        &model("digits_cnn.onnx"),
        &[calib("digits_cnn")],
        &CompileOptions {
            auto: fhec::AutoOptions::keep_precision(),
            ..Default::default()
        },
    )
    .expect("compiles");
    let p = std::env::temp_dir().join(format!("fhec-rt-{}.fhe", std::process::id()));
    m.save(&p).expect("saves");
    let back = fhec::CompiledModel::load(&p).expect("loads");
    let x = npy::read_f32(&model("digits_cnn_test_x.npy")).expect("x");
    assert_eq!(
        m.run_clear(std::slice::from_ref(&x)).expect("runs"),
        back.run_clear(&[x]).expect("runs")
    );
    assert_eq!(m.report(), back.report());
}

proptest! {
    #![proptest_config(Config { cases: 24, ..Config::default() })]
    /// Random calibration subsets still give a sound analysis and a fusion-invariant program.
    #[test]
    fn compile_is_sound_for_any_calibration_subset(start in 0usize..150, len in 5usize..40) {
        let c = calib("digits_mlp");
        let sub = c.slice_axis(ndarray::Axis(0), ndarray::Slice::from(start..start + len)).to_owned();
        let m = fhec::compile(&model("digits_mlp.onnx"), &[sub], &CompileOptions { auto: fhec::AutoOptions::keep_precision(), ..Default::default() }).expect("compiles");
        prop_assert!(m.report().max_tlu_bits <= 6);
    }
}

/// Per-layer precision: the JSON form round-trips, each layer gets its own weight, input and
/// rounding bits (and only that layer), the report shows them, and an unknown layer name is
/// refused with the list of layers.
#[test]
fn per_layer_precision_round_trips_and_applies_to_its_layer_only() {
    use fhec::ir::{IntLinear, Op};
    use fhec::passes::{LayerPrecision, PrecisionFile};
    let (l0, l2) = ("/net/net.0/Gemm", "/net/net.2/Gemm");
    let json = format!(
        r#"{{"layers": {{"{l0}": {{"weight_bits": 3, "rounding_bits": 5}}, "{l2}": {{"input_bits": 4}}}}}}"#
    );
    let file: PrecisionFile = serde_json::from_str(&json).expect("parses");
    let back: PrecisionFile =
        serde_json::from_str(&serde_json::to_string(&file).expect("json")).expect("parses");
    assert_eq!(back, file);
    assert_eq!(
        LayerPrecision::parse("w3,r5").expect("spec"),
        file.layers[l0],
        "the command-line form means the same"
    );
    let cfg = QuantConfig {
        layers: file.layers.clone(),
        ..QuantConfig::default()
    };
    let m = compile_mlp(cfg.clone());
    // weights: 3 bits in layer 0 (|w| ≤ 3), 6 bits elsewhere
    let mut max_w = std::collections::BTreeMap::new();
    for n in m.program().g.node_weights() {
        if let Op::IntLinear(IntLinear::Dense { w }) = &n.op {
            max_w.insert(n.name.clone(), w.iter().map(|v| v.abs()).max().unwrap_or(0));
        }
    }
    assert_eq!(max_w[l0], 3, "{max_w:?}");
    assert!(max_w[l2] > 3 && max_w[l2] <= 31, "{max_w:?}");
    // layer 2 reads its input at 4 bits: the table (Relu, requantized) feeding it has 16
    // output codes
    let l2_node = m
        .program()
        .g
        .node_indices()
        .find(|&i| m.program().g[i].name == l2)
        .expect("layer 2");
    let x = m.program().inputs_of(l2_node)[0];
    match &m.program().g[x].op {
        Op::Tlu(t) => assert_eq!((t.out.qmin, t.out.qmax), (0, 15)),
        other => panic!("layer 2 reads {}", other.name()),
    }
    // the report: per-layer precision, and the config (with its layers) round-trips in JSON
    let row = |name: &str| {
        m.report()
            .layers
            .iter()
            .find(|r| r.layer == name)
            .and_then(|r| r.precision)
            .expect("row")
    };
    assert_eq!(row(l0), (3, 6, Some(5)));
    assert_eq!(row(l2), (6, 4, Some(6)));
    assert!(m.report().to_text().contains("3/6/5"));
    let report: fhec::CompileReport =
        serde_json::from_str(&serde_json::to_string(m.report()).expect("json")).expect("parses");
    assert_eq!(report.config, cfg);
    // the rounding of layer 0 is 5 bits: its table inputs are at most 5 bits wide
    let r0 = m
        .report()
        .layers
        .iter()
        .find(|r| r.layer == l0)
        .expect("row");
    assert!(r0.tlu_input_bits.is_some_and(|b| b <= 5), "{r0:?}");
    // an unknown layer
    let bad = QuantConfig {
        layers: [("nope".to_string(), LayerPrecision::default())].into(),
        ..QuantConfig::default()
    };
    let calib = calib("digits_mlp");
    let e = fhec::compile(
        &model("digits_mlp.onnx"),
        &[calib],
        &CompileOptions {
            auto: fhec::AutoOptions::keep_precision(),
            quant: bad,
            ..Default::default()
        },
    )
    .expect_err("refused")
    .to_string();
    assert!(e.contains("no layer `nope`") && e.contains(l2), "{e}");
}

/// Compiles a shipped model with `cfg` and runs clear mode on `x`: (accuracy, overflows).
fn clear_run(name: &str, cfg: QuantConfig, x: &ndarray::ArrayD<f32>) -> (f64, fhec::Overflows) {
    let opts = CompileOptions {
        auto: fhec::AutoOptions::keep_precision(),
        quant: cfg,
        ..Default::default()
    };
    let m =
        fhec::compile(&model(&format!("{name}.onnx")), &[calib(name)], &opts).expect("compiles");
    let (ys, ov) = m.run_clear_counted(std::slice::from_ref(x)).expect("runs");
    let y = npy::read_labels(&model(&format!("{name}_test_y.npy"))).expect("y");
    let n = y.len().min(ys[0].shape()[0]);
    let acc = fhec::accuracy(
        &ys[0]
            .slice_axis(ndarray::Axis(0), ndarray::Slice::from(0..n))
            .to_owned(),
        &y[..n],
    )
    .expect("accuracy");
    (acc, ov)
}

/// The range policy at 4 bits, rounding 4 (where two bits matter most): calibrated domains
/// (the default) are at least as accurate as proven ones on every model of the kind that
/// lost accuracy (ReLU, Sigmoid/Tanh, Conv1d, standardized tabular), no test input leaves a
/// calibrated domain at the default margin, and proven domains are never left, whatever the
/// input.
#[test]
fn calibrated_ranges_are_as_accurate_as_proven_and_proven_never_wraps() {
    for name in [
        "digits_mlp",
        "digits_deep",
        "digits_conv1d",
        "breast_cancer_mlp",
    ] {
        let x = npy::read_f32(&model(&format!("{name}_test_x.npy"))).expect("x");
        let cfg = |ranges| QuantConfig {
            rounding_bits: Some(4),
            ranges,
            ..QuantConfig::with_n_bits(4)
        };
        let (acc_c, ov_c) = clear_run(name, cfg(passes::RangePolicy::Calibrated), &x);
        let (acc_p, ov_p) = clear_run(name, cfg(passes::RangePolicy::Proven), &x);
        println!(
            "{name} at 4/4: proven {:.2}%, calibrated {:.2}% ({} of {} reads beyond a domain)",
            acc_p * 100.0,
            acc_c * 100.0,
            ov_c.outside,
            ov_c.reads
        );
        assert!(
            acc_c >= acc_p,
            "{name}: calibrated {acc_c} < proven {acc_p}"
        );
        assert_eq!(ov_c.outside, 0, "{name}: {}", ov_c.to_text());
        assert_eq!(ov_p.outside, 0, "{name}: {}", ov_p.to_text());
        // far outside the calibration range: proven domains still hold every value
        let wild = x.mapv(|v| {
            if v > 0.0 {
                9.0 * v + 3.0
            } else {
                9.0 * v - 3.0
            }
        });
        let (_, ov) = clear_run(name, cfg(passes::RangePolicy::Proven), &wild);
        assert_eq!(
            ov.outside,
            0,
            "{name}: proven domain left: {}",
            ov.to_text()
        );
    }
}

/// Clear mode counts reads beyond a domain per sample and per layer, and each such read is
/// the table's negacyclic wrap (checked against the table function itself).
#[test]
fn reads_beyond_a_domain_are_counted_and_wrap() {
    let name = "breast_cancer_mlp";
    let cfg = QuantConfig {
        rounding_bits: Some(4),
        range_margin: 0.0,
        ..QuantConfig::with_n_bits(4)
    };
    let opts = CompileOptions {
        auto: fhec::AutoOptions::keep_precision(),
        quant: cfg,
        ..Default::default()
    };
    let m =
        fhec::compile(&model(&format!("{name}.onnx")), &[calib(name)], &opts).expect("compiles");
    let x = npy::read_f32(&model(&format!("{name}_test_x.npy"))).expect("x") * 2.0;
    let (_, ov) = m.run_clear_counted(std::slice::from_ref(&x)).expect("runs");
    println!("{}", ov.to_text());
    assert!(ov.outside > 0 && ov.samples_hit > 0, "{}", ov.to_text());
    assert_eq!(ov.samples, x.shape()[0]);
    assert!(ov.samples_hit <= ov.samples);
    let per_layer: usize = ov.by_layer.values().map(|(o, _)| o).sum();
    let reads: usize = ov.by_layer.values().map(|(_, r)| r).sum();
    assert_eq!((per_layer, reads), (ov.outside, ov.reads));
    // every table read and every decrypted element of a calibrated window
    let g = m.program();
    let windowed: usize = g
        .topo()
        .expect("dag")
        .into_iter()
        .filter(|&n| matches!(g.g[n].op, fhec::ir::Op::Wrap { .. }))
        .map(|n| g.g[n].ty.len())
        .sum();
    assert!(windowed > 0, "the decrypted output should get a window");
    assert_eq!(ov.reads, (m.report().pbs_count + windowed) * ov.samples);
    // recount from the values, and check each read beyond the domain
    let mut outside = 0;
    for sample in fhec::model::split_batch(m.float_graph(), &[x]).expect("batch") {
        let q = fhec::ir::quantize_sample(&sample, m.input_quant());
        let values = eval_all(g, &q).expect("runs");
        for n in g.topo().expect("dag") {
            if let fhec::ir::Op::Wrap { lo, bits } = &g.g[n].op {
                // a decrypted value beyond its window: taken modulo 2^bits into it
                let xs = values[&g.inputs_of(n)[0]].i64_values();
                let ys = values[&n].i64_values();
                for (i, (&xv, &yv)) in xs.iter().zip(&ys).enumerate() {
                    let l = lo[if lo.len() == 1 { 0 } else { i }];
                    let inside = xv >= l && xv < l + (1i64 << bits);
                    outside += usize::from(!inside);
                    assert!(yv >= l && yv < l + (1i64 << bits));
                    assert_eq!((yv - xv).rem_euclid(1i64 << bits), 0);
                    assert_eq!(inside, xv == yv);
                }
                continue;
            }
            let fhec::ir::Op::Tlu(t) = &g.g[n].op else {
                continue;
            };
            let d = t.domain.as_ref().expect("round fixed every domain");
            let xs = values[&g.inputs_of(n)[0]].i64_values();
            let ys = values[&n].i64_values();
            for (i, (&xv, &yv)) in xs.iter().zip(&ys).enumerate() {
                let w = d.interval(i);
                let period = 1i64 << d.bits;
                if w.contains(xv) {
                    continue;
                }
                outside += 1;
                let j = (xv - w.lo).rem_euclid(period);
                let flips = (xv - w.lo).div_euclid(period);
                let inner = fhec::ir::TluFn {
                    domain: None,
                    ..t.clone()
                }
                .eval(i, w.lo + j);
                assert_eq!(yv, if flips % 2 == 0 { inner } else { -inner });
            }
        }
    }
    assert_eq!(outside, ov.outside);
}

/// A shipped regression model compiled at the defaults, its test inputs and float targets.
fn regression_at_defaults(
    name: &str,
) -> (
    fhec::CompiledModel,
    ndarray::ArrayD<f32>,
    ndarray::ArrayD<f32>,
) {
    let m = fhec::compile(
        &model(&format!("{name}.onnx")),
        &[calib(name)],
        &CompileOptions {
            auto: fhec::AutoOptions::keep_precision(),
            ..Default::default()
        },
    )
    .expect("compiles");
    let x = npy::read_f32(&model(&format!("{name}_test_x.npy"))).expect("x");
    let t = npy::read_f32(&model(&format!("{name}_test_y.npy"))).expect("targets");
    (m, x, t)
}

/// The encoder–decoder with a ConvTranspose (digits_autoenc: Conv stride 2 → ReLU →
/// ConvTranspose stride 2 → ReLU → Conv, reconstructing the 64 pixels): float mode equals
/// torch's output (onnxruntime semantics) within 1e-4 of the output range, and clear mode at
/// the defaults keeps R² within one point of float.
#[test]
fn encoder_decoder_with_conv_transpose() {
    let name = "digits_autoenc";
    let (m, x, t) = regression_at_defaults(name);
    let want = npy::read_f32(&model(&format!("{name}_test_out.npy"))).expect("torch out");
    let f = m.run_float(std::slice::from_ref(&x)).expect("float")[0].clone();
    let range = want.iter().fold(0f32, |a, v| a.max(v.abs()));
    let worst = f
        .iter()
        .zip(want.iter())
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        worst <= 1e-4 * range,
        "float vs torch: {worst} (range {range})"
    );
    let r2 = |y: &ndarray::ArrayD<f32>| fhec::tune::Metric::R2.score(y, &t).expect("r2") / 100.0;
    let (rf, rc) = (r2(&f), r2(&m.run_clear(&[x]).expect("clear")[0]));
    println!(
        "{name}: R² float {rf:.4}, clear {rc:.4}; {} PBS; float vs torch max |Δ| {worst:.2e}",
        m.report().pbs_count
    );
    assert!(rc >= rf - 0.01, "clear R² {rc} vs float {rf}");
}

/// A regression model (float targets): clear mode keeps R² within 0.05 of float at the
/// default settings.
#[test]
fn regression_model_keeps_its_r2() {
    let name = "diabetes_mlp";
    let (m, x, t) = regression_at_defaults(name);
    let r2 = |y: &ndarray::ArrayD<f32>| fhec::tune::Metric::R2.score(y, &t).expect("r2") / 100.0;
    let (f, c) = (
        r2(&m.run_float(std::slice::from_ref(&x)).expect("float")[0]),
        r2(&m.run_clear(&[x]).expect("clear")[0]),
    );
    println!("{name}: R² float {f:.4}, clear {c:.4}");
    assert!(c >= f - 0.05, "clear R² {c} vs float {f}");
}

/// The compile report states what each decomposed construction costs: digits_lngelu's two
/// LayerNorms at about four table lookups per element (centring, square, 1/√, product), on
/// tables no wider than the rounding; GELU is fused into its layer's table (no construction).
#[test]
fn construction_costs_are_in_the_report() {
    let name = "digits_lngelu";
    let opts = CompileOptions {
        auto: fhec::AutoOptions::keep_precision(),
        quant: QuantConfig::with_n_bits(6),
        ..Default::default()
    };
    let m =
        fhec::compile(&model(&format!("{name}.onnx")), &[calib(name)], &opts).expect("compiles");
    let cs = m.report().constructions();
    println!("{cs:?}");
    assert_eq!(cs.len(), 2, "{cs:?}");
    for c in &cs {
        assert!(c.node.ends_with("LayerNormalization"), "{c:?}");
        assert!((3.0..=5.0).contains(&c.per_element()), "{c:?}");
        assert!(c.tlu_bits.is_some_and(|b| b <= 6), "{c:?}");
    }
    let text = m.report().to_text();
    assert!(
        text.contains("construction `/net/net.1/LayerNormalization`"),
        "{text}"
    );
    // the mean is taken over the codes the centring requantizes anyway (not over the dense
    // layer's accumulators, whose column sums are 20 bits wide): narrow, no extra table, and
    // exact rounding finds parameters for it
    let means: Vec<_> = m
        .report()
        .layers
        .iter()
        .filter(|l| l.layer.ends_with("#mean:sum"))
        .collect();
    assert_eq!(means.len(), 2, "{text}");
    for l in means {
        assert!(l.acc_bits.is_some_and(|b| b <= 12), "{l:?}");
    }
    assert_eq!(m.report().pbs_count, 388, "{text}");
    let plan = m.plan().expect("exact mode plans");
    assert!(plan.program.split || plan.choice.extract.is_some());
}

/// The defaults aim for float's decisions (issue 25's one-head attention net): at a fixed
/// 6 bits digits_attention agrees with float on about 90 % of its calibration data; compile
/// raises precision until clear mode agrees on the target, within the cost cap, says how in
/// the report, and the test split's accuracy moves towards float. A fixed precision is kept
/// as given.
#[test]
fn compile_raises_precision_until_clear_agrees_with_float() {
    let name = "digits_attention";
    let x = npy::read_f32(&model(&format!("{name}_test_x.npy"))).expect("x");
    let y = npy::read_labels(&model(&format!("{name}_test_y.npy"))).expect("y");
    let compile = |auto: fhec::AutoOptions| {
        let opts = CompileOptions {
            auto,
            ..Default::default()
        };
        fhec::compile(&model(&format!("{name}.onnx")), &[calib(name)], &opts).expect("compiles")
    };
    let fixed = compile(fhec::AutoOptions::keep_precision());
    let a0 = fixed.report().calib_agreement.expect("a classifier");
    assert!(a0 < 0.95, "{name} agrees on {a0} at 6 bits");
    assert!(
        !fixed
            .report()
            .auto
            .iter()
            .any(|l| l.contains("compiled with")),
        "{:?}",
        fixed.report().auto
    );
    let target = 0.95;
    let raised = compile(fhec::AutoOptions {
        agreement_target: Some(target),
        ..Default::default()
    });
    let a1 = raised.report().calib_agreement.expect("a classifier");
    let line = raised
        .report()
        .auto
        .iter()
        .find(|l| l.contains("compiled with"))
        .unwrap_or_else(|| panic!("{:?}", raised.report().auto));
    println!("{line}");
    assert!(a1 >= target, "agreement {a1} after raising: {line}");
    // within the cap, under the rounding method the default got
    let est = |m: &fhec::CompiledModel| m.plan().expect("plan").choice.est_ms;
    assert_eq!(raised.fhe_options().rounding, fixed.fhe_options().rounding);
    assert!(est(&raised) <= 2.0 * est(&fixed), "{line}");
    let acc = |m: &fhec::CompiledModel| {
        fhec::accuracy(
            &m.run_clear(std::slice::from_ref(&x)).expect("clear")[0],
            &y,
        )
        .expect("acc")
    };
    let float = fhec::accuracy(
        &fixed.run_float(std::slice::from_ref(&x)).expect("float")[0],
        &y,
    )
    .expect("acc");
    let (acc0, acc1) = (acc(&fixed), acc(&raised));
    println!("{name}: float {float:.4}, 6 bits {acc0:.4}, raised {acc1:.4}");
    assert!(acc1 >= acc0 + 0.02, "{acc0} → {acc1}");
}
