//! Dense arithmetic: the checked integer dense layer, float MatMul and broadcast binary ops.

use super::shape::broadcast_shapes;
use crate::error::OpError;
use crate::op::Binary;
use crate::tensor::Tensor;
use ndarray::{ArrayD, ArrayView2, Axis, Ix2, IxDyn, Zip};

/// `x[…, K] · w[K, N]` in checked integer arithmetic; `None` on overflow.
pub(super) fn int_dense(
    x: &ArrayD<i64>,
    w: &ArrayD<i64>,
    out_shape: &[usize],
) -> Option<ArrayD<i64>> {
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

pub(super) fn to2(a: &ArrayD<f32>) -> ArrayView2<'_, f32> {
    a.view()
        .into_dimensionality::<Ix2>()
        .expect("invariant: infer checked rank 2")
}

pub(super) fn reshape<T: Clone>(a: &ArrayD<T>, shape: &[usize]) -> ArrayD<T> {
    ArrayD::from_shape_vec(IxDyn(shape), a.iter().cloned().collect())
        .expect("invariant: infer checked the size")
}

pub(super) fn binary(
    b: Binary,
    x: &Tensor,
    y: &Tensor,
    shape: &[usize],
) -> Result<Tensor, OpError> {
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

pub(super) fn matmul(a: &ArrayD<f32>, b: &ArrayD<f32>, out_shape: &[usize]) -> ArrayD<f32> {
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
