//! Why the runtime refuses: ciphertexts or keys that do not fit the program (bad input from
//! outside), or a bug.

/// A runtime failure.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Ciphertexts, results or keys that do not fit the program or each other: bad input.
    #[error("{what}")]
    Mismatch { what: String },
    /// The caller asked the evaluation to stop.
    #[error("cancelled")]
    Cancelled,
    /// A compiler or runtime bug.
    #[error("internal error: {what}; please report")]
    Internal { what: String },
}

impl RuntimeError {
    pub(crate) fn mismatch(what: impl Into<String>) -> Self {
        Self::Mismatch { what: what.into() }
    }
}
