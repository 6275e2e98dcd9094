//! The quantization-aware network `fhec train` fits, on candle: fake quantizers with
//! straight-through estimators, per-neuron pruning masks, and the integer view of every layer
//! (what the exported QONNX graph defines and fhec compiles).
//!
//! - Inputs and activations: a learned scale per quantizer (LSQ: the gradient reaches the
//!   scale through `x / s` and `· s`), kept positive as `s = 2^l`; with power-of-two scales,
//!   `l` is rounded in the forward pass (straight-through).
//! - Weights: one symmetric narrow-range scale per layer from the largest kept magnitude,
//!   `s = max|w| / (2^(b−1) − 1)` (a power of two at or above it with `--power-of-two`), not
//!   learned, as Brevitas' `Int8WeightPerTensorFloat`.
//! - Rounding: `x + (round(x) − x).detach()` — the forward pass rounds, the backward pass is
//!   the identity; `clamp` passes gradients inside the range only.

use candle_core::{DType, Device, Result, Tensor, Var, D};
use rand::RngExt;

/// `x` rounded in the forward pass, the identity in the backward pass.
pub fn ste_round(x: &Tensor) -> Result<Tensor> {
    x + (x.round()? - x)?.detach()
}

/// An integer grid `[lo, hi]` with a learned scale: `clamp(round(x / s), lo, hi) · s`.
pub struct ActQuant {
    pub log2_scale: Var,
    pub lo: i64,
    pub hi: i64,
    pub po2: bool,
}

impl ActQuant {
    pub fn new(lo: i64, hi: i64, po2: bool, dev: &Device) -> Result<Self> {
        Ok(Self {
            log2_scale: Var::new(&[0f32], dev)?,
            lo,
            hi,
            po2,
        })
    }

    fn scale_t(&self) -> Result<Tensor> {
        let l = self.log2_scale.as_tensor();
        let l = if self.po2 { ste_round(l)? } else { l.clone() };
        (l * std::f64::consts::LN_2)?.exp()
    }

    /// The scale the forward pass uses.
    pub fn scale(&self) -> Result<f32> {
        self.scale_t()?.to_vec1::<f32>().map(|v| v[0])
    }

    /// Sets the scale from `x` as LSQ does, `2·mean|x| / √hi` (a few outliers, such as a
    /// nearly constant feature after standardization, then do not stretch the grid).
    pub fn init_from(&self, x: &Tensor) -> Result<()> {
        let m = x.abs()?.mean_all()?.to_scalar::<f32>()?;
        let s = 2.0 * m / (self.hi as f32).sqrt();
        let s = if s.is_finite() && s > 0.0 { s } else { 1.0 };
        self.log2_scale
            .set(&Tensor::new(&[s.log2()], self.log2_scale.device())?)
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let s = self.scale_t()?;
        let q = ste_round(&x.broadcast_div(&s)?)?.clamp(self.lo as f32, self.hi as f32)?;
        q.broadcast_mul(&s)
    }
}

/// The activation between hidden layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Relu,
    Sigmoid,
    Tanh,
}

impl Activation {
    /// The ONNX op it exports as.
    pub fn onnx_op(self) -> &'static str {
        match self {
            Self::Relu => "Relu",
            Self::Sigmoid => "Sigmoid",
            Self::Tanh => "Tanh",
        }
    }
    /// The output grid of an `a`-bit quantizer after this activation: unsigned where the
    /// activation is non-negative.
    pub fn grid(self, a: u32) -> (i64, i64) {
        match self {
            Self::Relu | Self::Sigmoid => (0, (1 << a) - 1),
            Self::Tanh => (-(1 << (a - 1)), (1 << (a - 1)) - 1),
        }
    }
    fn apply(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Relu => x.relu(),
            Self::Sigmoid => candle_nn::ops::sigmoid(x),
            Self::Tanh => x.tanh(),
        }
    }
}

/// One fully connected layer: weights `[out, in]`, a float bias, a 0/1 pruning mask.
pub struct Layer {
    pub w: Var,
    pub b: Var,
    pub mask: Tensor,
}

/// The network: input quantizer, then per layer `x · (W ⊙ M)ᵀ + b`, and between layers the
/// activation and its quantizer.
pub struct Net {
    pub input_q: ActQuant,
    pub layers: Vec<Layer>,
    pub act_q: Vec<ActQuant>,
    pub activation: Activation,
    pub w_bits: u32,
    pub po2: bool,
}

impl Net {
    /// Weights initialized as torch's `nn.Linear` (uniform ±1/√fan_in) from `rng`.
    pub fn new(
        sizes: &[usize],
        w_bits: u32,
        a_bits: u32,
        activation: Activation,
        po2: bool,
        rng: &mut rand::rngs::StdRng,
        dev: &Device,
    ) -> Result<Self> {
        let mut layers = Vec::new();
        for win in sizes.windows(2) {
            let (fi, fo) = (win[0], win[1]);
            let bound = 1.0 / (fi as f32).sqrt();
            let w: Vec<f32> = (0..fi * fo)
                .map(|_| rng.random_range(-bound..bound))
                .collect();
            let b: Vec<f32> = (0..fo).map(|_| rng.random_range(-bound..bound)).collect();
            layers.push(Layer {
                w: Var::from_tensor(&Tensor::from_vec(w, (fo, fi), dev)?)?,
                b: Var::from_tensor(&Tensor::from_vec(b, fo, dev)?)?,
                mask: Tensor::ones((fo, fi), DType::F32, dev)?,
            });
        }
        let (lo, hi) = Activation::Tanh.grid(a_bits); // signed inputs
        let input_q = ActQuant::new(lo, hi, po2, dev)?;
        let act_q = (1..layers.len())
            .map(|_| {
                let (lo, hi) = activation.grid(a_bits);
                ActQuant::new(lo, hi, po2, dev)
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            input_q,
            layers,
            act_q,
            activation,
            w_bits,
            po2,
        })
    }

    /// Every trained variable (for the optimizer).
    pub fn vars(&self) -> Vec<Var> {
        let mut v = vec![self.input_q.log2_scale.clone()];
        for l in &self.layers {
            v.push(l.w.clone());
            v.push(l.b.clone());
        }
        v.extend(self.act_q.iter().map(|q| q.log2_scale.clone()));
        v
    }

    fn qmax(&self) -> f32 {
        ((1i64 << (self.w_bits - 1)) - 1) as f32
    }

    /// The weight scale of layer `i`: from the largest kept magnitude.
    pub fn weight_scale(&self, i: usize) -> Result<f32> {
        let l = &self.layers[i];
        let m = (l.w.as_tensor() * &l.mask)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        let s = if m > 0.0 { m / self.qmax() } else { 1.0 };
        Ok(if self.po2 { s.log2().ceil().exp2() } else { s })
    }

    fn weight_q(&self, i: usize) -> Result<Tensor> {
        let l = &self.layers[i];
        let s = self.weight_scale(i)? as f64;
        let w = (l.w.as_tensor() * &l.mask)?;
        let q = ste_round(&(w / s)?)?.clamp(-self.qmax(), self.qmax())?;
        q * s
    }

    /// The integer weights of layer `i`, `[out][in]`, as the exported model defines them.
    pub fn weight_ints(&self, i: usize) -> Result<Vec<Vec<i64>>> {
        let l = &self.layers[i];
        let s = self.weight_scale(i)? as f64;
        let q = ((l.w.as_tensor() * &l.mask)? / s)?
            .round()?
            .clamp(-self.qmax(), self.qmax())?;
        Ok(q.to_vec2::<f32>()?
            .into_iter()
            .map(|r| r.into_iter().map(|v| v as i64).collect())
            .collect())
    }

    /// The integer grid of layer `i`'s input.
    pub fn input_grid(&self, i: usize) -> (i64, i64) {
        if i == 0 {
            (self.input_q.lo, self.input_q.hi)
        } else {
            (self.act_q[i - 1].lo, self.act_q[i - 1].hi)
        }
    }

    /// Sets every activation quantizer's scale from the float network's values on `x`.
    pub fn init_scales(&self, x: &Tensor) -> Result<()> {
        self.input_q.init_from(x)?;
        let mut h = self.input_q.forward(x)?;
        for (i, l) in self.layers.iter().enumerate() {
            h = h
                .matmul(&(l.w.as_tensor() * &l.mask)?.t()?)?
                .broadcast_add(l.b.as_tensor())?;
            if let Some(q) = self.act_q.get(i) {
                let a = self.activation.apply(&h)?;
                q.init_from(&a)?;
                h = q.forward(&a)?;
            }
        }
        Ok(())
    }

    /// The quantized forward pass: logits (or regression outputs), `[batch, outputs]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.input_q.forward(x)?;
        for (i, l) in self.layers.iter().enumerate() {
            h = h
                .matmul(&self.weight_q(i)?.t()?)?
                .broadcast_add(l.b.as_tensor())?;
            if let Some(q) = self.act_q.get(i) {
                h = q.forward(&self.activation.apply(&h)?)?;
            }
        }
        Ok(h)
    }
}

/// Bits of an integer interval's range, as fhec's bit-width pass counts them
/// (`⌈log2(hi − lo + 1)⌉`).
pub fn interval_bits(lo: i64, hi: i64) -> u32 {
    let n = (i128::from(hi) - i128::from(lo)) as u128;
    128 - n.leading_zeros()
}

/// `[lo, hi] · w` added to `acc`.
fn add_scaled(acc: (i64, i64), x: (i64, i64), w: i64) -> (i64, i64) {
    let (a, b) = (x.0 * w, x.1 * w);
    (acc.0 + a.min(b), acc.1 + a.max(b))
}

/// The worst-case accumulator of one neuron: its integer weights against the input grid.
pub fn accumulator(row: &[i64], x: (i64, i64)) -> (i64, i64) {
    row.iter().fold((0, 0), |acc, &w| add_scaled(acc, x, w))
}

/// Which weights of one neuron to keep so that its accumulator fits `budget` bits: the
/// largest magnitudes first, each one kept if it still fits (weights that round to zero are
/// kept: they cost nothing now and may grow).
pub fn keep_mask(row: &[i64], x: (i64, i64), budget: u32) -> Vec<bool> {
    let mut order: Vec<usize> = (0..row.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(row[i].abs()), i));
    let mut keep = vec![false; row.len()];
    let mut acc = (0, 0);
    for i in order {
        let next = add_scaled(acc, x, row[i]);
        if interval_bits(next.0, next.1) <= budget {
            acc = next;
            keep[i] = true;
        }
    }
    keep
}

/// Mean cross-entropy with optional per-class weights (`weights[c]` for a sample of class c,
/// normalized by the weights' sum as torch does).
pub fn cross_entropy(logits: &Tensor, target: &Tensor, weights: Option<&Tensor>) -> Result<Tensor> {
    let lsm = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let picked = lsm.gather(&target.unsqueeze(1)?, 1)?.squeeze(1)?;
    match weights {
        None => picked.mean_all()?.neg(),
        Some(w) => {
            let sw = w.gather(target, 0)?;
            ((picked * &sw)?.sum_all()? / sw.sum_all()?.to_scalar::<f32>()? as f64)?.neg()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ste_round_rounds_forward_and_passes_gradients_through() {
        let dev = Device::Cpu;
        let x = Var::new(&[0.4f32, 1.6, -2.5], &dev).unwrap();
        let y = ste_round(x.as_tensor()).unwrap();
        assert_eq!(y.to_vec1::<f32>().unwrap(), vec![0.0, 2.0, -3.0]);
        let g = (y * 3.0).unwrap().sum_all().unwrap().backward().unwrap();
        assert_eq!(g.get(&x).unwrap().to_vec1::<f32>().unwrap(), vec![3.0; 3]);
    }

    #[test]
    fn act_quant_clamps_to_its_grid_and_learns_its_scale_as_lsq() {
        let dev = Device::Cpu;
        let q = ActQuant::new(0, 7, false, &dev).unwrap(); // s = 1
        let x = Var::new(&[-1.0f32, 2.4, 9.0], &dev).unwrap();
        let y = q.forward(x.as_tensor()).unwrap();
        assert_eq!(y.to_vec1::<f32>().unwrap(), vec![0.0, 2.0, 7.0]);
        let g = y.sum_all().unwrap().backward().unwrap();
        // inside the grid the input's gradient is 1, outside 0
        assert_eq!(
            g.get(&x).unwrap().to_vec1::<f32>().unwrap(),
            vec![0.0, 1.0, 0.0]
        );
        // d/ds of round(x/s)·s (STE) is round(x/s) − x/s inside, the bound outside; times
        // ds/dl = s·ln 2 (s = 1): (0) + (2 − 2.4) + 7
        let gl = g.get(&q.log2_scale).unwrap().to_vec1::<f32>().unwrap()[0];
        let want = (0.0 + (2.0 - 2.4) + 7.0) * std::f32::consts::LN_2;
        assert!((gl - want).abs() < 1e-5, "{gl} vs {want}");
    }

    #[test]
    fn power_of_two_scales_round_their_exponent() {
        let dev = Device::Cpu;
        let q = ActQuant::new(-4, 3, true, &dev).unwrap();
        q.log2_scale
            .set(&Tensor::new(&[-1.3f32], &dev).unwrap())
            .unwrap();
        assert_eq!(q.scale().unwrap(), 0.5);
    }

    #[test]
    fn keep_mask_fits_the_budget_keeping_the_largest_weights() {
        // inputs in [0, 7]; weights of 3 bits: each ±3 costs 21 of range
        let row = [3, -3, 1, 0, 2, -1, 3, 3];
        let keep = keep_mask(&row, (0, 7), 6);
        let kept: Vec<i64> = row
            .iter()
            .zip(&keep)
            .map(|(&w, &k)| if k { w } else { 0 })
            .collect();
        let (lo, hi) = accumulator(&kept, (0, 7));
        assert!(interval_bits(lo, hi) <= 6, "{kept:?}: [{lo}, {hi}]");
        // the three largest fit (range 63), a fourth ±3 would not; the small ones then fill
        assert_eq!(kept.iter().filter(|w| w.abs() == 3).count(), 3);
        assert_eq!(interval_bits(0, 63), 6);
        assert_eq!(interval_bits(-4, 3), 3);
    }
}
