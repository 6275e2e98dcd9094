//! canonicalize: float → float.
//!
//! - folds an inference BatchNormalization into the Conv or Gemm that feeds it alone
//!   (`w' = w·k`, `b' = (b − mean)·k + β`, `k = γ/√(var + ε)`);
//! - folds a residual `x + Conv(x)` (stride 1, "same" padding of an odd kernel, as many
//!   output as input channels, one group) into the Conv, whose kernel gains 1 at the centre
//!   tap of each channel's own input: the skip branch then costs no requantization table
//!   (a table per element on digits_resnet);
//! - evaluates every node whose inputs are all constant;
//! - drops Identity;
//! - writes the ops the quantize pass has no encrypted rule for as ops it has (same function
//!   up to f32 rounding): a MatMul of two computed tensors as a broadcast product summed over
//!   K (each product then costs two squares); a Softmax whose result an encrypted layer reads
//!   as `exp(x − max x) · 1/Σ exp(x − max x)` (ReduceMax, Exp, ReduceSum, Reciprocal, Mul);
//!   and a binary op of two computed tensors of different shapes with explicit Expands.
//!
//! Precondition: a verified float graph. Postcondition: the same function (up to f32
//! rounding of the folded weights), no Identity, no all-constant node.

use crate::{Analysis, Changed, Pass, PassContext, PassError, Stage};
use fhec_ir::{kernels, Binary, Graph, NodeIndex, Op, ReduceKind, Tensor, Unary};
use ndarray::{ArrayD, Axis, IxDyn};

pub struct Canonicalize;

impl Pass for Canonicalize {
    fn name(&self) -> &'static str {
        "canonicalize"
    }
    fn requires(&self) -> Stage {
        Stage::Float
    }
    fn produces(&self) -> Stage {
        Stage::Float
    }
    fn invalidates(&self) -> &'static [Analysis] {
        &[Analysis::FloatRanges]
    }
    fn run(&self, g: &mut Graph, _cx: &mut PassContext) -> Result<Changed, PassError> {
        let mut changed = false;
        changed |= drop_identity(g)?;
        changed |= fold_constants(g)?;
        changed |= fold_batch_norm(g)?;
        changed |= fold_residual(g)?;
        changed |= matmul_of_computed(g)?;
        changed |= server_softmax(g)?;
        changed |= explicit_broadcast(g)?;
        changed |= g.remove_dead() > 0;
        Ok(if changed { Changed::Yes } else { Changed::No })
    }
}

fn drop_identity(g: &mut Graph) -> Result<bool, PassError> {
    let ids: Vec<NodeIndex> = g
        .topo()?
        .into_iter()
        .filter(|&n| matches!(g.g[n].op, Op::Identity))
        .collect();
    for &n in &ids {
        let src = g.inputs_of(n)[0];
        g.replace_uses(n, src);
        g.g.remove_node(n);
    }
    Ok(!ids.is_empty())
}

fn const_of(g: &Graph, n: NodeIndex) -> Option<&Tensor> {
    match &g.g[n].op {
        Op::Const(t) => Some(t),
        _ => None,
    }
}

fn fold_constants(g: &mut Graph) -> Result<bool, PassError> {
    let mut changed = false;
    for n in g.topo()? {
        if matches!(g.g[n].op, Op::Input { .. } | Op::Const(_)) {
            continue;
        }
        let ins = g.inputs_of(n);
        let consts: Option<Vec<&Tensor>> = ins.iter().map(|&i| const_of(g, i)).collect();
        let Some(consts) = consts else { continue };
        let node = &g.g[n];
        let t = kernels::eval(&node.op, &consts).map_err(|source| fhec_ir::IrError::Node {
            node: node.name.clone(),
            op: node.op.name(),
            source,
        })?;
        let name = node.name.clone();
        let c = g.add_const(&name, t);
        g.replace_uses(n, c);
        changed = true;
    }
    Ok(changed)
}

fn fold_batch_norm(g: &mut Graph) -> Result<bool, PassError> {
    let mut changed = false;
    for bn in g.topo()? {
        let Op::BatchNorm { epsilon } = g.g[bn].op else {
            continue;
        };
        let ins = g.inputs_of(bn);
        let params: Option<Vec<ArrayD<f32>>> = ins[1..]
            .iter()
            .map(|&i| const_of(g, i).and_then(|t| t.as_f32().cloned()))
            .collect();
        let Some(p) = params else { continue };
        let prod = ins[0];
        if g.users_of(prod).len() != 1 || g.outputs.iter().any(|o| o.node == prod) {
            continue;
        }
        let k: Vec<f32> = (0..p[0].len())
            .map(|c| p[0][[c]] / (p[3][[c]] + epsilon).sqrt())
            .collect();
        let shift: Vec<f32> = (0..p[0].len())
            .map(|c| p[1][[c]] - p[2][[c]] * k[c])
            .collect();
        let pin = g.inputs_of(prod);
        let (w_axis, bias_len) = match &g.g[prod].op {
            Op::Conv(_) => (0usize, g.g[prod].ty.shape[1]),
            Op::Gemm {
                alpha,
                beta,
                trans_a: false,
                trans_b,
            } if *alpha == 1.0 && *beta == 1.0 => {
                (if *trans_b { 0 } else { 1 }, g.g[prod].ty.shape[1])
            }
            _ => continue,
        };
        let Some(w) = const_of(g, pin[1]).and_then(|t| t.as_f32().cloned()) else {
            continue;
        };
        let bias: ArrayD<f32> = match pin.get(2) {
            Some(&b) => match const_of(g, b).and_then(|t| t.as_f32()) {
                Some(b) => match b.broadcast(IxDyn(&[bias_len])) {
                    Some(v) => v.to_owned(),
                    None => continue,
                },
                None => continue,
            },
            None => ArrayD::zeros(IxDyn(&[bias_len])),
        };
        if k.len() != bias_len {
            continue;
        }
        let mut w2 = w.clone();
        for (c, mut lane) in w2.axis_iter_mut(Axis(w_axis)).enumerate() {
            lane.mapv_inplace(|v| v * k[c]);
        }
        let b2 =
            ArrayD::from_shape_fn(IxDyn(&[bias_len]), |i| bias[[i[0]]] * k[i[0]] + shift[i[0]]);
        let name = g.g[prod].name.clone();
        let op = g.g[prod].op.clone();
        let x = pin[0];
        let wn = g.add_const(&format!("{name}.weight+bn"), Tensor::F32(w2));
        let bnode = g.add_const(&format!("{name}.bias+bn"), Tensor::F32(b2));
        let fused = g.add_op(&name, op, &[x, wn, bnode])?;
        g.replace_uses(bn, fused);
        changed = true;
    }
    Ok(changed)
}

/// `x + Conv(x, W, b)` → `Conv(x, W + I, b)` where the Conv preserves the shape and the
/// identity is its centre tap (see the module docs).
fn fold_residual(g: &mut Graph) -> Result<bool, PassError> {
    let mut changed = false;
    for add in g.topo()? {
        if g.g[add].op != Op::Binary(Binary::Add) {
            continue;
        }
        let ins = g.inputs_of(add);
        if ins.len() != 2 || ins[0] == ins[1] {
            continue;
        }
        let found = [(ins[0], ins[1]), (ins[1], ins[0])]
            .into_iter()
            .find(|&(conv, x)| {
                let Op::Conv(a) = &g.g[conv].op else {
                    return false;
                };
                let cin = g.inputs_of(conv);
                cin.first() == Some(&x)
                    && g.users_of(conv).len() == 1
                    && !g.outputs.iter().any(|o| o.node == conv)
                    && a.group == 1
                    && a.strides.iter().all(|&s| s == 1)
                    && a.dilations.iter().all(|&d| d == 1)
                    && a.kernel.iter().all(|&k| k % 2 == 1)
                    && a.kernel
                        .iter()
                        .zip(a.pads_begin.iter().zip(&a.pads_end))
                        .all(|(&k, (&p0, &p1))| p0 == (k - 1) / 2 && p1 == p0)
                    && g.g[conv].ty == g.g[x].ty
                    && cin.get(1).and_then(|&w| const_of(g, w)).is_some()
            });
        let Some((conv, x)) = found else { continue };
        let Op::Conv(a) = g.g[conv].op.clone() else {
            continue;
        };
        let cin = g.inputs_of(conv);
        let Some(w) = const_of(g, cin[1]).and_then(|t| t.as_f32().cloned()) else {
            continue;
        };
        let shape = w.shape().to_vec();
        if shape.len() != 2 + a.kernel.len() || shape[0] != shape[1] {
            continue;
        }
        let mut w2 = w;
        for c in 0..shape[0] {
            let mut ix = vec![c, c];
            ix.extend(a.kernel.iter().map(|&k| (k - 1) / 2));
            w2[IxDyn(&ix)] += 1.0;
        }
        let name = g.g[conv].name.clone();
        let wn = g.add_const(&format!("{name}.weight+skip"), Tensor::F32(w2));
        let mut inputs = vec![x, wn];
        inputs.extend(cin.get(2).copied());
        let fused = g.add_op(&name, Op::Conv(a), &inputs)?;
        g.replace_uses(add, fused);
        changed = true;
    }
    Ok(changed)
}

fn computed(g: &Graph, n: NodeIndex) -> bool {
    !matches!(g.g[n].op, Op::Const(_))
}

/// `MatMul(A, B)` of two computed tensors `[…, M, K]`, `[…, K, N]` (same batch axes) as
/// `ReduceSum_K(A[…, M, K, 1] · B[…, 1, K, N])`.
fn matmul_of_computed(g: &mut Graph) -> Result<bool, PassError> {
    let mut changed = false;
    for n in g.topo()? {
        if !matches!(g.g[n].op, Op::MatMul) {
            continue;
        }
        let ins = g.inputs_of(n);
        if !(computed(g, ins[0]) && computed(g, ins[1])) {
            continue;
        }
        let (sa, sb) = (g.g[ins[0]].ty.shape.clone(), g.g[ins[1]].ty.shape.clone());
        let r = sa.len();
        if r < 2 || sb.len() != r || sa[..r - 2] != sb[..r - 2] || sa[r - 1] != sb[r - 2] {
            continue; // left for the quantize pass to refuse by name
        }
        let (m, k, nn) = (sa[r - 2], sa[r - 1], sb[r - 1]);
        let batch = &sa[..r - 2];
        let with = |tail: &[usize]| [batch, tail].concat();
        let name = g.g[n].name.clone();
        let a = g.add_op(
            &format!("{name}:a"),
            Op::Reshape {
                shape: with(&[m, k, 1]),
            },
            &[ins[0]],
        )?;
        let b = g.add_op(
            &format!("{name}:b"),
            Op::Reshape {
                shape: with(&[1, k, nn]),
            },
            &[ins[1]],
        )?;
        // broadcast to [..., M, K, N] (`explicit_broadcast` expands both operands)
        let p = g.add_op(
            &format!("{name}:products"),
            Op::Binary(Binary::Mul),
            &[a, b],
        )?;
        let s = g.add_op(
            &name,
            Op::Reduce {
                kind: ReduceKind::Sum,
                axes: vec![r - 1],
                keepdims: false,
            },
            &[p],
        )?;
        g.replace_uses(n, s);
        changed = true;
    }
    Ok(changed)
}

/// A Softmax (per axis) whose result an encrypted layer reads, as
/// `e = exp(x − max x)`, `e · 1/Σ e`; one the client computes after decryption is left whole.
fn server_softmax(g: &mut Graph) -> Result<bool, PassError> {
    let needs = crate::quantize::needs_server(g);
    let mut changed = false;
    for n in g.topo()? {
        let Op::Softmax { axis, flatten } = g.g[n].op else {
            continue;
        };
        let shape = g.g[n].ty.shape.clone();
        let server = g.users_of(n).iter().any(|u| needs.get(u) == Some(&true));
        if !server || (flatten && axis + 1 != shape.len()) {
            continue;
        }
        let x = g.inputs_of(n)[0];
        let name = g.g[n].name.clone();
        let reduce = |kind| Op::Reduce {
            kind,
            axes: vec![axis],
            keepdims: true,
        };
        // the per-row max and 1/Σ broadcast along `axis` (`explicit_broadcast` expands them)
        let m = g.add_op(&format!("{name}:max"), reduce(ReduceKind::Max), &[x])?;
        let d = g.add_op(&format!("{name}:shifted"), Op::Binary(Binary::Sub), &[x, m])?;
        let e = g.add_op(&format!("{name}:exp"), Op::Unary(Unary::Exp), &[d])?;
        let s = g.add_op(&format!("{name}:sum"), reduce(ReduceKind::Sum), &[e])?;
        let r = g.add_op(
            &format!("{name}:reciprocal"),
            Op::Unary(Unary::Reciprocal),
            &[s],
        )?;
        let y = g.add_op(&name, Op::Binary(Binary::Mul), &[e, r])?;
        g.replace_uses(n, y);
        changed = true;
    }
    Ok(changed)
}

/// A binary op of two computed tensors that broadcasts: the operands expanded to the output's
/// shape (the quantize pass combines encrypted tensors element by element).
fn explicit_broadcast(g: &mut Graph) -> Result<bool, PassError> {
    let mut changed = false;
    for n in g.topo()? {
        if !matches!(g.g[n].op, Op::Binary(_)) {
            continue;
        }
        let ins = g.inputs_of(n);
        if !(computed(g, ins[0]) && computed(g, ins[1])) {
            continue;
        }
        let out = g.g[n].ty.shape.clone();
        for (port, &i) in ins.iter().enumerate() {
            if g.g[i].ty.shape == out {
                continue;
            }
            let name = format!("{}:expand{port}", g.g[n].name);
            let e = g.add_op(&name, Op::Expand { shape: out.clone() }, &[i])?;
            // the edge into `port` (a node read on both ports has the output's shape)
            let edge = g.g.find_edge(i, n).filter(|&e| g.g[e] == port);
            if let Some(edge) = edge {
                g.g.remove_edge(edge);
                g.g.add_edge(e, n, port);
                changed = true;
            }
        }
    }
    Ok(changed)
}
