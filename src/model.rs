//! The float side of the library API: a loaded ONNX model, run on batches.

use crate::error::{Error, Result};
use crate::import;
use fhec_ir::{eval_f32, DType, Graph, Limits, ShapeFmt, Tensor};
use ndarray::{concatenate, ArrayD, Axis};
use std::path::Path;

/// An imported ONNX model.
#[derive(Clone, Debug)]
pub struct Model {
    pub graph: Graph,
    /// The file it came from, for messages.
    pub source: String,
    /// How the importer read what a literal reading would get wrong (for the report).
    pub notes: Vec<String>,
}

impl Model {
    /// A model from a graph built in code; `source` names it in messages.
    pub fn new(graph: Graph, source: &str) -> Self {
        Self {
            graph,
            source: source.to_string(),
            notes: Vec::new(),
        }
    }

    /// Imports an ONNX file.
    ///
    /// # Errors
    /// [`Error::Import`]: unreadable file, malformed protobuf, unsupported ops (all listed).
    pub fn load(path: &Path) -> Result<Self> {
        Self::load_with_limits(path, &Limits::default())
    }

    /// Imports an ONNX file, refusing tensors and work over `limits`.
    ///
    /// # Errors
    /// As [`Model::load`]; a tensor, the model or a node's work over `limits`.
    pub fn load_with_limits(path: &Path, limits: &Limits) -> Result<Self> {
        let opts = import::ImportOptions {
            limits: *limits,
            ..Default::default()
        };
        let m = import::import_file_noted(path, &opts)?;
        Ok(Self {
            graph: m.graph,
            source: path.display().to_string(),
            notes: m.notes,
        })
    }

    /// Imports an ONNX model held in memory; `source` names it in messages, `external`
    /// says where its external tensors are (the model's folder, or the files themselves).
    ///
    /// # Errors
    /// As [`Model::load_with_limits`].
    pub fn from_bytes(
        bytes: &[u8],
        source: &str,
        external: import::ExternalData,
        limits: &Limits,
    ) -> Result<Self> {
        let opts = import::ImportOptions {
            limits: *limits,
            external,
            ..Default::default()
        };
        let m = import::import_bytes_noted(bytes, source, &opts)?;
        Ok(Self {
            graph: m.graph,
            source: source.to_string(),
            notes: m.notes,
        })
    }

    /// Runs the float graph on a batch: one array per graph input, axis 0 = batch.
    ///
    /// # Errors
    /// Wrong number of inputs, mismatched shapes or batch sizes, NaN/inf inputs.
    pub fn run_float(&self, inputs: &[ArrayD<f32>]) -> Result<Vec<ArrayD<f32>>> {
        run_batched(&self.graph, inputs, |sample| {
            Ok(eval_f32(&self.graph, sample)?)
        })
    }
}

/// Splits `inputs` into samples along axis 0 for graph inputs whose axis 0 is the batch,
/// runs `f` on each, and concatenates the outputs along axis 0.
///
/// # Errors
/// [`Error::Batch`] naming the input whose shape does not fit; whatever `f` returns.
pub fn run_batched(
    graph: &Graph,
    inputs: &[ArrayD<f32>],
    mut f: impl FnMut(&[Tensor]) -> Result<Vec<Tensor>>,
) -> Result<Vec<ArrayD<f32>>> {
    let samples = split_batch(graph, inputs)?;
    let mut outs = Vec::with_capacity(samples.len());
    for s in &samples {
        outs.push(f(s)?);
    }
    join_batch(graph, outs)
}

/// Checks a batch against the graph's inputs (shapes, finite values, agreeing batch sizes)
/// and cuts it into samples along axis 0 of the batch-dynamic inputs (one sample when none
/// is dynamic).
///
/// # Errors
/// [`Error::Batch`] naming the input.
pub fn split_batch(graph: &Graph, inputs: &[ArrayD<f32>]) -> Result<Vec<Vec<Tensor>>> {
    if inputs.len() != graph.inputs.len() {
        return Err(Error::InputCount {
            expected: graph.inputs.len(),
            names: graph
                .inputs
                .iter()
                .map(|i| format!("`{}`", i.name))
                .collect::<Vec<_>>()
                .join(", "),
            got: inputs.len(),
        });
    }
    let mut batch: Option<usize> = None;
    for (gi, x) in graph.inputs.iter().zip(inputs) {
        let ty = &graph.g[gi.node].ty;
        let fits = if gi.batched {
            x.ndim() == ty.rank() && x.shape()[1..] == ty.shape[1..]
        } else {
            x.shape() == ty.shape.as_slice()
        };
        if !fits {
            let want = if gi.batched {
                format!(
                    "[N,{}]",
                    ty.shape[1..]
                        .iter()
                        .map(|d| d.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                )
            } else {
                ShapeFmt(&ty.shape).to_string()
            };
            return Err(Error::Batch {
                name: gi.name.clone(),
                reason: format!("expected shape {want}, got {}", ShapeFmt(x.shape())),
            });
        }
        if let Some((i, v)) = x.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(Error::Batch {
                name: gi.name.clone(),
                reason: format!("holds {v} at flat index {i}; inputs must be finite numbers"),
            });
        }
        if gi.batched {
            let n = x.shape()[0];
            if batch.is_some_and(|b| b != n) {
                return Err(Error::Batch {
                    name: gi.name.clone(),
                    reason: "inputs disagree on the batch size".into(),
                });
            }
            batch = Some(n);
        }
    }
    let to_tensor = |gi: &fhec_ir::GraphInput, a: ArrayD<f32>| match graph.g[gi.node].ty.dtype {
        DType::F32 => Tensor::F32(a),
        DType::I64 => Tensor::I64(a.mapv(|v| v as i64)),
    };
    let Some(n) = batch else {
        let ins: Vec<Tensor> = graph
            .inputs
            .iter()
            .zip(inputs)
            .map(|(gi, x)| to_tensor(gi, x.clone()))
            .collect();
        return Ok(vec![ins]);
    };
    let mut samples = Vec::with_capacity(n);
    for s in 0..n {
        let ins: Vec<Tensor> = graph
            .inputs
            .iter()
            .zip(inputs)
            .map(|(gi, x)| {
                let a = if gi.batched {
                    x.slice_axis(Axis(0), ndarray::Slice::from(s..s + 1))
                        .to_owned()
                } else {
                    x.clone()
                };
                to_tensor(gi, a)
            })
            .collect();
        samples.push(ins);
    }
    Ok(samples)
}

/// Assembles per-sample outputs into one array per graph output (axis 0 = batch); for a
/// graph without a batch axis, the single sample's outputs as they are.
///
/// # Errors
/// Samples whose outputs disagree in shape.
pub fn join_batch(graph: &Graph, samples: Vec<Vec<Tensor>>) -> Result<Vec<ArrayD<f32>>> {
    // one sample (or no batch axis): the outputs as the model computes them
    if samples.len() == 1 || !graph.inputs.iter().any(|gi| gi.batched) {
        return Ok(samples
            .into_iter()
            .next()
            .unwrap_or_default()
            .iter()
            .map(|t| t.to_f32())
            .collect());
    }
    let mut per_output: Vec<Vec<ArrayD<f32>>> =
        vec![Vec::with_capacity(samples.len()); graph.outputs.len()];
    for outs in samples {
        for (k, t) in outs.into_iter().enumerate() {
            if let Some(v) = per_output.get_mut(k) {
                v.push(t.to_f32());
            }
        }
    }
    per_output
        .into_iter()
        .map(|outs| {
            let leading_one = outs
                .first()
                .is_some_and(|a| a.ndim() > 0 && a.shape()[0] == 1);
            let views: Vec<_> = outs.iter().map(|a| a.view()).collect();
            let joined = if leading_one {
                concatenate(Axis(0), &views)
            } else {
                ndarray::stack(Axis(0), &views)
            };
            joined.map_err(|e| Error::Internal {
                what: format!("cannot assemble the batch of outputs: {e}"),
            })
        })
        .collect()
}

/// Index of the first largest value (NaN never wins; 0 for no values): the predicted class
/// of one row of logits, wherever fhec compares classes.
pub fn argmax<'a>(values: impl IntoIterator<Item = &'a f32>) -> usize {
    values
        .into_iter()
        .enumerate()
        .fold(
            (0, f32::NEG_INFINITY),
            |b, (i, &v)| if v > b.1 { (i, v) } else { b },
        )
        .0
}

/// Fraction of rows of `logits` (`[N, classes]`) whose argmax equals the label; a `[N]` or
/// `[N, 1]` output holds the predicted class itself (a model ending in ArgMax, or one
/// sigmoid probability: rounded).
pub fn accuracy(logits: &ArrayD<f32>, labels: &[i64]) -> Option<f64> {
    if logits.shape().first() != Some(&labels.len()) || labels.is_empty() {
        return None;
    }
    // predicted class indices ([N] or [N, 1]: a model ending in ArgMax)
    if logits.ndim() == 1 || (logits.ndim() == 2 && logits.shape()[1] == 1) {
        let hits = logits
            .iter()
            .zip(labels)
            .filter(|(&p, &y)| p.is_finite() && p.round() as i64 == y)
            .count();
        return Some(hits as f64 / labels.len() as f64);
    }
    if logits.ndim() != 2 {
        return None;
    }
    let hits = logits
        .outer_iter()
        .zip(labels)
        .filter(|(row, &y)| argmax(row.iter()) as i64 == y)
        .count();
    Some(hits as f64 / labels.len() as f64)
}
