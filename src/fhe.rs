//! Encrypted inference end to end: lower the integer program, choose parameters, make keys,
//! encrypt, evaluate, decrypt, and run the client-side tail on the decrypted integers.

use crate::backend::params::Choice;
use crate::backend::{
    choose_params, lower, lower_with, FheOptions, Layout, ParamsPolicy, Program, SimNoise,
    TableSplit,
};
use crate::compile::CompiledModel;
use crate::error::{Error, Result};
use crate::model::{join_batch, split_batch};
use crate::runtime::{
    keygen, CiphertextShape, ClientKey, CompressedServerKey, EncryptedInputs, EncryptedOutputs,
    KeyInfo, KeyShape, ServerKey,
};
use fhec_ir::{kernels, DType, Graph, NodeIndex, Op, Tensor};
use ndarray::{ArrayD, IxDyn};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The encrypted form of a compiled model: its register program, its parameters, and the
/// fingerprint keys and ciphertexts are bound to.
#[derive(Clone, Debug)]
pub struct Plan {
    pub program: Program,
    pub choice: Choice,
    pub model_id: u64,
}

/// A model ready for encrypted inference in one process: its plan and a fresh key pair.
pub struct FheSession {
    pub plan: Plan,
    pub client: ClientKey,
    pub server: ServerKey,
    /// Key generation, including the server key's expansion.
    pub keygen_time: Duration,
    /// Server key sizes per partition.
    pub key_sizes: crate::runtime::KeySizes,
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

/// Timings of one encrypted sample.
#[derive(Clone, Debug, Default)]
pub struct SampleTimes {
    pub encrypt: Duration,
    pub evaluate: Duration,
    pub decrypt: Duration,
}

/// Identity of a program under parameters: payload length and CRC-32 of both.
fn fingerprint(prog: &Program, choice: &Choice) -> u64 {
    let mut h = crc32fast::Hasher::new();
    // the key layout: registers under the extraction set's key when there is one
    h.update(b"fhec registers home v2");
    let mut len = 0u64;
    for bytes in [
        bincode::serialize(prog),
        bincode::serialize(&choice.params),
        bincode::serialize(&choice.extract),
    ]
    .into_iter()
    .flatten()
    {
        len += bytes.len() as u64;
        h.update(&bytes);
    }
    (len << 32) | u64::from(h.finalize())
}

impl CompiledModel {
    /// The same model with other encrypted-program settings (the plan is remade).
    #[must_use]
    pub fn with_fhe_options(mut self, opts: FheOptions) -> Self {
        if opts != self.fhe {
            self.params = None;
        }
        self.fhe = opts;
        self.plan = std::sync::OnceLock::new();
        self
    }

    /// Lowers the program and chooses its parameters (once; cached).
    ///
    /// # Errors
    /// No secure parameters fit (the error names the layer), or a server-side float op.
    pub fn plan(&self) -> Result<&Plan> {
        if let Some(p) = self.plan.get() {
            return Ok(p);
        }
        let (program, choice) = match &self.params {
            // chosen when the model was saved: checked, not searched again
            Some(stored) => {
                let program = lower_with(
                    &self.program,
                    &self.input_quant,
                    self.fhe.rounding,
                    Layout::of_stored(stored.split_tables, stored.light_tables),
                )?;
                let choice = crate::backend::verify_params(&program, &self.fhe, stored)?;
                (program, choice)
            }
            None => self.choose_program().map_err(|e| self.own_grid_hint(e))?,
        };
        let model_id = fingerprint(&program, &choice);
        Ok(self.plan.get_or_init(|| Plan {
            program,
            choice,
            model_id,
        }))
    }

    /// A model compiled on its own grids takes its weights' and activations' bits from them,
    /// not from `--n-bits`: when no parameters fit, say what does narrow it.
    fn own_grid_hint(&self, e: Error) -> Error {
        let own_grids = !self.report.config.requantize && self.float_graph.carries_grids();
        match e {
            Error::Params(m) if own_grids => Error::Usage(format!(
                "{m} (this model quantizes itself: its grids, not --n-bits, set its bits; --requantize compiles it on fhec's --n-bits grids from --calib data)"
            )),
            e => e,
        }
    }

    /// Lowers the program and searches its parameters. With optimized parameters it tries
    /// the program's second layout too — split tables for exact rounding
    /// ([`Program::split`]), light tables for approximate rounding ([`Program::light`]) —
    /// and keeps whichever is estimated faster (`--split-tables auto`), or the one asked for.
    fn choose_program(&self) -> Result<(Program, Choice)> {
        let second = || {
            lower_with(
                &self.program,
                &self.input_quant,
                self.fhe.rounding,
                Layout::Second,
            )
        };
        let optimized = self.fhe.params == ParamsPolicy::Optimized;
        if optimized && self.fhe.split_tables == TableSplit::On {
            let alt = second()?;
            let choice = choose_params(&alt, &self.fhe)?;
            return Ok((alt, choice));
        }
        let program = lower(&self.program, &self.input_quant, self.fhe.rounding)?;
        let whole = choose_params(&program, &self.fhe);
        if !optimized || self.fhe.split_tables == TableSplit::Off {
            return Ok((program, whole?));
        }
        let alt = second()?;
        if !alt.split && !alt.light {
            return Ok((program, whole?));
        }
        match (whole, choose_params(&alt, &self.fhe)) {
            (Ok(w), Ok(a)) if w.est_ms <= a.est_ms => Ok((program, w)),
            (_, Ok(a)) => Ok((alt, a)),
            (whole, Err(_)) => Ok((program, whole?)),
        }
    }

    /// Makes a key pair for this model: the client key (secret) and the server key
    /// (evaluation keys, compressed; [`CompressedServerKey::expand`] on the server).
    ///
    /// # Errors
    /// As [`CompiledModel::plan`].
    pub fn keygen(&self) -> Result<(ClientKey, CompressedServerKey)> {
        let plan = self.plan()?;
        Ok(keygen(
            &plan.choice.params,
            plan.choice.extract.as_ref(),
            plan.program.msg_bits,
            plan.model_id,
        ))
    }

    /// What this model's key files must hold (checked when they are read).
    ///
    /// # Errors
    /// As [`CompiledModel::plan`].
    pub fn key_shape(&self) -> Result<KeyShape> {
        let plan = self.plan()?;
        Ok(KeyShape::of(
            &plan.program,
            &plan.choice.params,
            plan.choice.extract.as_ref(),
        ))
    }

    /// What this model's encrypted-input files must hold.
    ///
    /// # Errors
    /// As [`CompiledModel::plan`].
    pub fn input_shape(&self) -> Result<CiphertextShape> {
        let plan = self.plan()?;
        Ok(CiphertextShape::inputs(&plan.program, plan.choice.home()))
    }

    /// What this model's encrypted-result files must hold.
    ///
    /// # Errors
    /// As [`CompiledModel::plan`].
    pub fn output_shape(&self) -> Result<CiphertextShape> {
        let plan = self.plan()?;
        Ok(CiphertextShape::outputs(&plan.program, plan.choice.home()))
    }

    /// Checks that a key was made for this model and these parameters.
    ///
    /// # Errors
    /// A key of another model, or of the same model compiled with other settings.
    pub fn check_key(&self, info: &KeyInfo) -> Result<()> {
        let plan = self.plan()?;
        if info.model_id != plan.model_id
            || info.params != plan.choice.params
            || info.extract != plan.choice.extract
            || info.msg_bits != plan.program.msg_bits
        {
            return Err(Error::Usage(format!(
                "the key was made for another model or other compile settings (model id {:016x}, this model {:016x}); make keys for this model with `fhec keygen`",
                info.model_id, plan.model_id
            )));
        }
        Ok(())
    }

    /// Client side: quantizes and encrypts a batch (one array per graph input, axis 0 =
    /// samples).
    ///
    /// # Errors
    /// Inputs that do not fit the model; a key of another model.
    pub fn encrypt(&self, key: &ClientKey, inputs: &[ArrayD<f32>]) -> Result<EncryptedInputs> {
        self.check_key(&key.info)?;
        let samples = split_batch(&self.float_graph, inputs)?;
        Ok(EncryptedInputs {
            model_id: key.info.model_id,
            key_id: key.info.key_id,
            samples: samples
                .iter()
                .map(|s| {
                    Ok(self
                        .quantize_inputs(s)?
                        .iter()
                        .map(|q| key.encrypt(&q.i64_values()))
                        .collect())
                })
                .collect::<Result<_>>()?,
        })
    }

    /// Server side: runs the encrypted program on every sample.
    ///
    /// # Errors
    /// Ciphertexts of another model or made under another key.
    pub fn evaluate(&self, key: &ServerKey, cts: &EncryptedInputs) -> Result<EncryptedOutputs> {
        self.evaluate_with_progress(key, cts, None)
    }

    /// [`CompiledModel::evaluate`], advancing `progress` by one per table lookup.
    ///
    /// # Errors
    /// As [`CompiledModel::evaluate`].
    pub fn evaluate_with_progress(
        &self,
        key: &ServerKey,
        cts: &EncryptedInputs,
        progress: Option<&indicatif::ProgressBar>,
    ) -> Result<EncryptedOutputs> {
        self.check_key(&key.info)?;
        if cts.model_id != key.info.model_id {
            return Err(Error::Usage(format!(
                "the ciphertexts are for another model (model id {:016x}, this model {:016x}); encrypt with this model's client key",
                cts.model_id, key.info.model_id
            )));
        }
        if cts.key_id != key.info.key_id {
            return Err(Error::Usage(format!(
                "the ciphertexts were encrypted under another key pair (key id {:016x}, server key {:016x}); use the server key made with the client key that encrypted them",
                cts.key_id, key.info.key_id
            )));
        }
        let plan = self.plan()?;
        let samples = cts
            .samples
            .iter()
            .map(|s| key.evaluate(&plan.program, s, progress))
            .collect::<Result<_>>()?;
        Ok(EncryptedOutputs {
            model_id: cts.model_id,
            key_id: cts.key_id,
            samples,
        })
    }

    /// Client side: decrypts the integers of every sample (before the client-side tail).
    ///
    /// # Errors
    /// Results of another model or under another key.
    pub fn decrypt_integers(
        &self,
        key: &ClientKey,
        outs: &EncryptedOutputs,
    ) -> Result<Vec<Vec<Vec<i64>>>> {
        self.check_key(&key.info)?;
        if outs.model_id != key.info.model_id || outs.key_id != key.info.key_id {
            return Err(Error::Usage(format!(
                "the encrypted result was made under another key pair or model (key id {:016x}, this client key {:016x}); decrypt with the client key that encrypted the inputs",
                outs.key_id, key.info.key_id
            )));
        }
        let plan = self.plan()?;
        outs.samples
            .iter()
            .map(|s| key.decrypt(&plan.program, s))
            .collect()
    }

    /// Client side: decrypts, then runs the client-side tail (dequantization, Softmax …);
    /// one array per graph output, axis 0 = samples.
    ///
    /// # Errors
    /// As [`CompiledModel::decrypt_integers`].
    pub fn decrypt(&self, key: &ClientKey, outs: &EncryptedOutputs) -> Result<Vec<ArrayD<f32>>> {
        let plan = self.plan()?;
        let ints = self.decrypt_integers(key, outs)?;
        let tails = ints
            .iter()
            .map(|s| self.client_tail(&plan.program, s))
            .collect::<Result<Vec<_>>>()?;
        join_batch(&self.float_graph, tails)
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
            return Err(Error::Usage(format!(
                "a failure probability must be in [0, 1], got {p_fail}"
            )));
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
        let ys = crate::model::run_batched(&self.float_graph, inputs, |sample| {
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

    /// Plans and makes a key pair in this process.
    ///
    /// # Errors
    /// As [`CompiledModel::plan`].
    pub fn fhe_session(&self) -> Result<FheSession> {
        let plan = self.plan()?.clone();
        let t0 = Instant::now();
        let (client, server) = self.keygen()?;
        let key_sizes = server.sizes();
        let server = server.expand();
        Ok(FheSession {
            plan,
            client,
            server,
            keygen_time: t0.elapsed(),
            key_sizes,
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
    pub fn run_sample(
        &self,
        sample: &[Tensor],
        progress: Option<&indicatif::ProgressBar>,
    ) -> Result<(Vec<Vec<i64>>, SampleTimes)> {
        let mut t = SampleTimes::default();
        let t0 = Instant::now();
        let cts: Vec<_> = sample
            .iter()
            .map(|x| self.client.encrypt(&x.i64_values()))
            .collect();
        t.encrypt = t0.elapsed();
        let t1 = Instant::now();
        let outs = self.server.evaluate(&self.plan.program, &cts, progress)?;
        t.evaluate = t1.elapsed();
        let t2 = Instant::now();
        let ints = self.client.decrypt(&self.plan.program, &outs)?;
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
