//! Transformer-style blocks on real ciphertexts: LayerNorm, one-head self-attention (QKᵀ and
//! AV as products of two encrypted tensors, Softmax inside the graph), a residual and a mean
//! over tokens, on 2 tokens of 4 features — small enough for CI — with exact rounding: the
//! decrypted integers equal the integer program's bit for bit.

use crate::common::{
    attr_int as int, attr_ints as ints, batched_value_info as batched, init_f32, node, onnx_model,
    pseudo_weights, tmp,
};
use fhec::{CompileOptions, QuantConfig};
use ndarray::{ArrayD, IxDyn};
use tract_onnx::pb;

fn init(name: &str, dims: &[i64], seed: u32) -> pb::TensorProto {
    let n: i64 = dims.iter().product();
    init_f32(name, dims, pseudo_weights(n as usize, seed))
}

/// x[N, 2, 4] → LayerNorm → q, k, v → softmax(q·kᵀ / 2)·v + x → mean over tokens → Gemm → 3.
fn block() -> std::path::PathBuf {
    let nodes = vec![
        node(
            "LayerNormalization",
            &["x", "gamma", "beta"],
            "ln",
            vec![int("axis", -1)],
        ),
        node("MatMul", &["ln", "wq"], "q", vec![]),
        node("MatMul", &["ln", "wk"], "k", vec![]),
        node("MatMul", &["ln", "wv"], "v", vec![]),
        node("Transpose", &["k"], "kt", vec![ints("perm", &[0, 2, 1])]),
        node("MatMul", &["q", "kt"], "s", vec![]),
        node("Mul", &["s", "half"], "s2", vec![]),
        node("Softmax", &["s2"], "a", vec![int("axis", -1)]),
        node("MatMul", &["a", "v"], "o", vec![]),
        node("Add", &["o", "x"], "r", vec![]),
        node(
            "ReduceMean",
            &["r"],
            "m",
            vec![ints("axes", &[1]), int("keepdims", 0)],
        ),
        node("Gemm", &["m", "wo", "bo"], "y", vec![]),
    ];
    let mut half = init("half", &[], 0);
    half.float_data = vec![0.5];
    let mut gamma = init("gamma", &[4], 3);
    gamma.float_data = vec![1.0, 0.8, 1.2, 1.0];
    let inits = vec![
        gamma,
        init("beta", &[4], 5),
        init("wq", &[4, 4], 11),
        init("wk", &[4, 4], 13),
        init("wv", &[4, 4], 17),
        half,
        init("wo", &[4, 3], 19),
        init("bo", &[3], 23),
    ];
    let bytes = onnx_model(
        nodes,
        inits,
        vec![batched("x", &[2, 4])],
        vec![batched("y", &[3])],
    );
    let p = tmp("attention_block.onnx");
    std::fs::write(&p, bytes).expect("write");
    p
}

fn data(n: usize, seed: usize) -> ArrayD<f32> {
    ArrayD::from_shape_fn(IxDyn(&[n, 2, 4]), |i| {
        ((((i[0] + seed) * 31 + i[1] * 7 + i[2] * 13) % 29) as f32 / 14.5) - 1.0
    })
}

#[test]
fn encrypted_attention_block_equals_clear_exactly() {
    let p = block();
    let calib = data(64, 0);
    let opts = CompileOptions {
        auto: fhec::AutoOptions::keep_precision(),
        quant: QuantConfig {
            rounding_bits: Some(4),
            ..QuantConfig::with_n_bits(4)
        },
        ..Default::default()
    };
    let m = fhec::compile(&p, std::slice::from_ref(&calib), &opts).expect("compiles");
    print!("{}", m.report().to_text());
    let session = fhec::Session::new(&m).expect("parameters and keys");
    let prog = &session.plan().program;
    println!(
        "attention block: {} table lookups, {} bootstraps, tables of {} bits; {}; keygen {:.2?}",
        prog.tlu_count,
        prog.pbs_count,
        prog.tlu_bits,
        session.plan().choice.params,
        session.keygen_time
    );
    let x = data(2, 5);
    let float = m.run_float(std::slice::from_ref(&x)).expect("float");
    let clear = m.run_clear(std::slice::from_ref(&x)).expect("clear");
    println!("float {:?}\nclear {:?}", float[0], clear[0]);
    for (i, sample) in fhec::model::split_batch(m.float_graph(), &[x])
        .expect("batch")
        .iter()
        .enumerate()
    {
        let q = m.quantize_inputs(sample).expect("quantize");
        let want = m.boundary_clear(prog, &q).expect("clear");
        let (got, t) = session.run_sample(&q, None).expect("encrypted");
        println!("sample {i}: {:.2?}", t.evaluate);
        assert_eq!(
            got, want,
            "sample {i}: encrypted differs from the integer program"
        );
    }
}

/// x[N, 8] → Softmax → an identity MatMul (so that an encrypted layer reads it and it runs
/// encrypted: exp table, tree of maxima, reciprocal table, product) → decrypted.
fn softmax_block() -> std::path::PathBuf {
    let eye = (0..64)
        .map(|i| if i % 9 == 0 { 1.0 } else { 0.0 })
        .collect();
    let bytes = onnx_model(
        vec![
            node("Softmax", &["x"], "a", vec![int("axis", -1)]),
            node("MatMul", &["a", "eye"], "y", vec![]),
        ],
        vec![init_f32("eye", &[8, 8], eye)],
        vec![batched("x", &[8])],
        vec![batched("y", &[8])],
    );
    let p = tmp("softmax_block.onnx");
    std::fs::write(&p, bytes).expect("write");
    p
}

/// Scores in [−4, 4] (pseudo-random, fixed).
fn scores(n: usize, seed: usize) -> ArrayD<f32> {
    ArrayD::from_shape_fn(IxDyn(&[n, 8]), |i| {
        let h = ((i[0] + seed) * 2_654_435_761 + i[1] * 40_503) % 10_007;
        h as f32 / 10_007.0 * 8.0 - 4.0
    })
}

/// The accuracy cost of an encrypted Softmax per bit width (README "Transformer-style
/// blocks"): the probabilities' error against float on fresh inputs, at n_bits = rounding
/// bits and with one rounding bit more (which makes the tree of maxima exact: at n bits each
/// comparison reads its difference rounded by one bit, and the errors add up the tree).
#[test]
fn softmax_error_per_bit_width() {
    let p = softmax_block();
    let calib = scores(200, 0);
    let x = scores(500, 7);
    for extra in [0, 1] {
        let mut last = f32::INFINITY;
        for bits in 4..=8 - extra {
            let quant = QuantConfig {
                rounding_bits: Some(bits + extra),
                ..QuantConfig::with_n_bits(bits)
            };
            let m = crate::common::quantize(&p, std::slice::from_ref(&calib), &quant);
            let float = m
                .run_float(std::slice::from_ref(&x))
                .expect("float")
                .remove(0);
            let (mut clear, over) = m
                .run_clear_counted(std::slice::from_ref(&x))
                .expect("clear");
            let clear = clear.remove(0);
            assert_eq!(over.outside, 0, "no read beyond a domain");
            let err: Vec<f32> = float
                .iter()
                .zip(&clear)
                .map(|(f, c)| (f - c).abs())
                .collect();
            let mean = err.iter().sum::<f32>() / err.len() as f32;
            let max = err.iter().copied().fold(0.0, f32::max);
            let argmax = |a: &ArrayD<f32>, r: usize| {
                (0..8)
                    .max_by(|&i, &j| a[[r, i]].total_cmp(&a[[r, j]]))
                    .expect("8 values")
            };
            let same = (0..500)
                .filter(|&r| argmax(&float, r) == argmax(&clear, r))
                .count();
            println!(
                "softmax of 8 at {bits} bits, rounding {}: {} tables per row, |error| mean {mean:.4} max {max:.4}, same argmax {same} / 500",
                bits + extra,
                m.report().pbs_count
            );
            assert!(mean < last, "{bits} bits: error {mean} not below {last}");
            assert_eq!(same, 500, "{bits} bits: the largest probability moved");
            if bits >= 6 {
                assert!(mean < 0.01 && max < 0.1, "{bits} bits: {mean} / {max}");
            }
            last = mean;
        }
    }
}
