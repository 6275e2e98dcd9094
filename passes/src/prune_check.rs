//! prune_check: accumulator budget per neuron (fused → fused).
//!
//! For every integer linear layer, each neuron's worst-case accumulator (its weights against
//! the input interval) is compared with the budget:
//! - with `n_accum_bits = A`: weights are pruned (L1, smallest magnitude first) until every
//!   neuron fits `A` bits; the count per layer is recorded;
//! - without rounding: the budget is `max_tlu_bits` (the widest table the backend takes), and
//!   a wider neuron is refused with an error naming the layer, the neuron, its width, the seed
//!   bound `Ω = ⌊(2^A − 1)/((2^n_w − 1)(2^n_in − 1))⌋` and the fixes.
//!
//! With rounding and no `n_accum_bits`, accumulators may be wide: `round` brings every table
//! input to `rounding_bits`, which must not exceed `max_tlu_bits` (checked). Without rounding,
//! every other table input (e.g. the difference inside an encrypted max) is checked against
//! `max_tlu_bits` too.

use crate::{Analysis, Changed, Pass, PassContext, PassError, Stage};
use fhec_ir::{Graph, IntLinear, Interval, Op};

pub struct PruneCheck;

/// Concrete ML's seed bound: how many weights of `n_w` bits on inputs of `n_in` bits a
/// neuron may have so that its accumulator fits `n_max` bits in the worst case.
pub fn omega(n_max: u32, n_w: u32, n_in: u32) -> u64 {
    let num = (1u64 << n_max) - 1;
    let den = ((1u64 << n_w) - 1) * ((1u64 << n_in) - 1);
    num / den.max(1)
}

impl Pass for PruneCheck {
    fn name(&self) -> &'static str {
        "prune_check"
    }
    fn requires(&self) -> Stage {
        Stage::Fused
    }
    fn produces(&self) -> Stage {
        Stage::Fused
    }
    // after pruning it runs `bitwidth` again: the intervals stay current
    fn needs(&self) -> &'static [Analysis] {
        &[Analysis::Intervals]
    }
    fn run(&self, g: &mut Graph, cx: &mut PassContext) -> Result<Changed, PassError> {
        let cfg = cx.config.clone();
        if let Some(r) = cfg.rounding_bits {
            if r > cfg.max_tlu_bits {
                return Err(PassError::Calibration {
                    reason: format!(
                        "--rounding-bits {r} exceeds the widest table lookup, {} bits",
                        cfg.max_tlu_bits
                    ),
                });
            }
        }
        for (name, l) in &cfg.layers {
            if let Some(r) = l.rounding_bits.filter(|&r| r > cfg.max_tlu_bits) {
                return Err(PassError::Config {
                    reason: format!(
                        "layer `{name}`: rounding to {r} bits exceeds the widest table lookup, {} bits",
                        cfg.max_tlu_bits
                    ),
                });
            }
        }
        let mut changed = false;
        for n in g.topo()? {
            let Op::IntLinear(l) = &g.g[n].op else {
                continue;
            };
            let layer_name = cx.quant.origin.get(&n).cloned().unwrap_or_default();
            let budget = match (cfg.n_accum_bits, cfg.rounding_for(&layer_name)) {
                (Some(a), _) => a,
                (None, None) => cfg.max_tlu_bits,
                (None, Some(_)) => continue,
            };
            let x = g.inputs_of(n)[0];
            let Some(&xi) = cx.analysis.intervals.get(&x) else {
                continue;
            };
            let xi = match l {
                IntLinear::Conv { pad_value, .. } => xi.union(&Interval::point(*pad_value)),
                IntLinear::Dense { .. } => xi,
            };
            let layer = cx
                .quant
                .origin
                .get(&n)
                .cloned()
                .unwrap_or_else(|| g.g[n].name.clone());
            // the widest element of the proven per-element bounds, and its neuron
            let Some(bounds) = cx.analysis.bounds.get(&n) else {
                continue;
            };
            let outs = l.rows().len();
            let shape = &g.g[n].ty.shape;
            let neuron_of = |e: usize| match l {
                IntLinear::Dense { .. } => e % outs,
                IntLinear::Conv { .. } => (e / (bounds.len() / (shape[0] * outs)).max(1)) % outs,
            };
            let widest = (0..bounds.len())
                .map(|e| (e, bounds.at(e)))
                .max_by_key(|(_, iv)| iv.bits());
            let Some((elem, iv)) = widest else { continue };
            let neuron = neuron_of(elem);
            if iv.bits() <= budget {
                continue;
            }
            if cfg.n_accum_bits.is_none() {
                let rows = l.rows();
                return Err(PassError::Accumulator {
                    layer,
                    neuron,
                    bits: iv.bits(),
                    lo: iv.lo,
                    hi: iv.hi,
                    budget,
                    omega: omega(budget, weight_bits(l), xi.bits()),
                    fan_in: rows.first().map_or(0, |r| r.len()),
                    fewer: cfg.n_bits_activations.saturating_sub(2).max(2),
                });
            }
            // L1 unstructured pruning, neuron by neuron
            let Op::IntLinear(l) = &mut g.g[n].op else {
                unreachable!("invariant: matched above")
            };
            let zeroed = prune(l, xi, budget);
            cx.pruned.push((layer, zeroed));
            if zeroed > 0 {
                // later layers, the tables and their domains see the pruned bounds
                changed = true;
                crate::bitwidth::Bitwidth.run(g, cx)?;
            }
        }
        for n in g.topo()? {
            if !matches!(g.g[n].op, Op::Tlu(_)) {
                continue;
            }
            let x = g.inputs_of(n)[0];
            let src = cx.quant.origin.get(&x).cloned().unwrap_or_default();
            if cfg.rounding_for(&src).is_some() {
                continue; // rounded to fit
            }
            if matches!(g.g[x].op, Op::IntLinear(_)) && cfg.n_accum_bits.is_some() {
                continue; // pruned above
            }
            let Some(b) = cx.analysis.bounds.get(&x) else {
                continue;
            };
            let bits = b.max_bits();
            if bits > cfg.max_tlu_bits {
                return Err(PassError::Unsupported {
                    node: cx.quant.origin.get(&n).cloned().unwrap_or_else(|| g.g[n].name.clone()),
                    op: g.g[x].op.name(),
                    reason: format!(
                        "its table lookup needs a {bits}-bit input, more than the {} bits tables take; use --rounding-bits {} or fewer bits",
                        cfg.max_tlu_bits, cfg.max_tlu_bits
                    ),
                });
            }
        }
        Ok(if changed { Changed::Yes } else { Changed::No })
    }
}

/// The width of a layer's integer weights: the bits of the largest magnitude, plus a sign
/// (the layer's own grid for a self-quantized model, `n_bits_weights` otherwise).
fn weight_bits(l: &IntLinear) -> u32 {
    let max = l
        .rows()
        .iter()
        .flat_map(|r| r.iter().map(|w| w.unsigned_abs()))
        .max()
        .unwrap_or(0);
    (u64::BITS - max.leading_zeros()) + 1
}

/// Zeroes the smallest weights of each over-budget neuron until it fits; returns how many.
fn prune(l: &mut IntLinear, x: Interval, budget: u32) -> usize {
    let rows = l.rows();
    let mut zeroed = 0;
    let mut new_rows = rows.clone();
    for row in new_rows.iter_mut() {
        let fits = |r: &Vec<i64>| {
            r.iter()
                .fold(Interval::point(0), |a, &w| a.add(&x.scale(w)))
                .bits()
                <= budget
        };
        let mut order: Vec<usize> = (0..row.len()).filter(|&i| row[i] != 0).collect();
        order.sort_by_key(|&i| (row[i].abs(), i));
        let mut k = 0;
        while !fits(row) && k < order.len() {
            row[order[k]] = 0;
            zeroed += 1;
            k += 1;
        }
    }
    match l {
        IntLinear::Dense { w } => {
            for (j, row) in new_rows.iter().enumerate() {
                for (i, &v) in row.iter().enumerate() {
                    w[[i, j]] = v;
                }
            }
        }
        IntLinear::Conv { w, .. } => {
            for (dst, src) in w.iter_mut().zip(new_rows.concat()) {
                *dst = src;
            }
        }
    }
    zeroed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bitwidth::neuron_intervals;
    use ndarray::{ArrayD, IxDyn};

    #[test]
    fn omega_matches_the_seed_formula() {
        // 8-bit accumulator, 2-bit weights, 2-bit inputs: 255 / 9 = 28
        assert_eq!(omega(8, 2, 2), 28);
        assert_eq!(omega(6, 6, 6), 0);
    }

    #[test]
    fn pruning_meets_the_budget() {
        let w = ArrayD::from_shape_fn(IxDyn(&[16, 2]), |ix| (ix[0] as i64 % 7) - 3 + ix[1] as i64);
        let mut l = IntLinear::Dense { w };
        let x = Interval::new(0, 63);
        let z = prune(&mut l, x, 9);
        assert!(z > 0);
        for iv in neuron_intervals(&l, x) {
            assert!(iv.bits() <= 9, "{iv:?}");
        }
    }
}
