//! Shape inference and float evaluation of every [`Op`]: the reference semantics of the float
//! graph, following the ONNX operator specification.
//!
//! `infer` and `eval` share the same shape rules ([`shape`]), so a graph whose types verify
//! evaluates to tensors of exactly those types. The kernels live beside them: [`dense`]
//! (matrix products, binary ops), [`window`] (convolution, pooling), [`movement`] (slice,
//! pad, arg max, softmax).

mod dense;
mod movement;
mod shape;
mod window;

pub use shape::broadcast_shapes;
pub use window::{conv_taps, for_each_index};

use dense::*;
use movement::*;
use shape::*;
use window::*;

use crate::error::OpError;
use crate::limits::Limits;
use crate::op::{IntLinear, Op, ReduceKind};
use crate::tensor::{saturating_len, DType, Tensor, TensorType};
use ndarray::{concatenate, Array2, ArrayD, ArrayViewD, Axis, Ix2, IxDyn, Zip};

pub(super) fn arity_check(op: &Op, n: usize) -> Result<(), OpError> {
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

pub(super) fn want(port: usize, ty: &TensorType, dtype: DType) -> Result<(), OpError> {
    if ty.dtype != dtype {
        return Err(OpError::DType {
            port,
            expected: dtype,
            actual: ty.dtype,
        });
    }
    Ok(())
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

pub(super) fn i64_in<'a>(ins: &[&'a Tensor], port: usize) -> Result<&'a ArrayD<i64>, OpError> {
    ins[port].as_i64().ok_or(OpError::DType {
        port,
        expected: DType::I64,
        actual: ins[port].dtype(),
    })
}

pub(super) fn f32_in<'a>(ins: &[&'a Tensor], port: usize) -> Result<&'a ArrayD<f32>, OpError> {
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
