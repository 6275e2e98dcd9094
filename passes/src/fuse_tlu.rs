//! fuse_tlu: quantized → fused.
//!
//! Every `Quant` whose input is a float function of one `Dequant` (`Unary`, `Binary` with a
//! constant operand, or `Binary` of two such functions of the same `Dequant`, like GELU's
//! `x · Φ(x)`) becomes one `Tlu` on the `Dequant`'s integer input, holding that exact recipe
//! (`TluFn`): one table per element, one bootstrap per element.
//!
//! Invariant: `eval_int` is bit-identical before and after (the `Tlu` evaluates the same f32
//! operations in the same order). Float nodes not fused remain: the client-side tail, which
//! reads decrypted integers through its own `Dequant`.

use crate::{Analysis, Changed, Pass, PassContext, PassError, Stage};
use fhec_ir::{ElemOp, Graph, NodeIndex, Op, Tensor, TluFn};
use ndarray::IxDyn;

pub struct FuseTlu;

impl Pass for FuseTlu {
    fn name(&self) -> &'static str {
        "fuse_tlu"
    }
    fn requires(&self) -> Stage {
        Stage::Quantized
    }
    fn produces(&self) -> Stage {
        Stage::Fused
    }
    fn invalidates(&self) -> &'static [Analysis] {
        &[Analysis::Intervals]
    }
    fn run(&self, g: &mut Graph, cx: &mut PassContext) -> Result<Changed, PassError> {
        let mut fused = 0;
        for q in g.topo()? {
            let Op::Quant(out) = g.g[q].op else { continue };
            let Some((src, tlu)) = chain_to_tlu(g, q, out) else {
                continue;
            };
            let name = g.g[q].name.clone();
            let t = g.add_op(&name, Op::Tlu(tlu), &[src])?;
            if let Some(o) = cx.quant.origin.get(&q).cloned() {
                cx.quant.origin.insert(t, o);
            }
            g.replace_uses(q, t);
            fused += 1;
        }
        g.remove_dead();
        // A Quant left over reads a float op that is not univariate: nothing on the server
        // can compute it.
        for q in g.topo()? {
            if matches!(g.g[q].op, Op::Quant(_)) {
                let mut cur = g.inputs_of(q)[0];
                while let Some(&next) = g.inputs_of(cur).first() {
                    if !matches!(g.g[cur].op, Op::Unary(_) | Op::Binary(_))
                        || g.g[next].ty.dtype != fhec_ir::DType::F32
                    {
                        break;
                    }
                    cur = next;
                }
                return Err(PassError::Unsupported {
                    node: g.g[cur].name.clone(),
                    op: g.g[cur].op.name(),
                    reason: "sits between encrypted layers but is not an elementwise function of one encrypted value, so no table lookup can compute it".into(),
                });
            }
        }
        cx.log.push(format!("fuse_tlu: {fused} table lookup(s)"));
        Ok(if fused > 0 { Changed::Yes } else { Changed::No })
    }
}

/// Walks from `Quant` node `q` up to one `Dequant`, writing the float ops in between as the
/// table's function (see [`ElemOp`]).
fn chain_to_tlu(g: &Graph, q: NodeIndex, out: fhec_ir::QuantParams) -> Option<(NodeIndex, TluFn)> {
    let shape = g.g[q].ty.shape.clone();
    let mut chain = Vec::new();
    let mut root = None;
    gen(g, g.inputs_of(q)[0], &shape, &mut chain, &mut root)?;
    let d = root?;
    let Op::Dequant { a, b } = &g.g[d].op else {
        return None;
    };
    // the function starts from the first Dequant's value: its Load is implied
    if matches!(chain.first(), Some(ElemOp::Load { a: la, b: lb }) if la == a && lb == b) {
        chain.remove(0);
    }
    Some((
        g.inputs_of(d)[0],
        TluFn {
            a: a.clone(),
            b: b.clone(),
            chain,
            out,
            domain: None,
        },
    ))
}

/// Appends the steps computing float node `n` (of the table's `shape`) into `v`; every path
/// must end at the same `Dequant` (`root`).
fn gen(
    g: &Graph,
    n: NodeIndex,
    shape: &[usize],
    chain: &mut Vec<ElemOp>,
    root: &mut Option<NodeIndex>,
) -> Option<()> {
    let ins = g.inputs_of(n);
    match &g.g[n].op {
        Op::Dequant { a, b } => {
            // every path must read the same integers (each through its own affine map)
            match *root {
                Some(r) if g.inputs_of(r)[0] != ins[0] => return None,
                Some(_) => {}
                None => *root = Some(n),
            }
            chain.push(ElemOp::Load {
                a: a.clone(),
                b: b.clone(),
            });
        }
        Op::Unary(u) => {
            gen(g, ins[0], shape, chain, root)?;
            chain.push(ElemOp::Unary(*u));
        }
        Op::Binary(op) => {
            let as_const = |i: NodeIndex| match &g.g[i].op {
                Op::Const(t) => Some(t.clone()),
                _ => None,
            };
            let (c, x, const_first) = match (as_const(ins[0]), as_const(ins[1])) {
                (None, Some(c)) => (c, ins[0], false),
                (Some(c), None) => (c, ins[1], true),
                (None, None) => {
                    // both operands functions of the same input: x · Φ(x), …
                    if ins.iter().any(|&i| g.g[i].ty.shape != shape) {
                        return None;
                    }
                    gen(g, ins[0], shape, chain, root)?;
                    chain.push(ElemOp::Push);
                    gen(g, ins[1], shape, chain, root)?;
                    chain.push(ElemOp::Combine(*op));
                    return Some(());
                }
                _ => return None,
            };
            if g.g[x].ty.shape != shape {
                return None;
            }
            let cf = match c {
                Tensor::F32(a) => a,
                Tensor::I64(a) => a.mapv(|v| v as f32),
            };
            let flat: Vec<f32> = cf.broadcast(IxDyn(shape))?.iter().copied().collect();
            let c = if flat.iter().all(|v| v.to_bits() == flat[0].to_bits()) {
                vec![flat[0]]
            } else {
                flat
            };
            gen(g, x, shape, chain, root)?;
            chain.push(ElemOp::Binary {
                op: *op,
                c,
                const_first,
            });
        }
        _ => return None,
    }
    Some(())
}
