//! ReduceSum, ReduceMean, ReduceMax (axes as attribute or input, by opset), Softmax (opset <
//! 13 flattening semantics and the per-axis semantics of opset 13+), LayerNormalization and
//! RMSNormalization (opset 23).

use super::attrs::{axis, Attrs};
use super::{Cx, ImportError};
use fhec_ir::{Op, ReduceKind};
use tract_onnx::pb;

pub(super) fn reduce(cx: &mut Cx, n: &pb::NodeProto) -> Result<(), ImportError> {
    let a = Attrs::of(n);
    let rank = cx.in_ty(n, 0)?.rank();
    let kind = match n.op_type.as_str() {
        "ReduceSum" => ReduceKind::Sum,
        "ReduceMax" => ReduceKind::Max,
        _ => ReduceKind::Mean,
    };
    // axes became an input: ReduceSum at opset 13, ReduceMean and ReduceMax at opset 18
    let axes_as_input = match kind {
        ReduceKind::Sum => cx.opset >= 13,
        ReduceKind::Mean | ReduceKind::Max => cx.opset >= 18,
    };
    let raw = if axes_as_input {
        cx.const_input(n, 1)?.map(|t| t.i64_values())
    } else {
        a.ints("axes")?
    };
    let noop_empty = a.int("noop_with_empty_axes", 0)? != 0;
    let raw = raw.unwrap_or_default();
    if raw.is_empty() && noop_empty {
        return cx.emit(n, Op::Identity, &[0]);
    }
    let mut axes = if raw.is_empty() {
        (0..rank).collect()
    } else {
        raw.iter()
            .map(|&x| axis(n, x, rank))
            .collect::<Result<Vec<_>, _>>()?
    };
    axes.sort_unstable();
    axes.dedup();
    cx.emit(
        n,
        Op::Reduce {
            kind,
            axes,
            keepdims: a.int("keepdims", 1)? != 0,
        },
        &[0],
    )
}

pub(super) fn softmax(cx: &mut Cx, n: &pb::NodeProto) -> Result<(), ImportError> {
    let a = Attrs::of(n);
    let rank = cx.in_ty(n, 0)?.rank();
    let legacy = cx.opset < 13;
    let ax = a.int("axis", if legacy { 1 } else { -1 })?;
    let ax = axis(n, ax, rank)?;
    cx.emit(
        n,
        Op::Softmax {
            axis: ax,
            flatten: legacy,
        },
        &[0],
    )
}

/// LayerNormalization (opset 17): over the axes from `axis` on,
/// `(x − mean) · 1/√(var + ε) · scale + bias`, written as the ops torch exports at older
/// opsets (ReduceMean, Sub, Pow, Add, Sqrt, Reciprocal, Mul, Add), so that every step is one
/// the quantize pass has a rule for: the mean and variance are linear in the codes and their
/// squares, `1/√(var + ε)` a table, the normalisation an encrypted product. The optional
/// outputs Mean and InvStdDev are those intermediate values.
/// ONNX `RMSNormalization` (opset 23): `x / sqrt(mean(x², axes from axis) + epsilon) · scale`,
/// as the elementwise steps `fuse_tlu` and the encrypted constructions take (torch's
/// `nn.RMSNorm` exported at opset 23).
pub(super) fn rms_norm(cx: &mut Cx, n: &pb::NodeProto) -> Result<(), ImportError> {
    use super::elementwise::{bind_scalar, emit_steps};
    use fhec_ir::{Binary, Unary};
    let a = Attrs::of(n);
    let rank = cx.in_ty(n, 0)?.rank();
    let ax = axis(n, a.int("axis", -1)?, rank)?;
    let eps = a.float("epsilon", 1e-5)?;
    let out = super::qdq::output(n)?;
    let x = n.input[0].clone();
    cx.req(n, 1)?; // the scale is required
    let t = |tag: &str| format!("{out}::{tag}");
    let mean_op = Op::Reduce {
        kind: ReduceKind::Mean,
        axes: (ax..rank).collect(),
        keepdims: true,
    };
    let two = bind_scalar(cx, &out, "two", 2.0);
    let epsn = bind_scalar(cx, &out, "epsilon", eps);
    let steps: Vec<(&str, Op, Vec<String>)> = vec![
        ("squared", Op::Binary(Binary::Pow), vec![x.clone(), two]),
        ("mean_square", mean_op, vec![t("squared")]),
        (
            "shifted",
            Op::Binary(Binary::Add),
            vec![t("mean_square"), epsn],
        ),
        ("rms", Op::Unary(Unary::Sqrt), vec![t("shifted")]),
        ("inv_rms", Op::Unary(Unary::Reciprocal), vec![t("rms")]),
        ("normalized", Op::Binary(Binary::Mul), vec![x, t("inv_rms")]),
        (
            "scaled",
            Op::Binary(Binary::Mul),
            vec![t("normalized"), n.input[1].clone()],
        ),
    ];
    emit_steps(cx, n, &out, steps)?;
    if let Some(o) = n.output.get(1).filter(|o| !o.is_empty()) {
        let v = cx.req_named(n, &t("inv_rms"))?;
        cx.bind(o, v);
    }
    Ok(())
}

pub(super) fn layer_norm(cx: &mut Cx, n: &pb::NodeProto) -> Result<(), ImportError> {
    use super::elementwise::{bind_scalar, emit_steps};
    use fhec_ir::{Binary, Unary};
    let a = Attrs::of(n);
    let rank = cx.in_ty(n, 0)?.rank();
    let ax = axis(n, a.int("axis", -1)?, rank)?;
    let eps = a.float("epsilon", 1e-5)?;
    let out = super::qdq::output(n)?;
    let x = n.input[0].clone();
    let t = |tag: &str| format!("{out}::{tag}");
    let mean_op = Op::Reduce {
        kind: ReduceKind::Mean,
        axes: (ax..rank).collect(),
        keepdims: true,
    };
    let two = bind_scalar(cx, &out, "two", 2.0);
    let epsn = bind_scalar(cx, &out, "epsilon", eps);
    let mut steps: Vec<(&str, Op, Vec<String>)> = vec![
        ("mean", mean_op.clone(), vec![x.clone()]),
        (
            "centred",
            Op::Binary(Binary::Sub),
            vec![x.clone(), t("mean")],
        ),
        ("squared", Op::Binary(Binary::Pow), vec![t("centred"), two]),
        ("variance", mean_op, vec![t("squared")]),
        (
            "shifted",
            Op::Binary(Binary::Add),
            vec![t("variance"), epsn],
        ),
        ("std", Op::Unary(Unary::Sqrt), vec![t("shifted")]),
        ("inv_std", Op::Unary(Unary::Reciprocal), vec![t("std")]),
        (
            "normalized",
            Op::Binary(Binary::Mul),
            vec![t("centred"), t("inv_std")],
        ),
        (
            "scaled",
            Op::Binary(Binary::Mul),
            vec![t("normalized"), n.input[1].clone()],
        ),
    ];
    if let Some(b) = n.input.get(2).filter(|b| !b.is_empty()) {
        steps.push((
            "bias",
            Op::Binary(Binary::Add),
            vec![t("scaled"), b.clone()],
        ));
    }
    emit_steps(cx, n, &out, steps)?;
    for (i, tag) in [(1, "mean"), (2, "inv_std")] {
        if let Some(o) = n.output.get(i).filter(|o| !o.is_empty()) {
            let v = cx.req_named(n, &t(tag))?;
            cx.bind(o, v);
        }
    }
    Ok(())
}
