//! calibrate: float → calibrated (analysis).
//!
//! Runs `eval_f32` on every calibration sample and records, for every node, the smallest and
//! largest value seen. Precondition: a float graph, and calibration samples whose tensors
//! match the graph inputs — or none, for a model that carries its own quantization grids.
//! The graph is not changed.

use crate::{Analysis, Changed, Pass, PassContext, PassError, Stage};
use fhec_ir::{eval_all, Graph, Tensor};

pub struct Calibrate;

impl Pass for Calibrate {
    fn name(&self) -> &'static str {
        "calibrate"
    }
    fn requires(&self) -> Stage {
        Stage::Float
    }
    fn produces(&self) -> Stage {
        Stage::Calibrated
    }
    fn makes(&self) -> &'static [Analysis] {
        &[Analysis::FloatRanges]
    }
    fn run(&self, g: &mut Graph, cx: &mut PassContext) -> Result<Changed, PassError> {
        cx.float_ranges.clear();
        if cx.calib.is_empty() {
            // a model that quantizes itself needs none; `quantize` names any value that has
            // neither a grid of its own nor a calibrated range
            cx.log
                .push("calibrate: no calibration data (the model's own grids only)".into());
            return Ok(Changed::No);
        }
        for sample in &cx.calib {
            let values = eval_all(g, sample)?;
            for (n, v) in values {
                if let Tensor::F32(a) = v {
                    let (lo, hi) = a
                        .iter()
                        .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &x| {
                            (l.min(x), h.max(x))
                        });
                    if !lo.is_finite() || !hi.is_finite() {
                        return Err(PassError::Calibration {
                            reason: format!(
                                "node `{}` produced a non-finite value on calibration data",
                                g.g[n].name
                            ),
                        });
                    }
                    let e = cx.float_ranges.entry(n).or_insert((lo, hi));
                    e.0 = e.0.min(lo);
                    e.1 = e.1.max(hi);
                }
            }
        }
        cx.log.push(format!(
            "calibrate: {} sample(s), {} tensors",
            cx.calib.len(),
            cx.float_ranges.len()
        ));
        Ok(Changed::No)
    }
}
