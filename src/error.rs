//! `fhec::Error`: every failure the library reports, each naming the file, node or tensor
//! and the fix. One typed error per layer below, wrapped here; [`Error::kind`] sorts them
//! for the fronts (the CLI's exit code, Python's exception classes, HTTP status codes).

use crate::backend::params::ParamsError;
use crate::backend::{BackendError, SettingError};
use crate::import::ImportError;
use crate::runtime::files::{DecodeError, FileError};
use crate::runtime::RuntimeError;
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
    Npy { path: String, reason: NpyError },
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
    Tune(#[from] TuneError),
    #[error(transparent)]
    Train(#[from] TrainError),
    /// An error about a file's contents, named by the file.
    #[error("`{path}`: {source}")]
    InFile { path: String, source: Box<Error> },
    /// A bug in fhec.
    #[error("internal error: {what}; please report")]
    Internal { what: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

// The errors of the API's own steps (the layers below — import, IR, passes, backend,
// runtime — each define theirs beside their code); kept here so that the modules above
// the layers (artifact, session, tune, train, npy) depend on this module and not the
// other way round.

/// Why a compiled model cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("`{path}`: {reason}")]
    Read {
        path: String,
        reason: crate::fsio::ReadError,
    },
    #[error("cannot write `{path}`: {reason}")]
    Write { path: String, reason: String },
    /// The bytes are not a compiled model this fhec reads (names the file).
    #[error("`{path}`: {reason}")]
    Invalid { path: String, reason: FormatError },
    /// A model compiled without TFHE parameters (clear mode only) is not an artifact.
    #[error("this model was compiled without TFHE parameters (clear mode only) and cannot be saved; compile it with settings that have an encrypted plan")]
    NoPlan,
}

/// What is wrong with the bytes of a compiled model.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("too short to be an fhec model")]
    TooShort,
    #[error("not an fhec compiled model (bad magic); compile one with `fhec compile`")]
    Magic,
    #[error("format version {found}, written by a newer fhec (this one reads {oldest} to {current}); update fhec or recompile the model")]
    Newer {
        found: u32,
        oldest: u32,
        current: u32,
    },
    #[error("format version {found}, too old to upgrade (this fhec reads {oldest} to {current}: the quantization settings' layout changed since); recompile the model")]
    Older {
        found: u32,
        oldest: u32,
        current: u32,
    },
    #[error("truncated or padded: {payload} payload bytes, header says {header}")]
    Length { payload: u64, header: u64 },
    #[error("corrupt: checksum mismatch; recompile the model or copy the file again")]
    Checksum,
    #[error("corrupt payload ({0})")]
    Payload(String),
    /// Decoded, but inconsistent with itself.
    #[error("corrupt {what} ({reason})")]
    Structure { what: &'static str, reason: String },
}

/// Why a key or ciphertext does not belong with a model or with each other.
#[derive(Debug, thiserror::Error)]
pub enum KeyMismatch {
    #[error("the key was made for another model or other compile settings (model id {key:016x}, this model {model:016x}); make keys for this model with `fhec keygen`")]
    Model { key: u64, model: u64 },
    #[error("the ciphertexts are for another model (model id {found:016x}, this model {model:016x}); encrypt with this model's client key")]
    CiphertextModel { found: u64, model: u64 },
    #[error("the ciphertexts were encrypted under another key pair (key id {found:016x}, these keys {key:016x}); use the evaluation keys made with the client key that encrypted them")]
    KeyPair { found: u64, key: u64 },
    #[error("the encrypted result was made under another key pair or model (key id {found:016x}, this client key {key:016x}); decrypt with the client key that encrypted the inputs")]
    Result { found: u64, key: u64 },
}

/// Why a search found nothing.
#[derive(Debug, thiserror::Error)]
pub enum TuneError {
    /// `raised`: what raising precision past the grid reached (`tune`'s phase 1b), said
    /// after the best estimate.
    #[error("no setting's estimated drop stays within {drop:.2} points of float ({float:.2}); the best is {best:.2} points{raised}; allow a larger --max-accuracy-drop, give more calibration or validation data, or try more bits (--n-bits, --rounding-bits, --raise-steps)")]
    NoCandidate {
        float: f64,
        drop: f64,
        best: f64,
        raised: String,
    },
    #[error("the model has no output to score")]
    NoOutput,
}

impl TuneError {
    pub(crate) fn kind(&self) -> ErrorKind {
        match self {
            Self::NoCandidate { .. } => ErrorKind::Settings,
            Self::NoOutput => ErrorKind::Model,
        }
    }
}

/// Why training refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A setting no network can be trained with (names the flag).
    #[error("{0}")]
    Setting(String),
    /// Data that does not fit a training task.
    #[error("{0}")]
    Data(String),
    /// A data file that cannot be read as training data.
    #[error("`{path}`: {reason}")]
    File { path: String, reason: String },
    /// candle refused a step (a bug or exhausted memory).
    #[error("training failed: {0}")]
    Candle(String),
}

impl TrainError {
    pub(crate) fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind as K;
        match self {
            Self::Setting(_) => K::Settings,
            Self::Data(_) | Self::File { .. } => K::Input,
            Self::Candle(_) => K::Internal,
        }
    }
}

/// What is wrong with a `.npy` file (the caller names it).
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    #[error(transparent)]
    Read(#[from] crate::fsio::ReadError),
    #[error("not a readable .npy file ({0})")]
    Unreadable(String),
    #[error("holds {found}, a data type fhec does not read (save it with `np.save(path, x.astype(np.float32))`)")]
    Unsupported { found: String },
    #[error("holds {found}, expected {want} (save it with `np.save(path, x.astype(np.{want}))`)")]
    WrongType { found: String, want: &'static str },
    #[error("its header declares shape {shape:?}, too large to address")]
    TooLarge { shape: Vec<usize> },
    #[error("its header declares shape {shape:?} of {descr} ({need} bytes of data) but {have} bytes follow; the file is truncated or corrupt")]
    Length {
        shape: Vec<usize>,
        descr: String,
        need: usize,
        have: usize,
    },
}

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
    /// The caller stopped the work.
    Cancelled,
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
            Self::Cancelled => "Cancelled",
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
            Error::Runtime(RuntimeError::Cancelled) => K::Cancelled,
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
