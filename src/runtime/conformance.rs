//! What key and ciphertext files must hold for a model ([`KeyShape`], [`CiphertextShape`]),
//! checked with tfhe's `ParameterSetConformant` before anything reaches the cryptographic
//! code.

use super::ciphertexts::{EncryptedInputs, EncryptedOutputs};
use super::keys::{ClientKey, CompressedServerKey};
use super::modulus;
use crate::backend::params::{ExtractParams, FheParams};
use crate::backend::{Program, ProgramOutput};
use tfhe::core_crypto::prelude::*;

/// What a key file must hold for a model: its parameters and message width
/// (tfhe's `ParameterSetConformant` checks, run before any key is used).
#[derive(Clone, Debug, PartialEq)]
pub struct KeyShape {
    pub params: FheParams,
    pub extract: Option<ExtractParams>,
    pub msg_bits: u32,
}

/// What a ciphertext file must hold for a model: the parameters of the registers' key
/// ([`Choice::home`](crate::backend::params::Choice::home)) and, per list, the number of
/// ciphertexts (one list per program input or output).
#[derive(Clone, Debug, PartialEq)]
pub struct CiphertextShape {
    pub params: FheParams,
    pub counts: Vec<usize>,
}

impl KeyShape {
    /// The key shape of a planned program.
    pub fn of(program: &Program, params: &FheParams, extract: Option<&ExtractParams>) -> Self {
        Self {
            params: params.clone(),
            extract: extract.cloned(),
            msg_bits: program.msg_bits,
        }
    }
}

impl CiphertextShape {
    /// Encrypted inputs of a planned program.
    pub fn inputs(program: &Program, params: &FheParams) -> Self {
        Self {
            params: params.clone(),
            counts: program.inputs.iter().map(Vec::len).collect(),
        }
    }

    /// Encrypted outputs of a planned program.
    pub fn outputs(program: &Program, params: &FheParams) -> Self {
        Self {
            params: params.clone(),
            counts: program
                .outputs
                .iter()
                .map(ProgramOutput::ciphertexts)
                .collect(),
        }
    }

    fn big_lwe_dimension(&self) -> LweDimension {
        LweDimension(self.params.glwe_dimension * self.params.polynomial_size)
    }
}

impl tfhe::conformance::ParameterSetConformant for ClientKey {
    type ParameterSet = KeyShape;

    fn is_conformant(&self, s: &KeyShape) -> bool {
        // the registers' key; polynomial size and length first: tfhe's `glwe_dimension()`
        // divides by the former
        let home = s.extract.as_ref().map_or(&s.params, |x| &x.set);
        home.polynomial_size > 0
            && self.glwe.polynomial_size().0 == home.polynomial_size
            && self.glwe.as_ref().len() == home.glwe_dimension * home.polynomial_size
            && self.glwe.glwe_dimension().0 == home.glwe_dimension
            && self.info.params == s.params
            && self.info.extract == s.extract
            && self.info.msg_bits == s.msg_bits
            && self.glwe.as_ref().iter().all(|&b| b <= 1)
    }
}

impl tfhe::conformance::ParameterSetConformant for CompressedServerKey {
    type ParameterSet = KeyShape;

    fn is_conformant(&self, s: &KeyShape) -> bool {
        use tfhe::core_crypto::fft_impl::fft64::crypto::bootstrap::LweBootstrapKeyConformanceParams;
        let ksk = |input: usize, output: usize, base: usize, level: usize| {
            LweKeyswitchKeyConformanceParams {
                decomp_base_log: DecompositionBaseLog(base),
                decomp_level_count: DecompositionLevelCount(level),
                output_lwe_size: LweDimension(output).to_lwe_size(),
                input_lwe_dimension: LweDimension(input),
                ciphertext_modulus: modulus(),
            }
        };
        let bsk = |p: &FheParams| LweBootstrapKeyConformanceParams {
            decomp_base_log: DecompositionBaseLog(p.pbs_base_log),
            decomp_level_count: DecompositionLevelCount(p.pbs_level),
            input_lwe_dimension: LweDimension(p.lwe_dimension),
            output_glwe_size: GlweDimension(p.glwe_dimension).to_glwe_size(),
            polynomial_size: PolynomialSize(p.polynomial_size),
            ciphertext_modulus: modulus(),
        };
        let p = &s.params;
        // the tables' keyswitch reads the registers' key
        let home = s.extract.as_ref().map_or(p, |x| &x.set).big_dimension();
        let extract_ok = match (&self.extract, &s.extract) {
            (None, None) => true,
            (Some(keys), Some(x)) => {
                let xs = &x.set;
                keys.ksk
                    .is_conformant(&ksk(home, xs.lwe_dimension, xs.ks_base_log, xs.ks_level))
                    && keys.bsk.is_conformant(&bsk(xs))
                    && keys.fksk.is_conformant(&ksk(
                        p.big_dimension(),
                        home,
                        x.fks_base_log,
                        x.fks_level,
                    ))
            }
            _ => false,
        };
        self.info.params == *p
            && self.info.extract == s.extract
            && self.info.msg_bits == s.msg_bits
            && self
                .ksk
                .is_conformant(&ksk(home, p.lwe_dimension, p.ks_base_log, p.ks_level))
            && self.bsk.is_conformant(&bsk(p))
            && extract_ok
    }
}

impl tfhe::conformance::ParameterSetConformant for EncryptedInputs {
    type ParameterSet = CiphertextShape;

    fn is_conformant(&self, s: &CiphertextShape) -> bool {
        let size = s.big_lwe_dimension().to_lwe_size();
        self.samples.iter().all(|sample| {
            sample.len() == s.counts.len()
                && sample.iter().zip(&s.counts).all(|(list, &n)| {
                    list.lwe_size() == size
                        && list.lwe_ciphertext_count().0 == n
                        && list.as_ref().len() == n
                        && list.ciphertext_modulus() == modulus()
                })
        })
    }
}

impl tfhe::conformance::ParameterSetConformant for EncryptedOutputs {
    type ParameterSet = CiphertextShape;

    fn is_conformant(&self, s: &CiphertextShape) -> bool {
        self.samples.iter().all(|sample| {
            sample.len() == s.counts.len()
                && sample.iter().zip(&s.counts).all(|(list, &n)| {
                    // the size first: tfhe's check divides by it
                    list.lwe_size() == s.big_lwe_dimension().to_lwe_size()
                        && list.is_conformant(&LweCiphertextListConformanceParams {
                            lwe_dim: s.big_lwe_dimension(),
                            lwe_ciphertext_count_constraint:
                                tfhe::conformance::ListSizeConstraint::exact_size(n),
                            ct_modulus: modulus(),
                        })
                })
        })
    }
}
