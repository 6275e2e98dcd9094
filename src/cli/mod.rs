//! The `fhec` command: one module per command. Exit code 0 on success, 1 on any error (one
//! line on stderr).

mod bench;
mod compile;
mod keys;
mod run;
#[cfg(feature = "serve")]
mod serve;
#[cfg(feature = "train")]
mod train;
mod tune;

use clap::{Parser, Subcommand, ValueEnum};
use fhec::ir::{Limits, Op, ShapeFmt};
use fhec::{
    npy, CompileOptions, CompiledModel, FheOptions, Model, ParamsPolicy, PlanInfo, QuantConfig,
    Rounding, TableSplit,
};
use std::collections::BTreeMap;
use std::path::Path;
use std::path::PathBuf;
use std::process::ExitCode;
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

/// What the command reports: the library's typed errors, or a command line that does not
/// make sense (one line each).
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    #[error(transparent)]
    Fhec(#[from] fhec::Error),
    #[error("{0}")]
    Usage(String),
    #[cfg(feature = "serve")]
    #[error(transparent)]
    Serve(#[from] fhec::serve::ServeError),
    #[cfg(feature = "serve")]
    #[error(transparent)]
    Client(#[from] fhec::serve::client::ClientError),
}

macro_rules! via_fhec {
    ($($t:ty),*) => {$(
        impl From<$t> for CliError {
            fn from(e: $t) -> Self {
                CliError::Fhec(e.into())
            }
        }
    )*};
}
via_fhec!(
    fhec::ArtifactError,
    fhec::BackendError,
    fhec::SettingError,
    fhec::ImportError
);

type Result<T, E = CliError> = std::result::Result<T, E>;

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

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SplitArg {
    /// Whichever the parameter search estimates faster.
    Auto,
    /// Always (optimized parameters): exact rounding splits each table into two bootstraps of one bit less; approximate rounding runs its rounded tables on a second, cheaper parameter set
    On,
    /// Never: every table on one set.
    Off,
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
    /// Exact rounding: run each table as two bootstraps of one bit less (its index's low bit
    /// extracted and used as a sign), so that the tables' parameter set can use a polynomial
    /// a quarter the size [default: auto, whichever is estimated faster].
    #[arg(long, value_enum)]
    split_tables: Option<SplitArg>,
}

impl FheArgs {
    /// These flags as library settings (the encrypted-program ones).
    fn settings(&self) -> fhec::Settings {
        fhec::Settings {
            p_error: self.p_error,
            global_p_error: self.global_p_error,
            rounding_method: self.rounding_method.map(|r| match r {
                RoundingArg::Exact => Rounding::Exact,
                RoundingArg::Approximate => Rounding::Approximate,
            }),
            params: self.params.map(|p| match p {
                ParamsArg::Optimized => ParamsPolicy::Optimized,
                ParamsArg::Vetted => ParamsPolicy::Vetted,
            }),
            max_off_by_one: self.max_off_by_one,
            split_tables: self.split_tables.map(|t| match t {
                SplitArg::Auto => TableSplit::Auto,
                SplitArg::On => TableSplit::On,
                SplitArg::Off => TableSplit::Off,
            }),
            ..Default::default()
        }
    }
    fn apply(&self, o: FheOptions) -> Result<FheOptions> {
        Ok(self.settings().fhe_options(o)?)
    }
    fn is_set(&self) -> bool {
        self.settings().sets_fhe()
    }
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

fn parse_percent(s: &str) -> std::result::Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number (a percentage such as 99)"))?;
    if !(0.0..=100.0).contains(&v) {
        return Err(format!("{v} is outside [0, 100]"));
    }
    Ok(v)
}

fn parse_factor(s: &str) -> std::result::Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number (a factor such as 2)"))?;
    if !(1.0..=1000.0).contains(&v) {
        return Err(format!("{v} is outside [1, 1000]"));
    }
    Ok(v)
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
    Compile(compile::CompileArgs),
    /// Summarize a model: inputs, outputs, op counts, parameters.
    Inspect(compile::InspectArgs),
    /// Run a model on inputs from .npy files (float32, axis 0 = batch).
    Run(run::RunArgs),
    /// Client: make a key pair for a compiled model (DIR/client.key, DIR/server.key).
    Keygen(keys::KeygenArgs),
    /// Client: quantize and encrypt inputs (.npy, axis 0 = samples).
    Encrypt(keys::EncryptArgs),
    /// Server: run the model on encrypted inputs with the server key only.
    ServeRun(keys::ServeRunArgs),
    /// Client: decrypt encrypted outputs into .npy files (one per graph output).
    Decrypt(keys::DecryptArgs),
    /// Measure encrypted inference: keygen once, then N samples; checks each against clear
    /// mode.
    Bench(bench::BenchArgs),
    /// Find the cheapest circuit whose estimated drop below the float model's score on unseen
    /// data is within --max-accuracy-drop points; print the Pareto table (with each
    /// candidate's 95 % confidence bound) and the margin, confirm the choice with a real
    /// encrypted sample, write it.
    Tune(tune::TuneArgs),
    /// Measure one keyswitch + bootstrap at several table widths: the optimizer's
    /// parameters and tfhe's vetted sets, classic, multi-bit and many-LUT, on 1..N threads.
    BenchPbs(bench::BenchPbsArgs),
    /// Train a quantization-aware network (2–4-bit weights and activations, accumulators
    /// kept within --n-accum-bits by pruning) on .npy or CSV data; write it as a QONNX model
    /// that `fhec compile` takes without calibration.
    #[cfg(feature = "train")]
    Train(train::TrainArgs),
    /// Serve compiled models over HTTP: clients upload evaluation keys once, then post
    /// encrypted inputs and get encrypted outputs (docs/serving.md).
    #[cfg(feature = "serve")]
    Serve(serve::ServeArgs),
    /// Talk to `fhec serve`: fetch a model, upload keys, run encrypted inference.
    #[cfg(feature = "serve")]
    #[command(subcommand)]
    Client(serve::ClientCmd),
}

pub fn main() -> ExitCode {
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
        Cmd::Inspect(a) => compile::inspect_cmd(a),
        Cmd::Compile(a) => compile::compile(a),
        Cmd::Run(a) => run::run(a),
        Cmd::Keygen(a) => keys::keygen(a),
        Cmd::Encrypt(a) => keys::encrypt(a),
        Cmd::ServeRun(a) => keys::serve_run(a),
        Cmd::Decrypt(a) => keys::decrypt(a),
        Cmd::Bench(a) => bench::bench(a),
        Cmd::Tune(a) => tune::run(a),
        Cmd::BenchPbs(a) => bench::bench_pbs(a),
        #[cfg(feature = "train")]
        Cmd::Train(a) => train::run(a),
        #[cfg(feature = "serve")]
        Cmd::Serve(a) => serve::serve(a),
        #[cfg(feature = "serve")]
        Cmd::Client(c) => serve::client(c),
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

fn set_threads(threads: Option<usize>) -> Result<()> {
    if let Some(t) = threads {
        if t == 0 {
            return Err(CliError::Usage("--threads must be at least 1".into()));
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global()
            .map_err(|e| CliError::Usage(format!("cannot start {t} threads: {e}")))?;
    }
    Ok(())
}

fn print_plan(info: &PlanInfo) {
    print!("{}", info.to_text());
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
        let o = fhe.apply(m.fhe_options().clone())?;
        m.with_fhe_options(o)?
    } else {
        m
    })
}

fn load_model(path: &Path) -> Result<CompiledModel> {
    if path.extension().is_some_and(|e| e == "onnx") {
        return Err(CliError::Usage(format!(
            "`{}` is an ONNX model; this command takes a compiled model: `fhec compile {} --calib CALIB.npy -o MODEL.fhe`",
            path.display(),
            path.display()
        )));
    }
    Ok(CompiledModel::load_with_limits(path, &limits())?)
}

/// Names the file an error is about.
fn in_file(path: &Path) -> impl Fn(fhec::Error) -> CliError + '_ {
    move |e| CliError::Fhec(e.in_file(path))
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

fn labels_mismatch(path: &Path, n: usize, y: &ndarray::ArrayD<f32>) -> CliError {
    CliError::Usage(format!(
        "labels `{}` ({n} values) do not match the output {}; expected one class index per row of a [N, classes] output",
        path.display(),
        ShapeFmt(y.shape())
    ))
}
