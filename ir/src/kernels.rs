//! Shape inference and float evaluation of every [`Op`]: the reference semantics of the float
//! graph, following the ONNX operator specification.
//!
//! `infer` and `eval` share the same shape rules, so a graph whose types verify evaluates to
//! tensors of exactly those types.

use crate::error::OpError;
use crate::limits::Limits;
use crate::op::{Binary, ConvAttrs, IntLinear, Op, PadMode, PoolAttrs, ReduceKind, SliceAxis};
use crate::quant::ElemOp;
use crate::tensor::{checked_len, saturating_len, DType, ShapeFmt, Tensor, TensorType};
use ndarray::{
    concatenate, Array2, ArrayD, ArrayView2, ArrayViewD, Axis, Dimension, Ix2, IxDyn, Zip,
};

fn arity_check(op: &Op, n: usize) -> Result<(), OpError> {
    let (lo, hi) = op.arity();
    if n < lo || n > hi {
        let expected = if lo == hi {
            lo.to_string()
        } else if hi == usize::MAX {
            format!("at least {lo}")
        } else {
            format!("{lo} to {hi}")
        };
        return Err(OpError::Arity {
            expected,
            actual: n,
        });
    }
    Ok(())
}

fn want(port: usize, ty: &TensorType, dtype: DType) -> Result<(), OpError> {
    if ty.dtype != dtype {
        return Err(OpError::DType {
            port,
            expected: dtype,
            actual: ty.dtype,
        });
    }
    Ok(())
}

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
fn window_out(
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
fn check_window(
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
fn check_attrs(op: &Op) -> Result<(), OpError> {
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

fn conv_out_shape(x: &[usize], w: &[usize], c: &ConvAttrs) -> Result<Vec<usize>, OpError> {
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

fn pool_out_shape(x: &[usize], p: &PoolAttrs) -> Result<Vec<usize>, OpError> {
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

fn matmul_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>, OpError> {
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

fn gemm_shape(
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

/// The output type of `op` applied to inputs of types `ins`, under the default [`Limits`].
///
/// # Errors
/// As [`infer_with`].
pub fn infer(op: &Op, ins: &[&TensorType]) -> Result<TensorType, OpError> {
    infer_with(op, ins, &Limits::default())
}

/// The output type of `op` applied to inputs of types `ins`, refusing outputs and work over
/// `limits` before anything is allocated.
///
/// # Errors
/// Wrong arity or dtype, attributes or shapes that the op's ONNX definition rejects, size
/// arithmetic that overflows, an output or a multiply-accumulate count over `limits`.
pub fn infer_with(op: &Op, ins: &[&TensorType], limits: &Limits) -> Result<TensorType, OpError> {
    let ty = infer_shape(op, ins)?;
    let out = limits.check_tensor("an output tensor", &ty.shape)? as u64;
    let per_output: u64 = match op {
        Op::Gemm { trans_a, .. } => ins[0].shape[usize::from(!*trans_a)] as u64,
        Op::MatMul => ins[0].shape.last().copied().unwrap_or(1) as u64,
        Op::Conv(_) => (ins[1].len() / ins[1].shape[0].max(1)) as u64,
        Op::IntLinear(IntLinear::Dense { w }) => w.shape()[0] as u64,
        Op::IntLinear(IntLinear::Conv { w, .. }) => (w.len() / w.shape()[0].max(1)) as u64,
        Op::AveragePool(p) | Op::MaxPool(p) => saturating_len(&p.kernel),
        _ => 1,
    };
    let macs = out.saturating_mul(per_output);
    if macs > limits.max_node_macs {
        return Err(OpError::TooLarge {
            what: "a node's multiply-accumulate count",
            amount: macs,
            limit: limits.max_node_macs,
        });
    }
    Ok(ty)
}

/// Shape rules only: the output type, with checked size arithmetic but no limits.
fn infer_shape(op: &Op, ins: &[&TensorType]) -> Result<TensorType, OpError> {
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

fn per_element_len(have: usize, n: usize) -> Result<(), OpError> {
    if have == 1 || have == n {
        Ok(())
    } else {
        Err(OpError::shape(format!(
            "{have} per-element coefficients for a tensor of {n} elements"
        )))
    }
}

fn i64_in<'a>(ins: &[&'a Tensor], port: usize) -> Result<&'a ArrayD<i64>, OpError> {
    ins[port].as_i64().ok_or(OpError::DType {
        port,
        expected: DType::I64,
        actual: ins[port].dtype(),
    })
}

/// `x[…, K] · w[K, N]` in checked integer arithmetic; `None` on overflow.
fn int_dense(x: &ArrayD<i64>, w: &ArrayD<i64>, out_shape: &[usize]) -> Option<ArrayD<i64>> {
    let (k, n) = (w.shape()[0], w.shape()[1]);
    let rows = x.len() / k.max(1);
    let xs: Vec<i64> = x.iter().copied().collect();
    let ws: Vec<i64> = w.iter().copied().collect();
    let mut out = vec![0i64; rows * n];
    for r in 0..rows {
        for i in 0..k {
            let xv = xs[r * k + i];
            if xv == 0 {
                continue;
            }
            for j in 0..n {
                let o = &mut out[r * n + j];
                *o = o.checked_add(xv.checked_mul(ws[i * n + j])?)?;
            }
        }
    }
    Some(
        ArrayD::from_shape_vec(IxDyn(out_shape), out).expect("invariant: infer computed the shape"),
    )
}

fn f32_in<'a>(ins: &[&'a Tensor], port: usize) -> Result<&'a ArrayD<f32>, OpError> {
    ins[port].as_f32().ok_or(OpError::DType {
        port,
        expected: DType::F32,
        actual: ins[port].dtype(),
    })
}

/// Evaluates `op` on concrete inputs.
///
/// # Errors
/// The same as [`infer`], plus integer overflow in constant arithmetic.
pub fn eval(op: &Op, ins: &[&Tensor]) -> Result<Tensor, OpError> {
    let tys: Vec<TensorType> = ins.iter().map(|t| t.ty()).collect();
    let tyr: Vec<&TensorType> = tys.iter().collect();
    // sizes were checked against the limits when the node was built
    let out_ty = infer_shape(op, &tyr)?;
    let out = match op {
        Op::Input { .. } => unreachable!("invariant: infer rejects Input"),
        Op::Const(t) => t.clone(),
        Op::Gemm {
            alpha,
            beta,
            trans_a,
            trans_b,
        } => {
            let a = to2(f32_in(ins, 0)?);
            let b = to2(f32_in(ins, 1)?);
            let a = if *trans_a { a.t() } else { a };
            let b = if *trans_b { b.t() } else { b };
            let mut y = a.dot(&b) * *alpha;
            if let Some(c) = ins.get(2) {
                let c = f32_in(&[c], 0)?;
                let cb = c
                    .broadcast(IxDyn(y.shape()))
                    .ok_or_else(|| OpError::shape("Gemm C broadcast"))?;
                Zip::from(&mut y)
                    .and(
                        &cb.into_dimensionality::<Ix2>()
                            .map_err(|e| OpError::shape(e.to_string()))?,
                    )
                    .for_each(|y, c| *y += beta * c);
            }
            Tensor::F32(y.into_dyn())
        }
        Op::MatMul => Tensor::F32(matmul(f32_in(ins, 0)?, f32_in(ins, 1)?, &out_ty.shape)),
        Op::Conv(c) => {
            let b = match ins.get(2) {
                Some(t) => Some(f32_in(&[t], 0)?),
                None => None,
            };
            Tensor::F32(
                conv(f32_in(ins, 0)?, f32_in(ins, 1)?, b, c, &out_ty.shape, None)
                    .expect("invariant: float convolution does not overflow"),
            )
        }
        Op::Unary(u) => Tensor::F32(f32_in(ins, 0)?.mapv(|x| u.apply(x))),
        Op::Binary(b) => binary(*b, ins[0], ins[1], &out_ty.shape)?,
        Op::AveragePool(p) => Tensor::F32(pool(f32_in(ins, 0)?, p, &out_ty.shape, false)),
        Op::MaxPool(p) => Tensor::F32(pool(f32_in(ins, 0)?, p, &out_ty.shape, true)),
        Op::GlobalAveragePool => {
            let x = f32_in(ins, 0)?;
            let (n, c) = (x.shape()[0], x.shape()[1]);
            let flat = x
                .to_shape((n, c, x.len() / (n * c).max(1)))
                .map_err(|e| OpError::shape(e.to_string()))?;
            let m = flat
                .mean_axis(Axis(2))
                .unwrap_or_else(|| Array2::zeros((n, c)));
            Tensor::F32(
                m.into_shape_with_order(IxDyn(&out_ty.shape))
                    .map_err(|e| OpError::shape(e.to_string()))?,
            )
        }
        Op::BatchNorm { epsilon } => {
            let x = f32_in(ins, 0)?;
            let (sc, bi, mean, var) = (
                f32_in(ins, 1)?,
                f32_in(ins, 2)?,
                f32_in(ins, 3)?,
                f32_in(ins, 4)?,
            );
            let mut y = x.clone();
            for (c, mut lane) in y.axis_iter_mut(Axis(1)).enumerate() {
                let k = sc[[c]] / (var[[c]] + epsilon).sqrt();
                let m = mean[[c]];
                let b = bi[[c]];
                lane.mapv_inplace(|v| (v - m) * k + b);
            }
            Tensor::F32(y)
        }
        Op::Reshape { shape } => map_any!(ins[0], |a| reshape(a, shape)),
        Op::Transpose { perm } => map_any!(ins[0], |a| a
            .view()
            .permuted_axes(IxDyn(perm))
            .as_standard_layout()
            .into_owned()),
        Op::Concat { axis } => match ins[0] {
            Tensor::F32(_) => {
                let v: Vec<ArrayViewD<f32>> = ins
                    .iter()
                    .filter_map(|t| t.as_f32().map(|a| a.view()))
                    .collect();
                Tensor::F32(
                    concatenate(Axis(*axis), &v).map_err(|e| OpError::shape(e.to_string()))?,
                )
            }
            Tensor::I64(_) => {
                let v: Vec<ArrayViewD<i64>> = ins
                    .iter()
                    .filter_map(|t| t.as_i64().map(|a| a.view()))
                    .collect();
                Tensor::I64(
                    concatenate(Axis(*axis), &v).map_err(|e| OpError::shape(e.to_string()))?,
                )
            }
        },
        Op::Gather { axis, indices } => {
            let idx: Vec<usize> = indices
                .i64_values()
                .into_iter()
                .map(|i| i as usize)
                .collect();
            map_any!(ins[0], |a| reshape(
                &a.select(Axis(*axis), &idx),
                &out_ty.shape
            ))
        }
        Op::Slice { axes } => map_any!(ins[0], |a| slice(a, axes, &out_ty.shape)),
        Op::Pad {
            begin,
            end: _,
            mode,
            value,
        } => match ins[0] {
            Tensor::F32(a) => Tensor::F32(pad(a, begin, *mode, *value, &out_ty.shape)),
            Tensor::I64(a) => Tensor::I64(pad(a, begin, *mode, *value as i64, &out_ty.shape)),
        },
        Op::Reduce {
            kind: ReduceKind::Max,
            axes,
            keepdims,
        } if matches!(ins[0], Tensor::I64(_)) => {
            let mut a = i64_in(ins, 0)?.clone();
            let mut sorted = axes.clone();
            sorted.sort_unstable();
            for &ax in sorted.iter().rev() {
                a = a.fold_axis(Axis(ax), i64::MIN, |&m, &v| m.max(v));
                if *keepdims {
                    a.insert_axis_inplace(Axis(ax));
                }
            }
            Tensor::I64(a)
        }
        Op::Reduce {
            kind,
            axes,
            keepdims,
        } => {
            let mut a = f32_in(ins, 0)?.clone();
            let mut sorted = axes.clone();
            sorted.sort_unstable();
            let count: usize = sorted.iter().map(|&ax| a.shape()[ax]).product();
            for &ax in sorted.iter().rev() {
                a = match kind {
                    // NaN propagates, as in ONNX's reference
                    ReduceKind::Max => a.fold_axis(Axis(ax), f32::NEG_INFINITY, |&m, &v| {
                        if m.is_nan() || v.is_nan() {
                            f32::NAN
                        } else {
                            m.max(v)
                        }
                    }),
                    _ => a.sum_axis(Axis(ax)),
                };
                if *keepdims {
                    a.insert_axis_inplace(Axis(ax));
                }
            }
            if *kind == ReduceKind::Mean {
                let n = count as f32;
                a.mapv_inplace(|v| v / n);
            }
            Tensor::F32(a)
        }
        Op::Softmax { axis, flatten } => Tensor::F32(softmax(f32_in(ins, 0)?, *axis, *flatten)),
        Op::ArgMax {
            axis,
            keepdims,
            select_last,
            min,
        } => Tensor::F32(arg_max(
            &ins[0].to_f32(),
            *axis,
            *keepdims,
            *select_last,
            *min,
        )),
        Op::Expand { shape } => map_any!(ins[0], |a| a
            .broadcast(IxDyn(shape))
            .map(|v| v.to_owned())
            .unwrap_or_else(|| unreachable!("invariant: infer checked the broadcast"))),
        Op::Cast { to } => ins[0].cast(*to),
        Op::Identity => ins[0].clone(),
        Op::IntLinear(IntLinear::Dense { w }) => Tensor::I64(
            int_dense(i64_in(ins, 0)?, w, &out_ty.shape)
                .ok_or_else(|| OpError::overflow("the dense accumulator (use fewer bits)"))?,
        ),
        Op::IntLinear(IntLinear::Conv {
            attrs,
            w,
            pad_value,
        }) => Tensor::I64(
            conv(
                i64_in(ins, 0)?,
                w,
                None,
                attrs,
                &out_ty.shape,
                Some(*pad_value),
            )
            .ok_or_else(|| OpError::overflow("the convolution accumulator (use fewer bits)"))?,
        ),
        Op::Dequant { a, b } => {
            let x = i64_in(ins, 0)?;
            let pick = |v: &Vec<f32>, i: usize| v[if v.len() == 1 { 0 } else { i }];
            let vals: Vec<f32> = x
                .iter()
                .enumerate()
                .map(|(i, &q)| crate::quant::dequant_affine(pick(a, i), pick(b, i), q))
                .collect();
            Tensor::F32(
                ArrayD::from_shape_vec(IxDyn(x.shape()), vals).expect("invariant: same shape"),
            )
        }
        Op::Quant(p) => Tensor::I64(f32_in(ins, 0)?.mapv(|v| p.quantize(v))),
        Op::Wrap { lo, bits } => {
            let x = i64_in(ins, 0)?;
            let vals: Vec<i64> = x
                .iter()
                .enumerate()
                .map(|(i, &v)| crate::quant::wrap(v, lo[if lo.len() == 1 { 0 } else { i }], *bits))
                .collect();
            Tensor::I64(
                ArrayD::from_shape_vec(IxDyn(x.shape()), vals).expect("invariant: same shape"),
            )
        }
        Op::Round { bits } => {
            let x = i64_in(ins, 0)?;
            let vals: Vec<i64> = x
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    crate::quant::round_shift(v, bits[if bits.len() == 1 { 0 } else { i }])
                })
                .collect();
            Tensor::I64(
                ArrayD::from_shape_vec(IxDyn(x.shape()), vals).expect("invariant: same shape"),
            )
        }
        Op::Tlu(t) => {
            let x = i64_in(ins, 0)?;
            let vals: Vec<i64> = x.iter().enumerate().map(|(i, &q)| t.eval(i, q)).collect();
            Tensor::I64(
                ArrayD::from_shape_vec(IxDyn(x.shape()), vals).expect("invariant: same shape"),
            )
        }
    };
    debug_assert_eq!(
        out.ty(),
        out_ty,
        "invariant: eval agrees with infer for {}",
        op.name()
    );
    Ok(out)
}

macro_rules! map_any {
    ($t:expr, |$a:ident| $body:expr) => {
        match $t {
            Tensor::F32($a) => Tensor::F32($body),
            Tensor::I64($a) => Tensor::I64($body),
        }
    };
}
use map_any;

fn to2(a: &ArrayD<f32>) -> ArrayView2<'_, f32> {
    a.view()
        .into_dimensionality::<Ix2>()
        .expect("invariant: infer checked rank 2")
}

fn reshape<T: Clone>(a: &ArrayD<T>, shape: &[usize]) -> ArrayD<T> {
    ArrayD::from_shape_vec(IxDyn(shape), a.iter().cloned().collect())
        .expect("invariant: infer checked the size")
}

fn binary(b: Binary, x: &Tensor, y: &Tensor, shape: &[usize]) -> Result<Tensor, OpError> {
    let sh = IxDyn(shape);
    let bad = || OpError::shape("broadcast");
    Ok(match (x, y) {
        (Tensor::F32(x), Tensor::F32(y)) => {
            let (xv, yv) = (
                x.broadcast(sh.clone()).ok_or_else(bad)?,
                y.broadcast(sh).ok_or_else(bad)?,
            );
            Tensor::F32(
                Zip::from(&xv)
                    .and(&yv)
                    .map_collect(|&p, &q| b.apply_f32(p, q)),
            )
        }
        (Tensor::I64(x), Tensor::I64(y)) => {
            let (xv, yv) = (
                x.broadcast(sh.clone()).ok_or_else(bad)?,
                y.broadcast(sh).ok_or_else(bad)?,
            );
            let r = Zip::from(&xv)
                .and(&yv)
                .map_collect(|&p, &q| b.apply_i64(p, q));
            if r.iter().any(|v| v.is_none()) {
                return Err(OpError::IntArith);
            }
            Tensor::I64(r.mapv(|v| v.unwrap_or_default()))
        }
        _ => {
            return Err(OpError::DType {
                port: 1,
                expected: x.dtype(),
                actual: y.dtype(),
            })
        }
    })
}

fn matmul(a: &ArrayD<f32>, b: &ArrayD<f32>, out_shape: &[usize]) -> ArrayD<f32> {
    let a2 = if a.ndim() == 1 {
        reshape(a, &[1, a.len()])
    } else {
        a.clone()
    };
    let b2 = if b.ndim() == 1 {
        reshape(b, &[b.len(), 1])
    } else {
        b.clone()
    };
    let (m, k) = (a2.shape()[a2.ndim() - 2], a2.shape()[a2.ndim() - 1]);
    let n = b2.shape()[b2.ndim() - 1];
    let batch = broadcast_shapes(&a2.shape()[..a2.ndim() - 2], &b2.shape()[..b2.ndim() - 2])
        .expect("invariant: infer checked the batch broadcast");
    let mut ash = batch.clone();
    ash.extend([m, k]);
    let mut bsh = batch.clone();
    bsh.extend([k, n]);
    let av = a2
        .broadcast(IxDyn(&ash))
        .expect("invariant: broadcast")
        .to_owned();
    let bv = b2
        .broadcast(IxDyn(&bsh))
        .expect("invariant: broadcast")
        .to_owned();
    let nb: usize = batch.iter().product();
    let af = reshape(&av, &[nb, m, k]);
    let bf = reshape(&bv, &[nb, k, n]);
    let mut out = Vec::with_capacity(nb * m * n);
    for i in 0..nb {
        let ai = af
            .index_axis(Axis(0), i)
            .into_dimensionality::<Ix2>()
            .expect("invariant: rank 2");
        let bi = bf
            .index_axis(Axis(0), i)
            .into_dimensionality::<Ix2>()
            .expect("invariant: rank 2");
        out.extend(ai.dot(&bi).iter().copied());
    }
    ArrayD::from_shape_vec(IxDyn(out_shape), out).expect("invariant: infer computed the shape")
}

/// Calls `f` with every multi-index of `shape` in row-major order.
pub fn for_each_index(shape: &[usize], mut f: impl FnMut(&[usize])) {
    if shape.contains(&0) {
        return;
    }
    let mut idx = vec![0usize; shape.len()];
    loop {
        f(&idx);
        let mut d = shape.len();
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

fn strides_of(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Element types the convolution kernel runs on: f32 (float graph) and i64 (accumulators,
/// checked: `None` on overflow).
trait ConvNum: Copy + Default {
    fn mul_add(acc: Self, v: Self, w: Self) -> Option<Self>;
}
impl ConvNum for f32 {
    fn mul_add(acc: f32, v: f32, w: f32) -> Option<f32> {
        Some(acc + v * w)
    }
}
impl ConvNum for i64 {
    fn mul_add(acc: i64, v: i64, w: i64) -> Option<i64> {
        acc.checked_add(v.checked_mul(w)?)
    }
}

/// N-d convolution. Padded positions are skipped when `pad` is `None` (they read 0) or read
/// `pad` (an integer input's zero point).
fn conv<T: ConvNum>(
    x: &ArrayD<T>,
    w: &ArrayD<T>,
    b: Option<&ArrayD<T>>,
    c: &ConvAttrs,
    out_shape: &[usize],
    pad: Option<T>,
) -> Option<ArrayD<T>> {
    let x = x.as_standard_layout();
    let w = w.as_standard_layout();
    let xs = x.as_slice().expect("invariant: standard layout");
    let ws = w.as_slice().expect("invariant: standard layout");
    let m = w.shape()[0];
    let out_plane: usize = out_shape[2..].iter().product();
    let mut out: Vec<T> = (0..out_shape.iter().product::<usize>())
        .map(|o| b.map_or(T::default(), |b| b[[(o / out_plane) % m]]))
        .collect();
    let mut ok = true;
    conv_taps(x.shape(), w.shape(), c, out_shape, |o, wi, xi| {
        let v = match (xi, pad) {
            (Some(i), _) => xs[i],
            (None, Some(p)) => p,
            (None, None) => return,
        };
        match T::mul_add(out[o], v, ws[wi]) {
            Some(r) => out[o] = r,
            None => ok = false,
        }
    });
    ok.then(|| {
        ArrayD::from_shape_vec(IxDyn(out_shape), out).expect("invariant: infer computed the shape")
    })
}

/// Walks a convolution's geometry: for every output element (row-major flat index `o` of
/// `out_shape`), for every kernel position and input channel of its group, calls
/// `f(o, weight_index, input_index)`, with `input_index` `None` where the window reads
/// padding. Indices are flat, row-major. The float kernel, the integer kernel and the
/// backend's lowering all read convolutions through this one walk.
pub fn conv_taps(
    x_shape: &[usize],
    w_shape: &[usize],
    c: &ConvAttrs,
    out_shape: &[usize],
    mut f: impl FnMut(usize, usize, Option<usize>),
) {
    let (n, cin) = (x_shape[0], x_shape[1]);
    let m = w_shape[0];
    let cpg = cin / c.group;
    let mpg = m / c.group;
    let sp_in = &x_shape[2..];
    let sp_out = &out_shape[2..];
    let in_str = strides_of(sp_in);
    let in_plane: usize = sp_in.iter().product();
    let k_len: usize = c.kernel.iter().product();
    let mut kpos = Vec::with_capacity(k_len);
    for_each_index(&c.kernel, |k| kpos.push(k.to_vec()));
    let d = sp_in.len();
    let mut o = 0;
    for bn in 0..n {
        for oc in 0..m {
            let g = oc / mpg;
            for_each_index(sp_out, |op| {
                for (ki, k) in kpos.iter().enumerate() {
                    let mut off = Some(0usize);
                    for a in 0..d {
                        let p = (op[a] * c.strides[a] + k[a] * c.dilations[a]) as i64
                            - c.pads_begin[a] as i64;
                        if p < 0 || p as usize >= sp_in[a] {
                            off = None;
                            break;
                        }
                        off = off.map(|v| v + p as usize * in_str[a]);
                    }
                    for ic in 0..cpg {
                        let wi = (oc * cpg + ic) * k_len + ki;
                        f(
                            o,
                            wi,
                            off.map(|off| (bn * cin + g * cpg + ic) * in_plane + off),
                        );
                    }
                }
                o += 1;
            });
        }
    }
}

fn pool(x: &ArrayD<f32>, p: &PoolAttrs, out_shape: &[usize], max: bool) -> ArrayD<f32> {
    let x = x.as_standard_layout();
    let xs = x.as_slice().expect("invariant: standard layout");
    let (n, c) = (x.shape()[0], x.shape()[1]);
    let sp_in = &x.shape()[2..];
    let sp_out = &out_shape[2..];
    let in_str = strides_of(sp_in);
    let in_plane: usize = sp_in.iter().product();
    let out_plane: usize = sp_out.iter().product();
    let mut kpos = Vec::new();
    for_each_index(&p.kernel, |k| kpos.push(k.to_vec()));
    let d = sp_in.len();
    let mut out = vec![0f32; n * c * out_plane];
    for plane in 0..n * c {
        let base = plane * in_plane;
        let mut o = 0;
        for_each_index(sp_out, |op| {
            let mut acc = if max { f32::NEG_INFINITY } else { 0.0 };
            let mut count = 0usize;
            for k in &kpos {
                let mut off = 0usize;
                let mut inside = true;
                let mut in_padded = true;
                for a in 0..d {
                    let i = (op[a] * p.strides[a] + k[a] * p.dilations[a]) as i64
                        - p.pads_begin[a] as i64;
                    if i < 0 || i as usize >= sp_in[a] {
                        inside = false;
                    }
                    if i < -(p.pads_begin[a] as i64) || i >= (sp_in[a] + p.pads_end[a]) as i64 {
                        in_padded = false;
                    }
                    if inside {
                        off += i as usize * in_str[a];
                    }
                }
                if inside {
                    let v = xs[base + off];
                    if max {
                        if v > acc || v.is_nan() {
                            acc = v;
                        }
                    } else {
                        acc += v;
                    }
                    count += 1;
                } else if p.count_include_pad && in_padded {
                    count += 1;
                }
            }
            out[plane * out_plane + o] = if max { acc } else { acc / count.max(1) as f32 };
            o += 1;
        });
    }
    ArrayD::from_shape_vec(IxDyn(out_shape), out).expect("invariant: infer computed the shape")
}

fn slice<T: Clone>(a: &ArrayD<T>, axes: &[SliceAxis], out_shape: &[usize]) -> ArrayD<T> {
    ArrayD::from_shape_fn(IxDyn(out_shape), |idx| {
        let mut src: Vec<usize> = idx.slice().to_vec();
        for s in axes {
            src[s.axis] = (s.start + src[s.axis] as i64 * s.step) as usize;
        }
        a[IxDyn(&src)].clone()
    })
}

fn pad<T: Clone>(
    a: &ArrayD<T>,
    begin: &[usize],
    mode: PadMode,
    value: T,
    out_shape: &[usize],
) -> ArrayD<T> {
    let s = a.shape().to_vec();
    ArrayD::from_shape_fn(IxDyn(out_shape), |idx| {
        let mut src = Vec::with_capacity(s.len());
        for (d, &i) in idx.slice().iter().enumerate() {
            let n = s[d] as i64;
            let j = i as i64 - begin[d] as i64;
            let j = if (0..n).contains(&j) {
                j
            } else {
                match mode {
                    PadMode::Constant => return value.clone(),
                    PadMode::Edge => j.clamp(0, n - 1),
                    PadMode::Wrap => j.rem_euclid(n),
                    PadMode::Reflect => {
                        if n == 1 {
                            0
                        } else {
                            let period = 2 * (n - 1);
                            let r = j.rem_euclid(period);
                            if r < n {
                                r
                            } else {
                                period - r
                            }
                        }
                    }
                }
            };
            src.push(j as usize);
        }
        a[IxDyn(&src)].clone()
    })
}

/// ONNX's ArgMax / ArgMin along `axis` (NaN compares as neither larger nor smaller).
fn arg_max(
    x: &ArrayD<f32>,
    axis: usize,
    keepdims: bool,
    select_last: bool,
    min: bool,
) -> ArrayD<f32> {
    let pick = |lane: ndarray::ArrayView1<f32>| -> f32 {
        let mut best: Option<(usize, f32)> = None;
        for (i, &v) in lane.iter().enumerate() {
            let better = match best {
                None => true,
                Some((_, b)) if min => v < b || (select_last && v == b),
                Some((_, b)) => v > b || (select_last && v == b),
            };
            if better {
                best = Some((i, v));
            }
        }
        best.map_or(0.0, |(i, _)| i as f32)
    };
    let y = x.map_axis(Axis(axis), pick);
    if keepdims {
        y.insert_axis(Axis(axis))
    } else {
        y
    }
}

fn softmax(x: &ArrayD<f32>, axis: usize, flatten: bool) -> ArrayD<f32> {
    fn lane_softmax(mut lane: ndarray::ArrayViewMut1<f32>) {
        let m = lane.fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        lane.mapv_inplace(|v| (v - m).exp());
        let s = lane.sum();
        lane.mapv_inplace(|v| v / s);
    }
    if x.ndim() == 0 {
        return x.mapv(|_| 1.0);
    }
    if flatten {
        let rows: usize = x.shape()[..axis].iter().product();
        let cols: usize = x.shape()[axis..].iter().product();
        let mut y = reshape(x, &[rows, cols]);
        for lane in y.lanes_mut(Axis(1)) {
            lane_softmax(lane);
        }
        reshape(&y, x.shape())
    } else {
        let mut y = x.clone();
        for lane in y.lanes_mut(Axis(axis)) {
            lane_softmax(lane);
        }
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_rules() {
        assert_eq!(
            broadcast_shapes(&[2, 1, 3], &[4, 1]).unwrap(),
            vec![2, 4, 3]
        );
        assert!(broadcast_shapes(&[2, 3], &[4]).is_err());
    }

    #[test]
    fn window_ceil_mode_drops_window_starting_in_padding() {
        // torch: size 5, k 2, s 2, ceil -> 3 windows; with pad 1 end it stays 3
        assert_eq!(window_out(5, 2, 2, 0, 0, 1, true).unwrap(), 3);
        assert_eq!(window_out(4, 2, 2, 0, 0, 1, true).unwrap(), 2);
    }

    #[test]
    fn index_walk_is_row_major() {
        let mut v = Vec::new();
        for_each_index(&[2, 2], |i| v.push(i.to_vec()));
        assert_eq!(v, vec![vec![0, 0], vec![0, 1], vec![1, 0], vec![1, 1]]);
    }
}
