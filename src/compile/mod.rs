//! Compilation: an imported model and calibration data become a [`CompiledModel`] — the
//! pass pipeline (`fhec_passes::Pipeline`) makes the integer program, the backend plans its
//! encrypted form, and [`auto`] makes the defaults run and agree with float (a fallback plan
//! when the asked one does not exist; more precision where clear mode disagrees with float).

pub mod auto;
mod settings;

pub use crate::artifact::{CompileReport, ConstructionCost, LayerReport};
pub use auto::AutoOptions;
pub use settings::Settings;

use crate::artifact::{CompiledModel, Inner};
use crate::backend::FheOptions;
use crate::error::{Error, Result};
use crate::model::{run_batched, Model};
use fhec_ir::{eval_f32, eval_int, Graph, Limits, Op, Tensor};
use fhec_passes::{PassContext, Pipeline, QuantConfig};
use ndarray::ArrayD;
use std::path::Path;
use std::sync::OnceLock;

/// Options of [`compile`].
#[derive(Clone, Debug, Default)]
pub struct CompileOptions {
    pub quant: QuantConfig,
    /// Encrypted-program settings (error probability, rounding method, parameter source),
    /// stored in the compiled model.
    pub fhe: FheOptions,
    /// What compile may change on its own so that the model runs and agrees with float.
    pub auto: AutoOptions,
    /// Size limits on the imported model (`--max-elements`).
    pub limits: Limits,
    /// Passes after which to print the IR (`--dump-after`; [`compile_traced`]).
    pub dump_after: Vec<String>,
}

/// Compiles an ONNX file: import, then [`compile_model`].
///
/// # Errors
/// As [`compile_model`]; an unreadable or unsupported model.
pub fn compile(
    model: &Path,
    calib: &[ArrayD<f32>],
    opts: &CompileOptions,
) -> Result<CompiledModel> {
    let m = Model::load_with_limits(model, &opts.limits)?;
    compile_model(&m, calib, opts)
}

/// Compiles an imported model on `calib` (one array per graph input, axis 0 = samples; empty
/// for a model that quantizes itself everywhere): the passes, then the TFHE parameters, with
/// what `opts.auto` allows.
///
/// # Errors
/// Calibration data that does not fit the inputs; a pass refusing the model (unsupported op,
/// accumulator over budget); no TFHE parameters for the settings asked and no fallback
/// allowed. Each names the node and the fix.
pub fn compile_model(
    m: &Model,
    calib: &[ArrayD<f32>],
    opts: &CompileOptions,
) -> Result<CompiledModel> {
    Ok(compile_traced(m, calib, opts)?.0)
}

/// [`compile_model`], with the IR dumps `opts.dump_after` asks for.
///
/// # Errors
/// As [`compile_model`].
pub fn compile_traced(
    m: &Model,
    calib: &[ArrayD<f32>],
    opts: &CompileOptions,
) -> Result<(CompiledModel, Vec<String>)> {
    let samples = split_samples(&m.graph, calib)?;
    let (q, dumps) = quantize(m, &samples, &opts.quant, &opts.dump_after)?;
    let mut lines = Vec::new();
    let (q, quant) = auto::raise_precision(m, &samples, q, opts, &mut lines)?;
    let planned = auto::plan(m, &samples, q, &quant, opts, &mut lines)?;
    let mut report = planned.report().clone();
    report.auto = lines;
    Ok((planned.with_report(report), dumps))
}

/// The passes only: the integer program without TFHE parameters, for clear and float runs
/// ([`CompiledModel::with_fhe_options`] plans it). `fhec tune` scores candidates this way.
///
/// # Errors
/// As [`compile_model`], but for the parameters.
pub fn quantize_model(
    m: &Model,
    calib: &[ArrayD<f32>],
    quant: &QuantConfig,
) -> Result<CompiledModel> {
    let samples = split_samples(&m.graph, calib)?;
    Ok(quantize(m, &samples, quant, &[])?.0)
}

/// Runs the passes on calibration samples (one tensor per graph input each).
pub(crate) fn quantize(
    m: &Model,
    samples: &[Vec<Tensor>],
    quant: &QuantConfig,
    dump_after: &[String],
) -> Result<(CompiledModel, Vec<String>)> {
    // one pipeline; the graph after canonicalize is the float graph `--mode float` runs,
    // and client_head leaves the client's float preprocessing in `cx.head`
    let mut g = m.graph.clone();
    let mut cx = PassContext::new(quant.clone(), samples.to_vec());
    let mut float_graph = None;
    let dumps = Pipeline::standard().run(&mut g, &mut cx, dump_after, |pass, g| {
        if pass == "canonicalize" {
            float_graph = Some(g.clone());
        }
    })?;
    let float_graph = float_graph.ok_or_else(|| Error::Internal {
        what: "the pipeline has no canonicalize pass".into(),
    })?;
    let head = cx.head.take();
    let mut report = crate::artifact::report::build_report(&m.source, &g, &cx)?;
    report.import_notes = m.notes.clone();
    if let Some(h) = &head {
        report.client_head = h
            .topo()?
            .into_iter()
            .filter(|&n| !matches!(h.g[n].op, Op::Input { .. } | Op::Const(_)))
            .map(|n| format!("{} `{}`", h.g[n].op.name(), h.g[n].name))
            .collect();
    }
    let model = CompiledModel::from_parts(Inner {
        float_graph,
        program: g,
        head,
        input_quant: cx.quant.input_quant.clone(),
        report,
        fhe: FheOptions::default(),
        params: None,
        plan: OnceLock::new(),
    });
    let agreement = agreement(&model, samples)?;
    let mut report = model.report().clone();
    report.calib_agreement = agreement;
    Ok((model.with_report(report), dumps))
}

/// Splits calibration arrays into single samples (batch axis of size 1).
fn split_samples(g: &Graph, calib: &[ArrayD<f32>]) -> Result<Vec<Vec<Tensor>>> {
    if calib.is_empty() {
        // only for models that carry their own grids (the passes say which value lacks one)
        return Ok(Vec::new());
    }
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
        return Err(Error::NoCalibrationSamples);
    }
    Ok(out)
}

/// Whether the model's first output reads as class scores: one row of at least two values
/// made by a linear layer or a softmax (a reconstruction or regression output is not).
fn is_classifier(g: &Graph) -> bool {
    let Some(o) = g.outputs.first() else {
        return false;
    };
    let shape = &g.g[o.node].ty.shape;
    let row = match shape.as_slice() {
        [1, c] | [c] => *c,
        _ => 0,
    };
    if row < 2 {
        return false;
    }
    let mut n = o.node;
    loop {
        match &g.g[n].op {
            Op::Gemm { .. } | Op::MatMul | Op::Softmax { .. } => return true,
            Op::Reshape { .. } | Op::Unary(fhec_ir::Unary::FakeQuant { .. }) => {
                match g.inputs_of(n).first() {
                    Some(&i) => n = i,
                    None => return false,
                }
            }
            // a self-quantized model's last layer: Add of a bias, or its quantizer chain
            Op::Binary(_) => {
                let ins = g.inputs_of(n);
                match ins.iter().find(|&&i| !matches!(g.g[i].op, Op::Const(_))) {
                    Some(&i) => n = i,
                    None => return false,
                }
            }
            _ => return false,
        }
    }
}

/// Top-1 agreement of clear mode with float on the calibration samples, for a classifier.
fn agreement(model: &CompiledModel, samples: &[Vec<Tensor>]) -> Result<Option<f64>> {
    if samples.is_empty() || !is_classifier(model.float_graph()) {
        return Ok(None);
    }
    let mut agree = 0usize;
    for s in samples {
        let f = eval_f32(model.float_graph(), s)?;
        let q = eval_int(model.program(), &model.quantize_inputs(s)?)?;
        if let (Some(a), Some(b)) = (f.first(), q.first()) {
            agree += usize::from(
                crate::model::argmax(&a.f32_values()) == crate::model::argmax(&b.f32_values()),
            );
        }
    }
    Ok(Some(agree as f64 / samples.len() as f64))
}
