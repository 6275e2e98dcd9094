//! quantize, encrypted × encrypted ops: Add/Sub on a common scale, Mul by squares,
//! Max/Min as `y + relu(x − y)`, MaxPool as a tree of maxima.

use super::{full, Builder, QVal};
use crate::PassError;
use fhec_ir::{Binary, IntLinear, NodeIndex, Op, PoolAttrs, QuantParams, Tensor, Unary};
use ndarray::{ArrayD, Dimension, IxDyn};

/// Bits of the squares in `x·y = ((x+y)² − (x−y)²)/4` beyond the activations' n_bits: the
/// product is the difference of two squares of up to `(|x| + |y|)²`, most of whose range a
/// typical product never reaches, so squares at n_bits alone lose most of it (digits_gated
/// at 4 bits: 72.6% → 93.3% on all 1,797 digits with one more bit). One bit, not two: two
/// widen the decrypted logits past what exact decryption at 6 bits can read.
const SQ_EXTRA: u32 = 1;

/// The encrypted integers a float value of the quantized graph is a function of.
#[derive(PartialEq)]
pub(super) struct Source(NodeIndex);

impl Builder<'_> {
    /// The one encrypted source of float node `qn` of the quantized graph, if every path up
    /// from it through elementwise float ops ends at a `Dequant` of the same integers.
    fn float_source(&self, qn: NodeIndex) -> Option<Source> {
        let g = &self.q;
        match &g.g[qn].op {
            Op::Dequant { .. } => Some(Source(g.inputs_of(qn)[0])),
            Op::Unary(_) => self.float_source(g.inputs_of(qn)[0]),
            Op::Binary(_) => {
                let ins = g.inputs_of(qn);
                let mut found: Option<Source> = None;
                for i in ins {
                    if matches!(g.g[i].op, Op::Const(_)) {
                        continue;
                    }
                    let s = self.float_source(i)?;
                    match &found {
                        Some(f) if *f != s => return None,
                        _ => found = Some(s),
                    }
                }
                found
            }
            _ => None,
        }
    }

    /// MaxPool: each window position read by a one-hot depthwise convolution (padding reads
    /// the smallest code, which never wins), then a tree of encrypted maxima.
    pub(super) fn max_pool(
        &mut self,
        n: NodeIndex,
        x: NodeIndex,
        p: PoolAttrs,
        name: &str,
        out_shape: Vec<usize>,
    ) -> Result<(), PassError> {
        let (xq, qp) = self.requant(x)?;
        let c = self.f.g[x].ty.shape[1];
        let attrs = self.pool_as_conv(x, &p, &out_shape);
        let k_total: usize = p.kernel.iter().product();
        let mut wshape = vec![c, 1];
        wshape.extend(&p.kernel);
        let mut taps = Vec::with_capacity(k_total);
        for k in 0..k_total {
            let w = ArrayD::from_shape_fn(IxDyn(&wshape), |ix| {
                let flat = ix
                    .as_array_view()
                    .iter()
                    .skip(2)
                    .zip(&p.kernel)
                    .fold(0, |acc, (&i, &kk)| acc * kk + i);
                i64::from(flat == k)
            });
            let lin = IntLinear::Conv {
                attrs: attrs.clone(),
                w,
                pad_value: qp.qmin,
            };
            taps.push(self.add(&format!("{name}:tap{k}"), Op::IntLinear(lin), &[xq])?);
        }
        let mut level = 0;
        while taps.len() > 1 {
            let mut next = Vec::with_capacity(taps.len().div_ceil(2));
            for (i, pair) in taps.chunks(2).enumerate() {
                next.push(match pair {
                    [a, b] => {
                        self.int_extreme(&format!("{name}:max{level}.{i}"), *a, *b, &qp, true)?
                    }
                    [a] => *a,
                    _ => unreachable!("invariant: chunks of 2"),
                });
            }
            taps = next;
            level += 1;
        }
        let s = qp.scale;
        self.set_enc(
            n,
            taps[0],
            vec![s],
            vec![-s * qp.zero_point as f32],
            Some(qp),
        );
        Ok(())
    }

    /// `max(x, y) = y + relu(x − y)` or `min(x, y) = x − relu(x − y)` on two codes of the
    /// same quantization `qp`: one table.
    pub(super) fn int_extreme(
        &mut self,
        name: &str,
        x: NodeIndex,
        y: NodeIndex,
        qp: &QuantParams,
        max: bool,
    ) -> Result<NodeIndex, PassError> {
        let r = self.relu_diff(name, x, y, qp)?;
        if max {
            self.add(name, Op::Binary(Binary::Add), &[y, r])
        } else {
            self.add(name, Op::Binary(Binary::Sub), &[x, r])
        }
    }

    /// `relu(x − y)` of two codes of `qp`, exact (a table on the difference).
    pub(super) fn relu_diff(
        &mut self,
        name: &str,
        x: NodeIndex,
        y: NodeIndex,
        qp: &QuantParams,
    ) -> Result<NodeIndex, PassError> {
        let d = self.add(&format!("{name}:diff"), Op::Binary(Binary::Sub), &[x, y])?;
        let dq = self.add(
            &format!("{name}:dequant"),
            Op::Dequant {
                a: vec![1.0],
                b: vec![0.0],
            },
            &[d],
        )?;
        let r = self.add(&format!("{name}:relu"), Op::Unary(Unary::Relu), &[dq])?;
        let codes = QuantParams {
            scale: 1.0,
            zero_point: 0,
            qmin: 0,
            qmax: qp.qmax - qp.qmin,
        };
        self.add(&format!("{name}:quant"), Op::Quant(codes), &[r])
    }

    pub(super) fn binary(
        &mut self,
        n: NodeIndex,
        op: Binary,
        ins: &[NodeIndex],
        vals: &[QVal],
        name: &str,
        out_shape: &[usize],
    ) -> Result<(), PassError> {
        let out_len: usize = out_shape.iter().product();
        // two functions of the same encrypted value (GELU's x·Φ(x), SiLU's x·σ(x)) are still
        // a function of that value: one table computes it (fuse_tlu), no product
        let source = |v: &QVal| match v {
            QVal::Enc { node, .. } => Some(Source(*node)),
            QVal::Float { node } => self.float_source(*node),
            QVal::Const(_) => None,
        };
        if ins.iter().all(|&i| self.f.g[i].ty.shape == out_shape) {
            if let (Some(s0), Some(s1)) = (source(&vals[0]), source(&vals[1])) {
                if s0 == s1 {
                    let (x, y) = (self.float_node(ins[0])?, self.float_node(ins[1])?);
                    let node = self.add(name, Op::Binary(op), &[x, y])?;
                    self.vals.insert(n, QVal::Float { node });
                    return Ok(());
                }
            }
        }
        match (&vals[0], &vals[1]) {
            (QVal::Const(c), other) | (other, QVal::Const(c)) => {
                let const_first = matches!(vals[0], QVal::Const(_));
                let xi = if const_first { ins[1] } else { ins[0] };
                if self.f.g[xi].ty.shape != out_shape {
                    return Err(self.unsupported(
                        n,
                        "a constant operand may not broadcast the encrypted tensor larger",
                    ));
                }
                let cv = c.to_f32();
                let cb: Vec<f32> = cv
                    .broadcast(IxDyn(out_shape))
                    .ok_or_else(|| self.unsupported(n, "constant does not broadcast"))?
                    .iter()
                    .copied()
                    .collect();
                // affine updates stay encrypted integers with a new meaning
                if let QVal::Enc { node, a, b, .. } = other {
                    let (a, b) = (full(a, out_len), full(b, out_len));
                    let upd: Option<(Vec<f32>, Vec<f32>)> = match (op, const_first) {
                        (Binary::Add, _) => {
                            Some((a, b.iter().zip(&cb).map(|(b, c)| b + c).collect()))
                        }
                        (Binary::Sub, false) => {
                            Some((a, b.iter().zip(&cb).map(|(b, c)| b - c).collect()))
                        }
                        (Binary::Sub, true) => Some((
                            a.iter().map(|v| -v).collect(),
                            b.iter().zip(&cb).map(|(b, c)| c - b).collect(),
                        )),
                        (Binary::Mul, _) => Some((
                            a.iter().zip(&cb).map(|(a, c)| a * c).collect(),
                            b.iter().zip(&cb).map(|(b, c)| b * c).collect(),
                        )),
                        (Binary::Div, false) => Some((
                            a.iter().zip(&cb).map(|(a, c)| a / c).collect(),
                            b.iter().zip(&cb).map(|(b, c)| b / c).collect(),
                        )),
                        _ => None,
                    };
                    if let Some((a, b)) = upd {
                        self.set_enc(n, *node, a, b, None);
                        return Ok(());
                    }
                }
                let xf = self.float_node(xi)?;
                let cn = self.q.add_const(&format!("{name}:const"), Tensor::F32(cv));
                let args = if const_first { [cn, xf] } else { [xf, cn] };
                let node = self.add(name, Op::Binary(op), &args)?;
                self.vals.insert(n, QVal::Float { node });
                Ok(())
            }
            _ if !self.needs_server[&n]
                && !matches!(
                    op,
                    Binary::Add | Binary::Sub | Binary::Mul | Binary::Max | Binary::Min
                ) =>
            {
                let (x, y) = (self.float_node(ins[0])?, self.float_node(ins[1])?);
                let node = self.add(name, Op::Binary(op), &[x, y])?;
                self.vals.insert(n, QVal::Float { node });
                Ok(())
            }
            _ => self.encrypted_binary(n, op, ins, vals, name, out_shape),
        }
    }

    /// `x·y` of two encrypted tensors, each on its own grid (its calibrated range at `nb`
    /// bits, so that a probability in [0, 1] times a value in [−5, 5] keeps both
    /// resolutions): with centred codes `u = qx − zx`, `v = qy − zy` (integers),
    /// `u·v = ((u + v)² − (u − v)²)/4`, each square one table whose output is requantized on
    /// one grid of `nb + SQ_EXTRA` bits; `x·y = sx·sy·u·v`.
    fn encrypted_product(
        &mut self,
        n: NodeIndex,
        ins: &[NodeIndex],
        name: &str,
        nb: u32,
    ) -> Result<(), PassError> {
        let px = self.act_params_at(ins[0], nb)?;
        let py = self.act_params_at(ins[1], nb)?;
        let (x, px) = self.requant_with(ins[0], px)?;
        let (y, py) = self.requant_with(ins[1], py)?;
        let (zx, zy) = (px.zero_point as f32, py.zero_point as f32);
        // the largest |u| and |v|, and the bound of the squares
        let ux = (px.qmax - px.zero_point)
            .abs()
            .max((px.qmin - px.zero_point).abs()) as f32;
        let uy = (py.qmax - py.zero_point)
            .abs()
            .max((py.qmin - py.zero_point).abs()) as f32;
        let sq = QuantParams::unsigned(0.0, (ux + uy).powi(2), (nb + SQ_EXTRA).min(16));
        let sum = self.add(&format!("{name}:sum"), Op::Binary(Binary::Add), &[x, y])?;
        let dif = self.add(&format!("{name}:diff"), Op::Binary(Binary::Sub), &[x, y])?;
        let mut squares = Vec::with_capacity(2);
        let two = self
            .q
            .add_const(&format!("{name}:two"), Tensor::scalar_f32(2.0));
        // u + v = (qx + qy) − (zx + zy); u − v = (qx − qy) − (zx − zy)
        for (tag, node, b) in [("sum", sum, -(zx + zy)), ("diff", dif, -(zx - zy))] {
            let dq = self.add(
                &format!("{name}:{tag}:dequant"),
                Op::Dequant {
                    a: vec![1.0],
                    b: vec![b],
                },
                &[node],
            )?;
            let p2 = self.add(
                &format!("{name}:{tag}:square"),
                Op::Binary(Binary::Pow),
                &[dq, two],
            )?;
            squares.push(self.add(&format!("{name}:{tag}:quant"), Op::Quant(sq), &[p2])?);
        }
        let node = self.add(name, Op::Binary(Binary::Sub), &[squares[0], squares[1]])?;
        let a = sq.scale / 4.0 * px.scale * py.scale;
        self.set_enc(n, node, vec![a], vec![0.0], None);
        Ok(())
    }

    /// Both operands encrypted.
    pub(super) fn encrypted_binary(
        &mut self,
        n: NodeIndex,
        op: Binary,
        ins: &[NodeIndex],
        vals: &[QVal],
        name: &str,
        out_shape: &[usize],
    ) -> Result<(), PassError> {
        if self.f.g[ins[0]].ty.shape != out_shape || self.f.g[ins[1]].ty.shape != out_shape {
            return Err(self.unsupported(
                n,
                "encrypted operands must have the same shape (no broadcasting)",
            ));
        }
        // x ± y with the same per-element scale: leveled
        if let (
            QVal::Enc {
                node: x,
                a: ax,
                b: bx,
                ..
            },
            QVal::Enc {
                node: y,
                a: ay,
                b: by,
                ..
            },
        ) = (&vals[0], &vals[1])
        {
            let len: usize = out_shape.iter().product();
            if matches!(op, Binary::Add | Binary::Sub) && full(ax, len) == full(ay, len) {
                let node = self.add(name, Op::Binary(op), &[*x, *y])?;
                let sign = if op == Binary::Add { 1.0 } else { -1.0 };
                let b = full(bx, len)
                    .iter()
                    .zip(full(by, len))
                    .map(|(p, q)| p + sign * q)
                    .collect();
                self.set_enc(n, node, full(ax, len), b, None);
                return Ok(());
            }
        }
        let nb = self.cx.config.n_bits_activations;
        if op == Binary::Mul {
            return self.encrypted_product(n, ins, name, nb);
        }
        // a common quantization for both operands
        let (r0, r1) = (self.range(ins[0])?, self.range(ins[1])?);
        let common = QuantParams::unsigned(r0.0.min(r1.0), r0.1.max(r1.1), nb);
        let (x, _) = self.requant_with(ins[0], common)?;
        let (y, _) = self.requant_with(ins[1], common)?;
        let s = common.scale;
        let z = common.zero_point as f32;
        match op {
            Binary::Add | Binary::Sub => {
                let node = self.add(name, Op::Binary(op), &[x, y])?;
                let b = if op == Binary::Add { -2.0 * s * z } else { 0.0 };
                self.set_enc(n, node, vec![s], vec![b], None);
            }
            Binary::Max | Binary::Min => {
                let node = self.int_extreme(name, x, y, &common, op == Binary::Max)?;
                self.set_enc(n, node, vec![s], vec![-s * z], Some(common));
            }
            _ => {
                return Err(self.unsupported(
                    n,
                    "this operation of two encrypted tensors is not supported",
                ));
            }
        }
        Ok(())
    }
}
