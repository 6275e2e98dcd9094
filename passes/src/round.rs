//! round: size every table's domain, and drop low bits before every wide table lookup
//! (fused → fused).
//!
//! Each table element gets a *used* interval: its proven worst case (`--ranges proven`), or
//! its calibration range widened by a margin and kept inside the proven one (`--ranges
//! calibrated`, the default; [`RangePolicy`]). With `rounding_bits = R`, every element whose
//! used interval needs more than `R` bits is rounded: a `Round` in front drops, per element,
//! the smallest `k` that brings that element's used interval to `R` bits (each ciphertext
//! has its own table, so per-element rounding costs nothing and keeps the precision a
//! tensor-wide `k` would waste), and the table's affine coefficient `a` is multiplied by
//! `2^k` (exact in f32). Integers the client decrypts are not rounded: decryption reads them
//! whole. This is Concrete ML's `rounding_threshold_bits`.
//!
//! A table that requantizes by a power of two — `quant(relu?(a·x + b))` with
//! `a / s_out = 2^−k` and `b = a·B` for an integer `B`, what a model with power-of-two scales
//! (Brevitas' fixed-point quantizers, `fhec train --power-of-two`) computes after each layer —
//! drops at least those `k` bits: `B` moves into the accumulator (a constant addition, free
//! when encrypted), and the table then reads `round((x + B) / 2^k)`, the model's own
//! requantization (rounding half up where the model rounds half to even: a tie may land one
//! step apart). No precision is lost that the model keeps, and the table is `k` bits
//! narrower. The layers are listed in `cx.round.shifts` (the report says where).
//!
//! Then every table gets its domain ([`fhec_ir::TableDomain`]): one width `P` for the whole
//! program (the widest rounded used interval, since one set of TFHE parameters reads every
//! table), each element's window of `2^P` inputs centred on its rounded used interval. An
//! input beyond the window reads the negacyclic wrap, exactly as the bootstrap does, so the
//! integer program stays the spec of the encrypted one. Needs `bitwidth` first.

use crate::bitwidth::{bounds, Bounds};
use crate::{Analysis, Changed, DomainChoice, Pass, PassContext, PassError, RangePolicy, Stage};
use fhec_ir::{Graph, Interval, NodeIndex, Op, TableDomain};
use std::collections::{HashMap, HashSet};

pub struct Round;

/// The smallest `k` such that `round(interval, k)` needs at most `r` bits.
pub fn bits_to_drop(i: Interval, r: u32) -> u32 {
    let mut k = i.bits().saturating_sub(r);
    while i.round_shift(k).bits() > r {
        k += 1;
    }
    k
}

/// The interval each element of a table input is sized for, under `policy`: the proven one,
/// or the observed one widened on each side by `margin` times the larger of the element's
/// own observed width and the median width of the tensor's elements (so that an element the
/// calibration set barely moved still gets room), clipped to the proven one.
pub fn used_intervals(
    policy: RangePolicy,
    margin: f32,
    proven: &Bounds,
    observed: Option<&Bounds>,
) -> Vec<Interval> {
    let n = proven.len();
    let Some(ob) = observed.filter(|o| o.len() == n && policy == RangePolicy::Calibrated) else {
        return (0..n).map(|i| proven.at(i)).collect();
    };
    let obs: Vec<Interval> = (0..n).map(|i| ob.at(i)).collect();
    let mut widths: Vec<i64> = obs.iter().map(|o| o.hi.saturating_sub(o.lo)).collect();
    widths.sort_unstable();
    let median = widths.get(n / 2).copied().unwrap_or(0);
    obs.iter()
        .enumerate()
        .map(|(i, o)| {
            let p = proven.at(i);
            let w = o.hi.saturating_sub(o.lo).max(median).max(1);
            let m = (f64::from(margin) * w as f64).ceil() as i64;
            Interval::new(
                o.lo.saturating_sub(m).max(p.lo),
                o.hi.saturating_add(m).min(p.hi),
            )
        })
        .collect()
}

/// `a[i] · 2^k[i]` (exact in f32), kept as one value when all agree.
fn scale_by_shift(a: &mut Vec<f32>, ks: &[u32]) {
    let len = ks.len();
    let mut v = if a.len() == len {
        a.clone()
    } else {
        vec![a[0]; len]
    };
    for (a, &k) in v.iter_mut().zip(ks) {
        *a *= (1u64 << k) as f32;
    }
    let bits: Vec<u32> = v.iter().map(|x| x.to_bits()).collect();
    *a = if bits.iter().all(|&b| b == bits[0]) {
        vec![v[0]]
    } else {
        v
    };
}

/// A power-of-two requantization (see the module docs): per element, the shift `k ≥ 1` and
/// the integer bias `B`, if every element of `t` is one.
fn po2_shift(t: &fhec_ir::TluFn, len: usize) -> Option<(Vec<u32>, Vec<i64>)> {
    use fhec_ir::{ElemOp, Unary};
    // Relu, and the model's own quantizer on the output grid (idempotent before it)
    let s_out = t.out.scale;
    if !t.chain.iter().all(|e| match e {
        ElemOp::Unary(Unary::Relu) => true,
        ElemOp::Unary(Unary::FakeQuant {
            scale, zero_point, ..
        }) => *scale == s_out && *zero_point == 0.0,
        _ => false,
    }) || t.out.zero_point != 0
        || !(t.out.scale.is_finite() && t.out.scale > 0.0)
    {
        return None;
    }
    let at = |v: &Vec<f32>, i: usize| v[if v.len() == 1 { 0 } else { i }];
    let mut ks = Vec::with_capacity(len);
    let mut bs = Vec::with_capacity(len);
    for i in 0..len {
        let (a, b) = (at(&t.a, i), at(&t.b, i));
        if !(a.is_finite() && a > 0.0 && b.is_finite()) {
            return None;
        }
        let r = f64::from(a) / f64::from(t.out.scale);
        let k = -r.log2().round();
        if !(1.0..=30.0).contains(&k) || r != (-k).exp2() {
            return None;
        }
        let big_b = f64::from(b) / f64::from(a);
        if (big_b - big_b.round()).abs() > 1e-3 || big_b.abs() > 1e15 {
            return None;
        }
        ks.push(k as u32);
        bs.push(big_b.round() as i64);
    }
    Some((ks, bs))
}

/// The analyses `round` decides from, made in one walk over the graph as the pass rewrites
/// it: each node's proven bounds and (under calibrated ranges) its values on every
/// calibration sample, from its inputs' final ones. A table's input is final when the walk
/// reaches the table (everything upstream is decided), so one walk replaces re-running the
/// analyses after each rounded table. A node's sample values are dropped once every reader
/// has been walked.
struct Walk<'a> {
    input_quant: &'a [fhec_ir::QuantParams],
    bounds: fhec_ir::analysis::BoundsState,
    samples: &'a [Vec<fhec_ir::Tensor>],
    /// Per sample, the values of the nodes walked and still read.
    values: Vec<HashMap<NodeIndex, fhec_ir::Tensor>>,
    observed: HashMap<NodeIndex, Bounds>,
    walked: HashSet<NodeIndex>,
    /// Nodes whose values stay: a rounding that a later table may read too.
    keep: HashSet<NodeIndex>,
}

impl<'a> Walk<'a> {
    fn new(input_quant: &'a [fhec_ir::QuantParams], samples: &'a [Vec<fhec_ir::Tensor>]) -> Self {
        Self {
            input_quant,
            bounds: Default::default(),
            samples,
            values: vec![HashMap::new(); samples.len()],
            observed: HashMap::new(),
            walked: HashSet::new(),
            keep: HashSet::new(),
        }
    }

    /// Walks node `n`: its bounds, its values on every sample and their range.
    fn step(&mut self, g: &Graph, n: NodeIndex) -> Result<(), PassError> {
        self.bounds.step(g, n, self.input_quant)?;
        let node = &g.g[n];
        let ins = g.inputs_of(n);
        for (si, sample) in self.samples.iter().enumerate() {
            let vals = &mut self.values[si];
            let v = match &node.op {
                Op::Input { index } => sample[*index].clone(),
                op => {
                    let args: Vec<&fhec_ir::Tensor> = ins
                        .iter()
                        .map(|i| {
                            vals.get(i)
                                .expect("invariant: inputs walked before their readers")
                        })
                        .collect();
                    fhec_ir::kernels::eval(op, &args).map_err(|source| fhec_ir::IrError::Node {
                        node: node.name.clone(),
                        op: op.name(),
                        source,
                    })?
                }
            };
            if let fhec_ir::Tensor::I64(a) = &v {
                fhec_ir::analysis::observe(&mut self.observed, n, a);
            }
            vals.insert(n, v);
        }
        self.walked.insert(n);
        // inputs every reader of which has been walked are not needed any more
        for i in ins {
            if !self.keep.contains(&i) && g.users_of(i).iter().all(|u| self.walked.contains(u)) {
                for vals in &mut self.values {
                    vals.remove(&i);
                }
            }
        }
        Ok(())
    }

    fn bounds_of(&self, n: NodeIndex) -> Option<&Bounds> {
        self.bounds.bounds.get(&n)
    }
}

/// One value, or one per element.
fn compress<T: Copy + PartialEq>(v: Vec<T>) -> Vec<T> {
    if v.iter().all(|x| *x == v[0]) {
        v.into_iter().take(1).collect()
    } else {
        v
    }
}

impl Pass for Round {
    fn name(&self) -> &'static str {
        "round"
    }
    fn requires(&self) -> Stage {
        Stage::Fused
    }
    fn produces(&self) -> Stage {
        Stage::Fused
    }
    fn needs(&self) -> &'static [Analysis] {
        &[Analysis::Intervals]
    }
    fn invalidates(&self) -> &'static [Analysis] {
        &[Analysis::Intervals]
    }
    fn run(&self, g: &mut Graph, cx: &mut PassContext) -> Result<Changed, PassError> {
        let policy = cx.config.ranges;
        let margin = cx.config.range_margin;
        let mut made: HashMap<(NodeIndex, Vec<u32>), NodeIndex> = HashMap::new();
        let mut count = 0;
        // each table's rounded used interval per element, for the domains below
        let mut tables: Vec<(NodeIndex, Vec<Interval>)> = Vec::new();
        // one walk: every node's analyses from its inputs' final ones (see `Walk`)
        let samples = if policy == RangePolicy::Calibrated {
            crate::bitwidth::quantized_calib(cx)
        } else {
            Vec::new()
        };
        let input_quant = cx.quant.input_quant.clone();
        let mut walk = Walk::new(&input_quant, &samples);
        for n in g.topo()? {
            if !matches!(g.g[n].op, Op::Tlu(_)) {
                walk.step(g, n)?;
                continue;
            }
            let mut x = g.inputs_of(n)[0];
            // the rounding of the layer whose accumulator feeds the table
            let layer = cx.quant.origin.get(&x).cloned().unwrap_or_default();
            let r = cx.config.rounding_for(&layer);
            // a power-of-two requantization: its integer bias joins the accumulator, and its
            // shift is dropped whatever the rounding width
            let len = g.g[n].ty.len();
            let shift = match (&g.g[n].op, r) {
                (Op::Tlu(t), Some(_)) => po2_shift(t, len),
                _ => None,
            };
            if let Some((ks, bias)) = &shift {
                let moved = bias.iter().any(|&b| b != 0);
                if moved {
                    let shape = g.g[x].ty.shape.clone();
                    let c = fhec_ir::Tensor::I64(
                        ndarray::ArrayD::from_shape_vec(
                            ndarray::IxDyn(&shape),
                            (0..len)
                                .map(|i| bias[if bias.len() == 1 { 0 } else { i }])
                                .collect(),
                        )
                        .expect("invariant: the table has its input's shape"),
                    );
                    let cn = g.add_const(&format!("{}:bias", g.g[x].name), c);
                    walk.step(g, cn)?;
                    let name = format!("{}:biased", g.g[x].name);
                    let xb = g.add_op(&name, Op::Binary(fhec_ir::Binary::Add), &[x, cn])?;
                    cx.quant.origin.insert(xb, layer.clone());
                    let e = g.g.find_edge(x, n).expect("invariant: x feeds n");
                    g.g.remove_edge(e);
                    g.g.add_edge(xb, n, 0);
                    if let Op::Tlu(t) = &mut g.g[n].op {
                        t.b = vec![0.0];
                    }
                    x = xb;
                    walk.step(g, xb)?;
                }
                let k = ks.iter().copied().max().unwrap_or(0);
                if !cx.round.shifts.iter().any(|(l, _, _)| *l == layer) {
                    cx.round.shifts.push((layer.clone(), k, moved));
                }
            }
            let Some(b) = walk.bounds_of(x) else {
                walk.step(g, n)?;
                continue;
            };
            let used = used_intervals(policy, margin, b, walk.observed.get(&x));
            // each element drops just the bits its own used interval needs
            let mut ks: Vec<u32> = match r {
                Some(r) => used.iter().map(|&u| bits_to_drop(u, r)).collect(),
                None => vec![0; used.len()],
            };
            if let Some((shift, _)) = &shift {
                for (i, k) in ks.iter_mut().enumerate() {
                    *k = (*k).max(shift[if shift.len() == 1 { 0 } else { i }]);
                }
            }
            let rounded: Vec<Interval> = used
                .iter()
                .zip(&ks)
                .map(|(u, &k)| u.round_shift(k))
                .collect();
            cx.round.domains.insert(
                n,
                DomainChoice {
                    used_bits: used.iter().map(Interval::bits).max().unwrap_or(0),
                    input_bits: rounded.iter().map(Interval::bits).max().unwrap_or(0),
                },
            );
            tables.push((n, rounded));
            if ks.iter().all(|&k| k == 0) {
                walk.step(g, n)?;
                continue;
            }
            let bits = compress(ks.clone());
            let rn = match made.get(&(x, bits.clone())) {
                Some(&rn) => rn,
                None => {
                    let name = format!("{}:round", g.g[x].name);
                    let rn = g.add_op(&name, Op::Round { bits: bits.clone() }, &[x])?;
                    if let Some(o) = cx.quant.origin.get(&x).cloned() {
                        cx.quant.origin.insert(rn, o);
                    }
                    made.insert((x, bits), rn);
                    walk.step(g, rn)?;
                    walk.keep.insert(rn);
                    rn
                }
            };
            if let Op::Tlu(t) = &mut g.g[n].op {
                // every affine read of the input (the table's own, and each Load of a
                // function that reads it twice) now sees `x / 2^k`
                scale_by_shift(&mut t.a, &ks);
                for e in &mut t.chain {
                    if let fhec_ir::ElemOp::Load { a, .. } = e {
                        scale_by_shift(a, &ks);
                    }
                }
            }
            let e = g.g.find_edge(x, n).expect("invariant: x feeds n");
            g.g.remove_edge(e);
            g.g.add_edge(rn, n, 0);
            cx.round
                .rounded
                .insert(rn, ks.iter().copied().max().unwrap_or(0));
            count += 1;
            walk.step(g, n)?;
        }
        // the analyses of the rounded graph (before the domains below)
        cx.analysis.bounds = walk.bounds.bounds;
        if policy == RangePolicy::Calibrated {
            cx.analysis.observed_elems = walk.observed;
        }
        // one table width for the program: every table is read with the same parameters
        let p = tables
            .iter()
            .flat_map(|(_, r)| r.iter().map(Interval::bits))
            .max()
            .unwrap_or(0)
            .max(1);
        for (n, rounded) in &tables {
            let lo: Vec<i64> = rounded.iter().map(|&u| centred_lo(u, p)).collect();
            if let Op::Tlu(t) = &mut g.g[*n].op {
                t.domain = Some(TableDomain {
                    lo: compress(lo),
                    bits: p,
                });
            }
        }
        // decrypted windows are sized on the program's proven bounds with the domains set
        // (a read beyond a domain wraps, which widens what follows)
        let windows = if policy == RangePolicy::Calibrated {
            cx.analysis.bounds = bounds(g, cx)?;
            output_windows(g, cx, margin)?
        } else {
            0
        };
        if windows > 0 {
            cx.analysis.bounds = bounds(g, cx)?;
            for (n, b) in &cx.analysis.bounds {
                if matches!(g.g[*n].op, Op::Wrap { .. }) {
                    cx.analysis.intervals.insert(*n, b.union());
                }
            }
            cx.log.push(format!(
                "round: {windows} decrypted output(s) read in a calibrated window narrower than the proven one"
            ));
        }
        cx.log.push(format!(
            "round: {count} table input(s) rounded ({} by default); {} table(s) of {p}-bit domains ({} ranges)",
            cx.config
                .rounding_bits
                .map_or("exact".to_string(), |r| format!("{r} bits")),
            tables.len(),
            policy.name()
        ));
        Ok(if count > 0 || !tables.is_empty() || windows > 0 {
            Changed::Yes
        } else {
            Changed::No
        })
    }
}

/// The first value of a window of `2^bits` values with `u` centred in it.
fn centred_lo(u: Interval, bits: u32) -> i64 {
    let slack = (1i64 << bits) - (u.hi - u.lo + 1);
    u.lo - slack / 2
}

/// Calibrated ranges for what the client decrypts: every integer a client-side float op reads
/// gets a window sized like a table domain (the calibration range with its margin, within
/// the proven interval) when that is narrower than the proven interval, as an
/// [`Op::Wrap`] before its readers. The encrypted program then needs only the window's bits
/// of message room, not the proven width; a value beyond the window wraps, in the integer
/// program as in the decryption (clear mode counts such values). Returns the windows made.
fn output_windows(g: &mut Graph, cx: &mut PassContext, margin: f32) -> Result<usize, PassError> {
    let mut made = 0;
    for n in g.topo()? {
        let node = &g.g[n];
        if node.ty.dtype != fhec_ir::DType::I64 || matches!(node.op, Op::Const(_) | Op::Wrap { .. })
        {
            continue;
        }
        let is_reader = |m: &fhec_ir::Node| m.ty.dtype == fhec_ir::DType::F32;
        if !g.users_of(n).into_iter().any(|u| is_reader(&g.g[u])) {
            continue;
        }
        let Some(b) = cx.analysis.bounds.get(&n) else {
            continue;
        };
        let proven = b.max_bits();
        let used = used_intervals(
            RangePolicy::Calibrated,
            margin,
            b,
            cx.analysis.observed_elems.get(&n),
        );
        let bits = used.iter().map(Interval::bits).max().unwrap_or(0).max(1);
        if bits >= proven || bits > 62 {
            continue;
        }
        // the used interval centred in its window, as a table domain's
        let lo: Vec<i64> = used.iter().map(|&u| centred_lo(u, bits)).collect();
        let name = format!("{}:window", g.g[n].name);
        let w = g.add_op(
            &name,
            Op::Wrap {
                lo: compress(lo),
                bits,
            },
            &[n],
        )?;
        g.redirect_uses(n, w, is_reader);
        if let Some(o) = cx.quant.origin.get(&n).cloned() {
            cx.quant.origin.insert(w, o);
        }
        cx.round.windows.insert(n, (proven, bits));
        made += 1;
    }
    Ok(made)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn dropping_bits_reaches_the_target(lo in -100_000i64..100_000, n in 0i64..200_000, r in 1u32..10) {
            let i = Interval::new(lo, lo + n);
            let k = bits_to_drop(i, r);
            prop_assert!(i.round_shift(k).bits() <= r);
            prop_assert!(k == 0 || i.round_shift(k - 1).bits() > r);
        }
    }
}
