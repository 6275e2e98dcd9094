//! The closed set of operations of the IR.
//!
//! Every op has one output. Inputs arrive on numbered ports (the edge weight in the graph).
//! Shape-like ONNX ops (Flatten, Squeeze, Unsqueeze, Reshape) are all `Reshape` with a static
//! target shape; attributes given as constant ONNX inputs (Clip bounds, Slice starts, Pad
//! amounts, Gather indices) are resolved into the op at import time.

use crate::quant::{QuantParams, TluFn};
use crate::tensor::{DType, Tensor};
use ndarray::ArrayD;
use std::fmt;

/// Univariate elementwise functions `f32 -> f32`. A chain of these is what a table lookup
/// computes once the graph is quantized.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Unary {
    Neg,
    Abs,
    Relu,
    LeakyRelu {
        alpha: f32,
    },
    Elu {
        alpha: f32,
    },
    Selu {
        alpha: f32,
        gamma: f32,
    },
    Sigmoid,
    Tanh,
    Softplus,
    HardSigmoid {
        alpha: f32,
        beta: f32,
    },
    HardSwish,
    Erf,
    Exp,
    Log,
    Sqrt,
    Reciprocal,
    Floor,
    Ceil,
    /// `min(max(x, min), max)`; absent bounds are ±infinity.
    Clip {
        min: f32,
        max: f32,
    },
    /// Round to the nearest integer, ties to even (ONNX `Round`; QuantizeLinear's rounding).
    Round,
    /// A per-tensor quantization grid applied in float (a QuantizeLinear → DequantizeLinear
    /// pair, a QONNX `Quant`): `(clip(round_half_even(x / scale) + zero_point, qmin, qmax) −
    /// zero_point) · scale`. The quantize pass compiles on this grid instead of a calibrated
    /// one.
    FakeQuant {
        scale: f32,
        zero_point: f32,
        qmin: f32,
        qmax: f32,
    },
    /// Round to the nearest IEEE half (what a Cast through float16 does).
    RoundF16,
    /// Round to the nearest bfloat16.
    RoundBf16,
    /// `x` compared with 0: 1 where it holds, else 0 (ONNX's comparisons as `a − b` against
    /// 0, and `Not` as `x == 0`; booleans are 0/1 floats).
    // last: compiled models written before it keep their variant indices
    Compare(Cmp),
}

/// How [`Unary::Compare`] compares with 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Cmp {
    Gt,
    Ge,
    Eq,
}

impl Unary {
    pub fn name(&self) -> &'static str {
        match self {
            Unary::Neg => "Neg",
            Unary::Abs => "Abs",
            Unary::Relu => "Relu",
            Unary::LeakyRelu { .. } => "LeakyRelu",
            Unary::Elu { .. } => "Elu",
            Unary::Selu { .. } => "Selu",
            Unary::Sigmoid => "Sigmoid",
            Unary::Tanh => "Tanh",
            Unary::Softplus => "Softplus",
            Unary::HardSigmoid { .. } => "HardSigmoid",
            Unary::HardSwish => "HardSwish",
            Unary::Erf => "Erf",
            Unary::Exp => "Exp",
            Unary::Log => "Log",
            Unary::Sqrt => "Sqrt",
            Unary::Reciprocal => "Reciprocal",
            Unary::Floor => "Floor",
            Unary::Ceil => "Ceil",
            Unary::Clip { .. } => "Clip",
            Unary::Round => "Round",
            Unary::FakeQuant { .. } => "FakeQuant",
            Unary::RoundF16 => "RoundF16",
            Unary::RoundBf16 => "RoundBf16",
            Unary::Compare(Cmp::Gt) => "Greater0",
            Unary::Compare(Cmp::Ge) => "GreaterOrEqual0",
            Unary::Compare(Cmp::Eq) => "Equal0",
        }
    }

    /// The function itself, with ONNX's definition.
    pub fn apply(&self, x: f32) -> f32 {
        match *self {
            Unary::Neg => -x,
            Unary::Abs => x.abs(),
            Unary::Relu => x.max(0.0),
            Unary::LeakyRelu { alpha } => {
                if x < 0.0 {
                    alpha * x
                } else {
                    x
                }
            }
            Unary::Elu { alpha } => {
                if x < 0.0 {
                    alpha * (x.exp() - 1.0)
                } else {
                    x
                }
            }
            Unary::Selu { alpha, gamma } => {
                if x <= 0.0 {
                    gamma * (alpha * x.exp() - alpha)
                } else {
                    gamma * x
                }
            }
            Unary::Sigmoid => {
                if x >= 0.0 {
                    1.0 / (1.0 + (-x).exp())
                } else {
                    let e = x.exp();
                    e / (1.0 + e)
                }
            }
            Unary::Tanh => x.tanh(),
            Unary::Softplus => {
                // log(1 + e^x), stable for large |x|
                if x > 0.0 {
                    x + (-x).exp().ln_1p()
                } else {
                    x.exp().ln_1p()
                }
            }
            Unary::HardSigmoid { alpha, beta } => (alpha * x + beta).clamp(0.0, 1.0),
            Unary::HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
            Unary::Erf => libm::erff(x),
            Unary::Exp => x.exp(),
            Unary::Log => x.ln(),
            Unary::Sqrt => x.sqrt(),
            Unary::Reciprocal => 1.0 / x,
            Unary::Floor => x.floor(),
            Unary::Ceil => x.ceil(),
            Unary::Clip { min, max } => {
                if x.is_nan() {
                    x
                } else {
                    x.max(min).min(max)
                }
            }
            Unary::Round => x.round_ties_even(),
            Unary::FakeQuant {
                scale,
                zero_point,
                qmin,
                qmax,
            } => {
                // QuantizeLinear then DequantizeLinear, operation for operation
                let q = ((x / scale).round_ties_even() + zero_point).clamp(qmin, qmax);
                (q - zero_point) * scale
            }
            Unary::RoundF16 => half::f16::from_f32(x).to_f32(),
            Unary::RoundBf16 => half::bf16::from_f32(x).to_f32(),
            Unary::Compare(c) => {
                let holds = match c {
                    Cmp::Gt => x > 0.0,
                    Cmp::Ge => x >= 0.0,
                    Cmp::Eq => x == 0.0,
                };
                f32::from(u8::from(holds))
            }
        }
    }
}

/// Elementwise functions of two tensors, with numpy broadcasting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Binary {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    /// `x < 0 ? slope * x : x`, the slope broadcast against `x`.
    PRelu,
    Max,
    Min,
}

impl Binary {
    pub fn name(&self) -> &'static str {
        match self {
            Binary::Add => "Add",
            Binary::Sub => "Sub",
            Binary::Mul => "Mul",
            Binary::Div => "Div",
            Binary::Pow => "Pow",
            Binary::PRelu => "PRelu",
            Binary::Max => "Max",
            Binary::Min => "Min",
        }
    }
    pub fn apply_f32(&self, a: f32, b: f32) -> f32 {
        match self {
            Binary::Add => a + b,
            Binary::Sub => a - b,
            Binary::Mul => a * b,
            Binary::Div => a / b,
            Binary::Pow => pow_f32(a, b),
            Binary::PRelu => {
                if a < 0.0 {
                    a * b
                } else {
                    a
                }
            }
            Binary::Max => a.max(b),
            Binary::Min => a.min(b),
        }
    }
    /// Integer semantics (shape arithmetic): division truncates, as ONNX's integer `Div`.
    pub fn apply_i64(&self, a: i64, b: i64) -> Option<i64> {
        Some(match self {
            Binary::Add => a.wrapping_add(b),
            Binary::Sub => a.wrapping_sub(b),
            Binary::Mul => a.wrapping_mul(b),
            Binary::Div => a.checked_div(b)?,
            Binary::Pow => {
                if b < 0 {
                    return None;
                }
                a.checked_pow(u32::try_from(b).ok()?)?
            }
            Binary::PRelu => {
                if a < 0 {
                    a * b
                } else {
                    a
                }
            }
            Binary::Max => a.max(b),
            Binary::Min => a.min(b),
        })
    }
}

/// `powf` with exact results for small integer exponents (what `(x + c)^2` nets use).
pub fn pow_f32(a: f32, b: f32) -> f32 {
    if b == 2.0 {
        a * a
    } else if b == 1.0 {
        a
    } else if b == 3.0 {
        a * a * a
    } else {
        a.powf(b)
    }
}

/// Reductions over axes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ReduceKind {
    Sum,
    Mean,
    Max,
}

/// Convolution attributes, resolved to explicit values (no `auto_pad`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConvAttrs {
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    /// Padding at the beginning of each spatial axis.
    pub pads_begin: Vec<usize>,
    /// Padding at the end of each spatial axis.
    pub pads_end: Vec<usize>,
    pub dilations: Vec<usize>,
    pub group: usize,
}

/// Pooling attributes, resolved to explicit values.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PoolAttrs {
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    pub pads_begin: Vec<usize>,
    pub pads_end: Vec<usize>,
    pub dilations: Vec<usize>,
    pub ceil_mode: bool,
    /// AveragePool: divide by the full window, padding included.
    pub count_include_pad: bool,
}

/// One axis of a resolved `Slice`: output element `i` reads input index `start + i * step`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SliceAxis {
    pub axis: usize,
    pub start: i64,
    pub step: i64,
    pub len: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PadMode {
    Constant,
    Reflect,
    Edge,
    Wrap,
}

/// The operations. Inputs are listed per variant as `x`, `w`, … in port order.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Op {
    /// Graph input number `index` (no inputs).
    Input {
        index: usize,
    },
    /// A constant (no inputs).
    Const(Tensor),
    /// `alpha · A' · B' + beta · C` (inputs A, B, optional C), `'` = optional transpose.
    Gemm {
        alpha: f32,
        beta: f32,
        trans_a: bool,
        trans_b: bool,
    },
    /// numpy `matmul` (inputs A, B).
    MatMul,
    /// N-d convolution (inputs x `[N, C, …]`, w `[M, C/group, k…]`, optional bias `[M]`).
    Conv(ConvAttrs),
    Unary(Unary),
    Binary(Binary),
    AveragePool(PoolAttrs),
    MaxPool(PoolAttrs),
    GlobalAveragePool,
    /// Inference-mode batch normalization (inputs x, scale, bias, mean, var), channel axis 1.
    BatchNorm {
        epsilon: f32,
    },
    /// Same elements, new static shape.
    Reshape {
        shape: Vec<usize>,
    },
    Transpose {
        perm: Vec<usize>,
    },
    Concat {
        axis: usize,
    },
    /// Gather along `axis` with constant (already non-negative) indices.
    Gather {
        axis: usize,
        indices: Tensor,
    },
    Slice {
        axes: Vec<SliceAxis>,
    },
    /// Pad each axis by `begin[i]`, `end[i]` elements.
    Pad {
        begin: Vec<usize>,
        end: Vec<usize>,
        mode: PadMode,
        value: f32,
    },
    Reduce {
        kind: ReduceKind,
        axes: Vec<usize>,
        keepdims: bool,
    },
    /// Softmax along `axis`; `flatten` is the opset < 13 meaning (over all axes from `axis` on).
    Softmax {
        axis: usize,
        flatten: bool,
    },
    /// Broadcast to a static shape.
    Expand {
        shape: Vec<usize>,
    },
    Cast {
        to: DType,
    },
    Identity,

    // ---- integer program (after quantization) ----
    /// A linear map with clear integer weights: the accumulator of a quantized
    /// Gemm/MatMul/Conv/AveragePool. I64 → I64, no bootstrap.
    IntLinear(IntLinear),
    /// The float value of an integer tensor, per element: `a[i] · x + b[i]`. I64 → F32.
    Dequant {
        a: Vec<f32>,
        b: Vec<f32>,
    },
    /// Requantization of a float tensor. F32 → I64.
    Quant(QuantParams),
    /// Drop `bits[i]` low bits of element `i` (one value: all elements), rounding to
    /// nearest: `(x + 2^(k-1)) >> k`. I64 → I64.
    Round {
        bits: Vec<u32>,
    },
    /// A table lookup per element (one programmable bootstrap each). I64 → I64.
    Tlu(TluFn),
    /// Element `i` taken modulo `2^bits` into its window `[lo[i], lo[i] + 2^bits)` (one `lo`:
    /// all elements): what decrypting an integer encrypted with `bits` bits of room reads.
    /// Marks the decrypted outputs whose window is sized from calibration rather than from
    /// the proven interval; a value beyond it wraps. I64 → I64.
    // last: compiled models written before it keep their variant indices
    Wrap {
        lo: Vec<i64>,
        bits: u32,
    },
    /// The index of the largest (`min`: smallest) element along `axis`, as a float (the
    /// first such index, or the last with `select_last`). Runs on the client only.
    ArgMax {
        axis: usize,
        keepdims: bool,
        select_last: bool,
        min: bool,
    },
}

/// Integer linear maps.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum IntLinear {
    /// `x[…, K] · w[K, N]`.
    Dense { w: ArrayD<i64> },
    /// Convolution with integer weights `[M, C/group, k…]`; padded positions read `pad_value`
    /// (the input's zero point, so that padding means 0.0).
    Conv {
        attrs: ConvAttrs,
        w: ArrayD<i64>,
        pad_value: i64,
    },
}

impl IntLinear {
    /// Weights as `[outputs, fan-in]` rows (a conv's filters flattened).
    pub fn rows(&self) -> Vec<Vec<i64>> {
        match self {
            IntLinear::Dense { w } => {
                let (k, n) = (w.shape()[0], w.shape()[1]);
                (0..n)
                    .map(|j| (0..k).map(|i| w[[i, j]]).collect())
                    .collect()
            }
            IntLinear::Conv { w, .. } => {
                let m = w.shape()[0];
                let per = w.len() / m.max(1);
                let flat: Vec<i64> = w.iter().copied().collect();
                (0..m)
                    .map(|j| flat[j * per..(j + 1) * per].to_vec())
                    .collect()
            }
        }
    }
}

impl Op {
    /// A stable, short name (ONNX's where one exists).
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input { .. } => "Input",
            Op::Const(_) => "Const",
            Op::Gemm { .. } => "Gemm",
            Op::MatMul => "MatMul",
            Op::Conv(_) => "Conv",
            Op::Unary(u) => u.name(),
            Op::Binary(b) => b.name(),
            Op::AveragePool(_) => "AveragePool",
            Op::MaxPool(_) => "MaxPool",
            Op::GlobalAveragePool => "GlobalAveragePool",
            Op::BatchNorm { .. } => "BatchNormalization",
            Op::Reshape { .. } => "Reshape",
            Op::Transpose { .. } => "Transpose",
            Op::Concat { .. } => "Concat",
            Op::Gather { .. } => "Gather",
            Op::Slice { .. } => "Slice",
            Op::Pad { .. } => "Pad",
            Op::Reduce {
                kind: ReduceKind::Sum,
                ..
            } => "ReduceSum",
            Op::Reduce {
                kind: ReduceKind::Mean,
                ..
            } => "ReduceMean",
            Op::Reduce {
                kind: ReduceKind::Max,
                ..
            } => "ReduceMax",
            Op::Softmax { .. } => "Softmax",
            Op::Expand { .. } => "Expand",
            Op::Cast { .. } => "Cast",
            Op::Identity => "Identity",
            Op::IntLinear(IntLinear::Dense { .. }) => "IntDense",
            Op::IntLinear(IntLinear::Conv { .. }) => "IntConv",
            Op::Dequant { .. } => "Dequant",
            Op::Quant(_) => "Quant",
            Op::Round { .. } => "Round",
            Op::Wrap { .. } => "Wrap",
            Op::ArgMax { min: false, .. } => "ArgMax",
            Op::ArgMax { min: true, .. } => "ArgMin",
            Op::Tlu(_) => "Tlu",
        }
    }

    /// Ops that only move, copy or pad elements (no arithmetic): on encrypted integers they are
    /// register renaming, and they map bounds and operands element by element.
    pub fn is_data_movement(&self) -> bool {
        matches!(
            self,
            Op::Reshape { .. }
                | Op::Transpose { .. }
                | Op::Slice { .. }
                | Op::Gather { .. }
                | Op::Expand { .. }
                | Op::Pad { .. }
                | Op::Concat { .. }
                | Op::Identity
        )
    }

    /// How many inputs the op takes: `(min, max)`.
    pub fn arity(&self) -> (usize, usize) {
        match self {
            Op::Input { .. } | Op::Const(_) => (0, 0),
            Op::Gemm { .. } => (2, 3),
            Op::MatMul => (2, 2),
            Op::Conv(_) => (2, 3),
            Op::Binary(_) => (2, 2),
            Op::BatchNorm { .. } => (5, 5),
            Op::Concat { .. } => (1, usize::MAX),
            _ => (1, 1),
        }
    }

    /// Attributes for the text dump, in a stable order.
    pub fn attrs(&self) -> String {
        fn list<T: fmt::Display>(v: &[T]) -> String {
            let s: Vec<String> = v.iter().map(|x| x.to_string()).collect();
            format!("[{}]", s.join(","))
        }
        match self {
            Op::Input { index } => format!("index={index}"),
            Op::Const(t) => format!("{}", t.ty()),
            Op::Gemm {
                alpha,
                beta,
                trans_a,
                trans_b,
            } => {
                format!(
                    "alpha={alpha} beta={beta} trans_a={} trans_b={}",
                    *trans_a as u8, *trans_b as u8
                )
            }
            Op::Conv(c) => format!(
                "kernel={} strides={} pads={}{} dilations={} group={}",
                list(&c.kernel),
                list(&c.strides),
                list(&c.pads_begin),
                list(&c.pads_end),
                list(&c.dilations),
                c.group
            ),
            Op::Unary(u) => match u {
                Unary::LeakyRelu { alpha } | Unary::Elu { alpha } => format!("alpha={alpha}"),
                Unary::Selu { alpha, gamma } => format!("alpha={alpha} gamma={gamma}"),
                Unary::HardSigmoid { alpha, beta } => format!("alpha={alpha} beta={beta}"),
                Unary::Clip { min, max } => format!("min={min} max={max}"),
                Unary::FakeQuant {
                    scale,
                    zero_point,
                    qmin,
                    qmax,
                } => format!("scale={scale} zero_point={zero_point} range=[{qmin},{qmax}]"),
                _ => String::new(),
            },
            Op::AveragePool(p) | Op::MaxPool(p) => format!(
                "kernel={} strides={} pads={}{} dilations={} ceil={} count_include_pad={}",
                list(&p.kernel),
                list(&p.strides),
                list(&p.pads_begin),
                list(&p.pads_end),
                list(&p.dilations),
                p.ceil_mode as u8,
                p.count_include_pad as u8
            ),
            Op::BatchNorm { epsilon } => format!("epsilon={epsilon}"),
            Op::Reshape { shape } | Op::Expand { shape } => format!("shape={}", list(shape)),
            Op::Transpose { perm } => format!("perm={}", list(perm)),
            Op::Concat { axis } => format!("axis={axis}"),
            Op::Gather { axis, indices } => {
                format!("axis={axis} indices={}", list(&indices.i64_values()))
            }
            Op::Slice { axes } => {
                let s: Vec<String> = axes
                    .iter()
                    .map(|a| format!("{}:{}+{}x{}", a.axis, a.start, a.step, a.len))
                    .collect();
                format!("axes=[{}]", s.join(","))
            }
            Op::Pad {
                begin,
                end,
                mode,
                value,
            } => {
                format!(
                    "begin={} end={} mode={mode:?} value={value}",
                    list(begin),
                    list(end)
                )
            }
            Op::Reduce { axes, keepdims, .. } => {
                format!("axes={} keepdims={}", list(axes), *keepdims as u8)
            }
            Op::Softmax { axis, flatten } => format!("axis={axis} flatten={}", *flatten as u8),
            Op::Cast { to } => format!("to={to}"),
            Op::MatMul | Op::Binary(_) | Op::GlobalAveragePool | Op::Identity => String::new(),
            Op::IntLinear(IntLinear::Dense { w }) => {
                format!("w=i64{}", crate::tensor::ShapeFmt(w.shape()))
            }
            Op::IntLinear(IntLinear::Conv {
                attrs,
                w,
                pad_value,
            }) => format!(
                "w=i64{} strides={} pads={}{} dilations={} group={} pad_value={pad_value}",
                crate::tensor::ShapeFmt(w.shape()),
                list(&attrs.strides),
                list(&attrs.pads_begin),
                list(&attrs.pads_end),
                list(&attrs.dilations),
                attrs.group
            ),
            Op::Dequant { a, .. } => format!("per_element={}", (a.len() > 1) as u8),
            Op::Quant(q) => format!(
                "scale={} zero_point={} range=[{},{}]",
                q.scale, q.zero_point, q.qmin, q.qmax
            ),
            Op::ArgMax {
                axis,
                keepdims,
                select_last,
                ..
            } => format!(
                "axis={axis} keepdims={} select_last_index={}",
                *keepdims as u8, *select_last as u8
            ),
            Op::Wrap { lo, bits } => match (lo.iter().min(), lo.iter().max()) {
                (Some(a), Some(b)) if a == b => format!("bits={bits} lo={a}"),
                (Some(a), Some(b)) => format!("bits={bits} lo={a}..{b} per element"),
                _ => format!("bits={bits}"),
            },
            Op::Round { bits } => match (bits.iter().min(), bits.iter().max()) {
                (Some(lo), Some(hi)) if lo == hi => format!("bits={lo}"),
                (Some(lo), Some(hi)) => format!("bits={lo}..{hi} per element"),
                _ => String::new(),
            },
            Op::Tlu(t) => {
                let chain: Vec<String> = t
                    .chain
                    .iter()
                    .map(|e| match e {
                        crate::quant::ElemOp::Unary(u) => u.name().to_string(),
                        crate::quant::ElemOp::Binary { op, .. } => format!("{}(c)", op.name()),
                        crate::quant::ElemOp::Load { .. } => "Load".to_string(),
                        crate::quant::ElemOp::Push => "Push".to_string(),
                        crate::quant::ElemOp::Combine(op) => format!("{}(pop)", op.name()),
                    })
                    .collect();
                let domain = t
                    .domain
                    .as_ref()
                    .map_or(String::new(), |d| format!(" domain={}b", d.bits));
                format!(
                    "fn=[{}] out_scale={} out_zp={} out_range=[{},{}]{domain}",
                    chain.join(","),
                    t.out.scale,
                    t.out.zero_point,
                    t.out.qmin,
                    t.out.qmax
                )
            }
        }
    }
}
