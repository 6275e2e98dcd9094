//! Ciphertexts as they travel: a batch's encrypted inputs (seeded) and encrypted outputs,
//! each bound to a model and a key pair by their ids.

use serde::{Deserialize, Serialize};
use tfhe::core_crypto::prelude::*;
use tfhe::named::Named;
use tfhe_versionable::{Versionize, VersionsDispatch};

/// Encrypted inputs of a batch: per sample, one seeded ciphertext list per graph input (one
/// ciphertext per integer; seeded = only the bodies travel).
#[derive(Clone, Serialize, Deserialize, Versionize)]
#[versionize(EncryptedInputsVersions)]
pub struct EncryptedInputs {
    pub model_id: u64,
    pub key_id: u64,
    pub samples: Vec<Vec<SeededLweCiphertextListOwned<u64>>>,
}

#[derive(VersionsDispatch)]
#[allow(unused)]
pub enum EncryptedInputsVersions {
    V0(EncryptedInputs),
}

impl Named for EncryptedInputs {
    const NAME: &'static str = "fhec::EncryptedInputs";
}

/// Encrypted outputs of a batch: per sample, one ciphertext list per program output (its
/// encrypted elements, in order; clear-constant elements are not sent).
#[derive(Clone, Serialize, Deserialize, Versionize)]
#[versionize(EncryptedOutputsVersions)]
pub struct EncryptedOutputs {
    pub model_id: u64,
    pub key_id: u64,
    pub samples: Vec<Vec<LweCiphertextListOwned<u64>>>,
}

#[derive(VersionsDispatch)]
#[allow(unused)]
pub enum EncryptedOutputsVersions {
    V0(EncryptedOutputs),
}

impl Named for EncryptedOutputs {
    const NAME: &'static str = "fhec::EncryptedOutputs";
}
