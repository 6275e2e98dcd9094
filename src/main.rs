//! The `fhec` command. Exit code 0 on success, 1 on any error (one line on stderr).

use clap::{Parser, Subcommand, ValueEnum};
use fhec::ir::{Op, ShapeFmt};
use fhec::{npy, CompileOptions, CompiledModel, Error, Model, QuantConfig, Result};
use std::collections::BTreeMap;
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
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// The original float graph (fhec's reference interpreter).
    Float,
    /// The quantized integer program, in the clear.
    Clear,
    /// Encrypted: keygen, encrypt, evaluate, decrypt.
    Fhe,
}

/// Quantization and compilation settings.
#[derive(clap::Args, Clone)]
struct CompileArgs {
    model: PathBuf,
    /// Calibration inputs (.npy, float32, axis 0 = samples), one per graph input.
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
    /// Write the report as JSON.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Print the IR after these passes (e.g. quantize,fuse_tlu,round).
    #[arg(long, value_delimiter = ',')]
    dump_after: Vec<String>,
    /// Where to write the compiled model (default: MODEL.fhe beside the .onnx).
    #[arg(short = 'o', long = "out")]
    out: Option<PathBuf>,
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
        /// fhe mode: error probability of one bootstrap (e.g. 2^-40 = 9.1e-13).
        #[arg(long, default_value_t = 2f64.powi(-40))]
        p_error: f64,
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
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
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
            p_error,
        } => {
            let mut xs = inputs
                .iter()
                .map(|p| npy::read_f32(p))
                .collect::<Result<Vec<_>>>()?;
            if let Some(k) = samples {
                xs = xs
                    .into_iter()
                    .map(|x| {
                        let k = k.min(x.shape().first().copied().unwrap_or(0));
                        x.slice_axis(ndarray::Axis(0), ndarray::Slice::from(0..k))
                            .to_owned()
                    })
                    .collect();
            }
            let is_fhe = model.extension().is_some_and(|e| e == "fhe");
            // the compiled model, for the modes that need one
            let compiled = match (mode, is_fhe) {
                (Mode::Float, false) => None,
                (_, true) => Some(CompiledModel::load(&model)?),
                (_, false) if !calib.is_empty() => {
                    let c = calib.iter().map(|p| npy::read_f32(p)).collect::<Result<Vec<_>>>()?;
                    let t0 = Instant::now();
                    let (m, _) = fhec::compile(&model, &c, &CompileOptions::default())?;
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
            let labels = labels
                .map(|l| {
                    npy::read_labels(&l).map(|mut v| {
                        if let Some(k) = samples {
                            v.truncate(k);
                        }
                        (l, v)
                    })
                })
                .transpose()?;
            let n = xs
                .first()
                .map_or(0, |x| x.shape().first().copied().unwrap_or(1));
            let t0 = Instant::now();
            let ys = match (&compiled, mode) {
                (None, _) => Model::load(&model)?.run_float(&xs)?,
                (Some(m), Mode::Float) => m.run_float(&xs)?,
                (Some(m), Mode::Clear) => m.run_clear(&xs)?,
                (Some(m), Mode::Fhe) => run_fhe(m, &xs, p_error)?,
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
            if let Some((path, labels)) = labels {
                let acc = |y: &ndarray::ArrayD<f32>| {
                    fhec::accuracy(y, &labels).ok_or_else(|| {
                        Error::Usage(format!(
                            "labels `{}` ({} values) do not match the output {}; expected one class index per row of a [N, classes] output",
                            path.display(),
                            labels.len(),
                            ShapeFmt(y.shape())
                        ))
                    })
                };
                let y = ys
                    .first()
                    .ok_or_else(|| Error::Usage("the model has no output".into()))?;
                println!(
                    "accuracy ({}): {:.4} on {} samples",
                    mode_name(mode),
                    acc(y)?,
                    labels.len()
                );
                if let (Some(m), true) = (&compiled, mode != Mode::Float) {
                    if mode == Mode::Fhe {
                        let yc = m.run_clear(&xs)?;
                        println!(
                            "accuracy (clear): {:.4} on {} samples",
                            acc(&yc[0])?,
                            labels.len()
                        );
                    }
                    let yf = m.run_float(&xs)?;
                    println!(
                        "accuracy (float): {:.4} on {} samples",
                        acc(&yf[0])?,
                        labels.len()
                    );
                }
            }
            Ok(())
        }
    }
}

fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Float => "float",
        Mode::Clear => "clear",
        Mode::Fhe => "fhe",
    }
}

fn inspect(path: &std::path::Path, dump: bool) -> Result<()> {
    let m = Model::load(path)?;
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
    if a.calib.is_empty() {
        return Err(Error::Usage(format!(
            "compiling needs calibration data: `fhec compile {} --calib X.npy` (a few hundred representative inputs, float32, axis 0 = samples)",
            a.model.display()
        )));
    }
    let quant = QuantConfig {
        n_bits_inputs: a.n_bits_inputs.unwrap_or(a.n_bits),
        n_bits_weights: a.n_bits_weights.unwrap_or(a.n_bits),
        n_bits_activations: a.n_bits_activations.unwrap_or(a.n_bits),
        per_channel: a.per_channel,
        rounding_bits: (!a.no_rounding).then_some(a.rounding_bits),
        max_tlu_bits: a.max_tlu_bits,
        n_accum_bits: a.n_accum_bits,
    };
    let calib = a
        .calib
        .iter()
        .map(|p| npy::read_f32(p))
        .collect::<Result<Vec<_>>>()?;
    let opts = CompileOptions {
        quant,
        dump_after: a.dump_after,
    };
    let t0 = Instant::now();
    let (m, dumps) = fhec::compile(&a.model, &calib, &opts)?;
    let dt = t0.elapsed();
    for d in dumps {
        print!("{d}");
    }
    print!("{}", m.report.to_text());
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

/// Keygen, then encrypt → evaluate → decrypt each sample, checking it against clear mode.
fn run_fhe(
    m: &CompiledModel,
    xs: &[ndarray::ArrayD<f32>],
    p_error: f64,
) -> Result<Vec<ndarray::ArrayD<f32>>> {
    let t0 = Instant::now();
    let session = m.fhe_session(p_error)?;
    let prog = &session.program;
    let c = &session.choice;
    let pr = &c.params;
    println!(
        "fhe: {} table lookups + {} bit extractions = {} bootstraps per sample; tables of {} bits, {} message bits",
        prog.tlu_count,
        prog.pbs_count - prog.tlu_count,
        prog.pbs_count,
        prog.tlu_bits,
        prog.msg_bits
    );
    println!(
        "parameters: n={} k={} N={} pbs {}x{} ks {}x{}; security 128 bits (tfhe 132-bit curves), p_error {:.2e} per bootstrap, {:.2e} per sample",
        pr.lwe_dimension,
        pr.glwe_dimension,
        pr.polynomial_size,
        pr.pbs_level,
        pr.pbs_base_log,
        pr.ks_level,
        pr.ks_base_log,
        c.p_error,
        c.global_p_error
    );
    println!(
        "keygen: {:.2} s (plan {:.2} s)",
        session.keygen_time.as_secs_f64(),
        (t0.elapsed() - session.keygen_time).as_secs_f64()
    );
    let mut exact = 0usize;
    let mut total = 0usize;
    let mut eval_time = std::time::Duration::ZERO;
    let outs =
        fhec::model::run_batched(&m.float_graph, xs, |sample| {
            let q = fhec::ir::quantize_sample(sample, &m.input_quant);
            let (ints, t) = session.run_sample(&q)?;
            let want = m.boundary_clear(prog, &q)?;
            total += 1;
            exact += usize::from(ints == want);
            eval_time += t.evaluate;
            println!(
            "sample {total}: encrypt {:.1} ms, evaluate {:.2} s, decrypt {:.1} ms, {} clear mode",
            t.encrypt.as_secs_f64() * 1e3,
            t.evaluate.as_secs_f64(),
            t.decrypt.as_secs_f64() * 1e3,
            if ints == want { "equals" } else { "DIFFERS FROM" }
        );
            m.client_tail(prog, &ints)
        })?;
    let per = eval_time.as_secs_f64() / total.max(1) as f64;
    println!(
        "fhe: {exact}/{total} samples equal clear mode bit for bit; {:.2} s per sample, {:.1} ms per bootstrap, {} thread(s)",
        per,
        per * 1e3 / prog.pbs_count.max(1) as f64,
        rayon::current_num_threads()
    );
    Ok(outs)
}
