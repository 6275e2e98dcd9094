//! Encrypted inference with a compiled model: the client side of a key pair ([`Client`]:
//! keys, encryption, decryption), the server side ([`Server`]: evaluation with the
//! evaluation keys only), and both in one process ([`Session`]).
//!
//! Keys and ciphertexts travel as bytes ([`EvaluationKeys::to_bytes`],
//! [`Ciphertexts::to_bytes`], …): the same bytes the CLI writes to files, so every front
//! (CLI, Python, HTTP) exchanges the same formats. Everything read is checked against the
//! model's plan (dimensions, ids) before it reaches the cryptographic code.

use crate::artifact::CompiledModel;
use crate::backend::Plan;
use crate::error::{Error, KeyMismatch, Result};
use crate::model::{join_batch, split_batch};
use crate::runtime::files::{self, CT_LIMIT, KEY_LIMIT};
use crate::runtime::{
    keygen, CiphertextShape, ClientKey, CompressedServerKey, EncryptedInputs, EncryptedOutputs,
    KeyInfo, KeyShape, KeySizes, ServerKey,
};
use fhec_ir::Tensor;
use ndarray::ArrayD;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn check_key(plan: &Plan, info: &KeyInfo) -> Result<()> {
    if info.model_id != plan.model_id
        || info.params != plan.choice.params
        || info.extract != plan.choice.extract
        || info.msg_bits != plan.program.msg_bits
    {
        return Err(KeyMismatch::Model {
            key: info.model_id,
            model: plan.model_id,
        }
        .into());
    }
    Ok(())
}

fn key_shape(plan: &Plan) -> KeyShape {
    KeyShape::of(
        &plan.program,
        &plan.choice.params,
        plan.choice.extract.as_ref(),
    )
}

/// The evaluation keys of one key pair as they travel: seeded (about half the size of the
/// expanded keys), no secret.
#[derive(Clone)]
pub struct EvaluationKeys(CompressedServerKey);

impl EvaluationKeys {
    /// Reads evaluation keys from bytes (a `server.key` file), checked against `model`'s
    /// plan: dimensions before decoding, ids after.
    ///
    /// # Errors
    /// Not evaluation keys, truncated or corrupt, made for another model or settings.
    pub fn from_bytes(model: &CompiledModel, bytes: &[u8]) -> Result<Self> {
        let plan = model.plan()?;
        let k: CompressedServerKey =
            files::load_bytes(bytes, "server key", KEY_LIMIT, &key_shape(plan))?;
        check_key(plan, &k.info)?;
        Ok(Self(k))
    }

    /// [`EvaluationKeys::from_bytes`] from a file.
    ///
    /// # Errors
    /// As [`EvaluationKeys::from_bytes`], naming the file.
    pub fn load(model: &CompiledModel, path: &Path) -> Result<Self> {
        let plan = model.plan()?;
        let k: CompressedServerKey = files::load(path, "server key", KEY_LIMIT, &key_shape(plan))?;
        check_key(plan, &k.info).map_err(|e| e.in_file(path))?;
        Ok(Self(k))
    }

    /// The bytes of a `server.key` file.
    ///
    /// # Errors
    /// tfhe's serializer refused the keys (a bug).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        Ok(files::to_bytes(&self.0)?)
    }

    /// Writes a `server.key` file; returns its size in bytes.
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn save(&self, path: &Path) -> Result<u64> {
        Ok(files::save(&self.0, path)?)
    }

    /// The expanded keys' sizes per partition.
    pub fn sizes(&self) -> KeySizes {
        self.0.sizes()
    }

    /// The key pair's random id (every ciphertext under it carries it).
    pub fn key_id(&self) -> u64 {
        self.0.info.key_id
    }

    /// The model fingerprint the keys were made for.
    pub fn model_id(&self) -> u64 {
        self.0.info.model_id
    }
}

/// Encrypted inputs of a batch, or the encrypted results of one: bound to a model and a
/// key pair.
#[derive(Clone)]
pub enum Ciphertexts {
    Inputs(EncryptedInputs),
    Outputs(EncryptedOutputs),
}

impl Ciphertexts {
    /// Samples held.
    pub fn samples(&self) -> usize {
        match self {
            Self::Inputs(c) => c.samples.len(),
            Self::Outputs(c) => c.samples.len(),
        }
    }

    /// The key pair's id.
    pub fn key_id(&self) -> u64 {
        match self {
            Self::Inputs(c) => c.key_id,
            Self::Outputs(c) => c.key_id,
        }
    }

    /// The file's bytes (`X.ct` from `fhec encrypt`, `Y.ct` from `fhec serve-run`).
    ///
    /// # Errors
    /// tfhe's serializer refused them (a bug).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        Ok(match self {
            Self::Inputs(c) => files::to_bytes(c)?,
            Self::Outputs(c) => files::to_bytes(c)?,
        })
    }

    /// Writes the file; returns its size.
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn save(&self, path: &Path) -> Result<u64> {
        Ok(match self {
            Self::Inputs(c) => files::save(c, path)?,
            Self::Outputs(c) => files::save(c, path)?,
        })
    }

    /// Encrypted inputs from bytes, checked against `model`'s plan.
    ///
    /// # Errors
    /// Not encrypted inputs of this model, truncated or corrupt.
    pub fn inputs_from_bytes(model: &CompiledModel, bytes: &[u8]) -> Result<Self> {
        let plan = model.plan()?;
        let shape = CiphertextShape::inputs(&plan.program, plan.choice.home());
        Ok(Self::Inputs(files::load_bytes(
            bytes,
            "encrypted input",
            CT_LIMIT,
            &shape,
        )?))
    }

    /// Encrypted results from bytes, checked against `model`'s plan.
    ///
    /// # Errors
    /// Not encrypted results of this model, truncated or corrupt.
    pub fn outputs_from_bytes(model: &CompiledModel, bytes: &[u8]) -> Result<Self> {
        let plan = model.plan()?;
        let shape = CiphertextShape::outputs(&plan.program, plan.choice.home());
        Ok(Self::Outputs(files::load_bytes(
            bytes,
            "encrypted result",
            CT_LIMIT,
            &shape,
        )?))
    }

    /// [`Ciphertexts::inputs_from_bytes`] from a file.
    ///
    /// # Errors
    /// As there, naming the file.
    pub fn load_inputs(model: &CompiledModel, path: &Path) -> Result<Self> {
        let plan = model.plan()?;
        let shape = CiphertextShape::inputs(&plan.program, plan.choice.home());
        Ok(Self::Inputs(files::load(
            path,
            "encrypted input",
            CT_LIMIT,
            &shape,
        )?))
    }

    /// [`Ciphertexts::outputs_from_bytes`] from a file.
    ///
    /// # Errors
    /// As there, naming the file.
    pub fn load_outputs(model: &CompiledModel, path: &Path) -> Result<Self> {
        let plan = model.plan()?;
        let shape = CiphertextShape::outputs(&plan.program, plan.choice.home());
        Ok(Self::Outputs(files::load(
            path,
            "encrypted result",
            CT_LIMIT,
            &shape,
        )?))
    }

    fn inputs(&self) -> Result<&EncryptedInputs> {
        match self {
            Self::Inputs(c) => Ok(c),
            Self::Outputs(_) => Err(Error::WrongCiphertexts {
                expected: "encrypted inputs",
                got: "encrypted results",
            }),
        }
    }

    fn outputs(&self) -> Result<&EncryptedOutputs> {
        match self {
            Self::Outputs(c) => Ok(c),
            Self::Inputs(_) => Err(Error::WrongCiphertexts {
                expected: "encrypted results",
                got: "encrypted inputs",
            }),
        }
    }
}

/// The client side of one key pair: holds the secret key; quantizes and encrypts inputs,
/// decrypts results and runs the client-side tail.
#[derive(Clone)]
pub struct Client {
    model: CompiledModel,
    plan: Arc<Plan>,
    key: ClientKey,
}

impl Client {
    /// Makes a fresh key pair for `model`: the client (secret key) and the evaluation keys
    /// for the server.
    ///
    /// # Errors
    /// A model without a plan.
    pub fn keygen(model: &CompiledModel) -> Result<(Self, EvaluationKeys)> {
        let plan = model.plan_arc()?;
        let (ck, sk) = keygen(
            &plan.choice.params,
            plan.choice.extract.as_ref(),
            plan.program.msg_bits,
            plan.model_id,
        );
        Ok((
            Self {
                model: model.clone(),
                plan,
                key: ck,
            },
            EvaluationKeys(sk),
        ))
    }

    /// A client from its key's bytes (a `client.key` file), checked against `model`.
    ///
    /// # Errors
    /// Not a client key, truncated or corrupt, made for another model or settings.
    pub fn from_key_bytes(model: &CompiledModel, bytes: &[u8]) -> Result<Self> {
        let plan = model.plan_arc()?;
        let key: ClientKey = files::load_bytes(bytes, "client key", KEY_LIMIT, &key_shape(&plan))?;
        check_key(&plan, &key.info)?;
        Ok(Self {
            model: model.clone(),
            plan,
            key,
        })
    }

    /// [`Client::from_key_bytes`] from a file.
    ///
    /// # Errors
    /// As there, naming the file.
    pub fn load(model: &CompiledModel, path: &Path) -> Result<Self> {
        let plan = model.plan_arc()?;
        let key: ClientKey = files::load(path, "client key", KEY_LIMIT, &key_shape(&plan))?;
        check_key(&plan, &key.info).map_err(|e| e.in_file(path))?;
        Ok(Self {
            model: model.clone(),
            plan,
            key,
        })
    }

    /// The secret key's bytes (a `client.key` file). Keep them secret.
    ///
    /// # Errors
    /// tfhe's serializer refused the key (a bug).
    pub fn key_bytes(&self) -> Result<Vec<u8>> {
        Ok(files::to_bytes(&self.key)?)
    }

    /// Writes the secret key, readable by its owner only; returns its size.
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn save_key(&self, path: &Path) -> Result<u64> {
        Ok(files::save_secret(&self.key, path)?)
    }

    /// The key pair's id.
    pub fn key_id(&self) -> u64 {
        self.key.info.key_id
    }

    /// The compiled model this client is for.
    pub fn model(&self) -> &CompiledModel {
        &self.model
    }

    /// Quantizes and encrypts a batch (one array per graph input, axis 0 = samples).
    ///
    /// # Errors
    /// Inputs that do not fit the model.
    pub fn encrypt(&self, inputs: &[ArrayD<f32>]) -> Result<Ciphertexts> {
        let samples = split_batch(self.model.float_graph(), inputs)?;
        Ok(Ciphertexts::Inputs(EncryptedInputs {
            model_id: self.key.info.model_id,
            key_id: self.key.info.key_id,
            samples: samples
                .iter()
                .map(|s| {
                    Ok(self
                        .model
                        .quantize_inputs(s)?
                        .iter()
                        .map(|q| self.key.encrypt(&q.i64_values()))
                        .collect())
                })
                .collect::<Result<_>>()?,
        }))
    }

    /// Decrypts the integers of every sample (before the client-side tail).
    ///
    /// # Errors
    /// Results of another model or under another key pair.
    pub fn decrypt_integers(&self, outs: &Ciphertexts) -> Result<Vec<Vec<Vec<i64>>>> {
        let outs = outs.outputs()?;
        if outs.model_id != self.key.info.model_id || outs.key_id != self.key.info.key_id {
            return Err(KeyMismatch::Result {
                found: outs.key_id,
                key: self.key.info.key_id,
            }
            .into());
        }
        outs.samples
            .iter()
            .map(|s| Ok(self.key.decrypt(&self.plan.program, s)?))
            .collect()
    }

    /// Decrypts, then runs the client-side tail (dequantization, Softmax …): one array per
    /// graph output, axis 0 = samples.
    ///
    /// # Errors
    /// As [`Client::decrypt_integers`].
    pub fn decrypt(&self, outs: &Ciphertexts) -> Result<Vec<ArrayD<f32>>> {
        let ints = self.decrypt_integers(outs)?;
        let tails = ints
            .iter()
            .map(|s| self.model.client_tail(&self.plan.program, s))
            .collect::<Result<Vec<_>>>()?;
        join_batch(self.model.float_graph(), tails)
    }
}

/// The server side of one key pair: the plan and the expanded evaluation keys. Computes on
/// ciphertexts only.
pub struct Server {
    plan: Arc<Plan>,
    key: ServerKey,
}

impl Server {
    /// The most samples evaluated together.
    pub const BATCH: usize = 16;
    /// Memory for the registers of the samples evaluated together.
    pub const BATCH_BYTES: u64 = 1 << 30;

    /// Samples evaluated together for `plan`: up to [`Server::BATCH`], fewer when their
    /// registers (every ciphertext a sample computes) would pass [`Server::BATCH_BYTES`].
    fn batch(plan: &Plan) -> usize {
        let ct = 8 * (plan.choice.home().big_dimension() as u64 + 1);
        let per_sample = (plan.program.n_regs as u64).saturating_mul(ct).max(1);
        ((Self::BATCH_BYTES / per_sample) as usize).clamp(1, Self::BATCH)
    }

    /// Expands `keys` for `model` (checked: made for this model and its parameters).
    ///
    /// # Errors
    /// Keys of another model or settings.
    pub fn new(model: &CompiledModel, keys: &EvaluationKeys) -> Result<Self> {
        let plan = model.plan_arc()?;
        check_key(&plan, &keys.0.info)?;
        Ok(Self {
            plan,
            key: keys.0.expand(),
        })
    }

    /// Runs the encrypted program on every sample.
    ///
    /// # Errors
    /// Ciphertexts of another model or under another key pair.
    pub fn run(&self, cts: &Ciphertexts) -> Result<Ciphertexts> {
        self.run_with_progress(cts, None)
    }

    /// [`Server::run`], advancing `progress` by one per table lookup.
    ///
    /// # Errors
    /// As [`Server::run`].
    pub fn run_with_progress(
        &self,
        cts: &Ciphertexts,
        progress: Option<&indicatif::ProgressBar>,
    ) -> Result<Ciphertexts> {
        self.run_watched(cts, progress, None)
    }

    /// [`Server::run`], advancing `progress` and stopping (with [`ErrorKind::Cancelled`](
    /// crate::ErrorKind::Cancelled)) before its next stage once `cancel` is set.
    ///
    /// # Errors
    /// As [`Server::run`].
    pub fn run_watched(
        &self,
        cts: &Ciphertexts,
        progress: Option<&indicatif::ProgressBar>,
        cancel: Option<&std::sync::atomic::AtomicBool>,
    ) -> Result<Ciphertexts> {
        let cts = cts.inputs()?;
        let info = &self.key.info;
        if cts.model_id != info.model_id {
            return Err(KeyMismatch::CiphertextModel {
                found: cts.model_id,
                model: info.model_id,
            }
            .into());
        }
        if cts.key_id != info.key_id {
            return Err(KeyMismatch::KeyPair {
                found: cts.key_id,
                key: info.key_id,
            }
            .into());
        }
        // a batch at a time: every core busy across samples, memory bounded per batch
        let mut samples = Vec::with_capacity(cts.samples.len());
        for batch in cts.samples.chunks(Self::batch(&self.plan)) {
            samples.extend(
                self.key
                    .evaluate_batch(&self.plan.program, batch, progress, cancel)?,
            );
        }
        Ok(Ciphertexts::Outputs(EncryptedOutputs {
            model_id: cts.model_id,
            key_id: cts.key_id,
            samples,
        }))
    }

    /// Table lookups per sample (for progress bars).
    pub fn table_lookups(&self) -> usize {
        self.plan.program.tlu_count
    }
}

/// Timings of one encrypted sample.
#[derive(Clone, Debug, Default)]
pub struct SampleTimes {
    pub encrypt: Duration,
    pub evaluate: Duration,
    pub decrypt: Duration,
}

/// Both sides in one process: a fresh key pair, ready to encrypt, evaluate and decrypt.
pub struct Session {
    pub client: Client,
    pub server: Server,
    /// Key generation, including the evaluation keys' expansion.
    pub keygen_time: Duration,
    /// Evaluation key sizes per partition (expanded).
    pub key_sizes: KeySizes,
}

impl Session {
    /// Makes a key pair for `model` and expands its evaluation keys.
    ///
    /// # Errors
    /// A model without a plan.
    pub fn new(model: &CompiledModel) -> Result<Self> {
        let t0 = Instant::now();
        let (client, keys) = Client::keygen(model)?;
        let key_sizes = keys.sizes();
        let server = Server::new(model, &keys)?;
        Ok(Self {
            client,
            server,
            keygen_time: t0.elapsed(),
            key_sizes,
        })
    }

    /// Encrypts, evaluates and decrypts one quantized sample; returns the decrypted
    /// integers at the encrypted boundary (the values `eval_int` computes).
    ///
    /// # Errors
    /// A sample that does not match the program.
    pub fn run_sample(
        &self,
        sample: &[Tensor],
        progress: Option<&indicatif::ProgressBar>,
    ) -> Result<(Vec<Vec<i64>>, SampleTimes)> {
        let mut t = SampleTimes::default();
        let t0 = Instant::now();
        let cts: Vec<_> = sample
            .iter()
            .map(|x| self.client.key.encrypt(&x.i64_values()))
            .collect();
        t.encrypt = t0.elapsed();
        let t1 = Instant::now();
        let outs = self
            .server
            .key
            .evaluate(&self.server.plan.program, &cts, progress)?;
        t.evaluate = t1.elapsed();
        let t2 = Instant::now();
        let ints = self.client.key.decrypt(&self.server.plan.program, &outs)?;
        t.decrypt = t2.elapsed();
        Ok((ints, t))
    }

    /// Encrypts quantized samples, evaluates them in batches (as [`Server::run`] does) and decrypts them; returns each sample's decrypted integers at
    /// the encrypted boundary and the evaluation's wall time.
    ///
    /// # Errors
    /// A sample that does not match the program.
    pub fn run_batch(&self, samples: &[Vec<Tensor>]) -> Result<(Vec<Vec<Vec<i64>>>, Duration)> {
        let cts: Vec<Vec<_>> = samples
            .iter()
            .map(|s| {
                s.iter()
                    .map(|x| self.client.key.encrypt(&x.i64_values()))
                    .collect()
            })
            .collect();
        let prog = &self.server.plan.program;
        let t = Instant::now();
        let mut outs = Vec::with_capacity(cts.len());
        for batch in cts.chunks(Server::batch(&self.server.plan)) {
            outs.extend(self.server.key.evaluate_batch(prog, batch, None, None)?);
        }
        let dt = t.elapsed();
        let ints = outs
            .iter()
            .map(|o| Ok(self.client.key.decrypt(prog, o)?))
            .collect::<Result<_>>()?;
        Ok((ints, dt))
    }

    /// The plan both sides run.
    pub fn plan(&self) -> &Plan {
        &self.server.plan
    }

    /// Encrypts one quantized sample, evaluates it, and decrypts every register (each read
    /// from `lo` upwards; `None` for a register never written): for checking the encrypted
    /// program instruction by instruction against its spec.
    ///
    /// # Errors
    /// A sample that does not match the program.
    pub fn run_registers(&self, sample: &[Tensor], lo: i64) -> Result<Vec<Option<i64>>> {
        let cts: Vec<_> = sample
            .iter()
            .map(|x| self.client.key.encrypt(&x.i64_values()))
            .collect();
        let regs = self
            .server
            .key
            .evaluate_registers(&self.server.plan.program, &cts, None)?;
        let lo = vec![lo; regs.len()];
        Ok(self.client.key.decrypt_registers(&regs, &lo))
    }
}
