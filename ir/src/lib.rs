//! fhec's intermediate representation.
//!
//! - [`Graph`]: a `petgraph::StableDiGraph` of [`Op`]s, statically shaped, with named inputs
//!   and outputs, [`Graph::verify`] and a stable text [`Graph::dump`].
//! - [`eval_f32`]: the float reference interpreter (ONNX semantics), which tract and ONNX's
//!   own node tests check.
//! - [`quant`]: integer semantics (quantization, rounding, intervals, table functions), and
//!   [`eval_int`], the clear interpreter of the quantized program: the spec of encrypted runs.

pub mod analysis;
pub mod error;
pub mod eval_f32;
pub mod eval_int;
pub mod graph;
pub mod kernels;
pub mod limits;
pub mod op;
pub mod quant;
pub mod tensor;

pub use error::{IrError, OpError};
pub use eval_f32::{eval_all, eval_f32};
pub use eval_int::eval_int;
pub use graph::{Graph, GraphInput, GraphOutput, Node};
pub use limits::Limits;
pub use op::{
    Binary, Cmp, ConvAttrs, IntLinear, Op, PadMode, PoolAttrs, ReduceKind, SliceAxis, Unary,
};
pub use petgraph::stable_graph::NodeIndex;
pub use quant::{
    quantize_sample, round_shift, wrap, ElemOp, Interval, QuantParams, TableDomain, TluFn,
};
pub use tensor::{checked_len, saturating_len, DType, ShapeFmt, Tensor, TensorType};
