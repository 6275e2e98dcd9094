//! onnxruntime's QOperator graphs: `QLinearConv`, `QLinearMatMul`, `MatMulInteger`,
//! `ConvInteger` (ONNX) and the `com.microsoft` ops `quantize_static` emits beside them
//! (`QGemm`, `QLinearAveragePool`, `QLinearGlobalAveragePool`, `QLinearAdd`, `QLinearMul`,
//! `QLinearLeakyRelu`, `QLinearSigmoid`, `QLinearConcat`).
//!
//! Each QLinear op is what onnxruntime's reference computes, written as the QDQ graph it
//! stands for: DequantizeLinear of every quantized input, the float op, QuantizeLinear of
//! the output. An int32 bias is dequantized with scale `x_scale · w_scale` and zero point 0,
//! as onnxruntime adds it to the integer accumulator. Between two QLinear ops the codes are
//! therefore a [`Coded`](super::qdq::Coded) tensor, and the quantize pass compiles on the
//! model's own grids. `MatMulInteger` and `ConvInteger` compute `(a − a_zp) · (b − b_zp)` in
//! exact integers held in f32.

use super::attrs::Attrs;
use super::elementwise::{bind_scalar, sub_node as node};
use super::{qdq, Cx, ImportError, Val};
use fhec_ir::{Binary, Op, Tensor};
use ndarray::{ArrayD, IxDyn};
use tract_onnx::pb;

/// Ops of domain `com.microsoft` the importer converts.
pub const MS_OPS: &[&str] = &[
    "QGemm",
    "QLinearAveragePool",
    "QLinearGlobalAveragePool",
    "QLinearAdd",
    "QLinearMul",
    "QLinearLeakyRelu",
    "QLinearSigmoid",
    "QLinearConcat",
];

fn output(n: &pb::NodeProto) -> Result<String, ImportError> {
    n.output
        .first()
        .cloned()
        .ok_or_else(|| Cx::err(n, "node has no output"))
}

/// Input name `i` of `n`, `""` when absent.
fn input(n: &pb::NodeProto, i: usize) -> &str {
    n.input.get(i).map(String::as_str).unwrap_or("")
}

/// `DequantizeLinear(n.input[x], n.input[s], n.input[z])` along `axis`, bound as
/// `{out}::{tag}`; returns that name.
fn dequantize(
    cx: &mut Cx,
    n: &pb::NodeProto,
    [x, s, z]: [usize; 3],
    axis: i64,
    tag: &str,
) -> Result<String, ImportError> {
    if input(n, x).is_empty() || input(n, s).is_empty() {
        return Err(Cx::err(
            n,
            format!("missing required input {x} or its scale (input {s})"),
        ));
    }
    let name = format!("{}::{tag}", output(n)?);
    let mut d = node(
        n,
        "DequantizeLinear",
        &[input(n, x), input(n, s), input(n, z)],
        &name,
        tag,
    );
    d.attribute.push(tract_onnx::pb::AttributeProto {
        name: "axis".into(),
        i: axis,
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        ..Default::default()
    });
    qdq::dequantize_linear(cx, &d)?;
    Ok(name)
}

/// `QuantizeLinear(y, n.input[s], n.input[z])` into the node's output; without an output
/// scale (a QGemm with float output) the output is `y` itself.
fn quantize(
    cx: &mut Cx,
    n: &pb::NodeProto,
    y: &str,
    [s, z]: [usize; 2],
) -> Result<(), ImportError> {
    let out = output(n)?;
    if input(n, s).is_empty() {
        let v = cx.req_named(n, y)?;
        cx.bind(&out, v);
        return Ok(());
    }
    let q = node(
        n,
        "QuantizeLinear",
        &[y, input(n, s), input(n, z)],
        &out,
        "quantize",
    );
    qdq::quantize_linear(cx, &q)
}

/// The float op `op_type` of `n` (its attributes but `drop`) over `inputs`, bound as
/// `{out}::float`; returns that name.
fn float_op(
    cx: &mut Cx,
    n: &pb::NodeProto,
    op_type: &str,
    inputs: &[&str],
    drop: &[&str],
) -> Result<String, ImportError> {
    let name = format!("{}::float", output(n)?);
    let mut f = node(n, op_type, inputs, &name, "float");
    f.attribute = n
        .attribute
        .iter()
        .filter(|a| !drop.contains(&a.name.as_str()))
        .cloned()
        .collect();
    super::convert(cx, &f)?;
    Ok(name)
}

/// An int32 bias (input `b`) in float: `b · x_scale · w_scale` (per output channel when the
/// weight scale is), bound as `{out}::bias`; `None` when absent.
fn bias(
    cx: &mut Cx,
    n: &pb::NodeProto,
    b: usize,
    [xs, ws]: [usize; 2],
) -> Result<Option<String>, ImportError> {
    let Some(bt) = cx.const_input(n, b)? else {
        return Ok(None);
    };
    let need = |i: usize, what: &str| {
        cx.const_input(n, i)?
            .ok_or_else(|| Cx::err(n, format!("missing {what} (input {i})")))
    };
    let (xs, ws) = (need(xs, "the input scale")?, need(ws, "the weight scale")?);
    let (xs, ws, bv) = (xs.to_f32(), ws.to_f32(), bt.to_f32());
    if xs.len() != 1 || bv.ndim() != 1 || !(ws.len() == 1 || ws.len() == bv.len()) {
        return Err(Cx::err(
            n,
            format!(
                "the bias has shape {:?} for an input scale of {} and a weight scale of {} values; onnxruntime's bias is one int32 per output channel",
                bv.shape(),
                xs.len(),
                ws.len()
            ),
        ));
    }
    let x0 = xs.iter().copied().next().unwrap_or(1.0);
    let wv: Vec<f32> = ws.iter().copied().collect();
    let f = ArrayD::from_shape_fn(IxDyn(&[bv.len()]), |ix| {
        let i = ix[0];
        bv[[i]] * (x0 * wv[if wv.len() == 1 { 0 } else { i }])
    });
    let name = format!("{}::bias", output(n)?);
    cx.bind(&name, Val::Const(Tensor::F32(f)));
    Ok(Some(name))
}

/// Refuses the NHWC layout of onnxruntime's pooling ops.
fn nchw(n: &pb::NodeProto) -> Result<(), ImportError> {
    if Attrs::of(n).int("channels_last", 0)? != 0 {
        return Err(Cx::err(
            n,
            "channels_last = 1 is not supported; quantize the NCHW model",
        ));
    }
    Ok(())
}

pub(super) fn convert(cx: &mut Cx, n: &pb::NodeProto) -> Result<(), ImportError> {
    let a = Attrs::of(n);
    match n.op_type.as_str() {
        "QLinearConv" => {
            // x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, B
            let x = dequantize(cx, n, [0, 1, 2], 1, "x")?;
            let w = dequantize(cx, n, [3, 4, 5], 0, "w")?;
            let b = bias(cx, n, 8, [1, 4])?;
            let mut ins = vec![x.as_str(), w.as_str()];
            if let Some(b) = &b {
                ins.push(b);
            }
            let y = float_op(cx, n, "Conv", &ins, &[])?;
            quantize(cx, n, &y, [6, 7])
        }
        "QLinearMatMul" => {
            // a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp; b's scale per column
            let a_ = dequantize(cx, n, [0, 1, 2], 0, "a")?;
            let rank = cx.in_ty(n, 3)?.rank() as i64;
            let b = dequantize(cx, n, [3, 4, 5], rank - 1, "b")?;
            let y = float_op(cx, n, "MatMul", &[&a_, &b], &[])?;
            quantize(cx, n, &y, [6, 7])
        }
        "QGemm" => {
            // A, a_scale, a_zp, B, b_scale, b_zp, C (int32), y_scale, y_zp
            if a.float("alpha", 1.0)? != 1.0 {
                return Err(Cx::err(
                    n,
                    "alpha ≠ 1 is not supported; fold alpha into the weights before quantizing",
                ));
            }
            let trans_b = a.int("transB", 0)? != 0;
            let a_ = dequantize(cx, n, [0, 1, 2], 0, "a")?;
            let b = dequantize(cx, n, [3, 4, 5], if trans_b { 0 } else { 1 }, "b")?;
            let c = bias(cx, n, 6, [1, 4])?;
            let mut ins = vec![a_.as_str(), b.as_str()];
            if let Some(c) = &c {
                ins.push(c);
            }
            let y = float_op(cx, n, "Gemm", &ins, &["alpha"])?;
            quantize(cx, n, &y, [7, 8])
        }
        "QLinearAveragePool" | "QLinearGlobalAveragePool" => {
            // X, x_scale, x_zp, y_scale, y_zp
            nchw(n)?;
            let x = dequantize(cx, n, [0, 1, 2], 1, "x")?;
            let op = &n.op_type["QLinear".len()..];
            let y = float_op(cx, n, op, &[&x], &["channels_last"])?;
            quantize(cx, n, &y, [3, 4])
        }
        "QLinearAdd" | "QLinearMul" => {
            // A, A_scale, A_zp, B, B_scale, B_zp, C_scale, C_zp
            let a_ = dequantize(cx, n, [0, 1, 2], 1, "a")?;
            let b = dequantize(cx, n, [3, 4, 5], 1, "b")?;
            let op = &n.op_type["QLinear".len()..];
            let y = float_op(cx, n, op, &[&a_, &b], &[])?;
            quantize(cx, n, &y, [6, 7])
        }
        "QLinearLeakyRelu" | "QLinearSigmoid" => {
            // X, X_scale, X_zp, Y_scale, Y_zp
            let x = dequantize(cx, n, [0, 1, 2], 1, "x")?;
            let op = &n.op_type["QLinear".len()..];
            let y = float_op(cx, n, op, &[&x], &[])?;
            quantize(cx, n, &y, [3, 4])
        }
        "QLinearConcat" => {
            // Y_scale, Y_zp, then (X, X_scale, X_zp) per input
            let k = n.input.len().saturating_sub(2);
            if k == 0 || !k.is_multiple_of(3) {
                return Err(Cx::err(
                    n,
                    format!(
                        "{} inputs; QLinearConcat takes Y_scale, Y_zp and a (tensor, scale, zero point) triple per input",
                        n.input.len()
                    ),
                ));
            }
            let mut xs = Vec::with_capacity(k / 3);
            for j in 0..k / 3 {
                let i = 2 + 3 * j;
                xs.push(dequantize(cx, n, [i, i + 1, i + 2], 1, &format!("x{j}"))?);
            }
            let refs: Vec<&str> = xs.iter().map(String::as_str).collect();
            let y = float_op(cx, n, "Concat", &refs, &[])?;
            quantize(cx, n, &y, [0, 1])
        }
        "MatMulInteger" => {
            // A, B, a_zp (scalar or per row), b_zp (scalar or per column)
            let rank = cx.in_ty(n, 0)?.rank();
            let a_ = centred(cx, n, 0, 2, rank.saturating_sub(2), rank, "a")?;
            let rank_b = cx.in_ty(n, 1)?.rank();
            let b = centred(cx, n, 1, 3, rank_b.saturating_sub(1), rank_b, "b")?;
            let out = output(n)?;
            cx.emit(
                &node(n, "MatMul", &[&a_, &b], &out, "integer"),
                Op::MatMul,
                &[0, 1],
            )
        }
        "ConvInteger" => {
            // x, w, x_zp (scalar), w_zp (scalar or per output channel)
            let x = centred(cx, n, 0, 2, 0, 0, "x")?;
            let rank_w = cx.in_ty(n, 1)?.rank();
            let w = centred(cx, n, 1, 3, 0, rank_w, "w")?;
            let out = output(n)?;
            let mut c = node(n, "Conv", &[&x, &w], &out, "integer");
            c.attribute = n.attribute.clone();
            super::convert(cx, &c)
        }
        other => Err(Cx::err(
            n,
            format!("invariant: {other} is not a QOperator op"),
        )),
    }
}

/// Integer input `i` minus its zero point (input `zi`), in f32: a zero point of one value
/// per index along `axis` of a rank-`rank` input is shaped to broadcast there. Bound as
/// `{out}::{tag}`.
fn centred(
    cx: &mut Cx,
    n: &pb::NodeProto,
    i: usize,
    zi: usize,
    axis: usize,
    rank: usize,
    tag: &str,
) -> Result<String, ImportError> {
    let out = output(n)?;
    let name = format!("{out}::{tag}");
    let ty = cx.in_ty(n, i)?;
    let mut x = input(n, i).to_string();
    let zt = cx.const_input(n, zi)?;
    // codes of a known grid with the same zero point: the dequantized values over the scale
    if let Some(c) = cx.coded.get(&x).cloned() {
        if zt.as_ref().map_or(Some(0.0), qdq::scalar) == Some(c.zero_point) {
            let s = bind_scalar(cx, &name, "scale", c.scale);
            return cx
                .emit(
                    &node(n, "Div", &[&c.float, &s], &name, tag),
                    Op::Binary(Binary::Div),
                    &[0, 1],
                )
                .map(|()| name);
        }
    }
    x = qdq::as_f32(cx, n, &x, ty.dtype, &name)?;
    let Some(z) = zt.map(|t| t.to_f32()) else {
        let v = cx.req_named(n, &x)?;
        cx.bind(&name, v);
        return Ok(name);
    };
    let z = if z.len() == 1 || rank == 0 {
        z
    } else {
        // one value per index along `axis`: trailing unit axes broadcast it
        let mut shape = vec![1usize; rank - axis];
        shape[0] = z.len();
        z.into_shape_with_order(IxDyn(&shape))
            .map_err(|e| Cx::err(n, format!("zero point {tag}: {e}")))?
    };
    let zn = format!("{name}::zero_point");
    cx.bind(&zn, Val::Const(Tensor::F32(z)));
    cx.emit(
        &node(n, "Sub", &[&x, &zn], &name, tag),
        Op::Binary(Binary::Sub),
        &[0, 1],
    )?;
    Ok(name)
}
