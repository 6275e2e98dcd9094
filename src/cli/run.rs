//! `fhec run`: a model on .npy inputs in float, clear, sim or fhe mode.

use super::*;

#[derive(clap::Args)]
pub(super) struct RunArgs {
    model: PathBuf,
    /// One per graph input, in graph-input order.
    #[arg(long = "input", required = true)]
    inputs: Vec<PathBuf>,
    /// Where to write the output(s), one per graph output, in order.
    #[arg(long = "output")]
    outputs: Vec<PathBuf>,
    #[arg(long, value_enum, default_value = "float")]
    mode: Mode,
    /// Class labels (.npy, int): print the accuracy of the first output's argmax.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// With an .onnx model in clear/fhe mode: calibration data to compile it first (defaults).
    #[arg(long = "calib")]
    calib: Vec<PathBuf>,
    /// fhe mode: how many samples of the input to run encrypted (default: all).
    #[arg(long)]
    samples: Option<usize>,
    /// fhe mode: worker threads (default: all cores, or RAYON_NUM_THREADS).
    #[arg(long)]
    threads: Option<usize>,
    /// sim mode: seed of the simulated noise and bootstrap failures.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// How --labels are scored: class accuracy, or R² of float targets (regression).
    #[arg(long, value_enum, default_value = "accuracy")]
    metric: MetricArg,
    /// Another implementation's outputs on the same inputs (.npy, e.g. the framework's):
    /// print the largest difference of the first output from it, relative to its largest
    /// magnitude.
    #[arg(long)]
    reference: Option<PathBuf>,
    /// Print one JSON line (mode, samples, time, scores, reference difference, …) instead
    /// of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    fhe: FheArgs,
}

pub(super) fn run(a: RunArgs) -> Result<()> {
    let RunArgs {
        model,
        inputs,
        outputs,
        mode,
        labels,
        calib,
        samples,
        threads,
        seed,
        metric,
        reference,
        json,
        fhe,
    } = a;
    // text lines, unless one JSON line was asked for
    let say = |line: String| {
        if !json {
            println!("{line}");
        }
    };
    let mut out = serde_json::Map::new();
    out.insert("model".into(), model.display().to_string().into());
    out.insert("mode".into(), mode_name(mode).into());
    set_threads(threads)?;
    let xs = read_inputs(&inputs, samples)?;
    let is_fhe = model.extension().is_some_and(|e| e == "fhe");
    // the compiled model, for the modes that need one
    let compiled = match (mode, is_fhe) {
            (Mode::Float, false) => None,
            (_, true) => Some(load_with(&model, &fhe)?),
            (_, false) if !calib.is_empty() => {
                let c = calib
                    .iter()
                    .map(|p| npy::read_f32(p))
                    .collect::<fhec::Result<Vec<_>>>()?;
                let t0 = Instant::now();
                let opts = CompileOptions {
                    fhe: fhe.apply(FheOptions::default())?,
                    limits: limits(),
                    ..Default::default()
                };
                let m = fhec::compile(&model, &c, &opts)?;
                say(m.report().to_text().trim_end().to_string());
                say(format!("compiled in {:.2} s", t0.elapsed().as_secs_f64()));
                out.insert("compile_s".into(), t0.elapsed().as_secs_f64().into());
                Some(m)
            }
            (_, false) => {
                return Err(CliError::Usage(format!(
                    "--mode {} runs a compiled model: compile first (`fhec compile {} --calib CALIB.npy -o MODEL.fhe`) or pass --calib",
                    mode_name(mode),
                    model.display()
                )))
            }
        };
    // class labels (accuracy) or float targets (R²), cut to the samples run
    let labels = labels
        .map(|l| -> Result<_> {
            let targets = match metric {
                MetricArg::Accuracy => {
                    let mut v = npy::read_labels(&l)?;
                    if let Some(k) = samples {
                        v.truncate(k);
                    }
                    Targets::Classes(v)
                }
                MetricArg::R2 => {
                    let mut t = read_targets(&l)?;
                    if let Some(k) = samples {
                        let k = k.min(t.shape().first().copied().unwrap_or(0));
                        t = t
                            .slice_axis(ndarray::Axis(0), ndarray::Slice::from(0..k))
                            .to_owned();
                    }
                    Targets::Values(t)
                }
            };
            Ok((l, targets))
        })
        .transpose()?;
    if metric == MetricArg::R2 && labels.is_none() {
        return Err(CliError::Usage(
            "--metric r2 needs --labels TARGETS.npy".into(),
        ));
    }
    let n = xs
        .first()
        .map_or(0, |x| x.shape().first().copied().unwrap_or(1));
    let t0 = Instant::now();
    let ys = match (&compiled, mode) {
        (None, _) => Model::load_with_limits(&model, &limits())?.run_float(&xs)?,
        (Some(m), Mode::Float) => m.run_float(&xs)?,
        (Some(m), Mode::Clear) => {
            let (ys, ov) = m.run_clear_counted(&xs)?;
            say(ov.to_text());
            out.insert("reads_beyond_domain".into(), ov.outside.into());
            out.insert("reads".into(), ov.reads.into());
            ys
        }
        (Some(m), Mode::Fhe) => {
            let (ys, exact, same) = bench::run_fhe(m, &xs, json)?;
            out.insert("equal_clear".into(), exact.into());
            out.insert("same_class_as_clear".into(), same.into());
            ys
        }
        (Some(m), Mode::Sim) => {
            let (ys, st) = m.run_simulated_with(&xs, seed, None)?;
            say(format!(
                "sim: {} bootstrap(s), {} table lookup(s) moved by an injected failure (p_error {:.2e} per bootstrap, seed {seed})",
                st.bootstraps, st.failures, st.p_fail
            ));
            out.insert("sim_failures".into(), st.failures.into());
            ys
        }
    };
    let dt = t0.elapsed();
    say(format!(
        "{}: {n} sample(s) in {:.1} ms ({:.3} ms/sample)",
        mode_name(mode),
        dt.as_secs_f64() * 1e3,
        dt.as_secs_f64() * 1e3 / n.max(1) as f64
    ));
    out.insert("samples".into(), n.into());
    out.insert("seconds".into(), dt.as_secs_f64().into());
    for (p, y) in outputs.iter().zip(&ys) {
        npy::write_f32(p, y)?;
        say(format!("wrote {} {}", p.display(), ShapeFmt(y.shape())));
    }
    if let Some(r) = &reference {
        let want = npy::read_f32(r)?;
        let y = ys
            .first()
            .ok_or_else(|| CliError::Usage("the model has no output".into()))?;
        if want.shape() != y.shape() {
            return Err(CliError::Usage(format!(
                "--reference `{}` has shape {}, the first output {}",
                r.display(),
                ShapeFmt(want.shape()),
                ShapeFmt(y.shape())
            )));
        }
        let scale = want
            .iter()
            .fold(0f64, |m, &v| m.max(f64::from(v).abs()))
            .max(1e-12);
        let diff = y.iter().zip(&want).fold(0f64, |m, (&a, &b)| {
            m.max((f64::from(a) - f64::from(b)).abs())
        });
        say(format!(
            "largest difference from `{}`: {:.3e} of its largest magnitude",
            r.display(),
            diff / scale
        ));
        out.insert("max_rel_diff_vs_reference".into(), (diff / scale).into());
    }
    if let Some((path, targets)) = labels {
        let mut report = |which: &str, y: &ndarray::ArrayD<f32>| -> Result<()> {
            match &targets {
                Targets::Classes(v) => {
                    let acc =
                        fhec::accuracy(y, v).ok_or_else(|| labels_mismatch(&path, v.len(), y))?;
                    say(format!(
                        "accuracy ({which}): {acc:.4} on {} samples",
                        v.len()
                    ));
                    out.insert(format!("accuracy_{which}"), acc.into());
                }
                Targets::Values(t) => {
                    let r2 = fhec::tune::Metric::R2
                        .score(y, t)
                        .map_err(|e| e.in_file(&path))?;
                    say(format!("R² ({which}): {:.4}", r2 / 100.0));
                    out.insert(format!("r2_{which}"), (r2 / 100.0).into());
                }
            }
            Ok(())
        };
        let y = ys
            .first()
            .ok_or_else(|| CliError::Usage("the model has no output".into()))?;
        report(mode_name(mode), y)?;
        if let (Some(m), true) = (&compiled, mode != Mode::Float) {
            if matches!(mode, Mode::Fhe | Mode::Sim) {
                report("clear", &m.run_clear(&xs)?[0])?;
            }
            report("float", &m.run_float(&xs)?[0])?;
        }
    }
    if json {
        println!("{}", serde_json::Value::Object(out));
    }
    Ok(())
}
