//! Data movement and shape ops: Flatten, Reshape, Squeeze, Unsqueeze (all become a static
//! `Reshape`), Transpose, Concat, Gather, Slice, Pad, Expand, Shape, Cast, Constant,
//! ConstantOfShape, Identity and Dropout (inference: identity), opsets 7 to 27.

use super::attrs::{axis, Attrs};
use super::tensor::tensor_from_proto;
use super::{Cx, ImportError, Val};
use fhec_ir::{DType, Op, PadMode, SliceAxis, Tensor};
use ndarray::{ArrayD, IxDyn};
use tract_onnx::pb;
use tract_onnx::pb::tensor_proto::DataType as D;

pub(super) fn reshape_like(cx: &mut Cx, n: &pb::NodeProto) -> Result<(), ImportError> {
    let a = Attrs::of(n);
    let x = cx.in_ty(n, 0)?;
    let rank = x.rank();
    let shape: Vec<usize> = match n.op_type.as_str() {
        "Flatten" => {
            let ax = a.int("axis", 1)?;
            let ax = if ax == rank as i64 {
                rank
            } else {
                axis(n, ax, rank)?
            };
            let outer: usize = x.shape[..ax].iter().product();
            vec![outer, x.shape[ax..].iter().product()]
        }
        "Reshape" => {
            let target = cx
                .const_input(n, 1)?
                .ok_or_else(|| Cx::err(n, "missing the shape input"))?
                .i64_values();
            check_rank(n, target.len())?;
            let allow_zero = a.int("allowzero", 0)? != 0;
            let mut out = Vec::with_capacity(target.len());
            let mut infer_at = None;
            for (i, &d) in target.iter().enumerate() {
                match d {
                    -1 if infer_at.is_none() => {
                        infer_at = Some(i);
                        out.push(1);
                    }
                    0 if !allow_zero => out.push(*x.shape.get(i).ok_or_else(|| {
                        Cx::err(
                            n,
                            format!("shape {target:?}: 0 at axis {i} has no input axis to copy"),
                        )
                    })?),
                    d if d >= 0 => out.push(d as usize),
                    _ => return Err(Cx::err(n, format!("invalid target shape {target:?}"))),
                }
            }
            if let Some(i) = infer_at {
                let known = fhec_ir::checked_len(&out).unwrap_or(0);
                if known == 0 || x.len() % known != 0 {
                    return Err(Cx::err(n, format!("cannot reshape {x} into {target:?}")));
                }
                out[i] = x.len() / known;
            }
            out
        }
        "Squeeze" => {
            let raw = if cx.opset >= 13 {
                cx.const_input(n, 1)?.map(|t| t.i64_values())
            } else {
                a.ints("axes")?
            };
            let axes = match raw {
                Some(v) if !v.is_empty() => v
                    .iter()
                    .map(|&d| axis(n, d, rank))
                    .collect::<Result<Vec<_>, _>>()?,
                _ => (0..rank).filter(|&i| x.shape[i] == 1).collect(),
            };
            if let Some(&bad) = axes.iter().find(|&&i| x.shape[i] != 1) {
                return Err(Cx::err(
                    n,
                    format!("cannot squeeze axis {bad} of {x}: its size is not 1"),
                ));
            }
            (0..rank)
                .filter(|i| !axes.contains(i))
                .map(|i| x.shape[i])
                .collect()
        }
        "Unsqueeze" => {
            let raw = if cx.opset >= 13 {
                cx.const_input(n, 1)?.map(|t| t.i64_values())
            } else {
                a.ints("axes")?
            };
            let raw = raw.ok_or_else(|| Cx::err(n, "missing axes"))?;
            let out_rank = rank + raw.len();
            check_rank(n, out_rank)?;
            let mut axes = raw
                .iter()
                .map(|&d| axis(n, d, out_rank))
                .collect::<Result<Vec<_>, _>>()?;
            axes.sort_unstable();
            if axes.windows(2).any(|w| w[0] == w[1]) {
                return Err(Cx::err(n, format!("axes {raw:?} repeat an axis")));
            }
            let mut it = x.shape.iter();
            (0..out_rank)
                .map(|i| {
                    if axes.contains(&i) {
                        1
                    } else {
                        it.next().copied().unwrap_or(1)
                    }
                })
                .collect()
        }
        other => unreachable!("invariant: dispatched {other} to reshape_like"),
    };
    cx.emit(n, Op::Reshape { shape }, &[0])
}

pub(super) fn transpose(cx: &mut Cx, n: &pb::NodeProto) -> Result<(), ImportError> {
    let rank = cx.in_ty(n, 0)?.rank();
    let perm = Attrs::of(n)
        .usizes("perm")?
        .unwrap_or_else(|| (0..rank).rev().collect());
    cx.emit(n, Op::Transpose { perm }, &[0])
}

pub(super) fn concat(cx: &mut Cx, n: &pb::NodeProto) -> Result<(), ImportError> {
    let rank = cx.in_ty(n, 0)?.rank();
    let ax = axis(n, Attrs::of(n).int("axis", 0)?, rank)?;
    let ins: Vec<usize> = (0..n.input.len())
        .filter(|&i| !n.input[i].is_empty())
        .collect();
    cx.emit(n, Op::Concat { axis: ax }, &ins)
}

pub(super) fn gather(cx: &mut Cx, n: &pb::NodeProto) -> Result<(), ImportError> {
    let x = cx.in_ty(n, 0)?;
    let ax = axis(n, Attrs::of(n).int("axis", 0)?, x.rank())?;
    let idx = cx
        .const_input(n, 1)?
        .ok_or_else(|| Cx::err(n, "missing indices"))?;
    let dim = x.shape[ax] as i64;
    let mut norm = Vec::with_capacity(idx.len());
    for v in idx.i64_values() {
        let w = if v < 0 { v + dim } else { v };
        if !(0..dim).contains(&w) {
            return Err(Cx::err(
                n,
                format!("index {v} is out of range for axis {ax} of size {dim}"),
            ));
        }
        norm.push(w);
    }
    let indices =
        Tensor::from_i64s(idx.shape(), norm).ok_or_else(|| Cx::err(n, "bad indices shape"))?;
    cx.emit(n, Op::Gather { axis: ax, indices }, &[0])
}

pub(super) fn slice(cx: &mut Cx, n: &pb::NodeProto) -> Result<(), ImportError> {
    let a = Attrs::of(n);
    let x = cx.in_ty(n, 0)?;
    let rank = x.rank();
    let (starts, ends, axes, steps) = if cx.opset < 10 {
        (
            a.ints("starts")?
                .ok_or_else(|| Cx::err(n, "missing starts"))?,
            a.ints("ends")?.ok_or_else(|| Cx::err(n, "missing ends"))?,
            a.ints("axes")?,
            None,
        )
    } else {
        let need = |i: usize, what: &str| -> Result<Vec<i64>, ImportError> {
            Ok(cx
                .const_input(n, i)?
                .ok_or_else(|| Cx::err(n, format!("missing {what}")))?
                .i64_values())
        };
        (
            need(1, "starts")?,
            need(2, "ends")?,
            cx.const_input(n, 3)?.map(|t| t.i64_values()),
            cx.const_input(n, 4)?.map(|t| t.i64_values()),
        )
    };
    let axes = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Err(Cx::err(
            n,
            "starts, ends, axes and steps must have the same length",
        ));
    }
    let mut out = Vec::with_capacity(starts.len());
    for i in 0..starts.len() {
        let ax = axis(n, axes[i], rank)?;
        let dim = x.shape[ax] as i64;
        let step = steps[i];
        if step == 0 {
            return Err(Cx::err(n, "slice step must not be 0"));
        }
        let norm = |v: i64| if v < 0 { v.saturating_add(dim) } else { v };
        let (mut s, mut e) = (norm(starts[i]), norm(ends[i]));
        let len = if step > 0 {
            s = s.clamp(0, dim);
            e = e.clamp(0, dim);
            if e > s {
                ((i128::from(e - s) - 1) / i128::from(step) + 1) as i64
            } else {
                0
            }
        } else if dim == 0 {
            0
        } else {
            s = s.clamp(0, dim - 1);
            e = e.clamp(-1, dim - 1);
            if s > e {
                ((i128::from(s - e) - 1) / -i128::from(step) + 1) as i64
            } else {
                0
            }
        };
        out.push(SliceAxis {
            axis: ax,
            start: if len > 0 { s } else { 0 },
            step,
            len: len as usize,
        });
    }
    cx.emit(n, Op::Slice { axes: out }, &[0])
}

pub(super) fn pad(cx: &mut Cx, n: &pb::NodeProto) -> Result<(), ImportError> {
    let a = Attrs::of(n);
    let x = cx.in_ty(n, 0)?;
    let rank = x.rank();
    let mode = match a.string("mode", "constant")?.as_str() {
        "constant" => PadMode::Constant,
        "reflect" => PadMode::Reflect,
        "edge" => PadMode::Edge,
        "wrap" => PadMode::Wrap,
        m => return Err(Cx::err(n, format!("pad mode `{m}` is not supported"))),
    };
    let (pads, value, axes) = if cx.opset < 11 {
        (
            a.ints("pads")?.ok_or_else(|| Cx::err(n, "missing pads"))?,
            a.float("value", 0.0)?,
            None,
        )
    } else {
        let pads = cx
            .const_input(n, 1)?
            .ok_or_else(|| Cx::err(n, "missing pads"))?
            .i64_values();
        let value = cx
            .const_input(n, 2)?
            .map(|t| t.f32_values().first().copied().unwrap_or(0.0))
            .unwrap_or(0.0);
        let axes = cx.const_input(n, 3)?.map(|t| t.i64_values());
        (pads, value, axes)
    };
    let axes: Vec<usize> = match axes {
        Some(v) => v
            .iter()
            .map(|&d| axis(n, d, rank))
            .collect::<Result<_, _>>()?,
        None => (0..rank).collect(),
    };
    if pads.len() != 2 * axes.len() {
        return Err(Cx::err(
            n,
            format!("pads {pads:?} must give 2 × {} values", axes.len()),
        ));
    }
    if pads.iter().any(|&p| p < 0) {
        return Err(Cx::err(
            n,
            "negative pads (cropping) are not supported; use Slice",
        ));
    }
    let (mut begin, mut end) = (vec![0; rank], vec![0; rank]);
    for (i, &ax) in axes.iter().enumerate() {
        begin[ax] = pads[i] as usize;
        end[ax] = pads[i + axes.len()] as usize;
    }
    cx.emit(
        n,
        Op::Pad {
            begin,
            end,
            mode,
            value,
        },
        &[0],
    )
}

pub(super) fn expand(cx: &mut Cx, n: &pb::NodeProto) -> Result<(), ImportError> {
    let x = cx.in_ty(n, 0)?;
    let target = cx
        .const_input(n, 1)?
        .ok_or_else(|| Cx::err(n, "missing shape"))?
        .i64_values();
    let target = shape_arg(cx, n, &target)?;
    let shape = fhec_ir::kernels::broadcast_shapes(&x.shape, &target)
        .map_err(|e| Cx::err(n, e.to_string()))?;
    cx.emit(n, Op::Expand { shape }, &[0])
}

pub(super) fn shape(cx: &mut Cx, n: &pb::NodeProto) -> Result<(), ImportError> {
    let a = Attrs::of(n);
    let x = cx.in_ty(n, 0)?;
    let r = x.rank() as i64;
    let clampi = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let start = clampi(a.int("start", 0)?);
    let end = clampi(a.int("end", r)?);
    let dims: Vec<i64> = x.shape[start..end.max(start)]
        .iter()
        .map(|&d| d as i64)
        .collect();
    let t = Tensor::from_i64s(&[dims.len()], dims).ok_or_else(|| Cx::err(n, "shape"))?;
    bind_out(cx, n, Val::Const(t))
}

fn bind_out(cx: &mut Cx, n: &pb::NodeProto, v: Val) -> Result<(), ImportError> {
    let out = n
        .output
        .first()
        .ok_or_else(|| Cx::err(n, "node has no output"))?
        .clone();
    cx.bind(&out, v);
    Ok(())
}

fn dtype_of(n: &pb::NodeProto, to: i64) -> Result<DType, ImportError> {
    super::tensor::ir_dtype(to as i32).ok_or_else(|| {
        Cx::err(
            n,
            format!(
                "cast to {} is not supported",
                super::tensor::elem_type_name(to as i32)
            ),
        )
    })
}

pub(super) fn cast(cx: &mut Cx, n: &pb::NodeProto) -> Result<(), ImportError> {
    let code = Attrs::of(n).int("to", 1)?;
    let to = dtype_of(n, code)?;
    // A cast to a narrow float keeps f32 storage but rounds as the narrow type would.
    let round = match D::try_from(code as i32) {
        Ok(D::Float16) => Some(fhec_ir::Unary::RoundF16),
        Ok(D::Bfloat16) => Some(fhec_ir::Unary::RoundBf16),
        _ => None,
    };
    match round {
        Some(r) if cx.in_ty(n, 0)?.dtype == DType::F32 => cx.emit(n, Op::Unary(r), &[0]),
        Some(r) => {
            let tmp = format!("{}::as_f32", n.output.first().cloned().unwrap_or_default());
            let c = pb::NodeProto {
                output: vec![tmp.clone()],
                ..n.clone()
            };
            cx.emit(&c, Op::Cast { to: DType::F32 }, &[0])?;
            let rn = pb::NodeProto {
                input: vec![tmp],
                ..n.clone()
            };
            cx.emit(&rn, Op::Unary(r), &[0])
        }
        None => cx.emit(n, Op::Cast { to }, &[0]),
    }
}

pub(super) fn constant(cx: &mut Cx, n: &pb::NodeProto) -> Result<(), ImportError> {
    let a = Attrs::of(n);
    let t = if let Some(t) = a.tensor("value")? {
        if let Some(out) = n.output.first() {
            cx.set_elem_type(out, t.data_type);
        }
        tensor_from_proto(t)?
    } else if a.has("value_float") {
        Tensor::scalar_f32(a.float("value_float", 0.0)?)
    } else if let Some(v) = a.floats("value_floats")? {
        Tensor::F32(
            ArrayD::from_shape_vec(IxDyn(&[v.len()]), v).map_err(|e| Cx::err(n, e.to_string()))?,
        )
    } else if a.has("value_int") {
        Tensor::I64(ArrayD::from_elem(IxDyn(&[]), a.int("value_int", 0)?))
    } else if let Some(v) = a.ints("value_ints")? {
        Tensor::from_i64s(&[v.len()], v).ok_or_else(|| Cx::err(n, "bad value_ints"))?
    } else {
        return Err(Cx::err(n, "Constant has no supported value attribute (sparse and string constants are not supported)"));
    };
    bind_out(cx, n, Val::Const(t))
}

pub(super) fn constant_of_shape(cx: &mut Cx, n: &pb::NodeProto) -> Result<(), ImportError> {
    let shape = cx
        .const_input(n, 0)?
        .ok_or_else(|| Cx::err(n, "missing shape"))?
        .i64_values();
    let shape = shape_arg(cx, n, &shape)?;
    cx.charge(n, &shape)?;
    let fill = match Attrs::of(n).tensor("value")? {
        Some(t) => tensor_from_proto(t)?,
        None => Tensor::scalar_f32(0.0),
    };
    let t = match fill {
        Tensor::F32(v) => Tensor::F32(ArrayD::from_elem(
            IxDyn(&shape),
            v.iter().next().copied().unwrap_or(0.0),
        )),
        Tensor::I64(v) => Tensor::I64(ArrayD::from_elem(
            IxDyn(&shape),
            v.iter().next().copied().unwrap_or(0),
        )),
    };
    bind_out(cx, n, Val::Const(t))
}

/// Refuses a rank above [`fhec_ir::limits::MAX_RANK`] before anything of that rank is built.
fn check_rank(n: &pb::NodeProto, rank: usize) -> Result<(), ImportError> {
    if rank > fhec_ir::limits::MAX_RANK {
        return Err(Cx::err(
            n,
            format!(
                "a tensor of rank {rank}; fhec supports rank up to {}",
                fhec_ir::limits::MAX_RANK
            ),
        ));
    }
    Ok(())
}

/// A shape given as data (Expand, ConstantOfShape): non-negative dimensions, a rank and an
/// element count within the limits.
fn shape_arg(cx: &Cx, n: &pb::NodeProto, dims: &[i64]) -> Result<Vec<usize>, ImportError> {
    check_rank(n, dims.len())?;
    let shape = dims
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| Cx::err(n, format!("invalid shape {dims:?}: negative dimension")))?;
    cx.check_elements(n, &shape)?;
    Ok(shape)
}

pub(super) fn identity(cx: &mut Cx, n: &pb::NodeProto) -> Result<(), ImportError> {
    if n.op_type == "Dropout" {
        if n.output.iter().skip(1).any(|o| !o.is_empty()) {
            return Err(Cx::err(
                n,
                "the mask output of Dropout is not supported; export in eval() mode",
            ));
        }
        // opset 12+: a third input `training_mode`; a true or run-time value means training
        let training = match cx.input(n, 2)? {
            None => false,
            Some(Val::Const(t)) => t.i64_values().first().is_some_and(|&v| v != 0),
            Some(Val::Node(_)) => true,
        };
        let ratio = match cx.input(n, 1)? {
            None => 0.5,
            Some(Val::Const(t)) => t.f32_values().first().copied().unwrap_or(0.5),
            Some(Val::Node(_)) => 0.5,
        };
        if training && ratio != 0.0 {
            return Err(Cx::err(
                n,
                "training-mode Dropout is not supported; export the model in eval() mode",
            ));
        }
    }
    let v = cx.req(n, 0)?.clone();
    bind_out(cx, n, v)
}
