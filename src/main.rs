//! The `fhec` command. Exit code 0 on success, 1 on any error (one line on stderr).

use clap::{Parser, Subcommand, ValueEnum};
use fhec::ir::{Op, ShapeFmt};
use fhec::{npy, Error, Model, Result};
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

#[derive(Subcommand)]
enum Cmd {
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
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
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
        Cmd::Run {
            model,
            inputs,
            outputs,
            mode,
            labels,
        } => {
            if mode != Mode::Float {
                return Err(Error::Usage(format!(
                    "--mode {} needs a compiled model; this build runs --mode float only",
                    if mode == Mode::Clear { "clear" } else { "fhe" }
                )));
            }
            let m = Model::load(&model)?;
            let xs = inputs
                .iter()
                .map(|p| npy::read_f32(p))
                .collect::<Result<Vec<_>>>()?;
            let t0 = Instant::now();
            let ys = m.run_float(&xs)?;
            let dt = t0.elapsed();
            let n = xs
                .first()
                .map_or(0, |x| x.shape().first().copied().unwrap_or(1));
            println!(
                "float: {n} sample(s) in {:.1} ms ({:.3} ms/sample)",
                dt.as_secs_f64() * 1e3,
                dt.as_secs_f64() * 1e3 / n.max(1) as f64
            );
            for (p, y) in outputs.iter().zip(&ys) {
                npy::write_f32(p, y)?;
                println!("wrote {} {}", p.display(), ShapeFmt(y.shape()));
            }
            if let Some(l) = labels {
                let labels = npy::read_labels(&l)?;
                let y = ys
                    .first()
                    .ok_or_else(|| Error::Usage("the model has no output".into()))?;
                let acc = fhec::accuracy(y, &labels).ok_or_else(|| {
                    Error::Usage(format!(
                        "labels `{}` ({} values) do not match the output {}; expected one class index per row of a [N, classes] output",
                        l.display(),
                        labels.len(),
                        ShapeFmt(y.shape())
                    ))
                })?;
                println!("accuracy (float): {:.4} on {} samples", acc, labels.len());
            }
            Ok(())
        }
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
