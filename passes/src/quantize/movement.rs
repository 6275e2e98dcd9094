//! quantize, data movement on encrypted values: the same op on the integers and on their
//! per-element affine coefficients.

use super::{full, uniform, Builder, QVal};
use crate::PassError;
use fhec_ir::{kernels, NodeIndex, Op, Tensor};
use ndarray::{ArrayD, IxDyn};

impl Builder<'_> {
    /// Reshape-like ops on encrypted values: the same op on the integers and on their
    /// per-element affine coefficients.
    pub(super) fn data_movement(
        &mut self,
        n: NodeIndex,
        ins: &[NodeIndex],
        vals: &[QVal],
        name: &str,
    ) -> Result<(), PassError> {
        let op = self.f.g[n].op.clone();
        let mut qins = Vec::with_capacity(ins.len());
        let mut avs = Vec::with_capacity(ins.len());
        let mut bvs = Vec::with_capacity(ins.len());
        let mut reqs = Vec::with_capacity(ins.len());
        for (&i, v) in ins.iter().zip(vals) {
            if matches!(v, QVal::Const(_)) {
                return Err(self.unsupported(
                    n,
                    "mixing clear constants into encrypted tensors is not supported",
                ));
            }
            if matches!(v, QVal::Float { .. }) {
                self.requant(i)?;
            }
            let QVal::Enc {
                node,
                a,
                b,
                requant,
            } = self.val(i)
            else {
                unreachable!("invariant: requantized")
            };
            let shape = self.f.g[i].ty.shape.clone();
            let len: usize = shape.iter().product();
            let arr = |v: &[f32]| {
                Tensor::F32(
                    ArrayD::from_shape_vec(IxDyn(&shape), full(v, len)).expect("invariant: len"),
                )
            };
            qins.push(node);
            avs.push(arr(&a));
            bvs.push(arr(&b));
            reqs.push(requant);
        }
        let mut op_q = op.clone();
        let mut op_a = op.clone();
        if let Op::Pad { value, .. } = &op {
            let zero_code = match reqs[0] {
                Some(p) => p.zero_point,
                None => {
                    let (a, b) = (avs[0].f32_values(), bvs[0].f32_values());
                    match (uniform(&a), uniform(&b)) {
                        (Some(a), Some(b)) if a != 0.0 && (-b / a).fract() == 0.0 => {
                            (-b / a) as i64
                        }
                        _ => {
                            return Err(self.unsupported(
                                n,
                                "padding an encrypted tensor without a uniform zero point",
                            ))
                        }
                    }
                }
            };
            if *value != 0.0 {
                return Err(
                    self.unsupported(n, "padding an encrypted tensor with a non-zero constant")
                );
            }
            if let Op::Pad { value, .. } = &mut op_q {
                *value = zero_code as f32;
            }
            if let Op::Pad {
                value,
                mode: fhec_ir::PadMode::Constant,
                ..
            } = &mut op_a
            {
                // padded positions keep the neighbour's coefficients (uniform here)
                *value = uniform(&avs[0].f32_values()).unwrap_or(0.0);
            }
        }
        let node = self.add(name, op_q, &qins)?;
        let eval = |op: &Op, ts: &[Tensor]| -> Result<Vec<f32>, PassError> {
            let refs: Vec<&Tensor> = ts.iter().collect();
            Ok(kernels::eval(op, &refs)
                .map_err(|e| self.unsupported(n, e.to_string()))?
                .f32_values())
        };
        let a = eval(&op_a, &avs)?;
        let mut op_b = op_a.clone();
        if let Op::Pad { value, .. } = &mut op_b {
            *value = uniform(&bvs[0].f32_values()).unwrap_or(0.0);
        }
        let b = eval(&op_b, &bvs)?;
        let requant = match reqs.first() {
            Some(Some(p)) if reqs.iter().all(|r| r.as_ref() == Some(p)) => Some(*p),
            _ => None,
        };
        let (a, b) = match (requant, uniform(&a), uniform(&b)) {
            (_, Some(ua), Some(ub)) => (vec![ua], vec![ub]),
            _ => (a, b),
        };
        self.set_enc(n, node, a, b, requant);
        Ok(())
    }
}
