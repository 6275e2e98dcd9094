//! Runtime: key generation, encryption, evaluation and decryption of a [`Program`] with
//! `tfhe::core_crypto` (one LWE ciphertext per integer; keyswitch then programmable bootstrap
//! for every table lookup).
//!
//! The client holds the secret keys; the server gets the keyswitching key and the bootstrapping
//! key only. Independent instructions of a stage run in parallel (rayon).

pub mod files;
pub mod measure;

use crate::backend::params::{ExtractParams, FheParams};
use crate::backend::{Instr, Operand, Program, Rounding};
use crate::error::{Error, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tfhe::core_crypto::algorithms::slice_algorithms::slice_wrapping_add_scalar_mul_assign;
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
    glwe: GlweSecretKeyOwned<u64>,
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
    ksk: SeededLweKeyswitchKeyOwned<u64>,
    bsk: SeededLweBootstrapKeyOwned<u64>,
    /// The bit-extraction partition's keys, when it has its own set.
    extract: Option<CompressedExtractKeys>,
}

/// The second partition's evaluation keys, seeded: keyswitch from its big key (where the
/// registers live) to its small key, its bootstrapping key, and the keyswitch that brings a
/// table output from the main set's big key back to its big key.
#[derive(Clone, Serialize, Deserialize, Versionize)]
#[versionize(CompressedExtractKeysVersions)]
pub struct CompressedExtractKeys {
    ksk: SeededLweKeyswitchKeyOwned<u64>,
    bsk: SeededLweBootstrapKeyOwned<u64>,
    fksk: SeededLweKeyswitchKeyOwned<u64>,
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
    ksk: LweKeyswitchKeyOwned<u64>,
    bsk: FourierLweBootstrapKeyOwned,
    extract: Option<ExtractKeys>,
}

/// [`CompressedExtractKeys`] expanded, the bootstrapping key in the Fourier domain.
struct ExtractKeys {
    ksk: LweKeyswitchKeyOwned<u64>,
    bsk: FourierLweBootstrapKeyOwned,
    fksk: LweKeyswitchKeyOwned<u64>,
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

fn modulus() -> CiphertextModulus<u64> {
    CiphertextModulus::new_native()
}

/// `Δ = 2^64 / 2^(B+1)`.
fn delta(msg_bits: u32) -> u64 {
    1u64 << (63 - msg_bits)
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

impl ClientKey {
    /// Encrypts integers under the registers' big (GLWE-derived) key, as one seeded list.
    pub fn encrypt(&self, values: &[i64]) -> SeededLweCiphertextListOwned<u64> {
        let mut seeder = new_seeder();
        let seeder = seeder.as_mut();
        let noise =
            Gaussian::from_dispersion_parameter(StandardDev(self.info.home().glwe_std), 0.0);
        let big = self.glwe.as_lwe_secret_key();
        let d = delta(self.info.msg_bits);
        let plain = PlaintextList::from_container(
            values
                .iter()
                .map(|&v| (v as u64).wrapping_mul(d))
                .collect::<Vec<u64>>(),
        );
        let mut out = SeededLweCiphertextList::new(
            0u64,
            big.lwe_dimension().to_lwe_size(),
            LweCiphertextCount(values.len()),
            seeder.seed().into(),
            modulus(),
        );
        encrypt_seeded_lwe_ciphertext_list(&big, &mut out, &plain, noise, seeder);
        out
    }

    /// Decrypts one integer known to lie in `[lo, lo + 2^(B+1))`.
    pub fn decrypt_one(&self, ct: &LweCiphertextView<'_, u64>, lo: i64) -> i64 {
        let big = self.glwe.as_lwe_secret_key();
        let phase = decrypt_lwe_ciphertext(&big, ct).0;
        let b = self.info.msg_bits + 1;
        // round to the nearest multiple of Δ, keep B+1 bits
        let d = delta(self.info.msg_bits);
        let code = (phase.wrapping_add(d / 2) / d) & ((1u64 << b) - 1);
        let lo_code = (lo as u64) & ((1u64 << b) - 1);
        lo + (code.wrapping_sub(lo_code) & ((1u64 << b) - 1)) as i64
    }

    /// Decrypts one sample's program outputs, one integer vector per output.
    ///
    /// # Errors
    /// Ciphertext lists that do not match the program's outputs.
    pub fn decrypt(
        &self,
        prog: &Program,
        outs: &[LweCiphertextListOwned<u64>],
    ) -> Result<Vec<Vec<i64>>> {
        if outs.len() != prog.outputs.len() {
            return Err(Error::Usage(format!(
                "the encrypted result has {} output(s), the model {}",
                outs.len(),
                prog.outputs.len()
            )));
        }
        prog.outputs
            .iter()
            .zip(outs)
            .map(|(o, cts)| {
                let n_regs = o.elems.iter().filter(|e| matches!(e, Operand::Reg(_))).count();
                let big = self.glwe.polynomial_size().0 * self.glwe.glwe_dimension().0;
                if cts.lwe_ciphertext_count().0 != n_regs || cts.lwe_size().0 != big + 1 {
                    return Err(Error::Usage(format!(
                        "the encrypted result holds {} ciphertext(s) of size {}, the model expects {} of size {}",
                        cts.lwe_ciphertext_count().0,
                        cts.lwe_size().0,
                        n_regs,
                        big + 1
                    )));
                }
                let mut it = cts.iter();
                Ok(o.elems
                    .iter()
                    .zip(&o.lo)
                    .enumerate()
                    .map(|(i, (e, &lo))| match e {
                        Operand::Const(v) => o.read(i, *v),
                        Operand::Reg(_) => o.read(
                            i,
                            it.next().map_or(lo, |ct| self.decrypt_one(&ct, lo)),
                        ),
                    })
                    .collect())
            })
            .collect()
    }

    /// Decrypts every register of a program run (debugging and noise measurements).
    pub fn decrypt_registers(
        &self,
        regs: &[Option<LweCiphertextOwned<u64>>],
        lo: &[i64],
    ) -> Vec<Option<i64>> {
        regs.iter()
            .zip(lo)
            .map(|(r, &lo)| r.as_ref().map(|ct| self.decrypt_one(&ct.as_view(), lo)))
            .collect()
    }
}

/// Fills a bootstrap test polynomial so that a phase in box `i` (the torus interval
/// `[i, i+1)·2^-(p+1)`) gives `f(i)·Δ`. The caller places values inside their boxes.
fn table_lut(
    params: &FheParams,
    p: u32,
    d: u64,
    f: impl Fn(usize) -> u64,
) -> GlweCiphertextOwned<u64> {
    let n = params.polynomial_size;
    let boxes = 1usize << p;
    let box_size = n / boxes;
    let mut acc = vec![0u64; n];
    for (i, chunk) in acc.chunks_mut(box_size).enumerate() {
        let v = f(i).wrapping_mul(d);
        chunk.iter_mut().for_each(|a| *a = v);
    }
    allocate_and_trivially_encrypt_new_glwe_ciphertext(
        GlweDimension(params.glwe_dimension).to_glwe_size(),
        &PlaintextList::from_container(acc),
        modulus(),
    )
}

/// Keyswitch to `set`'s small key, centered modulus switch to its `2N`, blind rotation of
/// `lut` with its bootstrapping key, sample extraction under its big key. The centered
/// switch (tfhe's `lwe_ciphertext_centered_binary_modulus_switch`, as its vetted sets use)
/// removes the mean of the mask's rounding error, halving the switch's variance; half a
/// switched unit is added first so that values sit where the plain switch puts them.
fn keyswitch_bootstrap(
    ct: &LweCiphertextOwned<u64>,
    lut: &GlweCiphertextOwned<u64>,
    ksk: &LweKeyswitchKeyOwned<u64>,
    bsk: &FourierLweBootstrapKeyOwned,
    set: &FheParams,
) -> LweCiphertextOwned<u64> {
    let [out] = keyswitch_bootstraps(ct, [lut], ksk, bsk, set);
    out
}

/// [`keyswitch_bootstrap`] of one input with several test polynomials: one keyswitch and
/// modulus switch, one blind rotation each.
fn keyswitch_bootstraps<const L: usize>(
    ct: &LweCiphertextOwned<u64>,
    luts: [&GlweCiphertextOwned<u64>; L],
    ksk: &LweKeyswitchKeyOwned<u64>,
    bsk: &FourierLweBootstrapKeyOwned,
    set: &FheParams,
) -> [LweCiphertextOwned<u64>; L] {
    let mut small = LweCiphertext::new(
        0u64,
        LweDimension(set.lwe_dimension).to_lwe_size(),
        modulus(),
    );
    keyswitch_lwe_ciphertext(ksk, ct, &mut small);
    let log_2n = (2 * set.polynomial_size).ilog2() as usize;
    lwe_ciphertext_plaintext_add_assign(&mut small, Plaintext(1u64 << (63 - log_2n)));
    let msed = lwe_ciphertext_centered_binary_modulus_switch::<u64, usize, _>(
        small.as_view(),
        CiphertextModulusLog(log_2n),
    );
    luts.map(|lut| {
        let mut acc = lut.clone();
        blind_rotate_assign(&msed, &mut acc, bsk);
        let mut out = LweCiphertext::new(
            0u64,
            LweDimension(set.big_dimension()).to_lwe_size(),
            modulus(),
        );
        extract_lwe_sample_from_glwe_ciphertext(&acc, &mut out, MonomialDegree(0));
        out
    })
}

impl ServerKey {
    pub(crate) fn params(&self) -> &FheParams {
        &self.info.params
    }

    /// Size of a register: an LWE ciphertext under the registers' big key.
    pub(crate) fn big_size(&self) -> LweSize {
        LweDimension(self.info.home().big_dimension()).to_lwe_size()
    }

    /// A table bootstrap on the main set ([`keyswitch_bootstrap`]), with a second partition
    /// followed by the keyswitch back to the registers' key.
    pub(crate) fn bootstrap(
        &self,
        ct: &LweCiphertextOwned<u64>,
        lut: &GlweCiphertextOwned<u64>,
    ) -> LweCiphertextOwned<u64> {
        self.to_home(keyswitch_bootstrap(
            ct,
            lut,
            &self.ksk,
            &self.bsk,
            self.params(),
        ))
    }

    /// A table output under the registers' key: keyswitched back with a second partition.
    fn to_home(&self, out: LweCiphertextOwned<u64>) -> LweCiphertextOwned<u64> {
        let Some(keys) = &self.extract else {
            return out;
        };
        let mut home = LweCiphertext::new(0u64, self.big_size(), modulus());
        keyswitch_lwe_ciphertext(&keys.fksk, &out, &mut home);
        home
    }

    /// Two table bootstraps on the main set, summed, and with a second partition keyswitched
    /// back to the registers' key once.
    pub(crate) fn bootstrap_sum(
        &self,
        a: &LweCiphertextOwned<u64>,
        lut_a: &GlweCiphertextOwned<u64>,
        b: &LweCiphertextOwned<u64>,
        lut_b: &GlweCiphertextOwned<u64>,
    ) -> LweCiphertextOwned<u64> {
        let mut out = keyswitch_bootstrap(a, lut_a, &self.ksk, &self.bsk, self.params());
        let second = keyswitch_bootstrap(b, lut_b, &self.ksk, &self.bsk, self.params());
        lwe_ciphertext_add_assign(&mut out, &second);
        self.to_home(out)
    }

    /// The bootstrap of one bit extraction or light table ([`Program::light`]): on the main
    /// set, or, with a second partition,
    /// keyswitch to its small key, centered modulus switch to its `2N`, blind rotation with
    /// its bootstrapping key, sample extraction under its big key (the registers' key).
    /// `lut` is a test polynomial of the partition that runs it ([`ServerKey::extract_glwe`]).
    pub(crate) fn bootstrap_bit(
        &self,
        ct: &LweCiphertextOwned<u64>,
        lut: &GlweCiphertextOwned<u64>,
    ) -> LweCiphertextOwned<u64> {
        match (&self.extract, &self.info.extract) {
            (Some(keys), Some(x)) => keyswitch_bootstrap(ct, lut, &keys.ksk, &keys.bsk, &x.set),
            _ => self.bootstrap(ct, lut),
        }
    }

    /// [`ServerKey::bootstrap_bit`] with two test polynomials of the extraction partition
    /// on one keyswitch (a split table's index bit, at its weight and at the top).
    pub(crate) fn bootstrap_bit_twice(
        &self,
        ct: &LweCiphertextOwned<u64>,
        luts: [&GlweCiphertextOwned<u64>; 2],
    ) -> [LweCiphertextOwned<u64>; 2] {
        match (&self.extract, &self.info.extract) {
            (Some(keys), Some(x)) => keyswitch_bootstraps(ct, luts, &keys.ksk, &keys.bsk, &x.set),
            _ => luts.map(|lut| self.bootstrap(ct, lut)),
        }
    }

    /// GLWE dimension and polynomial size of the set that runs bit extractions.
    pub(crate) fn extract_glwe(&self) -> (usize, usize) {
        match &self.info.extract {
            Some(x) => (x.set.glwe_dimension, x.set.polynomial_size),
            None => (self.params().glwe_dimension, self.params().polynomial_size),
        }
    }

    /// Runs the program on one sample's encrypted inputs; returns its encrypted outputs.
    ///
    /// # Errors
    /// Inputs that do not match the program or the key.
    pub fn evaluate(
        &self,
        prog: &Program,
        inputs: &[SeededLweCiphertextListOwned<u64>],
        progress: Option<&indicatif::ProgressBar>,
    ) -> Result<Vec<LweCiphertextListOwned<u64>>> {
        let regs = self.evaluate_registers(prog, inputs, progress)?;
        Ok(prog
            .outputs
            .iter()
            .map(|o| {
                let mut data = Vec::new();
                for e in &o.elems {
                    if let Operand::Reg(r) = e {
                        if let Some(ct) = &regs[*r as usize] {
                            data.extend_from_slice(ct.as_ref());
                        }
                    }
                }
                LweCiphertextList::from_container(data, self.big_size(), modulus())
            })
            .collect())
    }

    /// [`ServerKey::evaluate`], returning every register.
    ///
    /// # Errors
    /// As [`ServerKey::evaluate`].
    pub fn evaluate_registers(
        &self,
        prog: &Program,
        inputs: &[SeededLweCiphertextListOwned<u64>],
        progress: Option<&indicatif::ProgressBar>,
    ) -> Result<Vec<Option<LweCiphertextOwned<u64>>>> {
        if inputs.len() != prog.inputs.len() {
            return Err(Error::Usage(format!(
                "the program takes {} input(s), got {}",
                prog.inputs.len(),
                inputs.len()
            )));
        }
        let big_size = self.big_size();
        let mut regs: Vec<Option<LweCiphertextOwned<u64>>> = vec![None; prog.n_regs as usize];
        for (i, (rs, cts)) in prog.inputs.iter().zip(inputs).enumerate() {
            if rs.len() != cts.lwe_ciphertext_count().0 || cts.lwe_size() != big_size {
                return Err(Error::Usage(format!(
                    "encrypted input {i} holds {} ciphertext(s) of size {}, the model expects {} of size {}",
                    cts.lwe_ciphertext_count().0,
                    cts.lwe_size().0,
                    rs.len(),
                    big_size.0
                )));
            }
            let list = cts.clone().decompress_into_lwe_ciphertext_list();
            for (&r, ct) in rs.iter().zip(list.iter()) {
                regs[r as usize] = Some(LweCiphertext::from_container(
                    ct.as_ref().to_vec(),
                    modulus(),
                ));
            }
        }
        let b = self.info.msg_bits;
        let d = delta(b);
        let p = prog.tlu_bits;
        // a split table's two halves, in half units: (t[2m] + t[2m+1])/2, (t[2m] − t[2m+1])/2
        // (the second half only for a split table)
        let luts: Vec<(GlweCiphertextOwned<u64>, Option<GlweCiphertextOwned<u64>>)> = prog
            .tables
            .iter()
            .map(|t| {
                if prog.split {
                    let at = |i: usize| t[i] as u64;
                    (
                        table_lut(self.params(), p - 1, d / 2, |m| {
                            at(2 * m).wrapping_add(at(2 * m + 1))
                        }),
                        Some(table_lut(self.params(), p - 1, d / 2, |m| {
                            at(2 * m).wrapping_sub(at(2 * m + 1))
                        })),
                    )
                } else {
                    (table_lut(self.params(), p, d, |i| t[i] as u64), None)
                }
            })
            .collect();
        // light tables: the same tables as test polynomials of the second partition
        let light_set = self.info.extract.as_ref().map_or(self.params(), |x| &x.set);
        let light_luts: Vec<GlweCiphertextOwned<u64>> = if prog.light {
            prog.tables
                .iter()
                .map(|t| table_lut(light_set, p, d, |i| t[i] as u64))
                .collect()
        } else {
            Vec::new()
        };
        // sign bootstrap for bit j: constant −2^(j−1)·Δ everywhere
        let (x_k, x_n) = self.extract_glwe();
        // (index b+1: a quarter torus, which gives the bit at the top, 1/2)
        let sign_luts: Vec<GlweCiphertextOwned<u64>> = (0..=b + 1)
            .map(|j| {
                let c = match j {
                    0 => d / 2,
                    j if j == b + 1 => 1 << 62,
                    j => d << (j - 1),
                };
                let v = c.wrapping_neg();
                let poly = vec![v; x_n];
                allocate_and_trivially_encrypt_new_glwe_ciphertext(
                    GlweDimension(x_k).to_glwe_size(),
                    &PlaintextList::from_container(poly),
                    modulus(),
                )
            })
            .collect();
        let exact = prog.rounding == Rounding::Exact;
        for stage in &prog.stages {
            let results: Vec<(u32, LweCiphertextOwned<u64>)> = stage
                .par_iter()
                .map(|ins| -> Result<(u32, LweCiphertextOwned<u64>)> {
                    let get = |r: u32| {
                        regs[r as usize].as_ref().ok_or_else(|| {
                            Error::Usage(format!(
                                "internal error: register {r} read before written"
                            ))
                        })
                    };
                    match ins {
                        Instr::Lin { dst, terms, c } => {
                            let mut out = LweCiphertext::new(0u64, big_size, modulus());
                            for &(r, w) in terms {
                                slice_wrapping_add_scalar_mul_assign(
                                    out.as_mut(),
                                    get(r)?.as_ref(),
                                    w as u64,
                                );
                            }
                            let body = out.get_mut_body();
                            *body.data = body.data.wrapping_add((*c as u64).wrapping_mul(d));
                            Ok((*dst, out))
                        }
                        Instr::Tlu {
                            dst,
                            src,
                            offset,
                            drop,
                            table,
                        } => {
                            let mut x = get(*src)?.clone();
                            lwe_ciphertext_plaintext_add_assign(
                                &mut x,
                                Plaintext((*offset as u64).wrapping_mul(d)),
                            );
                            // bits left below the table index when the table reads
                            let mut below = *drop;
                            // a split table (one with a second half) reads its index bit
                            // (bit `drop`) too, and keeps it
                            let (lut, lut_signed) = &luts[*table as usize];
                            let mut low = None;
                            if exact {
                                // exact removal of the low `drop` bits (and the index's low
                                // bit for a split table), lowest first
                                let extract = *drop + u32::from(lut_signed.is_some());
                                for j in 0..extract {
                                    let mut t = x.clone();
                                    lwe_ciphertext_cleartext_mul_assign(
                                        &mut t,
                                        Cleartext(1u64 << (b - j)),
                                    );
                                    lwe_ciphertext_plaintext_add_assign(
                                        &mut t,
                                        Plaintext(1u64 << 62),
                                    );
                                    let c = if j == 0 { d / 2 } else { d << (j - 1) };
                                    let mut bit = if j == *drop {
                                        // a split table's index bit: also at the top
                                        let [bit, mut top] = self.bootstrap_bit_twice(
                                            &t,
                                            [&sign_luts[j as usize], &sign_luts[b as usize + 1]],
                                        );
                                        lwe_ciphertext_plaintext_add_assign(
                                            &mut top,
                                            Plaintext(1 << 62),
                                        );
                                        low = Some(top);
                                        bit
                                    } else {
                                        self.bootstrap_bit(&t, &sign_luts[j as usize])
                                    };
                                    lwe_ciphertext_plaintext_add_assign(&mut bit, Plaintext(c));
                                    lwe_ciphertext_sub_assign(&mut x, &bit);
                                }
                                below = 0;
                            }
                            // the index's top bit under the padding bit, then half a slot up so
                            // that the value sits mid-way in it (a split table's slots are
                            // twice as wide: it reads p−1 bits)
                            let read = p - u32::from(low.is_some());
                            lwe_ciphertext_cleartext_mul_assign(
                                &mut x,
                                Cleartext(1u64 << (b - drop - p)),
                            );
                            lwe_ciphertext_plaintext_add_assign(
                                &mut x,
                                Plaintext(1u64 << (62 - below - read)),
                            );
                            let out = match (low, lut_signed) {
                                (Some(top), Some(lut_signed)) => {
                                    // the low bit at the top: the second half's sign
                                    let mut xs = top;
                                    lwe_ciphertext_add_assign(&mut xs, &x);
                                    self.bootstrap_sum(&x, lut, &xs, lut_signed)
                                }
                                // a light table: on the second partition
                                _ if prog.light_lookup(*drop) => {
                                    self.bootstrap_bit(&x, &light_luts[*table as usize])
                                }
                                _ => self.bootstrap(&x, lut),
                            };
                            if let Some(pb) = progress {
                                pb.inc(1);
                            }
                            Ok((*dst, out))
                        }
                    }
                })
                .collect::<Result<_>>()?;
            for (dst, ct) in results {
                regs[dst as usize] = Some(ct);
            }
        }
        Ok(regs)
    }
}

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
                .map(|o| {
                    o.elems
                        .iter()
                        .filter(|e| matches!(e, Operand::Reg(_)))
                        .count()
                })
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
