//! Analyses of the integer program: the interval each integer provably stays in (per
//! element, from the client's input quantizers and the weights, by running the integer
//! kernels on the bounds: `lo·W⁺ + hi·W⁻` for a linear layer), and the range each one reaches
//! on sample inputs. They read the graph only; the `bitwidth` and `round` passes and the
//! backend's lowering all call them.

use crate::{
    eval_all, kernels, Binary, DType, Graph, IntLinear, Interval, IrError, NodeIndex, Op, OpError,
    QuantParams, Tensor,
};
use ndarray::{ArrayD, IxDyn, Zip};
use std::collections::HashMap;

/// Per-element proven bounds of an integer tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Bounds {
    pub lo: ArrayD<i64>,
    pub hi: ArrayD<i64>,
}

impl Bounds {
    pub fn uniform(shape: &[usize], iv: Interval) -> Self {
        Self {
            lo: ArrayD::from_elem(IxDyn(shape), iv.lo),
            hi: ArrayD::from_elem(IxDyn(shape), iv.hi),
        }
    }
    /// The interval of element `i` (row-major).
    pub fn at(&self, i: usize) -> Interval {
        let (lo, hi) = (
            self.lo.as_slice_memory_order(),
            self.hi.as_slice_memory_order(),
        );
        match (lo, hi) {
            (Some(l), Some(h)) if self.lo.is_standard_layout() => Interval::new(l[i], h[i]),
            _ => Interval::new(
                *self.lo.iter().nth(i).expect("invariant: index in range"),
                *self.hi.iter().nth(i).expect("invariant: index in range"),
            ),
        }
    }
    /// The widest element: table inputs are shifted by their own lower bound, so this (not
    /// the union) is the width a table needs.
    pub fn max_bits(&self) -> u32 {
        (0..self.len())
            .map(|i| self.at(i).bits())
            .max()
            .unwrap_or(0)
    }
    /// The union over all elements.
    pub fn union(&self) -> Interval {
        Interval::new(
            self.lo.iter().copied().min().unwrap_or(0),
            self.hi.iter().copied().max().unwrap_or(0),
        )
    }
    pub fn len(&self) -> usize {
        self.lo.len()
    }
    pub fn is_empty(&self) -> bool {
        self.lo.is_empty()
    }
}

/// Per-output intervals of an integer linear map given one interval for all its inputs.
pub fn neuron_intervals(l: &IntLinear, x: Interval) -> Vec<Interval> {
    l.rows()
        .iter()
        .map(|row| {
            row.iter()
                .fold(Interval::point(0), |acc, &w| acc.add(&x.scale(w)))
        })
        .collect()
}

fn run_i64(op: &Op, ins: &[ArrayD<i64>]) -> Result<ArrayD<i64>, OpError> {
    let ts: Vec<Tensor> = ins.iter().map(|a| Tensor::I64(a.clone())).collect();
    let refs: Vec<&Tensor> = ts.iter().collect();
    kernels::eval(op, &refs)?
        .as_i64()
        .cloned()
        .ok_or_else(|| OpError::shape("an integer op produced floats"))
}

/// The values of a checked elementwise computation, or an overflow error naming `what`.
fn all_checked(r: ArrayD<Option<i64>>, what: &str) -> Result<ArrayD<i64>, OpError> {
    if r.iter().any(Option::is_none) {
        return Err(OpError::overflow(what));
    }
    Ok(r.mapv(Option::unwrap_or_default))
}

/// Elementwise `a + b` of bounds, refusing (not wrapping) on overflow.
fn add_checked(a: &ArrayD<i64>, b: &ArrayD<i64>) -> Result<ArrayD<i64>, OpError> {
    all_checked(
        Zip::from(a).and(b).map_collect(|x, y| x.checked_add(*y)),
        "the accumulator's worst-case bound (use fewer bits)",
    )
}

/// The bounds of a linear layer, computed with checked integer arithmetic.
fn linear_bounds(l: &IntLinear, x: &Bounds) -> Result<Bounds, OpError> {
    let split = |w: &ArrayD<i64>| (w.mapv(|v| v.max(0)), w.mapv(|v| v.min(0)));
    let with_w = |w: ArrayD<i64>| match l {
        IntLinear::Dense { .. } => Op::IntLinear(IntLinear::Dense { w }),
        IntLinear::Conv {
            attrs, pad_value, ..
        } => Op::IntLinear(IntLinear::Conv {
            attrs: attrs.clone(),
            w,
            pad_value: *pad_value,
        }),
    };
    let w = match l {
        IntLinear::Dense { w } | IntLinear::Conv { w, .. } => w,
    };
    let (wp, wn) = split(w);
    // padding reads the same code in both bounds, so it contributes w·pad exactly
    let lo = add_checked(
        &run_i64(&with_w(wp.clone()), std::slice::from_ref(&x.lo))?,
        &run_i64(&with_w(wn.clone()), std::slice::from_ref(&x.hi))?,
    )?;
    let hi = add_checked(
        &run_i64(&with_w(wp), std::slice::from_ref(&x.hi))?,
        &run_i64(&with_w(wn), std::slice::from_ref(&x.lo))?,
    )?;
    Ok(Bounds { lo, hi })
}

/// The proven per-element bounds of every integer node, given how the client quantizes each
/// graph input.
///
/// # Errors
/// A cycle in the graph; a bound that overflows 64 bits (named by node).
pub fn proven_bounds(
    g: &Graph,
    input_quant: &[QuantParams],
) -> Result<HashMap<NodeIndex, Bounds>, IrError> {
    let mut st = BoundsState::default();
    for n in g.topo()? {
        st.step(g, n, input_quant)?;
    }
    Ok(st.bounds)
}

/// The proven bounds of a graph's integer nodes, computed node by node in topological order
/// (what [`proven_bounds`] does in one go, and what a pass that rewrites the graph as it
/// walks it uses step by step).
#[derive(Clone, Debug)]
pub struct BoundsState {
    /// Bounds of the nodes stepped so far.
    pub bounds: HashMap<NodeIndex, Bounds>,
    /// Table evaluations left for exact table-output ranges (beyond it: the output
    /// quantizer's range, still sound); keeps a graph of huge tables from stalling the
    /// analysis.
    budget: u64,
    /// Whether the last step ran out of budget for some element.
    starved: bool,
}

impl Default for BoundsState {
    fn default() -> Self {
        Self {
            bounds: HashMap::new(),
            budget: 1 << 28,
            starved: false,
        }
    }
}

impl BoundsState {
    /// The bounds of node `n` from its inputs' (stepped before it), recorded; returns the
    /// table evaluations it spent.
    ///
    /// # Errors
    /// A bound that overflows 64 bits (named by node).
    pub fn step(
        &mut self,
        g: &Graph,
        n: NodeIndex,
        input_quant: &[QuantParams],
    ) -> Result<u64, IrError> {
        let node = &g.g[n];
        if node.ty.dtype != DType::I64 {
            return Ok(0);
        }
        let before = self.budget;
        self.starved = false;
        let ins = g.inputs_of(n);
        let get = |i: usize| ins.get(i).and_then(|x| self.bounds.get(x));
        let shape = &node.ty.shape;
        let fail = |e: OpError| IrError::Node {
            node: node.name.clone(),
            op: node.op.name(),
            source: match e {
                OpError::Overflow { what } => OpError::Overflow {
                    what: format!("proving its value range, {what}"),
                },
                e => e,
            },
        };
        let r: Option<Bounds> = match &node.op {
            Op::Input { index } => input_quant
                .get(*index)
                .map(|p| Bounds::uniform(shape, Interval::new(p.qmin, p.qmax))),
            Op::Const(Tensor::I64(a)) => Some(Bounds {
                lo: a.clone(),
                hi: a.clone(),
            }),
            Op::IntLinear(l) => match get(0) {
                Some(x) => Some(linear_bounds(l, x).map_err(fail)?),
                None => None,
            },
            Op::Wrap { lo, bits } => get(0).map(|x| {
                let mut out = x.clone();
                let (olo, ohi) = (&mut out.lo, &mut out.hi);
                for (i, (a, b)) in olo.iter_mut().zip(ohi.iter_mut()).enumerate() {
                    let l = lo[if lo.len() == 1 { 0 } else { i }];
                    let h = l.saturating_add((1i64 << bits) - 1);
                    // inside its window a value is kept; otherwise anything in the window
                    if *a < l || *b > h {
                        *a = l;
                        *b = h;
                    }
                }
                out
            }),
            Op::Round { bits } => get(0).map(|x| {
                let k = |i: usize| bits[if bits.len() == 1 { 0 } else { i }];
                let mut lo = x.lo.clone();
                let mut hi = x.hi.clone();
                for (i, (l, h)) in lo.iter_mut().zip(hi.iter_mut()).enumerate() {
                    *l = crate::quant::round_shift(*l, k(i));
                    *h = crate::quant::round_shift(*h, k(i));
                }
                Bounds { lo, hi }
            }),
            Op::Quant(p) => Some(Bounds::uniform(shape, Interval::new(p.qmin, p.qmax))),
            Op::Tlu(t) => get(0).map(|x| {
                let mut lo = ArrayD::zeros(IxDyn(shape));
                let mut hi = ArrayD::zeros(IxDyn(shape));
                for (i, (l, h)) in lo.iter_mut().zip(hi.iter_mut()).enumerate() {
                    let iv = x.at(i);
                    let span = (i128::from(iv.hi) - i128::from(iv.lo)) as u128;
                    // exact extremes while the budget lasts; the output range is always sound
                    let exact = span <= 1 << 16 && self.budget > span as u64;
                    self.starved |= span <= 1 << 16 && !exact;
                    if exact {
                        self.budget -= span as u64 + 1;
                    }
                    let out = if exact {
                        // exact: this element's table extremes
                        (iv.lo..=iv.hi)
                            .map(|v| t.eval(i, v))
                            .fold(Interval::point(t.eval(i, iv.lo)), |a, y| {
                                a.union(&Interval::point(y))
                            })
                    } else if t.domain.as_ref().is_none_or(|d| {
                        let w = d.interval(i);
                        w.lo <= iv.lo && iv.hi <= w.hi
                    }) {
                        Interval::new(t.out.qmin, t.out.qmax)
                    } else {
                        // reads beyond the domain come back negated
                        Interval::new(
                            t.out.qmin.min(t.out.qmax.saturating_neg()),
                            t.out.qmax.max(t.out.qmin.saturating_neg()),
                        )
                    };
                    *l = out.lo;
                    *h = out.hi;
                }
                Bounds { lo, hi }
            }),
            Op::Binary(op @ (Binary::Add | Binary::Sub)) => match (get(0), get(1)) {
                (Some(a), Some(b)) if a.lo.shape() != b.lo.shape() => {
                    return Err(fail(OpError::shape(format!(
                        "encrypted {} of shapes {:?} and {:?}: both operands must have one shape",
                        op.name(),
                        a.lo.shape(),
                        b.lo.shape()
                    ))))
                }
                (Some(a), Some(b)) => {
                    // a − b = a + (−b), and −[lo, hi] = [−hi, −lo]
                    let neg =
                        |v: &ArrayD<i64>| all_checked(v.mapv(i64::checked_neg), "a negated bound");
                    let (blo, bhi) = if *op == Binary::Add {
                        (b.lo.clone(), b.hi.clone())
                    } else {
                        (neg(&b.hi).map_err(fail)?, neg(&b.lo).map_err(fail)?)
                    };
                    let lo = add_checked(&a.lo, &blo).map_err(fail)?;
                    let hi = add_checked(&a.hi, &bhi).map_err(fail)?;
                    Some(Bounds { lo, hi })
                }
                _ => None,
            },
            op if op.is_data_movement() => {
                let srcs: Option<Vec<&Bounds>> = (0..ins.len()).map(get).collect();
                match srcs {
                    Some(srcs) => {
                        let los: Vec<ArrayD<i64>> = srcs.iter().map(|b| b.lo.clone()).collect();
                        let his: Vec<ArrayD<i64>> = srcs.iter().map(|b| b.hi.clone()).collect();
                        Some(Bounds {
                            lo: run_i64(&node.op, &los).map_err(fail)?,
                            hi: run_i64(&node.op, &his).map_err(fail)?,
                        })
                    }
                    None => None,
                }
            }
            _ => None,
        };
        if let Some(r) = r {
            self.bounds.insert(n, r);
        }
        Ok(before - self.budget)
    }
}

/// Per-element range of every integer node over `samples` (the integer program's inputs:
/// quantized samples).
///
/// # Errors
/// A sample the program cannot run.
pub fn observed_bounds(
    g: &Graph,
    samples: &[Vec<Tensor>],
) -> Result<HashMap<NodeIndex, Bounds>, IrError> {
    let mut ob: HashMap<NodeIndex, Bounds> = HashMap::new();
    for sample in samples {
        for (n, v) in eval_all(g, sample)? {
            if let Tensor::I64(a) = v {
                observe(&mut ob, n, &a);
            }
        }
    }
    Ok(ob)
}

/// Widens `n`'s observed range in `ob` to hold the values `a`.
pub fn observe(ob: &mut HashMap<NodeIndex, Bounds>, n: NodeIndex, a: &ArrayD<i64>) {
    match ob.get_mut(&n) {
        Some(b) if b.lo.shape() == a.shape() => {
            Zip::from(&mut b.lo)
                .and(a)
                .for_each(|l, &x| *l = (*l).min(x));
            Zip::from(&mut b.hi)
                .and(a)
                .for_each(|h, &x| *h = (*h).max(x));
        }
        _ => {
            ob.insert(
                n,
                Bounds {
                    lo: a.clone(),
                    hi: a.clone(),
                },
            );
        }
    }
}
