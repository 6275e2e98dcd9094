//! Tensor values and tensor types: the data that flows through the IR.
//!
//! fhec's IR is statically shaped. A value is either `f32` (the float graph, weights, activations)
//! or `i64` (shape arithmetic, indices, and the integers of the quantized program).

use ndarray::{ArrayD, IxDyn};
use std::fmt;

/// Element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum DType {
    F32,
    I64,
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::I64 => "i64",
        })
    }
}

/// A static tensor type: element type and shape.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct TensorType {
    pub dtype: DType,
    pub shape: Vec<usize>,
}

impl TensorType {
    pub fn new(dtype: DType, shape: impl Into<Vec<usize>>) -> Self {
        Self {
            dtype,
            shape: shape.into(),
        }
    }
    pub fn f32(shape: impl Into<Vec<usize>>) -> Self {
        Self::new(DType::F32, shape)
    }
    pub fn rank(&self) -> usize {
        self.shape.len()
    }
    /// Number of elements. Types built by [`crate::kernels::infer`] never overflow here:
    /// it refuses shapes over the element limits.
    pub fn len(&self) -> usize {
        checked_len(&self.shape).unwrap_or(usize::MAX)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Number of elements of `shape`, saturating at `u64::MAX` (for messages and totals).
pub fn saturating_len(shape: &[usize]) -> u64 {
    shape.iter().fold(1u64, |a, &d| a.saturating_mul(d as u64))
}

/// Number of elements of `shape`, or `None` when the product overflows `usize`.
pub fn checked_len(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.dtype, ShapeFmt(&self.shape))
    }
}

/// Formats a shape as `[1,3,8,8]`.
pub struct ShapeFmt<'a>(pub &'a [usize]);

impl fmt::Display for ShapeFmt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

/// A tensor value.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Tensor {
    F32(ArrayD<f32>),
    I64(ArrayD<i64>),
}

impl Tensor {
    pub fn dtype(&self) -> DType {
        match self {
            Tensor::F32(_) => DType::F32,
            Tensor::I64(_) => DType::I64,
        }
    }
    pub fn shape(&self) -> &[usize] {
        match self {
            Tensor::F32(a) => a.shape(),
            Tensor::I64(a) => a.shape(),
        }
    }
    pub fn ty(&self) -> TensorType {
        TensorType::new(self.dtype(), self.shape())
    }
    pub fn len(&self) -> usize {
        self.shape().iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn scalar_f32(v: f32) -> Self {
        Tensor::F32(ArrayD::from_elem(IxDyn(&[]), v))
    }
    pub fn from_i64s(shape: &[usize], v: Vec<i64>) -> Option<Self> {
        ArrayD::from_shape_vec(IxDyn(shape), v)
            .ok()
            .map(Tensor::I64)
    }
    pub fn as_f32(&self) -> Option<&ArrayD<f32>> {
        match self {
            Tensor::F32(a) => Some(a),
            Tensor::I64(_) => None,
        }
    }
    pub fn as_i64(&self) -> Option<&ArrayD<i64>> {
        match self {
            Tensor::I64(a) => Some(a),
            Tensor::F32(_) => None,
        }
    }
    /// The values as `f32` (integers converted).
    pub fn to_f32(&self) -> ArrayD<f32> {
        match self {
            Tensor::F32(a) => a.clone(),
            Tensor::I64(a) => a.mapv(|v| v as f32),
        }
    }
    /// The values as `i64`; floats are truncated toward zero, as ONNX `Cast` does.
    pub fn to_i64(&self) -> ArrayD<i64> {
        match self {
            Tensor::F32(a) => a.mapv(|v| v as i64),
            Tensor::I64(a) => a.clone(),
        }
    }
    /// Flattened values as `i64` (shape constants, axes, pads).
    pub fn i64_values(&self) -> Vec<i64> {
        self.to_i64().iter().copied().collect()
    }
    /// Flattened values as `f32`.
    pub fn f32_values(&self) -> Vec<f32> {
        self.to_f32().iter().copied().collect()
    }
    pub fn cast(&self, to: DType) -> Tensor {
        match to {
            DType::F32 => Tensor::F32(self.to_f32()),
            DType::I64 => Tensor::I64(self.to_i64()),
        }
    }
    pub fn zeros(ty: &TensorType) -> Tensor {
        match ty.dtype {
            DType::F32 => Tensor::F32(ArrayD::zeros(IxDyn(&ty.shape))),
            DType::I64 => Tensor::I64(ArrayD::zeros(IxDyn(&ty.shape))),
        }
    }
    /// Index of the first NaN or infinite element, if any.
    pub fn first_non_finite(&self) -> Option<(usize, f32)> {
        match self {
            Tensor::F32(a) => a
                .iter()
                .enumerate()
                .find(|(_, v)| !v.is_finite())
                .map(|(i, v)| (i, *v)),
            Tensor::I64(_) => None,
        }
    }
}
