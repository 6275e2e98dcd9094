//! QuantizeLinear and DequantizeLinear (opsets 10 to 23): per tensor, per axis (13+) and
//! blocked (21+), with int8, uint8, int16 and uint16 grids (int32 for dequantization).
//!
//! Both become float ops with ONNX's reference semantics, so that a QDQ graph (onnxruntime's
//! `quantize_static`, torch's QAT exports) runs in float mode and compiles like any other:
//! `QuantizeLinear(x) = clip(round_half_even(x / s) + z, qmin, qmax)` (integers held in f32)
//! and `DequantizeLinear(q) = (q − z) · s`. The scale and zero point are constants expanded
//! to the input's shape, so every grid form is one elementwise chain that `fuse_tlu` folds
//! into a table (and constant folding into the weights). A QuantizeLinear read only by a
//! DequantizeLinear with the same per-tensor scale and zero point (the QDQ pattern) becomes
//! one `Unary::FakeQuant`, whose grid the quantize pass compiles on. Float8, int4 and other
//! grids are refused with a one-line error.

use super::attrs::Attrs;
use super::elementwise::sub_node as node;
use super::tensor::elem_type_name;
use super::{Cx, ImportError, Val};
use fhec_ir::{Binary, DType, Op, Tensor, Unary};
use ndarray::{ArrayD, Dimension, IxDyn};
use tract_onnx::pb;
use tract_onnx::pb::tensor_proto::DataType as D;

/// The integer range of a quantized element type.
fn int_range(n: &pb::NodeProto, code: i32, dequant: bool) -> Result<(f32, f32), ImportError> {
    Ok(match D::try_from(code) {
        Ok(D::Int8) => (-128.0, 127.0),
        Ok(D::Uint8) => (0.0, 255.0),
        Ok(D::Int16) => (-32768.0, 32767.0),
        Ok(D::Uint16) => (0.0, 65535.0),
        Ok(D::Int32) if dequant => (i32::MIN as f32, i32::MAX as f32),
        _ => {
            return Err(Cx::err(
                n,
                format!(
                    "quantization to {} is not supported (int8, uint8, int16 and uint16 grids are); re-export with int8 or uint8",
                    elem_type_name(code)
                ),
            ))
        }
    })
}

/// `scale` or `zero_point` in a shape that broadcasts against `shape`: the scalar itself per
/// tensor, expanded to `shape` per axis or blocked.
fn expand(
    cx: &mut Cx,
    n: &pb::NodeProto,
    shape: &[usize],
    what: &str,
    t: &Tensor,
) -> Result<ArrayD<f32>, ImportError> {
    let a = Attrs::of(n);
    let rank = shape.len() as i64;
    let axis = a.int("axis", 1)?;
    let block = a.int("block_size", 0)?;
    let v = t.to_f32();
    if let Some(x) = scalar(t) {
        // one value for the whole tensor: the elementwise ops broadcast it
        return Ok(ArrayD::from_elem(IxDyn(&[]), x));
    }
    if !(-rank..rank).contains(&axis) {
        return Err(Cx::err(
            n,
            format!("axis {axis} is out of range for rank {rank}"),
        ));
    }
    let axis = axis.rem_euclid(rank.max(1)) as usize;
    cx.charge(n, shape)?;
    if block <= 0 {
        // per axis: one value per index along `axis`
        if v.ndim() != 1 || v.len() != shape[axis] {
            return Err(Cx::err(
                n,
                format!(
                    "{what} has shape {:?}; per-axis quantization along axis {axis} needs {} values",
                    v.shape(),
                    shape[axis]
                ),
            ));
        }
        return Ok(ArrayD::from_shape_fn(IxDyn(shape), |ix| v[[ix[axis]]]));
    }
    // blocked: the input's shape with `axis` cut into blocks of `block`
    let block = block as usize;
    let want: Vec<usize> = shape
        .iter()
        .enumerate()
        .map(|(i, &d)| if i == axis { d.div_ceil(block) } else { d })
        .collect();
    if v.shape() != want.as_slice() {
        return Err(Cx::err(
            n,
            format!(
                "{what} has shape {:?}; blocks of {block} along axis {axis} need {want:?}",
                v.shape()
            ),
        ));
    }
    Ok(ArrayD::from_shape_fn(IxDyn(shape), |ix| {
        let mut j = ix.as_array_view().to_vec();
        j[axis] /= block;
        v[IxDyn(&j)]
    }))
}

/// The one value of a single-element tensor.
fn scalar(t: &Tensor) -> Option<f32> {
    (t.len() == 1)
        .then(|| t.to_f32().iter().copied().next())
        .flatten()
}

/// A required constant input, or an error naming it.
fn required(cx: &Cx, n: &pb::NodeProto, i: usize, what: &str) -> Result<Tensor, ImportError> {
    cx.const_input(n, i)?
        .ok_or_else(|| Cx::err(n, format!("missing required input {i} ({what})")))
}

/// Refuses a scale that is not finite and positive.
fn check_scale(n: &pb::NodeProto, s: &Tensor) -> Result<(), ImportError> {
    if s.to_f32().iter().any(|v| !(v.is_finite() && *v > 0.0)) {
        return Err(Cx::err(n, "the scale must be finite and positive"));
    }
    Ok(())
}

/// Emits `steps` in order from `x`: each an op on the previous result (and, for a binary
/// op, the named constant), the last one writing `out`.
fn emit_chain(
    cx: &mut Cx,
    n: &pb::NodeProto,
    x: &str,
    out: &str,
    steps: &[(&str, Op, Option<&str>)],
) -> Result<(), ImportError> {
    let mut cur = x.to_string();
    for (k, (tag, op, c)) in steps.iter().enumerate() {
        let dst = if k + 1 == steps.len() {
            out.to_string()
        } else {
            format!("{out}::{tag}")
        };
        let (ins, at): (Vec<&str>, &[usize]) = match c {
            Some(c) => (vec![&cur, c], &[0, 1]),
            None => (vec![&cur], &[0]),
        };
        cx.emit(&node(n, op.name(), &ins, &dst, tag), op.clone(), at)?;
        cur = dst;
    }
    Ok(())
}

/// Binds a constant under a name derived from the node's output.
fn bind_const(cx: &mut Cx, out: &str, tag: &str, a: ArrayD<f32>) -> String {
    let name = format!("{out}::{tag}");
    cx.bind(&name, Val::Const(Tensor::F32(a)));
    name
}

fn output(n: &pb::NodeProto) -> Result<String, ImportError> {
    n.output
        .first()
        .cloned()
        .ok_or_else(|| Cx::err(n, "node has no output"))
}

/// The grid's scale and zero point, broadcasting against the input's shape; checks the
/// scale.
fn grid(
    cx: &mut Cx,
    n: &pb::NodeProto,
    shape: &[usize],
) -> Result<(ArrayD<f32>, ArrayD<f32>), ImportError> {
    let scale = required(cx, n, 1, "the scale")?;
    check_scale(n, &scale)?;
    let s = expand(cx, n, shape, "the scale", &scale)?;
    let z = match cx.const_input(n, 2)? {
        Some(z) => expand(cx, n, shape, "the zero point", &z)?,
        None => ArrayD::zeros(IxDyn(&[])),
    };
    Ok((s, z))
}

/// Outputs of QuantizeLinear nodes whose only reader is a DequantizeLinear with the same
/// scale and zero point inputs (and that are not graph outputs).
pub(super) fn pairs(g: &pb::GraphProto) -> std::collections::HashSet<String> {
    let mut readers: std::collections::HashMap<&str, Vec<&pb::NodeProto>> = Default::default();
    for n in &g.node {
        for i in &n.input {
            readers.entry(i.as_str()).or_default().push(n);
        }
    }
    let outputs: Vec<&str> = g.output.iter().map(|o| o.name.as_str()).collect();
    g.node
        .iter()
        .filter(|q| q.op_type == "QuantizeLinear")
        .filter_map(|q| {
            let out = q.output.first()?;
            let rs = readers.get(out.as_str())?;
            let [dq] = rs.as_slice() else { return None };
            let same = dq.op_type == "DequantizeLinear"
                && dq.input.first() == Some(out)
                && q.input.get(1) == dq.input.get(1)
                && q.input.get(2).filter(|s| !s.is_empty())
                    == dq.input.get(2).filter(|s| !s.is_empty());
            (same && !outputs.contains(&out.as_str())).then(|| out.clone())
        })
        .collect()
}

/// The per-tensor (scale, zero point) of a node, if both are scalars.
fn scalar_grid(cx: &Cx, n: &pb::NodeProto) -> Result<Option<(f32, f32)>, ImportError> {
    let Some(s) = cx.const_input(n, 1)? else {
        return Ok(None);
    };
    let z = cx.const_input(n, 2)?;
    Ok(match (scalar(&s), z.as_ref().map(scalar)) {
        (Some(s), None) => Some((s, 0.0)),
        (Some(s), Some(Some(z))) => Some((s, z)),
        _ => None,
    })
}

/// `clip(round_half_even(x / s) + z, qmin, qmax)`.
pub(super) fn quantize_linear(cx: &mut Cx, n: &pb::NodeProto) -> Result<(), ImportError> {
    let a = Attrs::of(n);
    // the grid's element type: the zero point's, else `output_dtype` (21+), else uint8
    let code = match cx.elem_type(n.input.get(2).map(String::as_str).unwrap_or("")) {
        Some(c) => c,
        None => match a.int("output_dtype", 0)? {
            0 => D::Uint8 as i32,
            c => c as i32,
        },
    };
    let (qmin, qmax) = int_range(n, code, false)?;
    let ty = cx.in_ty(n, 0)?;
    if ty.dtype != DType::F32 {
        return Err(Cx::err(n, "QuantizeLinear needs a float input"));
    }
    let out = output(n)?;
    let (s, z) = grid(cx, n, &ty.shape)?;
    if cx.qdq_pairs.contains(&out) && scalar_grid(cx, n)?.is_some() {
        // the DequantizeLinear that reads it emits the pair as one FakeQuant
        let x = cx.req(n, 0)?.clone();
        cx.bind(&out, x);
        cx.pending_fq.insert(out, (qmin, qmax));
        return Ok(());
    }
    let sn = bind_const(cx, &out, "scale", s);
    let zn = bind_const(cx, &out, "zero_point", z);
    emit_chain(
        cx,
        n,
        &n.input[0],
        &out,
        &[
            ("scaled", Op::Binary(Binary::Div), Some(&sn)),
            ("rounded", Op::Unary(Unary::Round), None),
            ("shifted", Op::Binary(Binary::Add), Some(&zn)),
            (
                "saturated",
                Op::Unary(Unary::Clip {
                    min: qmin,
                    max: qmax,
                }),
                None,
            ),
        ],
    )
}

/// `(x − z) · s`.
pub(super) fn dequantize_linear(cx: &mut Cx, n: &pb::NodeProto) -> Result<(), ImportError> {
    if let Some(&(qmin, qmax)) = cx.pending_fq.get(&n.input[0]) {
        let (scale, zero_point) =
            scalar_grid(cx, n)?.ok_or_else(|| Cx::err(n, "invariant: a paired QuantizeLinear"))?;
        return cx.emit(
            n,
            Op::Unary(Unary::FakeQuant {
                scale,
                zero_point,
                qmin,
                qmax,
            }),
            &[0],
        );
    }
    if let Some(code) = cx.elem_type(&n.input[0]) {
        int_range(n, code, true)?;
    }
    let ty = cx.in_ty(n, 0)?;
    let (s, z) = grid(cx, n, &ty.shape)?;
    let out = output(n)?;
    let mut x = n.input[0].clone();
    if ty.dtype != DType::F32 {
        let c = format!("{out}::as_f32");
        cx.emit(
            &node(n, "Cast", &[&x], &c, "cast"),
            Op::Cast { to: DType::F32 },
            &[0],
        )?;
        x = c;
    }
    let sn = bind_const(cx, &out, "scale", s);
    let zn = bind_const(cx, &out, "zero_point", z);
    emit_chain(
        cx,
        n,
        &x,
        &out,
        &[
            ("centred", Op::Binary(Binary::Sub), Some(&zn)),
            ("scaled", Op::Binary(Binary::Mul), Some(&sn)),
        ],
    )
}

/// QONNX's `Quant` (Brevitas' QONNX export): `(round(clip(x / s + z, lo, hi)) − z) · s` with
/// `lo, hi` from `bitwidth`, `signed` and `narrow` (qonnx's `int_quant`), rounding half to even
/// (`ROUND` / `HALF_EVEN`). A per-tensor grid with zero point 0 (Brevitas' default) is one
/// `FakeQuant`; other grids are the same steps as elementwise ops, in qonnx's order.
pub(super) fn qonnx_quant(cx: &mut Cx, n: &pb::NodeProto) -> Result<(), ImportError> {
    let a = Attrs::of(n);
    let mode = a.string("rounding_mode", "ROUND")?.to_uppercase();
    if mode != "ROUND" && mode != "HALF_EVEN" {
        return Err(Cx::err(
            n,
            format!("rounding_mode {mode} is not supported (ROUND / HALF_EVEN is); re-export with round-to-nearest quantizers"),
        ));
    }
    let signed = a.int("signed", 1)? != 0;
    let narrow = a.int("narrow", 0)? != 0;
    let bits = scalar(&required(cx, n, 3, "the bit width")?).unwrap_or(0.0);
    if bits.fract() != 0.0 || !(2.0..=16.0).contains(&bits) {
        return Err(Cx::err(
            n,
            format!("a {bits}-bit quantizer is not supported (integer widths 2 to 16 are; 1-bit quantizers are BipolarQuant's)"),
        ));
    }
    let b = bits as u32;
    let (lo, hi) = match (signed, narrow) {
        (true, true) => (-((1i64 << (b - 1)) - 1), (1i64 << (b - 1)) - 1),
        (true, false) => (-(1i64 << (b - 1)), (1i64 << (b - 1)) - 1),
        (false, true) => (0, (1i64 << b) - 2),
        (false, false) => (0, (1i64 << b) - 1),
    };
    let (lo, hi) = (lo as f32, hi as f32);
    let scale = required(cx, n, 1, "the scale")?;
    let zp = required(cx, n, 2, "the zero point")?;
    check_scale(n, &scale)?;
    if zp
        .to_f32()
        .iter()
        .any(|v| !v.is_finite() || v.fract() != 0.0)
    {
        return Err(Cx::err(n, "the zero point must hold integers"));
    }
    let ty = cx.in_ty(n, 0)?;
    if ty.dtype != DType::F32 {
        return Err(Cx::err(n, "Quant needs a float input"));
    }
    if let (Some(s), Some(0.0)) = (scalar(&scale), scalar(&zp)) {
        return cx.emit(
            n,
            Op::Unary(Unary::FakeQuant {
                scale: s,
                zero_point: 0.0,
                qmin: lo,
                qmax: hi,
            }),
            &[0],
        );
    }
    // broadcastable scale / zero point: qonnx's steps, in its order
    let out = output(n)?;
    let sn = bind_const(cx, &out, "scale", scale.to_f32());
    let zn = bind_const(cx, &out, "zero_point", zp.to_f32());
    emit_chain(
        cx,
        n,
        &n.input[0],
        &out,
        &[
            ("scaled", Op::Binary(Binary::Div), Some(&sn)),
            ("shifted", Op::Binary(Binary::Add), Some(&zn)),
            ("clipped", Op::Unary(Unary::Clip { min: lo, max: hi }), None),
            ("rounded", Op::Unary(Unary::Round), None),
            ("centred", Op::Binary(Binary::Sub), Some(&zn)),
            ("rescaled", Op::Binary(Binary::Mul), Some(&sn)),
        ],
    )
}
