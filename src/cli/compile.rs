//! `fhec compile` and `fhec inspect`.

use super::*;

/// Quantization and compilation settings.
#[derive(clap::Args, Clone)]
pub(super) struct CompileArgs {
    model: PathBuf,
    /// Calibration inputs (.npy, float32, axis 0 = samples), one per graph input; optional
    /// for a model that quantizes itself (QDQ, QONNX) everywhere.
    #[arg(long = "calib")]
    calib: Vec<PathBuf>,
    /// Bits of inputs, weights and activations [default: 6]. Setting any precision flag
    /// (this, the other --n-bits-*, --rounding-bits, --layer, --precision) keeps the
    /// precision as given: compile then does not raise it to agree with float.
    #[arg(long, value_parser = clap::value_parser!(u32).range(2..=16))]
    n_bits: Option<u32>,
    /// Bits of the inputs (overrides --n-bits).
    #[arg(long, value_parser = clap::value_parser!(u32).range(2..=16))]
    n_bits_inputs: Option<u32>,
    /// Bits of the weights (overrides --n-bits).
    #[arg(long, value_parser = clap::value_parser!(u32).range(2..=16))]
    n_bits_weights: Option<u32>,
    /// Bits of the activations (overrides --n-bits).
    #[arg(long, value_parser = clap::value_parser!(u32).range(2..=16))]
    n_bits_activations: Option<u32>,
    /// Bits of the weights of a layer the client decrypts (the last layer: no table reads
    /// it), default weights + 4. It runs as limbs of --n-bits-weights bits, each decrypted on
    /// its own and summed by the client, so the precision costs no bootstrap; a layer's own
    /// `--layer NAME=wK` wins.
    #[arg(long, value_parser = clap::value_parser!(u32).range(2..=16))]
    n_bits_decrypted: Option<u32>,
    /// Round accumulators to this many bits before their table lookups [default: 6].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=16))]
    rounding_bits: Option<u32>,
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
    /// For a model that quantizes itself (QDQ, QOperator, QONNX): ignore its grids and
    /// compile the float model it approximates on fhec's own --n-bits grids, from --calib
    /// data. Onnxruntime's int8 models need it for exact rounding (their 8-bit × 8-bit
    /// accumulators are too wide to round exactly); their clip ranges (ReLU) are kept.
    #[arg(long)]
    requantize: bool,
    /// Aim for float's decisions: when clear mode's top-1 agreement with float on the
    /// calibration data is below this many percent, raise precision per layer (within
    /// --max-cost-factor); 0 keeps the default precision. Applies when no precision flag is
    /// given.
    #[arg(long, default_value_t = 99.0, value_parser = parse_percent)]
    agreement_target: f64,
    /// The most that raising precision may multiply the estimated latency by.
    #[arg(long, default_value_t = fhec::AutoOptions::DEFAULT_COST_FACTOR, value_parser = parse_factor)]
    max_cost_factor: f64,
    /// Compile exactly the settings given: no fallback plan when the rounding method has
    /// none (an error instead), no precision raised. An explicit --rounding-method also
    /// turns the fallback off.
    #[arg(long)]
    no_auto: bool,
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

#[derive(clap::Args)]
pub(super) struct InspectArgs {
    model: PathBuf,
    /// Also print the IR, one node per line.
    #[arg(long)]
    dump: bool,
}

pub(super) fn inspect_cmd(a: InspectArgs) -> Result<()> {
    inspect(&a.model, a.dump)
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
            if gi.batched {
                " (axis 0 = batch: N samples run one by one)"
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

pub(super) fn compile(a: CompileArgs) -> Result<()> {
    // without --calib only a model that quantizes itself compiles; for any other the passes
    // name the first value without a grid and ask for calibration data
    let mut layers = BTreeMap::new();
    if let Some(p) = &a.precision {
        for (name, l) in precision_file(p)? {
            layers.insert(name, l.spec());
        }
    }
    for spec in &a.layers {
        let (name, bits) = spec.rsplit_once('=').ok_or_else(|| {
            CliError::Usage(format!(
                "--layer `{spec}`: expected NAME=SPEC, e.g. --layer /fc1/Gemm=w4,i4,r5"
            ))
        })?;
        layers.insert(name.to_string(), bits.to_string());
    }
    let settings = fhec::Settings {
        n_bits: a.n_bits,
        n_bits_inputs: a.n_bits_inputs,
        n_bits_weights: a.n_bits_weights,
        n_bits_activations: a.n_bits_activations,
        n_bits_decrypted: a.n_bits_decrypted,
        rounding_bits: a.rounding_bits,
        no_rounding: a.no_rounding,
        n_accum_bits: a.n_accum_bits,
        per_channel: a.per_channel,
        max_tlu_bits: Some(a.max_tlu_bits),
        layers,
        ranges: Some(a.ranges.into()),
        range_margin: Some(a.range_margin),
        requantize: a.requantize,
        agreement_target: Some(a.agreement_target),
        max_cost_factor: Some(a.max_cost_factor),
        no_auto: a.no_auto,
        ..a.fhe.settings()
    };
    let calib = a
        .calib
        .iter()
        .map(|p| npy::read_f32(p))
        .collect::<fhec::Result<Vec<_>>>()?;
    let mut opts = settings.options()?;
    opts.dump_after = a.dump_after;
    opts.limits = limits();
    let t0 = Instant::now();
    let model = Model::load_with_limits(&a.model, &opts.limits)?;
    let (m, dumps) = fhec::compile_traced(&model, &calib, &opts)?;
    let dt = t0.elapsed();
    for d in dumps {
        print!("{d}");
    }
    print!("{}", m.report().to_text());
    print_plan(&m.plan_info()?);
    let out = a.out.unwrap_or_else(|| a.model.with_extension("fhe"));
    m.save(&out)?;
    println!("wrote {} in {:.2} s", out.display(), dt.as_secs_f64());
    if let Some(r) = a.report {
        let werr = |e: String| fhec::Error::Write {
            path: r.display().to_string(),
            reason: e,
        };
        let json = serde_json::to_string_pretty(m.report()).map_err(|e| werr(e.to_string()))?;
        std::fs::write(&r, json).map_err(|e| werr(e.to_string()))?;
        println!("wrote {}", r.display());
    }
    Ok(())
}

/// The per-layer precision of `--precision FILE.json`.
fn precision_file(p: &Path) -> Result<BTreeMap<String, fhec::LayerPrecision>> {
    let bad = |reason: String| CliError::Usage(format!("`{}`: {reason}", p.display()));
    let text = std::fs::read_to_string(p).map_err(|e| bad(format!("cannot read: {e}")))?;
    let cfg: fhec::passes::PrecisionFile = serde_json::from_str(&text).map_err(|e| {
        bad(format!(
            "not a precision config ({e}); expected {{\"layers\": {{\"NAME\": {{\"weight_bits\": 4, \"input_bits\": 4, \"rounding_bits\": 5}}}}}}"
        ))
    })?;
    for (name, l) in &cfg.layers {
        l.check().map_err(|e| bad(format!("layer `{name}`: {e}")))?;
    }
    Ok(cfg.layers)
}
