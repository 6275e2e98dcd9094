//! What compile decides on its own, so that the defaults run and agree with float:
//!
//! - **A plan that exists** ([`plan`]): when the asked rounding method has no TFHE
//!   parameters for this circuit (an int8 model's 8-bit × 8-bit accumulators read exactly),
//!   the cheapest plan among approximate rounding on the model's own grids and, for a model
//!   that quantizes itself, `--requantize` with either rounding — said in the report.
//! - **Float's decisions** ([`raise_precision`]): when clear mode's top-1 agreement with
//!   float on the calibration data is below the target (a classifier; no labels needed),
//!   one layer at a time gets one more bit of weights, input activations and rounding —
//!   whichever layer raises the agreement most — while the optimizer's latency estimate
//!   stays within `max_cost_factor` of the default's. The report says which layers, the
//!   agreement reached and the cost; when the target is out of reach within the cap, what
//!   reaching it would take.
//!
//! Both are on by default ([`AutoOptions::default`]) and off for explicit settings that
//! must be kept as given ([`AutoOptions::off`]).

use super::{quantize, CompileOptions};
use crate::artifact::CompiledModel;
use crate::backend::{BackendError, FheOptions, Plan, Rounding};
use crate::error::{Error, Result};
use crate::model::Model;
use fhec_ir::Tensor;
use fhec_passes::QuantConfig;

/// What compile may change on its own.
#[derive(Clone, Debug, PartialEq)]
pub struct AutoOptions {
    /// When the rounding method asked for has no parameters for this circuit, compile the
    /// cheapest plan that exists instead (and say which); otherwise that is an error.
    pub fallback: bool,
    /// Clear mode's top-1 agreement with float on the calibration data to aim for (a
    /// fraction; `None`: keep the precision asked for).
    pub agreement_target: Option<f64>,
    /// The most raising precision may multiply the estimated latency by.
    pub max_cost_factor: f64,
}

impl Default for AutoOptions {
    fn default() -> Self {
        Self {
            fallback: true,
            agreement_target: Some(Self::DEFAULT_TARGET),
            max_cost_factor: Self::DEFAULT_COST_FACTOR,
        }
    }
}

impl AutoOptions {
    /// Default agreement target: 99 % of the calibration samples classified as float does.
    pub const DEFAULT_TARGET: f64 = 0.99;
    /// Default cost cap: twice the default precision's estimated latency.
    pub const DEFAULT_COST_FACTOR: f64 = 2.0;
    /// Layer raises tried at most (each one bit for one layer).
    const MAX_STEPS: usize = 10;

    /// The precision as given, but a plan that exists: the fallback without the agreement
    /// target (what `fhec compile` does when a precision flag is set).
    pub fn keep_precision() -> Self {
        Self {
            agreement_target: None,
            ..Self::default()
        }
    }

    /// Nothing decided on its own: the settings as given, or an error.
    pub fn off() -> Self {
        Self {
            fallback: false,
            agreement_target: None,
            max_cost_factor: 1.0,
        }
    }
}

/// The compiled model's plan under `opts.fhe`, or the cheapest one that exists (see the
/// module docs); `lines` gets what was decided.
///
/// # Errors
/// No plan for the settings asked and none to fall back to (or no fallback allowed): the
/// parameters' error, with a hint for a model that quantizes itself.
pub(super) fn plan(
    m: &Model,
    samples: &[Vec<Tensor>],
    q: CompiledModel,
    quant: &QuantConfig,
    opts: &CompileOptions,
    lines: &mut Vec<String>,
) -> Result<CompiledModel> {
    opts.fhe.validate()?;
    let own_grids = !quant.requantize && m.graph.carries_grids();
    let e = match Plan::search(q.program(), q.input_quant(), &opts.fhe) {
        Ok(p) => return Ok(q.with_plan(opts.fhe.clone(), p)),
        Err(e @ BackendError::Params(_)) if opts.auto.fallback => e,
        Err(e) => return Err(no_plan(e, own_grids)),
    };
    // the alternatives: approximate rounding on these grids; requantized, either rounding
    let approx = FheOptions {
        rounding: Rounding::Approximate,
        ..opts.fhe.clone()
    };
    let mut found: Vec<(CompiledModel, &'static str)> = Vec::new();
    if opts.fhe.rounding == Rounding::Exact {
        if let Ok(p) = Plan::search(q.program(), q.input_quant(), &approx) {
            found.push((
                q.with_plan(approx.clone(), p),
                "--rounding-method approximate",
            ));
        }
    }
    if own_grids && !samples.is_empty() {
        let requantized = QuantConfig {
            requantize: true,
            ..quant.clone()
        };
        let (r, _) = quantize(m, samples, &requantized, &[])?;
        for (fhe, flags) in [
            (&opts.fhe, "--requantize"),
            (&approx, "--requantize --rounding-method approximate"),
        ] {
            if found.iter().any(|(_, f)| *f == flags) {
                continue;
            }
            if let Ok(p) = Plan::search(r.program(), r.input_quant(), fhe) {
                found.push((r.with_plan(fhe.clone(), p), flags));
            }
        }
    }
    let est = |c: &CompiledModel| c.plan().map_or(f64::INFINITY, |p| p.choice.est_ms);
    let Some((best, flags)) = found
        .into_iter()
        .min_by(|a, b| est(&a.0).total_cmp(&est(&b.0)))
    else {
        return Err(no_plan(e, own_grids));
    };
    let plan = best.plan()?;
    lines.push(format!(
        "no {} plan exists for these settings ({e}); compiled as with {flags}, the cheapest plan that does ({} bootstraps, estimated {:.2} s per sample on one thread)",
        opts.fhe.rounding.name(),
        plan.program.pbs_count,
        plan.choice.est_ms / 1e3
    ));
    Ok(best)
}

/// The error for a circuit without parameters; for a model compiled on its own grids it
/// says what narrows them.
fn no_plan(e: BackendError, own_grids: bool) -> Error {
    match e {
        BackendError::Params(source) if own_grids => Error::NoPlan {
            source,
            hint: " (this model quantizes itself: its grids, not --n-bits, set its bits; --requantize compiles it on fhec's --n-bits grids from --calib data)",
        },
        e => e.into(),
    }
}

/// The rounding method the model's plan will use: the one asked for when it has a plan,
/// else (with the fallback allowed) approximate rounding when that has one.
fn method(q: &CompiledModel, opts: &CompileOptions) -> Option<FheOptions> {
    if Plan::search(q.program(), q.input_quant(), &opts.fhe).is_ok() {
        return Some(opts.fhe.clone());
    }
    let approx = FheOptions {
        rounding: Rounding::Approximate,
        ..opts.fhe.clone()
    };
    (opts.auto.fallback && Plan::search(q.program(), q.input_quant(), &approx).is_ok())
        .then_some(approx)
}

/// The optimizer's estimate for a candidate under `fhe`, ms; `None` when it has no plan.
fn cost(q: &CompiledModel, fhe: &FheOptions) -> Option<f64> {
    Plan::search(q.program(), q.input_quant(), fhe)
        .ok()
        .map(|p| p.choice.est_ms)
}

/// One step up in precision, tried by [`raise_precision`] (and by `tune` when no setting
/// of its grid passes).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Move {
    /// Every layer's weights and activations one bit more (`--n-bits`).
    Global,
    /// One layer's weights and input activations one bit more (its accumulator grows; the
    /// table width stays, so exact rounding pays an extraction per bit and approximate
    /// rounding nothing).
    Operands(String),
    /// One layer's rounding one bit more (its tables read a bit more).
    Rounding(String),
}

impl Move {
    /// Every move: all layers' operands, then each layer's operands, then each layer's
    /// rounding.
    pub(crate) fn all(layers: &[String]) -> Vec<Move> {
        std::iter::once(Move::Global)
            .chain(layers.iter().map(|l| Move::Operands(l.clone())))
            .chain(layers.iter().map(|l| Move::Rounding(l.clone())))
            .collect()
    }
}

/// `cfg` after `mv`, from the precision the compiled model `q` gave each layer; `None` when
/// nothing can be raised.
pub(crate) fn apply(cfg: &QuantConfig, mv: &Move, q: &CompiledModel) -> Option<QuantConfig> {
    const MAX_BITS: u32 = 12;
    let mut c = cfg.clone();
    let layer = match mv {
        Move::Global => {
            if c.n_bits_weights >= MAX_BITS || c.n_bits_activations >= MAX_BITS {
                return None;
            }
            c.n_bits_weights += 1;
            c.n_bits_activations += 1;
            return Some(c);
        }
        Move::Operands(l) | Move::Rounding(l) => l,
    };
    let (w, i, r) = q
        .report()
        .layers
        .iter()
        .find(|row| &row.layer == layer)
        .and_then(|row| row.precision)?;
    let mut p = c.layers.get(layer).copied().unwrap_or_default();
    match mv {
        Move::Operands(_) => {
            if w >= MAX_BITS || i >= MAX_BITS {
                return None;
            }
            p.weight_bits = Some(w + 1);
            p.input_bits = Some(i + 1);
        }
        _ => {
            let r = r.filter(|&r| r < cfg.max_tlu_bits)?;
            p.rounding_bits = Some(r + 1);
        }
    }
    c.layers.insert(layer.clone(), p);
    Some(c)
}

/// How a move reads in the report.
fn describe(mv: &Move, cfg: &QuantConfig) -> String {
    match mv {
        Move::Global => format!(
            "--n-bits-weights {} --n-bits-activations {}",
            cfg.n_bits_weights, cfg.n_bits_activations
        ),
        Move::Operands(l) | Move::Rounding(l) => format!(
            "--layer {l}={}",
            cfg.layers.get(l).copied().unwrap_or_default().spec()
        ),
    }
}

/// Raises precision until clear mode agrees with float on the calibration data (see the
/// module docs): each step compiles every move (all layers' operands, each layer's operands,
/// each layer's rounding; in parallel), keeps the one that raises the agreement most within
/// the cost cap. Returns the model and the quantization settings it was compiled with;
/// `lines` gets what was done.
///
/// # Errors
/// A calibration sample the program cannot run.
pub(super) fn raise_precision(
    m: &Model,
    samples: &[Vec<Tensor>],
    base: CompiledModel,
    opts: &CompileOptions,
    lines: &mut Vec<String>,
) -> Result<(CompiledModel, QuantConfig)> {
    use rayon::prelude::*;
    let (Some(target), Some(a0)) = (opts.auto.agreement_target, base.report().calib_agreement)
    else {
        return Ok((base, opts.quant.clone()));
    };
    if a0 >= target || samples.is_empty() {
        return Ok((base, opts.quant.clone()));
    }
    // precision is raised within the rounding method the default gets (raising it never
    // trades exact rounding for approximate)
    let Some(fhe) = method(&base, opts) else {
        return Ok((base, opts.quant.clone()));
    };
    let Some(base_cost) = cost(&base, &fhe) else {
        return Ok((base, opts.quant.clone()));
    };
    let cap = base_cost * opts.auto.max_cost_factor;
    let layers = fhec_passes::quantize::layer_names(&m.graph);
    let moves = Move::all(&layers);
    let (mut cur, mut cfg, mut a, mut cur_cost) = (base.clone(), opts.quant.clone(), a0, base_cost);
    let mut taken: Vec<Move> = Vec::new();
    // the best step beyond the cap, to say what reaching the target would take; and the
    // best one without a plan under this rounding method
    let mut beyond: Option<(f64, f64)> = None;
    let mut planless: Option<f64> = None;
    for _ in 0..AutoOptions::MAX_STEPS {
        if a >= target {
            break;
        }
        let cands: Vec<(f64, Move, QuantConfig, CompiledModel)> = moves
            .par_iter()
            .filter_map(|mv| {
                let c = apply(&cfg, mv, &cur)?;
                let (q, _) = quantize(m, samples, &c, &[]).ok()?;
                let al = q.report().calib_agreement?;
                (al > a).then(|| (al, mv.clone(), c, q))
            })
            .collect();
        let mut cands = cands;
        cands.sort_by(|x, y| y.0.total_cmp(&x.0));
        let mut step = None;
        for (al, mv, c, q) in cands.into_iter().take(3) {
            let Some(cost) = cost(&q, &fhe) else {
                planless = Some(planless.map_or(al, |p: f64| p.max(al)));
                continue;
            };
            if cost <= cap {
                step = Some((al, mv, c, q, cost));
                break;
            }
            if beyond.is_none_or(|b| al > b.0) {
                beyond = Some((al, cost));
            }
        }
        let Some((al, mv, c, q, cost)) = step else {
            break;
        };
        (cur, cfg, a, cur_cost) = (q, c, al, cost);
        if !taken.contains(&mv) {
            taken.push(mv);
        }
    }
    let pct = |x: f64| format!("{:.1}%", x * 100.0);
    let method = fhe.rounding.name();
    let beyond_text = |b: Option<(f64, f64)>| {
        let mut t = b.map_or(String::new(), |(al, c)| {
            format!(
                " (the best step beyond it reaches {} at {:.2} s per sample, {:.1}× the default; raise --max-cost-factor or set precision with --n-bits / --layer)",
                pct(al),
                c / 1e3,
                c / base_cost
            )
        });
        if let Some(al) = planless {
            t += &format!(
                " (a step reaching {} has no {method} plan{})",
                pct(al),
                if fhe.rounding == Rounding::Exact {
                    "; --rounding-method approximate allows it"
                } else {
                    ""
                }
            );
        }
        t
    };
    if taken.is_empty() {
        lines.push(format!(
            "clear mode agrees with float on {} of the calibration data, below the {} target; no step up in precision raises it within {}× the estimated latency{}",
            pct(a0),
            pct(target),
            opts.auto.max_cost_factor,
            beyond_text(beyond)
        ));
        return Ok((base, opts.quant.clone()));
    }
    let mut line = format!(
        "clear mode agreed with float on {} of the calibration data (target {}): compiled with {} → {}; estimated {:.2} → {:.2} s per sample on one thread, {} rounding ({:.2}×, cap {}×)",
        pct(a0),
        pct(target),
        taken
            .iter()
            .map(|mv| describe(mv, &cfg))
            .collect::<Vec<_>>()
            .join(" "),
        pct(a),
        base_cost / 1e3,
        cur_cost / 1e3,
        fhe.rounding.name(),
        cur_cost / base_cost,
        opts.auto.max_cost_factor
    );
    if a < target {
        line += &format!(
            "; the target is out of reach within the cap{}",
            beyond_text(beyond)
        );
    }
    lines.push(line);
    Ok((cur, cfg))
}
