//! The shape rules of every op: broadcasting, windows (Conv, pooling), MatMul and Gemm, and
//! the output type of each [`Op`] with checked size arithmetic ([`infer_shape`]); the
//! attribute checks the ONNX definitions ask for.

use super::{arity_check, want};
use crate::error::OpError;
use crate::op::{Binary, ConvAttrs, IntLinear, Op, PadMode, PoolAttrs, ReduceKind};
use crate::quant::ElemOp;
use crate::tensor::{checked_len, DType, ShapeFmt, TensorType};

/// numpy broadcasting of two shapes.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Result<Vec<usize>, OpError> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let da = if i + a.len() >= n {
            a[i + a.len() - n]
        } else {
            1
        };
        let db = if i + b.len() >= n {
            b[i + b.len() - n]
        } else {
            1
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => {
                return Err(OpError::Broadcast {
                    a: ShapeFmt(a).to_string(),
                    b: ShapeFmt(b).to_string(),
                })
            }
        };
    }
    Ok(out)
}

/// Output length of a sliding window along one axis (attributes already validated ≥ 1).
pub(super) fn window_out(
    size: usize,
    k: usize,
    s: usize,
    pb: usize,
    pe: usize,
    d: usize,
    ceil: bool,
) -> Result<usize, OpError> {
    let too_big = || OpError::overflow(format!("a window of kernel {k} and dilation {d}"));
    let span = d
        .checked_mul(k.saturating_sub(1))
        .and_then(|v| v.checked_add(1))
        .ok_or_else(too_big)?;
    let padded = size
        .checked_add(pb)
        .and_then(|v| v.checked_add(pe))
        .ok_or_else(|| OpError::overflow(format!("an axis of {size} padded by {pb}+{pe}")))?;
    if padded < span || s == 0 {
        return Err(OpError::shape(format!(
            "window of extent {span} (kernel {k}, dilation {d}) does not fit an axis of {size} padded by {pb}+{pe}"
        )));
    }
    let num = padded - span;
    let mut out = if ceil {
        num.div_ceil(s) + 1
    } else {
        num / s + 1
    };
    // the last window must start inside the input or its leading padding (no overflow:
    // (out − 1)·s ≤ padded)
    if ceil && (out - 1) * s >= size + pb {
        out -= 1;
    }
    Ok(out)
}

/// Largest kernel, stride, dilation or pad a window op accepts.
const MAX_WINDOW_ATTR: usize = i32::MAX as usize;

/// Checks the window attributes of a Conv or pooling op against the ONNX definition:
/// one value per spatial axis, kernel, strides and dilations ≥ 1, everything ≤ 2^31 − 1.
pub(super) fn check_window(
    kernel: &[usize],
    strides: &[usize],
    pads_begin: &[usize],
    pads_end: &[usize],
    dilations: &[usize],
) -> Result<(), OpError> {
    let d = kernel.len();
    if d == 0 {
        return Err(OpError::attr(
            "kernel_shape",
            "needs at least one spatial axis",
        ));
    }
    for (name, v, min) in [
        ("kernel_shape", kernel, 1),
        ("strides", strides, 1),
        ("dilations", dilations, 1),
        ("pads", pads_begin, 0),
        ("pads", pads_end, 0),
    ] {
        if v.len() != d {
            return Err(OpError::attr(
                name,
                format!("gives {} value(s) for a {d}-d kernel", v.len()),
            ));
        }
        if let Some(bad) = v.iter().find(|&&x| x < min || x > MAX_WINDOW_ATTR) {
            return Err(OpError::attr(
                name,
                format!("value {bad} is outside [{min}, {MAX_WINDOW_ATTR}]"),
            ));
        }
    }
    Ok(())
}

/// Checks attributes that shape inference alone would not catch.
pub(super) fn check_attrs(op: &Op) -> Result<(), OpError> {
    let check_q = |p: &crate::quant::QuantParams| {
        if !p.is_valid() {
            return Err(OpError::attr(
                "quantization",
                format!(
                    "scale {} and range [{}, {}] are not a valid quantizer",
                    p.scale, p.qmin, p.qmax
                ),
            ));
        }
        Ok(())
    };
    match op {
        Op::Conv(c) | Op::IntLinear(IntLinear::Conv { attrs: c, .. }) => {
            check_window(
                &c.kernel,
                &c.strides,
                &c.pads_begin,
                &c.pads_end,
                &c.dilations,
            )?;
            if c.group == 0 || c.group > MAX_WINDOW_ATTR {
                return Err(OpError::attr("group", format!("{} must be ≥ 1", c.group)));
            }
        }
        Op::AveragePool(p) | Op::MaxPool(p) => check_window(
            &p.kernel,
            &p.strides,
            &p.pads_begin,
            &p.pads_end,
            &p.dilations,
        )?,
        Op::Slice { axes } if axes.iter().any(|a| a.step == 0) => {
            return Err(OpError::attr("steps", "a slice step must not be 0"));
        }
        Op::Round { bits } if bits.iter().any(|&b| b > 62) => {
            let b = bits.iter().max().copied().unwrap_or_default();
            return Err(OpError::attr(
                "bits",
                format!("cannot drop {b} bits of a 64-bit integer"),
            ));
        }
        Op::Wrap { lo, bits } => {
            if *bits == 0 || *bits > 62 {
                return Err(OpError::attr(
                    "bits",
                    format!("a window of {bits} bits (1 to 62 allowed)"),
                ));
            }
            if lo
                .iter()
                .any(|&l| l.checked_add(1i64 << bits).is_none() || l < -(1i64 << 62))
            {
                return Err(OpError::attr("lo", "a window ends beyond 64 bits"));
            }
        }
        Op::Quant(p) => check_q(p)?,
        Op::Tlu(t) => {
            check_q(&t.out)?;
            if let Some(d) = &t.domain {
                if d.bits > crate::quant::MAX_DOMAIN_BITS {
                    return Err(OpError::attr(
                        "domain",
                        format!(
                            "a {}-bit table domain is wider than the {} bits allowed",
                            d.bits,
                            crate::quant::MAX_DOMAIN_BITS
                        ),
                    ));
                }
                if d.lo
                    .iter()
                    .any(|&lo| lo.checked_add(1i64 << d.bits).is_none())
                {
                    return Err(OpError::attr(
                        "domain",
                        "a table domain ends beyond 64 bits",
                    ));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

pub(super) fn conv_out_shape(
    x: &[usize],
    w: &[usize],
    c: &ConvAttrs,
) -> Result<Vec<usize>, OpError> {
    let d = c.kernel.len();
    if x.len() != d + 2 || w.len() != d + 2 {
        return Err(OpError::shape(format!(
            "Conv needs x and w of rank {} for a {d}-d kernel, got x {} and w {}",
            d + 2,
            ShapeFmt(x),
            ShapeFmt(w)
        )));
    }
    if c.group == 0 || x[1] != w[1] * c.group || !w[0].is_multiple_of(c.group) {
        return Err(OpError::shape(format!(
            "Conv channels: x {} and w {} do not agree with group {}",
            ShapeFmt(x),
            ShapeFmt(w),
            c.group
        )));
    }
    if w[2..] != c.kernel[..] {
        return Err(OpError::shape(format!(
            "kernel_shape {} does not match the weights {}",
            ShapeFmt(&c.kernel),
            ShapeFmt(w)
        )));
    }
    let mut out = vec![x[0], w[0]];
    for i in 0..d {
        out.push(window_out(
            x[i + 2],
            c.kernel[i],
            c.strides[i],
            c.pads_begin[i],
            c.pads_end[i],
            c.dilations[i],
            false,
        )?);
    }
    Ok(out)
}

pub(super) fn pool_out_shape(x: &[usize], p: &PoolAttrs) -> Result<Vec<usize>, OpError> {
    let d = p.kernel.len();
    if x.len() != d + 2 {
        return Err(OpError::shape(format!(
            "pooling with a {d}-d kernel needs rank {} input, got {}",
            d + 2,
            ShapeFmt(x)
        )));
    }
    let mut out = vec![x[0], x[1]];
    for i in 0..d {
        out.push(window_out(
            x[i + 2],
            p.kernel[i],
            p.strides[i],
            p.pads_begin[i],
            p.pads_end[i],
            p.dilations[i],
            p.ceil_mode,
        )?);
    }
    Ok(out)
}

pub(super) fn matmul_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>, OpError> {
    if a.is_empty() || b.is_empty() {
        return Err(OpError::shape("MatMul does not take scalars"));
    }
    let a2: Vec<usize> = if a.len() == 1 {
        vec![1, a[0]]
    } else {
        a.to_vec()
    };
    let b2: Vec<usize> = if b.len() == 1 {
        vec![b[0], 1]
    } else {
        b.to_vec()
    };
    let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
    let (k2, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
    if k != k2 {
        return Err(OpError::shape(format!(
            "MatMul inner dimensions differ: {} × {}",
            ShapeFmt(a),
            ShapeFmt(b)
        )));
    }
    let mut out = broadcast_shapes(&a2[..a2.len() - 2], &b2[..b2.len() - 2])?;
    if a.len() > 1 {
        out.push(m);
    }
    if b.len() > 1 {
        out.push(n);
    }
    Ok(out)
}

pub(super) fn gemm_shape(
    a: &[usize],
    b: &[usize],
    c: Option<&[usize]>,
    ta: bool,
    tb: bool,
) -> Result<Vec<usize>, OpError> {
    if a.len() != 2 || b.len() != 2 {
        return Err(OpError::shape(format!(
            "Gemm needs 2-d A and B, got {} and {}",
            ShapeFmt(a),
            ShapeFmt(b)
        )));
    }
    let (m, k) = if ta { (a[1], a[0]) } else { (a[0], a[1]) };
    let (k2, n) = if tb { (b[1], b[0]) } else { (b[0], b[1]) };
    if k != k2 {
        return Err(OpError::shape(format!(
            "Gemm inner dimensions differ: A {} B {}",
            ShapeFmt(a),
            ShapeFmt(b)
        )));
    }
    if let Some(c) = c {
        let bc = broadcast_shapes(c, &[m, n])?;
        if bc != [m, n] {
            return Err(OpError::shape(format!(
                "Gemm C {} does not broadcast to [{m},{n}]",
                ShapeFmt(c)
            )));
        }
    }
    Ok(vec![m, n])
}

/// Shape rules only: the output type, with checked size arithmetic but no limits.
pub(super) fn infer_shape(op: &Op, ins: &[&TensorType]) -> Result<TensorType, OpError> {
    arity_check(op, ins.len())?;
    check_attrs(op)?;
    let f32_all = |ins: &[&TensorType]| -> Result<(), OpError> {
        for (i, t) in ins.iter().enumerate() {
            want(i, t, DType::F32)?;
        }
        Ok(())
    };
    Ok(match op {
        Op::Input { .. } => return Err(OpError::shape("inputs are typed by the graph")),
        Op::Const(t) => t.ty(),
        Op::Gemm {
            trans_a, trans_b, ..
        } => {
            f32_all(ins)?;
            TensorType::f32(gemm_shape(
                &ins[0].shape,
                &ins[1].shape,
                ins.get(2).map(|t| &t.shape[..]),
                *trans_a,
                *trans_b,
            )?)
        }
        Op::MatMul => {
            f32_all(ins)?;
            TensorType::f32(matmul_shape(&ins[0].shape, &ins[1].shape)?)
        }
        Op::Conv(c) => {
            f32_all(ins)?;
            let out = conv_out_shape(&ins[0].shape, &ins[1].shape, c)?;
            if let Some(b) = ins.get(2) {
                if b.shape != [out[1]] {
                    return Err(OpError::shape(format!(
                        "Conv bias {} must be [{}]",
                        ShapeFmt(&b.shape),
                        out[1]
                    )));
                }
            }
            TensorType::f32(out)
        }
        Op::Unary(_) => {
            f32_all(ins)?;
            ins[0].clone()
        }
        Op::Binary(b) => {
            if ins[0].dtype != ins[1].dtype {
                return Err(OpError::DType {
                    port: 1,
                    expected: ins[0].dtype,
                    actual: ins[1].dtype,
                });
            }
            let shape = broadcast_shapes(&ins[0].shape, &ins[1].shape)?;
            if *b == Binary::PRelu && shape != ins[0].shape {
                return Err(OpError::shape(format!(
                    "PRelu slope {} must broadcast to x {}",
                    ShapeFmt(&ins[1].shape),
                    ShapeFmt(&ins[0].shape)
                )));
            }
            TensorType::new(ins[0].dtype, shape)
        }
        Op::AveragePool(p) | Op::MaxPool(p) => {
            f32_all(ins)?;
            TensorType::f32(pool_out_shape(&ins[0].shape, p)?)
        }
        Op::GlobalAveragePool => {
            f32_all(ins)?;
            let s = &ins[0].shape;
            if s.len() < 3 {
                return Err(OpError::shape(format!(
                    "GlobalAveragePool needs [N,C,...], got {}",
                    ShapeFmt(s)
                )));
            }
            let mut out = s[..2].to_vec();
            out.extend(std::iter::repeat_n(1, s.len() - 2));
            TensorType::f32(out)
        }
        Op::BatchNorm { .. } => {
            f32_all(ins)?;
            let s = &ins[0].shape;
            if s.len() < 2 {
                return Err(OpError::shape(format!(
                    "BatchNormalization needs [N,C,...], got {}",
                    ShapeFmt(s)
                )));
            }
            for (i, t) in ins.iter().enumerate().skip(1) {
                if t.shape != [s[1]] {
                    return Err(OpError::shape(format!(
                        "input {i} must be [{}], got {}",
                        s[1],
                        ShapeFmt(&t.shape)
                    )));
                }
            }
            ins[0].clone()
        }
        Op::Reshape { shape } => {
            if checked_len(shape) != checked_len(&ins[0].shape) {
                return Err(OpError::shape(format!(
                    "cannot reshape {} into {}",
                    ShapeFmt(&ins[0].shape),
                    ShapeFmt(shape)
                )));
            }
            TensorType::new(ins[0].dtype, shape.clone())
        }
        Op::Transpose { perm } => {
            let s = &ins[0].shape;
            let mut seen = vec![false; s.len()];
            if perm.len() != s.len()
                || perm
                    .iter()
                    .any(|&p| p >= s.len() || std::mem::replace(&mut seen[p], true))
            {
                return Err(OpError::shape(format!(
                    "perm {perm:?} is not a permutation of the axes of {}",
                    ShapeFmt(s)
                )));
            }
            TensorType::new(ins[0].dtype, perm.iter().map(|&p| s[p]).collect::<Vec<_>>())
        }
        Op::Concat { axis } => {
            let first = ins[0];
            if *axis >= first.rank() {
                return Err(OpError::shape(format!(
                    "axis {axis} out of range for {}",
                    ShapeFmt(&first.shape)
                )));
            }
            let mut shape = first.shape.clone();
            for (i, t) in ins.iter().enumerate().skip(1) {
                want(i, t, first.dtype)?;
                let ok = t.rank() == first.rank()
                    && (0..t.rank()).all(|d| d == *axis || t.shape[d] == first.shape[d]);
                if !ok {
                    return Err(OpError::shape(format!(
                        "Concat on axis {axis}: {} does not match {}",
                        ShapeFmt(&t.shape),
                        ShapeFmt(&first.shape)
                    )));
                }
                shape[*axis] = shape[*axis]
                    .checked_add(t.shape[*axis])
                    .ok_or_else(|| OpError::overflow("the concatenated axis"))?;
            }
            TensorType::new(first.dtype, shape)
        }
        Op::Gather { axis, indices } => {
            let s = &ins[0].shape;
            if *axis >= s.len() {
                return Err(OpError::shape(format!(
                    "axis {axis} out of range for {}",
                    ShapeFmt(s)
                )));
            }
            if let Some(bad) = indices
                .i64_values()
                .into_iter()
                .find(|&i| i < 0 || i as usize >= s[*axis])
            {
                return Err(OpError::shape(format!(
                    "index {bad} out of range for axis {axis} of {}",
                    ShapeFmt(s)
                )));
            }
            let mut out = s[..*axis].to_vec();
            out.extend_from_slice(indices.shape());
            out.extend_from_slice(&s[axis + 1..]);
            TensorType::new(ins[0].dtype, out)
        }
        Op::Slice { axes } => {
            let mut out = ins[0].shape.clone();
            for a in axes {
                let dim = *out
                    .get(a.axis)
                    .ok_or_else(|| OpError::shape(format!("slice axis {} out of range", a.axis)))?;
                if a.len > 0 {
                    let last = i128::from(a.start) + (a.len as i128 - 1) * i128::from(a.step);
                    if a.start < 0 || a.start as usize >= dim || last < 0 || last >= dim as i128 {
                        return Err(OpError::shape(format!(
                            "slice on axis {} reads outside [0,{dim})",
                            a.axis
                        )));
                    }
                }
                out[a.axis] = a.len;
            }
            TensorType::new(ins[0].dtype, out)
        }
        Op::Pad {
            begin, end, mode, ..
        } => {
            let s = &ins[0].shape;
            if begin.len() != s.len() || end.len() != s.len() {
                return Err(OpError::shape(format!("pads must give {} axes", s.len())));
            }
            for i in 0..s.len() {
                let need_data = matches!(mode, PadMode::Reflect | PadMode::Edge | PadMode::Wrap);
                if need_data && (begin[i] > 0 || end[i] > 0) && s[i] == 0 {
                    return Err(OpError::shape(
                        "cannot pad an empty axis by reflection or edge",
                    ));
                }
                if *mode == PadMode::Reflect
                    && (begin[i] >= s[i].max(1) || end[i] >= s[i].max(1))
                    && (begin[i] > 0 || end[i] > 0)
                {
                    return Err(OpError::shape(format!(
                        "reflect pad of {}/{} too large for axis of {}",
                        begin[i], end[i], s[i]
                    )));
                }
            }
            let shape = (0..s.len())
                .map(|i| s[i].checked_add(begin[i])?.checked_add(end[i]))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| OpError::overflow("a padded axis"))?;
            TensorType::new(ins[0].dtype, shape)
        }
        Op::Reduce {
            kind,
            axes,
            keepdims,
        } => {
            // a maximum of integers is an integer; sums and means are of floats
            if *kind != ReduceKind::Max {
                f32_all(ins)?;
            }
            let s = &ins[0].shape;
            if axes.iter().any(|&a| a >= s.len()) {
                return Err(OpError::shape(format!(
                    "reduce axes {axes:?} out of range for {}",
                    ShapeFmt(s)
                )));
            }
            let out: Vec<usize> = (0..s.len())
                .filter_map(|i| {
                    if axes.contains(&i) {
                        keepdims.then_some(1)
                    } else {
                        Some(s[i])
                    }
                })
                .collect();
            TensorType::new(ins[0].dtype, out)
        }
        Op::ArgMax { axis, keepdims, .. } => {
            if *axis >= ins[0].rank() || ins[0].shape[*axis] == 0 {
                return Err(OpError::shape(format!(
                    "axis {axis} out of range for {}",
                    ShapeFmt(&ins[0].shape)
                )));
            }
            let mut shape = ins[0].shape.clone();
            if *keepdims {
                shape[*axis] = 1;
            } else {
                shape.remove(*axis);
            }
            TensorType::f32(shape)
        }
        Op::Softmax { axis, .. } => {
            f32_all(ins)?;
            if *axis >= ins[0].rank().max(1) {
                return Err(OpError::shape(format!(
                    "axis {axis} out of range for {}",
                    ShapeFmt(&ins[0].shape)
                )));
            }
            ins[0].clone()
        }
        Op::Expand { shape } => {
            let b = broadcast_shapes(&ins[0].shape, shape)?;
            if &b != shape {
                return Err(OpError::shape("Expand target is not the broadcast shape"));
            }
            TensorType::new(ins[0].dtype, shape.clone())
        }
        Op::Cast { to } => TensorType::new(*to, ins[0].shape.clone()),
        Op::Identity => ins[0].clone(),
        Op::IntLinear(l) => {
            want(0, ins[0], DType::I64)?;
            match l {
                IntLinear::Dense { w } => {
                    let s = &ins[0].shape;
                    if w.ndim() != 2 || s.last() != Some(&w.shape()[0]) {
                        return Err(OpError::shape(format!(
                            "integer dense weights {} do not fit input {}",
                            ShapeFmt(w.shape()),
                            ShapeFmt(s)
                        )));
                    }
                    let mut out = s.clone();
                    *out.last_mut().expect("invariant: rank ≥ 1") = w.shape()[1];
                    TensorType::new(DType::I64, out)
                }
                IntLinear::Conv { attrs, w, .. } => {
                    TensorType::new(DType::I64, conv_out_shape(&ins[0].shape, w.shape(), attrs)?)
                }
            }
        }
        Op::Dequant { a, b } => {
            want(0, ins[0], DType::I64)?;
            per_element_len(a.len(), ins[0].len())?;
            per_element_len(b.len(), ins[0].len())?;
            TensorType::f32(ins[0].shape.clone())
        }
        Op::Quant(_) => {
            want(0, ins[0], DType::F32)?;
            TensorType::new(DType::I64, ins[0].shape.clone())
        }
        Op::Round { bits } => {
            want(0, ins[0], DType::I64)?;
            per_element_len(bits.len(), ins[0].len())?;
            ins[0].clone()
        }
        Op::Wrap { lo, .. } => {
            want(0, ins[0], DType::I64)?;
            per_element_len(lo.len(), ins[0].len())?;
            ins[0].clone()
        }
        Op::Tlu(t) => {
            want(0, ins[0], DType::I64)?;
            per_element_len(t.a.len(), ins[0].len())?;
            per_element_len(t.b.len(), ins[0].len())?;
            if let Some(d) = &t.domain {
                per_element_len(d.lo.len(), ins[0].len())?;
            }
            for e in &t.chain {
                match e {
                    ElemOp::Binary { c, .. } => per_element_len(c.len(), ins[0].len())?,
                    ElemOp::Load { a, b } => {
                        per_element_len(a.len(), ins[0].len())?;
                        per_element_len(b.len(), ins[0].len())?;
                    }
                    _ => {}
                }
            }
            if !crate::quant::check_stack(&t.chain) {
                return Err(OpError::shape(
                    "a table's function pops more values than it pushed",
                ));
            }
            ins[0].clone()
        }
    })
}

pub(super) fn per_element_len(have: usize, n: usize) -> Result<(), OpError> {
    if have == 1 || have == n {
        Ok(())
    } else {
        Err(OpError::shape(format!(
            "{have} per-element coefficients for a tensor of {n} elements"
        )))
    }
}
