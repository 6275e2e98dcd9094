//! `fhec::Error`: every failure the library reports, each naming the file, node or tensor
//! and the fix. One typed error per layer below, wrapped here; [`Error::kind`] sorts them
//! for the fronts (the CLI's exit code, Python's exception classes, HTTP status codes).

use crate::artifact::{ArtifactError, FormatError};
use crate::backend::params::ParamsError;
use crate::backend::{BackendError, SettingError};
use crate::import::ImportError;
use crate::runtime::files::{DecodeError, FileError};
use crate::runtime::RuntimeError;
use crate::session::KeyMismatch;
use fhec_ir::IrError;
use fhec_passes::PassError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Import(#[from] ImportError),
    #[error(transparent)]
    Ir(#[from] IrError),
    #[error(transparent)]
    Pass(#[from] PassError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// A compiled-model file that cannot be read or written.
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    /// Compiled-model bytes that are not a model this fhec reads.
    #[error("compiled model: {0}")]
    Format(#[from] FormatError),
    /// A key or ciphertext file.
    #[error(transparent)]
    File(#[from] FileError),
    /// Key or ciphertext bytes.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    KeyMismatch(#[from] KeyMismatch),
    /// An encrypted-program setting out of range.
    #[error(transparent)]
    Setting(#[from] SettingError),
    /// A `.npy` input that cannot be read.
    #[error("`{path}`: {reason}")]
    Npy { path: String, reason: String },
    /// An output file that cannot be written.
    #[error("cannot write `{path}`: {reason}")]
    Write { path: String, reason: String },
    /// Input data whose shape or values do not fit a graph input.
    #[error("input `{name}`: {reason}")]
    Batch { name: String, reason: String },
    #[error("the model takes {expected} input(s) ({names}), got {got}")]
    InputCount {
        expected: usize,
        names: String,
        got: usize,
    },
    #[error("the calibration data holds no samples")]
    NoCalibrationSamples,
    /// No TFHE parameters for a model's circuit, with what narrows it.
    #[error("{source}{hint}")]
    NoPlan {
        source: ParamsError,
        hint: &'static str,
    },
    /// Ciphertexts of one kind given where the other is expected.
    #[error("these are {got}, {expected} were expected")]
    WrongCiphertexts {
        expected: &'static str,
        got: &'static str,
    },
    /// Labels or targets that do not fit the outputs they score.
    #[error("{reason}")]
    Labels { reason: String },
    #[error(transparent)]
    Tune(#[from] crate::tune::TuneError),
    #[cfg(feature = "train")]
    #[error(transparent)]
    Train(#[from] crate::train::TrainError),
    /// An error about a file's contents, named by the file.
    #[error("`{path}`: {source}")]
    InFile { path: String, source: Box<Error> },
    /// A bug in fhec.
    #[error("internal error: {what}; please report")]
    Internal { what: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of failure an [`Error`] is, for the fronts: Python raises one exception class
/// per kind, the server answers one status code per kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Input data (arrays, labels, calibration data) that does not fit the model.
    Input,
    /// A model fhec cannot compile: unsupported op, shape, accumulator over budget.
    Model,
    /// Settings out of range, or no TFHE parameters for them.
    Settings,
    /// Keys or ciphertexts that do not belong to the model or to each other, or are corrupt.
    Keys,
    /// A compiled model that cannot be read (corrupt, another format).
    Artifact,
    /// A file that cannot be read or written.
    Io,
    /// A bug in fhec.
    Internal,
}

impl ErrorKind {
    /// The name fronts show (Python's exception class is `fhec.<Name>Error`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Input => "Input",
            Self::Model => "Model",
            Self::Settings => "Settings",
            Self::Keys => "Keys",
            Self::Artifact => "Artifact",
            Self::Io => "Io",
            Self::Internal => "Internal",
        }
    }
}

impl Error {
    /// The kind of failure (see [`ErrorKind`]).
    pub fn kind(&self) -> ErrorKind {
        use ErrorKind as K;
        match self {
            Error::Import(ImportError::Io { .. }) => K::Io,
            Error::Import(_) | Error::Ir(_) => K::Model,
            Error::Pass(e) if e.is_internal() => K::Internal,
            Error::Pass(PassError::Calibration { .. }) => K::Input,
            Error::Pass(PassError::Config { .. }) => K::Settings,
            Error::Pass(_) => K::Model,
            Error::Backend(e) if e.is_internal() => K::Internal,
            Error::Backend(BackendError::Inputs { .. }) => K::Input,
            Error::Backend(BackendError::Circuit { .. } | BackendError::Ir(_)) => K::Model,
            Error::Backend(BackendError::StoredParams { .. }) => K::Artifact,
            Error::Backend(_) => K::Settings,
            Error::Runtime(RuntimeError::Internal { .. }) => K::Internal,
            Error::Runtime(RuntimeError::Mismatch { .. }) => K::Keys,
            Error::Artifact(ArtifactError::Read { .. } | ArtifactError::Write { .. }) => K::Io,
            Error::Artifact(ArtifactError::NoPlan) => K::Settings,
            Error::Artifact(ArtifactError::Invalid { .. }) | Error::Format(_) => K::Artifact,
            Error::File(FileError::Invalid { .. }) | Error::Decode(_) => K::Keys,
            Error::File(_) => K::Io,
            Error::KeyMismatch(_) | Error::WrongCiphertexts { .. } => K::Keys,
            Error::Setting(_) | Error::NoPlan { .. } => K::Settings,
            Error::Npy { .. }
            | Error::Batch { .. }
            | Error::InputCount { .. }
            | Error::NoCalibrationSamples
            | Error::Labels { .. } => K::Input,
            Error::Write { .. } => K::Io,
            Error::Tune(e) => e.kind(),
            #[cfg(feature = "train")]
            Error::Train(e) => e.kind(),
            Error::InFile { source, .. } => source.kind(),
            Error::Internal { .. } => K::Internal,
        }
    }

    /// This error, named by the file whose contents it is about (files that already name
    /// themselves are left as they are).
    #[must_use]
    pub fn in_file(self, path: &std::path::Path) -> Error {
        match self {
            e @ (Error::Artifact(_)
            | Error::File(_)
            | Error::Npy { .. }
            | Error::Write { .. }
            | Error::InFile { .. }) => e,
            e => Error::InFile {
                path: path.display().to_string(),
                source: Box::new(e),
            },
        }
    }
}
