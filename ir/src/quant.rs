//! Integer semantics, defined once: affine quantization, rounding, intervals, and the
//! table-lookup function. The clear interpreter, the table builder and the tests all call
//! this code, so a table is bit-identical to what `eval_int` computes.

use crate::op::{Binary, Unary};
use crate::tensor::Tensor;
use ndarray::ArrayD;

/// Affine quantization `q = clamp(round(x / scale) + zero_point, qmin, qmax)`,
/// `x ≈ scale · (q − zero_point)`.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QuantParams {
    pub scale: f32,
    pub zero_point: i64,
    pub qmin: i64,
    pub qmax: i64,
}

impl QuantParams {
    /// Unsigned `n_bits` parameters covering `[min, max]` (widened to contain 0, so that 0 is
    /// exactly representable — padding and ReLU rely on it).
    pub fn unsigned(min: f32, max: f32, n_bits: u32) -> Self {
        let (min, max) = (min.min(0.0), max.max(0.0));
        let qmax = (1i64 << n_bits) - 1;
        let span = max - min;
        let scale = if span > 0.0 && span.is_finite() {
            span / qmax as f32
        } else {
            1.0
        };
        let zero_point = ((-min / scale).round() as i64).clamp(0, qmax);
        Self {
            scale,
            zero_point,
            qmin: 0,
            qmax,
        }
    }

    /// Signed symmetric `n_bits` parameters for values in `[-absmax, absmax]` (zero point 0),
    /// range `[-(2^(n-1) - 1), 2^(n-1) - 1]`.
    pub fn symmetric(absmax: f32, n_bits: u32) -> Self {
        let qmax = (1i64 << (n_bits - 1)) - 1;
        let scale = if absmax > 0.0 && absmax.is_finite() {
            absmax / qmax as f32
        } else {
            1.0
        };
        Self {
            scale,
            zero_point: 0,
            qmin: -qmax,
            qmax,
        }
    }

    /// `clip(round(x / scale) + zero_point)`, ties to even (ONNX QuantizeLinear's rounding).
    pub fn quantize(&self, x: f32) -> i64 {
        let q = (x / self.scale).round_ties_even();
        // saturate before the cast: inf/NaN never reach here from checked inputs, but a
        // table entry of a function like 1/x may be infinite
        let q = if q.is_nan() {
            0.0
        } else {
            q.clamp(-4.0e18, 4.0e18)
        };
        (q as i64)
            .saturating_add(self.zero_point)
            .clamp(self.qmin, self.qmax.max(self.qmin))
    }

    pub fn dequantize(&self, q: i64) -> f32 {
        self.scale * (i128::from(q) - i128::from(self.zero_point)) as f32
    }

    pub fn bits(&self) -> u32 {
        Interval::new(self.qmin, self.qmax).bits()
    }

    /// A usable quantizer: a non-empty range and a finite, non-zero scale (what a file may
    /// not hold).
    pub fn is_valid(&self) -> bool {
        self.qmin <= self.qmax && self.scale.is_finite() && self.scale != 0.0
    }
}

/// Quantizes one sample as the client does before encrypting: each input tensor with its
/// own parameters, giving the integer tensors `eval_int` and the encrypted program take.
pub fn quantize_sample(sample: &[Tensor], params: &[QuantParams]) -> Vec<Tensor> {
    sample
        .iter()
        .zip(params)
        .map(|(t, p)| Tensor::I64(t.to_f32().mapv(|v| p.quantize(v))))
        .collect()
}

/// `x` taken modulo `2^bits` into `[lo, lo + 2^bits)` (128-bit arithmetic; `bits` ≤ 62).
pub fn wrap(x: i64, lo: i64, bits: u32) -> i64 {
    let m = 1i128 << bits.min(62);
    let v = i128::from(lo) + (i128::from(x) - i128::from(lo)).rem_euclid(m);
    i64::try_from(v).unwrap_or(lo)
}

/// `round(x / 2^k)` to nearest, ties up: `(x + 2^(k-1)) >> k` (arithmetic shift).
/// Computed in 128 bits, so it never overflows (`k` ≤ 63 is what a 64-bit value can drop).
pub fn round_shift(x: i64, k: u32) -> i64 {
    match k {
        0 => x,
        1..=63 => ((i128::from(x) + (1i128 << (k - 1))) >> k) as i64,
        _ => 0,
    }
}

/// A closed integer interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Interval {
    pub lo: i64,
    pub hi: i64,
}

impl Interval {
    pub fn new(lo: i64, hi: i64) -> Self {
        Self {
            lo: lo.min(hi),
            hi: hi.max(lo),
        }
    }
    pub fn point(v: i64) -> Self {
        Self { lo: v, hi: v }
    }
    /// Bits needed to index `hi − lo + 1` values (the TLU input width once shifted to 0).
    pub fn bits(&self) -> u32 {
        let n = (i128::from(self.hi) - i128::from(self.lo)) as u128;
        128 - n.leading_zeros()
    }
    pub fn union(&self, o: &Interval) -> Interval {
        Interval {
            lo: self.lo.min(o.lo),
            hi: self.hi.max(o.hi),
        }
    }
    pub fn contains(&self, v: i64) -> bool {
        (self.lo..=self.hi).contains(&v)
    }
    pub fn add(&self, o: &Interval) -> Interval {
        Interval {
            lo: self.lo.saturating_add(o.lo),
            hi: self.hi.saturating_add(o.hi),
        }
    }
    pub fn neg(&self) -> Interval {
        Interval {
            lo: self.hi.saturating_neg(),
            hi: self.lo.saturating_neg(),
        }
    }
    pub fn scale(&self, w: i64) -> Interval {
        Interval::new(self.lo.saturating_mul(w), self.hi.saturating_mul(w))
    }
    pub fn round_shift(&self, k: u32) -> Interval {
        Interval {
            lo: round_shift(self.lo, k),
            hi: round_shift(self.hi, k),
        }
    }
}

/// One step of an elementwise float function, run on a current value `v` (initially the
/// table's dequantized input `a·x + b`) and a stack: a univariate op, or a binary op with a
/// constant operand given per element (flattened, in the tensor's row-major order); `Load`,
/// `Push` and `Combine` make functions that read the input twice, like GELU's
/// `x · Φ(x)`: `[Push, Load, …Φ…, Combine(Mul)]`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum ElemOp {
    Unary(Unary),
    /// `op(v, c[i])`, or `op(c[i], v)` when `const_first`.
    Binary {
        op: Binary,
        c: Vec<f32>,
        const_first: bool,
    },
    /// `v = a[i]·x + b[i]` of the table's integer input `x` (one value, or one per element).
    Load {
        a: Vec<f32>,
        b: Vec<f32>,
    },
    /// Pushes `v` (which stays current).
    Push,
    /// `v = op(popped, v)`.
    Combine(Binary),
}

impl ElemOp {
    /// One step on `v` with the table's integer input `x` and the stack.
    pub fn apply(&self, i: usize, v: f32, x: i64, stack: &mut Vec<f32>) -> f32 {
        match self {
            ElemOp::Unary(u) => u.apply(v),
            ElemOp::Binary { op, c, const_first } => {
                let k = c[if c.len() == 1 { 0 } else { i }];
                if *const_first {
                    op.apply_f32(k, v)
                } else {
                    op.apply_f32(v, k)
                }
            }
            ElemOp::Load { a, b } => {
                let pick = |c: &Vec<f32>| c[if c.len() == 1 { 0 } else { i }];
                dequant_affine(pick(a), pick(b), x)
            }
            ElemOp::Push => {
                stack.push(v);
                v
            }
            // a chain that pops more than it pushed is refused by `check_stack`; NaN here
            // keeps a bad one from panicking
            ElemOp::Combine(op) => op.apply_f32(stack.pop().unwrap_or(f32::NAN), v),
        }
    }
}

/// Whether a chain never pops an empty stack and leaves it empty.
pub fn check_stack(chain: &[ElemOp]) -> bool {
    let mut depth = 0usize;
    for e in chain {
        match e {
            ElemOp::Push => depth += 1,
            ElemOp::Combine(_) => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return false,
            },
            _ => {}
        }
    }
    depth == 0
}

/// The inputs a table holds: element `i`'s table covers `[lo[i], lo[i] + 2^bits)` (`lo` per
/// element, or one for all). A read beyond it wraps as a TFHE bootstrap reads its test
/// polynomial: negacyclically, with period `2^bits` and each wrap negating, so input
/// `lo + j + m·2^bits` (`0 ≤ j < 2^bits`) reads `(−1)^m · f(lo + j)`. No extra bootstrap is
/// spent to saturate instead; clear mode counts such reads ([`TluFn::in_domain`]).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TableDomain {
    pub lo: Vec<i64>,
    pub bits: u32,
}

/// Widest table domain the IR accepts (bits).
pub const MAX_DOMAIN_BITS: u32 = 32;

impl TableDomain {
    pub fn lo_of(&self, i: usize) -> i64 {
        self.lo[if self.lo.len() == 1 { 0 } else { i }]
    }
    /// The inputs element `i` reads without a wrap.
    pub fn interval(&self, i: usize) -> Interval {
        let lo = self.lo_of(i);
        Interval::new(lo, lo.saturating_add((1i64 << self.bits) - 1))
    }
    /// Where input `x` lands: the in-domain input it reads, and whether the read is negated.
    pub fn locate(&self, i: usize, x: i64) -> (i64, bool) {
        let lo = self.lo_of(i);
        let size = 1i128 << self.bits;
        let idx = i128::from(x) - i128::from(lo);
        let j = idx.rem_euclid(size);
        let negate = idx.div_euclid(size).rem_euclid(2) == 1;
        // lo + j < lo + 2^bits, which the IR check keeps inside i64
        (lo + j as i64, negate)
    }
}

/// The function a table lookup computes, element by element:
/// `out[i] = quant(chain_i(a[i] · x + b[i]))`, with `x` the integer input, read through
/// `domain` when it is set (beyond it, the read wraps: see [`TableDomain`]).
/// `a`, `b` hold one value per element (or one for all).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TluFn {
    pub a: Vec<f32>,
    pub b: Vec<f32>,
    pub chain: Vec<ElemOp>,
    pub out: QuantParams,
    /// The inputs the table holds; `None` before the `round` pass fixes it (then every input
    /// reads the function itself).
    #[serde(default)]
    pub domain: Option<TableDomain>,
}

impl TluFn {
    /// Whether element `i` reads input `x` without a wrap.
    pub fn in_domain(&self, i: usize, x: i64) -> bool {
        self.domain
            .as_ref()
            .is_none_or(|d| d.interval(i).contains(x))
    }

    /// The float value before requantization (what the unfused graph computes).
    pub fn eval_float(&self, i: usize, x: i64) -> f32 {
        let a = self.a[if self.a.len() == 1 { 0 } else { i }];
        let b = self.b[if self.b.len() == 1 { 0 } else { i }];
        let mut v = dequant_affine(a, b, x);
        let mut stack = Vec::new();
        for op in &self.chain {
            v = op.apply(i, v, x, &mut stack);
        }
        v
    }

    /// The table read: the function inside the domain, its negacyclic wrap beyond.
    pub fn eval(&self, i: usize, x: i64) -> i64 {
        match &self.domain {
            None => self.out.quantize(self.eval_float(i, x)),
            Some(d) => {
                let (x, negate) = d.locate(i, x);
                let v = self.out.quantize(self.eval_float(i, x));
                // saturating: a file's quantizer may reach i64::MIN
                if negate {
                    v.saturating_neg()
                } else {
                    v
                }
            }
        }
    }

    /// Number of distinct per-element functions (tables): elements share a table when their
    /// affine map and constants are the same.
    pub fn distinct_tables(&self, len: usize) -> usize {
        let mut seen = std::collections::HashSet::new();
        for i in 0..len {
            let mut key: Vec<u32> = Vec::new();
            let pick = |v: &Vec<f32>| v[if v.len() == 1 { 0 } else { i }].to_bits();
            key.push(pick(&self.a));
            key.push(pick(&self.b));
            for op in &self.chain {
                match op {
                    ElemOp::Binary { c, .. } => key.push(pick(c)),
                    ElemOp::Load { a, b } => {
                        key.push(pick(a));
                        key.push(pick(b));
                    }
                    _ => {}
                }
            }
            seen.insert(key);
        }
        seen.len()
    }
}

/// `a · x + b` in f32, the one definition of dequantization used everywhere.
pub fn dequant_affine(a: f32, b: f32, x: i64) -> f32 {
    a * (x as f32) + b
}

/// A dense tensor of per-element affine coefficients, flattened.
pub fn flat(a: &ArrayD<f32>) -> Vec<f32> {
    a.iter().copied().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn quantize_dequantize_within_half_a_step(min in -100f32..0.0, span in 0.01f32..200.0, n in 2u32..=8, t in 0f32..1.0) {
            let max = min + span;
            let p = QuantParams::unsigned(min, max, n);
            let x = min.min(0.0) + t * (max.max(0.0) - min.min(0.0));
            let err = (p.dequantize(p.quantize(x)) - x).abs();
            prop_assert!(err <= p.scale * 0.5 + 1e-4 * span, "err {err} scale {}", p.scale);
        }

        #[test]
        fn symmetric_round_trip(absmax in 0.01f32..100.0, n in 2u32..=8, t in -1f32..1.0) {
            let p = QuantParams::symmetric(absmax, n);
            let x = t * absmax;
            prop_assert!((p.dequantize(p.quantize(x)) - x).abs() <= p.scale * 0.5 + 1e-5 * absmax);
            prop_assert_eq!(p.zero_point, 0);
        }

        #[test]
        fn round_shift_is_round_half_up(x in -100_000i64..100_000, k in 0u32..12) {
            let r = round_shift(x, k);
            let exact = x as f64 / (1u64 << k) as f64;
            prop_assert_eq!(r, (exact + 0.5).floor() as i64);
        }

        #[test]
        fn interval_bits_cover(lo in -5000i64..5000, n in 0i64..5000) {
            let i = Interval::new(lo, lo + n);
            prop_assert!((1i128 << i.bits()) > n as i128);
            prop_assert!(i.bits() == 0 || (1i128 << (i.bits() - 1)) <= n as i128);
        }
    }

    #[test]
    fn reads_beyond_a_domain_wrap_negacyclically() {
        // f(x) = x on 8-bit codes, table over [10, 18)
        let t = TluFn {
            a: vec![1.0],
            b: vec![0.0],
            chain: vec![],
            out: QuantParams::symmetric(127.0, 8),
            domain: Some(TableDomain {
                lo: vec![10],
                bits: 3,
            }),
        };
        let f = |x: i64| t.out.quantize(x as f32);
        for x in 10..18 {
            assert_eq!(t.eval(0, x), f(x));
            assert!(t.in_domain(0, x));
        }
        // one period up or down negates, two periods read the entry itself
        assert_eq!(t.eval(0, 18), -f(10));
        assert_eq!(t.eval(0, 25), -f(17));
        assert_eq!(t.eval(0, 26), f(10));
        assert_eq!(t.eval(0, 9), -f(17));
        assert_eq!(t.eval(0, 2), -f(10));
        assert_eq!(t.eval(0, -6), f(10));
        assert!(!t.in_domain(0, 18) && !t.in_domain(0, 9));
        // extreme inputs do not overflow
        // i64::MIN − 10 ≡ 6 (mod 8), an even number of periods below: reads f(16)
        assert_eq!(t.eval(0, i64::MIN), f(16));
        let _ = t.eval(0, i64::MAX);
    }

    #[test]
    fn zero_is_exact() {
        let p = QuantParams::unsigned(-0.37, 1.91, 6);
        assert_eq!(p.dequantize(p.zero_point), 0.0);
        assert_eq!(p.quantize(0.0), p.zero_point);
    }
}
