//! bitwidth: interval analysis (fused → fused, reads only).
//!
//! For every integer node and every element: the interval it provably stays in (worst case
//! from the input ranges and the weights), computed by running the integer kernels on the
//! bounds (`lo·W⁺ + hi·W⁻` for a linear layer); and, per node, the interval observed on the
//! calibration set. A table lookup's input width is `bits(hi − lo)`. Postcondition: every
//! observed value lies inside its proven interval (a violation is a compiler bug, reported as
//! such).

use crate::{Analysis, Changed, Pass, PassContext, PassError, Stage};
pub use fhec_ir::analysis::{neuron_intervals, Bounds};
use fhec_ir::analysis::{observed_bounds, proven_bounds};
use fhec_ir::{Graph, NodeIndex, Tensor};
use std::collections::HashMap;

pub struct Bitwidth;

impl Pass for Bitwidth {
    fn name(&self) -> &'static str {
        "bitwidth"
    }
    fn requires(&self) -> Stage {
        Stage::Fused
    }
    fn produces(&self) -> Stage {
        Stage::Fused
    }
    fn makes(&self) -> &'static [Analysis] {
        &[Analysis::Intervals]
    }
    fn run(&self, g: &mut Graph, cx: &mut PassContext) -> Result<Changed, PassError> {
        cx.analysis.bounds = bounds(g, cx)?;
        cx.analysis.intervals = cx
            .analysis
            .bounds
            .iter()
            .map(|(n, b)| (*n, b.union()))
            .collect();
        cx.analysis.observed_elems = observed(g, cx)?;
        cx.analysis.observed = cx
            .analysis
            .observed_elems
            .iter()
            .map(|(n, b)| (*n, b.union()))
            .collect();
        for (n, o) in &cx.analysis.observed {
            if let Some(w) = cx.analysis.intervals.get(n) {
                if o.lo < w.lo || o.hi > w.hi {
                    return Err(PassError::Internal {
                        pass: "bitwidth",
                        what: format!(
                            "`{}` ({}): observed range [{}, {}] escapes the proven [{}, {}]",
                            g.g[*n].name,
                            g.g[*n].op.name(),
                            o.lo,
                            o.hi,
                            w.lo,
                            w.hi
                        ),
                    });
                }
            }
        }
        Ok(Changed::No)
    }
}

/// The proven per-element bounds of every integer node.
///
/// # Errors
/// A cycle in the graph; a bound that overflows 64 bits (named by node).
pub fn bounds(g: &Graph, cx: &PassContext) -> Result<HashMap<NodeIndex, Bounds>, PassError> {
    Ok(proven_bounds(g, &cx.quant.input_quant)?)
}

/// Quantizes the calibration samples with the client's input parameters.
pub fn quantized_calib(cx: &PassContext) -> Vec<Vec<Tensor>> {
    cx.calib
        .iter()
        .map(|s| fhec_ir::quantize_sample(s, &cx.quant.input_quant))
        .collect()
}

/// Per-element range of every integer node over the calibration set.
///
/// # Errors
/// A calibration sample the program cannot run.
pub fn observed(g: &Graph, cx: &PassContext) -> Result<HashMap<NodeIndex, Bounds>, PassError> {
    Ok(observed_bounds(g, &quantized_calib(cx))?)
}
