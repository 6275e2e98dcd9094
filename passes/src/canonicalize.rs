//! canonicalize: float → float.
//!
//! - folds an inference BatchNormalization into the Conv or Gemm that feeds it alone
//!   (`w' = w·k`, `b' = (b − mean)·k + β`, `k = γ/√(var + ε)`);
//! - evaluates every node whose inputs are all constant;
//! - drops Identity.
//!
//! Precondition: a verified float graph. Postcondition: the same function (up to f32
//! rounding of the folded weights), no Identity, no all-constant node.

use crate::{Changed, Pass, PassContext, PassError, Stage};
use fhec_ir::{kernels, Graph, NodeIndex, Op, Tensor};
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
    fn run(&self, g: &mut Graph, _cx: &mut PassContext) -> Result<Changed, PassError> {
        let mut changed = false;
        changed |= drop_identity(g)?;
        changed |= fold_constants(g)?;
        changed |= fold_batch_norm(g)?;
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
