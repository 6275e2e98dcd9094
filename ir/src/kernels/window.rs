//! Sliding windows: N-d convolution (float and checked integer, one geometry walk the backend
//! shares: [`conv_taps`]) and pooling.

use crate::op::{ConvAttrs, PoolAttrs};
use ndarray::{ArrayD, IxDyn};

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

pub(super) fn strides_of(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Element types the convolution kernel runs on: f32 (float graph) and i64 (accumulators,
/// checked: `None` on overflow).
pub(super) trait ConvNum: Copy + Default {
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
pub(super) fn conv<T: ConvNum>(
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

pub(super) fn pool(x: &ArrayD<f32>, p: &PoolAttrs, out_shape: &[usize], max: bool) -> ArrayD<f32> {
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
