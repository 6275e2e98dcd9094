//! round: drop low bits before every wide table lookup (fused → fused).
//!
//! With `rounding_bits = R`, every element feeding a `Tlu` whose proven interval needs more
//! than `R` bits is rounded: a `Round` in front drops, per element, the smallest `k` that
//! brings that element's own worst-case interval to `R` bits (each ciphertext has its own
//! table, so per-element rounding costs nothing and keeps the precision a tensor-wide `k`
//! would waste), and the table's affine coefficient `a` is multiplied by `2^k` (exact in
//! f32). Integers the client decrypts are not rounded: decryption reads them whole. This is
//! Concrete ML's `rounding_threshold_bits`, made sound: widths come from proven intervals, not
//! from the calibration set. It changes the function (by design) and needs `bitwidth` first.

use crate::{Changed, Pass, PassContext, PassError, Stage};
use fhec_ir::{Graph, Interval, NodeIndex, Op};
use std::collections::HashMap;

pub struct Round;

/// The smallest `k` such that `round(interval, k)` needs at most `r` bits.
pub fn bits_to_drop(i: Interval, r: u32) -> u32 {
    let mut k = i.bits().saturating_sub(r);
    while i.round_shift(k).bits() > r {
        k += 1;
    }
    k
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
    fn run(&self, g: &mut Graph, cx: &mut PassContext) -> Result<Changed, PassError> {
        if !cx.config.any_rounding() {
            return Ok(Changed::No);
        }
        let mut made: HashMap<(NodeIndex, Vec<u32>), NodeIndex> = HashMap::new();
        let mut count = 0;
        // Rounding a table's input can raise the table's own extremes by a code, so bounds
        // downstream are recomputed before each later decision.
        let mut stale = false;
        for n in g.topo()? {
            if !matches!(g.g[n].op, Op::Tlu(_)) {
                continue;
            }
            if stale {
                cx.bounds = crate::bitwidth::bounds(g, cx)?;
                stale = false;
            }
            let x = g.inputs_of(n)[0];
            // the rounding of the layer whose accumulator feeds the table
            let layer = cx.origin.get(&x).cloned().unwrap_or_default();
            let Some(r) = cx.config.rounding_for(&layer) else {
                continue;
            };
            let Some(b) = cx.bounds.get(&x) else { continue };
            // each element drops just the bits its own worst case needs
            let ks: Vec<u32> = (0..b.len()).map(|i| bits_to_drop(b.at(i), r)).collect();
            if ks.iter().all(|&k| k == 0) {
                continue;
            }
            let bits = if ks.iter().all(|&k| k == ks[0]) {
                vec![ks[0]]
            } else {
                ks.clone()
            };
            let rn = match made.get(&(x, bits.clone())) {
                Some(&rn) => rn,
                None => {
                    let name = format!("{}:round", g.g[x].name);
                    let rn = g.add_op(&name, Op::Round { bits: bits.clone() }, &[x])?;
                    if let Some(o) = cx.origin.get(&x).cloned() {
                        cx.origin.insert(rn, o);
                    }
                    made.insert((x, bits), rn);
                    rn
                }
            };
            if let Op::Tlu(t) = &mut g.g[n].op {
                let len = ks.len();
                let mut a = if t.a.len() == len {
                    t.a.clone()
                } else {
                    vec![t.a[0]; len]
                };
                for (a, &k) in a.iter_mut().zip(&ks) {
                    *a *= (1u64 << k) as f32;
                }
                t.a = if a.iter().all(|v| v.to_bits() == a[0].to_bits()) {
                    vec![a[0]]
                } else {
                    a
                };
            }
            let e = g.g.find_edge(x, n).expect("invariant: x feeds n");
            g.g.remove_edge(e);
            g.g.add_edge(rn, n, 0);
            cx.rounded.insert(rn, ks.iter().copied().max().unwrap_or(0));
            count += 1;
            stale = true;
        }
        cx.log.push(format!(
            "round: {count} table input(s) rounded ({} by default)",
            cx.config
                .rounding_bits
                .map_or("exact".to_string(), |r| format!("{r} bits"))
        ));
        Ok(if count > 0 { Changed::Yes } else { Changed::No })
    }
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
