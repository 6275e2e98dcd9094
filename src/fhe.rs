//! Encrypted inference end to end: lower the integer program, choose parameters, make keys,
//! encrypt, evaluate, decrypt, and run the client-side tail on the decrypted integers.

use crate::backend::params::Choice;
use crate::backend::{choose_params, lower, Program};
use crate::compile::CompiledModel;
use crate::error::{Error, Result};
use crate::runtime::{keygen, ClientKey, ServerKey};
use fhec_ir::{kernels, DType, Graph, NodeIndex, Op, Tensor};
use ndarray::{ArrayD, IxDyn};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A model ready for encrypted inference: its program, parameters and keys.
pub struct FheSession {
    pub program: Program,
    pub choice: Choice,
    pub client: ClientKey,
    pub server: ServerKey,
    pub keygen_time: Duration,
}

/// Timings of one encrypted sample.
#[derive(Clone, Debug, Default)]
pub struct SampleTimes {
    pub encrypt: Duration,
    pub evaluate: Duration,
    pub decrypt: Duration,
}

impl CompiledModel {
    /// Lowers the program and chooses parameters at `p_error` per bootstrap.
    ///
    /// # Errors
    /// No secure parameters fit (the error names the layer), or a server-side float op.
    pub fn plan(&self, p_error: f64) -> Result<(Program, Choice)> {
        let prog = lower(self)?;
        let choice = choose_params(&prog, p_error)?;
        Ok((prog, choice))
    }

    /// Plans and makes keys.
    ///
    /// # Errors
    /// As [`CompiledModel::plan`].
    pub fn fhe_session(&self, p_error: f64) -> Result<FheSession> {
        let (program, choice) = self.plan(p_error)?;
        let t0 = Instant::now();
        let (client, server) = keygen(&choice.params, program.msg_bits);
        Ok(FheSession {
            program,
            choice,
            client,
            server,
            keygen_time: t0.elapsed(),
        })
    }

    /// The client-side tail: from the decrypted integers (one vector per program output) to
    /// the model's outputs.
    ///
    /// # Errors
    /// A tail that reads something the server did not send (a compiler bug).
    pub fn client_tail(&self, prog: &Program, ints: &[Vec<i64>]) -> Result<Vec<Tensor>> {
        let mut known: HashMap<NodeIndex, Tensor> = HashMap::new();
        for (o, v) in prog.outputs.iter().zip(ints) {
            let a = ArrayD::from_shape_vec(IxDyn(&o.shape), v.clone())
                .map_err(|e| Error::Usage(e.to_string()))?;
            known.insert(o.node, Tensor::I64(a));
        }
        eval_tail(&self.program, known)
    }

    /// Integers at the encrypted boundary as `eval_int` computes them (the spec).
    ///
    /// # Errors
    /// Inputs that do not fit.
    pub fn boundary_clear(&self, prog: &Program, sample: &[Tensor]) -> Result<Vec<Vec<i64>>> {
        let vals = fhec_ir::eval_all(&self.program, sample)?;
        Ok(prog
            .outputs
            .iter()
            .map(|o| vals[&o.node].i64_values())
            .collect())
    }
}

impl FheSession {
    /// Encrypts, evaluates and decrypts one quantized sample; returns the decrypted integers.
    ///
    /// # Errors
    /// Inputs that do not match the program.
    pub fn run_sample(&self, sample: &[Tensor]) -> Result<(Vec<Vec<i64>>, SampleTimes)> {
        let mut t = SampleTimes::default();
        let t0 = Instant::now();
        let cts = sample
            .iter()
            .map(|x| self.client.encrypt(&x.i64_values()))
            .collect();
        t.encrypt = t0.elapsed();
        let t1 = Instant::now();
        let outs = self.server.evaluate(&self.program, cts)?;
        t.evaluate = t1.elapsed();
        let t2 = Instant::now();
        let ints = self.client.decrypt(&self.program, &outs);
        t.decrypt = t2.elapsed();
        Ok((ints, t))
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
            known.get(&o.node).cloned().ok_or_else(|| {
                Error::Usage(format!(
                    "internal error: output `{}` is not computable from the decrypted values",
                    o.name
                ))
            })
        })
        .collect()
}
