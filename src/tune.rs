//! `fhec tune`: the cheapest circuit whose validation score stays within a budget of the
//! float model's.
//!
//! The search compiles the model over a grid of global settings (n_bits, rounding bits),
//! plans each compiled program for both rounding methods and for a strict and a loose error
//! probability, and scores every candidate on the validation set: exact rounding in clear
//! mode (which encrypted runs equal bit for bit), approximate rounding and loose error
//! probabilities in simulation (`run_simulated_with`: the approximate-rounding noise and
//! bootstrap failures at the chosen parameters' rate, drawn from `seed`). Cost is the
//! parameter optimizer's estimate of one sample's latency on one thread. The cheapest
//! candidate within `max_drop` points of float wins; the Pareto front (score vs cost) is
//! reported. Deterministic for a given seed.
//!
//! Not searched yet: per-layer precision (settable by hand with `--layer`), table domains
//! sized from calibration (range policy).

use crate::backend::{FheOptions, Rounding};
use crate::compile::{compile_model, CompileOptions, CompiledModel};
use crate::error::{Error, Result};
use crate::model::Model;
use fhec_passes::QuantConfig;
use ndarray::ArrayD;

/// How a candidate is scored on the validation set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// Top-1 accuracy of the first output's argmax against integer class labels.
    Accuracy,
    /// Coefficient of determination of the first output against float targets.
    R2,
}

impl Metric {
    /// The score of `y` (first model output) against `labels`, in percent for accuracy and
    /// in percent of explained variance for R² (so that `max_drop` is in points for both).
    ///
    /// # Errors
    /// Labels that do not match the outputs.
    pub fn score(self, y: &ArrayD<f32>, labels: &ArrayD<f32>) -> Result<f64> {
        let n = y.shape().first().copied().unwrap_or(0);
        if labels.shape().first().copied() != Some(n) || n == 0 {
            return Err(Error::Usage(format!(
                "the labels hold {} rows, the outputs {n}",
                labels.shape().first().copied().unwrap_or(0)
            )));
        }
        match self {
            Metric::Accuracy => {
                let ys: Vec<i64> = labels.iter().map(|&v| v as i64).collect();
                crate::model::accuracy(y, &ys)
                    .map(|a| a * 100.0)
                    .ok_or_else(|| {
                        Error::Usage(
                            "accuracy needs [N, classes] outputs and one label per row".into(),
                        )
                    })
            }
            Metric::R2 => {
                if y.len() != labels.len() {
                    return Err(Error::Usage(format!(
                        "R² needs one target per output value: {} targets for {} outputs",
                        labels.len(),
                        y.len()
                    )));
                }
                Ok(r2(
                    &y.iter().map(|&v| f64::from(v)).collect::<Vec<_>>(),
                    &labels.iter().map(|&v| f64::from(v)).collect::<Vec<_>>(),
                ) * 100.0)
            }
        }
    }
}

/// `1 − SS_res / SS_tot` (1 for a perfect fit, 0 for predicting the mean).
pub fn r2(pred: &[f64], target: &[f64]) -> f64 {
    let n = target.len().max(1) as f64;
    let mean = target.iter().sum::<f64>() / n;
    let ss_tot: f64 = target.iter().map(|t| (t - mean).powi(2)).sum();
    let ss_res: f64 = pred.iter().zip(target).map(|(p, t)| (p - t).powi(2)).sum();
    if ss_tot == 0.0 {
        return if ss_res == 0.0 { 1.0 } else { 0.0 };
    }
    1.0 - ss_res / ss_tot
}

/// What `tune` searches and how it judges.
#[derive(Clone, Debug)]
pub struct TuneOptions {
    pub metric: Metric,
    /// Largest drop below the float score, in points.
    pub max_drop: f64,
    /// Global n_bits tried (inputs, weights and activations).
    pub n_bits: Vec<u32>,
    /// Rounding bits tried (each ≤ n_bits + 2 and ≤ the widest table).
    pub rounding_bits: Vec<u32>,
    /// Per-bootstrap error probabilities tried.
    pub p_errors: Vec<f64>,
    /// Seed of the simulated noise and failures.
    pub seed: u64,
    /// Size limits of the import (`--max-elements`).
    pub limits: fhec_ir::Limits,
}

impl Default for TuneOptions {
    fn default() -> Self {
        Self {
            metric: Metric::Accuracy,
            max_drop: 0.5,
            n_bits: vec![3, 4, 5, 6, 7, 8],
            rounding_bits: vec![4, 5, 6, 7, 8],
            p_errors: vec![2f64.powi(-40), 1e-4],
            seed: 0,
            limits: fhec_ir::Limits::default(),
        }
    }
}

/// One scored candidate.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub n_bits: u32,
    pub rounding_bits: u32,
    pub rounding: Rounding,
    /// The per-bootstrap error probability asked of the optimizer.
    pub p_target: f64,
    /// The one the chosen parameters reach (worst bootstrap).
    pub p_error: f64,
    /// Validation score (percent).
    pub score: f64,
    pub pbs_count: usize,
    pub tlu_bits: u32,
    pub polynomial_size: usize,
    /// The optimizer's estimate of one sample on one thread.
    pub est_ms: f64,
}

/// The outcome of a search.
pub struct Tuned {
    /// The float model's validation score.
    pub float_score: f64,
    /// The least score accepted: float score − the allowed drop.
    pub target: f64,
    /// Every candidate, in search order.
    pub candidates: Vec<Candidate>,
    /// Index into `candidates` of the chosen one.
    pub chosen: usize,
    /// The chosen compiled model, with its FHE settings.
    pub model: CompiledModel,
}

impl Tuned {
    /// Candidates no other beats on both score and cost, cheapest first.
    pub fn pareto(&self) -> Vec<usize> {
        let mut v: Vec<usize> = (0..self.candidates.len()).collect();
        v.sort_by(|&a, &b| by_cost(&self.candidates[a], &self.candidates[b]));
        let mut front = Vec::new();
        let mut best = f64::NEG_INFINITY;
        for i in v {
            if self.candidates[i].score > best {
                best = self.candidates[i].score;
                front.push(i);
            }
        }
        front
    }

    /// Candidates scoring at least the target, in the order `tune` chooses by (the chosen
    /// one first).
    pub fn passing(&self) -> Vec<usize> {
        passing(&self.candidates, self.target)
    }
}

/// Cheapest first, then the better score.
fn by_cost(a: &Candidate, b: &Candidate) -> std::cmp::Ordering {
    a.est_ms
        .total_cmp(&b.est_ms)
        .then(b.score.total_cmp(&a.score))
}

/// Indices of the candidates scoring at least `target`, ordered by [`by_cost`] (stable: on a
/// tie the earlier candidate first).
fn passing(candidates: &[Candidate], target: f64) -> Vec<usize> {
    let mut v: Vec<usize> = (0..candidates.len())
        .filter(|&i| candidates[i].score >= target)
        .collect();
    v.sort_by(|&a, &b| by_cost(&candidates[a], &candidates[b]));
    v
}

/// Searches the settings (see the module docs).
///
/// # Errors
/// Data that does not fit the model; no candidate within the budget (the error gives the
/// best score found).
pub fn tune(
    model: &Model,
    calib: &[ArrayD<f32>],
    val_x: &[ArrayD<f32>],
    val_y: &ArrayD<f32>,
    opts: &TuneOptions,
    mut progress: impl FnMut(usize, usize),
) -> Result<Tuned> {
    let float = model.run_float(val_x)?;
    let first = |ys: &[ArrayD<f32>]| -> Result<ArrayD<f32>> {
        ys.first()
            .cloned()
            .ok_or_else(|| Error::Usage("the model has no output".into()))
    };
    let float_score = opts.metric.score(&first(&float)?, val_y)?;
    let grid: Vec<(u32, u32)> = opts
        .n_bits
        .iter()
        .flat_map(|&n| {
            opts.rounding_bits
                .iter()
                .filter(move |&&r| r <= n + 2 && r <= 8)
                .map(move |&r| (n, r))
        })
        .collect();
    let mut candidates = Vec::new();
    let mut models: Vec<(CompiledModel, usize)> = Vec::new();
    for (i, &(n, r)) in grid.iter().enumerate() {
        progress(i, grid.len());
        // a setting the compiler refuses (accumulator over budget, …) is not a candidate
        let Ok((m, _)) = compile_model(model, calib, &grid_options(n, r, &opts.limits)) else {
            continue;
        };
        let clear_score = opts.metric.score(&first(&m.run_clear(val_x)?)?, val_y)?;
        for rounding in [Rounding::Exact, Rounding::Approximate] {
            for &p_error in &opts.p_errors {
                let fm = m.clone().with_fhe_options(FheOptions {
                    p_error,
                    rounding,
                    ..Default::default()
                });
                let Ok(plan) = fm.plan() else { continue };
                let choice = &plan.choice;
                // exact rounding at a negligible failure rate is clear mode itself
                let score = if rounding == Rounding::Exact && choice.p_error < 1e-9 {
                    clear_score
                } else {
                    let (ys, _) = fm.run_simulated_with(val_x, opts.seed, None)?;
                    opts.metric.score(&first(&ys)?, val_y)?
                };
                candidates.push(Candidate {
                    n_bits: n,
                    rounding_bits: r,
                    rounding,
                    p_target: p_error,
                    p_error: choice.p_error,
                    score,
                    pbs_count: plan.program.pbs_count,
                    tlu_bits: plan.program.tlu_bits,
                    polynomial_size: choice.params.polynomial_size,
                    est_ms: choice.params.est_ms_per_pbs() * plan.program.pbs_count as f64,
                });
                models.push((fm, candidates.len() - 1));
            }
        }
    }
    progress(grid.len(), grid.len());
    let target = float_score - opts.max_drop;
    let chosen = passing(&candidates, target)
        .first()
        .copied()
        .ok_or_else(|| {
            let best = candidates
                .iter()
                .map(|c| c.score)
                .fold(f64::NEG_INFINITY, f64::max);
            Error::Usage(format!(
                "no setting reaches {target:.2} (float {float_score:.2} − {:.2}); the best scored {best:.2}; allow a larger --max-accuracy-drop or try more bits",
                opts.max_drop
            ))
        })?;
    let model = models
        .into_iter()
        .find(|(_, i)| *i == chosen)
        .map(|(m, _)| m)
        .expect("invariant: every candidate has its model");
    Ok(Tuned {
        float_score,
        target,
        candidates,
        chosen,
        model,
    })
}

/// The compiled model of a candidate (for confirming it; `tune` returns the chosen one).
///
/// # Errors
/// As [`compile_model`].
pub fn compile_candidate(
    model: &Model,
    calib: &[ArrayD<f32>],
    c: &Candidate,
    limits: &fhec_ir::Limits,
) -> Result<CompiledModel> {
    let (m, _) = compile_model(
        model,
        calib,
        &grid_options(c.n_bits, c.rounding_bits, limits),
    )?;
    Ok(m.with_fhe_options(FheOptions {
        p_error: c.p_target,
        rounding: c.rounding,
        ..Default::default()
    }))
}

/// The compile options of one grid point: `n_bits` everywhere, rounding to `rounding_bits`.
fn grid_options(n_bits: u32, rounding_bits: u32, limits: &fhec_ir::Limits) -> CompileOptions {
    CompileOptions {
        quant: QuantConfig {
            rounding_bits: Some(rounding_bits),
            ..QuantConfig::with_n_bits(n_bits)
        },
        limits: *limits,
        ..Default::default()
    }
}
