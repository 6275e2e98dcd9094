//! quantize: calibrated float graph → quantized (mixed) graph.
//!
//! Every float value becomes one of:
//! - a clear constant;
//! - an encrypted integer tensor `q` with a per-element affine meaning `v = a·q + b`
//!   (graph inputs, accumulators of linear layers, requantized activations);
//! - a float value computed from one (`Dequant` then the original univariate ops), waiting to
//!   be requantized (`Quant`) by the next encrypted consumer or read by the client.
//!
//! Linear ops with clear weights (Gemm, MatMul, Conv, AveragePool, GlobalAveragePool) take an
//! `n_bits` requantized input and become `IntLinear` accumulators `acc = Σ w_q · x_q`; zero
//! points, scales and biases go into the accumulator's affine meaning and so into the next
//! table. Affine ops on an encrypted value (bias add, scaling, BatchNorm, Neg) only update
//! `a` and `b`. Encrypted × encrypted ops lower to leveled ops plus tables: `x ± y` on a
//! common scale, `x·y = ((x+y)² − (x−y)²)/4`, `max(x, y) = y + relu(x − y)`, MaxPool as a tree
//! of such maxima. Ops that cannot run encrypted (Softmax, …) and feed no encrypted layer stay
//! as float ops: the client runs them after decryption. The graph outputs are float.
//!
//! Precondition: a calibrated float graph with static shapes and batch 1.
//! Postcondition: `eval_int` of the new graph on quantized inputs approximates `eval_f32`.

use crate::{Changed, Pass, PassContext, PassError, Stage};
use fhec_ir::{
    kernels, Binary, ConvAttrs, DType, Graph, IntLinear, NodeIndex, Op, PoolAttrs, QuantParams,
    Tensor, TensorType, Unary,
};
use ndarray::{ArrayD, Dimension, IxDyn};
use std::collections::HashMap;

pub struct Quantize;

impl Pass for Quantize {
    fn name(&self) -> &'static str {
        "quantize"
    }
    fn requires(&self) -> Stage {
        Stage::Calibrated
    }
    fn produces(&self) -> Stage {
        Stage::Quantized
    }
    fn run(&self, g: &mut Graph, cx: &mut PassContext) -> Result<Changed, PassError> {
        let mut b = Builder::new(g, cx);
        for n in g.topo()? {
            b.node(n)?;
        }
        for o in &g.outputs {
            let node = b.float_node(o.node)?;
            b.q.add_output(&o.name, node);
        }
        let Builder {
            q,
            input_quant,
            origin,
            ..
        } = b;
        cx.input_quant = input_quant;
        cx.origin = origin;
        *g = q;
        Ok(Changed::Yes)
    }
}

#[derive(Clone, Debug)]
enum QVal {
    Const(Tensor),
    /// `v[i] = a[i]·q[i] + b[i]`; `requant` when `q` is a plain n-bit activation.
    Enc {
        node: NodeIndex,
        a: Vec<f32>,
        b: Vec<f32>,
        requant: Option<QuantParams>,
    },
    /// A float node of the new graph.
    Float {
        node: NodeIndex,
    },
}

struct Builder<'a> {
    f: &'a Graph,
    cx: &'a PassContext,
    q: Graph,
    vals: HashMap<NodeIndex, QVal>,
    /// Float nodes some encrypted layer depends on: they must run on the server.
    needs_server: HashMap<NodeIndex, bool>,
    input_quant: Vec<QuantParams>,
    origin: HashMap<NodeIndex, String>,
    /// For values requantized from a float chain: that chain's float node, so that another
    /// quantization of the same value reads the chain (one table) instead of the codes.
    float_src: HashMap<NodeIndex, NodeIndex>,
}

fn full(v: &[f32], n: usize) -> Vec<f32> {
    if v.len() == n {
        v.to_vec()
    } else {
        vec![v[0]; n]
    }
}

fn uniform(v: &[f32]) -> Option<f32> {
    let first = *v.first()?;
    v.iter()
        .all(|&x| x.to_bits() == first.to_bits())
        .then_some(first)
}

fn is_linear_with_weights(g: &Graph, n: NodeIndex) -> bool {
    let ins = g.inputs_of(n);
    let is_const = |i: usize| {
        ins.get(i)
            .is_some_and(|&x| matches!(g.g[x].op, Op::Const(_)))
    };
    match g.g[n].op {
        Op::Gemm { .. } | Op::MatMul => is_const(0) != is_const(1),
        Op::Conv(_) => is_const(1),
        Op::AveragePool(_) | Op::GlobalAveragePool | Op::MaxPool(_) => true,
        _ => false,
    }
}

impl<'a> Builder<'a> {
    fn new(f: &'a Graph, cx: &'a PassContext) -> Self {
        // needs_server: reverse topological sweep
        let mut needs_server = HashMap::new();
        if let Ok(order) = f.topo() {
            for &n in order.iter().rev() {
                let down = f
                    .users_of(n)
                    .iter()
                    .any(|u| needs_server.get(u).copied().unwrap_or(false));
                needs_server.insert(n, down || is_linear_with_weights(f, n));
            }
        }
        Self {
            f,
            cx,
            q: Graph::new(),
            vals: HashMap::new(),
            needs_server,
            input_quant: Vec::new(),
            origin: HashMap::new(),
            float_src: HashMap::new(),
        }
    }

    fn name(&self, n: NodeIndex) -> String {
        self.f.g[n].name.clone()
    }

    fn unsupported(&self, n: NodeIndex, reason: impl Into<String>) -> PassError {
        PassError::Unsupported {
            node: self.name(n),
            op: self.f.g[n].op.name(),
            reason: reason.into(),
        }
    }

    fn range(&self, n: NodeIndex) -> Result<(f32, f32), PassError> {
        self.cx
            .float_ranges
            .get(&n)
            .copied()
            .ok_or_else(|| PassError::Calibration {
                reason: format!("no calibrated range for `{}`", self.name(n)),
            })
    }

    fn act_params(&self, n: NodeIndex) -> Result<QuantParams, PassError> {
        let (lo, hi) = self.range(n)?;
        Ok(QuantParams::unsigned(
            lo,
            hi,
            self.cx.config.n_bits_activations,
        ))
    }

    fn add(&mut self, name: &str, op: Op, ins: &[NodeIndex]) -> Result<NodeIndex, PassError> {
        let n = self.q.add_op(name, op, ins)?;
        if self.q.g[n].ty.dtype == DType::I64 {
            self.origin.insert(n, name.to_string());
        }
        Ok(n)
    }

    fn val(&self, n: NodeIndex) -> QVal {
        self.vals
            .get(&n)
            .cloned()
            .expect("invariant: inputs are visited first (topological order)")
    }

    /// The value of float node `n` as a float node of the new graph.
    fn float_node(&mut self, n: NodeIndex) -> Result<NodeIndex, PassError> {
        match self.val(n) {
            QVal::Float { node } => Ok(node),
            QVal::Const(t) => Ok(self.q.add_const(&self.name(n), t)),
            QVal::Enc { node, a, b, .. } => {
                let name = format!("{}:dequant", self.name(n));
                self.add(&name, Op::Dequant { a, b }, &[node])
            }
        }
    }

    /// The value of float node `n` as a requantized n-bit encrypted tensor (cached).
    fn requant(&mut self, n: NodeIndex) -> Result<(NodeIndex, QuantParams), PassError> {
        match self.val(n) {
            QVal::Enc {
                node,
                requant: Some(p),
                ..
            } => Ok((node, p)),
            QVal::Const(_) => {
                Err(self.unsupported(n, "a constant where an encrypted value is expected"))
            }
            _ => {
                let p = self.act_params(n)?;
                if let QVal::Float { node } = self.val(n) {
                    self.float_src.insert(n, node);
                }
                let (node, p) = self.requant_with(n, p)?;
                let s = p.scale;
                self.vals.insert(
                    n,
                    QVal::Enc {
                        node,
                        a: vec![s],
                        b: vec![-s * p.zero_point as f32],
                        requant: Some(p),
                    },
                );
                Ok((node, p))
            }
        }
    }

    /// Requantizes `n` with the given parameters (not cached).
    fn requant_with(
        &mut self,
        n: NodeIndex,
        p: QuantParams,
    ) -> Result<(NodeIndex, QuantParams), PassError> {
        if let QVal::Enc {
            node,
            requant: Some(have),
            ..
        } = self.val(n)
        {
            if have == p {
                return Ok((node, p));
            }
        }
        let fl = match self.float_src.get(&n) {
            Some(&f) => f,
            None => self.float_node(n)?,
        };
        let name = format!("{}:quant", self.name(n));
        let node = self.add(&name, Op::Quant(p), &[fl])?;
        Ok((node, p))
    }

    fn set_enc(
        &mut self,
        n: NodeIndex,
        node: NodeIndex,
        a: Vec<f32>,
        b: Vec<f32>,
        requant: Option<QuantParams>,
    ) {
        self.vals.insert(
            n,
            QVal::Enc {
                node,
                a,
                b,
                requant,
            },
        );
    }

    fn node(&mut self, n: NodeIndex) -> Result<(), PassError> {
        let f = self.f;
        let node = &f.g[n];
        let ins = f.inputs_of(n);
        let vals: Vec<QVal> = ins.iter().map(|&i| self.val(i)).collect();
        let all_const = vals.iter().all(|v| matches!(v, QVal::Const(_)));
        match &node.op {
            Op::Input { index } => {
                let (lo, hi) = self.range(n)?;
                let p = QuantParams::unsigned(lo, hi, self.cx.config.n_bits_inputs);
                if self.input_quant.len() <= *index {
                    self.input_quant.resize(index + 1, p);
                }
                self.input_quant[*index] = p;
                let qn = self.q.add_input(
                    &node.name,
                    TensorType::new(DType::I64, node.ty.shape.clone()),
                    f.inputs[*index].batch_dynamic,
                );
                self.origin.insert(qn, node.name.clone());
                let s = p.scale;
                self.set_enc(n, qn, vec![s], vec![-s * p.zero_point as f32], Some(p));
                return Ok(());
            }
            Op::Const(t) => {
                self.vals.insert(n, QVal::Const(t.clone()));
                return Ok(());
            }
            _ if all_const => {
                let ts: Vec<&Tensor> = vals
                    .iter()
                    .map(|v| match v {
                        QVal::Const(t) => t,
                        _ => unreachable!("invariant: all constant"),
                    })
                    .collect();
                let t = kernels::eval(&node.op, &ts).map_err(|source| fhec_ir::IrError::Node {
                    node: node.name.clone(),
                    op: node.op.name(),
                    source,
                })?;
                self.vals.insert(n, QVal::Const(t));
                return Ok(());
            }
            _ => {}
        }
        let name = node.name.clone();
        let out_shape = node.ty.shape.clone();
        let out_len: usize = out_shape.iter().product();
        match node.op.clone() {
            Op::Gemm {
                alpha,
                beta,
                trans_a,
                trans_b,
            } => {
                let (QVal::Const(bt), false) = (&vals[1], matches!(vals[0], QVal::Const(_))) else {
                    return Err(
                        self.unsupported(n, "Gemm needs clear weights as B and an encrypted A")
                    );
                };
                if trans_a || f.g[ins[0]].ty.shape[0] != 1 {
                    return Err(
                        self.unsupported(n, "Gemm with a transposed or multi-row encrypted A")
                    );
                }
                let w = bt.to_f32();
                let (k, nn) = if trans_b {
                    (w.shape()[1], w.shape()[0])
                } else {
                    (w.shape()[0], w.shape()[1])
                };
                let wk = |i: usize, j: usize| alpha * if trans_b { w[[j, i]] } else { w[[i, j]] };
                let wm: Vec<Vec<f32>> = (0..k)
                    .map(|i| (0..nn).map(|j| wk(i, j)).collect())
                    .collect();
                let bias: Vec<f32> = match vals.get(2) {
                    Some(QVal::Const(c)) => {
                        let c = c.to_f32();
                        let cb = c
                            .broadcast(IxDyn(&[1, nn]))
                            .ok_or_else(|| self.unsupported(n, "Gemm C shape"))?;
                        cb.iter().map(|&v| beta * v).collect()
                    }
                    None => vec![0.0; nn],
                    Some(_) => return Err(self.unsupported(n, "Gemm with an encrypted C")),
                };
                self.dense(n, ins[0], &wm, &bias, &name, out_shape)
            }
            Op::MatMul => {
                let (x, w) = match (&vals[0], &vals[1]) {
                    (QVal::Const(_), QVal::Const(_)) => unreachable!("invariant: folded above"),
                    (_, QVal::Const(w)) => (ins[0], w.to_f32()),
                    _ => {
                        return Err(self.unsupported(
                            n,
                            "MatMul of two encrypted tensors, or with clear weights on the left, is not supported",
                        ))
                    }
                };
                if w.ndim() != 2 {
                    return Err(self.unsupported(n, "MatMul weights must be 2-d"));
                }
                let (k, nn) = (w.shape()[0], w.shape()[1]);
                let wm: Vec<Vec<f32>> = (0..k)
                    .map(|i| (0..nn).map(|j| w[[i, j]]).collect())
                    .collect();
                self.dense(n, x, &wm, &vec![0.0; nn], &name, out_shape)
            }
            Op::Conv(attrs) => {
                let QVal::Const(wt) = &vals[1] else {
                    return Err(self.unsupported(n, "Conv needs clear weights"));
                };
                let bias = match vals.get(2) {
                    Some(QVal::Const(b)) => b.f32_values(),
                    None => vec![0.0; wt.shape()[0]],
                    Some(_) => return Err(self.unsupported(n, "Conv with an encrypted bias")),
                };
                self.conv(n, ins[0], &wt.to_f32(), &bias, attrs, &name, out_shape)
            }
            Op::AveragePool(p) => self.avg_pool(n, ins[0], p, &name, out_shape),
            Op::GlobalAveragePool => {
                let xs = &f.g[ins[0]].ty.shape;
                let d = xs.len() - 2;
                let p = PoolAttrs {
                    kernel: xs[2..].to_vec(),
                    strides: vec![1; d],
                    pads_begin: vec![0; d],
                    pads_end: vec![0; d],
                    dilations: vec![1; d],
                    ceil_mode: false,
                    count_include_pad: false,
                };
                self.avg_pool(n, ins[0], p, &name, out_shape)
            }
            Op::MaxPool(p) => self.max_pool(n, ins[0], p, &name, out_shape),
            Op::BatchNorm { epsilon } if matches!(vals[0], QVal::Enc { .. }) => {
                // per-channel affine: update a, b
                let cs = self.bn_params(n, &vals[1..])?;
                let QVal::Enc { node: qn, a, b, .. } = &vals[0] else {
                    unreachable!("invariant: matched Enc")
                };
                let c = out_shape[1];
                let plane = out_len / (out_shape[0] * c);
                let (mut a2, mut b2) = (full(a, out_len), full(b, out_len));
                for e in 0..out_len {
                    let ch = (e / plane) % c;
                    let k = cs[0][ch] / (cs[3][ch] + epsilon).sqrt();
                    a2[e] *= k;
                    b2[e] = (b2[e] - cs[2][ch]) * k + cs[1][ch];
                }
                self.set_enc(n, *qn, a2, b2, None);
                Ok(())
            }
            Op::BatchNorm { epsilon } => {
                // on a float value: y = x·k + (β − mean·k), as two elementwise constant ops
                let cs = self.bn_params(n, &vals[1..])?;
                let c = out_shape[1];
                let mut cshape = vec![1; out_shape.len()];
                cshape[1] = c;
                let k: Vec<f32> = (0..c)
                    .map(|i| cs[0][i] / (cs[3][i] + epsilon).sqrt())
                    .collect();
                let sh: Vec<f32> = (0..c).map(|i| cs[1][i] - cs[2][i] * k[i]).collect();
                let as_t = |v: Vec<f32>| {
                    Tensor::F32(
                        ArrayD::from_shape_vec(IxDyn(&cshape), v).expect("invariant: C values"),
                    )
                };
                let x = self.float_node(ins[0])?;
                let kn = self.q.add_const(&format!("{name}:scale"), as_t(k));
                let m = self.add(&format!("{name}:mul"), Op::Binary(Binary::Mul), &[x, kn])?;
                let bn = self.q.add_const(&format!("{name}:shift"), as_t(sh));
                let node = self.add(&name, Op::Binary(Binary::Add), &[m, bn])?;
                self.vals.insert(n, QVal::Float { node });
                Ok(())
            }
            Op::Unary(Unary::Neg) if matches!(vals[0], QVal::Enc { .. }) => {
                let QVal::Enc { node: qn, a, b, .. } = &vals[0] else {
                    unreachable!("invariant: matched Enc")
                };
                let (a2, b2) = (
                    a.iter().map(|v| -v).collect(),
                    b.iter().map(|v| -v).collect(),
                );
                self.set_enc(n, *qn, a2, b2, None);
                Ok(())
            }
            Op::Binary(op) => self.binary(n, op, &ins, &vals, &name, &out_shape),
            op if op.is_data_movement()
                && (vals.iter().any(|v| !matches!(v, QVal::Float { .. }))
                    || self.needs_server[&n]) =>
            {
                self.data_movement(n, &ins, &vals, &name)
            }
            op => {
                // Float ops on float values: univariate chains the next table absorbs, or the
                // client-side tail (Softmax, …) when no encrypted layer depends on them.
                let univariate = matches!(op, Op::Unary(_) | Op::BatchNorm { .. });
                if !univariate && self.needs_server[&n] {
                    return Err(self.unsupported(
                        n,
                        "cannot run on encrypted data, and an encrypted layer depends on its result",
                    ));
                }
                let mut fins = Vec::with_capacity(ins.len());
                for &i in &ins {
                    fins.push(self.float_node(i)?);
                }
                let node = self.add(&name, op, &fins)?;
                self.vals.insert(n, QVal::Float { node });
                Ok(())
            }
        }
    }

    /// BatchNormalization's scale, bias, mean and variance, which must be clear.
    fn bn_params(&self, n: NodeIndex, vals: &[QVal]) -> Result<Vec<Vec<f32>>, PassError> {
        vals.iter()
            .map(|v| match v {
                QVal::Const(t) => Ok(t.f32_values()),
                _ => Err(self.unsupported(n, "BatchNormalization with encrypted parameters")),
            })
            .collect()
    }

    /// Symmetric weight quantization of `rows[j]` (one row per output), per channel or per
    /// tensor: integer weights and one scale per output.
    fn quant_weights(&self, rows: &[Vec<f32>]) -> (Vec<Vec<i64>>, Vec<f32>) {
        let nb = self.cx.config.n_bits_weights;
        let absmax = |r: &Vec<f32>| r.iter().fold(0f32, |m, &v| m.max(v.abs()));
        let global = rows.iter().map(absmax).fold(0f32, f32::max);
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
    fn dense(
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
        let (xq, ax, bx) = self.linear_input(x)?;
        let (k, nn) = (w.len(), bias.len());
        let in_len = ax.len();
        let rows_per = in_len / k;
        if rows_per != 1 {
            // several rows (a batched MatMul): one affine map per input column is required
            for r in 1..rows_per {
                if ax[r * k..(r + 1) * k] != ax[..k] || bx[r * k..(r + 1) * k] != bx[..k] {
                    return Err(self.unsupported(n, "rows of the input quantized differently"));
                }
            }
        }
        let rows: Vec<Vec<f32>> = (0..nn)
            .map(|j| (0..k).map(|i| w[i][j] * ax[i]).collect())
            .collect();
        let (qw, scales) = self.quant_weights(&rows);
        let wq = ArrayD::from_shape_fn(IxDyn(&[k, nn]), |ix| qw[ix[1]][ix[0]]);
        let node = self.add(name, Op::IntLinear(IntLinear::Dense { w: wq }), &[xq])?;
        let len: usize = out_shape.iter().product();
        let a: Vec<f32> = (0..len).map(|e| scales[e % nn]).collect();
        let consts: Vec<f32> = (0..nn)
            .map(|j| (0..k).map(|i| w[i][j] * bx[i]).sum::<f32>() + bias[j])
            .collect();
        let b: Vec<f32> = (0..len).map(|e| consts[e % nn]).collect();
        self.set_enc(n, node, a, b, None);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn conv(
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
        let (xq, s, b0, zero_code) = self.uniform_input(x)?;
        let m = w.shape()[0];
        let per = w.len() / m;
        let flat: Vec<f32> = w.iter().copied().collect();
        let rows: Vec<Vec<f32>> = (0..m)
            .map(|j| flat[j * per..(j + 1) * per].iter().map(|v| v * s).collect())
            .collect();
        let (qw, scales) = self.quant_weights(&rows);
        let wq =
            ArrayD::from_shape_vec(IxDyn(w.shape()), qw.concat()).expect("invariant: same size");
        let node = self.add(
            name,
            Op::IntLinear(IntLinear::Conv {
                attrs,
                w: wq,
                pad_value: zero_code,
            }),
            &[xq],
        )?;
        let len: usize = out_shape.iter().product();
        let plane = len / (out_shape[0] * m);
        let consts: Vec<f32> = (0..m)
            .map(|j| flat[j * per..(j + 1) * per].iter().sum::<f32>() * b0 + bias[j])
            .collect();
        let a: Vec<f32> = (0..len).map(|e| scales[(e / plane) % m]).collect();
        let b: Vec<f32> = (0..len).map(|e| consts[(e / plane) % m]).collect();
        self.set_enc(n, node, a, b, None);
        Ok(())
    }

    /// Input of a dense layer: the integer node and its per-element `a`, `b` (full length).
    fn linear_input(&mut self, x: NodeIndex) -> Result<(NodeIndex, Vec<f32>, Vec<f32>), PassError> {
        if matches!(self.val(x), QVal::Float { .. }) {
            self.requant(x)?;
        }
        let len = self.f.g[x].ty.len();
        match self.val(x) {
            QVal::Enc { node, a, b, .. } => Ok((node, full(&a, len), full(&b, len))),
            _ => Err(self.unsupported(x, "a constant where an encrypted value is expected")),
        }
    }

    /// Input of a convolution or pool: one scale `s` for all elements and an integer code for
    /// 0.0, so that padding can read it. Otherwise the value is requantized.
    fn uniform_input(&mut self, x: NodeIndex) -> Result<(NodeIndex, f32, f32, i64), PassError> {
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
    fn pool_as_conv(&self, x: NodeIndex, p: &PoolAttrs, out_shape: &[usize]) -> ConvAttrs {
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

    fn avg_pool(
        &mut self,
        n: NodeIndex,
        x: NodeIndex,
        p: PoolAttrs,
        name: &str,
        out_shape: Vec<usize>,
    ) -> Result<(), PassError> {
        let (xq, s, b0, zero_code) = self.uniform_input(x)?;
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

    /// MaxPool: each window position read by a one-hot depthwise convolution (padding reads
    /// the smallest code, which never wins), then a tree of encrypted maxima.
    fn max_pool(
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
                    [a, b] => self.int_max(&format!("{name}:max{level}.{i}"), *a, *b, &qp)?,
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

    /// `max(x, y) = y + relu(x − y)` on two codes of the same quantization `qp`: one table.
    fn int_max(
        &mut self,
        name: &str,
        x: NodeIndex,
        y: NodeIndex,
        qp: &QuantParams,
    ) -> Result<NodeIndex, PassError> {
        let r = self.relu_diff(name, x, y, qp)?;
        self.add(name, Op::Binary(Binary::Add), &[y, r])
    }

    /// `min(x, y) = x − relu(x − y)`.
    fn int_min(
        &mut self,
        name: &str,
        x: NodeIndex,
        y: NodeIndex,
        qp: &QuantParams,
    ) -> Result<NodeIndex, PassError> {
        let r = self.relu_diff(name, x, y, qp)?;
        self.add(name, Op::Binary(Binary::Sub), &[x, r])
    }

    /// `relu(x − y)` of two codes of `qp`, exact (a table on the difference).
    fn relu_diff(
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

    fn binary(
        &mut self,
        n: NodeIndex,
        op: Binary,
        ins: &[NodeIndex],
        vals: &[QVal],
        name: &str,
        out_shape: &[usize],
    ) -> Result<(), PassError> {
        let out_len: usize = out_shape.iter().product();
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

    /// Both operands encrypted.
    fn encrypted_binary(
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
        // a common quantization for both operands
        let (r0, r1) = (self.range(ins[0])?, self.range(ins[1])?);
        let nb = self.cx.config.n_bits_activations;
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
                // max(x, y) = y + relu(x − y); min(x, y) = x − relu(x − y)
                let node = if op == Binary::Max {
                    self.int_max(name, x, y, &common)?
                } else {
                    self.int_min(name, x, y, &common)?
                };
                self.set_enc(n, node, vec![s], vec![-s * z], Some(common));
            }
            Binary::Mul => {
                // x·y = ((x+y)² − (x−y)²)/4, both squares requantized on one scale
                let bound = (r0.0.abs().max(r0.1.abs()) + r1.0.abs().max(r1.1.abs())).powi(2);
                let sq = QuantParams::unsigned(0.0, bound, nb);
                let sum = self.add(&format!("{name}:sum"), Op::Binary(Binary::Add), &[x, y])?;
                let dif = self.add(&format!("{name}:diff"), Op::Binary(Binary::Sub), &[x, y])?;
                let mut squares = Vec::with_capacity(2);
                for (tag, node, b) in [("sum", sum, -2.0 * s * z), ("diff", dif, 0.0)] {
                    let dq = self.add(
                        &format!("{name}:{tag}:dequant"),
                        Op::Dequant {
                            a: vec![s],
                            b: vec![b],
                        },
                        &[node],
                    )?;
                    let two = self
                        .q
                        .add_const(&format!("{name}:two"), Tensor::scalar_f32(2.0));
                    let p2 = self.add(
                        &format!("{name}:{tag}:square"),
                        Op::Binary(Binary::Pow),
                        &[dq, two],
                    )?;
                    squares.push(self.add(&format!("{name}:{tag}:quant"), Op::Quant(sq), &[p2])?);
                }
                let node = self.add(name, Op::Binary(Binary::Sub), &[squares[0], squares[1]])?;
                self.set_enc(n, node, vec![sq.scale / 4.0], vec![0.0], None);
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

    /// Reshape-like ops on encrypted values: the same op on the integers and on their
    /// per-element affine coefficients.
    fn data_movement(
        &mut self,
        n: NodeIndex,
        ins: &[NodeIndex],
        vals: &[QVal],
        name: &str,
    ) -> Result<(), PassError> {
        let op = self.f.g[n].op.clone();
        let mut qins = Vec::with_capacity(ins.len());
        let mut avs = Vec::with_capacity(ins.len());
        let mut bvs = Vec::with_capacity(ins.len());
        let mut reqs = Vec::with_capacity(ins.len());
        for (&i, v) in ins.iter().zip(vals) {
            if matches!(v, QVal::Const(_)) {
                return Err(self.unsupported(
                    n,
                    "mixing clear constants into encrypted tensors is not supported",
                ));
            }
            if matches!(v, QVal::Float { .. }) {
                self.requant(i)?;
            }
            let QVal::Enc {
                node,
                a,
                b,
                requant,
            } = self.val(i)
            else {
                unreachable!("invariant: requantized")
            };
            let shape = self.f.g[i].ty.shape.clone();
            let len: usize = shape.iter().product();
            let arr = |v: &[f32]| {
                Tensor::F32(
                    ArrayD::from_shape_vec(IxDyn(&shape), full(v, len)).expect("invariant: len"),
                )
            };
            qins.push(node);
            avs.push(arr(&a));
            bvs.push(arr(&b));
            reqs.push(requant);
        }
        let mut op_q = op.clone();
        let mut op_a = op.clone();
        if let Op::Pad { value, .. } = &op {
            let zero_code = match reqs[0] {
                Some(p) => p.zero_point,
                None => {
                    let (a, b) = (avs[0].f32_values(), bvs[0].f32_values());
                    match (uniform(&a), uniform(&b)) {
                        (Some(a), Some(b)) if a != 0.0 && (-b / a).fract() == 0.0 => {
                            (-b / a) as i64
                        }
                        _ => {
                            return Err(self.unsupported(
                                n,
                                "padding an encrypted tensor without a uniform zero point",
                            ))
                        }
                    }
                }
            };
            if *value != 0.0 {
                return Err(
                    self.unsupported(n, "padding an encrypted tensor with a non-zero constant")
                );
            }
            if let Op::Pad { value, .. } = &mut op_q {
                *value = zero_code as f32;
            }
            if let Op::Pad {
                value,
                mode: fhec_ir::PadMode::Constant,
                ..
            } = &mut op_a
            {
                // padded positions keep the neighbour's coefficients (uniform here)
                *value = uniform(&avs[0].f32_values()).unwrap_or(0.0);
            }
        }
        let node = self.add(name, op_q, &qins)?;
        let eval = |op: &Op, ts: &[Tensor]| -> Result<Vec<f32>, PassError> {
            let refs: Vec<&Tensor> = ts.iter().collect();
            Ok(kernels::eval(op, &refs)
                .map_err(|e| self.unsupported(n, e.to_string()))?
                .f32_values())
        };
        let a = eval(&op_a, &avs)?;
        let mut op_b = op_a.clone();
        if let Op::Pad { value, .. } = &mut op_b {
            *value = uniform(&bvs[0].f32_values()).unwrap_or(0.0);
        }
        let b = eval(&op_b, &bvs)?;
        let requant = match reqs.first() {
            Some(Some(p)) if reqs.iter().all(|r| r.as_ref() == Some(p)) => Some(*p),
            _ => None,
        };
        let (a, b) = match (requant, uniform(&a), uniform(&b)) {
            (_, Some(ua), Some(ub)) => (vec![ua], vec![ub]),
            _ => (a, b),
        };
        self.set_enc(n, node, a, b, requant);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_detects_equal_values() {
        assert_eq!(uniform(&[1.5, 1.5]), Some(1.5));
        assert_eq!(uniform(&[1.5, 2.0]), None);
        assert_eq!(full(&[3.0], 2), vec![3.0, 3.0]);
    }
}
