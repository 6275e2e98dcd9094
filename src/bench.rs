//! Measurements: encrypted runs of a batch checked against clear mode ([`run_encrypted`],
//! [`bench`]: what `fhec run --mode fhe` and `fhec bench` report), and single bootstraps per
//! table width ([`bench_pbs`]: `fhec bench-pbs`).

use crate::artifact::CompiledModel;
use crate::backend::params::{
    search, vetted_multi_bit_sets, vetted_sets, Constraint, FheParams, Target,
};
use crate::backend::{PlanInfo, SettingError};
use crate::error::{Error, Result};
use crate::model::{argmax, join_batch, split_batch};
use crate::runtime::{measure, KeySizes};
use crate::session::{SampleTimes, Session};
use ndarray::ArrayD;
use serde::Serialize;
use std::time::{Duration, Instant};

/// Encrypted runs of a batch, each sample checked against clear mode.
#[derive(Clone, Debug)]
pub struct FheRun {
    /// The decrypted outputs after the client-side tail (one array per graph output).
    pub outputs: Vec<ArrayD<f32>>,
    pub keygen: Duration,
    pub samples: Vec<SampleTimes>,
    /// Samples whose decrypted integers equal clear mode's bit for bit.
    pub exact: usize,
    /// Samples whose first output has the same argmax as clear mode's.
    pub same_class: usize,
    pub key_sizes: KeySizes,
}

/// One sample's outcome, as [`run_encrypted`] reports it while it runs.
#[derive(Clone, Debug)]
pub struct SampleOutcome {
    pub index: usize,
    pub times: SampleTimes,
    pub equals_clear: bool,
}

/// Keygen, then encrypt → evaluate → decrypt every sample of `xs` (one array per graph
/// input), comparing each with clear mode. `on_sample` hears each sample as it finishes;
/// `progress` advances by one per table lookup.
///
/// # Errors
/// A model without a plan; inputs that do not fit.
pub fn run_encrypted(
    m: &CompiledModel,
    xs: &[ArrayD<f32>],
    progress: Option<&indicatif::ProgressBar>,
    on_sample: impl FnMut(&SampleOutcome),
) -> Result<FheRun> {
    run_with(&Session::new(m)?, m, xs, progress, on_sample)
}

fn run_with(
    session: &Session,
    m: &CompiledModel,
    xs: &[ArrayD<f32>],
    progress: Option<&indicatif::ProgressBar>,
    mut on_sample: impl FnMut(&SampleOutcome),
) -> Result<FheRun> {
    let prog = &session.plan().program;
    let samples = split_batch(m.float_graph(), xs)?;
    let mut run = FheRun {
        outputs: Vec::new(),
        keygen: session.keygen_time,
        samples: Vec::new(),
        exact: 0,
        same_class: 0,
        key_sizes: session.key_sizes.clone(),
    };
    let mut tails = Vec::new();
    for (index, sample) in samples.iter().enumerate() {
        let q = m.quantize_inputs(sample)?;
        let (ints, times) = session.run_sample(&q, progress)?;
        let want = m.boundary_clear(prog, &q)?;
        let equals_clear = ints == want;
        run.exact += usize::from(equals_clear);
        on_sample(&SampleOutcome {
            index,
            times: times.clone(),
            equals_clear,
        });
        run.samples.push(times);
        let tail = m.client_tail(prog, &ints)?;
        let clear = fhec_ir::eval_int(m.program(), &q)?;
        if let (Some(a), Some(b)) = (tail.first(), clear.first()) {
            run.same_class += usize::from(argmax(&a.to_f32()) == argmax(&b.to_f32()));
        }
        tails.push(tail);
    }
    run.outputs = join_batch(m.float_graph(), tails)?;
    Ok(run)
}

/// What `fhec bench --json` prints: one encrypted batch measured.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub model: String,
    pub samples: usize,
    pub latency_s_median: f64,
    pub latency_s_all: Vec<f64>,
    pub encrypt_s_mean: f64,
    pub decrypt_s_mean: f64,
    pub keygen_s: f64,
    pub plan_s: f64,
    pub pbs_count: usize,
    pub tlu_count: usize,
    pub ms_per_pbs: f64,
    pub max_tlu_bits: u32,
    pub msg_bits: u32,
    pub rounding: &'static str,
    pub params_source: String,
    pub params: String,
    pub second_params: Option<String>,
    pub server_key_bytes: KeySizes,
    pub est_s_per_sample_one_thread: f64,
    pub security_bits: u32,
    pub p_error: f64,
    pub global_p_error: f64,
    pub off_by_one_rate: f64,
    pub equal_clear: usize,
    pub same_class_as_clear: usize,
    pub threads: usize,
    /// Throughput: the same samples again, evaluated as one request is (batches across
    /// samples, every core busy), beside one after the other (the latency runs above).
    pub batch_s: f64,
    pub throughput_samples_per_s: f64,
    pub sequential_samples_per_s: f64,
    /// Samples of the batch whose decrypted integers equal clear mode's.
    pub batch_equal_clear: usize,
}

/// Measures encrypted inference on `xs` (keygen once, then each sample), with every sample
/// checked against clear mode.
///
/// # Errors
/// As [`run_encrypted`].
pub fn bench(
    name: &str,
    m: &CompiledModel,
    xs: &[ArrayD<f32>],
    progress: Option<&indicatif::ProgressBar>,
    on_sample: impl FnMut(&SampleOutcome),
) -> Result<(BenchReport, PlanInfo)> {
    let t0 = Instant::now();
    let info = m.plan_info()?;
    let plan_s = t0.elapsed().as_secs_f64();
    let session = Session::new(m)?;
    let run = run_with(&session, m, xs, progress, on_sample)?;
    // throughput: the same samples as one batch
    let prog = &session.plan().program;
    let q = split_batch(m.float_graph(), xs)?
        .iter()
        .map(|s| m.quantize_inputs(s))
        .collect::<Result<Vec<_>>>()?;
    let (ints, batch) = session.run_batch(&q)?;
    let mut batch_equal_clear = 0;
    for (got, q) in ints.iter().zip(&q) {
        batch_equal_clear += usize::from(*got == m.boundary_clear(prog, q)?);
    }
    let batch_s = batch.as_secs_f64();
    let all: Vec<f64> = run
        .samples
        .iter()
        .map(|t| t.evaluate.as_secs_f64())
        .collect();
    let mean = |f: fn(&SampleTimes) -> Duration| {
        run.samples.iter().map(|t| f(t).as_secs_f64()).sum::<f64>()
            / run.samples.len().max(1) as f64
    };
    let median = median(&all);
    Ok((
        BenchReport {
            model: name.to_string(),
            samples: all.len(),
            latency_s_median: median,
            latency_s_all: all,
            encrypt_s_mean: mean(|t| t.encrypt),
            decrypt_s_mean: mean(|t| t.decrypt),
            keygen_s: run.keygen.as_secs_f64(),
            plan_s,
            pbs_count: info.bootstraps,
            tlu_count: info.table_lookups,
            ms_per_pbs: median * 1e3 / info.bootstraps.max(1) as f64,
            max_tlu_bits: info.table_bits,
            msg_bits: info.message_bits,
            rounding: info.rounding,
            params_source: info.source.clone(),
            params: info.params.clone(),
            second_params: info.second_params.clone(),
            server_key_bytes: run.key_sizes.clone(),
            est_s_per_sample_one_thread: info.est_ms / 1e3,
            security_bits: info.security_bits,
            p_error: info.p_error,
            global_p_error: info.global_p_error,
            off_by_one_rate: info.off_by_one,
            equal_clear: run.exact,
            same_class_as_clear: run.same_class,
            threads: rayon::current_num_threads(),
            batch_s,
            throughput_samples_per_s: q.len() as f64 / batch_s.max(1e-9),
            sequential_samples_per_s: q.len() as f64 / run_total(&run).max(1e-9),
            batch_equal_clear,
        },
        info,
    ))
}

fn run_total(run: &FheRun) -> f64 {
    run.samples.iter().map(|t| t.evaluate.as_secs_f64()).sum()
}

/// The median of `v` (0 for none).
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// What `fhec bench-pbs` measures.
#[derive(Clone, Debug)]
pub struct PbsOptions {
    /// Table widths.
    pub bits: Vec<u32>,
    /// Squared 2-norm of the dot product feeding the table (the optimizer's input).
    pub norm2: f64,
    /// Error probability per bootstrap for the optimizer.
    pub p_error: f64,
    /// Bootstraps timed per parameter set.
    pub reps: usize,
    /// Also tfhe's vetted set for each width.
    pub vetted: bool,
    /// Also tfhe's vetted multi-bit sets (grouping factors 2, 3, 4) of the vetted width,
    /// beside the vetted classic set.
    pub multi_bit: bool,
    /// Also many-LUT bootstraps (2 and 4 tables of one input) on each classic set.
    pub many_lut: bool,
    /// Thread counts: 1 measures one bootstrap after the other; `n > 1` runs `n` at once
    /// (and, for multi-bit sets, also one at a time on `n` threads).
    pub threads: Vec<usize>,
}

/// One parameter set's measured bootstrap.
#[derive(Clone, Debug, Serialize)]
pub struct PbsRow {
    pub bits: u32,
    pub source: String,
    /// `classic`, `multi-bit gN` (grouping factor N) or `many-LUT xK` (K tables per
    /// bootstrap).
    pub kind: String,
    pub norm2: f64,
    pub params: FheParams,
    pub keygen_s: f64,
    /// Wall time per bootstrap (with `threads` at work).
    pub ms_per_pbs: f64,
    pub tables_per_pbs: usize,
    /// `ms_per_pbs / tables_per_pbs`.
    pub ms_per_table: f64,
    /// Error probability per bootstrap: the optimizer's formula for classic sets, tfhe's
    /// stated one for its multi-bit sets.
    pub p_error: f64,
    /// The optimizer's cost model (classic sets only).
    pub est_ms_per_pbs: Option<f64>,
    pub threads: usize,
    /// How the threads were used (`1 thread`, `2 threads, 2 at once`, `2 threads inside one`).
    pub threading: String,
}

/// Measures one keyswitch + bootstrap per table width, with the optimizer's parameters (and
/// tfhe's vetted sets: classic, multi-bit; many-LUT bootstraps on the classic ones);
/// `on_row` hears each measurement, `on_skip` each width without parameters.
///
/// # Errors
/// Options out of range; a bootstrap that returns a wrong value (a bug).
pub fn bench_pbs(
    o: &PbsOptions,
    mut on_row: impl FnMut(&PbsRow),
    mut on_skip: impl FnMut(u32, &Error),
) -> Result<Vec<PbsRow>> {
    use measure::Threading;
    let bad = |flag: &'static str, reason: &str| {
        Error::Setting(SettingError {
            flag,
            reason: reason.to_string(),
        })
    };
    if !(o.p_error > 0.0 && o.p_error < 1.0) {
        return Err(bad("--p-error", "must be in (0, 1)"));
    }
    if o.norm2 < 0.0 {
        return Err(bad("--norm2", "must be non-negative"));
    }
    if o.reps == 0 {
        return Err(bad("--reps", "must be at least 1"));
    }
    if let Some(b) = o.bits.iter().find(|&&b| !(1..=12).contains(&b)) {
        return Err(bad(
            "--bits",
            &format!("{b}: table widths 1..=12 are measured"),
        ));
    }
    if o.threads.is_empty() || o.threads.iter().any(|&t| t == 0 || t > 256) {
        return Err(bad("--threads", "thread counts 1..=256"));
    }
    let wrong = |what: String| Error::Internal {
        what: format!("{what}: a bootstrap returned a wrong value"),
    };
    let modes = |inside: bool| {
        let mut m = Vec::new();
        for &t in &o.threads {
            if t == 1 {
                m.push(Threading::One);
            } else {
                if inside {
                    m.push(Threading::Inside(t));
                }
                m.push(Threading::Parallel(t));
            }
        }
        m
    };
    let threads_of = |m: Threading| match m {
        Threading::One => 1,
        Threading::Parallel(t) | Threading::Inside(t) => t,
    };
    let mut rows = Vec::new();
    for &p in &o.bits {
        let c = Constraint {
            alpha: o.norm2.max(1e-9),
            ..measure::table_constraint(p, 1)
        };
        let mut sets: Vec<(String, FheParams)> = Vec::new();
        match search(
            std::slice::from_ref(&c),
            p,
            Target::p_error(o.p_error),
            2.5e9,
        ) {
            Ok(ch) => sets.push(("optimizer".into(), ch.params)),
            Err(e) => on_skip(p, &crate::backend::BackendError::from(e).into()),
        }
        let vetted = vetted_sets().into_iter().find(|(_, b, _)| *b >= p);
        if o.vetted || o.multi_bit {
            if let Some((name, _, v)) = &vetted {
                sets.push((name.to_string(), v.clone()));
            }
        }
        let mut emit = |row: PbsRow, rows: &mut Vec<PbsRow>| {
            on_row(&row);
            rows.push(row);
        };
        for (source, pr) in sets {
            let (ck, sk, keygen_s) = measure::keys(&pr, p);
            let mut kinds = vec![1usize];
            if o.many_lut {
                kinds.extend([2usize, 4].into_iter().filter(|&k| k.ilog2() < p));
            }
            for k in kinds {
                for m in modes(false) {
                    let ms = if k == 1 {
                        measure::pbs_time(&ck, &sk, p, o.reps, m)
                    } else {
                        measure::many_lut_time(&ck, &sk, p, k, o.reps, m)
                    }
                    .ok_or_else(|| wrong(format!("{source} at {p} bits, {k} tables")))?;
                    let row = PbsRow {
                        bits: p,
                        source: source.clone(),
                        kind: if k == 1 {
                            "classic".into()
                        } else {
                            format!("many-LUT x{k}")
                        },
                        norm2: o.norm2,
                        p_error: pr.p_error(&c),
                        est_ms_per_pbs: Some(pr.est_ms_per_pbs()),
                        params: pr.clone(),
                        keygen_s,
                        ms_per_pbs: ms,
                        tables_per_pbs: k,
                        ms_per_table: ms / k as f64,
                        threads: threads_of(m),
                        threading: m.to_string(),
                    };
                    emit(row, &mut rows);
                }
            }
        }
        if o.multi_bit {
            let Some((_, width, _)) = &vetted else {
                continue;
            };
            for (name, b, g, log2_p_fail, pr) in vetted_multi_bit_sets() {
                if b != *width {
                    continue;
                }
                let (keys, keygen_s) = measure::multi_bit_keys(&pr, g)
                    .ok_or_else(|| wrong(format!("{name}: grouping {g}")))?;
                for m in modes(true) {
                    let ms = measure::multi_bit_time(&keys, p, o.reps, m)
                        .ok_or_else(|| wrong(format!("{name} at {p} bits")))?;
                    let row = PbsRow {
                        bits: p,
                        source: name.to_string(),
                        kind: format!("multi-bit g{g}"),
                        norm2: o.norm2,
                        p_error: 2f64.powf(log2_p_fail),
                        est_ms_per_pbs: None,
                        params: pr.clone(),
                        keygen_s,
                        ms_per_pbs: ms,
                        tables_per_pbs: 1,
                        ms_per_table: ms,
                        threads: threads_of(m),
                        threading: m.to_string(),
                    };
                    emit(row, &mut rows);
                }
            }
        }
    }
    Ok(rows)
}
