//! QuantizeLinear and DequantizeLinear (opsets 10 to 23): per tensor, per axis (13+) and
//! blocked (21+), with int8, uint8, int16 and uint16 grids (int32 for dequantization).
//!
//! Both follow ONNX's reference semantics, so that a QDQ graph (onnxruntime's
//! `quantize_static`, Brevitas' QCDQ export, torch's QAT exports) runs in float mode and
//! compiles like any other: `QuantizeLinear(x) = clip(round_half_even(x / s) + z, qmin,
//! qmax)` (integers held in f32) and `DequantizeLinear(q) = (q − z) · s`.
//!
//! A per-tensor QuantizeLinear produces a [`Coded`] tensor: the graph holds its dequantized
//! values as one `Unary::FakeQuant`, whose grid the quantize pass compiles on, and a
//! DequantizeLinear on the same grid reads those values. Ops that only move codes
//! ([`FOLLOWS_CODES`]) keep a tensor coded. Other grids (per axis, blocked) are elementwise
//! chains with the scale and zero point expanded to the input's shape, which `fuse_tlu`
//! folds into a table (and constant folding into the weights). Float8, int4 and other grids
//! are refused with a one-line error.

use super::attrs::Attrs;
use super::elementwise::{bind_scalar, emit_steps, sub_node as node};
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
pub(super) fn scalar(t: &Tensor) -> Option<f32> {
    (t.len() == 1)
        .then(|| t.to_f32().iter().copied().next())
        .flatten()
}

/// A required constant input, or an error naming it.
pub(super) fn required(
    cx: &Cx,
    n: &pb::NodeProto,
    i: usize,
    what: &str,
) -> Result<Tensor, ImportError> {
    cx.const_input(n, i)?
        .ok_or_else(|| Cx::err(n, format!("missing required input {i} ({what})")))
}

/// Refuses a scale that is not finite and positive.
pub(super) fn check_scale(n: &pb::NodeProto, s: &Tensor) -> Result<(), ImportError> {
    if s.to_f32().iter().any(|v| !(v.is_finite() && *v > 0.0)) {
        return Err(Cx::err(n, "the scale must be finite and positive"));
    }
    Ok(())
}

/// Emits `steps` in order from `x`: each an op on the previous result (and, for a binary
/// op, the named constant), the last one writing `out`.
pub(super) fn emit_chain(
    cx: &mut Cx,
    n: &pb::NodeProto,
    x: &str,
    out: &str,
    steps: &[(&str, Op, Option<&str>)],
) -> Result<(), ImportError> {
    let mut prev = x.to_string();
    let mut chain = Vec::with_capacity(steps.len());
    for (tag, op, c) in steps {
        let mut ins = vec![prev];
        ins.extend(c.map(str::to_string));
        chain.push((*tag, op.clone(), ins));
        prev = format!("{out}::{tag}");
    }
    emit_steps(cx, n, out, chain)
}

/// `x` (of element type `dtype`) as f32: itself, or a Cast bound as `{base}::as_f32`.
pub(super) fn as_f32(
    cx: &mut Cx,
    n: &pb::NodeProto,
    x: &str,
    dtype: DType,
    base: &str,
) -> Result<String, ImportError> {
    if dtype == DType::F32 {
        return Ok(x.to_string());
    }
    let c = format!("{base}::as_f32");
    cx.emit(
        &node(n, "Cast", &[x], &c, "cast"),
        Op::Cast { to: DType::F32 },
        &[0],
    )?;
    Ok(c)
}

/// Binds a constant under a name derived from the node's output.
pub(super) fn bind_const(cx: &mut Cx, out: &str, tag: &str, a: ArrayD<f32>) -> String {
    let name = format!("{out}::{tag}");
    cx.bind(&name, Val::Const(Tensor::F32(a)));
    name
}

pub(super) fn output(n: &pb::NodeProto) -> Result<String, ImportError> {
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

/// A tensor of integer codes on a per-tensor grid (a QuantizeLinear's or a QLinear op's
/// output) whose dequantized values the graph also holds, as a `FakeQuant`: readers that
/// dequantize it on the same grid read those values (the grid the quantize pass compiles
/// on), and the codes themselves are computed only where something reads them raw (dead
/// code otherwise).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Coded {
    /// The float value that was quantized.
    pub src: String,
    /// `(codes − zero_point) · scale`: `FakeQuant(src)`.
    pub float: String,
    pub scale: f32,
    pub zero_point: f32,
    pub qmin: f32,
    pub qmax: f32,
}

impl Coded {
    fn fake_quant(&self) -> Op {
        Op::Unary(Unary::FakeQuant {
            scale: self.scale,
            zero_point: self.zero_point,
            qmin: self.qmin,
            qmax: self.qmax,
        })
    }
}

/// Emits `c.float = FakeQuant(c.src)` and the codes `out = round(c.float / s + z)` (the
/// rounding only clears float error: the quotient is an integer), and records `out` as coded.
fn emit_coded(cx: &mut Cx, n: &pb::NodeProto, out: &str, c: Coded) -> Result<(), ImportError> {
    cx.emit(
        &node(n, "FakeQuant", &[&c.src], &c.float, "grid"),
        c.fake_quant(),
        &[0],
    )?;
    let sn = bind_scalar(cx, out, "scale", c.scale);
    let zn = bind_scalar(cx, out, "zero_point", c.zero_point);
    emit_chain(
        cx,
        n,
        &c.float,
        out,
        &[
            ("unscaled", Op::Binary(Binary::Div), Some(&sn)),
            ("shifted", Op::Binary(Binary::Add), Some(&zn)),
            ("codes", Op::Unary(Unary::Round), None),
        ],
    )?;
    cx.coded.insert(out.to_string(), c);
    Ok(())
}

/// Ops that move or select code values without changing them (or, for Clip with integer
/// bounds and MaxPool, keep them on the grid): applied to a coded tensor, they are applied
/// to its dequantized values too, and their output stays coded.
pub(super) const FOLLOWS_CODES: &[&str] = &[
    "Reshape",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Transpose",
    "Identity",
    "Dropout",
    "MaxPool",
    "Slice",
    "Gather",
    "Clip",
];

/// After `n` (one of [`FOLLOWS_CODES`]) has been converted on codes: if its data input is
/// coded, the same op on the dequantized values, so that a later DequantizeLinear or QLinear
/// op reads those (Brevitas' QCDQ export clips codes between QuantizeLinear and
/// DequantizeLinear; onnxruntime's QOperator graphs reshape codes before a QGemm).
pub(super) fn follow_codes(cx: &mut Cx, n: &pb::NodeProto) -> Result<(), ImportError> {
    let Some(c) = n.input.first().and_then(|i| cx.coded.get(i)).cloned() else {
        return Ok(());
    };
    let out = output(n)?;
    let float = format!("{out}::dequantized");
    if n.op_type == "Clip" {
        // integer bounds narrow the grid: one FakeQuant of the quantized float
        let a = Attrs::of(n);
        let bound = |i: usize, attr: &str, d: f32| -> Result<Option<f32>, ImportError> {
            if cx.opset < 11 {
                return Ok(Some(a.float(attr, d)?));
            }
            Ok(match cx.input(n, i)? {
                None => Some(d),
                Some(Val::Const(t)) => scalar(t),
                Some(Val::Node(_)) => None,
            })
        };
        let (Some(lo), Some(hi)) = (
            bound(1, "min", f32::NEG_INFINITY)?,
            bound(2, "max", f32::INFINITY)?,
        ) else {
            return Ok(());
        };
        let (qmin, qmax) = (c.qmin.max(lo.ceil()), c.qmax.min(hi.floor()));
        if qmin > qmax {
            return Ok(());
        }
        let narrowed = Coded {
            float,
            qmin,
            qmax,
            ..c
        };
        cx.emit(
            &node(n, "FakeQuant", &[&narrowed.src], &narrowed.float, "grid"),
            narrowed.fake_quant(),
            &[0],
        )?;
        cx.coded.insert(out, narrowed);
        return Ok(());
    }
    let mut on_float = n.clone();
    on_float.input[0] = c.float.clone();
    on_float.output = vec![float.clone()];
    on_float.name = format!("{}#dequantized", Cx::node_name(n));
    super::convert(cx, &on_float)?;
    cx.coded.insert(
        out,
        Coded {
            src: float.clone(),
            float,
            ..c
        },
    );
    Ok(())
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
    if let Some((scale, zero_point)) = scalar_grid(cx, n)? {
        // one grid for the tensor: the dequantized values as one FakeQuant (what a
        // DequantizeLinear or a QLinear op reads), the codes derived from them
        let c = Coded {
            src: n.input[0].clone(),
            float: format!("{out}::dequantized"),
            scale,
            zero_point,
            qmin,
            qmax,
        };
        return emit_coded(cx, n, &out, c);
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
    if let Some(c) = cx.coded.get(&n.input[0]).cloned() {
        if scalar_grid(cx, n)? == Some((c.scale, c.zero_point)) {
            // the codes' own grid: the dequantized values the graph already holds
            let v = cx.req_named(n, &c.float)?;
            cx.bind(&output(n)?, v);
            return Ok(());
        }
    }
    if let Some(code) = cx.elem_type(&n.input[0]) {
        int_range(n, code, true)?;
    }
    let ty = cx.in_ty(n, 0)?;
    let (s, z) = grid(cx, n, &ty.shape)?;
    let out = output(n)?;
    let x = as_f32(cx, n, &n.input[0], ty.dtype, &out)?;
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
