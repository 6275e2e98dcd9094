//! Resource limits: how much a model may make the compiler allocate or compute.
//!
//! Every size in an ONNX file or a compiled model comes from its bytes; a few bytes can
//! declare a tensor of 10^15 elements. Shape inference ([`crate::kernels::infer_with`])
//! checks each output against these limits before anything is allocated, the importer
//! checks constants it folds, and [`crate::Graph::verify`] checks the whole graph.

use crate::error::OpError;
use crate::tensor::{checked_len, saturating_len};

/// Largest tensor rank (numpy's limit).
pub const MAX_RANK: usize = 64;

/// Limits on tensor sizes and per-node work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Elements in any one tensor (default 2^26 ≈ 67 M: 256 MiB of f32).
    pub max_tensor_elements: usize,
    /// Elements over all nodes of a graph, constants included (default 2^28).
    pub max_total_elements: usize,
    /// Multiply-accumulates of one node (Conv, MatMul, Gemm, pooling; default 2^33).
    pub max_node_macs: u64,
}

impl Limits {
    /// The element count of a tensor of `shape` (`what` names it in the error), refused
    /// over `max_tensor_elements` or `MAX_RANK` before anything of that shape is allocated.
    ///
    /// # Errors
    /// [`OpError::TooLarge`] or, for the rank, [`OpError::Shape`].
    pub fn check_tensor(&self, what: &'static str, shape: &[usize]) -> Result<usize, OpError> {
        if shape.len() > MAX_RANK {
            return Err(OpError::shape(format!(
                "{what} of rank {}; the limit is {MAX_RANK}",
                shape.len()
            )));
        }
        checked_len(shape)
            .filter(|&l| l <= self.max_tensor_elements)
            .ok_or(OpError::TooLarge {
                what,
                amount: saturating_len(shape),
                limit: self.max_tensor_elements as u64,
            })
    }

    pub const DEFAULT_TENSOR_ELEMENTS: usize = 1 << 26;
    pub const DEFAULT_TOTAL_ELEMENTS: usize = 1 << 28;
    pub const DEFAULT_NODE_MACS: u64 = 1 << 33;

    /// Limits with `max_tensor_elements` per tensor and four times that per graph
    /// (`--max-elements`).
    pub fn with_max_elements(n: usize) -> Self {
        Self {
            max_tensor_elements: n,
            max_total_elements: n.saturating_mul(4),
            ..Self::default()
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_tensor_elements: Self::DEFAULT_TENSOR_ELEMENTS,
            max_total_elements: Self::DEFAULT_TOTAL_ELEMENTS,
            max_node_macs: Self::DEFAULT_NODE_MACS,
        }
    }
}
