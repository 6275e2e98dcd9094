//! `fhec::Error`: every failure the library reports, each naming the file, node or tensor.

use crate::import::ImportError;
use fhec_ir::IrError;
use fhec_passes::PassError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Import(#[from] ImportError),
    #[error(transparent)]
    Ir(#[from] IrError),
    #[error("`{path}`: {reason}")]
    Npy { path: String, reason: String },
    #[error("cannot write `{path}`: {reason}")]
    Write { path: String, reason: String },
    #[error("input `{name}`: {reason}")]
    Batch { name: String, reason: String },
    #[error(transparent)]
    Pass(#[from] PassError),
    #[error("`{path}`: {reason}")]
    Artifact { path: String, reason: String },
    #[error("{0}")]
    Usage(String),
    /// No TFHE parameters meet the circuit's noise constraints (names the read and the fix).
    #[error(transparent)]
    Params(#[from] crate::backend::params::ParamsError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
