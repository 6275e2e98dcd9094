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
    /// One JSON line per measurement.
    #[arg(long)]
    json: bool,
}

pub(super) fn bench(a: BenchArgs) -> Result<()> {
    set_threads(a.threads)?;
    bench_cmd(&a.model, &a.inputs, a.samples, a.json, &a.fhe)
}

pub(super) fn bench_pbs(a: BenchPbsArgs) -> Result<()> {
    bench_pbs_cmd(&a.bits, a.norm2, a.p_error, a.reps, a.vetted, a.json)
}

/// Timings and checks of encrypted runs of a batch.
struct FheRun {
    outputs: Vec<ndarray::ArrayD<f32>>,
    keygen: Duration,
    evaluate: Vec<Duration>,
    encrypt: Vec<Duration>,
    decrypt: Vec<Duration>,
    /// Samples whose decrypted integers equal clear mode's.
    exact: usize,
    /// Samples whose first output has the same argmax as clear mode's.
    same_class: usize,
    key_sizes: fhec::runtime::KeySizes,
}

/// Keygen, then encrypt → evaluate → decrypt each sample, comparing it with clear mode.
fn fhe_batch(m: &CompiledModel, xs: &[ndarray::ArrayD<f32>], verbose: bool) -> Result<FheRun> {
    let session = m.fhe_session()?;
    let prog = &session.plan.program;
    let samples = fhec::model::split_batch(&m.float_graph, xs)?;
    let pb = progress((prog.tlu_count * samples.len()) as u64);
    let mut run = FheRun {
        outputs: Vec::new(),
        keygen: session.keygen_time,
        evaluate: Vec::new(),
        encrypt: Vec::new(),
        decrypt: Vec::new(),
        exact: 0,
        same_class: 0,
        key_sizes: session.key_sizes.clone(),
    };
    if verbose {
        pb.suspend(|| {
            println!(
                "keygen: {:.2} s; server key {}",
                session.keygen_time.as_secs_f64(),
                keys::key_sizes_line(&session.key_sizes)
            )
        });
    }
    let mut tails = Vec::new();
    for (i, sample) in samples.iter().enumerate() {
        let q = m.quantize_inputs(sample)?;
        let (ints, t) = session.run_sample(&q, Some(&pb))?;
        let want = m.boundary_clear(prog, &q)?;
        run.exact += usize::from(ints == want);
        if verbose {
            pb.suspend(|| {
                println!(
                    "sample {}: encrypt {:.1} ms, evaluate {:.2} s, decrypt {:.1} ms, {} clear mode",
                    i + 1,
                    t.encrypt.as_secs_f64() * 1e3,
                    t.evaluate.as_secs_f64(),
                    t.decrypt.as_secs_f64() * 1e3,
                    if ints == want { "equals" } else { "differs from" }
                )
            });
        }
        run.encrypt.push(t.encrypt);
        run.evaluate.push(t.evaluate);
        run.decrypt.push(t.decrypt);
        let tail = m.client_tail(prog, &ints)?;
        let clear = fhec::ir::eval_int(&m.program, &q)?;
        if let (Some(a), Some(b)) = (tail.first(), clear.first()) {
            run.same_class +=
                usize::from(fhec::model::argmax(&a.to_f32()) == fhec::model::argmax(&b.to_f32()));
        }
        tails.push(tail);
    }
    pb.finish_and_clear();
    run.outputs = fhec::model::join_batch(&m.float_graph, tails)?;
    Ok(run)
}

pub(super) fn run_fhe(
    m: &CompiledModel,
    xs: &[ndarray::ArrayD<f32>],
) -> Result<Vec<ndarray::ArrayD<f32>>> {
    let plan = m.plan()?;
    print_plan(plan);
    let prog = &plan.program;
    let run = fhe_batch(m, xs, true)?;
    let total = run.evaluate.len();
    let per = run.evaluate.iter().map(Duration::as_secs_f64).sum::<f64>() / total.max(1) as f64;
    println!(
        "fhe: {}/{total} samples equal clear mode bit for bit{}, {}/{total} predict the same class; {:.2} s per sample, {:.1} ms per bootstrap, {} thread(s)",
        run.exact,
        if prog.rounding == Rounding::Approximate {
            " (approximate rounding: differences are expected)"
        } else {
            ""
        },
        run.same_class,
        per,
        per * 1e3 / prog.pbs_count.max(1) as f64,
        rayon::current_num_threads()
    );
    Ok(run.outputs)
}

/// A parameter set's dimensions and decompositions for `bench --json`.
fn params_json(p: &fhec::backend::params::FheParams) -> serde_json::Value {
    serde_json::json!({
        "lwe_dimension": p.lwe_dimension,
        "glwe_dimension": p.glwe_dimension,
        "polynomial_size": p.polynomial_size,
        "pbs_level": p.pbs_level,
        "pbs_base_log": p.pbs_base_log,
        "ks_level": p.ks_level,
        "ks_base_log": p.ks_base_log,
    })
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
    let t0 = Instant::now();
    let plan = m.plan()?.clone();
    let plan_s = t0.elapsed().as_secs_f64();
    if !json {
        print_plan(&plan);
    }
    let run = fhe_batch(&m, &xs, !json)?;
    let mut lat: Vec<f64> = run.evaluate.iter().map(Duration::as_secs_f64).collect();
    let all = lat.clone();
    lat.sort_by(f64::total_cmp);
    let median = match lat.len() {
        0 => 0.0,
        n if n % 2 == 1 => lat[n / 2],
        n => (lat[n / 2 - 1] + lat[n / 2]) / 2.0,
    };
    let mean =
        |v: &[Duration]| v.iter().map(Duration::as_secs_f64).sum::<f64>() / v.len().max(1) as f64;
    let pr = &plan.choice.params;
    let report = serde_json::json!({
        "model": model.display().to_string(),
        "samples": all.len(),
        "latency_s_median": median,
        "latency_s_all": all,
        "encrypt_s_mean": mean(&run.encrypt),
        "decrypt_s_mean": mean(&run.decrypt),
        "keygen_s": run.keygen.as_secs_f64(),
        "plan_s": plan_s,
        "pbs_count": plan.program.pbs_count,
        "tlu_count": plan.program.tlu_count,
        "ms_per_pbs": median * 1e3 / plan.program.pbs_count.max(1) as f64,
        "max_tlu_bits": plan.program.tlu_bits,
        "msg_bits": plan.program.msg_bits,
        "rounding": plan.program.rounding.name(),
        "params_source": plan.choice.source,
        "params": params_json(pr),
        "extract_params": plan.choice.extract.as_ref().map(|x| {
            let mut j = params_json(&x.set);
            j["fks_level"] = x.fks_level.into();
            j["fks_base_log"] = x.fks_base_log.into();
            j
        }),
        "server_key_bytes": {
            "total": run.key_sizes.total(),
            "tables_bsk": run.key_sizes.main_bsk,
            "tables_ksk": run.key_sizes.main_ksk,
            "tables_fksk": run.key_sizes.main_fksk,
            "extract_bsk": run.key_sizes.extract_bsk,
            "extract_ksk": run.key_sizes.extract_ksk,
        },
        "est_s_per_sample_one_thread": plan.choice.est_ms / 1e3,
        "security_bits": plan.choice.security_bits,
        "p_error": plan.choice.p_error,
        "global_p_error": plan.choice.global_p_error,
        "off_by_one_rate": plan.choice.off_by_one,
        "equal_clear": run.exact,
        "same_class_as_clear": run.same_class,
        "threads": rayon::current_num_threads(),
    });
    println!("{report}");
    Ok(())
}

fn bench_pbs_cmd(
    bits: &[u32],
    norm2: f64,
    p_error: f64,
    reps: usize,
    vetted: bool,
    json: bool,
) -> Result<()> {
    use fhec::backend::params::{search, vetted_sets, Target};
    use fhec::runtime::measure;
    if !(p_error > 0.0 && p_error < 1.0) || norm2 < 0.0 || reps == 0 {
        return Err(Error::Usage(
            "--p-error must be in (0, 1), --norm2 non-negative, --reps at least 1".into(),
        ));
    }
    if let Some(b) = bits.iter().find(|&&b| !(1..=12).contains(&b)) {
        return Err(Error::Usage(format!(
            "--bits {b}: table widths 1..=12 are measured"
        )));
    }
    if !json {
        println!(
            "{:<5} {:<52} {:>9} {:>11} {:>10} {:>9}",
            "bits", "parameters", "keygen s", "ms per PBS", "p_error", "est. ms"
        );
    }
    for &p in bits {
        let c = fhec::runtime::measure::table_constraint(p, 1);
        let c = fhec::backend::params::Constraint {
            alpha: norm2.max(1e-9),
            ..c
        };
        let mut sets: Vec<(String, fhec::backend::params::FheParams)> = Vec::new();
        match search(std::slice::from_ref(&c), p, Target::p_error(p_error), 2.5e9) {
            Ok(ch) => sets.push(("optimizer".into(), ch.params)),
            Err(e) => println!("{p} bits: {e}"),
        }
        if vetted {
            if let Some((name, _, v)) = vetted_sets().into_iter().find(|(_, b, _)| *b >= p) {
                sets.push((name.to_string(), v));
            }
        }
        for (source, pr) in sets {
            let (ck, sk, keygen_s) = measure::keys(&pr, p);
            let ms = measure::pbs_latency(&ck, &sk, p, reps).ok_or_else(|| {
                Error::Usage(format!(
                    "{source} at {p} bits: a bootstrap returned a wrong value"
                ))
            })?;
            let pe = pr.p_error(&c);
            let desc = format!("{source}: {pr}");
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "bits": p, "source": source, "norm2": norm2,
                        "lwe_dimension": pr.lwe_dimension, "glwe_dimension": pr.glwe_dimension,
                        "polynomial_size": pr.polynomial_size, "pbs_level": pr.pbs_level,
                        "pbs_base_log": pr.pbs_base_log, "ks_level": pr.ks_level,
                        "ks_base_log": pr.ks_base_log, "keygen_s": keygen_s, "ms_per_pbs": ms,
                        "p_error": pe, "est_ms_per_pbs": pr.est_ms_per_pbs(), "threads": 1,
                    })
                );
            } else {
                println!(
                    "{p:<5} {desc:<52} {keygen_s:>9.1} {ms:>11.1} {pe:>10.1e} {:>9.1}",
                    pr.est_ms_per_pbs()
                );
            }
        }
    }
    Ok(())
}
