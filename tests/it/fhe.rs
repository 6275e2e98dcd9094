//! Encrypted inference on real ciphertexts equals `eval_int` bit for bit.

use fhec::ir::{Graph, Op, Tensor, TensorType, Unary};
use fhec::{CompileOptions, Model, QuantConfig};
use ndarray::{ArrayD, IxDyn};

/// 4 inputs → 4 → ReLU → 2, built directly in the IR.
fn tiny() -> Model {
    let mut g = Graph::new();
    let x = g.add_input("x", TensorType::f32(vec![1, 4]), true);
    let w1 = g.add_const(
        "w1",
        Tensor::F32(
            ArrayD::from_shape_vec(
                IxDyn(&[4, 4]),
                vec![
                    0.5, -0.3, 0.8, 0.1, -0.6, 0.9, 0.2, -0.4, 0.3, 0.3, -0.7, 0.6, 0.1, -0.8, 0.4,
                    0.5,
                ],
            )
            .expect("w1"),
        ),
    );
    let b1 = g.add_const(
        "b1",
        Tensor::F32(ArrayD::from_shape_vec(IxDyn(&[4]), vec![0.1, -0.2, 0.05, 0.0]).expect("b1")),
    );
    let h = g
        .add_op(
            "fc1",
            Op::Gemm {
                alpha: 1.0,
                beta: 1.0,
                trans_a: false,
                trans_b: false,
            },
            &[x, w1, b1],
        )
        .expect("fc1");
    let r = g
        .add_op("relu", Op::Unary(Unary::Relu), &[h])
        .expect("relu");
    let w2 = g.add_const(
        "w2",
        Tensor::F32(
            ArrayD::from_shape_vec(
                IxDyn(&[4, 2]),
                vec![0.7, -0.5, -0.2, 0.9, 0.6, 0.3, -0.4, 0.8],
            )
            .expect("w2"),
        ),
    );
    let y = g
        .add_op(
            "fc2",
            Op::Gemm {
                alpha: 1.0,
                beta: 1.0,
                trans_a: false,
                trans_b: false,
            },
            &[r, w2],
        )
        .expect("fc2");
    g.add_output("y", y);
    Model {
        graph: g,
        source: "tiny".into(),
    }
}

fn calib() -> ArrayD<f32> {
    ArrayD::from_shape_fn(IxDyn(&[64, 4]), |i| {
        (((i[0] * 7 + i[1] * 13) % 17) as f32 / 8.0) - 1.0
    })
}

#[test]
fn encrypted_tiny_mlp_equals_eval_int_exactly() {
    let cfg = QuantConfig {
        rounding_bits: Some(4),
        ..QuantConfig::with_n_bits(3)
    };
    let (m, _) = fhec::compile_model(
        &tiny(),
        &[calib()],
        &CompileOptions {
            quant: cfg,
            ..Default::default()
        },
    )
    .expect("compiles");
    let session = m.fhe_session(2f64.powi(-40)).expect("parameters and keys");
    let p = &session.program;
    println!(
        "tiny: {} table lookups, {} bootstraps, table bits {}, message bits {}, params {:?}, p_error {:.2e}, keygen {:.2?}",
        p.tlu_count, p.pbs_count, p.tlu_bits, p.msg_bits, session.choice.params, session.choice.p_error, session.keygen_time
    );
    assert!(
        p.pbs_count > p.tlu_count,
        "exact rounding should extract bits"
    );
    let x = calib();
    for s in [0usize, 5, 9, 17, 30, 63] {
        let q: Vec<Tensor> = vec![Tensor::I64(
            x.slice(ndarray::s![s..s + 1, ..])
                .mapv(|v| m.input_quant[0].quantize(v))
                .into_dyn(),
        )];
        let want = m.boundary_clear(p, &q).expect("clear");
        let (got, t) = session.run_sample(&q).expect("encrypted run");
        println!(
            "sample {s}: clear {want:?} encrypted {got:?} in {:.2?}",
            t.evaluate
        );
        assert_eq!(got, want, "sample {s}: encrypted differs from eval_int");
        let outs = m.client_tail(p, &got).expect("tail");
        let clear = fhec::ir::eval_int(&m.program, &q).expect("eval_int");
        assert_eq!(outs, clear, "client tail");
    }
}
