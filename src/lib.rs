//! fhec: compile ONNX neural networks into programs that run on encrypted data.
//!
//! The pipeline: [`import`] (ONNX → IR) → passes (`fhec-passes`) → [`compile`] (the
//! integer program and its report) → [`backend`] (register program, TFHE parameters) →
//! [`runtime`] (keys, encryption, evaluation, decryption); [`fhe`] ties the last two together.
//!
//! ```no_run
//! let model = fhec::Model::load("models/digits_mlp.onnx".as_ref())?;
//! let x = fhec::npy::read_f32("models/digits_mlp_test_x.npy".as_ref())?;
//! let logits = model.run_float(&[x])?;
//! # Ok::<(), fhec::Error>(())
//! ```

pub mod backend;
mod bounded_read;
pub mod compile;
pub mod error;
pub mod fhe;
pub mod fuzzing;
pub mod import;
pub mod model;
pub mod npy;
pub mod runtime;
#[cfg(feature = "train")]
pub mod train;
pub mod tune;

pub use compile::{
    compile, compile_model, CompileOptions, CompileReport, CompiledModel, Overflows,
};
pub use error::{Error, Result};
pub use fhec_ir as ir;
pub use fhec_passes as passes;
pub use fhec_passes::QuantConfig;
pub use import::{import_file, ImportError};
pub use model::{accuracy, Model};
