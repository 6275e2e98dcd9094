//! Ops that move or select values: slice, pad, ArgMax/ArgMin, Softmax.

use super::dense::reshape;
use crate::op::{PadMode, SliceAxis};
use ndarray::{ArrayD, Axis, Dimension, IxDyn};

pub(super) fn slice<T: Clone>(a: &ArrayD<T>, axes: &[SliceAxis], out_shape: &[usize]) -> ArrayD<T> {
    ArrayD::from_shape_fn(IxDyn(out_shape), |idx| {
        let mut src: Vec<usize> = idx.slice().to_vec();
        for s in axes {
            src[s.axis] = (s.start + src[s.axis] as i64 * s.step) as usize;
        }
        a[IxDyn(&src)].clone()
    })
}

pub(super) fn pad<T: Clone>(
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
pub(super) fn arg_max(
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

pub(super) fn softmax(x: &ArrayD<f32>, axis: usize, flatten: bool) -> ArrayD<f32> {
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
