//! quantize, linear layers: weight quantization, Gemm/MatMul as integer dense layers, Conv,
//! and average pooling as a convolution with clear weights.

use super::{full, uniform, Builder, QVal};
use crate::PassError;
use fhec_ir::{
    kernels, Binary, ConvAttrs, IntLinear, NodeIndex, Op, PoolAttrs, QuantParams, Tensor,
};
use ndarray::{ArrayD, IxDyn};

/// Weights a model quantized itself (a QDQ or QONNX model's DequantizeLinear of integer
/// weights, folded): every row on one symmetric grid `k·s` of at most 16 bits, per tensor or
/// per row. The grid is the narrowest with the largest weight on its top code, else (a
/// power-of-two scale leaves the top code unused: Brevitas' fixed-point quantizers, `fhec
/// train --power-of-two`) the coarsest that divides the smallest weight into at most 64
/// steps. In a model that holds its own activation grids, their integers are used as they
/// are, whatever `n_bits` says: the model defines them (a float model's weights are left to
/// `n_bits`, even when they happen to be round numbers).
fn own_grid(rows: &[Vec<f32>], global: f32) -> Option<(Vec<Vec<i64>>, Vec<f32>)> {
    let top = |b: u32| ((1u32 << (b - 1)) - 1) as f32;
    let on_grid = |rs: &[&Vec<f32>], s: f32| {
        rs.iter().all(|r| {
            r.iter().all(|&v| {
                let k = v / s;
                (k - k.round()).abs() <= 1e-3
            })
        })
    };
    // the scale of the narrowest symmetric grid that holds every row given, `m` the largest
    // magnitude among them
    let scale_of = |rs: &[&Vec<f32>], m: f32| {
        (2..=16)
            .map(|b| m / top(b))
            .find(|&s| on_grid(rs, s))
            .or_else(|| {
                let least = rs
                    .iter()
                    .flat_map(|r| r.iter().map(|v| v.abs()))
                    .filter(|&v| v > 0.0)
                    .fold(f32::INFINITY, f32::min);
                (1..=64)
                    .map(|j| least / j as f32)
                    .take_while(|&s| m / s <= top(16) + 0.5)
                    .find(|&s| on_grid(rs, s))
            })
    };
    let all: Vec<&Vec<f32>> = rows.iter().collect();
    // one scale for every row (per tensor), else one per row (per output channel)
    let scales: Vec<f32> = match (global > 0.0).then(|| scale_of(&all, global)).flatten() {
        Some(s) => vec![s; rows.len()],
        None => rows
            .iter()
            .map(|r| match r.iter().fold(0f32, |m, &v| m.max(v.abs())) {
                0.0 => Some(1.0),
                m => scale_of(&[r], m),
            })
            .collect::<Option<_>>()?,
    };
    let qs = rows
        .iter()
        .zip(&scales)
        .map(|(r, &s)| r.iter().map(|&v| (v / s).round() as i64).collect())
        .collect();
    Some((qs, scales))
}

/// A linear layer's integer weights (one row per output) and per-row scales.
struct LayerWeights {
    q: Vec<Vec<i64>>,
    scales: Vec<f32>,
    /// The weights' bits.
    bits: u32,
    /// `Some(L)`: a decrypted layer wider than `n_bits_weights = L`, run as limbs of `L` bits.
    limb: Option<u32>,
}

impl Builder<'_> {
    /// Symmetric weight quantization of `rows[j]` (one row per output), per channel or per
    /// tensor: integer weights and one scale per output.
    pub(super) fn quant_weights(&self, rows: &[Vec<f32>], nb: u32) -> (Vec<Vec<i64>>, Vec<f32>) {
        let absmax = |r: &Vec<f32>| r.iter().fold(0f32, |m, &v| m.max(v.abs()));
        let global = rows.iter().map(absmax).fold(0f32, f32::max);
        if let Some(w) = self
            .self_quantized
            .then(|| own_grid(rows, global))
            .flatten()
        {
            return w;
        }
        let mut qs = Vec::with_capacity(rows.len());
        let mut scales = Vec::with_capacity(rows.len());
        for r in rows {
            let p = QuantParams::symmetric(
                if self.cx.config.per_channel {
                    absmax(r)
                } else {
                    global
                },
                nb,
            );
            qs.push(r.iter().map(|&v| p.quantize(v)).collect());
            scales.push(p.scale);
        }
        (qs, scales)
    }

    /// `y[.., j] = Σ_i x[.., i]·w[i][j] + bias[j]` on an encrypted `x`.
    pub(super) fn dense(
        &mut self,
        n: NodeIndex,
        x: NodeIndex,
        w: &[Vec<f32>],
        bias: &[f32],
        name: &str,
        out_shape: Vec<usize>,
    ) -> Result<(), PassError> {
        // Any encrypted integer with a per-element affine meaning `a·q + b` works: the
        // effective weights are `w·a`, the constant `Σ w·b` joins the bias. Float values are
        // requantized first.
        let layer = self.name(n);
        let (mut xq, mut ax, mut bx) = self.linear_input(x, self.cx.config.input_bits(&layer))?;
        let (k, nn) = (w.len(), bias.len());
        let in_len = ax.len();
        let rows_per = in_len / k;
        // several rows (a batched MatMul) need one affine map per input column: rows that
        // differ (a per-position constant added before, say) are requantized onto one grid
        if rows_per != 1
            && (1..rows_per)
                .any(|r| ax[r * k..(r + 1) * k] != ax[..k] || bx[r * k..(r + 1) * k] != bx[..k])
        {
            let (node, p) = self.requant(x)?;
            let s = p.scale;
            (xq, ax, bx) = (
                node,
                vec![s; in_len],
                vec![-s * p.zero_point as f32; in_len],
            );
        }
        let rows: Vec<Vec<f32>> = (0..nn)
            .map(|j| (0..k).map(|i| w[i][j] * ax[i]).collect())
            .collect();
        let lw = self.layer_weights(n, &rows);
        let len: usize = out_shape.iter().product();
        let a: Vec<f32> = (0..len).map(|e| lw.scales[e % nn]).collect();
        let consts: Vec<f32> = (0..nn)
            .map(|j| (0..k).map(|i| w[i][j] * bx[i]).sum::<f32>() + bias[j])
            .collect();
        let b: Vec<f32> = (0..len).map(|e| consts[e % nn]).collect();
        self.emit_linear(n, name, &lw, xq, a, b, |qw| {
            let w = ArrayD::from_shape_fn(IxDyn(&[k, nn]), |ix| qw[ix[1]][ix[0]]);
            IntLinear::Dense { w }
        })
    }

    /// Whether the client decrypts linear layer `n`'s output: no encrypted op reads it, and
    /// fhec chose its weights (a self-quantized model's are its own).
    fn is_decrypted(&self, n: NodeIndex) -> bool {
        !self.self_quantized && !self.f.users_of(n).iter().any(|u| self.needs_server[u])
    }

    /// Integer weights and per-row scales of linear layer `n`. A decrypted layer with more
    /// bits than `n_bits_weights` (`L`) gets the `L`-bit grid refined `2^(bits − L)` times, so
    /// that its top limb is exactly the `L`-bit layer and the lower limbs quantize that
    /// layer's error (a plain `bits`-bit grid would put the top limb's largest weight one
    /// step beyond `L` bits, and its accumulator a bit wider).
    fn layer_weights(&self, n: NodeIndex, rows: &[Vec<f32>]) -> LayerWeights {
        let layer = self.name(n);
        let decrypted = self.is_decrypted(n);
        let bits = if decrypted {
            self.cx.config.decrypted_weight_bits(&layer)
        } else {
            self.cx.config.weight_bits(&layer)
        };
        let l = self.cx.config.n_bits_weights;
        if !decrypted || bits <= l {
            let (q, scales) = self.quant_weights(rows, bits);
            return LayerWeights {
                q,
                scales,
                bits,
                limb: None,
            };
        }
        let (_, scales) = self.quant_weights(rows, l);
        let fine = (1u64 << (bits - l)) as f32;
        let scales: Vec<f32> = scales.iter().map(|s| s / fine).collect();
        let q = rows
            .iter()
            .zip(&scales)
            .map(|(r, &s)| {
                r.iter()
                    .map(|&v| if s > 0.0 { (v / s).round() as i64 } else { 0 })
                    .collect()
            })
            .collect();
        LayerWeights {
            q,
            scales,
            bits,
            limb: Some(l),
        }
    }

    /// Linear layer `n` with weights `lw` and output meaning `a·acc + b`. A decrypted layer
    /// whose weights are wider than `n_bits_weights` runs as limbs (`lw.q = Σ 2^shift·limb`,
    /// see [`limbs`]): each limb's accumulator is as narrow as
    /// an `n_bits_weights` layer's, is decrypted on its own, and the client sums them in
    /// float.
    #[allow(clippy::too_many_arguments)]
    fn emit_linear(
        &mut self,
        n: NodeIndex,
        name: &str,
        lw: &LayerWeights,
        xq: NodeIndex,
        a: Vec<f32>,
        b: Vec<f32>,
        lin: impl Fn(&[Vec<i64>]) -> IntLinear,
    ) -> Result<(), PassError> {
        let wide = lw.bits;
        let Some(limb) = lw.limb else {
            if !self.self_quantized {
                self.weight_bits.insert(name.to_string(), wide);
            }
            let node = self.add(name, Op::IntLinear(lin(&lw.q)), &[xq])?;
            self.set_enc(n, node, a, b, None);
            return Ok(());
        };
        let mut sum: Option<NodeIndex> = None;
        for (shift, part) in limbs(&lw.q, wide, limb) {
            let top = shift + limb >= wide;
            let lname = if top {
                name.to_string()
            } else {
                format!("{name}:limb{shift}")
            };
            self.weight_bits.insert(lname.clone(), wide);
            let node = self.add(&lname, Op::IntLinear(lin(&part)), &[xq])?;
            let k = (1i64 << shift) as f32;
            let dq = Op::Dequant {
                a: a.iter().map(|v| v * k).collect(),
                b: if sum.is_none() { b.clone() } else { vec![0.0] },
            };
            let f = self.add(&format!("{lname}:dequant"), dq, &[node])?;
            sum = Some(match sum {
                None => f,
                Some(s) => self.add(&format!("{lname}:sum"), Op::Binary(Binary::Add), &[s, f])?,
            });
        }
        let node = sum.expect("invariant: at least one limb");
        self.vals.insert(n, QVal::Float { node });
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn conv(
        &mut self,
        n: NodeIndex,
        x: NodeIndex,
        w: &ArrayD<f32>,
        bias: &[f32],
        attrs: ConvAttrs,
        name: &str,
        out_shape: Vec<usize>,
    ) -> Result<(), PassError> {
        // a uniform affine meaning with an integer code for 0.0 (what padding reads)
        let layer = self.name(n);
        let (xq, s, b0, zero_code) = self.uniform_input(x, self.cx.config.input_bits(&layer))?;
        let m = w.shape()[0];
        let per = w.len() / m;
        let flat: Vec<f32> = w.iter().copied().collect();
        let rows: Vec<Vec<f32>> = (0..m)
            .map(|j| flat[j * per..(j + 1) * per].iter().map(|v| v * s).collect())
            .collect();
        let lw = self.layer_weights(n, &rows);
        let len: usize = out_shape.iter().product();
        let plane = len / (out_shape[0] * m);
        let consts: Vec<f32> = (0..m)
            .map(|j| flat[j * per..(j + 1) * per].iter().sum::<f32>() * b0 + bias[j])
            .collect();
        let a: Vec<f32> = (0..len).map(|e| lw.scales[(e / plane) % m]).collect();
        let b: Vec<f32> = (0..len).map(|e| consts[(e / plane) % m]).collect();
        let shape = w.shape().to_vec();
        self.emit_linear(n, name, &lw, xq, a, b, |qw| IntLinear::Conv {
            attrs: attrs.clone(),
            w: ArrayD::from_shape_vec(IxDyn(&shape), qw.concat()).expect("invariant: same size"),
            pad_value: zero_code,
        })
    }

    /// Input of a dense layer: the integer node and its per-element `a`, `b` (full length).
    pub(super) fn linear_input(
        &mut self,
        x: NodeIndex,
        bits: u32,
    ) -> Result<(NodeIndex, Vec<f32>, Vec<f32>), PassError> {
        let len = self.f.g[x].ty.len();
        if let Some((node, p)) = self.requant_for_layer(x, bits)? {
            let s = p.scale;
            return Ok((node, vec![s; len], vec![-s * p.zero_point as f32; len]));
        }
        if matches!(self.val(x), QVal::Float { .. }) {
            self.requant(x)?;
        }
        match self.val(x) {
            QVal::Enc { node, a, b, .. } => Ok((node, full(&a, len), full(&b, len))),
            _ => Err(self.unsupported(x, "a constant where an encrypted value is expected")),
        }
    }

    /// Input of a convolution or pool: one scale `s` for all elements and an integer code for
    /// 0.0, so that padding can read it. Otherwise the value is requantized.
    pub(super) fn uniform_input(
        &mut self,
        x: NodeIndex,
        bits: u32,
    ) -> Result<(NodeIndex, f32, f32, i64), PassError> {
        if let Some((node, p)) = self.requant_for_layer(x, bits)? {
            return Ok((node, p.scale, -p.scale * p.zero_point as f32, p.zero_point));
        }
        if let QVal::Enc { node, a, b, .. } = self.val(x) {
            if let (Some(s), Some(b0)) = (uniform(&a), uniform(&b)) {
                let z = -b0 / s;
                if s != 0.0 && z.is_finite() && (z - z.round()).abs() < 1e-3 {
                    return Ok((node, s, b0, z.round() as i64));
                }
            }
        }
        let (node, p) = self.requant(x)?;
        Ok((node, p.scale, -p.scale * p.zero_point as f32, p.zero_point))
    }

    /// Pool geometry as a depthwise convolution: pads widened so that the floor formula gives
    /// the pooled size (ceil mode).
    pub(super) fn pool_as_conv(
        &self,
        x: NodeIndex,
        p: &PoolAttrs,
        out_shape: &[usize],
    ) -> ConvAttrs {
        let xs = &self.f.g[x].ty.shape;
        let d = p.kernel.len();
        let mut pads_end = p.pads_end.clone();
        for i in 0..d {
            let need =
                (out_shape[i + 2] - 1) * p.strides[i] + p.dilations[i] * (p.kernel[i] - 1) + 1;
            let have = xs[i + 2] + p.pads_begin[i] + p.pads_end[i];
            if need > have {
                pads_end[i] += need - have;
            }
        }
        ConvAttrs {
            kernel: p.kernel.clone(),
            strides: p.strides.clone(),
            pads_begin: p.pads_begin.clone(),
            pads_end,
            dilations: p.dilations.clone(),
            group: xs[1],
        }
    }

    pub(super) fn avg_pool(
        &mut self,
        n: NodeIndex,
        x: NodeIndex,
        p: PoolAttrs,
        name: &str,
        out_shape: Vec<usize>,
    ) -> Result<(), PassError> {
        let (xq, s, b0, zero_code) =
            self.uniform_input(x, self.cx.config.input_bits(&self.name(n)))?;
        let xs = self.f.g[x].ty.shape.clone();
        let c = xs[1];
        let attrs = self.pool_as_conv(x, &p, &out_shape);
        let mut wshape = vec![c, 1];
        wshape.extend(&p.kernel);
        let k_total: usize = p.kernel.iter().product();
        let ones = ArrayD::from_elem(IxDyn(&wshape), 1i64);
        let lin = IntLinear::Conv {
            attrs: attrs.clone(),
            w: ones.clone(),
            pad_value: zero_code,
        };
        let node = self.add(name, Op::IntLinear(lin), &[xq])?;
        // divisor per output position: real elements r over avg(ones) = r / count
        let ones_in = Tensor::I64(ArrayD::from_elem(IxDyn(&xs), 1));
        let real = kernels::eval(
            &Op::IntLinear(IntLinear::Conv {
                attrs,
                w: ones,
                pad_value: 0,
            }),
            &[&ones_in],
        )
        .map_err(|e| self.unsupported(n, e.to_string()))?;
        let avg1 = kernels::eval(
            &Op::AveragePool(p),
            &[&Tensor::F32(ArrayD::from_elem(IxDyn(&xs), 1.0))],
        )
        .map_err(|e| self.unsupported(n, e.to_string()))?;
        let (real, avg1) = (real.f32_values(), avg1.f32_values());
        // x = s·q + b0 with b0 = −s·z: the window sum of reals is s·(acc − K·z)
        let z = zero_code as f32;
        let (mut a, mut b) = (
            Vec::with_capacity(real.len()),
            Vec::with_capacity(real.len()),
        );
        for (r, v) in real.iter().zip(&avg1) {
            let count = r / v;
            a.push(s / count);
            b.push(-s * k_total as f32 * z / count);
        }
        debug_assert!((b0 + s * z).abs() <= 1e-3 * s.abs().max(1e-12) * z.abs().max(1.0));
        self.set_enc(n, node, a, b, None);
        Ok(())
    }
}

/// Integer weights `q` on a `limb`-bit grid refined `2^(wide − limb)` times (at most
/// `(2^(limb−1) − 1)·2^(wide − limb)` in magnitude) as limbs: `q = Σ 2^shift·part`, lowest
/// first, each lower part a centred digit of `c ≤ limb` bits (at most `2^(c−1)` in
/// magnitude), the top one what is left (at most `2^(limb−1) − 1`: the `limb`-bit layer).
/// Parts that are all zero are left out.
fn limbs(q: &[Vec<i64>], wide: u32, limb: u32) -> Vec<(u32, Vec<Vec<i64>>)> {
    let mut rest = q.to_vec();
    let (mut bits, mut shift) = (wide, 0);
    let mut out = Vec::new();
    while bits > limb {
        let c = (bits - limb).min(limb);
        let half = 1i64 << (c - 1);
        let mut low = rest.clone();
        for (r, l) in rest.iter_mut().zip(&mut low) {
            for (v, d) in r.iter_mut().zip(l) {
                // round half away from zero: the top limb's bound stays symmetric
                let hi = (v.abs() + half).div_euclid(1 << c) * v.signum();
                *d = *v - (hi << c);
                *v = hi;
            }
        }
        if low.iter().flatten().any(|&d| d != 0) {
            out.push((shift, low));
        }
        shift += c;
        bits -= c;
    }
    out.push((shift, rest));
    out
}

#[cfg(test)]
mod tests {
    use super::{limbs, own_grid};

    #[test]
    fn limbs_sum_to_the_weights() {
        for (wide, limb) in [(10, 6), (6, 2), (12, 8), (7, 6), (12, 4)] {
            let top = ((1i64 << (limb - 1)) - 1) << (wide - limb);
            let q: Vec<Vec<i64>> = vec![(-top..=top).collect()];
            let parts = limbs(&q, wide, limb);
            assert!(parts.len() >= 2, "{wide}/{limb}");
            for (i, &v) in q[0].iter().enumerate() {
                let sum: i64 = parts.iter().map(|(s, p)| p[0][i] << s).sum();
                assert_eq!(sum, v, "{wide}/{limb}");
            }
            // the top limb is a `limb`-bit symmetric layer; the others are centred digits
            let (last, lower) = parts.split_last().expect("parts");
            assert!(
                last.1[0].iter().all(|v| v.abs() < 1 << (limb - 1)),
                "{wide}/{limb}"
            );
            for (_, p) in lower {
                assert!(
                    p[0].iter().all(|v| v.abs() <= 1 << (limb - 1)),
                    "{wide}/{limb}"
                );
            }
        }
    }

    #[test]
    fn own_grid_reads_weights_whose_top_code_is_unused() {
        // a 3-bit narrow grid of step 0.25 whose largest weight is 2 steps (power-of-two scale)
        let rows = vec![vec![0.5, -0.25, 0.0], vec![0.25, 0.5, -0.5]];
        let (q, s) = own_grid(&rows, 0.5).expect("on a grid");
        assert_eq!(s, vec![0.25, 0.25]);
        assert_eq!(q, vec![vec![2, -1, 0], vec![1, 2, -2]]);
        // the top-code grid still comes first
        let rows = vec![vec![0.3, -0.1, 0.2]];
        let (q, _) = own_grid(&rows, 0.3).expect("on a grid");
        assert_eq!(q, vec![vec![3, -1, 2]]);
        // not on any grid of at most 16 bits
        assert!(own_grid(&[vec![0.3, 0.1234567]], 0.3).is_none());
    }
}
