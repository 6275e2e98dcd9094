//! Errors of the IR crate.

use crate::tensor::DType;

/// What is wrong with one op's inputs or attributes (the caller adds which node).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum OpError {
    #[error("expected {expected} inputs, got {actual}")]
    Arity { expected: String, actual: usize },
    #[error("input {port} is {actual}, expected {expected}")]
    DType {
        port: usize,
        expected: DType,
        actual: DType,
    },
    #[error("shapes {a} and {b} cannot be broadcast together")]
    Broadcast { a: String, b: String },
    #[error("{what}")]
    Shape { what: String },
    #[error("integer overflow or division by zero in constant arithmetic")]
    IntArith,
}

impl OpError {
    pub fn shape(what: impl Into<String>) -> Self {
        OpError::Shape { what: what.into() }
    }
}

/// Errors of graph construction, verification and interpretation.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum IrError {
    #[error("node `{node}` ({op}): {source}")]
    Node {
        node: String,
        op: &'static str,
        source: OpError,
    },
    #[error("the model takes {expected} input(s), got {actual}")]
    InputCount { expected: usize, actual: usize },
    #[error("input `{name}` must have shape {expected}, got {actual}")]
    InputShape {
        name: String,
        expected: String,
        actual: String,
    },
    #[error("input `{name}` must be {expected}, got {actual}")]
    InputDType {
        name: String,
        expected: DType,
        actual: DType,
    },
    #[error("invalid graph: {what}")]
    Invalid { what: String },
}
