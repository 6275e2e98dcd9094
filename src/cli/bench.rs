//! `fhec bench`, `fhec bench-pbs` and the encrypted runs `fhec run --mode fhe` shares.

use super::*;

#[derive(clap::Args)]
pub(super) struct BenchArgs {
    model: PathBuf,
    #[arg(long = "input", required = true)]
    inputs: Vec<PathBuf>,
    #[arg(long, default_value_t = 3)]
    samples: usize,
    /// Print one JSON line only.
    #[arg(long)]
    json: bool,
    #[arg(long)]
    threads: Option<usize>,
    #[command(flatten)]
    fhe: FheArgs,
}

#[derive(clap::Args)]
pub(super) struct BenchPbsArgs {
    /// Table widths.
    #[arg(long, value_delimiter = ',', default_value = "4,5,6,7,8")]
    bits: Vec<u32>,
    /// Squared 2-norm of the dot product feeding the table (the optimizer's input).
    #[arg(long, default_value_t = 1.0)]
    norm2: f64,
    /// Error probability per bootstrap for the optimizer.
    #[arg(long, default_value_t = 2f64.powi(-40))]
    p_error: f64,
    /// Bootstraps timed per parameter set.
    #[arg(long, default_value_t = 20)]
    reps: usize,
    /// Also measure tfhe's vetted set for each width (the 8-bit one takes minutes of
    /// key generation).
    #[arg(long)]
    vetted: bool,
    /// Also tfhe's vetted multi-bit sets (grouping factors 2, 3, 4) beside the vetted
    /// classic set of the same width.
    #[arg(long)]
    multi_bit: bool,
    /// Also many-LUT bootstraps: 2 and 4 tables of one input in one bootstrap.
    #[arg(long)]
    many_lut: bool,
    /// Thread counts: 1 runs one bootstrap after the other; N > 1 runs N at once (and a
    /// multi-bit bootstrap also on N threads by itself).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    threads: Vec<usize>,
    /// One JSON line per measurement.
    #[arg(long)]
    json: bool,
}

pub(super) fn bench(a: BenchArgs) -> Result<()> {
    set_threads(a.threads)?;
    bench_cmd(&a.model, &a.inputs, a.samples, a.json, &a.fhe)
}

pub(super) fn bench_pbs(a: BenchPbsArgs) -> Result<()> {
    let opts = fhec::bench::PbsOptions {
        bits: a.bits,
        norm2: a.norm2,
        p_error: a.p_error,
        reps: a.reps,
        vetted: a.vetted,
        multi_bit: a.multi_bit,
        many_lut: a.many_lut,
        threads: a.threads,
    };
    bench_pbs_cmd(&opts, a.json)
}

/// `run --mode fhe`: the outputs, and how many samples equal clear mode bit for bit and
/// predict its class. `quiet`: no text (a JSON line follows).
pub(super) fn run_fhe(
    m: &CompiledModel,
    xs: &[ndarray::ArrayD<f32>],
    quiet: bool,
) -> Result<(Vec<ndarray::ArrayD<f32>>, usize, usize)> {
    let info = m.plan_info()?;
    if !quiet {
        print_plan(&info);
    }
    let n = xs
        .first()
        .map_or(0, |x| x.shape().first().copied().unwrap_or(1));
    let pb = progress((info.table_lookups * n) as u64);
    let run =
        fhec::bench::run_encrypted(m, xs, Some(&pb), |s| {
            pb.suspend(|| {
                if s.index == 0 {
                    println!("keys made; running {n} sample(s)");
                }
                println!(
                "sample {}: encrypt {:.1} ms, evaluate {:.2} s, decrypt {:.1} ms, {} clear mode",
                s.index + 1,
                s.times.encrypt.as_secs_f64() * 1e3,
                s.times.evaluate.as_secs_f64(),
                s.times.decrypt.as_secs_f64() * 1e3,
                if s.equals_clear { "equals" } else { "differs from" }
            )
            });
        })?;
    pb.finish_and_clear();
    if quiet {
        return Ok((run.outputs, run.exact, run.same_class));
    }
    println!(
        "keygen: {:.2} s; server key {}",
        run.keygen.as_secs_f64(),
        keys::key_sizes_line(&run.key_sizes)
    );
    let total = run.samples.len();
    let per = run
        .samples
        .iter()
        .map(|t| t.evaluate.as_secs_f64())
        .sum::<f64>()
        / total.max(1) as f64;
    println!(
        "fhe: {}/{total} samples equal clear mode bit for bit{}, {}/{total} predict the same class; {:.2} s per sample, {:.1} ms per bootstrap, {} thread(s)",
        run.exact,
        if m.fhe_options().rounding == Rounding::Approximate {
            " (approximate rounding: differences are expected)"
        } else {
            ""
        },
        run.same_class,
        per,
        per * 1e3 / info.bootstraps.max(1) as f64,
        rayon::current_num_threads()
    );
    Ok((run.outputs, run.exact, run.same_class))
}

fn bench_cmd(
    model: &Path,
    inputs: &[PathBuf],
    samples: usize,
    json: bool,
    fhe: &FheArgs,
) -> Result<()> {
    let m = load_with(model, fhe)?;
    let xs = read_inputs(inputs, Some(samples.max(1)))?;
    let info = m.plan_info()?;
    if !json {
        print_plan(&info);
    }
    let n = xs
        .first()
        .map_or(0, |x| x.shape().first().copied().unwrap_or(1));
    let pb = progress((info.table_lookups * n) as u64);
    let (report, _) = fhec::bench::bench(&model.display().to_string(), &m, &xs, Some(&pb), |s| {
        if !json {
            pb.suspend(|| {
                println!(
                    "sample {}: encrypt {:.1} ms, evaluate {:.2} s, decrypt {:.1} ms, {} clear mode",
                    s.index + 1,
                    s.times.encrypt.as_secs_f64() * 1e3,
                    s.times.evaluate.as_secs_f64(),
                    s.times.decrypt.as_secs_f64() * 1e3,
                    if s.equals_clear { "equals" } else { "differs from" }
                )
            });
        }
    })?;
    pb.finish_and_clear();
    if !json {
        println!(
            "throughput: {:.3} samples/s as one batch ({:.2} s for {} samples, {} equal clear mode), {:.3} samples/s one after the other",
            report.throughput_samples_per_s,
            report.batch_s,
            report.samples,
            report.batch_equal_clear,
            report.sequential_samples_per_s
        );
    }
    println!(
        "{}",
        serde_json::to_string(&report).map_err(|e| fhec::Error::Internal {
            what: format!("cannot encode the bench report: {e}"),
        })?
    );
    Ok(())
}

fn bench_pbs_cmd(opts: &fhec::bench::PbsOptions, json: bool) -> Result<()> {
    if !json {
        println!(
            "{:<5} {:<14} {:<24} {:<52} {:>9} {:>10} {:>12} {:>10} {:>8}",
            "bits",
            "kind",
            "threads",
            "parameters",
            "keygen s",
            "ms per PBS",
            "ms per table",
            "p_error",
            "est. ms"
        );
    }
    fhec::bench::bench_pbs(
        opts,
        |r| {
            if json {
                println!("{}", serde_json::to_string(r).unwrap_or_default());
            } else {
                let desc = format!("{}: {}", short_source(&r.source), r.params);
                let est = r
                    .est_ms_per_pbs
                    .map_or_else(|| "-".to_string(), |e| format!("{e:.1}"));
                println!(
                    "{:<5} {:<14} {:<24} {desc:<52} {:>9.1} {:>10.2} {:>12.2} {:>10.1e} {est:>8}",
                    r.bits,
                    r.kind,
                    r.threading,
                    r.keygen_s,
                    r.ms_per_pbs,
                    r.ms_per_table,
                    r.p_error
                );
            }
        },
        |p, e| println!("{p} bits: {e}"),
    )?;
    Ok(())
}

/// tfhe's long set names without their version prefix and noise suffix.
fn short_source(s: &str) -> &str {
    let s = s.strip_prefix("V1_8_PARAM_").unwrap_or(s);
    s.strip_suffix("_KS_PBS_GAUSSIAN_2M128").unwrap_or(s)
}
