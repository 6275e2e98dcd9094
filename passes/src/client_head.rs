//! client_head: the float preprocessing a client runs before it quantizes (float → float, on
//! the graph's inputs).
//!
//! A chain of elementwise `Add`, `Sub`, `Mul` or `Div` by constants and `Clip`s right after
//! a graph input — feature standardization `(x − mean) / std`, torchvision's `Normalize`, a
//! unit change, an input range clamp — is cut off the graph: the client evaluates it in float on the plain input, then quantizes
//! the result on the graph's grid. Left in the graph, the same chain would be quantized on
//! one grid for all features (a feature with a small range keeps almost no levels) and cost a
//! table lookup per element to requantize after the per-feature constants.
//!
//! The chain must be the input's only use, keep its shape, and end before any other op (or a
//! graph output). The head is a graph of its own with the original inputs and, per input,
//! one output: the chain's end (or the input itself when it has no chain).

use crate::{Analysis, Changed, Pass, PassContext, PassError, Stage};
use fhec_ir::{eval_f32, Binary, Graph, IrError, NodeIndex, Op, Unary};

/// The pass: cuts the head off into `cx.head` and maps the calibration samples through it
/// (the program's inputs are the head's outputs).
pub struct ClientHead;

impl Pass for ClientHead {
    fn name(&self) -> &'static str {
        "client_head"
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
    fn run(&self, g: &mut Graph, cx: &mut PassContext) -> Result<Changed, PassError> {
        let Some(head) = split_head(g)? else {
            return Ok(Changed::No);
        };
        cx.calib = cx
            .calib
            .iter()
            .map(|s| eval_f32(&head, s))
            .collect::<Result<Vec<_>, _>>()?;
        cx.head = Some(head);
        Ok(Changed::Yes)
    }
}

/// The arithmetic a head step may do: `Add`, `Sub`, `Mul` or `Div` (with a constant), or
/// `Clip`.
pub fn is_head_op(op: &Op) -> bool {
    matches!(
        op,
        Op::Binary(Binary::Add | Binary::Sub | Binary::Mul | Binary::Div)
            | Op::Unary(Unary::Clip { .. })
    )
}

/// The elementwise op `n` applies to its one non-constant operand, if it qualifies.
fn head_step(g: &Graph, n: NodeIndex, from: NodeIndex) -> bool {
    if !is_head_op(&g.g[n].op) {
        return false;
    }
    if matches!(g.g[n].op, Op::Unary(_)) {
        return g.g[n].ty == g.g[from].ty;
    }
    let ins = g.inputs_of(n);
    ins.len() == 2
        && ins.iter().filter(|&&i| i == from).count() == 1
        && ins
            .iter()
            .all(|&i| i == from || matches!(g.g[i].op, Op::Const(_)))
        && g.g[n].ty == g.g[from].ty
}

/// Splits the client-side head off `g`: returns the head graph when some input has one
/// (then `g`'s inputs are the head's outputs), `None` otherwise (`g` unchanged).
///
/// # Errors
/// A graph that is not a DAG.
pub fn split_head(g: &mut Graph) -> Result<Option<Graph>, IrError> {
    let is_output = |g: &Graph, n: NodeIndex| g.outputs.iter().any(|o| o.node == n);
    // per input: the chain's nodes, in order
    let mut chains: Vec<Vec<NodeIndex>> = Vec::new();
    for gi in &g.inputs {
        let mut chain = Vec::new();
        let mut cur = gi.node;
        loop {
            let users = g.users_of(cur);
            if users.len() != 1 || is_output(g, cur) || !head_step(g, users[0], cur) {
                break;
            }
            cur = users[0];
            chain.push(cur);
        }
        chains.push(chain);
    }
    if chains.iter().all(Vec::is_empty) {
        return Ok(None);
    }
    let mut head = g.clone();
    head.outputs.clear();
    for (gi, chain) in g.inputs.clone().iter().zip(&chains) {
        let end = chain.last().copied().unwrap_or(gi.node);
        head.add_output(&gi.name, end);
    }
    head.remove_dead();
    head.verify()?;
    // the graph reads each chain's end as its input
    for (i, chain) in chains.iter().enumerate() {
        let Some(&end) = chain.last() else { continue };
        let gi = g.inputs[i].clone();
        let ty = g.g[end].ty.clone();
        let node = g.g.add_node(fhec_ir::Node {
            name: gi.name.clone(),
            op: Op::Input { index: i },
            ty,
        });
        g.replace_uses(end, node);
        g.inputs[i].node = node;
        for &n in chain.iter().rev() {
            g.g.remove_node(n);
        }
        g.g.remove_node(gi.node);
    }
    g.remove_dead();
    g.verify()?;
    Ok(Some(head))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fhec_ir::{DType, Tensor, TensorType};
    use ndarray::{arr1, ArrayD};

    fn standardized() -> Graph {
        let mut g = Graph::new();
        let x = g.add_input("x", TensorType::new(DType::F32, vec![1, 3]), true);
        let m = g.add_const("mean", Tensor::F32(arr1(&[1.0f32, 2.0, 3.0]).into_dyn()));
        let s = g.add_const("std", Tensor::F32(arr1(&[2.0f32, 4.0, 0.5]).into_dyn()));
        let a = g.add_op("sub", Op::Binary(Binary::Sub), &[x, m]).unwrap();
        let b = g.add_op("div", Op::Binary(Binary::Div), &[a, s]).unwrap();
        let r = g
            .add_op("relu", Op::Unary(fhec_ir::Unary::Relu), &[b])
            .unwrap();
        g.add_output("y", r);
        g
    }

    #[test]
    fn a_standardization_chain_becomes_the_client_head() {
        let mut g = standardized();
        let x = Tensor::F32(ArrayD::from_shape_vec(vec![1, 3], vec![3.0, 0.0, 2.0]).unwrap());
        let want = fhec_ir::eval_f32(&g, std::slice::from_ref(&x)).unwrap();
        let head = split_head(&mut g).unwrap().expect("a head");
        // the graph keeps only the Relu; head then graph computes the same
        let ops: Vec<&str> = g.g.node_weights().map(|n| n.op.name()).collect();
        assert_eq!(ops.len(), 2, "{ops:?}");
        let h = fhec_ir::eval_f32(&head, &[x]).unwrap();
        assert_eq!(h[0].f32_values(), vec![1.0, -0.5, -2.0]);
        let got = fhec_ir::eval_f32(&g, &h).unwrap();
        assert_eq!(got[0].f32_values(), want[0].f32_values());
    }

    #[test]
    fn an_input_clip_is_the_clients() {
        // a clamp then a standardization: both run in float at the client
        let mut g = Graph::new();
        let x = g.add_input("x", TensorType::new(DType::F32, vec![1, 2]), true);
        let c = g
            .add_op("clip", Op::Unary(Unary::Clip { min: 0.0, max: 1.0 }), &[x])
            .unwrap();
        let k = g.add_const("k", Tensor::F32(arr1(&[2.0f32, 4.0]).into_dyn()));
        let m = g.add_op("mul", Op::Binary(Binary::Mul), &[c, k]).unwrap();
        let r = g.add_op("relu", Op::Unary(Unary::Relu), &[m]).unwrap();
        g.add_output("y", r);
        let head = split_head(&mut g).unwrap().expect("a head");
        let ops: Vec<&str> = head.g.node_weights().map(|n| n.op.name()).collect();
        assert!(ops.contains(&"Clip") && ops.contains(&"Mul"), "{ops:?}");
        let x = Tensor::F32(ArrayD::from_shape_vec(vec![1, 2], vec![-3.0, 0.25]).unwrap());
        assert_eq!(
            fhec_ir::eval_f32(&head, &[x]).unwrap()[0].f32_values(),
            vec![0.0, 1.0]
        );
    }

    #[test]
    fn an_input_with_other_uses_keeps_its_ops() {
        let mut g = standardized();
        let x = g.inputs[0].node;
        g.add_output("raw", x);
        assert!(split_head(&mut g).unwrap().is_none());
    }
}
