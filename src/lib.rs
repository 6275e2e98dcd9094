//! fhec: compile ONNX neural networks into programs that run on encrypted data.
//!
//! The pipeline, one way: [`import`] (ONNX → IR) → passes (`fhec-passes`) → [`compile`]
//! (the integer program, its report, what compile decides on its own) → [`backend`] (the
//! register program and its TFHE parameters) → [`runtime`] (keys, encryption, evaluation,
//! decryption). [`CompiledModel`] is the saved artifact; [`session`] runs it encrypted.
//!
//! This file is the one public API every front uses — the `fhec` command, the Python
//! package and `fhec serve`:
//!
//! | step | API |
//! |---|---|
//! | import | [`Model::load`], [`Model::from_bytes`] |
//! | compile | [`compile`], [`compile_model`] ([`CompileOptions`], [`AutoOptions`]) → [`CompiledModel`] |
//! | save, load | [`CompiledModel::save`], [`CompiledModel::load`], `to_bytes` / `from_bytes` |
//! | run without keys | [`CompiledModel::run_float`], `run_clear`, `run_simulated` |
//! | keys | [`Client::keygen`] → [`Client`] + [`EvaluationKeys`] |
//! | encrypt, decrypt | [`Client::encrypt`], [`Client::decrypt`] ([`Ciphertexts`]) |
//! | evaluate | [`Server::new`], [`Server::run`] |
//! | tune, train, bench | [`tune::tune`], `train::train`, [`bench`] |
//!
//! ```no_run
//! use fhec::{compile, Client, CompileOptions, Server};
//! let calib = fhec::npy::read_f32("models/digits_mlp_calib.npy".as_ref())?;
//! let x = fhec::npy::read_f32("models/digits_mlp_test_x.npy".as_ref())?;
//! let model = compile("models/digits_mlp.onnx".as_ref(), &[calib], &CompileOptions::default())?;
//! let (client, keys) = Client::keygen(&model)?;      // client side
//! let cts = client.encrypt(&[x])?;
//! let server = Server::new(&model, &keys)?;          // server side
//! let out = server.run(&cts)?;
//! let y = client.decrypt(&out)?;                      // client side
//! # Ok::<(), fhec::Error>(())
//! ```

pub mod artifact;
pub mod backend;
pub mod bench;
pub mod compile;
pub mod error;
mod fsio;
pub mod fuzzing;
pub mod import;
pub mod model;
pub mod npy;
pub mod runtime;
#[cfg(feature = "serve")]
pub mod serve;
pub mod session;
#[cfg(feature = "train")]
pub mod train;
pub mod tune;

pub use artifact::{ArtifactError, CompiledModel, FormatError, Overflows, SimStats};
pub use backend::{
    BackendError, ExpectedKeySizes, FheOptions, ParamsPolicy, PlanInfo, Rounding, SettingError,
    TableSplit,
};
pub use compile::{
    compile, compile_model, compile_traced, quantize_model, AutoOptions, CompileOptions,
    CompileReport, Settings,
};
pub use error::{Error, ErrorKind, Result};
pub use fhec_ir as ir;
pub use fhec_passes as passes;
pub use fhec_passes::{LayerPrecision, QuantConfig, RangePolicy};
pub use import::{import_file, ExternalData, ImportError};
pub use model::{accuracy, argmax, Model};
pub use runtime::KeySizes;
pub use session::{Ciphertexts, Client, EvaluationKeys, SampleTimes, Server, Session};
