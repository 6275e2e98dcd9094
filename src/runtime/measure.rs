//! Measurements of the runtime against the noise model: bootstrap latency for a parameter
//! set, and the observed error rate of table lookups whose input noise is what a
//! [`Constraint`](crate::backend::params::Constraint) describes.

use super::server::table_lut;
use super::{delta, keygen, ClientKey, ServerKey};
use crate::backend::params::{Constraint, ConstraintKind, ExtractParams, FheParams};
use rand::{RngExt, SeedableRng};
use rayon::prelude::*;
use std::time::Instant;
use tfhe::core_crypto::algorithms::slice_algorithms::slice_wrapping_add_scalar_mul_assign;
use tfhe::core_crypto::prelude::*;

/// Keys for `p`-bit tables (message bits = `p`) under `params`, and the key generation time.
pub fn keys(params: &FheParams, p: u32) -> (ClientKey, ServerKey, f64) {
    keys_with(params, None, p)
}

/// [`keys`] with a bit-extraction partition.
pub fn keys_with(
    params: &FheParams,
    extract: Option<&ExtractParams>,
    p: u32,
) -> (ClientKey, ServerKey, f64) {
    let t0 = Instant::now();
    let (ck, csk) = keygen(params, extract, p, 0);
    let sk = csk.expand();
    (ck, sk, t0.elapsed().as_secs_f64())
}

/// Mean wall time of one keyswitch + bootstrap on the calling thread, ms (`reps` runs of a
/// `p`-bit identity table; every result is checked).
///
/// # Panics
/// Never on user data; a wrong bootstrap result is reported as `None`.
pub fn pbs_latency(ck: &ClientKey, sk: &ServerKey, p: u32, reps: usize) -> Option<f64> {
    let d = delta(p);
    let lut = table_lut(sk.params(), p, d, |i| i as u64);
    let mut ok = true;
    let mut total = 0.0;
    for r in 0..reps {
        let v = (r as i64 * 5 + 3) % (1 << p);
        let x = table_input(ck, v, p);
        let t0 = Instant::now();
        let out = sk.bootstrap(&x, &lut);
        total += t0.elapsed().as_secs_f64();
        ok &= ck.decrypt_one(&out.as_view(), 0) == v;
    }
    ok.then(|| total * 1e3 / reps.max(1) as f64)
}

/// A fresh encryption of `v` for a `p`-bit table (message bits = `p`), placed mid-slot as
/// the runtime places table inputs.
fn table_input(ck: &ClientKey, v: i64, p: u32) -> LweCiphertextOwned<u64> {
    let list = ck.encrypt(&[v]).decompress_into_lwe_ciphertext_list();
    let mut x =
        LweCiphertext::from_container(list.as_ref().to_vec(), CiphertextModulus::new_native());
    lwe_ciphertext_plaintext_add_assign(&mut x, Plaintext(1u64 << (62 - p)));
    x
}

/// Number of bootstrap outputs each measured table input sums.
pub const TERMS: usize = 4;

/// 256 independent table bootstrap outputs (`p`-bit identity table) with their values
/// removed: encryptions of 0 carrying `V_pbs` each (a table of zeros would give noiseless
/// outputs: its blind rotation never leaves the trivial zero).
fn noise_pool(ck: &ClientKey, sk: &ServerKey, p: u32) -> Vec<LweCiphertextOwned<u64>> {
    let d = delta(p);
    let ident = table_lut(sk.params(), p, d, |i| i as u64);
    (0..256)
        .into_par_iter()
        .map(|i| {
            let v = (i % (1 << p)) as u64;
            let mut out = sk.bootstrap(&table_input(ck, v as i64, p), &ident);
            lwe_ciphertext_plaintext_sub_assign(&mut out, Plaintext(v.wrapping_mul(d)));
            out
        })
        .collect()
}

/// Trial `t`'s generator and register `Σ ±weight·cᵢ` over [`TERMS`] outputs of `pool`: an
/// encryption of 0 whose noise is `TERMS·weight²·V_pbs`.
fn noisy_zero(
    sk: &ServerKey,
    pool: &[LweCiphertextOwned<u64>],
    weight: u64,
    seed: u64,
    t: usize,
) -> (rand::rngs::StdRng, LweCiphertextOwned<u64>) {
    let mut rng =
        rand::rngs::StdRng::seed_from_u64(seed ^ (t as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut x = LweCiphertext::new(0u64, sk.big_size(), CiphertextModulus::new_native());
    for _ in 0..TERMS {
        let c = &pool[rng.random_range(0..pool.len())];
        let w = if rng.random_bool(0.5) {
            weight
        } else {
            weight.wrapping_neg()
        };
        slice_wrapping_add_scalar_mul_assign(x.as_mut(), c.as_ref(), w);
    }
    (rng, x)
}

/// Runs `trials` table lookups whose input is `Σ ±w·cᵢ + v` over [`TERMS`] bootstrap outputs
/// `cᵢ` drawn from a pool (encryptions of 0, so the input noise is `TERMS·w²·V_pbs`, as the
/// constraint returned by [`table_constraint`] models), `v` random in `[0, 2^p)`; returns
/// how many results were not `v`.
pub fn table_errors(
    ck: &ClientKey,
    sk: &ServerKey,
    p: u32,
    weight: u64,
    trials: usize,
    seed: u64,
) -> usize {
    let d = delta(p);
    let ident = table_lut(sk.params(), p, d, |i| i as u64);
    // a pool of independent bootstrap outputs, their values removed (a table of zeros
    // would give noiseless outputs: its blind rotation never leaves the trivial zero)
    let pool = noise_pool(ck, sk, p);
    (0..trials)
        .into_par_iter()
        .map(|t| {
            let (mut rng, mut x) = noisy_zero(sk, &pool, weight, seed, t);
            let v: i64 = rng.random_range(0..1i64 << p);
            lwe_ciphertext_plaintext_add_assign(
                &mut x,
                Plaintext((v as u64).wrapping_mul(d).wrapping_add(1u64 << (62 - p))),
            );
            let out = sk.bootstrap(&x, &ident);
            usize::from(ck.decrypt_one(&out.as_view(), 0) != v)
        })
        .sum()
}

/// The noise check of a `p`-bit table read (message bits = `p`) whose input sums
/// [`TERMS`] bootstrap outputs with weights ±`weight`.
pub fn table_constraint(p: u32, weight: u64) -> Constraint {
    Constraint {
        kind: ConstraintKind::Table,
        at: "measurement".into(),
        count: 1,
        alpha: (TERMS as f64) * (weight as f64).powi(2),
        gamma: 0.0,
        beta: 0.0,
        scale: 1.0,
        margin: 2f64.powi(-(p as i32) - 2),
    }
}

/// Empirical variance of table bootstrap output noise (torus units²) over `n` bootstraps of
/// a `p`-bit table (message bits = `p`), under the registers' key (after the keyswitch back
/// when the key has a second partition), measured with the client key: the phase minus the
/// exact encoding.
pub fn pbs_output_variance(ck: &ClientKey, sk: &ServerKey, p: u32, n: usize) -> f64 {
    let d = delta(p);
    let lut = table_lut(sk.params(), p, d, |i| i as u64);
    let big = ck.glwe.as_lwe_secret_key();
    let errs: Vec<f64> = (0..n)
        .into_par_iter()
        .map(|i| {
            let v = (i % (1 << p)) as i64;
            let x = table_input(ck, v, p);
            let out = sk.bootstrap(&x, &lut);
            let phase = decrypt_lwe_ciphertext(&big, &out).0;
            let e = phase.wrapping_sub((v as u64).wrapping_mul(d)) as i64;
            e as f64 / 2f64.powi(64)
        })
        .collect();
    errs.iter().map(|e| e * e).sum::<f64>() / n.max(1) as f64
}

/// Sign bootstrap of bit 0 of a `b`-bit register, as the runtime's exact rounding runs it
/// (on the extraction partition when the key has one): the register times `2^b`, a quarter
/// torus added, the constant table `−Δ/2`, then `+Δ/2`: the bit, times `Δ`.
fn extract_bit0(sk: &ServerKey, x: &LweCiphertextOwned<u64>, b: u32) -> LweCiphertextOwned<u64> {
    let d = delta(b);
    let (k, n) = sk.extract_glwe();
    let lut = allocate_and_trivially_encrypt_new_glwe_ciphertext(
        GlweDimension(k).to_glwe_size(),
        &PlaintextList::from_container(vec![(d / 2).wrapping_neg(); n]),
        CiphertextModulus::new_native(),
    );
    let mut t = x.clone();
    lwe_ciphertext_cleartext_mul_assign(&mut t, Cleartext(1u64 << b));
    lwe_ciphertext_plaintext_add_assign(&mut t, Plaintext(1u64 << 62));
    let mut bit = sk.bootstrap_bit(&t, &lut);
    lwe_ciphertext_plaintext_add_assign(&mut bit, Plaintext(d / 2));
    bit
}

/// Runs `trials` extractions of bit 0 of `Σ ±w·cᵢ + v` (message bits `b`; [`TERMS`] table
/// bootstrap outputs `cᵢ` of value 0, so the register carries `TERMS·w²·V_pbs` as
/// [`extraction_constraint`] models; `v` random in `[0, 2^b)`); returns how many bits were
/// wrong.
pub fn extraction_errors(
    ck: &ClientKey,
    sk: &ServerKey,
    b: u32,
    weight: u64,
    trials: usize,
    seed: u64,
) -> usize {
    let d = delta(b);
    let pool = noise_pool(ck, sk, b.min(4));
    (0..trials)
        .into_par_iter()
        .map(|t| {
            let (mut rng, mut x) = noisy_zero(sk, &pool, weight, seed, t);
            let v: i64 = rng.random_range(0..1i64 << b);
            lwe_ciphertext_plaintext_add_assign(&mut x, Plaintext((v as u64).wrapping_mul(d)));
            let bit = extract_bit0(sk, &x, b);
            usize::from(ck.decrypt_one(&bit.as_view(), 0) != (v & 1))
        })
        .sum()
}

/// The noise check of the extraction of bit 0 of a `b`-bit register that sums [`TERMS`]
/// bootstrap outputs with weights ±`weight`.
pub fn extraction_constraint(b: u32, weight: u64) -> Constraint {
    Constraint {
        kind: ConstraintKind::BitExtraction,
        at: "measurement".into(),
        count: 1,
        alpha: (TERMS as f64) * (weight as f64).powi(2) * 4f64.powi(b as i32),
        gamma: 0.0,
        beta: 0.0,
        scale: 1.0,
        margin: 0.25,
    }
}

/// Empirical variance (torus units²) of an extracted bit where the runtime subtracts it
/// (under the registers' key), over `n`
/// extractions of fresh `b`-bit encryptions: the phase minus the exact bit.
pub fn bit_output_variance(ck: &ClientKey, sk: &ServerKey, b: u32, n: usize) -> f64 {
    let d = delta(b);
    let big = ck.glwe.as_lwe_secret_key();
    let errs: Vec<f64> = (0..n)
        .into_par_iter()
        .map(|i| {
            let v = (i as i64 * 7 + 1) % (1 << b);
            let list = ck.encrypt(&[v]).decompress_into_lwe_ciphertext_list();
            let x = LweCiphertext::from_container(
                list.as_ref().to_vec(),
                CiphertextModulus::new_native(),
            );
            let bit = extract_bit0(sk, &x, b);
            let phase = decrypt_lwe_ciphertext(&big, &bit).0;
            let e = phase.wrapping_sub(((v & 1) as u64).wrapping_mul(d)) as i64;
            e as f64 / 2f64.powi(64)
        })
        .collect();
    errs.iter().map(|e| e * e).sum::<f64>() / n.max(1) as f64
}
