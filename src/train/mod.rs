//! `fhec train`: a fully connected network trained quantization-aware, exported as QONNX for
//! `fhec compile` — the seeds' built-in `NeuralNetClassifier` / `NeuralNetRegressor`, in Rust
//! on candle (autodiff and AdamW from `candle-nn`).
//!
//! - Network: `n_layers` linear layers, hidden width `n_hidden_multiplier × features`, an
//!   activation between them; inputs standardized with the training split's statistics
//!   (float ops the client runs before quantizing), then an `n_a_bits` signed grid; weights on
//!   `n_w_bits` symmetric narrow grids; activations on `n_a_bits` grids (unsigned after ReLU
//!   and Sigmoid). See [`net`] for the quantizers and their gradients.
//! - Accumulator budget: with `n_accum_bits = A`, every neuron's worst-case accumulator — its
//!   integer weights against its input grid, exactly as fhec's bit-width pass bounds it — is
//!   kept within `A` bits by per-neuron magnitude pruning. The network trains dense for the
//!   first fifth of the epochs; the budget then tightens one step per epoch until two fifths
//!   later it is `A`; the rest fine-tunes at `A`. Masks are recomputed after every epoch, so
//!   every model scored (and the one exported) fits.
//! - Model selection: the epoch with the best validation score among those at the final
//!   budget (the last epoch without a validation split).
//! - Determinism: one seed drives initialization, the split and the batch order; candle's CPU
//!   kernels reduce in a fixed order, so a seed gives the same bytes.

mod data;
pub mod export;
pub mod net;

pub use data::{load_csv, load_npy, Dataset, Targets, CSV_LIMIT, MAX_CLASSES};

use crate::error::TrainError;
use crate::{Error, Result};
use candle_core::{Device, Tensor};
use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};
use ndarray::{Array2, Axis};
use net::{Activation, Net};
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// Classification (cross-entropy, accuracy) or regression (mean squared error, R²).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    Classification,
    Regression,
}

#[derive(Clone, Debug)]
pub struct TrainOptions {
    pub task: Task,
    /// Linear layers (≥ 1).
    pub n_layers: usize,
    /// Hidden width = this × the number of features.
    pub n_hidden_multiplier: usize,
    pub n_w_bits: u32,
    pub n_a_bits: u32,
    /// Worst-case accumulator bits per neuron (pruning); `None`: no pruning.
    pub n_accum_bits: Option<u32>,
    /// Structured pruning: this fraction of every hidden layer's neurons (smallest L2 norm of
    /// their weights) removed with their outgoing weights, ramped in with the budget.
    pub prune_neurons: f64,
    pub activation: Activation,
    /// Power-of-two scales for inputs, weights and activations.
    pub power_of_two: bool,
    pub epochs: usize,
    pub lr: f64,
    pub batch_size: usize,
    /// Weight classes inversely to their frequency.
    pub balanced: bool,
    /// Fraction of the data held out for validation (stratified for classification).
    pub val_split: f64,
    pub seed: u64,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            task: Task::Classification,
            n_layers: 3,
            n_hidden_multiplier: 4,
            n_w_bits: 3,
            n_a_bits: 3,
            n_accum_bits: Some(8),
            prune_neurons: 0.0,
            activation: Activation::Relu,
            power_of_two: false,
            epochs: 60,
            lr: 3e-3,
            batch_size: 64,
            balanced: false,
            val_split: 0.1,
            seed: 42,
        }
    }
}

impl TrainOptions {
    /// Refuses settings no network can be trained with, in one line.
    pub fn validate(&self) -> std::result::Result<(), TrainError> {
        if self.n_layers == 0 || self.n_layers > 16 {
            return Err(TrainError::Setting(format!(
                "--n-layers {} must be in 1..=16",
                self.n_layers
            )));
        }
        if self.n_hidden_multiplier == 0 || self.n_hidden_multiplier > 64 {
            return Err(TrainError::Setting(format!(
                "--n-hidden-multiplier {} must be in 1..=64",
                self.n_hidden_multiplier
            )));
        }
        for (flag, b) in [("--n-w-bits", self.n_w_bits), ("--n-a-bits", self.n_a_bits)] {
            if !(2..=8).contains(&b) {
                return Err(TrainError::Setting(format!("{flag} {b} must be in 2..=8")));
            }
        }
        if let Some(a) = self.n_accum_bits {
            let need = self.n_w_bits + self.n_a_bits;
            if !(need..=24).contains(&a) {
                return Err(TrainError::Setting(format!(
                    "--n-accum-bits {a} must be in {need}..=24 (one weight of {} bits on a {}-bit input already needs {need})",
                    self.n_w_bits, self.n_a_bits
                )));
            }
        }
        if self.epochs == 0 || self.epochs > 100_000 {
            return Err(TrainError::Setting(format!(
                "--epochs {} must be in 1..=100000",
                self.epochs
            )));
        }
        if !(self.lr > 0.0 && self.lr < 10.0) {
            return Err(TrainError::Setting(format!(
                "--lr {} must be in (0, 10)",
                self.lr
            )));
        }
        if self.batch_size == 0 || self.batch_size > 1 << 20 {
            return Err(TrainError::Setting(format!(
                "--batch-size {} must be at least 1",
                self.batch_size
            )));
        }
        if !(0.0..0.95).contains(&self.prune_neurons) {
            return Err(TrainError::Setting(format!(
                "--prune-neurons {} must be a fraction in [0, 0.95)",
                self.prune_neurons
            )));
        }
        if !(0.0..0.9).contains(&self.val_split) {
            return Err(TrainError::Setting(format!(
                "--val-split {} must be in [0, 0.9)",
                self.val_split
            )));
        }
        if self.balanced && self.task == Task::Regression {
            return Err(TrainError::Setting(
                "--class-weights balanced needs --task classification".into(),
            ));
        }
        Ok(())
    }
}

#[derive(Clone, Debug)]
/// One epoch's log line.
pub struct Epoch {
    pub epoch: usize,
    pub loss: f64,
    /// Validation score (accuracy or R², percent), if there is a validation split.
    pub val: Option<f64>,
    /// The accumulator budget the masks kept after this epoch (bits), if pruning.
    pub budget: Option<u32>,
}

/// What training produced.
pub struct Trained {
    /// The QONNX model, encoded.
    pub onnx: Vec<u8>,
    pub history: Vec<Epoch>,
    /// The epoch exported (1-based).
    pub chosen_epoch: usize,
    /// Its validation score (percent), if any.
    pub val_score: Option<f64>,
    /// Per layer: (kept weights, all weights, widest accumulator in bits).
    pub layers: Vec<(usize, usize, u32)>,
    /// Per layer, the neurons exported (those that reach an output).
    pub live: Vec<usize>,
    pub sizes: Vec<usize>,
}

fn cerr(e: candle_core::Error) -> Error {
    TrainError::Candle(e.to_string()).into()
}

/// Stratified (classification) or plain random split: (train, validation) row indices.
fn split(
    y: &Targets,
    n: usize,
    frac: f64,
    rng: &mut rand::rngs::StdRng,
) -> (Vec<usize>, Vec<usize>) {
    let mut train = Vec::new();
    let mut val = Vec::new();
    let mut groups: Vec<Vec<usize>> = match y {
        Targets::Classes(c, k) => {
            let mut g = vec![Vec::new(); *k];
            for (i, &ci) in c.iter().enumerate() {
                g[ci].push(i);
            }
            g
        }
        Targets::Values(_) => vec![(0..n).collect()],
    };
    for g in &mut groups {
        g.shuffle(rng);
        let k = (g.len() as f64 * frac).round() as usize;
        let k = k.min(g.len().saturating_sub(1));
        val.extend_from_slice(&g[..k]);
        train.extend_from_slice(&g[k..]);
    }
    train.sort_unstable();
    val.sort_unstable();
    (train, val)
}

/// Per-column mean and standard deviation over rows `idx` (a constant column's deviation is
/// taken as 1).
fn column_stats(a: &Array2<f32>, idx: &[usize]) -> (ndarray::Array1<f32>, ndarray::Array1<f32>) {
    let sel = a.select(Axis(0), idx);
    let mean = sel.mean_axis(Axis(0)).expect("non-empty: ≥ 1 training row");
    let std = sel
        .std_axis(Axis(0), 0.0)
        .mapv(|s| if s > 1e-8 { s } else { 1.0 });
    (mean, std)
}

fn rows(x: &Array2<f32>, idx: &[usize], dev: &Device) -> candle_core::Result<Tensor> {
    let f = x.ncols();
    let mut v: Vec<f32> = Vec::with_capacity(idx.len() * f);
    for &i in idx {
        v.extend(x.row(i).iter());
    }
    Tensor::from_vec(v, (idx.len(), f), dev)
}

/// Trains a network on `data` and exports it. `progress(epoch_log, epochs)` is called after
/// every epoch.
pub fn train(
    data: &Dataset,
    o: &TrainOptions,
    mut progress: impl FnMut(&Epoch, usize),
) -> Result<Trained> {
    o.validate()?;
    let mismatch = matches!(
        (&data.y, o.task),
        (Targets::Classes(..), Task::Regression) | (Targets::Values(_), Task::Classification)
    );
    if mismatch {
        return Err(TrainError::Data("the targets do not match --task".into()).into());
    }
    let dev = Device::Cpu;
    let mut rng = rand::rngs::StdRng::seed_from_u64(o.seed);
    let n = data.x.nrows();
    let (tr, va) = split(&data.y, n, o.val_split, &mut rng);
    // standardization from the training rows
    let (mean, std) = column_stats(&data.x, &tr);
    let xs = (&data.x - &mean) / &std;
    let (n_out, classes, y_norm) = match &data.y {
        Targets::Classes(c, k) => (*k, Some(c), None),
        Targets::Values(v) => {
            let (m, s) = column_stats(v, &tr);
            (v.ncols(), None, Some(((v - &m) / &s, m, s)))
        }
    };
    let f = data.x.ncols();
    let hidden = f * o.n_hidden_multiplier;
    let mut sizes = vec![f];
    sizes.extend(std::iter::repeat_n(hidden, o.n_layers - 1));
    sizes.push(n_out);
    let mut net = Net::new(
        &sizes,
        o.n_w_bits,
        o.n_a_bits,
        o.activation,
        o.power_of_two,
        &mut rng,
        &dev,
    )
    .map_err(cerr)?;
    let calib: Vec<usize> = tr.iter().copied().take(512).collect();
    net.init_scales(&rows(&xs, &calib, &dev).map_err(cerr)?)
        .map_err(cerr)?;
    let class_w = match (classes, o.balanced) {
        (Some(c), true) => {
            let mut count = vec![0f32; n_out];
            for &i in &tr {
                count[c[i]] += 1.0;
            }
            let total = tr.len() as f32;
            let w: Vec<f32> = count
                .iter()
                .map(|&k| {
                    if k > 0.0 {
                        total / (n_out as f32 * k)
                    } else {
                        0.0
                    }
                })
                .collect();
            Some(Tensor::new(w, &dev).map_err(cerr)?)
        }
        _ => None,
    };
    let mut opt = AdamW::new(
        net.vars(),
        ParamsAdamW {
            lr: o.lr,
            weight_decay: 0.0,
            ..Default::default()
        },
    )
    .map_err(cerr)?;
    // pruning schedule: dense, then one budget step per epoch, then the final budget
    let warm = (o.epochs / 5).max(1);
    let ramp = (o.epochs * 2 / 5).max(1);
    let dense_bits = (0..net.layers.len())
        .map(|i| {
            let (lo, hi) = net.input_grid(i);
            let qmax = (1i64 << (o.n_w_bits - 1)) - 1;
            let fan_in = sizes[i] as i64;
            let r = (hi - lo).saturating_mul(qmax).saturating_mul(2 * fan_in);
            net::interval_bits(0, r)
        })
        .max()
        .unwrap_or(0);
    // ramp steps taken after epoch `e` (0-based), up to `ramp`; `None` while dense
    let steps = |e: usize| (e + 1 >= warm).then(|| (e + 1 - warm).min(ramp));
    let budget_at = |e: usize| -> Option<u32> {
        let a = o.n_accum_bits?;
        let done = steps(e)?;
        let extra = dense_bits.saturating_sub(a) as f64;
        Some(a + (extra * (ramp - done) as f64 / ramp as f64).ceil() as u32)
    };
    // the neuron fraction follows the same schedule
    let neurons_at = |e: usize| -> f64 {
        steps(e).map_or(0.0, |done| o.prune_neurons * (done as f64 / ramp as f64))
    };
    let targets_t = |idx: &[usize]| -> candle_core::Result<Tensor> {
        match (classes, &y_norm) {
            (Some(c), _) => Tensor::new(idx.iter().map(|&i| c[i] as u32).collect::<Vec<_>>(), &dev),
            (None, Some((v, _, _))) => rows(v, idx, &dev),
            (None, None) => unreachable!("invariant: classes or values"),
        }
    };
    let mut history = Vec::new();
    let mut best: Option<(f64, usize, Snapshot)> = None;
    let mut order = tr.clone();
    for e in 0..o.epochs {
        // cosine learning rate, to 5 % of --lr at the end
        let lr = o.lr
            * (0.05
                + 0.95 * 0.5 * (1.0 + (std::f64::consts::PI * e as f64 / o.epochs as f64).cos()));
        opt.set_learning_rate(lr);
        order.shuffle(&mut rng);
        let mut loss_sum = 0.0;
        let mut batches = 0usize;
        for b in order.chunks(o.batch_size) {
            let mut step = || -> candle_core::Result<f64> {
                let xb = rows(&xs, b, &dev)?;
                let out = net.forward(&xb)?;
                let tb = targets_t(b)?;
                let loss = match o.task {
                    Task::Classification => net::cross_entropy(&out, &tb, class_w.as_ref())?,
                    Task::Regression => (out - tb)?.sqr()?.mean_all()?,
                };
                let l = f64::from(loss.to_scalar::<f32>()?);
                opt.backward_step(&loss)?;
                Ok(l)
            };
            loss_sum += step().map_err(cerr)?;
            batches += 1;
        }
        let budget = budget_at(e);
        let frac = neurons_at(e);
        if frac > 0.0 {
            prune_neurons(&mut net, frac).map_err(cerr)?;
        }
        if let Some(bits) = budget {
            prune_to(&mut net, bits).map_err(cerr)?;
        }
        let val = if va.is_empty() {
            None
        } else {
            Some(
                score(&net, &xs, &va, classes, y_norm.as_ref().map(|t| &t.0), &dev)
                    .map_err(cerr)?,
            )
        };
        let log = Epoch {
            epoch: e + 1,
            loss: loss_sum / batches.max(1) as f64,
            val,
            budget,
        };
        progress(&log, o.epochs);
        history.push(log);
        let final_budget = budget == o.n_accum_bits && frac == o.prune_neurons;
        if final_budget {
            let s = val.unwrap_or(f64::NEG_INFINITY);
            if best
                .as_ref()
                .is_none_or(|(b, _, _)| s >= *b || va.is_empty())
            {
                best = Some((s, e + 1, Snapshot::take(&net).map_err(cerr)?));
            }
        }
    }
    let (val_score, chosen_epoch) = match best {
        Some((s, e, snap)) => {
            snap.restore(&mut net).map_err(cerr)?;
            ((!va.is_empty()).then_some(s), e)
        }
        None => (history.last().and_then(|h| h.val), o.epochs),
    };
    // the exported integers fit the budget (checked as the bit-width pass will)
    let mut layers = Vec::new();
    for i in 0..net.layers.len() {
        let w = net.weight_ints(i).map_err(cerr)?;
        let x = net.input_grid(i);
        let widest = w
            .iter()
            .map(|r| {
                let (lo, hi) = net::accumulator(r, x);
                net::interval_bits(lo, hi)
            })
            .max()
            .unwrap_or(0);
        if let Some(a) = o.n_accum_bits {
            if widest > a {
                return Err(TrainError::Setting(format!(
                    "layer fc{i}: an accumulator needs {widest} bits after pruning, more than --n-accum-bits {a}; raise --n-accum-bits or lower --n-w-bits / --n-a-bits"
                ))
                .into());
            }
        }
        let kept = w.iter().flatten().filter(|&&v| v != 0).count();
        layers.push((kept, w.len() * w.first().map_or(0, Vec::len), widest));
    }
    let input = export::Affine {
        mean: mean.to_vec(),
        std: std.to_vec(),
    };
    let target = y_norm.as_ref().map(|(_, m, s)| export::Affine {
        mean: m.to_vec(),
        std: s.to_vec(),
    });
    let live: Vec<usize> = export::live_neurons(&net)
        .map_err(cerr)?
        .iter()
        .map(Vec::len)
        .collect();
    if let Some(i) = live.iter().position(|&k| k == 0) {
        return Err(TrainError::Setting(format!(
            "layer fc{i} has no neuron left that reaches an output (pruned away): raise --n-accum-bits or --n-hidden-multiplier"
        ))
        .into());
    }
    let onnx = export::to_onnx(&net, &input, target.as_ref(), o.n_a_bits).map_err(cerr)?;
    Ok(Trained {
        onnx,
        history,
        chosen_epoch,
        val_score,
        layers,
        live,
        sizes,
    })
}

/// Masks every layer so that each neuron's accumulator fits `bits` (repeated while a dropped
/// largest weight changes the layer's scale).
fn prune_to(net: &mut Net, bits: u32) -> candle_core::Result<()> {
    for _ in 0..8 {
        let mut stable = true;
        for i in 0..net.layers.len() {
            let w = net.weight_ints(i)?;
            let x = net.input_grid(i);
            let fits = w.iter().all(|r| {
                let (lo, hi) = net::accumulator(r, x);
                net::interval_bits(lo, hi) <= bits
            });
            if fits {
                continue;
            }
            stable = false;
            let l = &net.layers[i];
            let old = l.mask.to_vec2::<f32>()?;
            let mut m = Vec::with_capacity(w.len() * w.first().map_or(0, Vec::len));
            for (r, row) in w.iter().enumerate() {
                let keep = net::keep_mask(row, x, bits);
                m.extend(
                    keep.iter()
                        .zip(&old[r])
                        .map(|(&k, &o)| if k { o } else { 0.0 }),
                );
            }
            let mask = Tensor::from_vec(m, l.mask.shape(), l.mask.device())?;
            net.layers[i].mask = mask;
        }
        if stable {
            return Ok(());
        }
    }
    Ok(())
}

/// Removes the `frac` of each hidden layer's neurons with the smallest weight norm: their
/// weights and the next layer's weights reading them are masked (the export then leaves the
/// neuron out).
fn prune_neurons(net: &mut Net, frac: f64) -> candle_core::Result<()> {
    for i in 0..net.layers.len().saturating_sub(1) {
        let l = &net.layers[i];
        let norms = (l.w.as_tensor() * &l.mask)?
            .sqr()?
            .sum(1)?
            .to_vec1::<f32>()?;
        let k = ((norms.len() as f64) * frac).round() as usize;
        let k = k.min(norms.len().saturating_sub(1));
        let mut order: Vec<usize> = (0..norms.len()).collect();
        order.sort_by(|&a, &b| norms[a].total_cmp(&norms[b]).then(a.cmp(&b)));
        let gone = &order[..k];
        let mut m = l.mask.to_vec2::<f32>()?;
        for &r in gone {
            m[r].iter_mut().for_each(|v| *v = 0.0);
        }
        let next = &net.layers[i + 1];
        let mut mn = next.mask.to_vec2::<f32>()?;
        for row in &mut mn {
            for &r in gone {
                row[r] = 0.0;
            }
        }
        let dev = l.mask.device().clone();
        let (shape, nshape) = (l.mask.shape().clone(), next.mask.shape().clone());
        net.layers[i].mask = Tensor::from_vec(m.concat(), shape, &dev)?;
        net.layers[i + 1].mask = Tensor::from_vec(mn.concat(), nshape, &dev)?;
    }
    Ok(())
}

/// Validation score in percent: accuracy, or R² over every output value.
fn score(
    net: &Net,
    x: &Array2<f32>,
    idx: &[usize],
    classes: Option<&Vec<usize>>,
    values: Option<&Array2<f32>>,
    dev: &Device,
) -> candle_core::Result<f64> {
    let out = net.forward(&rows(x, idx, dev)?)?;
    match (classes, values) {
        (Some(c), _) => {
            let pred = out.argmax(1)?.to_vec1::<u32>()?;
            let ok = pred
                .iter()
                .zip(idx)
                .filter(|(p, &i)| **p as usize == c[i])
                .count();
            Ok(100.0 * ok as f64 / idx.len().max(1) as f64)
        }
        (None, Some(v)) => {
            let p: Vec<f64> = out
                .to_vec2::<f32>()?
                .into_iter()
                .flatten()
                .map(f64::from)
                .collect();
            let t: Vec<f64> = idx
                .iter()
                .flat_map(|&i| v.row(i).to_vec())
                .map(f64::from)
                .collect();
            Ok(100.0 * crate::tune::r2(&p, &t))
        }
        _ => Ok(0.0),
    }
}

/// A copy of every trained value and mask.
struct Snapshot {
    vars: Vec<Tensor>,
    masks: Vec<Tensor>,
}

impl Snapshot {
    fn take(net: &Net) -> candle_core::Result<Self> {
        Ok(Self {
            vars: net
                .vars()
                .iter()
                .map(|v| v.as_tensor().copy())
                .collect::<candle_core::Result<_>>()?,
            masks: net
                .layers
                .iter()
                .map(|l| l.mask.copy())
                .collect::<candle_core::Result<_>>()?,
        })
    }
    fn restore(&self, net: &mut Net) -> candle_core::Result<()> {
        for (v, t) in net.vars().iter().zip(&self.vars) {
            v.set(t)?;
        }
        for (l, m) in net.layers.iter_mut().zip(&self.masks) {
            l.mask = m.clone();
        }
        Ok(())
    }
}
