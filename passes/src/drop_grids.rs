//! drop_grids: float → float, with `QuantConfig::requantize` only.
//!
//! A model that quantizes itself (QDQ pairs, QOperator ops, QONNX `Quant`) reaches the
//! passes as float ops and `Unary::FakeQuant` grids, which the quantize pass compiles on.
//! With `requantize` the model is compiled as the float model it approximates instead: every
//! grid becomes the clip it also applies (`Clip` to `[(qmin − z)·s, (qmax − z)·s]`, which is
//! the ReLU of an unsigned grid with zero point 0), its rounding is dropped, and the weights
//! keep their dequantized values, which the quantize pass requantizes on fhec's own
//! `n_bits` grids from calibration data like any float model's.
//!
//! Why: onnxruntime's int8 models multiply 8-bit weights by 8-bit activations; their
//! accumulators (18–20 bits, weights of 2-norm ~2^8) are too wide for exact rounding's
//! bit extractions on a 64-bit torus, so on their own grids they run in approximate mode
//! only. Requantized at 6 bits they run in exact mode like a float export.
//!
//! Precondition: a verified float graph. Postcondition: no `FakeQuant` when `requantize`
//! is set (the graph unchanged otherwise); per-axis and blocked grids, which the importer
//! writes as elementwise chains, are left to `fuse_tlu` and constant folding as before.

use crate::{Analysis, Changed, Pass, PassContext, PassError, Stage};
use fhec_ir::{Graph, Op, Unary};

pub struct DropGrids;

impl Pass for DropGrids {
    fn name(&self) -> &'static str {
        "drop_grids"
    }
    fn requires(&self) -> Stage {
        Stage::Float
    }
    fn produces(&self) -> Stage {
        Stage::Float
    }
    fn invalidates(&self) -> &'static [Analysis] {
        &[Analysis::FloatRanges]
    }
    fn run(&self, g: &mut Graph, cx: &mut PassContext) -> Result<Changed, PassError> {
        if !cx.config.requantize {
            return Ok(Changed::No);
        }
        let mut changed = false;
        for node in g.g.node_weights_mut() {
            if let Op::Unary(Unary::FakeQuant {
                scale,
                zero_point,
                qmin,
                qmax,
            }) = node.op
            {
                node.op = Op::Unary(Unary::Clip {
                    min: (qmin - zero_point) * scale,
                    max: (qmax - zero_point) * scale,
                });
                changed = true;
            }
        }
        Ok(if changed { Changed::Yes } else { Changed::No })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::QuantConfig;
    use fhec_ir::{DType, Tensor, TensorType};

    fn graph() -> Graph {
        let mut g = Graph::new();
        let x = g.add_input("x", TensorType::new(DType::F32, vec![1, 4]), false);
        let q = g
            .add_op(
                "x#grid",
                Op::Unary(Unary::FakeQuant {
                    scale: 0.5,
                    zero_point: 0.0,
                    qmin: 0.0,
                    qmax: 255.0,
                }),
                &[x],
            )
            .unwrap();
        g.add_output("y", q);
        g
    }

    fn run(requantize: bool) -> (Graph, Changed) {
        let mut g = graph();
        let mut cx = PassContext::new(
            QuantConfig {
                requantize,
                ..QuantConfig::default()
            },
            Vec::new(),
        );
        let changed = DropGrids.run(&mut g, &mut cx).unwrap();
        (g, changed)
    }

    #[test]
    fn keeps_grids_unless_asked() {
        let (g, changed) = run(false);
        assert_eq!(changed, Changed::No);
        assert!(g.carries_grids());
    }

    #[test]
    fn a_grid_becomes_its_clip() {
        let (g, changed) = run(true);
        assert_eq!(changed, Changed::Yes);
        let y = g.outputs[0].node;
        assert_eq!(
            g.g[y].op,
            Op::Unary(Unary::Clip {
                min: 0.0,
                max: 127.5
            })
        );
        // the clip is the grid's range, without its rounding: 0.3 stays 0.3, −1 clips to 0
        let x = Tensor::F32(ndarray::arr2(&[[0.3f32, -1.0, 200.0, 7.1]]).into_dyn());
        let out = fhec_ir::eval_f32(&g, &[x]).unwrap();
        assert_eq!(out[0].f32_values(), vec![0.3, 0.0, 127.5, 7.1]);
    }
}
