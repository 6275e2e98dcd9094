//! `fhec tune`: the cheapest circuit whose validation score stays within a budget of the
//! float model's.
//!
//! Phase 1 compiles the model over a grid of global settings (n_bits, rounding bits, range
//! policy; for a model that quantizes itself, its own grids and `requantize`), plans each compiled program for both rounding methods and for a strict and a
//! loose error probability, and scores every candidate on the validation set: exact
//! rounding in clear mode (which encrypted runs equal bit for bit), approximate rounding and
//! loose error probabilities in simulation (`run_simulated_with`: the approximate-rounding
//! noise and bootstrap failures at the chosen parameters' rate; the mean of three draws from
//! `seed`, `seed + 1`, `seed + 2`). Cost is the parameter optimizer's estimate of one
//! sample's latency on one thread.
//!
//! A candidate *passes* when its estimated drop below float on unseen inputs is within
//! `max_drop` points. A validation half of a few hundred samples cannot resolve a drop of
//! half a point (one sample is 0.3–1.4 points on the shipped splits, and a choice made at
//! the edge of such a score is partly noise), so the estimate pairs what needs no labels
//! with what does. For a classifier, every observed output error (candidate − float, on
//! every input tune has: calibration and validation) is added to every validation input's
//! float scores; the accuracy that costs against the input's label (losses minus gains,
//! `paired_estimates`) is the *paired drop*. It resolves drops far below one input in a
//! few hundred, a near tie float is as often wrong as right on costs nothing, and it uses
//! validation inputs' margins (unseen-like: calibration inputs come from training data,
//! where the network is surer of itself). The estimate is the largest of [`ESTIMATE_SAFETY`]
//! × the paired drop, the paired disagreement rate (how often the top class moves, label
//! or not: a disagreement costs at most one sample, and on a validation half where float is
//! often wrong, gains hide losses that unseen inputs, on which float may be surer, would
//! not) and the observed disagreement rate on every input (the pairing assumes errors that
//! do not depend on the input; where a few inputs have both small margins and large errors,
//! the count is higher than the pairing and wins), from the worst simulated draw. For R² it
//! is the larger of the observed drop and [`ESTIMATE_SAFETY`] × the mean squared difference
//! from float's outputs over every input, in points of the targets' variance.
//!
//! Beside it every candidate carries a 95 % upper confidence bound on its drop (two exact
//! binomial bounds at 97.5 %, the smaller wins: on the validation samples float gets right
//! and the candidate gets wrong, and on the inputs where the two disagree), its agreement
//! with float, its paired disagreement rate, and the margin `max_drop` − estimate. The bound
//! is reported, not required: with 380 inputs and no disagreement at all it is still 0.97
//! points.
//!
//! Phase 1b runs when no setting of the grid passes (a network whose float decisions need
//! more than the grid's uniform bits somewhere, such as attention's products): from the
//! settings of the candidate with the lowest estimate it raises precision one step at a
//! time with compile's moves ([`crate::compile::auto`]: every layer's weights and
//! activations, one layer's operands, one layer's rounding). Each step ranks every move by
//! its clear-mode estimate (noise-free, so the climb follows precision, not a draw's luck),
//! scores the best two in full (every rounding method and error probability) and goes on
//! from the best; it stops when a candidate passes, when no move lowers the clear-mode
//! estimate, or after [`TuneOptions::raise_steps`]. Only then does tune refuse.
//!
//! Phase 2 starts from the cheapest passing candidate and walks the layers (in
//! `layer_names` order): for each, one bit less for its weights, its input activations and
//! its rounding is kept when the candidate still passes and the estimate drops. The
//! cheapest passing candidate wins; the Pareto front (score vs cost) is reported.
//! Deterministic for a given seed.

use crate::artifact::CompiledModel;
use crate::backend::{FheOptions, Rounding};
use crate::compile::quantize_model;
use crate::error::{Error, Result, TuneError};
use crate::model::Model;
use fhec_passes::{LayerPrecision, QuantConfig, RangePolicy};
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
            return Err(Error::Labels {
                reason: format!(
                    "the labels hold {} rows, the outputs {n}",
                    labels.shape().first().copied().unwrap_or(0)
                ),
            });
        }
        match self {
            Metric::Accuracy => {
                // class indices only: a float target truncated to a "class" scores nonsense
                if let Some((i, v)) = labels
                    .iter()
                    .enumerate()
                    .find(|(_, v)| !v.is_finite() || v.fract() != 0.0 || **v < 0.0)
                {
                    return Err(Error::Labels {
                        reason: format!(
                            "accuracy needs class indices as labels, label {i} is {v}; for \
                             regression targets pass --metric r2"
                        ),
                    });
                }
                let ys: Vec<i64> = labels.iter().map(|&v| v as i64).collect();
                crate::model::accuracy(y, &ys)
                    .map(|a| a * 100.0)
                    .ok_or_else(|| Error::Labels {
                        reason: format!(
                            "accuracy needs [N, classes] outputs and one class label per row, \
                             got outputs {:?} and labels {:?}; for regression targets pass \
                             --metric r2",
                            y.shape(),
                            labels.shape()
                        ),
                    })
            }
            Metric::R2 => {
                if y.len() != labels.len() {
                    return Err(Error::Labels {
                        reason: format!(
                            "R² needs one target per output value: {} targets for {} outputs",
                            labels.len(),
                            y.len()
                        ),
                    });
                }
                Ok(r2(
                    &y.iter().map(|&v| f64::from(v)).collect::<Vec<_>>(),
                    &labels.iter().map(|&v| f64::from(v)).collect::<Vec<_>>(),
                ) * 100.0)
            }
        }
    }
}

impl Metric {
    /// Per-sample contributions whose mean is [`Metric::score`]: 100 for a correct class and
    /// 0 otherwise (accuracy), `100·(1 − n·e²/SS_tot)` summed over a sample's outputs (R²).
    ///
    /// # Errors
    /// As [`Metric::score`].
    pub fn per_sample(self, y: &ArrayD<f32>, labels: &ArrayD<f32>) -> Result<Vec<f64>> {
        self.score(y, labels)?;
        let n = y.shape()[0];
        Ok(match self {
            Metric::Accuracy => {
                // score() checked: class labels, one per row; [N] / [N, 1] outputs are the
                // class itself
                let classes = y.len() / n.max(1);
                let flat: Vec<f32> = y.iter().copied().collect();
                flat.chunks(classes.max(1))
                    .zip(labels.iter())
                    .map(|(row, &l)| {
                        let pred = if classes == 1 {
                            row[0].round() as i64
                        } else {
                            crate::model::argmax(row.iter()) as i64
                        };
                        if pred == l as i64 {
                            100.0
                        } else {
                            0.0
                        }
                    })
                    .collect()
            }
            Metric::R2 => {
                let t: Vec<f64> = labels.iter().map(|&v| f64::from(v)).collect();
                let p: Vec<f64> = y.iter().map(|&v| f64::from(v)).collect();
                let mean = t.iter().sum::<f64>() / t.len().max(1) as f64;
                let ss_tot: f64 = t.iter().map(|v| (v - mean).powi(2)).sum::<f64>().max(1e-30);
                let per = t.len() / n.max(1);
                (0..n)
                    .map(|i| {
                        let e2: f64 = (i * per..(i + 1) * per)
                            .map(|j| (p[j] - t[j]).powi(2))
                            .sum();
                        100.0 * (1.0 / n as f64 - e2 / ss_tot) * n as f64
                    })
                    .collect()
            }
        })
    }
}

/// Upper 97.5 % confidence bound on the mean of `d` (normal approximation), its variance
/// floored at one sample of `floor` among them: a validation set on which every difference
/// is 0 says the drop is small, not that it is 0.
fn upper_bound(d: &[f64], floor: f64) -> f64 {
    let n = d.len().max(1) as f64;
    let mean = d.iter().sum::<f64>() / n;
    let var = d.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    let var = var.max(floor * floor / n);
    mean + Z * (var / n).sqrt()
}

/// Exact (Clopper–Pearson) upper 97.5 % bound on a rate of `k` in `n`, in points: the `p`
/// at which `k` or fewer in `n` has probability 2.5 %.
pub fn rate_upper_bound(k: usize, n: usize) -> f64 {
    if n == 0 || k >= n {
        return 100.0;
    }
    // P(X ≤ k) for X ~ Binomial(n, p), summed in log space
    let cdf = |p: f64| -> f64 {
        let (lp, lq) = (p.ln(), (-p).ln_1p());
        let mut log_c = 0.0; // ln C(n, i)
        let mut sum = 0.0;
        for i in 0..=k {
            if i > 0 {
                log_c += ((n - i + 1) as f64).ln() - (i as f64).ln();
            }
            sum += (log_c + i as f64 * lp + (n - i) as f64 * lq).exp();
        }
        sum
    };
    let (mut lo, mut hi) = (k as f64 / n as f64, 1.0);
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if cdf(mid) > ALPHA {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    100.0 * hi
}

/// One-sided 97.5 % normal quantile: each of the two bounds at 97.5 %, so that the smaller
/// holds at 95 %.
const Z: f64 = 1.96;
/// The tail each bound leaves (one-sided).
const ALPHA: f64 = 0.025;

/// How much the paired drop (`paired_estimates`) is raised before it is compared with the
/// budget. The pairing treats errors as if they did not depend on the input; they do (an
/// input near a decision boundary tends to sit where the quantized network errs most), and
/// on the shipped QAT digits network at 3 bits with 5-6 rounding bits it read 0.4–0.6 %
/// where a held-out half lost 1.7–2.2 %. Doubling it is what keeps tune's choices within a
/// point of float on unseen data (docs/results.md, "Tune on unseen data").
pub const ESTIMATE_SAFETY: f64 = 2.0;

/// What adding every observed output error to every validation input's float scores does,
/// over every (input, error) pair, in points: how often the top class moves (the paired
/// disagreement rate) and how much accuracy that costs against the input's label (losses
/// minus gains: the paired drop). Smooth estimates where counting on a few hundred inputs
/// can only say 0 or 0.3 %, and a near tie on which float is as often wrong as right costs
/// nothing on average. `float_val` are float's `[N, classes]` scores on the validation
/// inputs, `labels` their classes; `errors` are the candidate's output minus float's on
/// every input.
fn paired_estimates(float_val: &[Vec<f32>], labels: &[usize], errors: &[Vec<f32>]) -> (f64, f64) {
    if float_val.is_empty() || errors.is_empty() {
        return (0.0, 0.0);
    }
    // at most ~2^20 pairs: every k-th error on large sets
    let step = (float_val.len() * errors.len()).div_ceil(1 << 20).max(1);
    let (mut flips, mut lost, mut pairs) = (0usize, 0i64, 0usize);
    for (f, &y) in float_val.iter().zip(labels) {
        let top = crate::model::argmax(f.iter());
        for e in errors.iter().step_by(step) {
            let mut moved = (0, f32::NEG_INFINITY);
            for (i, (a, b)) in f.iter().zip(e).enumerate() {
                if a + b > moved.1 {
                    moved = (i, a + b);
                }
            }
            if moved.0 != top {
                flips += 1;
                lost += i64::from(top == y) - i64::from(moved.0 == y);
            }
            pairs += 1;
        }
    }
    let pairs = pairs as f64;
    (100.0 * flips as f64 / pairs, 100.0 * lost as f64 / pairs)
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

/// Simulated draws averaged per candidate (seeds `seed`, `seed + 1`, …).
const SIM_DRAWS: u64 = 3;

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
    /// Range policies tried.
    pub ranges: Vec<RangePolicy>,
    /// Whether phase 2 (per-layer precision) runs.
    pub per_layer: bool,
    /// When no setting of the grid passes: steps up in precision tried from the one with
    /// the lowest estimate (0: refuse at once).
    pub raise_steps: usize,
    /// Seed of the simulated noise and failures.
    pub seed: u64,
    /// Size limits of the import (`--max-elements`).
    pub limits: fhec_ir::Limits,
}

impl TuneOptions {
    /// Refuses a search no candidate can come out of, naming the setting.
    ///
    /// # Errors
    /// A negative or non-finite drop; bits outside [2, 16]; an empty list.
    pub fn validate(&self) -> std::result::Result<(), crate::backend::SettingError> {
        let bad =
            |flag: &'static str, reason: String| crate::backend::SettingError { flag, reason };
        if !(self.max_drop >= 0.0 && self.max_drop.is_finite()) {
            return Err(bad(
                "--max-accuracy-drop",
                format!(
                    "must be a non-negative number of points, got {}",
                    self.max_drop
                ),
            ));
        }
        for (flag, list) in [
            ("--n-bits", &self.n_bits),
            ("--rounding-bits", &self.rounding_bits),
        ] {
            if list.is_empty() {
                return Err(bad(flag, "give at least one value to try".into()));
            }
            if let Some(b) = list.iter().find(|b| !(2..=16).contains(*b)) {
                return Err(bad(flag, format!("takes values in [2, 16], got {b}")));
            }
        }
        if self.ranges.is_empty() {
            return Err(bad(
                "--ranges",
                "give at least one range policy to try".into(),
            ));
        }
        if let Some(p) = self.p_errors.iter().find(|p| !(**p > 0.0 && **p < 1.0)) {
            return Err(bad("--p-error", format!("{p} is outside (0, 1)")));
        }
        Ok(())
    }
}

impl Default for TuneOptions {
    fn default() -> Self {
        Self {
            metric: Metric::Accuracy,
            max_drop: 0.5,
            n_bits: vec![3, 4, 5, 6, 7, 8],
            rounding_bits: vec![4, 5, 6, 7, 8],
            p_errors: vec![2f64.powi(-40), 1e-4],
            ranges: vec![RangePolicy::Calibrated, RangePolicy::Proven],
            per_layer: true,
            raise_steps: 8,
            seed: 0,
            limits: fhec_ir::Limits::default(),
        }
    }
}

/// One scored candidate.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub n_bits: u32,
    /// Compiled on the model's own quantization grids (a self-quantized model without
    /// `requantize`): `n_bits` then applies to its float parts only.
    pub own_grids: bool,
    pub rounding_bits: u32,
    /// The whole quantization config (range policy and per-layer overrides included).
    pub config: QuantConfig,
    pub rounding: Rounding,
    /// The per-bootstrap error probability asked of the optimizer.
    pub p_target: f64,
    /// The one the chosen parameters reach (worst bootstrap).
    pub p_error: f64,
    /// Validation score (percent).
    pub score: f64,
    /// 95 % upper confidence bound on the drop below float, points (see the module docs).
    pub drop_bound: f64,
    /// The drop a candidate passes by, points: for a classifier the largest of
    /// [`ESTIMATE_SAFETY`] × its paired drop, its paired disagreement rate and its observed
    /// disagreement rate (1 − `agreement`); for R² the larger of its validation drop and the
    /// scaled squared difference (see the module docs).
    pub drop_estimate: f64,
    /// Agreement of the candidate's predictions with float's on the calibration and
    /// validation inputs (classifiers; the worst draw's).
    pub agreement: Option<f64>,
    /// The paired estimate of its disagreement rate with float on unseen inputs, points
    /// (classifiers; [`ESTIMATE_SAFETY`] times it counts in `drop_estimate`).
    pub paired: Option<f64>,
    pub pbs_count: usize,
    pub tlu_bits: u32,
    pub polynomial_size: usize,
    /// The optimizer's estimate of one sample on one thread.
    pub est_ms: f64,
}

impl Candidate {
    /// Its global bit widths as `fhec compile` flags: `--n-bits N`, and the weights' and
    /// activations' own when a raise (phase 1b) moved them apart from the inputs'.
    pub fn n_bits_flags(&self) -> String {
        n_bits_flags(&self.config)
    }

    /// Its per-layer precision as `fhec compile` flags (` --layer NAME=w4,i4,r5` each).
    pub fn layer_flags(&self) -> String {
        layer_flags(&self.config)
    }

    /// The candidate as the fronts show it (`tune --json`, Python's `fhec.tune`): its
    /// settings by the CLI's names, its score, bound and cost.
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "n_bits": self.n_bits,
            "n_bits_flags": self.n_bits_flags(),
            "own_grids": self.own_grids,
            "requantize": self.config.requantize,
            "rounding_bits": self.rounding_bits,
            "ranges": self.config.ranges.name(),
            "layers": self.config.layers.iter().map(|(n, l)| format!("{n}={}", l.spec())).collect::<Vec<_>>(),
            "rounding": self.rounding.name(),
            "p_error": self.p_error,
            "score": self.score,
            "drop_bound": self.drop_bound,
            "drop_estimate": self.drop_estimate,
            "agreement": self.agreement,
            "paired": self.paired,
            "pbs_count": self.pbs_count,
            "tlu_bits": self.tlu_bits,
            "polynomial_size": self.polynomial_size,
            "est_ms": self.est_ms,
        })
    }
}

/// A config's global bit widths as `fhec compile` flags (see [`Candidate::n_bits_flags`]).
fn n_bits_flags(c: &QuantConfig) -> String {
    let mut f = format!("--n-bits {}", c.n_bits_inputs);
    if c.n_bits_weights != c.n_bits_inputs {
        f += &format!(" --n-bits-weights {}", c.n_bits_weights);
    }
    if c.n_bits_activations != c.n_bits_inputs {
        f += &format!(" --n-bits-activations {}", c.n_bits_activations);
    }
    f
}

/// A config's per-layer precision as `fhec compile` flags (see [`Candidate::layer_flags`]).
fn layer_flags(c: &QuantConfig) -> String {
    c.layers
        .iter()
        .map(|(n, l)| format!(" --layer {n}={}", l.spec()))
        .collect()
}

/// The outcome of a search.
pub struct Tuned {
    /// The float model's validation score.
    pub float_score: f64,
    /// Float score − the allowed drop (for display: a candidate passes by its bound).
    pub target: f64,
    /// The allowed drop, points.
    pub max_drop: f64,
    /// Every candidate, in search order.
    pub candidates: Vec<Candidate>,
    /// Index into `candidates` of the chosen one.
    pub chosen: usize,
    /// The chosen compiled model, with its FHE settings.
    pub model: CompiledModel,
}

impl Tuned {
    /// Candidates no other beats on both estimated drop and cost, cheapest first (what tune
    /// trades: each is the cheapest way to its estimate).
    pub fn pareto(&self) -> Vec<usize> {
        let mut v: Vec<usize> = (0..self.candidates.len()).collect();
        v.sort_by(|&a, &b| {
            let (a, b) = (&self.candidates[a], &self.candidates[b]);
            a.est_ms
                .total_cmp(&b.est_ms)
                .then(a.drop_estimate.total_cmp(&b.drop_estimate))
        });
        // (the chosen candidate may tie another on cost and lose on the estimate: tune
        // breaks cost ties by score; the CLI prints it beside the front)
        let mut front = Vec::new();
        let mut best = f64::INFINITY;
        for i in v {
            if self.candidates[i].drop_estimate < best {
                best = self.candidates[i].drop_estimate;
                front.push(i);
            }
        }
        front
    }

    /// Candidates whose estimated drop is within the budget, in the order `tune` chooses by
    /// (the chosen one first).
    pub fn passing(&self) -> Vec<usize> {
        passing(&self.candidates, self.max_drop)
    }

    /// The budget the chosen candidate leaves: the allowed drop minus its bound, points.
    pub fn margin(&self) -> f64 {
        self.max_drop - self.candidates[self.chosen].drop_estimate
    }
}

/// Cheapest first, then the better score.
fn by_cost(a: &Candidate, b: &Candidate) -> std::cmp::Ordering {
    a.est_ms
        .total_cmp(&b.est_ms)
        .then(b.score.total_cmp(&a.score))
}

/// Indices of the candidates whose drop bound is within `max_drop`, ordered by
/// [`by_cost`] (stable: on a tie the earlier candidate first).
fn passing(candidates: &[Candidate], max_drop: f64) -> Vec<usize> {
    let mut v: Vec<usize> = (0..candidates.len())
        .filter(|&i| candidates[i].drop_estimate <= max_drop)
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
    let float_score = opts.metric.score(first(&float)?, val_y)?;
    let float_samples = opts.metric.per_sample(first(&float)?, val_y)?;
    // float's outputs on every input tune has, for the label-free estimate and bound
    let float_val = first(&float)?.clone();
    let float_calib = if calib.is_empty() {
        None
    } else {
        Some(first(&model.run_float(calib)?)?.clone())
    };
    // classifiers: [N, classes] scores on both sets
    let classifier = opts.metric == Metric::Accuracy
        && predictions(&float_val).is_some()
        && float_calib
            .as_ref()
            .is_none_or(|c| predictions(c).is_some());
    let label_var = {
        let t: Vec<f64> = val_y.iter().map(|&v| f64::from(v)).collect();
        let mean = t.iter().sum::<f64>() / t.len().max(1) as f64;
        t.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / t.len().max(1) as f64
    };
    // a model that quantizes itself is tried on its own grids and requantized on fhec's
    // (`--requantize`): an int8 model has an exact plan only requantized, and fewer bits
    // than its own may pass the budget
    let own_grids = model.graph.carries_grids();
    let requantize: &[bool] = if own_grids { &[false, true] } else { &[false] };
    let grid: Vec<QuantConfig> = opts
        .n_bits
        .iter()
        .flat_map(|&n| {
            opts.rounding_bits
                .iter()
                .filter(move |&&r| r <= n + 2 && r <= 8)
                .flat_map(move |&r| {
                    opts.ranges.iter().flat_map(move |&ranges| {
                        requantize.iter().map(move |&requantize| QuantConfig {
                            rounding_bits: Some(r),
                            ranges,
                            requantize,
                            ..QuantConfig::with_n_bits(n)
                        })
                    })
                })
        })
        .collect();
    let target = float_score - opts.max_drop;
    let float_rows = if classifier {
        rows(&float_val)
            .chain(float_calib.iter().flat_map(rows))
            .collect()
    } else {
        Vec::new()
    };
    let mut s = Search {
        model,
        calib,
        val_x,
        val_y,
        opts,
        float_samples,
        float_score,
        float_val,
        float_calib,
        classifier,
        float_rows,
        label_var,
        val_classes: if classifier {
            val_y.iter().map(|&v| v as usize).collect()
        } else {
            Vec::new()
        },
        candidates: Vec::new(),
        models: Vec::new(),
    };
    for (i, cfg) in grid.iter().enumerate() {
        progress(i, grid.len());
        s.score(cfg, None)?;
    }
    progress(grid.len(), grid.len());
    let raised = if passing(&s.candidates, opts.max_drop).is_empty() {
        s.raise(&mut progress)?
    } else {
        None
    };
    let no_candidate = |candidates: &[Candidate]| {
        let best = candidates
            .iter()
            .map(|c| c.drop_estimate)
            .fold(f64::INFINITY, f64::min);
        Error::from(TuneError::NoCandidate {
            float: float_score,
            drop: opts.max_drop,
            best,
            raised: raised.as_ref().map_or(String::new(), |(e, cfg)| {
                format!(
                    " (raising precision, clear mode alone reached {e:.2} at {}{})",
                    n_bits_flags(cfg),
                    layer_flags(cfg)
                )
            }),
        })
    };
    let mut chosen = passing(&s.candidates, opts.max_drop)
        .first()
        .copied()
        .ok_or_else(|| no_candidate(&s.candidates))?;
    if opts.per_layer {
        // one bit less per layer, kept while the score passes and the estimate drops
        let layers = fhec_passes::quantize::layer_names(&model.graph);
        for (li, layer) in layers.iter().enumerate() {
            progress(li, layers.len());
            let base = &s.candidates[chosen];
            let c = &base.config;
            let less = |b: u32, lo: u32| b.saturating_sub(1).max(lo);
            // the bits the layer has (a decrypted layer's are more than `weight_bits` says)
            let wbits = s.models[chosen]
                .report()
                .layers
                .iter()
                .find(|r| &r.layer == layer)
                .and_then(|r| r.precision)
                .map_or_else(|| c.weight_bits(layer), |p| p.0);
            let mut cfg = c.clone();
            cfg.layers.insert(
                layer.clone(),
                LayerPrecision {
                    weight_bits: Some(less(wbits, 2)),
                    input_bits: Some(less(c.input_bits(layer), 2)),
                    rounding_bits: c.rounding_for(layer).map(|r| less(r, 1)),
                },
            );
            let only = (base.rounding, base.p_target);
            s.score(&cfg, Some(only))?;
            // the next layer starts from the best so far (cheapest passing, then best score)
            chosen = passing(&s.candidates, opts.max_drop)[0];
        }
        progress(layers.len(), layers.len());
    }
    let model = s.models.swap_remove(chosen);
    Ok(Tuned {
        float_score,
        target,
        max_drop: opts.max_drop,
        candidates: s.candidates,
        chosen,
        model,
    })
}

/// A model's first output (the one scored).
fn first(ys: &[ArrayD<f32>]) -> Result<&ArrayD<f32>> {
    ys.first().ok_or_else(|| TuneError::NoOutput.into())
}

/// The search state: what is scored against, and what was scored.
struct Search<'a> {
    model: &'a Model,
    calib: &'a [ArrayD<f32>],
    val_x: &'a [ArrayD<f32>],
    val_y: &'a ArrayD<f32>,
    opts: &'a TuneOptions,
    /// Float's per-sample scores on the validation set.
    float_samples: Vec<f64>,
    float_score: f64,
    /// Float's first output on the validation and (when given) the calibration inputs.
    float_val: ArrayD<f32>,
    float_calib: Option<ArrayD<f32>>,
    /// Both are `[N, classes]` scores and the metric is accuracy.
    classifier: bool,
    /// Classifiers: float's score rows on the validation inputs, then the calibration ones.
    float_rows: Vec<Vec<f32>>,
    /// The validation targets' variance (R²'s denominator per sample).
    label_var: f64,
    /// The validation labels as classes (classifiers).
    val_classes: Vec<usize>,
    candidates: Vec<Candidate>,
    /// The compiled model of each candidate, in the same order.
    models: Vec<CompiledModel>,
}

impl Search<'_> {
    /// `cfg` compiled and run in clear mode on the validation (and calibration) inputs;
    /// `None` when the compiler refuses the setting.
    fn compile_clear(&self, cfg: &QuantConfig) -> Result<Option<(CompiledModel, Draw)>> {
        let Ok(m) = quantize_model(self.model, self.calib, cfg) else {
            return Ok(None);
        };
        let v = m.run_clear(self.val_x)?;
        let c = match &self.float_calib {
            Some(_) => Some(m.run_clear(self.calib)?),
            None => None,
        };
        Ok(Some((m, (v, c))))
    }

    /// Compiles `cfg` and scores it for every rounding method and error probability (or just
    /// `only`), adding a candidate for each (a setting the compiler or the optimizer refuses
    /// is not a candidate).
    fn score(&mut self, cfg: &QuantConfig, only: Option<(Rounding, f64)>) -> Result<()> {
        match self.compile_clear(cfg)? {
            Some((m, clear)) => self.score_compiled(cfg, &m, &clear, only),
            None => Ok(()),
        }
    }

    /// [`Search::score`] on `cfg` already compiled (`m`) and run in clear mode (`clear`).
    fn score_compiled(
        &mut self,
        cfg: &QuantConfig,
        m: &CompiledModel,
        (clear_val, clear_calib): &Draw,
        only: Option<(Rounding, f64)>,
    ) -> Result<()> {
        let settings: Vec<(Rounding, f64)> = match only {
            Some(o) => vec![o],
            None => [Rounding::Exact, Rounding::Approximate]
                .into_iter()
                .flat_map(|r| self.opts.p_errors.iter().map(move |&p| (r, p)))
                .collect(),
        };
        for (rounding, p_error) in settings {
            let Ok(fm) = m.with_fhe_options(FheOptions {
                p_error,
                rounding,
                ..Default::default()
            }) else {
                continue;
            };
            let plan = fm.plan()?;
            let choice = &plan.choice;
            // exact rounding at a negligible failure rate is clear mode itself; otherwise a
            // few seeded draws of the simulation (one draw's luck on a small validation set
            // is worth a sample or two)
            let draws: Vec<Draw> = if rounding == Rounding::Exact && choice.p_error < 1e-9 {
                vec![(clear_val.clone(), clear_calib.clone())]
            } else {
                (0..SIM_DRAWS)
                    .map(|d| {
                        let seed = self.opts.seed.wrapping_add(d);
                        let v = fm.run_simulated_with(self.val_x, seed, None)?.0;
                        let c = match &clear_calib {
                            Some(_) => Some(fm.run_simulated_with(self.calib, seed, None)?.0),
                            None => None,
                        };
                        Ok((v, c))
                    })
                    .collect::<Result<_>>()?
            };
            let j = self.judge(&draws)?;
            self.candidates.push(Candidate {
                n_bits: cfg.n_bits_weights,
                own_grids: !cfg.requantize && self.model.graph.carries_grids(),
                rounding_bits: cfg.rounding_bits.unwrap_or(0),
                config: cfg.clone(),
                rounding,
                p_target: p_error,
                p_error: choice.p_error,
                score: j.score,
                drop_bound: j.drop_bound,
                drop_estimate: j.drop_estimate,
                agreement: j.agreement,
                paired: j.paired,
                pbs_count: plan.program.pbs_count,
                tlu_bits: plan.program.tlu_bits,
                polynomial_size: choice.params.polynomial_size,
                est_ms: choice.est_ms,
            });
            self.models.push(fm);
        }
        Ok(())
    }
}

impl Search<'_> {
    /// Phase 1b, when no setting of the grid passes (see the module docs): climbs from the
    /// settings of the candidate with the lowest estimate, one move at a time, to the move
    /// with the lowest clear-mode estimate (every move ranked in parallel); the best two
    /// moves of each step are scored in full (every rounding method and error
    /// probability). Stops when a candidate passes, when no move lowers the clear-mode
    /// estimate, or after `raise_steps`. Returns the lowest clear-mode estimate reached and
    /// its settings (`None`: no step taken).
    fn raise(
        &mut self,
        progress: &mut impl FnMut(usize, usize),
    ) -> Result<Option<(f64, QuantConfig)>> {
        use crate::compile::auto::{apply, Move};
        use rayon::prelude::*;
        let Some(start) = (0..self.candidates.len()).min_by(|&a, &b| {
            let (x, y) = (&self.candidates[a], &self.candidates[b]);
            x.drop_estimate
                .total_cmp(&y.drop_estimate)
                .then(by_cost(x, y))
        }) else {
            return Ok(None);
        };
        let moves = Move::all(&fhec_passes::quantize::layer_names(&self.model.graph));
        let mut cfg = self.candidates[start].config.clone();
        // the compiled model `apply` reads each layer's bits from, and the climb's clear-mode
        // estimate
        let Some((mut at, draw)) = self.compile_clear(&cfg)? else {
            return Ok(None);
        };
        let mut clear = self.judge(std::slice::from_ref(&draw))?.drop_estimate;
        let mut reached = None;
        for step in 0..self.opts.raise_steps {
            if !passing(&self.candidates, self.opts.max_drop).is_empty() {
                break;
            }
            progress(step, self.opts.raise_steps);
            let this = &*self;
            // each move compiled once: ranked by its clear-mode estimate, the best two then
            // scored from the same compiled model and clear runs
            let mut ranked: Vec<(f64, QuantConfig, CompiledModel, Draw)> = moves
                .par_iter()
                .filter_map(|mv| {
                    let c = apply(&cfg, mv, &at)?;
                    let (m, draw) = this.compile_clear(&c).ok()??;
                    let e = this.judge(std::slice::from_ref(&draw)).ok()?.drop_estimate;
                    (e < clear).then_some((e, c, m, draw))
                })
                .collect();
            ranked.sort_by(|a, b| a.0.total_cmp(&b.0));
            ranked.truncate(2);
            for (_, c, m, draw) in &ranked {
                self.score_compiled(c, m, draw, None)?;
            }
            let Some((e, next, next_model, _)) = ranked.into_iter().next() else {
                break;
            };
            (clear, cfg, at) = (e, next, next_model);
            reached = Some((clear, cfg.clone()));
        }
        progress(self.opts.raise_steps, self.opts.raise_steps);
        Ok(reached)
    }
}

/// What a candidate's draws say about its drop below float.
struct Judgement {
    /// Mean validation score over the draws.
    score: f64,
    /// 95 % upper confidence bound on the drop (points).
    drop_bound: f64,
    /// The drop passing is judged by (points).
    drop_estimate: f64,
    /// Worst draw's agreement with float on every input (classifiers).
    agreement: Option<f64>,
    /// Worst draw's paired disagreement estimate, points (classifiers).
    paired: Option<f64>,
}

impl Search<'_> {
    /// Scores a candidate's draws against float (see the module docs). Every figure takes
    /// the worst draw: one lucky draw of the approximate-rounding noise must not carry a
    /// candidate. Without `[N, classes]` outputs an accuracy's bound is the normal bound on
    /// the paired per-sample differences (variance floored at one sample's worth), and the
    /// estimate is that bound.
    fn judge(&self, draws: &[Draw]) -> Result<Judgement> {
        let metric = self.opts.metric;
        let k = draws.len().max(1) as f64;
        let mut score = 0.0;
        let mut worst_drop = f64::NEG_INFINITY;
        let mut bound = f64::NEG_INFINITY;
        let mut est = 0.0f64;
        let mut paired = 0.0f64;
        let mut worst_disagree = 0usize;
        let mut worst_losses = 0usize;
        let n_calib = self.float_calib.as_ref().map_or(0, |c| c.shape()[0]);
        let n_val = self.float_val.shape()[0];
        let total = n_val + n_calib;
        for (v, c) in draws {
            let per = metric.per_sample(first(v)?, self.val_y)?;
            let s = per.iter().sum::<f64>() / per.len().max(1) as f64;
            score += s / k;
            worst_drop = worst_drop.max(self.float_score - s);
            if !self.classifier {
                let diffs: Vec<f64> = self
                    .float_samples
                    .iter()
                    .zip(&per)
                    .map(|(f, c)| f - c)
                    .collect();
                let floor = if metric == Metric::Accuracy {
                    100.0
                } else {
                    0.0
                };
                bound = bound.max(upper_bound(&diffs, floor));
            }
            // (float's output, the candidate's) over every input
            let mut pairs = vec![(&self.float_val, first(v)?)];
            if let (Some(fc), Some(c)) = (&self.float_calib, c) {
                pairs.push((fc, first(c)?));
            }
            if self.classifier {
                // the candidate's rows in the same order as `float_rows`
                let mut disagree = 0;
                let mut errors = Vec::with_capacity(total);
                for (fr, yr) in self
                    .float_rows
                    .iter()
                    .zip(pairs.iter().flat_map(|(_, y)| rows(y)))
                {
                    disagree += usize::from(
                        crate::model::argmax(fr.iter()) != crate::model::argmax(yr.iter()),
                    );
                    errors.push(yr.iter().zip(fr).map(|(a, b)| a - b).collect::<Vec<f32>>());
                }
                let losses = self
                    .float_samples
                    .iter()
                    .zip(&per)
                    .filter(|(f, c)| **f > 0.0 && **c == 0.0)
                    .count();
                worst_disagree = worst_disagree.max(disagree);
                worst_losses = worst_losses.max(losses);
                let (flips, lost) =
                    paired_estimates(&self.float_rows[..n_val], &self.val_classes, &errors);
                paired = paired.max(flips);
                est = est.max((ESTIMATE_SAFETY * lost).max(flips));
            } else if metric == Metric::R2 && self.label_var > 0.0 {
                let (mut sq, mut n) = (0.0, 0usize);
                for (f, y) in &pairs {
                    for (a, b) in f.iter().zip(y.iter()) {
                        sq += (f64::from(*b) - f64::from(*a)).powi(2);
                        n += 1;
                    }
                }
                // per target value: R² counts every output of a sample
                let per_value = sq / n.max(1) as f64;
                est = est.max(ESTIMATE_SAFETY * 100.0 * per_value / self.label_var);
            }
        }
        Ok(if self.classifier {
            let drop_bound =
                rate_upper_bound(worst_losses, n_val).min(rate_upper_bound(worst_disagree, total));
            // the pairing assumes errors independent of the input; where the inputs
            // themselves disagree more often than it predicts, the count wins
            let disagreement = worst_disagree as f64 / total.max(1) as f64;
            Judgement {
                score,
                drop_bound,
                drop_estimate: est.max(100.0 * disagreement),
                agreement: Some(1.0 - disagreement),
                paired: Some(paired),
            }
        } else if metric == Metric::R2 {
            Judgement {
                score,
                drop_bound: bound,
                drop_estimate: worst_drop.max(est),
                agreement: None,
                paired: None,
            }
        } else {
            Judgement {
                score,
                drop_bound: bound,
                drop_estimate: bound,
                agreement: None,
                paired: None,
            }
        })
    }
}

/// One run of a candidate: its outputs on the validation inputs and (for the agreement
/// bound) on the calibration inputs.
type Draw = (Vec<ArrayD<f32>>, Option<Vec<ArrayD<f32>>>);

/// The rows of a `[N, …]` output, each flattened.
fn rows(y: &ArrayD<f32>) -> impl Iterator<Item = Vec<f32>> + '_ {
    y.outer_iter().map(|r| r.iter().copied().collect())
}

/// The predicted class of each row of a `[N, classes]` output (`None` for other shapes).
fn predictions(y: &ArrayD<f32>) -> Option<Vec<usize>> {
    if y.ndim() != 2 || y.shape()[1] < 2 {
        return None;
    }
    Some(
        y.outer_iter()
            .map(|row| crate::model::argmax(row.iter()))
            .collect(),
    )
}

/// The compiled model of a candidate (for confirming it; `tune` returns the chosen one).
///
/// # Errors
/// As [`quantize_model`]; no parameters for the candidate's settings.
pub fn compile_candidate(
    model: &Model,
    calib: &[ArrayD<f32>],
    c: &Candidate,
) -> Result<CompiledModel> {
    let m = quantize_model(model, calib, &c.config)?;
    Ok(m.with_fhe_options(FheOptions {
        p_error: c.p_target,
        rounding: c.rounding,
        ..Default::default()
    })?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_binomial_bound_matches_clopper_pearson() {
        // k = 0: 1 − α^(1/n)
        let b = rate_upper_bound(0, 380);
        assert!(
            (b - 100.0 * (1.0 - ALPHA.powf(1.0 / 380.0))).abs() < 1e-9,
            "{b}"
        );
        // k = 1, n = 100: 5.45 % (the two-sided 95 % Clopper–Pearson interval's upper end)
        assert!((rate_upper_bound(1, 100) - 5.45).abs() < 0.01);
        assert_eq!(rate_upper_bound(3, 3), 100.0);
        assert_eq!(rate_upper_bound(0, 0), 100.0);
        // more evidence, tighter bound
        assert!(rate_upper_bound(2, 1000) < rate_upper_bound(2, 500));
    }

    #[test]
    fn a_zero_variance_validation_set_still_bounds_above_zero() {
        // every paired difference 0: the floor of one sample's worth keeps the bound open
        let b = upper_bound(&[0.0; 180], 100.0);
        assert!(b > 1.0 && b < 2.0, "{b}");
        // continuous differences keep their own variance
        assert_eq!(upper_bound(&[0.0; 10], 0.0), 0.0);
    }

    #[test]
    fn paired_estimates_count_errors_that_cross_a_margin() {
        // two inputs with margins 1 and 3; errors that move class 0 down by 0, 2 and 4
        let f = vec![vec![1.0, 0.0], vec![3.0, 0.0]];
        let e = vec![vec![0.0, 0.0], vec![-2.0, 0.0], vec![-4.0, 0.0]];
        // flips: margin 1 by −2 and −4; margin 3 by −4 → 3 of 6 pairs; float right on both:
        // every flip is a loss
        let (flips, lost) = paired_estimates(&f, &[0, 0], &e);
        assert!((flips - 50.0).abs() < 1e-9 && (lost - 50.0).abs() < 1e-9);
        // float wrong on the near one (label 1): its two flips are gains
        let (flips, lost) = paired_estimates(&f, &[1, 0], &e);
        assert!((flips - 50.0).abs() < 1e-9 && (lost + 100.0 / 6.0).abs() < 1e-9);
        assert_eq!(paired_estimates(&f, &[0, 0], &[]), (0.0, 0.0));
    }
}
