//! Runtime: key generation, encryption, evaluation and decryption of a [`Program`] with
//! `tfhe::core_crypto` (one LWE ciphertext per integer; keyswitch then programmable bootstrap
//! for every table lookup).
//!
//! The client holds the secret keys; the server gets the keyswitching key and the bootstrapping
//! key only. Independent instructions of a stage run in parallel (rayon).

use crate::backend::params::FheParams;
use crate::backend::{Instr, Operand, Program};
use crate::error::{Error, Result};
use rayon::prelude::*;
use tfhe::core_crypto::algorithms::slice_algorithms::slice_wrapping_add_scalar_mul_assign;
use tfhe::core_crypto::prelude::*;

/// The client's secret keys.
pub struct ClientKey {
    pub params: FheParams,
    pub msg_bits: u32,
    glwe: GlweSecretKeyOwned<u64>,
}

/// The server's evaluation keys (no secret).
pub struct ServerKey {
    pub params: FheParams,
    pub msg_bits: u32,
    ksk: LweKeyswitchKeyOwned<u64>,
    bsk: FourierLweBootstrapKeyOwned,
}

/// Encrypted inputs or outputs: one ciphertext per integer.
pub struct Ciphertexts {
    pub cts: Vec<LweCiphertextOwned<u64>>,
}

fn modulus() -> CiphertextModulus<u64> {
    CiphertextModulus::new_native()
}

/// `Δ = 2^64 / 2^(B+1)`.
fn delta(msg_bits: u32) -> u64 {
    1u64 << (63 - msg_bits)
}

/// Makes a fresh key pair for `params` and message width `msg_bits`.
pub fn keygen(params: &FheParams, msg_bits: u32) -> (ClientKey, ServerKey) {
    let mut seeder = new_seeder();
    let seeder = seeder.as_mut();
    let mut secret_gen = SecretRandomGenerator::<DefaultRandomGenerator>::new(seeder.seed());
    let mut enc_gen =
        EncryptionRandomGenerator::<DefaultRandomGenerator>::new(seeder.seed(), seeder);
    let small =
        LweSecretKey::generate_new_binary(LweDimension(params.lwe_dimension), &mut secret_gen);
    let glwe = GlweSecretKey::generate_new_binary(
        GlweDimension(params.glwe_dimension),
        PolynomialSize(params.polynomial_size),
        &mut secret_gen,
    );
    let big = glwe.as_lwe_secret_key();
    let lwe_noise = Gaussian::from_dispersion_parameter(StandardDev(params.lwe_std), 0.0);
    let glwe_noise = Gaussian::from_dispersion_parameter(StandardDev(params.glwe_std), 0.0);
    let ksk = allocate_and_generate_new_lwe_keyswitch_key(
        &big,
        &small,
        DecompositionBaseLog(params.ks_base_log),
        DecompositionLevelCount(params.ks_level),
        lwe_noise,
        modulus(),
        &mut enc_gen,
    );
    let std_bsk = par_allocate_and_generate_new_lwe_bootstrap_key(
        &small,
        &glwe,
        DecompositionBaseLog(params.pbs_base_log),
        DecompositionLevelCount(params.pbs_level),
        glwe_noise,
        modulus(),
        &mut enc_gen,
    );
    let mut bsk = FourierLweBootstrapKey::new(
        std_bsk.input_lwe_dimension(),
        std_bsk.glwe_size(),
        std_bsk.polynomial_size(),
        std_bsk.decomposition_base_log(),
        std_bsk.decomposition_level_count(),
    );
    par_convert_standard_lwe_bootstrap_key_to_fourier(&std_bsk, &mut bsk);
    (
        ClientKey {
            params: params.clone(),
            msg_bits,
            glwe,
        },
        ServerKey {
            params: params.clone(),
            msg_bits,
            ksk,
            bsk,
        },
    )
}

impl ClientKey {
    /// Encrypts integers under the big (GLWE-derived) key.
    pub fn encrypt(&self, values: &[i64]) -> Ciphertexts {
        let mut seeder = new_seeder();
        let seeder = seeder.as_mut();
        let mut enc_gen =
            EncryptionRandomGenerator::<DefaultRandomGenerator>::new(seeder.seed(), seeder);
        let noise = Gaussian::from_dispersion_parameter(StandardDev(self.params.glwe_std), 0.0);
        let big = self.glwe.as_lwe_secret_key();
        let d = delta(self.msg_bits);
        let cts = values
            .iter()
            .map(|&v| {
                allocate_and_encrypt_new_lwe_ciphertext(
                    &big,
                    Plaintext((v as u64).wrapping_mul(d)),
                    noise,
                    modulus(),
                    &mut enc_gen,
                )
            })
            .collect();
        Ciphertexts { cts }
    }

    /// Decrypts one integer known to lie in `[lo, lo + 2^(B+1))`.
    pub fn decrypt_one(&self, ct: &LweCiphertextOwned<u64>, lo: i64) -> i64 {
        let big = self.glwe.as_lwe_secret_key();
        let phase = decrypt_lwe_ciphertext(&big, ct).0;
        let b = self.msg_bits + 1;
        // round to the nearest multiple of Δ, keep B+1 bits
        let d = delta(self.msg_bits);
        let code = (phase.wrapping_add(d / 2) / d) & ((1u64 << b) - 1);
        let lo_code = (lo as u64) & ((1u64 << b) - 1);
        lo + (code.wrapping_sub(lo_code) & ((1u64 << b) - 1)) as i64
    }

    /// Decrypts the program's outputs, one integer vector per output.
    pub fn decrypt(
        &self,
        prog: &Program,
        outs: &[Vec<Option<LweCiphertextOwned<u64>>>],
    ) -> Vec<Vec<i64>> {
        prog.outputs
            .iter()
            .zip(outs)
            .map(|(o, cts)| {
                o.elems
                    .iter()
                    .zip(cts)
                    .zip(&o.lo)
                    .map(|((e, ct), &lo)| match (e, ct) {
                        (Operand::Const(v), _) => *v,
                        (Operand::Reg(_), Some(ct)) => self.decrypt_one(ct, lo),
                        (Operand::Reg(_), None) => lo,
                    })
                    .collect()
            })
            .collect()
    }
}

/// Fills a bootstrap test polynomial so that a phase in box `i` gives `f(i)·Δ`.
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
    // center each box on its value: negate the first half box and rotate it to the end
    let half = box_size / 2;
    for a in acc[..half].iter_mut() {
        *a = a.wrapping_neg();
    }
    acc.rotate_left(half);
    let poly = Polynomial::from_container(acc);
    allocate_and_trivially_encrypt_new_glwe_ciphertext(
        GlweDimension(params.glwe_dimension).to_glwe_size(),
        &PlaintextList::from_container(poly.into_container()),
        modulus(),
    )
}

impl ServerKey {
    fn bootstrap(
        &self,
        ct: &LweCiphertextOwned<u64>,
        lut: &GlweCiphertextOwned<u64>,
    ) -> LweCiphertextOwned<u64> {
        let mut small = LweCiphertext::new(
            0u64,
            LweDimension(self.params.lwe_dimension).to_lwe_size(),
            modulus(),
        );
        keyswitch_lwe_ciphertext(&self.ksk, ct, &mut small);
        let big_size =
            LweDimension(self.params.glwe_dimension * self.params.polynomial_size).to_lwe_size();
        let mut out = LweCiphertext::new(0u64, big_size, modulus());
        programmable_bootstrap_lwe_ciphertext(&small, &mut out, lut, &self.bsk);
        out
    }

    /// Runs the program on encrypted inputs; returns the output ciphertexts (`None` where an
    /// output element is a clear constant).
    ///
    /// # Errors
    /// Inputs that do not match the program.
    pub fn evaluate(
        &self,
        prog: &Program,
        inputs: Vec<Ciphertexts>,
    ) -> Result<Vec<Vec<Option<LweCiphertextOwned<u64>>>>> {
        if inputs.len() != prog.inputs.len() {
            return Err(Error::Usage(format!(
                "the program takes {} input(s), got {}",
                prog.inputs.len(),
                inputs.len()
            )));
        }
        let big_size =
            LweDimension(self.params.glwe_dimension * self.params.polynomial_size).to_lwe_size();
        let mut regs: Vec<Option<LweCiphertextOwned<u64>>> = vec![None; prog.n_regs as usize];
        for (rs, cts) in prog.inputs.iter().zip(inputs) {
            if rs.len() != cts.cts.len() {
                return Err(Error::Usage(format!(
                    "an input has {} ciphertexts, the program expects {}",
                    cts.cts.len(),
                    rs.len()
                )));
            }
            for (&r, ct) in rs.iter().zip(cts.cts) {
                if ct.lwe_size() != big_size {
                    return Err(Error::Usage(
                        "ciphertexts made with other keys (wrong LWE size)".into(),
                    ));
                }
                regs[r as usize] = Some(ct);
            }
        }
        let d = delta(self.msg_bits);
        let p = prog.tlu_bits;
        let b = self.msg_bits;
        let luts: Vec<GlweCiphertextOwned<u64>> = prog
            .tables
            .iter()
            .map(|t| table_lut(&self.params, p, d, |i| t[i] as u64))
            .collect();
        // sign bootstrap for bit j: constant −2^(j−1)·Δ everywhere
        let sign_luts: Vec<GlweCiphertextOwned<u64>> = (0..=b)
            .map(|j| {
                let c = if j == 0 { d / 2 } else { d << (j - 1) };
                let v = c.wrapping_neg();
                let poly = vec![v; self.params.polynomial_size];
                allocate_and_trivially_encrypt_new_glwe_ciphertext(
                    GlweDimension(self.params.glwe_dimension).to_glwe_size(),
                    &PlaintextList::from_container(poly),
                    modulus(),
                )
            })
            .collect();
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
                            // exact removal of the low `drop` bits, lowest first
                            for j in 0..*drop {
                                let mut t = x.clone();
                                lwe_ciphertext_cleartext_mul_assign(
                                    &mut t,
                                    Cleartext(1u64 << (b - j)),
                                );
                                lwe_ciphertext_plaintext_add_assign(&mut t, Plaintext(1u64 << 62));
                                let mut bit = self.bootstrap(&t, &sign_luts[j as usize]);
                                let c = if j == 0 { d / 2 } else { d << (j - 1) };
                                lwe_ciphertext_plaintext_add_assign(&mut bit, Plaintext(c));
                                lwe_ciphertext_sub_assign(&mut x, &bit);
                            }
                            lwe_ciphertext_cleartext_mul_assign(
                                &mut x,
                                Cleartext(1u64 << (b - drop - p)),
                            );
                            Ok((*dst, self.bootstrap(&x, &luts[*table as usize])))
                        }
                    }
                })
                .collect::<Result<_>>()?;
            for (dst, ct) in results {
                regs[dst as usize] = Some(ct);
            }
        }
        Ok(prog
            .outputs
            .iter()
            .map(|o| {
                o.elems
                    .iter()
                    .map(|e| match e {
                        Operand::Reg(r) => regs[*r as usize].clone(),
                        Operand::Const(_) => None,
                    })
                    .collect()
            })
            .collect())
    }
}
