//! `fhec tune`: the cheapest circuit within an accuracy budget.

use super::*;

#[derive(clap::Args)]
pub(super) struct TuneArgs {
    model: PathBuf,
    /// Calibration inputs (.npy), one per graph input.
    #[arg(long = "calib", required = true)]
    calib: Vec<PathBuf>,
    /// Validation inputs (.npy), one per graph input.
    #[arg(long = "val", required = true)]
    val: Vec<PathBuf>,
    /// Validation labels (.npy): class indices (accuracy) or float targets (r2).
    #[arg(long)]
    val_labels: PathBuf,
    /// Largest score drop below float, in points (percent). A candidate passes when its
    /// estimated drop on unseen inputs is within it: every observed output error
    /// (calibration and validation inputs, no labels) added to every validation input's
    /// float scores, the larger of twice the accuracy that costs against the labels and the
    /// rate at which it moves the top class. Its 95 % confidence bound on the drop is
    /// printed beside it.
    #[arg(long, default_value_t = 0.5)]
    max_accuracy_drop: f64,
    #[arg(long, value_enum, default_value = "accuracy")]
    metric: MetricArg,
    /// n_bits values to try.
    #[arg(long, value_delimiter = ',', default_value = "3,4,5,6,7,8")]
    n_bits: Vec<u32>,
    /// Rounding bits to try.
    #[arg(long, value_delimiter = ',', default_value = "4,5,6,7,8")]
    rounding_bits: Vec<u32>,
    /// Range policies to try (see `compile --ranges`).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "calibrated,proven"
    )]
    ranges: Vec<RangesArg>,
    /// Skip the per-layer phase (one bit less per layer where it still passes).
    #[arg(long)]
    no_per_layer: bool,
    /// When no setting of the grid passes: how many steps up in precision (compile's
    /// per-layer and global moves) to try before refusing (0: refuse at once).
    #[arg(long, default_value_t = 8)]
    raise_steps: usize,
    /// Seed of the simulated noise and bootstrap failures.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// How many of the cheapest passing candidates to time on one real encrypted sample
    /// (0: none).
    #[arg(long, default_value_t = 1)]
    confirm: usize,
    #[arg(long)]
    threads: Option<usize>,
    /// Where to write the chosen compiled model.
    #[arg(short = 'o', long = "out")]
    out: PathBuf,
    /// Also write the search as JSON (float score, budget, the chosen candidate and its
    /// margin, the Pareto front with measured times).
    #[arg(long)]
    json: Option<PathBuf>,
}

pub(super) fn run(a: TuneArgs) -> Result<()> {
    let TuneArgs {
        model,
        calib,
        val,
        val_labels,
        max_accuracy_drop,
        metric,
        n_bits,
        rounding_bits,
        ranges,
        no_per_layer,
        raise_steps,
        seed,
        confirm,
        threads,
        out,
        json,
    } = a;
    set_threads(threads)?;
    let opts = fhec::tune::TuneOptions {
        metric: match metric {
            MetricArg::Accuracy => fhec::tune::Metric::Accuracy,
            MetricArg::R2 => fhec::tune::Metric::R2,
        },
        max_drop: max_accuracy_drop,
        n_bits,
        rounding_bits,
        ranges: ranges.into_iter().map(Into::into).collect(),
        per_layer: !no_per_layer,
        raise_steps,
        seed,
        limits: limits(),
        ..Default::default()
    };
    let files = Files {
        model,
        calib,
        val,
        labels: val_labels,
        out,
        json,
    };
    tune_cmd(&files, &opts, confirm)
}

/// The files a search reads and writes.
struct Files {
    model: PathBuf,
    calib: Vec<PathBuf>,
    val: Vec<PathBuf>,
    labels: PathBuf,
    out: PathBuf,
    json: Option<PathBuf>,
}

fn tune_cmd(files: &Files, opts: &fhec::tune::TuneOptions, confirm: usize) -> Result<()> {
    opts.validate().map_err(fhec::Error::from)?;
    let Files {
        model,
        calib,
        val,
        labels,
        out,
        json,
    } = files;
    let m = Model::load_with_limits(model, &limits())?;
    let calib = read_inputs(calib, None)?;
    let xs = read_inputs(val, None)?;
    let y = read_targets(labels)?;
    let t0 = Instant::now();
    let pb = indicatif::ProgressBar::new(0);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} settings compiled and scored",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let t = fhec::tune::tune(&m, &calib, &xs, &y, opts, |i, n| {
        pb.set_length(n as u64);
        pb.set_position(i as u64);
    })?;
    pb.finish_and_clear();
    let metric = match opts.metric {
        fhec::tune::Metric::Accuracy => "accuracy",
        fhec::tune::Metric::R2 => "R²",
    };
    println!(
        "tune: {} candidates in {:.1} s; float {metric} {:.2} %; a candidate passes when its estimated drop (est.) is within {:.2} points; ≤ is the 95 % confidence bound",
        t.candidates.len(),
        t0.elapsed().as_secs_f64(),
        t.float_score,
        t.max_drop
    );
    // the real benchmark of the cheapest passing candidates
    let mut measured: BTreeMap<usize, f64> = BTreeMap::new();
    for i in t.passing().into_iter().take(confirm) {
        // the chosen candidate's model is at hand; others are compiled again
        let other;
        let cm = if i == t.chosen {
            &t.model
        } else {
            other = fhec::tune::compile_candidate(&m, &calib, &t.candidates[i])?;
            &other
        };
        let session = fhec::Session::new(cm)?;
        let sample = fhec::model::split_batch(cm.float_graph(), &xs)?
            .into_iter()
            .next()
            .ok_or_else(|| CliError::Usage("the validation set is empty".into()))?;
        let q = cm.quantize_inputs(&sample)?;
        let (_, times) = session.run_sample(&q, None)?;
        measured.insert(i, times.evaluate.as_secs_f64() * 1e3);
    }
    println!(
        "{:>6} {:>9} {:>10} {:>7} {:>10} {:>7} {:>11} {:>6} {:>7} {:>9} {:>5} {:>6} {:>7} {:>12} {:>12}",
        "grids",
        "rounding",
        "ranges",
        "layers",
        "method",
        "p_error",
        metric,
        "est.",
        "drop ≤",
        "agrees",
        "PBS",
        "table",
        "N",
        "est ms/smp",
        "measured ms"
    );
    let mut rows = t.pareto();
    if !rows.contains(&t.chosen) {
        rows.push(t.chosen);
        rows.sort_by(|&a, &b| t.candidates[a].est_ms.total_cmp(&t.candidates[b].est_ms));
    }
    for i in rows {
        let c = &t.candidates[i];
        println!(
            "{:>6} {:>9} {:>10} {:>7} {:>10} {:>7.0e} {:>10.2}% {:>6.2} {:>7.2} {:>9} {:>5} {:>6} {:>7} {:>12.1} {:>12}{}",
            grids(c),
            c.rounding_bits,
            c.config.ranges.name(),
            if c.config.layers.is_empty() {
                "-".to_string()
            } else {
                format!("{} set", c.config.layers.len())
            },
            match c.rounding {
                Rounding::Exact => "exact",
                Rounding::Approximate => "approx",
            },
            c.p_error,
            c.score,
            c.drop_estimate,
            c.drop_bound,
            c.agreement
                .map_or("-".to_string(), |a| format!("{:.2}%", a * 100.0)),
            c.pbs_count,
            c.tlu_bits,
            c.polynomial_size,
            c.est_ms,
            measured
                .get(&i)
                .map_or("-".to_string(), |ms| format!("{ms:.1}")),
            if i == t.chosen { "  ← chosen" } else { "" }
        );
    }
    let c = &t.candidates[t.chosen];
    let layers = c.layer_flags();
    println!(
        "chosen: {}{} --rounding-bits {} --ranges {}{layers} --rounding-method {} --p-error {:.1e} ({metric} {:.2} %, estimated drop {:.2}, ≤ {:.2} points with 95 % confidence, margin {:.2}; {} bootstraps, {}-bit tables)",
        c.n_bits_flags(),
        if c.config.requantize {
            " --requantize"
        } else {
            ""
        },
        c.rounding_bits,
        c.config.ranges.name(),
        match c.rounding {
            Rounding::Exact => "exact",
            Rounding::Approximate => "approximate",
        },
        c.p_error,
        c.score,
        c.drop_estimate,
        c.drop_bound,
        t.margin(),
        c.pbs_count,
        c.tlu_bits
    );
    t.model.save(out)?;
    println!("wrote {}", out.display());
    if let Some(j) = json {
        let cand = |i: usize| {
            let mut v = t.candidates[i].summary();
            v["measured_ms"] = serde_json::json!(measured.get(&i));
            v
        };
        let doc = serde_json::json!({
            "model": model.display().to_string(),
            "metric": metric,
            "float_score": t.float_score,
            "max_drop": t.max_drop,
            "candidates": t.candidates.len(),
            "seconds": t0.elapsed().as_secs_f64(),
            "chosen": cand(t.chosen),
            "margin": t.margin(),
            "pareto": t.pareto().into_iter().map(cand).collect::<Vec<_>>(),
            "passing": t.passing().len(),
            "scored": (0..t.candidates.len()).map(cand).collect::<Vec<_>>(),
            "threads": rayon::current_num_threads(),
        });
        std::fs::write(j, format!("{doc:#}\n")).map_err(|e| fhec::Error::Write {
            path: j.display().to_string(),
            reason: e.to_string(),
        })?;
        println!("wrote {}", j.display());
    }
    Ok(())
}

/// The n_bits column: the model's own grids are marked (`own`, then the n_bits its float
/// parts, if any, take), fhec's are the number.
fn grids(c: &fhec::tune::Candidate) -> String {
    if c.own_grids {
        format!("own/{}", c.n_bits)
    } else {
        c.n_bits.to_string()
    }
}
