//! Multi-parameter plans: the joint search for a circuit whose exact-rounding bit
//! extractions run on their own parameter set ([`search_circuit`]), and the check of a plan
//! stored with a compiled model ([`verify`]).

use super::error::BackendError;
use super::params::{
    best_ks, best_pbs, circuit_cost, ks_variance, min_var, p_error_of, partition_counts,
    read_variance, search, search_set, vetted_sets, Choice, Constraint, ConstraintKind,
    ExtractParams, FheParams, ParamsError, PlanNoise, Target, Q,
};

/// The cheapest plan for a circuit: one set for every bootstrap, or (when exact rounding
/// extracts bits) a main set for the tables and a second, small set for the 1-bit
/// extractions, connected by keyswitches ([`ExtractParams`]), whichever costs less per sample.
///
/// The two sets are chosen jointly. The main set's noise decides what the extractions read
/// (the accumulator, at `2^(B−j)`), the extraction set's decides what the tables read after
/// the bits are subtracted; the search walks a small grid over how the budget of each
/// extraction read is split (`f`: the share left to the extraction set's keyswitch and
/// modulus switch) and how noisy an extracted bit may be relative to a table output (`ρ`),
/// finds the cheapest main set for each, then the cheapest extraction set that, with that
/// main set, meets every constraint exactly. The grid only steers; every plan returned is
/// checked constraint by constraint with both sets' real variances.
///
/// # Errors
/// [`ParamsError::Infeasible`] when neither form meets the target.
pub fn search_circuit(
    constraints: &[Constraint],
    min_poly_log: u32,
    target: Target,
    max_bsk_bytes: f64,
) -> Result<Choice, ParamsError> {
    let single = search(constraints, min_poly_log, target, max_bsk_bytes);
    let counts = partition_counts(constraints);
    if counts.1 == 0 {
        return single;
    }
    let mut best: Option<(f64, FheParams, ExtractParams)> = None;
    let single_cost = single
        .as_ref()
        .map_or(f64::INFINITY, |c| circuit_cost(&c.params, None, counts));
    let mut tried: Vec<FheParams> = Vec::new();
    for rho in [4f64.powi(2), 4f64.powi(5), 4f64.powi(8)] {
        for f in [0.125f64, 0.5] {
            let main = search_set(min_poly_log, max_bsk_bytes, |cand| {
                constraints.iter().all(|c| {
                    let core = ((c.alpha + c.gamma * rho) * cand.v_pbs() + c.beta * cand.v_fresh())
                        * c.scale
                        * c.scale;
                    match c.kind {
                        k if k.on_second() => {
                            p_error_of(core, c.margin * (1.0 - f).sqrt()) <= target.p_error
                        }
                        ConstraintKind::Decryption => target.meets_variance(core, c),
                        _ => target.meets_variance(core + cand.v_ks() + cand.v_ms(), c),
                    }
                })
            });
            let Some(main) = main else { continue };
            if tried.contains(&main) {
                continue;
            }
            tried.push(main.clone());
            if let Some((main, x)) = search_extract(&main, constraints, target) {
                let cost = circuit_cost(&main, Some(&x), counts);
                if best.as_ref().is_none_or(|b| cost < b.0) {
                    best = Some((cost, main, x));
                }
            }
        }
    }
    match best {
        Some((cost, main, x)) if cost < single_cost => {
            Ok(Choice::new("optimizer".into(), main, Some(x), constraints))
        }
        _ => single,
    }
}

/// The cheapest extraction set for a given main set that meets every constraint, and the
/// main set with its keyswitch re-chosen for the extraction set's big key (where the
/// registers live: [`ExtractParams`]). The main set's keyswitch gets the fewest levels
/// that add no more noise from that key than the main search allowed from its own; the
/// return keyswitch after each table and the extraction set are searched for the least
/// estimated time per sample (`partition_counts` weighs tables against extractions).
pub fn search_extract(
    main: &FheParams,
    constraints: &[Constraint],
    target: Target,
) -> Option<(FheParams, ExtractParams)> {
    let counts = partition_counts(constraints);
    let feasible = |m: &FheParams, x: &ExtractParams| {
        let noise = PlanNoise::of(m, Some(x));
        constraints
            .iter()
            .all(|c| target.meets_variance(noise.read(c), c))
    };
    let allowed = main.v_ks();
    let mut best: Option<(f64, FheParams, ExtractParams)> = None;
    for log_n in 8..=12u32 {
        let big_n = 1usize << log_n;
        for k in 1..=8usize {
            let big = k * big_n;
            if !(MIN_BIG_DIMENSION..=1 << 13).contains(&big) {
                continue;
            }
            // the tables' keyswitch in, from this big key
            let Some(main) = (1..=12).find_map(|l| {
                let b = best_ks(big, main.lwe_dimension, l)?;
                let m = FheParams {
                    ks_base_log: b,
                    ks_level: l,
                    ..main.clone()
                };
                (ks_variance(big, m.lwe_dimension, b, l) <= allowed).then_some(m)
            }) else {
                continue;
            };
            // the tables' keyswitch back: its best base per level depends on k·N only
            let fks: Vec<(usize, usize)> = (1..=8)
                .filter_map(|l| best_ks(main.big_dimension(), big, l).map(|b| (b, l)))
                .collect();
            for n in (MIN_LWE_DIMENSION..=1024).step_by(8) {
                let base = FheParams::secure(n, k, big_n, (1, 1), (1, 1));
                let floor = circuit_cost(
                    &main,
                    Some(&ExtractParams {
                        set: base.clone(),
                        fks_base_log: 1,
                        fks_level: 1,
                    }),
                    counts,
                );
                if best.as_ref().is_some_and(|b| floor >= b.0) {
                    continue;
                }
                for lp in 1..=4 {
                    let Some(p) = best_pbs(&base, lp) else {
                        continue;
                    };
                    for lk in 1..=10 {
                        let Some(kb) = best_ks(big, n, lk) else {
                            continue;
                        };
                        for &(fb, fl) in &fks {
                            let cand = ExtractParams {
                                set: FheParams {
                                    ks_base_log: kb,
                                    ks_level: lk,
                                    ..p.clone()
                                },
                                fks_base_log: fb,
                                fks_level: fl,
                            };
                            let cost = circuit_cost(&main, Some(&cand), counts);
                            if best.as_ref().is_some_and(|b| cost >= b.0) {
                                break;
                            }
                            if feasible(&main, &cand) {
                                best = Some((cost, main.clone(), cand));
                                break;
                            }
                        }
                    }
                }
            }
        }
    }
    best.map(|b| (b.1, b.2))
}

/// Smallest LWE dimension and big-key dimension `k·N` a set may have (the search's floors).
pub const MIN_LWE_DIMENSION: usize = 384;
pub const MIN_BIG_DIMENSION: usize = 256;

impl FheParams {
    /// Why this set is not a secure, well-formed TFHE set, if it is not: dimensions within
    /// the search's range (a power-of-two polynomial of 2^8 to 2^16 coefficients, `k·N` at
    /// most 2^16, `n` at least [`MIN_LWE_DIMENSION`]), decompositions within 64 bits, and
    /// both noises at least what tfhe's lattice-estimator curve asks for 132 bits at these
    /// dimensions (`minimal_lwe_variance_for_132_bits_security_gaussian`).
    pub fn check_secure(&self) -> Result<(), Insecure> {
        let n = self.polynomial_size;
        if !(n.is_power_of_two() && (256..=1 << 16).contains(&n)) {
            return Err(Insecure(format!("polynomial size {n}")));
        }
        // every product in saturating arithmetic: a stored plan may hold any numbers
        if self.glwe_dimension == 0 || self.glwe_dimension.saturating_mul(n) > 1 << 16 {
            return Err(Insecure(format!("GLWE dimension {}", self.glwe_dimension)));
        }
        if !(MIN_LWE_DIMENSION..=1 << 14).contains(&self.lwe_dimension)
            || self.big_dimension() < MIN_BIG_DIMENSION
        {
            return Err(Insecure(format!("LWE dimension {}", self.lwe_dimension)));
        }
        decomposition("bootstrap", self.pbs_base_log, self.pbs_level)?;
        decomposition("keyswitch", self.ks_base_log, self.ks_level)?;
        let floor = |dim: usize| min_var(dim as f64, Q) * (1.0 - 1e-9);
        if !(self.lwe_std.is_finite() && self.lwe_std * self.lwe_std >= floor(self.lwe_dimension)) {
            return Err(Insecure(format!(
                "LWE noise {:e} is below the 132-bit curve at n={}",
                self.lwe_std, self.lwe_dimension
            )));
        }
        if !(self.glwe_std.is_finite()
            && self.glwe_std * self.glwe_std >= floor(self.big_dimension()))
        {
            return Err(Insecure(format!(
                "GLWE noise {:e} is below the 132-bit curve at k·N={}",
                self.glwe_std,
                self.big_dimension()
            )));
        }
        if self.lwe_std >= 0.25 || self.glwe_std >= 0.25 {
            return Err(Insecure("noise of a quarter torus or more".into()));
        }
        Ok(())
    }
}

/// A gadget decomposition within 64 bits: `level ≥ 1` digits of `base_log ≥ 1` bits
/// (saturating: a stored plan may hold any numbers).
fn decomposition(what: &str, base_log: usize, level: usize) -> Result<(), Insecure> {
    if base_log == 0 || level == 0 || base_log.saturating_mul(level) > 64 {
        return Err(Insecure(format!("{what} decomposition {level}x{base_log}")));
    }
    Ok(())
}

/// Why a parameter set is not a secure, well-formed TFHE set (what is out of range).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Insecure(pub String);

/// Checks a stored plan against a circuit's constraints instead of searching again: every set
/// well-formed and secure ([`FheParams::check_secure`]; a vetted set must be tfhe's own),
/// room for `p`-bit tables, and every constraint meeting `target` under the sets' real
/// variances. Returns the plan's statistics recomputed.
///
/// # Errors
/// The first reason the plan is refused.
pub fn verify(
    stored: &Choice,
    constraints: &[Constraint],
    p: u32,
    target: Target,
) -> Result<Choice, BackendError> {
    let refused = |reason: String| BackendError::StoredParams { reason };
    let main = &stored.params;
    if stored.source == "optimizer" {
        main.check_secure()
            .map_err(|e| refused(format!("table set: {e}")))?;
    } else if !vetted_sets()
        .iter()
        .any(|(name, _, v)| *name == stored.source && v == main)
    {
        return Err(refused(format!(
            "`{}` is not a tfhe vetted set",
            stored.source
        )));
    }
    if let Some(x) = &stored.extract {
        x.set
            .check_secure()
            .map_err(|e| refused(format!("bit-extraction set: {e}")))?;
        decomposition("tables' return keyswitch", x.fks_base_log, x.fks_level)
            .map_err(|e| refused(e.0))?;
    }
    // every set that reads tables holds one box per table entry
    let holds_tables = |what: &str, s: &FheParams| {
        if s.polynomial_size < 1 << p.min(16) {
            return Err(refused(format!(
                "{what}polynomial size {} holds fewer than the 2^{p} table boxes",
                s.polynomial_size
            )));
        }
        Ok(())
    };
    holds_tables("", main)?;
    if let Some(x) = stored.extract.as_ref().filter(|_| stored.light_tables) {
        holds_tables("the light tables' ", &x.set)?;
    }
    let x = stored.extract.as_ref();
    if let Some(c) = constraints
        .iter()
        .find(|c| !target.meets_variance(read_variance(main, x, c), c))
    {
        return Err(refused(format!(
            "the {} at `{}` fails p_error {:.1e} (predicted {:.1e})",
            c.kind,
            c.at,
            target.p_error,
            p_error_of(read_variance(main, x, c), c.margin)
        )));
    }
    Ok(Choice::new(
        stored.source.clone(),
        main.clone(),
        stored.extract.clone(),
        constraints,
    ))
}
