//! fhec's intermediate representation.
//!
//! - [`Graph`]: a `petgraph::StableDiGraph` of [`Op`]s, statically shaped, with named inputs
//!   and outputs, [`Graph::verify`] and a stable text [`Graph::dump`].
//! - [`eval_f32`]: the float reference interpreter (ONNX semantics), which tract and ONNX's
//!   own node tests check.

pub mod error;
pub mod eval_f32;
pub mod graph;
pub mod kernels;
pub mod op;
pub mod tensor;

pub use error::{IrError, OpError};
pub use eval_f32::{eval_all, eval_f32};
pub use graph::{Graph, GraphInput, GraphOutput, Node};
pub use op::{Binary, ConvAttrs, Op, PadMode, PoolAttrs, ReduceKind, SliceAxis, Unary};
pub use petgraph::stable_graph::NodeIndex;
pub use tensor::{DType, ShapeFmt, Tensor, TensorType};
