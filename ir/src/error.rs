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
    /// An integer accumulator or bound that does not fit in 64 bits.
    #[error("integer overflow: {what} does not fit in 64 bits")]
    Overflow { what: String },
    /// A tensor or a node's work over the configured [`crate::Limits`].
    #[error("{what} of {amount} exceeds the limit of {limit} (raise it with --max-elements if the model really is this large)")]
    TooLarge {
        what: &'static str,
        amount: u64,
        limit: u64,
    },
    /// An attribute outside what the op's definition allows.
    #[error("attribute `{name}`: {reason}")]
    Attr {
        name: &'static str,
        reason: Box<str>,
    },
}

impl OpError {
    pub fn shape(what: impl Into<String>) -> Self {
        OpError::Shape { what: what.into() }
    }
    pub fn attr(name: &'static str, reason: impl Into<String>) -> Self {
        OpError::Attr {
            name,
            reason: reason.into().into_boxed_str(),
        }
    }
    pub fn overflow(what: impl Into<String>) -> Self {
        OpError::Overflow { what: what.into() }
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
    #[error("the graph holds {elements} tensor elements in all, over the limit of {limit} (raise it with --max-elements if the model really is this large)")]
    TooLarge { elements: u64, limit: u64 },
}
