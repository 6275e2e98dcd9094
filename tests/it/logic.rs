//! Comparisons, `Where` and `ArgMax` in compiled models: a `where(h > 0, h, 0.1·h)` after a
//! dense layer is one table lookup per element (fused with its requantization), a constant
//! mask with `−inf` selects exactly, a computed condition with an infinite branch is refused
//! in one line, and ArgMax runs on the client after decryption.

use crate::common::{
    attr_int as int_attr, batched_value_info, init_f32 as init, node, onnx_model, tmp, value_info,
};
use fhec::{CompileOptions, QuantConfig};
use ndarray::{ArrayD, IxDyn};

fn weights(k: usize, n: usize, seed: u32) -> Vec<f32> {
    (0..k * n)
        .map(|i| (((i as u32).wrapping_mul(2_654_435_761) ^ seed) % 1000) as f32 / 500.0 - 1.0)
        .collect()
}

/// x[1,4] → Gemm → where(h > 0, h, 0.1·h) → Gemm → logits, and ArgMax(logits) as a second
/// output.
fn leaky_where_model() -> std::path::PathBuf {
    let nodes = vec![
        node("Gemm", &["x", "w1", "b1"], "h", vec![]),
        node("Greater", &["h", "zero"], "pos", vec![]),
        node("Mul", &["h", "slope"], "hs", vec![]),
        node("Where", &["pos", "h", "hs"], "a", vec![]),
        node("Gemm", &["a", "w2", "b2"], "logits", vec![]),
        node(
            "ArgMax",
            &["logits"],
            "class",
            vec![int_attr("axis", 1), int_attr("keepdims", 0)],
        ),
    ];
    let inits = vec![
        init("w1", &[4, 6], weights(4, 6, 1)),
        init("b1", &[6], vec![0.1, -0.2, 0.0, 0.3, -0.1, 0.05]),
        init("w2", &[6, 3], weights(6, 3, 7)),
        init("b2", &[3], vec![0.0, 0.1, -0.1]),
        init("zero", &[], vec![0.0]),
        init("slope", &[], vec![0.1]),
    ];
    let bytes = onnx_model(
        nodes,
        inits,
        vec![batched_value_info("x", &[4])],
        vec![
            batched_value_info("logits", &[3]),
            batched_value_info("class", &[]),
        ],
    );
    let p = tmp("leaky_where.onnx");
    std::fs::write(&p, bytes).expect("write");
    p
}

fn inputs(n: usize) -> ArrayD<f32> {
    ArrayD::from_shape_fn(IxDyn(&[n, 4]), |i| {
        (((i[0] * 7 + i[1] * 13) % 23) as f32 / 11.5) - 1.0
    })
}

#[test]
fn where_of_a_comparison_is_one_table_and_argmax_runs_on_the_client() {
    let p = leaky_where_model();
    let m = fhec::Model::load(&p).expect("imports");
    let x = inputs(64);
    let ys = m.run_float(std::slice::from_ref(&x)).expect("float");
    // float mode is the leaky ReLU it spells, and ArgMax its logits' argmax
    for r in 0..64 {
        let logits = ys[0].index_axis(ndarray::Axis(0), r);
        let best = logits
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i as f32);
        assert_eq!(Some(ys[1][[r]]), best, "row {r}");
    }
    let opts = CompileOptions {
        auto: fhec::AutoOptions::keep_precision(),
        quant: QuantConfig::with_n_bits(6),
        ..Default::default()
    };
    let c = fhec::compile(&p, std::slice::from_ref(&x), &opts).expect("compiles");
    println!("{}", c.report().to_text());
    // one table per hidden element: comparison, select and requantization fused
    assert_eq!(c.report().pbs_count, 6, "{}", c.report().to_text());
    assert!(
        c.report().client_ops.contains_key("ArgMax"),
        "{:?}",
        c.report().client_ops
    );
    let clear = c.run_clear(std::slice::from_ref(&x)).expect("clear");
    let agree = (0..64).filter(|&r| clear[1][[r]] == ys[1][[r]]).count();
    assert!(agree >= 60, "clear and float ArgMax agree on {agree}/64");
    // ArgMax of the clear logits is the clear ArgMax output
    for r in 0..64 {
        let row = clear[0].index_axis(ndarray::Axis(0), r);
        let best = row
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i as f32);
        assert_eq!(Some(clear[1][[r]]), best);
    }
    // accuracy reads a class-index output directly
    let labels: Vec<i64> = (0..64).map(|r| ys[1][[r]] as i64).collect();
    assert_eq!(fhec::accuracy(&ys[1], &labels), Some(1.0));
}

/// An attention-style mask: `Where(mask, scores, −inf)` with a constant mask keeps `−inf`
/// exactly (no `0·∞`), and a computed condition with an infinite branch is refused.
#[test]
fn where_with_infinite_branches() {
    let mask = init("mask", &[1, 4], vec![1.0, 0.0, 1.0, 1.0]);
    let ninf = init("ninf", &[], vec![f32::NEG_INFINITY]);
    let nodes = vec![
        node("Cast", &["mask"], "m", vec![int_attr("to", 9)]),
        node("Where", &["m", "x", "ninf"], "s", vec![]),
        node("Softmax", &["s"], "y", vec![int_attr("axis", 1)]),
    ];
    let bytes = onnx_model(
        nodes,
        vec![mask, ninf.clone()],
        vec![value_info("x", &[1, 4])],
        vec![value_info("y", &[1, 4])],
    );
    let p = tmp("masked_softmax.onnx");
    std::fs::write(&p, bytes).expect("write");
    let m = fhec::Model::load(&p).expect("imports");
    let x = ArrayD::from_shape_vec(IxDyn(&[1, 4]), vec![0.5, 3.0, -1.0, 0.0]).expect("x");
    let y = &m.run_float(&[x]).expect("float")[0];
    assert_eq!(y[[0, 1]], 0.0, "the masked score is excluded: {y:?}");
    let e: Vec<f32> = [0.5f32, -1.0, 0.0].iter().map(|v| v.exp()).collect();
    let s: f32 = e.iter().sum();
    assert!((y[[0, 0]] - e[0] / s).abs() < 1e-6, "{y:?}");
    // a computed condition choosing an infinite constant
    let nodes = vec![
        node("Greater", &["x", "zero"], "c", vec![]),
        node("Where", &["c", "x", "ninf"], "y", vec![]),
    ];
    let bytes = onnx_model(
        nodes,
        vec![ninf, init("zero", &[], vec![0.0])],
        vec![value_info("x", &[1, 4])],
        vec![value_info("y", &[1, 4])],
    );
    let p = tmp("where_inf.onnx");
    std::fs::write(&p, bytes).expect("write");
    let out = crate::common::fhec(&["inspect", p.to_str().expect("utf-8")]);
    crate::common::user_error(&out, &["Where", "infinite", "finite value"]);
}

/// ArgMax/ArgMin along an axis the input does not have are refused in one line naming the
/// node and the axis; a negative axis counts from the end.
#[test]
fn argmax_axis_out_of_range_is_refused() {
    for (op, axis, ok) in [
        ("ArgMax", 2, false),
        ("ArgMin", -3, false),
        ("ArgMax", -1, true),
    ] {
        let bytes = onnx_model(
            vec![node(
                op,
                &["x"],
                "y",
                vec![int_attr("axis", axis), int_attr("keepdims", 0)],
            )],
            vec![],
            vec![value_info("x", &[1, 4])],
            vec![value_info("y", &[1])],
        );
        let p = tmp(&format!("argmax_axis_{op}_{axis}.onnx"));
        std::fs::write(&p, bytes).expect("write");
        let out = crate::common::fhec(&["inspect", p.to_str().expect("utf-8")]);
        if ok {
            assert!(out.status.success(), "{op} axis {axis}: {out:?}");
        } else {
            crate::common::user_error(&out, &[op, &format!("axis {axis} is out of range")]);
        }
    }
}
