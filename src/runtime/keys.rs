//! Keys: what a key pair was made for ([`KeyInfo`]), the client's secret key, the server's
//! evaluation keys (seeded as they travel, expanded as they run), their sizes, and key
//! generation.

use super::modulus;
use crate::backend::params::{ExtractParams, FheParams};
use serde::{Deserialize, Serialize};
use tfhe::core_crypto::prelude::*;
use tfhe::named::Named;
use tfhe_versionable::{Versionize, VersionsDispatch};

/// What a key was made for: the model's program (by fingerprint), one key pair (random id),
/// the encoding and the parameters of each partition. Every key and ciphertext file
/// carries it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Versionize)]
#[versionize(KeyInfoVersions)]
pub struct KeyInfo {
    pub model_id: u64,
    pub key_id: u64,
    pub msg_bits: u32,
    /// The main set (tables; with no second partition, registers live under its big key).
    pub params: FheParams,
    /// Exact rounding's bit extractions on their own set, whose big key then holds the
    /// registers (inputs, accumulators, outputs), or `None`.
    pub extract: Option<ExtractParams>,
}

impl KeyInfo {
    /// The set whose big key holds the registers.
    pub fn home(&self) -> &FheParams {
        self.extract.as_ref().map_or(&self.params, |x| &x.set)
    }
}

mod backward_compat {
    use super::{CompressedServerKey, KeyInfo};
    use crate::backend::params::FheParams;
    use std::convert::Infallible;
    use tfhe::core_crypto::prelude::{SeededLweBootstrapKeyOwned, SeededLweKeyswitchKeyOwned};
    use tfhe_versionable::{Upgrade, Version};

    /// Server keys made before multi-parameter circuits: one set.
    #[derive(Version)]
    pub struct CompressedServerKeyV0 {
        pub info: KeyInfo,
        pub ksk: SeededLweKeyswitchKeyOwned<u64>,
        pub bsk: SeededLweBootstrapKeyOwned<u64>,
    }

    impl Upgrade<CompressedServerKey> for CompressedServerKeyV0 {
        type Error = Infallible;
        fn upgrade(self) -> Result<CompressedServerKey, Infallible> {
            Ok(CompressedServerKey {
                info: self.info,
                ksk: self.ksk,
                bsk: self.bsk,
                extract: None,
            })
        }
    }

    /// Keys made before multi-parameter circuits: one set.
    #[derive(Version)]
    pub struct KeyInfoV0 {
        pub model_id: u64,
        pub key_id: u64,
        pub msg_bits: u32,
        pub params: FheParams,
    }

    impl Upgrade<KeyInfo> for KeyInfoV0 {
        type Error = Infallible;
        fn upgrade(self) -> Result<KeyInfo, Infallible> {
            Ok(KeyInfo {
                model_id: self.model_id,
                key_id: self.key_id,
                msg_bits: self.msg_bits,
                params: self.params,
                extract: None,
            })
        }
    }
}

#[derive(VersionsDispatch)]
#[allow(unused)]
pub enum KeyInfoVersions {
    V0(backward_compat::KeyInfoV0),
    V1(KeyInfo),
}

/// The client's secret key (the GLWE key; its flattening is the LWE key inputs are encrypted
/// under and outputs decrypted with).
#[derive(Clone, Serialize, Deserialize, Versionize)]
#[versionize(ClientKeyVersions)]
pub struct ClientKey {
    pub info: KeyInfo,
    pub(crate) glwe: GlweSecretKeyOwned<u64>,
}

#[derive(VersionsDispatch)]
#[allow(unused)]
pub enum ClientKeyVersions {
    V0(ClientKey),
}

impl Named for ClientKey {
    const NAME: &'static str = "fhec::ClientKey";
}

/// The server's evaluation keys as the client sends them: seeded (the random masks are
/// regenerated from a seed), half the size of the expanded keys. No secret.
#[derive(Clone, Serialize, Deserialize, Versionize)]
#[versionize(CompressedServerKeyVersions)]
pub struct CompressedServerKey {
    pub info: KeyInfo,
    pub(crate) ksk: SeededLweKeyswitchKeyOwned<u64>,
    pub(crate) bsk: SeededLweBootstrapKeyOwned<u64>,
    /// The bit-extraction partition's keys, when it has its own set.
    pub(crate) extract: Option<CompressedExtractKeys>,
}

/// The second partition's evaluation keys, seeded: keyswitch from its big key (where the
/// registers live) to its small key, its bootstrapping key, and the keyswitch that brings a
/// table output from the main set's big key back to its big key.
#[derive(Clone, Serialize, Deserialize, Versionize)]
#[versionize(CompressedExtractKeysVersions)]
pub struct CompressedExtractKeys {
    pub(crate) ksk: SeededLweKeyswitchKeyOwned<u64>,
    pub(crate) bsk: SeededLweBootstrapKeyOwned<u64>,
    pub(crate) fksk: SeededLweKeyswitchKeyOwned<u64>,
}

#[derive(VersionsDispatch)]
#[allow(unused)]
pub enum CompressedExtractKeysVersions {
    V0(CompressedExtractKeys),
}

#[derive(VersionsDispatch)]
#[allow(unused, clippy::large_enum_variant)]
pub enum CompressedServerKeyVersions {
    V0(backward_compat::CompressedServerKeyV0),
    V1(CompressedServerKey),
}

impl Named for CompressedServerKey {
    const NAME: &'static str = "fhec::ServerKey";
}

/// The server's evaluation keys, expanded and with the bootstrapping key in the Fourier
/// domain, ready to run.
pub struct ServerKey {
    pub info: KeyInfo,
    /// Keyswitch from the registers' key to the main set's small key.
    pub(crate) ksk: LweKeyswitchKeyOwned<u64>,
    pub(crate) bsk: FourierLweBootstrapKeyOwned,
    pub(crate) extract: Option<ExtractKeys>,
}

/// [`CompressedExtractKeys`] expanded, the bootstrapping key in the Fourier domain.
pub(crate) struct ExtractKeys {
    pub(crate) ksk: LweKeyswitchKeyOwned<u64>,
    pub(crate) bsk: FourierLweBootstrapKeyOwned,
    pub(crate) fksk: LweKeyswitchKeyOwned<u64>,
}

/// Server key sizes per partition, bytes (expanded: 64-bit words, standard domain).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct KeySizes {
    /// Tables: bootstrapping key, keyswitch in (from the registers' key), keyswitch back to
    /// the registers' key (0 with one set).
    pub main_bsk: usize,
    pub main_ksk: usize,
    pub main_fksk: usize,
    /// Bit extractions: bootstrapping key and keyswitch in.
    pub extract_bsk: usize,
    pub extract_ksk: usize,
}

impl KeySizes {
    pub fn total(&self) -> usize {
        self.main_bsk + self.main_ksk + self.main_fksk + self.extract_bsk + self.extract_ksk
    }
}

/// Makes a fresh key pair for `params` (and the bit-extraction set `extract`, when exact
/// rounding runs it on its own), message width `msg_bits` and the program fingerprinted
/// `model_id`.
pub fn keygen(
    params: &FheParams,
    extract: Option<&ExtractParams>,
    msg_bits: u32,
    model_id: u64,
) -> (ClientKey, CompressedServerKey) {
    let mut seeder = new_seeder();
    let seeder = seeder.as_mut();
    let key_id = {
        let s = seeder.seed().0;
        (s as u64) ^ ((s >> 64) as u64)
    };
    let mut secret_gen = SecretRandomGenerator::<DefaultRandomGenerator>::new(seeder.seed());
    let noise = |std: f64| Gaussian::from_dispersion_parameter(StandardDev(std), 0.0);
    // a set's secret keys: its small LWE key and its GLWE key (whose flattening is its big key)
    let mut secret_keys = |s: &FheParams| {
        let small =
            LweSecretKey::generate_new_binary(LweDimension(s.lwe_dimension), &mut secret_gen);
        let glwe = GlweSecretKey::generate_new_binary(
            GlweDimension(s.glwe_dimension),
            PolynomialSize(s.polynomial_size),
            &mut secret_gen,
        );
        (small, glwe)
    };
    let (small, glwe) = secret_keys(params);
    let bsk = par_allocate_and_generate_new_seeded_lwe_bootstrap_key(
        &small,
        &glwe,
        DecompositionBaseLog(params.pbs_base_log),
        DecompositionLevelCount(params.pbs_level),
        noise(params.glwe_std),
        modulus(),
        seeder,
    );
    let ksk_to = |from: LweSecretKey<&[u64]>,
                  to: LweSecretKey<&[u64]>,
                  base: usize,
                  level: usize,
                  std: f64,
                  seeder: &mut dyn Seeder| {
        allocate_and_generate_new_seeded_lwe_keyswitch_key(
            &from,
            &to,
            DecompositionBaseLog(base),
            DecompositionLevelCount(level),
            noise(std),
            modulus(),
            seeder,
        )
    };
    // the second partition's secret keys; the registers live under its big key
    let x_keys = extract.map(|x| {
        let (x_small, x_glwe) = secret_keys(&x.set);
        (x, x_small, x_glwe)
    });
    let home = x_keys.as_ref().map_or(&glwe, |(_, _, g)| g);
    // tables: keyswitch from the registers' key to the main set's small key
    let ksk = ksk_to(
        home.as_lwe_secret_key(),
        small.as_view(),
        params.ks_base_log,
        params.ks_level,
        params.lwe_std,
        seeder,
    );
    let extract_keys = x_keys.as_ref().map(|(x, x_small, x_glwe)| {
        let s = &x.set;
        CompressedExtractKeys {
            ksk: ksk_to(
                x_glwe.as_lwe_secret_key(),
                x_small.as_view(),
                s.ks_base_log,
                s.ks_level,
                s.lwe_std,
                seeder,
            ),
            bsk: par_allocate_and_generate_new_seeded_lwe_bootstrap_key(
                x_small,
                x_glwe,
                DecompositionBaseLog(s.pbs_base_log),
                DecompositionLevelCount(s.pbs_level),
                noise(s.glwe_std),
                modulus(),
                seeder,
            ),
            // a table output back to the registers' key, with that key's secure noise
            fksk: ksk_to(
                glwe.as_lwe_secret_key(),
                x_glwe.as_lwe_secret_key(),
                x.fks_base_log,
                x.fks_level,
                s.glwe_std,
                seeder,
            ),
        }
    });
    let home = match x_keys {
        Some((_, _, x_glwe)) => x_glwe,
        None => glwe,
    };
    let info = KeyInfo {
        model_id,
        key_id,
        msg_bits,
        params: params.clone(),
        extract: extract.cloned(),
    };
    (
        ClientKey {
            info: info.clone(),
            glwe: home,
        },
        CompressedServerKey {
            info,
            ksk,
            bsk,
            extract: extract_keys,
        },
    )
}

fn fourier(std_bsk: &LweBootstrapKeyOwned<u64>) -> FourierLweBootstrapKeyOwned {
    let mut bsk = FourierLweBootstrapKey::new(
        std_bsk.input_lwe_dimension(),
        std_bsk.glwe_size(),
        std_bsk.polynomial_size(),
        std_bsk.decomposition_base_log(),
        std_bsk.decomposition_level_count(),
    );
    par_convert_standard_lwe_bootstrap_key_to_fourier(std_bsk, &mut bsk);
    bsk
}

impl CompressedServerKey {
    /// Regenerates the masks and converts the bootstrapping keys to the Fourier domain.
    pub fn expand(&self) -> ServerKey {
        let ksk = self.ksk.clone().par_decompress_into_lwe_keyswitch_key();
        let bsk = fourier(&self.bsk.clone().par_decompress_into_lwe_bootstrap_key());
        let extract = self.extract.as_ref().map(|x| ExtractKeys {
            ksk: x.ksk.clone().par_decompress_into_lwe_keyswitch_key(),
            bsk: fourier(&x.bsk.clone().par_decompress_into_lwe_bootstrap_key()),
            fksk: x.fksk.clone().par_decompress_into_lwe_keyswitch_key(),
        });
        ServerKey {
            info: self.info.clone(),
            ksk,
            bsk,
            extract,
        }
    }

    /// Sizes of the expanded keys per partition, bytes (64-bit words; the bootstrapping keys
    /// in the standard domain, as `fhec keygen` documents them).
    pub fn sizes(&self) -> KeySizes {
        let words = |n: usize| n * 8;
        let ksk_len = |k: &SeededLweKeyswitchKeyOwned<u64>| {
            k.input_key_lwe_dimension().0
                * k.decomposition_level_count().0
                * k.output_key_lwe_dimension().to_lwe_size().0
        };
        let bsk_len = |b: &SeededLweBootstrapKeyOwned<u64>| {
            let g = b.glwe_size().0;
            b.input_lwe_dimension().0
                * b.decomposition_level_count().0
                * g
                * g
                * b.polynomial_size().0
        };
        KeySizes {
            main_bsk: words(bsk_len(&self.bsk)),
            main_ksk: words(ksk_len(&self.ksk)),
            main_fksk: self.extract.as_ref().map_or(0, |x| words(ksk_len(&x.fksk))),
            extract_bsk: self.extract.as_ref().map_or(0, |x| words(bsk_len(&x.bsk))),
            extract_ksk: self.extract.as_ref().map_or(0, |x| words(ksk_len(&x.ksk))),
        }
    }
}
