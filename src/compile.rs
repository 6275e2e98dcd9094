//! Compilation: ONNX + calibration data → [`CompiledModel`] (the integer program, the
//! client's quantization parameters, the report), and the versioned `.fhe` artifact.

use crate::error::{Error, Result};
use crate::model::{run_batched, Model};
use bincode::Options as _;
use fhec_ir::{
    eval_f32, eval_int, DType, Graph, Interval, Limits, NodeIndex, Op, QuantParams, ShapeFmt,
    Tensor,
};
use fhec_passes::{PassContext, Pipeline, QuantConfig};
use ndarray::ArrayD;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// Options of [`compile`].
#[derive(Clone, Debug, Default)]
pub struct CompileOptions {
    pub quant: QuantConfig,
    /// Passes after which to print the IR (`--dump-after`).
    pub dump_after: Vec<String>,
    /// Encrypted-program settings (error probability, rounding method, parameter source),
    /// stored in the compiled model.
    pub fhe: crate::backend::FheOptions,
    /// Size limits on the imported model (`--max-elements`).
    pub limits: Limits,
}

/// One row of the compile report: a layer (integer accumulator) or a table-lookup group.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerReport {
    pub layer: String,
    pub op: String,
    pub shape: Vec<usize>,
    /// Accumulator width, worst case (bits of `hi − lo`, widest element).
    pub acc_bits: Option<u32>,
    /// Accumulator width observed on the calibration set (widest element).
    pub acc_bits_observed: Option<u32>,
    /// Accumulator width the tables were sized for (the range policy's interval, before
    /// rounding; the proven width under `--ranges proven`).
    #[serde(default)]
    pub acc_bits_used: Option<u32>,
    /// Low bits dropped by rounding before the tables.
    pub rounded_bits: u32,
    /// Table lookups (programmable bootstraps) fed by this layer.
    pub tlu_count: usize,
    /// Distinct tables among them.
    pub tables: usize,
    /// Table input width after rounding.
    pub tlu_input_bits: Option<u32>,
    /// A layer's own precision: weight bits, input activation bits, rounding bits (`None`
    /// for table-only rows; rounding `None` = exact).
    pub precision: Option<(u32, u32, Option<u32>)>,
}

/// The compile report (also written as JSON with `--report`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompileReport {
    pub model: String,
    pub config: QuantConfig,
    pub layers: Vec<LayerReport>,
    /// Total table lookups per sample = programmable bootstraps per sample.
    pub pbs_count: usize,
    /// Widest table-lookup input.
    pub max_tlu_bits: u32,
    /// Integers the client decrypts, with their widths.
    pub outputs: Vec<(String, u32)>,
    /// What runs on the client after decryption (op → count).
    pub client_ops: BTreeMap<String, usize>,
    /// What runs on the client before quantizing (the float head), node by node.
    pub client_head: Vec<String>,
    /// Power-of-two requantizations folded into rounding (`round`): the layer, the shift in
    /// bits, and whether its integer bias moved into the accumulator.
    pub shifts: Vec<(String, u32, bool)>,
    /// Weights zeroed by pruning, per layer.
    pub pruned: Vec<(String, usize)>,
    /// Top-1 agreement of clear mode with float on the calibration set (classifiers).
    pub calib_agreement: Option<f64>,
}

/// Table reads beyond their domains in a clear run ([`CompiledModel::run_clear_counted`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Overflows {
    pub samples: usize,
    /// Samples with at least one read beyond a domain.
    pub samples_hit: usize,
    pub reads: usize,
    pub outside: usize,
    /// Per layer (the node feeding the tables): reads beyond the domain, all reads.
    pub by_layer: BTreeMap<String, (usize, usize)>,
}

impl Overflows {
    /// One line for the run's output, then one per layer that overflowed.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "reads beyond their domain (tables, decrypted windows): {} of {} ({:.4}%), in {} of {} sample(s)",
            self.outside,
            self.reads,
            100.0 * self.outside as f64 / self.reads.max(1) as f64,
            self.samples_hit,
            self.samples
        );
        for (l, (o, r)) in &self.by_layer {
            if *o > 0 {
                s.push_str(&format!("\n  `{l}`: {o} of {r}"));
            }
        }
        s
    }
}

/// A compiled model: everything the client and the server need, and nothing secret.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CompiledModel {
    /// The canonicalized float graph (`--mode float`).
    pub float_graph: Graph,
    /// The integer program, with the client-side float tail (dequantization, Softmax, …).
    pub program: Graph,
    /// Float preprocessing the client runs on its inputs before quantizing them (a
    /// standardization chain cut off the graph: `fhec_passes::client_head`); the program's
    /// inputs are this graph's outputs.
    pub head: Option<Graph>,
    /// How the client quantizes each input (after the head).
    pub input_quant: Vec<QuantParams>,
    pub report: CompileReport,
    /// How the encrypted program is built and parameterized.
    pub fhe: crate::backend::FheOptions,
    /// The TFHE parameters chosen when the model was saved (every partition), so that
    /// keygen, encryption, serving and decryption check them instead of searching again
    /// ([`crate::backend::partition::verify`]); `None` when encrypted execution was not
    /// available or the settings changed since.
    pub params: Option<crate::backend::params::Choice>,
    /// The lowered program and its parameters, made on first use.
    #[serde(skip)]
    pub(crate) plan: std::sync::OnceLock<crate::fhe::Plan>,
}

const MAGIC: &[u8; 8] = b"FHEC\x00MDL";
/// Largest compiled-model file read (bytes).
pub const MODEL_LIMIT: u64 = 1 << 32;
/// Bumped whenever the artifact layout changes (8: a stored two-partition plan keeps the
/// registers under the extraction set's key, its return keyswitch runs after each table;
/// 9: a stored plan may put approximate rounding's rounded tables on its second partition;
/// 10: the stored config holds `n_bits_decrypted`; 11: and `requantize`).
pub const FORMAT_VERSION: u32 = 11;

/// Compiles a model: import, then the pass pipeline on `calib` (one array per graph input,
/// axis 0 = samples).
///
/// # Errors
/// Import errors; calibration data that does not fit the inputs; a pass refusing the model
/// (unsupported op, accumulator over budget), each naming the node and the fix.
pub fn compile(
    model: &Path,
    calib: &[ArrayD<f32>],
    opts: &CompileOptions,
) -> Result<(CompiledModel, Vec<String>)> {
    let m = Model::load_with_limits(model, &opts.limits)?;
    compile_model(&m, calib, opts)
}

/// [`compile`] on an already imported model.
///
/// # Errors
/// As [`compile`].
pub fn compile_model(
    m: &Model,
    calib: &[ArrayD<f32>],
    opts: &CompileOptions,
) -> Result<(CompiledModel, Vec<String>)> {
    // no calibration data: only for models that carry their own grids (the passes say
    // which value lacks one)
    let samples = if calib.is_empty() {
        Vec::new()
    } else {
        split_samples(&m.graph, calib)?
    };
    // the float graph after canonicalization is what --mode float runs; the program starts
    // from it, with the client's float preprocessing cut off (calibration sees its outputs)
    let mut float_graph = m.graph.clone();
    let mut fcx = PassContext::new(opts.quant.clone(), Vec::new());
    fhec_passes::Pass::run(
        &fhec_passes::canonicalize::Canonicalize,
        &mut float_graph,
        &mut fcx,
    )?;
    let mut g = float_graph.clone();
    // `--requantize`: the model's own grids become their clips before the client's head is
    // cut off, so that a clip on an input is the client's
    fhec_passes::Pass::run(&fhec_passes::drop_grids::DropGrids, &mut g, &mut fcx)?;
    let head = fhec_passes::client_head::split_head(&mut g)?;
    let samples = match &head {
        None => samples,
        Some(h) => samples
            .iter()
            .map(|s| eval_f32(h, s))
            .collect::<std::result::Result<Vec<_>, _>>()?,
    };
    let mut cx = PassContext::new(opts.quant.clone(), samples);
    let pipeline = Pipeline::standard();
    let dumps = pipeline.run(&mut g, &mut cx, &opts.dump_after)?;
    let mut report = build_report(&m.source, &g, &cx, &float_graph)?;
    if let Some(h) = &head {
        report.client_head = h
            .topo()?
            .into_iter()
            .filter(|&n| !matches!(h.g[n].op, Op::Input { .. } | Op::Const(_)))
            .map(|n| format!("{} `{}`", h.g[n].op.name(), h.g[n].name))
            .collect();
    }
    Ok((
        CompiledModel {
            float_graph,
            program: g,
            head,
            input_quant: cx.input_quant.clone(),
            report,
            fhe: opts.fhe.clone(),
            params: None,
            plan: std::sync::OnceLock::new(),
        },
        dumps,
    ))
}

/// Splits calibration arrays into single samples (batch axis of size 1).
fn split_samples(g: &Graph, calib: &[ArrayD<f32>]) -> Result<Vec<Vec<Tensor>>> {
    let mut out: Vec<Vec<Tensor>> = Vec::new();
    run_batched(g, calib, |sample| {
        out.push(sample.to_vec());
        // outputs are not needed: return one empty per graph output
        Ok(g.outputs
            .iter()
            .map(|_| Tensor::F32(ArrayD::zeros(ndarray::IxDyn(&[1]))))
            .collect())
    })?;
    if out.is_empty() {
        return Err(Error::Usage("the calibration data holds no samples".into()));
    }
    Ok(out)
}

fn build_report(
    source: &str,
    g: &Graph,
    cx: &PassContext,
    float_graph: &Graph,
) -> Result<CompileReport> {
    let order = g.topo()?;
    let iv = |n: NodeIndex| cx.intervals.get(&n).copied();
    let source_of = |t: NodeIndex| g.table_source(t);
    // a report row for node `n`, whose accumulator is `acc`
    let new_row = |n: NodeIndex, op: String, acc: NodeIndex| LayerReport {
        layer: cx
            .origin
            .get(&n)
            .cloned()
            .unwrap_or_else(|| g.g[n].name.clone()),
        op,
        shape: g.g[n].ty.shape.clone(),
        // per-element widths (each element is read by its own table)
        acc_bits: cx.bounds.get(&acc).map(|b| b.max_bits()),
        acc_bits_observed: cx.observed_elems.get(&acc).map(|b| b.max_bits()),
        acc_bits_used: None,
        rounded_bits: 0,
        tlu_count: 0,
        tables: 0,
        tlu_input_bits: None,
        precision: None,
    };
    let mut rows: Vec<LayerReport> = Vec::new();
    let mut by_src: BTreeMap<NodeIndex, usize> = BTreeMap::new();
    for &n in &order {
        if let Op::IntLinear(_) = g.g[n].op {
            by_src.insert(n, rows.len());
            let mut row = new_row(n, g.g[n].op.name().to_string(), n);
            let c = &cx.config;
            row.precision = Some((
                cx.weight_bits
                    .get(&row.layer)
                    .copied()
                    .unwrap_or_else(|| c.weight_bits(&row.layer)),
                c.input_bits(&row.layer),
                c.rounding_for(&row.layer),
            ));
            rows.push(row);
        }
    }
    let mut pbs = 0;
    let mut max_bits = 0;
    for &n in &order {
        let Op::Tlu(t) = &g.g[n].op else { continue };
        let (src, k) = source_of(n);
        let len = g.g[n].ty.len();
        // the width this layer's tables need (each element is shifted by its own lower
        // bound); the program reads every table at the widest
        let choice = cx.domains.get(&n);
        let in_bits = match choice {
            Some(d) => Some(d.input_bits),
            None => cx.bounds.get(&g.inputs_of(n)[0]).map(|b| b.max_bits()),
        };
        let used = choice.map(|d| d.used_bits);
        pbs += len;
        max_bits = max_bits.max(in_bits.unwrap_or(0));
        let row = match by_src.get(&src) {
            Some(&r) => r,
            None => {
                by_src.insert(src, rows.len());
                rows.push(new_row(n, format!("Tlu({})", g.g[src].op.name()), src));
                rows.len() - 1
            }
        };
        let r = &mut rows[row];
        r.rounded_bits = r.rounded_bits.max(k);
        r.acc_bits_used = r.acc_bits_used.max(used);
        r.tlu_count += len;
        r.tables += t.distinct_tables(len);
        r.tlu_input_bits = r.tlu_input_bits.max(in_bits);
    }
    // decrypted accumulators read in a calibrated window: the window is the width used
    for &n in &order {
        if let Op::Wrap { bits, .. } = g.g[n].op {
            let src = g.inputs_of(n)[0];
            if let Some(&r) = by_src.get(&src) {
                rows[r].acc_bits_used = Some(bits);
            }
        }
    }
    // the encrypted boundary: integers read by client-side float ops
    let mut outputs = Vec::new();
    let mut decrypted = std::collections::BTreeSet::new();
    let mut client_ops: BTreeMap<String, usize> = BTreeMap::new();
    for &n in &order {
        let node = &g.g[n];
        if node.ty.dtype != DType::F32 || matches!(node.op, Op::Const(_)) {
            continue;
        }
        *client_ops.entry(node.op.name().to_string()).or_default() += 1;
        for i in g.inputs_of(n) {
            // each integer once, however many client ops read it
            if g.g[i].ty.dtype == DType::I64 && decrypted.insert(i) {
                // per element (each decrypts in its own window)
                let bits = cx.bounds.get(&i).map_or_else(
                    || iv(i).map_or(0, |x: Interval| x.bits()),
                    fhec_passes::bitwidth::Bounds::max_bits,
                );
                outputs.push((
                    cx.origin
                        .get(&i)
                        .cloned()
                        .unwrap_or_else(|| g.g[i].name.clone()),
                    bits,
                ));
            }
        }
    }
    // agreement with float on the calibration set
    let mut agree = 0usize;
    let mut total = 0usize;
    for (f, q) in cx
        .calib
        .iter()
        .zip(fhec_passes::bitwidth::quantized_calib(cx))
    {
        let (fo, qo) = (eval_f32(float_graph, f)?, eval_int(g, &q)?);
        if let (Some(a), Some(b)) = (fo.first(), qo.first()) {
            if a.len() > 1 {
                total += 1;
                agree += usize::from(
                    crate::model::argmax(&a.f32_values()) == crate::model::argmax(&b.f32_values()),
                );
            }
        }
    }
    Ok(CompileReport {
        model: source.to_string(),
        config: cx.config.clone(),
        layers: rows,
        pbs_count: pbs,
        max_tlu_bits: max_bits,
        outputs,
        client_ops,
        client_head: Vec::new(),
        shifts: cx.shifts.clone(),
        pruned: cx.pruned.clone(),
        calib_agreement: (total > 0).then(|| agree as f64 / total as f64),
    })
}

/// The table lookups one decomposed construction costs (a LayerNorm, an encrypted MatMul, a
/// Softmax, …: an ONNX node the importer or canonicalize wrote as several ops, whose report
/// rows are named `node#step` or `node:step`).
#[derive(Clone, Debug, PartialEq)]
pub struct ConstructionCost {
    pub node: String,
    pub tlu_count: usize,
    /// Elements of the widest tensor among its rows, and that shape.
    pub shape: Vec<usize>,
    /// Widest table input among its rows.
    pub tlu_bits: Option<u32>,
}

impl ConstructionCost {
    /// Table lookups per element of the construction's widest tensor.
    pub fn per_element(&self) -> f64 {
        self.tlu_count as f64 / self.shape.iter().product::<usize>().max(1) as f64
    }
}

impl CompileReport {
    /// The cost of every decomposed construction (two or more report rows, at least one
    /// table lookup), in report order.
    pub fn constructions(&self) -> Vec<ConstructionCost> {
        let mut out: Vec<(ConstructionCost, usize)> = Vec::new();
        for r in &self.layers {
            let Some(cut) = r.layer.find(['#', ':']) else {
                continue;
            };
            let node = &r.layer[..cut];
            let len = |s: &[usize]| s.iter().product::<usize>();
            match out.iter_mut().find(|(c, _)| c.node == node) {
                Some((c, rows)) => {
                    c.tlu_count += r.tlu_count;
                    if len(&r.shape) > len(&c.shape) {
                        c.shape = r.shape.clone();
                    }
                    c.tlu_bits = c.tlu_bits.max(r.tlu_input_bits);
                    *rows += 1;
                }
                None => out.push((
                    ConstructionCost {
                        node: node.to_string(),
                        tlu_count: r.tlu_count,
                        shape: r.shape.clone(),
                        tlu_bits: r.tlu_input_bits,
                    },
                    1,
                )),
            }
        }
        out.into_iter()
            .filter(|(c, rows)| *rows >= 2 && c.tlu_count > 0)
            .map(|(c, _)| c)
            .collect()
    }

    /// The per-layer table an engineer reads after `fhec compile`.
    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let c = &self.config;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "compiled {}: n_bits inputs/weights/activations {}/{}/{}, rounding {}, per-channel {}, ranges {}",
            self.model,
            c.n_bits_inputs,
            c.n_bits_weights,
            c.n_bits_activations,
            c.rounding_bits
                .map_or("off".to_string(), |r| format!("{r} bits")),
            c.per_channel,
            match c.ranges {
                fhec_passes::RangePolicy::Proven => c.ranges.name().to_string(),
                fhec_passes::RangePolicy::Calibrated =>
                    format!("{} (margin {})", c.ranges.name(), c.range_margin),
            }
        );
        let _ = writeln!(
            s,
            "{:<28} {:<12} {:<14} {:>6} {:>8} {:>5} {:>7} {:>6} {:>7} {:>8}  w/in/round",
            "layer",
            "op",
            "shape",
            "proven",
            "observed",
            "used",
            "rounded",
            "TLUs",
            "tables",
            "TLU bits",
        );
        let opt = |v: Option<u32>| v.map_or("-".to_string(), |b| b.to_string());
        for r in &self.layers {
            let precision = r
                .precision
                .map_or(String::new(), |(w, i, rb)| format!("{w}/{i}/{}", opt(rb)));
            let _ = writeln!(
                s,
                "{:<28} {:<12} {:<14} {:>6} {:>8} {:>5} {:>7} {:>6} {:>7} {:>8}  {}",
                truncate(&r.layer, 28),
                truncate(&r.op, 12),
                ShapeFmt(&r.shape).to_string(),
                opt(r.acc_bits),
                opt(r.acc_bits_observed),
                opt(r.acc_bits_used),
                r.rounded_bits,
                r.tlu_count,
                r.tables,
                opt(r.tlu_input_bits),
                precision
            );
        }
        let _ = writeln!(
            s,
            "total: {} table lookups (PBS) per sample, widest table input {} bits",
            self.pbs_count, self.max_tlu_bits
        );
        for c in self.constructions() {
            let _ = writeln!(
                s,
                "construction `{}`: {} table lookups, {:.1} per element of {}, tables of {} bits",
                c.node,
                c.tlu_count,
                c.per_element(),
                ShapeFmt(&c.shape),
                c.tlu_bits.map_or("-".to_string(), |b| b.to_string())
            );
        }
        let outs: Vec<String> = self
            .outputs
            .iter()
            .map(|(n, b)| format!("`{n}` ({b} bits)"))
            .collect();
        let _ = writeln!(
            s,
            "client decrypts: {}",
            if outs.is_empty() {
                "-".into()
            } else {
                outs.join(", ")
            }
        );
        let ops: Vec<String> = self
            .client_ops
            .iter()
            .map(|(o, c)| format!("{o} ×{c}"))
            .collect();
        let _ = writeln!(s, "client side after decryption: {}", ops.join(", "));
        if !self.shifts.is_empty() {
            let l: Vec<String> = self
                .shifts
                .iter()
                .map(|(layer, k, moved)| {
                    format!(
                        "`{layer}` {k} bit(s){}",
                        if *moved { " + integer bias" } else { "" }
                    )
                })
                .collect();
            let _ = writeln!(
                s,
                "power-of-two requantizations folded into rounding (at least the shift dropped, bias in the accumulator): {}",
                l.join(", ")
            );
        }
        if !self.client_head.is_empty() {
            let _ = writeln!(
                s,
                "client side before encryption (float, then the input grid): {}",
                self.client_head.join(", ")
            );
        }
        for (l, z) in &self.pruned {
            let _ = writeln!(s, "pruned: {z} weight(s) of `{l}`");
        }
        if let Some(a) = self.calib_agreement {
            let _ = writeln!(
                s,
                "clear vs float top-1 agreement on calibration data: {:.2}%",
                a * 100.0
            );
        }
        s
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let t: String = s
            .chars()
            .rev()
            .take(n - 1)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!("…{t}")
    }
}

impl CompiledModel {
    /// One sample as the client encrypts it: the float head (if any), then each input
    /// quantized on its grid — the integer tensors `eval_int` and the encrypted program take.
    ///
    /// # Errors
    /// A sample that does not fit the head.
    pub fn quantize_inputs(&self, sample: &[Tensor]) -> Result<Vec<Tensor>> {
        Ok(match &self.head {
            None => fhec_ir::quantize_sample(sample, &self.input_quant),
            Some(h) => fhec_ir::quantize_sample(&eval_f32(h, sample)?, &self.input_quant),
        })
    }

    /// Clear mode: quantize, run the integer program (`eval_int`), dequantize and run the
    /// client-side tail. The reference that encrypted runs must match.
    ///
    /// # Errors
    /// Inputs that do not fit the model.
    pub fn run_clear(&self, inputs: &[ArrayD<f32>]) -> Result<Vec<ArrayD<f32>>> {
        run_batched(&self.float_graph, inputs, |sample| {
            Ok(eval_int(&self.program, &self.quantize_inputs(sample)?)?)
        })
    }

    /// Clear mode, counting table reads beyond their domains (the values a calibrated range
    /// did not cover; each read the table's negacyclic wrap, in clear and encrypted runs
    /// alike).
    ///
    /// # Errors
    /// Inputs that do not fit the model.
    pub fn run_clear_counted(
        &self,
        inputs: &[ArrayD<f32>],
    ) -> Result<(Vec<ArrayD<f32>>, Overflows)> {
        let g = &self.program;
        // each table lookup with its layer (the accumulator it reads), found once
        let tables: Vec<(NodeIndex, String)> = g
            .topo()?
            .into_iter()
            .filter(|&n| matches!(g.g[n].op, Op::Tlu(_)))
            .map(|n| (n, g.g[g.table_source(n).0].name.clone()))
            .collect();
        // decrypted outputs read in a calibrated window, with their layer
        let windows: Vec<(NodeIndex, String)> = g
            .topo()?
            .into_iter()
            .filter(|&n| matches!(g.g[n].op, Op::Wrap { .. }))
            .map(|n| (n, format!("{} (decrypted)", g.g[g.inputs_of(n)[0]].name)))
            .collect();
        let mut ov = Overflows::default();
        let ys = run_batched(&self.float_graph, inputs, |sample| {
            let q = self.quantize_inputs(sample)?;
            let values = fhec_ir::eval_all(g, &q)?;
            let mut hit = false;
            // each table read and each decrypted value of a calibrated window, by layer
            for (n, layer) in tables.iter().chain(&windows) {
                let Some(Tensor::I64(x)) = values.get(&g.inputs_of(*n)[0]) else {
                    continue;
                };
                let inside = |i: usize, v: i64| match &g.g[*n].op {
                    Op::Tlu(t) => t.in_domain(i, v),
                    Op::Wrap { lo, bits } => {
                        fhec_ir::wrap(v, lo[if lo.len() == 1 { 0 } else { i }], *bits) == v
                    }
                    _ => true,
                };
                let out = x
                    .iter()
                    .enumerate()
                    .filter(|&(i, &v)| !inside(i, v))
                    .count();
                let e = ov.by_layer.entry(layer.clone()).or_default();
                e.0 += out;
                e.1 += x.len();
                ov.reads += x.len();
                ov.outside += out;
                hit |= out > 0;
            }
            ov.samples += 1;
            ov.samples_hit += usize::from(hit);
            Ok(g.outputs.iter().map(|o| values[&o.node].clone()).collect())
        })?;
        Ok((ys, ov))
    }

    /// The float graph on a batch (`--mode float` on a compiled model).
    ///
    /// # Errors
    /// Inputs that do not fit the model.
    pub fn run_float(&self, inputs: &[ArrayD<f32>]) -> Result<Vec<ArrayD<f32>>> {
        run_batched(&self.float_graph, inputs, |s| {
            Ok(eval_f32(&self.float_graph, s)?)
        })
    }

    /// Writes the artifact: magic, format version, payload length, CRC-32 of the payload,
    /// then the model (bincode).
    ///
    /// # Errors
    /// [`Error::Write`] naming the file.
    pub fn save(&self, path: &Path) -> Result<()> {
        let w = |e: String| Error::Write {
            path: path.display().to_string(),
            reason: e,
        };
        // the plan's parameters travel with the model (not searched again on load)
        let stored;
        let this = match (&self.params, self.plan()) {
            (None, Ok(plan)) => {
                stored = CompiledModel {
                    params: Some(plan.choice.clone()),
                    ..self.clone()
                };
                &stored
            }
            _ => self,
        };
        let body = bincode_options(u64::MAX)
            .serialize(this)
            .map_err(|e| w(e.to_string()))?;
        let mut out = Vec::with_capacity(body.len() + 24);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        out.extend_from_slice(&body);
        std::fs::File::create(path)
            .and_then(|mut f| f.write_all(&out))
            .map_err(|e| w(e.to_string()))
    }

    /// Reads an artifact written by [`CompiledModel::save`], under the default size limits.
    ///
    /// # Errors
    /// As [`CompiledModel::load_with_limits`].
    pub fn load(path: &Path) -> Result<Self> {
        Self::load_with_limits(path, &Limits::default())
    }

    /// Checks what a loaded model's code relies on, whatever the file said: both graphs
    /// verify (types, attributes, sizes within `limits`), the client's quantizers match the
    /// program's inputs, and the encrypted-program settings are valid.
    fn check_structure(&mut self, limits: &Limits) -> std::result::Result<(), String> {
        self.program.limits = *limits;
        self.float_graph.limits = *limits;
        self.program
            .verify()
            .map_err(|e| format!("corrupt program ({e})"))?;
        self.float_graph
            .verify()
            .map_err(|e| format!("corrupt float graph ({e})"))?;
        if self.input_quant.len() != self.program.inputs.len()
            || self.float_graph.inputs.len() != self.program.inputs.len()
        {
            return Err(format!(
                "corrupt model: {} input quantizer(s) for {} program and {} float input(s)",
                self.input_quant.len(),
                self.program.inputs.len(),
                self.float_graph.inputs.len()
            ));
        }
        for (i, q) in self.input_quant.iter().enumerate() {
            if !q.is_valid() {
                return Err(format!("corrupt model: input quantizer {i} is {q:?}"));
            }
        }
        if let Some(h) = &mut self.head {
            h.limits = *limits;
            h.verify()
                .map_err(|e| format!("corrupt client head ({e})"))?;
            // only what client_head cuts: elementwise arithmetic with constants, clips
            let ok_op = |op: &Op| {
                matches!(op, Op::Input { .. } | Op::Const(_))
                    || fhec_passes::client_head::is_head_op(op)
            };
            if let Some(n) = h.g.node_weights().find(|n| !ok_op(&n.op)) {
                return Err(format!(
                    "corrupt client head: `{}` is a {}, not elementwise arithmetic",
                    n.name,
                    n.op.name()
                ));
            }
            let fits = h.inputs.len() == self.float_graph.inputs.len()
                && h.outputs.len() == self.program.inputs.len()
                && h.outputs
                    .iter()
                    .zip(&self.program.inputs)
                    .all(|(o, i)| h.g[o.node].ty.shape == self.program.g[i.node].ty.shape);
            if !fits {
                return Err(
                    "corrupt client head: it does not map the model's inputs to the program's"
                        .into(),
                );
            }
        }
        self.fhe
            .validate()
            .map_err(|e| format!("corrupt settings: {e}"))
    }

    /// Reads an artifact written by [`CompiledModel::save`]; the graphs must fit `limits`.
    ///
    /// # Errors
    /// [`Error::Artifact`] naming the file: not an fhec model, another format version,
    /// truncated, corrupt (checksum), or inconsistent contents.
    pub fn load_with_limits(path: &Path, limits: &Limits) -> Result<Self> {
        let bad = |reason: String| Error::Artifact {
            path: path.display().to_string(),
            reason,
        };
        let bytes =
            crate::bounded_read::read_capped(path, MODEL_LIMIT, "a compiled model").map_err(bad)?;
        Self::from_bytes(&bytes, limits).map_err(bad)
    }

    /// Decodes an artifact in memory and checks its structure (see
    /// [`CompiledModel::load_with_limits`]); the error is the reason only.
    ///
    /// # Errors
    /// Not an fhec model, another format version, truncated, corrupt, inconsistent.
    pub fn from_bytes(bytes: &[u8], limits: &Limits) -> std::result::Result<Self, String> {
        let Some((head, body)) = bytes.split_at_checked(24) else {
            return Err("too short to be an fhec model".into());
        };
        if &head[..8] != MAGIC {
            return Err(
                "not an fhec compiled model (bad magic); compile one with `fhec compile`".into(),
            );
        }
        let word = |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        let version = word(8);
        if version != FORMAT_VERSION {
            return Err(format!(
                "format version {version}, this fhec reads version {FORMAT_VERSION}; recompile the model"
            ));
        }
        let len = u64::from(word(12)) | (u64::from(word(16)) << 32);
        if body.len() as u64 != len {
            return Err(format!(
                "truncated or padded: {} payload bytes, header says {len}",
                body.len()
            ));
        }
        if crc32fast::hash(body) != word(20) {
            return Err(
                "corrupt: checksum mismatch; recompile the model or copy the file again".into(),
            );
        }
        let mut m: CompiledModel = bincode_options(len)
            .deserialize(body)
            .map_err(|e| format!("corrupt payload ({e})"))?;
        m.check_structure(limits)?;
        Ok(m)
    }
}

/// bincode with a size limit: a corrupt length prefix fails instead of allocating.
fn bincode_options(limit: u64) -> impl bincode::Options {
    use bincode::Options;
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_limit(limit)
}
