//! Running a compiled model without keys: the float graph, the integer program in the clear
//! (`eval_int`, the spec), the encrypted program simulated with its noise, and the client's
//! steps before encryption and after decryption.

use super::CompiledModel;
use crate::backend::{Program, SimNoise};
use crate::error::{Error, Result};
use crate::model::run_batched;
use fhec_ir::{eval_f32, eval_int, kernels, DType, Graph, NodeIndex, Op, Tensor};
use ndarray::{ArrayD, IxDyn};
use std::collections::{BTreeMap, HashMap};

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

/// What a simulated run injected.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SimStats {
    /// Failure probability per bootstrap used.
    pub p_fail: f64,
    /// Bootstraps simulated.
    pub bootstraps: u64,
    /// Table lookups moved one box by an injected bootstrap failure.
    pub failures: u64,
}

impl CompiledModel {
    /// One sample as the client encrypts it: the float head (if any), then each input
    /// quantized on its grid — the integer tensors `eval_int` and the encrypted program take.
    ///
    /// # Errors
    /// A sample that does not fit the head.
    pub fn quantize_inputs(&self, sample: &[Tensor]) -> Result<Vec<Tensor>> {
        let q = &self.0.input_quant;
        Ok(match &self.0.head {
            None => fhec_ir::quantize_sample(sample, q),
            Some(h) => fhec_ir::quantize_sample(&eval_f32(h, sample)?, q),
        })
    }

    /// The float graph on a batch (`--mode float` on a compiled model).
    ///
    /// # Errors
    /// Inputs that do not fit the model.
    pub fn run_float(&self, inputs: &[ArrayD<f32>]) -> Result<Vec<ArrayD<f32>>> {
        let g = &self.0.float_graph;
        run_batched(g, inputs, |s| Ok(eval_f32(g, s)?))
    }

    /// Clear mode: quantize, run the integer program (`eval_int`), dequantize and run the
    /// client-side tail. The reference that encrypted runs must match.
    ///
    /// # Errors
    /// Inputs that do not fit the model.
    pub fn run_clear(&self, inputs: &[ArrayD<f32>]) -> Result<Vec<ArrayD<f32>>> {
        run_batched(&self.0.float_graph, inputs, |sample| {
            Ok(eval_int(&self.0.program, &self.quantize_inputs(sample)?)?)
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
        let g = &self.0.program;
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
        let ys = run_batched(&self.0.float_graph, inputs, |sample| {
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

    /// The encrypted program run in the clear on a batch, with approximate rounding's noise
    /// and bootstrap failures at the parameters' per-bootstrap error probability simulated
    /// (exact rounding at a negligible error probability: equals
    /// [`CompiledModel::run_clear`]). Predicts the accuracy of encrypted runs without their
    /// cost.
    ///
    /// # Errors
    /// As [`CompiledModel::plan`]; inputs that do not fit.
    pub fn run_simulated(&self, inputs: &[ArrayD<f32>], seed: u64) -> Result<Vec<ArrayD<f32>>> {
        Ok(self.run_simulated_with(inputs, seed, None)?.0)
    }

    /// [`CompiledModel::run_simulated`] with the failure probability per bootstrap given
    /// (`None`: the chosen parameters' worst one), returning what was injected.
    ///
    /// # Errors
    /// As [`CompiledModel::run_simulated`]; a probability outside `[0, 1]`.
    pub fn run_simulated_with(
        &self,
        inputs: &[ArrayD<f32>],
        seed: u64,
        p_fail: Option<f64>,
    ) -> Result<(Vec<ArrayD<f32>>, SimStats)> {
        use rand::{RngExt, SeedableRng};
        use rand_distr::{Distribution, StandardNormal};
        let plan = self.plan()?;
        let p_fail = p_fail.unwrap_or(plan.choice.p_error);
        if !(0.0..=1.0).contains(&p_fail) {
            return Err(Error::Setting(crate::backend::SettingError {
                flag: "p_fail",
                reason: format!("must be a probability in [0, 1], got {p_fail}"),
            }));
        }
        let rng = std::cell::RefCell::new(rand::rngs::StdRng::seed_from_u64(seed));
        let mut normal = || -> f64 { StandardNormal.sample(&mut *rng.borrow_mut()) };
        let mut uniform = || -> f64 { rng.borrow_mut().random::<f64>() };
        let mut sim = SimNoise {
            normal: &mut normal,
            uniform: &mut uniform,
            approx_sigma: plan.choice.approx_sigma,
            decrypt_sigma: plan.choice.decrypt_sigma * 2f64.powi(plan.program.msg_bits as i32 + 1),
            p_fail,
            bootstraps: 0,
            failures: 0,
        };
        let ys = run_batched(&self.0.float_graph, inputs, |sample| {
            let q: Vec<Vec<i64>> = self
                .quantize_inputs(sample)?
                .iter()
                .map(Tensor::i64_values)
                .collect();
            let ints = plan.program.eval_clear(&q, Some(&mut sim))?;
            self.client_tail(&plan.program, &ints)
        })?;
        let stats = SimStats {
            p_fail,
            bootstraps: sim.bootstraps,
            failures: sim.failures,
        };
        Ok((ys, stats))
    }

    /// The client-side tail: from the decrypted integers (one vector per program output) to
    /// the model's outputs.
    ///
    /// # Errors
    /// Integers that do not fit the program's outputs.
    pub fn client_tail(&self, prog: &Program, ints: &[Vec<i64>]) -> Result<Vec<Tensor>> {
        let mut known: HashMap<NodeIndex, Tensor> = HashMap::new();
        for (o, v) in prog.outputs.iter().zip(ints) {
            let a = ArrayD::from_shape_vec(IxDyn(&o.shape), v.clone()).map_err(|e| {
                Error::Internal {
                    what: format!("a decrypted output does not fit its shape: {e}"),
                }
            })?;
            known.insert(o.node, Tensor::I64(a));
        }
        eval_tail(&self.0.program, known)
    }

    /// Integers at the encrypted boundary as `eval_int` computes them (the spec).
    ///
    /// # Errors
    /// Inputs that do not fit.
    pub fn boundary_clear(&self, prog: &Program, sample: &[Tensor]) -> Result<Vec<Vec<i64>>> {
        let vals = fhec_ir::eval_all(&self.0.program, sample)?;
        Ok(prog
            .outputs
            .iter()
            .map(|o| vals[&o.node].i64_values())
            .collect())
    }
}

/// Evaluates the float nodes reachable from `known` integer values.
fn eval_tail(g: &Graph, mut known: HashMap<NodeIndex, Tensor>) -> Result<Vec<Tensor>> {
    for n in g.topo()? {
        if known.contains_key(&n) {
            continue;
        }
        let node = &g.g[n];
        match &node.op {
            Op::Input { .. } => continue,
            Op::Const(t) => {
                known.insert(n, t.clone());
                continue;
            }
            _ if node.ty.dtype == DType::I64 => continue, // server side
            op => {
                let ins = g.inputs_of(n);
                let Some(vals) = ins
                    .iter()
                    .map(|i| known.get(i))
                    .collect::<Option<Vec<&Tensor>>>()
                else {
                    continue;
                };
                let v = kernels::eval(op, &vals).map_err(|source| fhec_ir::IrError::Node {
                    node: node.name.clone(),
                    op: op.name(),
                    source,
                })?;
                known.insert(n, v);
            }
        }
    }
    g.outputs
        .iter()
        .map(|o| {
            known.get(&o.node).cloned().ok_or_else(|| Error::Internal {
                what: format!(
                    "output `{}` is not computable from the decrypted values",
                    o.name
                ),
            })
        })
        .collect()
}
