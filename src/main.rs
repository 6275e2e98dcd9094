//! The `fhec` command. Exit code 0 on success, 1 on any error (one line on stderr).

use clap::{Parser, Subcommand, ValueEnum};
use fhec::backend::{FheOptions, ParamsPolicy, Rounding};
use fhec::fhe::Plan;
use fhec::ir::{Limits, Op, ShapeFmt};
use fhec::runtime::files::{self, CT_LIMIT, KEY_LIMIT};
use fhec::runtime::{ClientKey, CompressedServerKey, EncryptedInputs, EncryptedOutputs};
use fhec::{npy, CompileOptions, CompiledModel, Error, Model, QuantConfig, Result};
use std::collections::BTreeMap;
use std::path::Path;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use std::time::Instant;

#[derive(Parser)]
#[command(
    name = "fhec",
    version,
    about = "Compile ONNX neural networks to TFHE circuits that run on encrypted data"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Largest tensor (elements) a model may declare or compute; four times this over all
    /// its tensors [default: 67108864 = 2^26].
    #[arg(long, global = true, value_parser = clap::value_parser!(u64).range(1..=1 << 40))]
    max_elements: Option<u64>,
}

/// The size limits of this process (`--max-elements`), set once in `main`.
static LIMITS: std::sync::OnceLock<Limits> = std::sync::OnceLock::new();

fn limits() -> Limits {
    LIMITS.get().copied().unwrap_or_default()
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// The original float graph (fhec's reference interpreter).
    Float,
    /// The quantized integer program, in the clear.
    Clear,
    /// Encrypted: keygen, encrypt, evaluate, decrypt.
    Fhe,
    /// The encrypted program in the clear, with approximate rounding's noise simulated
    /// (predicts fhe-mode accuracy; equals clear mode with exact rounding).
    Sim,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum MetricArg {
    /// Top-1 accuracy against class labels.
    Accuracy,
    /// Coefficient of determination against float targets (regression).
    R2,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RoundingArg {
    /// Bit for bit equal to clear mode: one extra bootstrap per dropped bit.
    Exact,
    /// The bootstrap's modulus switch drops the bits: no extra bootstrap; a table index may
    /// be off by one near a rounding boundary (predicted rate printed).
    Approximate,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ParamsArg {
    /// Searched for this circuit (128-bit security, --p-error per bootstrap).
    Optimized,
    /// The cheapest of tfhe 1.8's vetted Gaussian sets that meets --p-error.
    Vetted,
}

/// Settings of the encrypted program (stored in the compiled model).
#[derive(clap::Args, Clone, Default)]
struct FheArgs {
    /// Error probability of one bootstrap [default: 2^-40 = 9.1e-13].
    #[arg(long)]
    p_error: Option<f64>,
    /// Error probability of a whole sample, split over its bootstraps (replaces --p-error).
    #[arg(long)]
    global_p_error: Option<f64>,
    /// How accumulators drop their low bits before a table lookup [default: exact].
    #[arg(long, value_enum)]
    rounding_method: Option<RoundingArg>,
    /// Where the TFHE parameters come from [default: optimized].
    #[arg(long, value_enum)]
    params: Option<ParamsArg>,
    /// Approximate rounding: cap on the predicted rate of a table index off by one
    /// (e.g. 0.01); tighter costs larger parameters [default: no cap].
    #[arg(long)]
    max_off_by_one: Option<f64>,
}

impl FheArgs {
    fn apply(&self, mut o: FheOptions) -> Result<FheOptions> {
        if let Some(p) = self.p_error {
            o.p_error = p;
            o.global_p_error = None;
        }
        if let Some(g) = self.global_p_error {
            o.global_p_error = Some(g);
        }
        if let Some(r) = self.rounding_method {
            o.rounding = match r {
                RoundingArg::Exact => Rounding::Exact,
                RoundingArg::Approximate => Rounding::Approximate,
            };
        }
        if let Some(r) = self.max_off_by_one {
            o.max_off_by_one = r;
        }
        if let Some(p) = self.params {
            o.params = match p {
                ParamsArg::Optimized => ParamsPolicy::Optimized,
                ParamsArg::Vetted => ParamsPolicy::Vetted,
            };
        }
        o.validate().map_err(Error::Usage)?;
        Ok(o)
    }
    fn is_set(&self) -> bool {
        self.p_error.is_some()
            || self.global_p_error.is_some()
            || self.rounding_method.is_some()
            || self.params.is_some()
            || self.max_off_by_one.is_some()
    }
}

/// Quantization and compilation settings.
#[derive(clap::Args, Clone)]
struct CompileArgs {
    model: PathBuf,
    /// Calibration inputs (.npy, float32, axis 0 = samples), one per graph input; optional
    /// for a model that quantizes itself (QDQ, QONNX) everywhere.
    #[arg(long = "calib")]
    calib: Vec<PathBuf>,
    /// Bits of inputs, weights and activations.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(2..=16))]
    n_bits: u32,
    /// Bits of the inputs (overrides --n-bits).
    #[arg(long, value_parser = clap::value_parser!(u32).range(2..=16))]
    n_bits_inputs: Option<u32>,
    /// Bits of the weights (overrides --n-bits).
    #[arg(long, value_parser = clap::value_parser!(u32).range(2..=16))]
    n_bits_weights: Option<u32>,
    /// Bits of the activations (overrides --n-bits).
    #[arg(long, value_parser = clap::value_parser!(u32).range(2..=16))]
    n_bits_activations: Option<u32>,
    /// Round accumulators to this many bits before their table lookups.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=16))]
    rounding_bits: u32,
    /// Keep accumulators exact (wide ones are then refused, or pruned with --n-accum-bits).
    #[arg(long)]
    no_rounding: bool,
    /// Prune weights until every accumulator fits this many bits.
    #[arg(long, value_parser = clap::value_parser!(u32).range(2..=24))]
    n_accum_bits: Option<u32>,
    /// One weight scale per output channel.
    #[arg(long)]
    per_channel: bool,
    /// Widest table lookup accepted.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=16))]
    max_tlu_bits: u32,
    /// One layer's precision, `NAME=w4,i4,r5` (weights, input activations, rounding; any
    /// subset); repeat for more layers. NAME is the ONNX node name of a Gemm, MatMul, Conv or
    /// pooling node (`fhec inspect --dump` lists them).
    #[arg(long = "layer")]
    layers: Vec<String>,
    /// Per-layer precision as JSON: `{"layers": {"NAME": {"weight_bits": 4, "input_bits": 4,
    /// "rounding_bits": 5}}}`; `--layer` entries override it.
    #[arg(long)]
    precision: Option<PathBuf>,
    /// How table domains are sized: `calibrated` (the calibration range of each element
    /// widened by --range-margin; a value beyond it reads a wrapped table entry, counted by
    /// `run --mode clear`) or `proven` (the worst case: no value can leave its table, about
    /// two bits less precision).
    #[arg(long, value_enum, default_value = "calibrated")]
    ranges: RangesArg,
    /// With --ranges calibrated: widen each element's calibration range by this fraction of
    /// the layer's typical range on each side.
    #[arg(long, default_value_t = fhec::passes::QuantConfig::DEFAULT_MARGIN, value_parser = parse_margin)]
    range_margin: f32,
    /// Write the report as JSON.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Print the IR after these passes (e.g. quantize,fuse_tlu,round).
    #[arg(long, value_delimiter = ',')]
    dump_after: Vec<String>,
    /// Where to write the compiled model (default: MODEL.fhe beside the .onnx).
    #[arg(short = 'o', long = "out")]
    out: Option<PathBuf>,
    #[command(flatten)]
    fhe: FheArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum RangesArg {
    Calibrated,
    Proven,
}

impl From<RangesArg> for fhec::passes::RangePolicy {
    fn from(r: RangesArg) -> Self {
        match r {
            RangesArg::Calibrated => Self::Calibrated,
            RangesArg::Proven => Self::Proven,
        }
    }
}

fn parse_margin(s: &str) -> std::result::Result<f32, String> {
    let v: f32 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number (a fraction such as 0.25)"))?;
    if !(0.0..=16.0).contains(&v) {
        return Err(format!("{v} is outside [0, 16]"));
    }
    Ok(v)
}

#[derive(Subcommand)]
enum Cmd {
    /// Compile an ONNX model with calibration data into MODEL.fhe and print the report.
    /// `fhec MODEL.onnx --calib X.npy` is short for this.
    Compile(CompileArgs),
    /// Summarize a model: inputs, outputs, op counts, parameters.
    Inspect {
        model: PathBuf,
        /// Also print the IR, one node per line.
        #[arg(long)]
        dump: bool,
    },
    /// Run a model on inputs from .npy files (float32, axis 0 = batch).
    Run {
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
        #[command(flatten)]
        fhe: FheArgs,
    },
    /// Client: make a key pair for a compiled model (DIR/client.key, DIR/server.key).
    Keygen {
        model: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Client: quantize and encrypt inputs (.npy, axis 0 = samples).
    Encrypt {
        model: PathBuf,
        /// The client key.
        #[arg(long)]
        key: PathBuf,
        /// One per graph input, in graph-input order.
        #[arg(long = "input", required = true)]
        inputs: Vec<PathBuf>,
        /// Only the first N samples.
        #[arg(long)]
        samples: Option<usize>,
        #[arg(long)]
        out: PathBuf,
    },
    /// Server: run the model on encrypted inputs with the server key only.
    ServeRun {
        model: PathBuf,
        /// The server key.
        #[arg(long)]
        key: PathBuf,
        /// Encrypted inputs (from `fhec encrypt`).
        #[arg(long)]
        input: PathBuf,
        /// Encrypted outputs.
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Client: decrypt encrypted outputs into .npy files (one per graph output).
    Decrypt {
        model: PathBuf,
        /// The client key.
        #[arg(long)]
        key: PathBuf,
        /// Encrypted outputs (from `fhec serve-run`).
        #[arg(long)]
        input: PathBuf,
        #[arg(long = "output", required = true)]
        outputs: Vec<PathBuf>,
        /// Class labels (.npy, int): print the accuracy.
        #[arg(long)]
        labels: Option<PathBuf>,
    },
    /// Measure encrypted inference: keygen once, then N samples; checks each against clear
    /// mode.
    Bench {
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
    },
    /// Find the cheapest circuit whose validation score is at most --max-accuracy-drop points
    /// below the float model's; print the Pareto table, confirm the choice with a real
    /// encrypted sample, write it.
    Tune {
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
        /// Largest score drop below float, in points (percent).
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
    },
    /// Measure one keyswitch + bootstrap (one thread) at several table widths, with the
    /// optimizer's parameters and with tfhe's vetted sets.
    BenchPbs {
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
    },
}

fn main() -> ExitCode {
    // `fhec MODEL.onnx …` is `fhec compile MODEL.onnx …`
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args
        .get(1)
        .is_some_and(|a| a.to_string_lossy().ends_with(".onnx"))
    {
        args.insert(1, "compile".into());
    }
    // `fhec … | head` closes stdout early: end quietly, as other command-line tools do,
    // instead of panicking in println!. SAFETY: restoring a signal's default disposition
    // before any other thread exists has no preconditions.
    #[cfg(unix)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => {
            // --help, --version
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // one line, like every other error: clap's message and its hints, without the
            // usage block
            let text = e.render().to_string();
            let parts: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more"))
                .collect();
            let line = parts.join(" ");
            eprintln!("{}; see --help", line.trim_end_matches('.'));
            return ExitCode::from(1);
        }
    };
    if let Some(n) = cli.max_elements {
        let _ = LIMITS.set(Limits::with_max_elements(n as usize));
    }
    match run(cli.cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Inspect { model, dump } => inspect(&model, dump),
        Cmd::Compile(a) => compile(a),
        Cmd::Run {
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
            fhe,
        } => {
            set_threads(threads)?;
            let xs = read_inputs(&inputs, samples)?;
            let is_fhe = model.extension().is_some_and(|e| e == "fhe");
            // the compiled model, for the modes that need one
            let compiled = match (mode, is_fhe) {
                (Mode::Float, false) => None,
                (_, true) => Some(load_with(&model, &fhe)?),
                (_, false) if !calib.is_empty() => {
                    let c = calib.iter().map(|p| npy::read_f32(p)).collect::<Result<Vec<_>>>()?;
                    let t0 = Instant::now();
                    let opts = CompileOptions {
                        fhe: fhe.apply(FheOptions::default())?,
                        limits: limits(),
                        ..Default::default()
                    };
                    let (m, _) = fhec::compile(&model, &c, &opts)?;
                    print!("{}", m.report.to_text());
                    println!("compiled in {:.2} s", t0.elapsed().as_secs_f64());
                    Some(m)
                }
                (_, false) => {
                    return Err(Error::Usage(format!(
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
                return Err(Error::Usage(
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
                    println!("{}", ov.to_text());
                    ys
                }
                (Some(m), Mode::Fhe) => run_fhe(m, &xs)?,
                (Some(m), Mode::Sim) => {
                    let (ys, st) = m.run_simulated_with(&xs, seed, None)?;
                    println!(
                        "sim: {} bootstrap(s), {} table lookup(s) moved by an injected failure (p_error {:.2e} per bootstrap, seed {seed})",
                        st.bootstraps, st.failures, st.p_fail
                    );
                    ys
                }
            };
            let dt = t0.elapsed();
            println!(
                "{}: {n} sample(s) in {:.1} ms ({:.3} ms/sample)",
                mode_name(mode),
                dt.as_secs_f64() * 1e3,
                dt.as_secs_f64() * 1e3 / n.max(1) as f64
            );
            for (p, y) in outputs.iter().zip(&ys) {
                npy::write_f32(p, y)?;
                println!("wrote {} {}", p.display(), ShapeFmt(y.shape()));
            }
            if let Some((path, targets)) = labels {
                let report = |which: &str, y: &ndarray::ArrayD<f32>| -> Result<()> {
                    match &targets {
                        Targets::Classes(v) => {
                            let acc = fhec::accuracy(y, v)
                                .ok_or_else(|| labels_mismatch(&path, v.len(), y))?;
                            println!("accuracy ({which}): {acc:.4} on {} samples", v.len());
                        }
                        Targets::Values(t) => {
                            let r2 = fhec::tune::Metric::R2.score(y, t).map_err(|e| {
                                Error::Artifact {
                                    path: path.display().to_string(),
                                    reason: e.to_string(),
                                }
                            })?;
                            println!("R² ({which}): {:.4}", r2 / 100.0);
                        }
                    }
                    Ok(())
                };
                let y = ys
                    .first()
                    .ok_or_else(|| Error::Usage("the model has no output".into()))?;
                report(mode_name(mode), y)?;
                if let (Some(m), true) = (&compiled, mode != Mode::Float) {
                    if matches!(mode, Mode::Fhe | Mode::Sim) {
                        report("clear", &m.run_clear(&xs)?[0])?;
                    }
                    report("float", &m.run_float(&xs)?[0])?;
                }
            }
            Ok(())
        }
        Cmd::Keygen { model, out } => keygen_cmd(&model, &out),
        Cmd::Encrypt {
            model,
            key,
            inputs,
            samples,
            out,
        } => encrypt_cmd(&model, &key, &inputs, samples, &out),
        Cmd::ServeRun {
            model,
            key,
            input,
            out,
            threads,
        } => {
            set_threads(threads)?;
            serve_run_cmd(&model, &key, &input, &out)
        }
        Cmd::Decrypt {
            model,
            key,
            input,
            outputs,
            labels,
        } => decrypt_cmd(&model, &key, &input, &outputs, labels.as_deref()),
        Cmd::Bench {
            model,
            inputs,
            samples,
            json,
            threads,
            fhe,
        } => {
            set_threads(threads)?;
            bench_cmd(&model, &inputs, samples, json, &fhe)
        }
        Cmd::Tune {
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
            seed,
            confirm,
            threads,
            out,
        } => {
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
                seed,
                limits: limits(),
                ..Default::default()
            };
            tune_cmd(&model, &calib, &val, &val_labels, &opts, confirm, &out)
        }
        Cmd::BenchPbs {
            bits,
            norm2,
            p_error,
            reps,
            vetted,
            json,
        } => bench_pbs_cmd(&bits, norm2, p_error, reps, vetted, json),
    }
}

fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Float => "float",
        Mode::Clear => "clear",
        Mode::Fhe => "fhe",
        Mode::Sim => "sim",
    }
}

fn inspect(path: &std::path::Path, dump: bool) -> Result<()> {
    let m = Model::load_with_limits(path, &limits())?;
    let g = &m.graph;
    println!("model {}", m.source);
    for gi in &g.inputs {
        let ty = &g.g[gi.node].ty;
        println!(
            "  input  `{}`: {}{}",
            gi.name,
            ty,
            if gi.batch_dynamic {
                " (axis 0 = dynamic batch)"
            } else {
                ""
            }
        );
    }
    for go in &g.outputs {
        println!("  output `{}`: {}", go.name, g.g[go.node].ty);
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut params = 0usize;
    for n in g.g.node_weights() {
        match &n.op {
            Op::Const(t) => params += t.len(),
            Op::Input { .. } => {}
            op => *counts.entry(op.name()).or_default() += 1,
        }
    }
    let total: usize = counts.values().sum();
    println!("  {total} op(s), {params} parameter(s)");
    for (op, c) in counts {
        println!("    {op:<20} {c}");
    }
    if dump {
        print!("{}", g.dump());
    }
    Ok(())
}

fn compile(a: CompileArgs) -> Result<()> {
    // without --calib only a model that quantizes itself compiles; for any other the passes
    // name the first value without a grid and ask for calibration data
    let quant = QuantConfig {
        n_bits_inputs: a.n_bits_inputs.unwrap_or(a.n_bits),
        n_bits_weights: a.n_bits_weights.unwrap_or(a.n_bits),
        n_bits_activations: a.n_bits_activations.unwrap_or(a.n_bits),
        per_channel: a.per_channel,
        rounding_bits: (!a.no_rounding).then_some(a.rounding_bits),
        max_tlu_bits: a.max_tlu_bits,
        n_accum_bits: a.n_accum_bits,
        layers: layer_precision(a.precision.as_deref(), &a.layers)?,
        ranges: a.ranges.into(),
        range_margin: a.range_margin,
    };
    let calib = a
        .calib
        .iter()
        .map(|p| npy::read_f32(p))
        .collect::<Result<Vec<_>>>()?;
    let opts = CompileOptions {
        quant,
        dump_after: a.dump_after,
        fhe: a.fhe.apply(FheOptions::default())?,
        limits: limits(),
    };
    let t0 = Instant::now();
    let (m, dumps) = fhec::compile(&a.model, &calib, &opts)?;
    let dt = t0.elapsed();
    for d in dumps {
        print!("{d}");
    }
    print!("{}", m.report.to_text());
    match m.plan() {
        Ok(plan) => print_plan(plan),
        Err(e) => println!("encrypted execution: not available: {e}"),
    }
    let out = a.out.unwrap_or_else(|| a.model.with_extension("fhe"));
    m.save(&out)?;
    println!("wrote {} in {:.2} s", out.display(), dt.as_secs_f64());
    if let Some(r) = a.report {
        let werr = |e: String| Error::Write {
            path: r.display().to_string(),
            reason: e,
        };
        let json = serde_json::to_string_pretty(&m.report).map_err(|e| werr(e.to_string()))?;
        std::fs::write(&r, json).map_err(|e| werr(e.to_string()))?;
        println!("wrote {}", r.display());
    }
    Ok(())
}

/// Sizes the worker pool (`--threads`); default: rayon's (all cores, or RAYON_NUM_THREADS).
/// The per-layer precision of `--precision FILE.json` and `--layer NAME=SPEC` (later wins).
fn layer_precision(
    file: Option<&Path>,
    specs: &[String],
) -> Result<BTreeMap<String, fhec::passes::LayerPrecision>> {
    let mut layers = match file {
        None => BTreeMap::new(),
        Some(p) => {
            let bad = |reason: String| Error::Artifact {
                path: p.display().to_string(),
                reason,
            };
            let text = std::fs::read_to_string(p).map_err(|e| bad(format!("cannot read: {e}")))?;
            let cfg: fhec::passes::PrecisionFile = serde_json::from_str(&text).map_err(|e| {
                bad(format!(
                    "not a precision config ({e}); expected {{\"layers\": {{\"NAME\": {{\"weight_bits\": 4, \"input_bits\": 4, \"rounding_bits\": 5}}}}}}"
                ))
            })?;
            for (name, l) in &cfg.layers {
                l.check().map_err(|e| bad(format!("layer `{name}`: {e}")))?;
            }
            cfg.layers
        }
    };
    for spec in specs {
        let (name, bits) = spec.rsplit_once('=').ok_or_else(|| {
            Error::Usage(format!(
                "--layer `{spec}`: expected NAME=SPEC, e.g. --layer /fc1/Gemm=w4,i4,r5"
            ))
        })?;
        let p = fhec::passes::LayerPrecision::parse(bits)
            .map_err(|e| Error::Usage(format!("--layer `{spec}`: {e}")))?;
        layers.insert(name.to_string(), p);
    }
    Ok(layers)
}

fn set_threads(threads: Option<usize>) -> Result<()> {
    if let Some(t) = threads {
        if t == 0 {
            return Err(Error::Usage("--threads must be at least 1".into()));
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global()
            .map_err(|e| Error::Usage(format!("cannot start {t} threads: {e}")))?;
    }
    Ok(())
}

fn print_plan(plan: &Plan) {
    let prog = &plan.program;
    let c = &plan.choice;
    let pr = &c.params;
    println!(
        "encrypted program: {} table lookups{} = {} bootstraps per sample; tables of {} bits, {} message bits, {} rounding",
        prog.tlu_count,
        if prog.pbs_count > prog.tlu_count {
            format!(" + {} bit extractions", prog.pbs_count - prog.tlu_count)
        } else {
            String::new()
        },
        prog.pbs_count,
        prog.tlu_bits,
        prog.msg_bits,
        prog.rounding.name()
    );
    let parts = match &c.extract {
        Some(x) => format!("tables {pr}; bit extractions {x} (two partitions, keyswitched)"),
        None => format!("{pr} (one set for every bootstrap)"),
    };
    println!(
        "parameters ({}): {parts}; security {} bits (tfhe's lattice-estimator curves); p_error {:.2e} per bootstrap, {:.2e} per sample{}",
        c.source,
        c.security_bits,
        c.p_error,
        c.global_p_error,
        if c.off_by_one > 0.0 {
            format!("; off-by-one table index rate {:.1e} (approximate rounding)", c.off_by_one)
        } else {
            String::new()
        }
    );
    match &c.extract {
        Some(x) => println!(
            "estimated on one thread: {:.1} ms per table bootstrap, {:.2} ms per bit extraction, {:.2} s per sample",
            pr.est_ms_per_pbs(),
            x.est_ms(pr),
            c.est_ms / 1e3
        ),
        None => println!(
            "estimated: {:.1} ms per bootstrap on one thread, {:.2} s per sample on one thread",
            pr.est_ms_per_pbs(),
            c.est_ms / 1e3
        ),
    }
}

/// A progress bar on a terminal (hidden otherwise) counting table lookups.
/// What `run --labels` scores against.
enum Targets {
    /// Class indices (accuracy of the first output's argmax).
    Classes(Vec<i64>),
    /// Regression targets (R² of the first output).
    Values(ndarray::ArrayD<f32>),
}

/// Labels or regression targets as floats (int64, int32 or float32 `.npy`).
fn read_targets(path: &Path) -> Result<ndarray::ArrayD<f32>> {
    match npy::read_f32(path) {
        Ok(a) => Ok(a),
        Err(_) => {
            let v = npy::read_labels(path)?;
            Ok(ndarray::Array1::from_iter(v.iter().map(|&x| x as f32)).into_dyn())
        }
    }
}

fn tune_cmd(
    model: &Path,
    calib: &[PathBuf],
    val: &[PathBuf],
    labels: &Path,
    opts: &fhec::tune::TuneOptions,
    confirm: usize,
    out: &Path,
) -> Result<()> {
    if !(opts.max_drop >= 0.0 && opts.max_drop.is_finite()) {
        return Err(Error::Usage(format!(
            "--max-accuracy-drop must be a non-negative number of points, got {}",
            opts.max_drop
        )));
    }
    if let Some(b) = opts
        .n_bits
        .iter()
        .chain(&opts.rounding_bits)
        .find(|b| !(2..=16).contains(*b))
    {
        return Err(Error::Usage(format!(
            "--n-bits and --rounding-bits take values in [2, 16], got {b}"
        )));
    }
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
        "tune: {} candidates in {:.1} s; float {metric} {:.2} %, target ≥ {:.2} %",
        t.candidates.len(),
        t0.elapsed().as_secs_f64(),
        t.float_score,
        t.target
    );
    // the real benchmark of the cheapest passing candidates
    let mut measured: BTreeMap<usize, f64> = BTreeMap::new();
    for i in t.passing().into_iter().take(confirm) {
        // the chosen candidate's model is at hand; others are compiled again
        let other;
        let cm = if i == t.chosen {
            &t.model
        } else {
            other = fhec::tune::compile_candidate(&m, &calib, &t.candidates[i], &limits())?;
            &other
        };
        let session = cm.fhe_session()?;
        let sample = fhec::model::split_batch(&cm.float_graph, &xs)?
            .into_iter()
            .next()
            .ok_or_else(|| Error::Usage("the validation set is empty".into()))?;
        let q = fhec::ir::quantize_sample(&sample, &cm.input_quant);
        let (_, times) = session.run_sample(&q, None)?;
        measured.insert(i, times.evaluate.as_secs_f64() * 1e3);
    }
    println!(
        "{:>6} {:>9} {:>10} {:>7} {:>10} {:>7} {:>11} {:>5} {:>6} {:>7} {:>12} {:>12}",
        "n_bits",
        "rounding",
        "ranges",
        "layers",
        "method",
        "p_error",
        metric,
        "PBS",
        "table",
        "N",
        "est ms/smp",
        "measured ms"
    );
    for i in t.pareto() {
        let c = &t.candidates[i];
        println!(
            "{:>6} {:>9} {:>10} {:>7} {:>10} {:>7.0e} {:>10.2}% {:>5} {:>6} {:>7} {:>12.1} {:>12}{}",
            c.n_bits,
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
    let layers: String = c
        .config
        .layers
        .iter()
        .map(|(name, l)| format!(" --layer {name}={}", l.spec()))
        .collect();
    println!(
        "chosen: --n-bits {} --rounding-bits {} --ranges {}{layers} --rounding-method {} --p-error {:.1e} ({metric} {:.2} %, {} bootstraps, {}-bit tables)",
        c.n_bits,
        c.rounding_bits,
        c.config.ranges.name(),
        match c.rounding {
            Rounding::Exact => "exact",
            Rounding::Approximate => "approximate",
        },
        c.p_error,
        c.score,
        c.pbs_count,
        c.tlu_bits
    );
    t.model.save(out)?;
    println!("wrote {}", out.display());
    Ok(())
}

fn progress(len: u64) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::new(len);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} table lookups ({eta} left)",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    pb
}

/// A compiled model with the FHE settings given on the command line, if any, in place of
/// the stored ones.
fn load_with(path: &Path, fhe: &FheArgs) -> Result<CompiledModel> {
    let m = load_model(path)?;
    Ok(if fhe.is_set() {
        let o = fhe.apply(m.fhe.clone())?;
        m.with_fhe_options(o)
    } else {
        m
    })
}

fn load_model(path: &Path) -> Result<CompiledModel> {
    if path.extension().is_some_and(|e| e == "onnx") {
        return Err(Error::Usage(format!(
            "`{}` is an ONNX model; this command takes a compiled model: `fhec compile {} --calib CALIB.npy -o MODEL.fhe`",
            path.display(),
            path.display()
        )));
    }
    CompiledModel::load_with_limits(path, &limits())
}

/// Prefixes an error with the file it concerns.
fn in_file(path: &Path) -> impl Fn(Error) -> Error + '_ {
    move |e| match e {
        e @ (Error::Artifact { .. } | Error::Write { .. } | Error::Npy { .. }) => e,
        e => Error::Artifact {
            path: path.display().to_string(),
            reason: e.to_string(),
        },
    }
}

fn read_inputs(paths: &[PathBuf], samples: Option<usize>) -> Result<Vec<ndarray::ArrayD<f32>>> {
    paths
        .iter()
        .map(|p| {
            let x = npy::read_f32(p)?;
            Ok(match samples {
                Some(k) => {
                    let k = k.min(x.shape().first().copied().unwrap_or(0));
                    x.slice_axis(ndarray::Axis(0), ndarray::Slice::from(0..k))
                        .to_owned()
                }
                None => x,
            })
        })
        .collect()
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
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

/// Server key sizes per partition, one line.
fn key_sizes_line(k: &fhec::runtime::KeySizes) -> String {
    let m = |b: usize| mb(b as u64);
    let mut s = format!(
        "{:.1} MiB: tables {:.1} MiB (bootstrapping {:.1} + keyswitching {:.1})",
        m(k.total()),
        m(k.main_bsk + k.main_ksk),
        m(k.main_bsk),
        m(k.main_ksk)
    );
    if k.extract_bsk > 0 {
        s += &format!(
            ", bit extractions {:.1} MiB (bootstrapping {:.1} + keyswitching in {:.1} + out {:.1})",
            m(k.extract_bsk + k.extract_ksk + k.extract_fksk),
            m(k.extract_bsk),
            m(k.extract_ksk),
            m(k.extract_fksk)
        );
    }
    s + " expanded"
}

fn keygen_cmd(model: &Path, out: &Path) -> Result<()> {
    let m = load_model(model)?;
    let plan = m.plan()?;
    print_plan(plan);
    std::fs::create_dir_all(out).map_err(|e| Error::Write {
        path: out.display().to_string(),
        reason: e.to_string(),
    })?;
    let t0 = Instant::now();
    let (ck, sk) = m.keygen()?;
    let dt = t0.elapsed();
    let (cp, sp) = (out.join("client.key"), out.join("server.key"));
    let cb = files::save_secret(&ck, &cp)?;
    let sb = files::save(&sk, &sp)?;
    println!(
        "keygen: {:.2} s; wrote {} ({:.1} MiB, secret: keep it) and {} ({:.1} MiB seeded, for the server; {})",
        dt.as_secs_f64(),
        cp.display(),
        mb(cb),
        sp.display(),
        mb(sb),
        key_sizes_line(&sk.sizes())
    );
    Ok(())
}

fn encrypt_cmd(
    model: &Path,
    key: &Path,
    inputs: &[PathBuf],
    samples: Option<usize>,
    out: &Path,
) -> Result<()> {
    let m = load_model(model)?;
    let ck: ClientKey = files::load(key, "client key", KEY_LIMIT, &m.key_shape()?)?;
    m.check_key(&ck.info).map_err(in_file(key))?;
    let xs = read_inputs(inputs, samples)?;
    let t0 = Instant::now();
    let cts = m.encrypt(&ck, &xs)?;
    let dt = t0.elapsed();
    let bytes = files::save(&cts, out)?;
    println!(
        "encrypted {} sample(s) in {:.1} ms; wrote {} ({:.2} MiB)",
        cts.samples.len(),
        dt.as_secs_f64() * 1e3,
        out.display(),
        mb(bytes)
    );
    Ok(())
}

fn serve_run_cmd(model: &Path, key: &Path, input: &Path, out: &Path) -> Result<()> {
    let m = load_model(model)?;
    let t0 = Instant::now();
    let sk: CompressedServerKey = files::load(key, "server key", KEY_LIMIT, &m.key_shape()?)?;
    m.check_key(&sk.info).map_err(in_file(key))?;
    let sk = sk.expand();
    let t_key = t0.elapsed();
    let cts: EncryptedInputs = files::load(input, "encrypted input", CT_LIMIT, &m.input_shape()?)?;
    let plan = m.plan()?;
    let n = cts.samples.len();
    let pb = progress((plan.program.tlu_count * n) as u64);
    let t1 = Instant::now();
    let outs = m
        .evaluate_with_progress(&sk, &cts, Some(&pb))
        .map_err(in_file(input))?;
    let dt = t1.elapsed();
    pb.finish_and_clear();
    let bytes = files::save(&outs, out)?;
    let per = dt.as_secs_f64() / n.max(1) as f64;
    println!(
        "server key loaded in {:.2} s; evaluated {n} sample(s) in {:.2} s ({:.2} s per sample, {} bootstraps each, {:.1} ms per bootstrap, {} thread(s)); wrote {} ({:.2} MiB)",
        t_key.as_secs_f64(),
        dt.as_secs_f64(),
        per,
        plan.program.pbs_count,
        per * 1e3 / plan.program.pbs_count.max(1) as f64,
        rayon::current_num_threads(),
        out.display(),
        mb(bytes)
    );
    Ok(())
}

fn decrypt_cmd(
    model: &Path,
    key: &Path,
    input: &Path,
    outputs: &[PathBuf],
    labels: Option<&Path>,
) -> Result<()> {
    let m = load_model(model)?;
    let ck: ClientKey = files::load(key, "client key", KEY_LIMIT, &m.key_shape()?)?;
    m.check_key(&ck.info).map_err(in_file(key))?;
    let outs: EncryptedOutputs =
        files::load(input, "encrypted result", CT_LIMIT, &m.output_shape()?)?;
    let ys = m.decrypt(&ck, &outs).map_err(in_file(input))?;
    if outputs.len() != ys.len() {
        return Err(Error::Usage(format!(
            "the model has {} output(s); give one --output per output",
            ys.len()
        )));
    }
    for (p, y) in outputs.iter().zip(&ys) {
        npy::write_f32(p, y)?;
        println!("wrote {} {}", p.display(), ShapeFmt(y.shape()));
    }
    if let Some(l) = labels {
        let mut v = npy::read_labels(l)?;
        v.truncate(outs.samples.len());
        let acc = fhec::accuracy(&ys[0], &v).ok_or_else(|| labels_mismatch(l, v.len(), &ys[0]))?;
        println!("accuracy (fhe): {acc:.4} on {} samples", v.len());
    }
    Ok(())
}

fn labels_mismatch(path: &Path, n: usize, y: &ndarray::ArrayD<f32>) -> Error {
    Error::Usage(format!(
        "labels `{}` ({n} values) do not match the output {}; expected one class index per row of a [N, classes] output",
        path.display(),
        ShapeFmt(y.shape())
    ))
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

fn argmax(a: &ndarray::ArrayD<f32>) -> Option<usize> {
    a.iter()
        .enumerate()
        .max_by(|x, y| x.1.total_cmp(y.1))
        .map(|(i, _)| i)
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
                key_sizes_line(&session.key_sizes)
            )
        });
    }
    let mut tails = Vec::new();
    for (i, sample) in samples.iter().enumerate() {
        let q = fhec::ir::quantize_sample(sample, &m.input_quant);
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
            run.same_class += usize::from(argmax(&a.to_f32()) == argmax(&b.to_f32()));
        }
        tails.push(tail);
    }
    pb.finish_and_clear();
    run.outputs = fhec::model::join_batch(&m.float_graph, tails)?;
    Ok(run)
}

fn run_fhe(m: &CompiledModel, xs: &[ndarray::ArrayD<f32>]) -> Result<Vec<ndarray::ArrayD<f32>>> {
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
            "extract_bsk": run.key_sizes.extract_bsk,
            "extract_ksk": run.key_sizes.extract_ksk,
            "extract_fksk": run.key_sizes.extract_fksk,
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
