//! `fhec train`: a quantization-aware network from data, exported as QONNX (see
//! `fhec::train`).

use super::*;
use fhec::train::{self, net::Activation, Task, TrainOptions};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TaskArg {
    Classification,
    Regression,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ActivationArg {
    Relu,
    Sigmoid,
    Tanh,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ClassWeights {
    /// Every sample counts the same.
    None,
    /// Classes weighted inversely to their frequency.
    Balanced,
}

#[derive(clap::Args)]
pub(super) struct TrainArgs {
    /// Features: .npy (float32, [samples, features]) with --labels, or a CSV file with a
    /// header row whose target column is --target.
    #[arg(long)]
    input: PathBuf,
    /// Targets (.npy): class indices (classification) or floats (regression), one row per
    /// sample.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// CSV input: the target column, by name or 0-based index [default: the last column].
    #[arg(long)]
    target: Option<String>,
    #[arg(long, value_enum, default_value = "classification")]
    task: TaskArg,
    /// Linear layers.
    #[arg(long, default_value_t = 3)]
    n_layers: usize,
    /// Hidden width = this × the number of features.
    #[arg(long, default_value_t = 4)]
    n_hidden_multiplier: usize,
    /// Bits of the weights.
    #[arg(long, default_value_t = 3)]
    n_w_bits: u32,
    /// Bits of the inputs and activations.
    #[arg(long, default_value_t = 3)]
    n_a_bits: u32,
    /// Worst-case accumulator bits of every neuron, kept by pruning during training.
    #[arg(long, default_value_t = 8)]
    n_accum_bits: u32,
    /// Train dense: no accumulator budget (fhec's rounding still bounds every table).
    #[arg(long)]
    no_pruning: bool,
    /// Structured pruning: remove this fraction of every hidden layer's neurons (smallest
    /// weight norm) during training — fewer table lookups per sample.
    #[arg(long, default_value_t = 0.0)]
    prune_neurons: f64,
    #[arg(long, value_enum, default_value = "relu")]
    activation: ActivationArg,
    /// Power-of-two scales for inputs, weights and activations.
    #[arg(long)]
    power_of_two: bool,
    #[arg(long, default_value_t = 60)]
    epochs: usize,
    /// Peak learning rate (AdamW, cosine decay to 5 %).
    #[arg(long, default_value_t = 3e-3)]
    lr: f64,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    #[arg(long, value_enum, default_value = "none")]
    class_weights: ClassWeights,
    /// Fraction of the data held out to pick the best epoch (stratified for classes).
    #[arg(long, default_value_t = 0.1)]
    val_split: f64,
    /// Seed of initialization, split and batch order: one seed, one model.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Where to write the ONNX model.
    #[arg(short = 'o', long = "out")]
    out: PathBuf,
    /// Also compile it (no calibration needed) into OUT.fhe and print the report.
    #[arg(long)]
    compile: bool,
    /// With --compile: also write the compile report as JSON.
    #[arg(long)]
    report: Option<PathBuf>,
    /// With --compile: accumulators rounded to this many bits before their tables
    /// [default: --n-a-bits + 2].
    #[arg(long, value_parser = clap::value_parser!(u32).range(2..=16))]
    rounding_bits: Option<u32>,
    /// With --compile: encrypted-program settings; --rounding-method defaults to
    /// approximate here (low-bit activations tolerate an off-by-one table index).
    #[command(flatten)]
    fhe: FheArgs,
    /// Worker threads.
    #[arg(long)]
    threads: Option<usize>,
}

pub(super) fn run(a: TrainArgs) -> Result<()> {
    if !a.compile && (a.report.is_some() || a.rounding_bits.is_some() || a.fhe.is_set()) {
        return Err(CliError::Usage(
            "--report, --rounding-bits and the FHE settings apply to the compiled model: add --compile".into(),
        ));
    }
    set_threads(a.threads)?;
    let task = match a.task {
        TaskArg::Classification => Task::Classification,
        TaskArg::Regression => Task::Regression,
    };
    let opts = TrainOptions {
        task,
        n_layers: a.n_layers,
        n_hidden_multiplier: a.n_hidden_multiplier,
        n_w_bits: a.n_w_bits,
        n_a_bits: a.n_a_bits,
        n_accum_bits: (!a.no_pruning).then_some(a.n_accum_bits),
        prune_neurons: a.prune_neurons,
        activation: match a.activation {
            ActivationArg::Relu => Activation::Relu,
            ActivationArg::Sigmoid => Activation::Sigmoid,
            ActivationArg::Tanh => Activation::Tanh,
        },
        power_of_two: a.power_of_two,
        epochs: a.epochs,
        lr: a.lr,
        batch_size: a.batch_size,
        balanced: a.class_weights == ClassWeights::Balanced,
        val_split: a.val_split,
        seed: a.seed,
    };
    opts.validate().map_err(fhec::Error::from)?;
    let is_csv = a
        .input
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    let data =
        match (&a.labels, is_csv) {
            (Some(l), false) => train::load_npy(&a.input, l, task)?,
            (None, true) => train::load_csv(&a.input, a.target.as_deref(), task)?,
            (Some(_), true) => return Err(CliError::Usage(
                "a CSV input holds its targets: name the column with --target instead of --labels"
                    .into(),
            )),
            (None, false) => {
                return Err(CliError::Usage(format!(
            "`{}`: an .npy input needs --labels Y.npy (or give a CSV file with a target column)",
            a.input.display()
        )))
            }
        };
    if a.target.is_some() && !is_csv {
        return Err(CliError::Usage(
            "--target names a CSV column; with .npy input use --labels".into(),
        ));
    }
    let metric = match task {
        Task::Classification => "accuracy",
        Task::Regression => "R²",
    };
    println!(
        "train: {} samples × {} features from {}; {} layers, hidden {} × {}, {}-bit weights, {}-bit activations, {}",
        data.x.nrows(),
        data.x.ncols(),
        data.source,
        opts.n_layers,
        data.x.ncols(),
        opts.n_hidden_multiplier,
        opts.n_w_bits,
        opts.n_a_bits,
        match opts.n_accum_bits {
            Some(b) => format!("accumulators ≤ {b} bits (pruned)"),
            None => "no pruning".into(),
        }
    );
    let pb = indicatif::ProgressBar::new(opts.epochs as u64);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] epoch {pos}/{len} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let t0 = Instant::now();
    let t = train::train(&data, &opts, |e, _| {
        pb.set_position(e.epoch as u64);
        pb.set_message(format!(
            "loss {:.4}{}{}",
            e.loss,
            e.val
                .map_or(String::new(), |v| format!(", val {metric} {v:.2} %")),
            e.budget
                .map_or(String::new(), |b| format!(", budget {b} bits"))
        ));
    })?;
    pb.finish_and_clear();
    println!(
        "trained in {:.1} s; kept epoch {}{}",
        t0.elapsed().as_secs_f64(),
        t.chosen_epoch,
        t.val_score.map_or(String::new(), |v| format!(
            " (validation {metric} {v:.2} %, quantized)"
        ))
    );
    for (i, (kept, all, bits)) in t.layers.iter().enumerate() {
        println!(
            "  fc{i} {}→{}: {kept}/{all} weights kept, widest accumulator {bits} bits, {} neuron(s) reach an output (exported)",
            t.sizes[i],
            t.sizes[i + 1],
            t.live[i]
        );
    }
    std::fs::write(&a.out, &t.onnx).map_err(|e| fhec::Error::Write {
        path: a.out.display().to_string(),
        reason: e.to_string(),
    })?;
    println!("wrote {}", a.out.display());
    if a.compile {
        let rounding = a.rounding_bits.unwrap_or(opts.n_a_bits + 2);
        let mut fhe = FheOptions {
            rounding: Rounding::Approximate,
            ..FheOptions::default()
        };
        fhe = a.fhe.apply(fhe)?;
        println!(
            "compiling with --rounding-bits {rounding} --rounding-method {}",
            fhe.rounding.name()
        );
        let copts = CompileOptions {
            quant: QuantConfig {
                n_accum_bits: opts.n_accum_bits,
                rounding_bits: Some(rounding),
                ..QuantConfig::default()
            },
            fhe,
            limits: limits(),
            ..Default::default()
        };
        let m = fhec::compile(&a.out, &[], &copts)?;
        print!("{}", m.report().to_text());
        print_plan(&m.plan_info()?);
        let out = a.out.with_extension("fhe");
        m.save(&out)?;
        println!("wrote {}", out.display());
        if let Some(r) = &a.report {
            let werr = |e: String| fhec::Error::Write {
                path: r.display().to_string(),
                reason: e,
            };
            let json = serde_json::to_string_pretty(m.report()).map_err(|e| werr(e.to_string()))?;
            std::fs::write(r, json).map_err(|e| werr(e.to_string()))?;
            println!("wrote {}", r.display());
        }
    }
    Ok(())
}
