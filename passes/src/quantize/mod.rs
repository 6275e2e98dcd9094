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
//! This file holds the builder and the per-node dispatch; the lowerings live by seam in
//! `linear` (weights, dense, conv, average pooling), `encrypted` (encrypted × encrypted ops,
//! MaxPool) and `movement` (reshape-like ops).
//!
//! Precondition: a calibrated float graph with static shapes and batch 1.
//! Postcondition: `eval_int` of the new graph on quantized inputs approximates `eval_f32`.

mod encrypted;
mod linear;
mod movement;
mod reduce;

use crate::{Analysis, Changed, Pass, PassContext, PassError, Stage};
use fhec_ir::{
    kernels, Binary, DType, Graph, NodeIndex, Op, PoolAttrs, QuantParams, Tensor, TensorType, Unary,
};
use ndarray::{ArrayD, IxDyn};
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
    fn needs(&self) -> &'static [Analysis] {
        &[Analysis::FloatRanges]
    }
    fn invalidates(&self) -> &'static [Analysis] {
        &[Analysis::Intervals]
    }
    fn run(&self, g: &mut Graph, cx: &mut PassContext) -> Result<Changed, PassError> {
        check_layers(g, &cx.config)?;
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
            weight_bits,
            ..
        } = b;
        cx.quant.input_quant = input_quant;
        cx.quant.origin = origin;
        cx.quant.weight_bits = weight_bits;
        *g = q;
        Ok(Changed::Yes)
    }
}

/// The layers a per-layer precision may name: linear ops with clear weights.
pub fn layer_names(g: &Graph) -> Vec<String> {
    let mut names: Vec<String> =
        g.g.node_weights()
            .filter(|n| {
                matches!(
                    n.op,
                    Op::Gemm { .. }
                        | Op::MatMul
                        | Op::Conv(_)
                        | Op::AveragePool(_)
                        | Op::GlobalAveragePool
                )
            })
            .map(|n| n.name.clone())
            .collect();
    names.sort();
    names
}

/// Every per-layer override names a layer of the graph and has bits in range, and so do the
/// decrypted layers' weight bits (the CLI range-checks them; a library caller may not).
fn check_layers(g: &Graph, cfg: &crate::QuantConfig) -> Result<(), PassError> {
    if let Some(b) = cfg.n_bits_decrypted.filter(|b| !(2..=16).contains(b)) {
        return Err(PassError::Config {
            reason: format!("n_bits_decrypted {b} is outside [2, 16]"),
        });
    }
    if cfg.layers.is_empty() {
        return Ok(());
    }
    let known = layer_names(g);
    for (name, p) in &cfg.layers {
        if !known.contains(name) {
            return Err(PassError::Config {
                reason: format!(
                    "no layer `{name}` in the model; layers: {}",
                    known.join(", ")
                ),
            });
        }
        p.check().map_err(|e| PassError::Config {
            reason: format!("layer `{name}`: {e}"),
        })?;
    }
    Ok(())
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
    /// See [`PassContext::weight_bits`].
    weight_bits: HashMap<String, u32>,
    /// For values requantized from a float chain: that chain's float node, so that another
    /// quantization of the same value reads the chain (one table) instead of the codes.
    float_src: HashMap<NodeIndex, NodeIndex>,
    /// The model quantizes itself (it holds `FakeQuant` grids): weights already on a
    /// symmetric integer grid keep it.
    self_quantized: bool,
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
        // with clear weights, or a product of two computed tensors (squares identity)
        Op::Gemm { .. } | Op::MatMul => !(is_const(0) && is_const(1)),
        Op::Conv(_) => is_const(1),
        Op::AveragePool(_) | Op::GlobalAveragePool | Op::MaxPool(_) => true,
        // the quantize pass runs these on encrypted operands whatever follows them
        Op::Binary(Binary::Add | Binary::Sub | Binary::Mul | Binary::Max | Binary::Min) => {
            !is_const(0) && !is_const(1)
        }
        _ => false,
    }
}

/// For every node: whether an encrypted layer (a linear op with clear weights, a pooling, an
/// arithmetic op of two encrypted tensors) is it or depends on it, so that it must run on
/// the server (a reverse topological sweep).
pub(crate) fn needs_server(f: &Graph) -> HashMap<NodeIndex, bool> {
    let mut needs = HashMap::new();
    if let Ok(order) = f.topo() {
        for &n in order.iter().rev() {
            let down = f
                .users_of(n)
                .iter()
                .any(|u| needs.get(u).copied().unwrap_or(false));
            needs.insert(n, down || is_linear_with_weights(f, n));
        }
    }
    needs
}

impl<'a> Builder<'a> {
    fn new(f: &'a Graph, cx: &'a PassContext) -> Self {
        let needs_server = needs_server(f);
        Self {
            f,
            cx,
            q: Graph::new(),
            vals: HashMap::new(),
            needs_server,
            input_quant: Vec::new(),
            origin: HashMap::new(),
            weight_bits: HashMap::new(),
            float_src: HashMap::new(),
            self_quantized: f.carries_grids(),
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
                reason: format!(
                    "`{}` has no quantization grid of its own and no calibrated range (without calibration data only a model that quantizes itself compiles); pass --calib X.npy with a few representative inputs",
                    self.name(n)
                ),
            })
    }

    fn act_params(&self, n: NodeIndex) -> Result<QuantParams, PassError> {
        self.act_params_at(n, self.cx.config.n_bits_activations)
    }

    fn act_params_at(&self, n: NodeIndex, bits: u32) -> Result<QuantParams, PassError> {
        // a value the model quantizes itself is compiled on its own grid
        if let Some(p) = self.grid_of(n) {
            return Ok(p);
        }
        let (lo, hi) = self.range(n)?;
        Ok(QuantParams::unsigned(lo, hi, bits))
    }

    /// The grid of a `FakeQuant` node (a QDQ pair, a QONNX Quant), if `n` is one.
    fn grid_of(&self, n: NodeIndex) -> Option<QuantParams> {
        match self.f.g[n].op {
            Op::Unary(Unary::FakeQuant {
                scale,
                zero_point,
                qmin,
                qmax,
            }) => {
                let p = QuantParams {
                    scale,
                    zero_point: zero_point as i64,
                    qmin: qmin as i64,
                    qmax: qmax as i64,
                };
                p.is_valid().then_some(p)
            }
            _ => None,
        }
    }

    /// The grid every reader of graph input `n` quantizes it to, if they agree: the client
    /// then quantizes on that grid and the readers are the identity on its codes.
    fn input_grid(&self, n: NodeIndex) -> Option<QuantParams> {
        let users = self.f.users_of(n);
        let first = self.grid_of(*users.first()?)?;
        users
            .iter()
            .all(|&u| self.grid_of(u) == Some(first))
            .then_some(first)
    }

    /// A layer's activation input at the layer's own bits, when they differ from the global
    /// activation bits (`None`: the shared requantization applies). Graph inputs keep the
    /// client's grid and accumulators their affine meaning. Not cached: another layer may
    /// read the same value at other bits.
    fn requant_for_layer(
        &mut self,
        n: NodeIndex,
        bits: u32,
    ) -> Result<Option<(NodeIndex, QuantParams)>, PassError> {
        if bits == self.cx.config.n_bits_activations || matches!(self.f.g[n].op, Op::Input { .. }) {
            return Ok(None);
        }
        match self.val(n) {
            QVal::Const(_) => {
                Err(self.unsupported(n, "a constant where an encrypted value is expected"))
            }
            QVal::Enc { requant: None, .. } => Ok(None),
            v => {
                let p = self.act_params_at(n, bits)?;
                if let QVal::Float { node } = v {
                    self.float_src.insert(n, node);
                }
                self.requant_with(n, p).map(Some)
            }
        }
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
        // a tensor that only moves or copies another one's elements (an Expand before an
        // encrypted product): requantize the source, then move its codes — one table per
        // source element instead of one per copy
        let op = self.f.g[n].op.clone();
        let ins = self.f.inputs_of(n);
        if op.is_data_movement()
            && !matches!(op, Op::Pad { .. } | Op::Concat { .. })
            && ins.len() == 1
            && !self.float_src.contains_key(&n)
            && !matches!(self.val(ins[0]), QVal::Const(_))
        {
            let (src, _) = self.requant_with(ins[0], p)?;
            let node = self.add(&format!("{}:quant", self.name(n)), op, &[src])?;
            return Ok((node, p));
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
                let p = match self.input_grid(n) {
                    Some(p) => p,
                    None => {
                        let (lo, hi) = self.range(n)?;
                        QuantParams::unsigned(lo, hi, self.cx.config.n_bits_inputs)
                    }
                };
                if self.input_quant.len() <= *index {
                    self.input_quant.resize(index + 1, p);
                }
                self.input_quant[*index] = p;
                let qn = self.q.add_input(
                    &node.name,
                    TensorType::new(DType::I64, node.ty.shape.clone()),
                    f.inputs[*index].batched,
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
            // a grid the value is already on: its codes pass through unchanged
            Op::Unary(Unary::FakeQuant { .. }) if matches!(&vals[0], QVal::Enc { requant: Some(p), .. } if Some(*p) == self.grid_of(n)) =>
            {
                self.vals.insert(n, vals[0].clone());
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
            Op::Reduce { kind, axes, .. }
                if !matches!(vals[0], QVal::Float { .. }) || self.needs_server[&n] =>
            {
                self.encrypted_reduce(n, ins[0], kind, &axes, &name, &out_shape)
            }
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
