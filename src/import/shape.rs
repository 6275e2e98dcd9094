//! Data movement and shape ops: Flatten, Reshape, Squeeze, Unsqueeze (all become a static
//! `Reshape`), Transpose, Concat, Gather, Slice, Pad, Expand, Shape, Cast, Constant,
//! ConstantOfShape, Identity and Dropout (inference: identity), opsets 7 to 27.

use super::attrs::{axis, Attrs};
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
        cx.tensor(t)?
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
        Some(t) => cx.tensor(t)?,
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

/// `Resize` (opsets 10–19) and `Upsample` (7–9) in `nearest` mode: each output coordinate
/// reads one input coordinate, per axis, by ONNX's formula (the coordinate transformation
/// mode, then the nearest mode, clamped to the input), so the op is one `Gather` per resized
/// axis with those indices: register renaming on encrypted values, exact for up- and
/// down-sampling. Linear and cubic modes, `tf_crop_and_resize`, `half_pixel_symmetric` and
/// the `axes` / `keep_aspect_ratio_policy` forms are refused naming the attribute.
pub(super) fn resize(cx: &mut Cx, n: &pb::NodeProto) -> Result<(), ImportError> {
    let a = Attrs::of(n);
    let x = cx.in_ty(n, 0)?;
    let rank = x.rank();
    let mode = a.string("mode", "nearest")?;
    if mode != "nearest" {
        return Err(Cx::err(
            n,
            format!("mode `{mode}` is not supported (nearest is: it only moves values; interpolation would need products of encrypted values)"),
        ));
    }
    let upsample = n.op_type == "Upsample";
    // Upsample and Resize-10: x_in = x_out / scale, floor
    let legacy = upsample || cx.opset < 11;
    let ctm = if legacy {
        "asymmetric".to_string()
    } else {
        a.string("coordinate_transformation_mode", "half_pixel")?
    };
    let nearest = if legacy {
        "floor".to_string()
    } else {
        a.string("nearest_mode", "round_prefer_floor")?
    };
    // the axes scales / sizes refer to (all by default)
    let axes: Vec<usize> = match a.ints("axes")? {
        None => (0..rank).collect(),
        Some(v) => {
            let mut out = Vec::with_capacity(v.len());
            for &ax in &v {
                let w = if ax < 0 { ax + rank as i64 } else { ax };
                if !(0..rank as i64).contains(&w) || out.contains(&(w as usize)) {
                    return Err(Cx::err(
                        n,
                        format!("axes {v:?} do not fit a rank-{rank} input"),
                    ));
                }
                out.push(w as usize);
            }
            out
        }
    };
    let policy = a.string("keep_aspect_ratio_policy", "stretch")?;
    // scales and sizes: attribute (Upsample-7), input 1 (Upsample-9, Resize-10), inputs 2
    // and 3 (Resize-11+)
    let (given_scales, given_sizes): (Option<Vec<f32>>, Option<Vec<i64>>) =
        if upsample && cx.opset < 9 {
            (a.floats("scales")?, None)
        } else if legacy {
            (
                cx.const_input(n, 1)?
                    .map(|t| t.to_f32().iter().copied().collect()),
                None,
            )
        } else {
            let s = cx
                .const_input(n, 2)?
                .map(|t| t.to_f32().iter().copied().collect::<Vec<f32>>())
                .filter(|v| !v.is_empty());
            let z = if n.input.len() > 3 {
                cx.const_input(n, 3)?
                    .map(|t| t.i64_values())
                    .filter(|v| !v.is_empty())
            } else {
                None
            };
            (s, z)
        };
    let mut scales: Vec<f64> = vec![1.0; rank];
    let mut out: Vec<usize> = x.shape.clone();
    match (given_scales, given_sizes) {
        (_, Some(z)) => {
            if z.len() != axes.len() || z.iter().any(|&d| d <= 0 || d > 1 << 20) {
                return Err(Cx::err(n, format!("sizes {z:?} do not fit axes {axes:?}")));
            }
            let ratio = |k: usize| z[k] as f64 / x.shape[axes[k]].max(1) as f64;
            match policy.as_str() {
                "stretch" => {
                    for (k, &ax) in axes.iter().enumerate() {
                        scales[ax] = ratio(k);
                        out[ax] = z[k] as usize;
                    }
                }
                "not_larger" | "not_smaller" => {
                    // one scale for the axes (ONNX's reference: min or max of the ratios),
                    // sizes rounded half up
                    let r = (0..axes.len()).map(ratio);
                    let s = if policy == "not_larger" {
                        r.fold(f64::INFINITY, f64::min)
                    } else {
                        r.fold(0.0, f64::max)
                    };
                    for &ax in &axes {
                        scales[ax] = s;
                        out[ax] = (s * x.shape[ax] as f64 + 0.5).floor() as usize;
                    }
                }
                p => {
                    return Err(Cx::err(
                        n,
                        format!("keep_aspect_ratio_policy `{p}` is not supported (stretch, not_larger, not_smaller are)"),
                    ))
                }
            }
        }
        (Some(sc), None) => {
            if sc.len() != axes.len()
                || sc
                    .iter()
                    .any(|v| !(v.is_finite() && *v > 0.0 && *v <= 1024.0))
            {
                return Err(Cx::err(
                    n,
                    format!("scales {sc:?} do not fit axes {axes:?} (positive, at most 1024)"),
                ));
            }
            for (k, &ax) in axes.iter().enumerate() {
                scales[ax] = f64::from(sc[k]);
                out[ax] = (x.shape[ax] as f64 * f64::from(sc[k])).floor() as usize;
            }
        }
        (None, None) => return Err(Cx::err(n, "needs scales or sizes")),
    }
    if out.contains(&0) {
        return Err(Cx::err(
            n,
            format!("the output shape {out:?} has an empty axis"),
        ));
    }
    let mut steps = Vec::new();
    for ax in 0..rank {
        let (len_in, len_out, s) = (x.shape[ax], out[ax], scales[ax]);
        let idx: Vec<i64> = (0..len_out)
            .map(|o| {
                let o = o as f64;
                let orig = match ctm.as_str() {
                    "half_pixel" => Some((o + 0.5) / s - 0.5),
                    "pytorch_half_pixel" => Some(if len_out > 1 {
                        (o + 0.5) / s - 0.5
                    } else {
                        0.0
                    }),
                    "align_corners" => Some(if len_out == 1 {
                        0.0
                    } else {
                        o * (len_in as f64 - 1.0) / (len_out as f64 - 1.0)
                    }),
                    "asymmetric" => Some(o / s),
                    "tf_half_pixel_for_nn" => Some((o + 0.5) / s),
                    _ => None,
                };
                let near = orig.and_then(|v| match nearest.as_str() {
                    "round_prefer_floor" => Some(if v.fract().abs() == 0.5 {
                        v.floor()
                    } else {
                        v.round()
                    }),
                    "round_prefer_ceil" => Some(if v.fract().abs() == 0.5 {
                        v.ceil()
                    } else {
                        v.round()
                    }),
                    "floor" => Some(v.floor()),
                    "ceil" => Some(v.ceil()),
                    _ => None,
                });
                near.map_or(-1, |v| (v.max(0.0) as i64).min(len_in as i64 - 1))
            })
            .collect();
        if idx.iter().any(|&i| i < 0) {
            return Err(Cx::err(
                n,
                format!("coordinate_transformation_mode `{ctm}` with nearest_mode `{nearest}` is not supported"),
            ));
        }
        if len_in == len_out && idx.iter().enumerate().all(|(i, &v)| v == i as i64) {
            continue;
        }
        let indices = Tensor::from_i64s(&[len_out], idx).ok_or_else(|| Cx::err(n, "indices"))?;
        steps.push((ax, indices));
    }
    if steps.is_empty() {
        return cx.emit(n, Op::Identity, &[0]);
    }
    let out = n
        .output
        .first()
        .ok_or_else(|| Cx::err(n, "node has no output"))?
        .clone();
    // one Gather per resized axis, each reading the previous one's result
    let tags: Vec<String> = steps.iter().map(|(ax, _)| format!("axis{ax}")).collect();
    let chain = steps
        .into_iter()
        .enumerate()
        .map(|(k, (axis, indices))| {
            let from = match k {
                0 => n.input[0].clone(),
                _ => format!("{out}::{}", tags[k - 1]),
            };
            (tags[k].as_str(), Op::Gather { axis, indices }, vec![from])
        })
        .collect();
    super::elementwise::emit_steps(cx, n, &out, chain)
}

/// `DepthToSpace` (DCR and CRD) and `SpaceToDepth`: a Reshape, a Transpose and a Reshape
/// (ONNX's own definition), register renaming on encrypted values.
pub(super) fn depth_space(cx: &mut Cx, n: &pb::NodeProto) -> Result<(), ImportError> {
    let a = Attrs::of(n);
    let x = cx.in_ty(n, 0)?;
    let b = a.int("blocksize", 0)?;
    if x.rank() != 4 || !(1..=64).contains(&b) {
        return Err(Cx::err(
            n,
            format!(
                "needs a 4-d input and a blocksize in 1..=64 (got rank {} and {b})",
                x.rank()
            ),
        ));
    }
    let b = b as usize;
    let (nb, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    let (first, perm, last): (Vec<usize>, Vec<usize>, Vec<usize>) = if n.op_type == "DepthToSpace" {
        if !c.is_multiple_of(b * b) {
            return Err(Cx::err(
                n,
                format!("{c} channels are not a multiple of blocksize² = {}", b * b),
            ));
        }
        let cc = c / (b * b);
        match a.string("mode", "DCR")?.as_str() {
            "DCR" => (
                vec![nb, b, b, cc, h, w],
                vec![0, 3, 4, 1, 5, 2],
                vec![nb, cc, h * b, w * b],
            ),
            "CRD" => (
                vec![nb, cc, b, b, h, w],
                vec![0, 1, 4, 2, 5, 3],
                vec![nb, cc, h * b, w * b],
            ),
            m => {
                return Err(Cx::err(
                    n,
                    format!("mode `{m}` is not supported (DCR and CRD are)"),
                ))
            }
        }
    } else {
        if !h.is_multiple_of(b) || !w.is_multiple_of(b) {
            return Err(Cx::err(
                n,
                format!("{h}×{w} is not a multiple of blocksize {b}"),
            ));
        }
        (
            vec![nb, c, h / b, b, w / b, b],
            vec![0, 3, 5, 1, 2, 4],
            vec![nb, c * b * b, h / b, w / b],
        )
    };
    let out = n
        .output
        .first()
        .ok_or_else(|| Cx::err(n, "node has no output"))?
        .clone();
    super::elementwise::emit_steps(
        cx,
        n,
        &out,
        vec![
            (
                "blocks",
                Op::Reshape { shape: first },
                vec![n.input[0].clone()],
            ),
            (
                "moved",
                Op::Transpose { perm },
                vec![format!("{out}::blocks")],
            ),
            (
                "merged",
                Op::Reshape { shape: last },
                vec![format!("{out}::moved")],
            ),
        ],
    )
}
