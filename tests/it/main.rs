//! fhec's integration tests, one binary so that they share one build.

mod blocks;
mod cli;
mod common;
mod exports;
mod fhe;
mod golden;
mod hostile;
mod layers;
mod logic;
mod models;
mod node_tests;
mod qdq;
mod quantized;
#[cfg(feature = "serve")]
mod serve;
#[cfg(feature = "train")]
mod train;
mod tune;
