//! Why the backend cannot give a compiled program an encrypted form.

use super::params::ParamsError;
use fhec_ir::IrError;

/// A backend failure: the circuit, its parameters, a setting, or a bug.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The integer program cannot run encrypted as compiled; names the node and the fix.
    #[error("`{node}`: {reason}")]
    Circuit { node: String, reason: String },
    /// The program as a whole is beyond what TFHE carries (message bits); says the fix.
    #[error("{reason}")]
    Program { reason: String },
    /// No parameters meet the circuit's noise constraints (names the read and the fix).
    #[error(transparent)]
    Params(#[from] ParamsError),
    /// Parameters stored with a compiled model, refused when it is loaded.
    #[error(
        "the compiled model's stored TFHE parameters are refused: {reason}; recompile the model"
    )]
    StoredParams { reason: String },
    /// An encrypted-program setting out of range, naming its flag.
    #[error(transparent)]
    Setting(#[from] SettingError),
    /// Values given to the register program do not fit it.
    #[error("inputs do not match the program's inputs ({reason})")]
    Inputs { reason: String },
    #[error(transparent)]
    Ir(#[from] IrError),
    /// A compiler bug: what the lowering expected and did not find.
    #[error("internal error: {what}; please report")]
    Internal { what: String },
}

/// An encrypted-program setting out of range.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{flag} {reason}")]
pub struct SettingError {
    /// The command-line flag (and Python keyword) of the setting.
    pub flag: &'static str,
    pub reason: String,
}

impl BackendError {
    pub(crate) fn circuit(node: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Circuit {
            node: node.into(),
            reason: reason.into(),
        }
    }
    pub(crate) fn internal(what: impl Into<String>) -> Self {
        Self::Internal { what: what.into() }
    }
    /// Whether this is a bug in fhec rather than something about the model or settings.
    pub fn is_internal(&self) -> bool {
        matches!(self, Self::Internal { .. })
    }
}
