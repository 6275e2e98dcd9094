//! Runtime: key generation, encryption, evaluation and decryption of a [`Program`] with
//! `tfhe::core_crypto` (one LWE ciphertext per integer; keyswitch then programmable bootstrap
//! for every table lookup). It runs compiled programs only.
//!
//! | module | owns |
//! |---|---|
//! | [`keys`] | what a key pair is for, the client key, the evaluation keys, keygen |
//! | [`client`] | encryption and decryption |
//! | [`server`] | evaluation on ciphertexts |
//! | [`ciphertexts`] | encrypted inputs and outputs as they travel |
//! | [`conformance`] | what key and ciphertext files must hold for a model |
//! | [`files`] | the files: versioned safe serialization plus a checksum |
//!
//! The client holds the secret keys; the server gets the keyswitching and bootstrapping keys
//! only.

pub mod ciphertexts;
pub mod client;
pub mod conformance;
mod error;
pub mod files;
pub mod keys;
pub mod measure;
pub mod server;

#[cfg(doc)]
use crate::backend::Program;
pub use ciphertexts::{EncryptedInputs, EncryptedOutputs};
pub use conformance::{CiphertextShape, KeyShape};
pub use error::RuntimeError;
pub use keys::{keygen, ClientKey, CompressedServerKey, KeyInfo, KeySizes, ServerKey};
use tfhe::core_crypto::prelude::*;

fn modulus() -> CiphertextModulus<u64> {
    CiphertextModulus::new_native()
}

/// `Δ = 2^64 / 2^(B+1)`.
fn delta(msg_bits: u32) -> u64 {
    1u64 << (63 - msg_bits)
}
