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

/// How measured bootstraps use the machine's threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Threading {
    /// One bootstrap after the other on the calling thread (latency).
    One,
    /// Independent bootstraps on `n` threads at once (throughput: the wall time per
    /// bootstrap of a stage with many tables).
    Parallel(usize),
    /// One bootstrap at a time, each on `n` threads (multi-bit blind rotations only:
    /// their key groups split across threads; latency).
    Inside(usize),
}

impl std::fmt::Display for Threading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Threading::One => write!(f, "1 thread"),
            Threading::Parallel(n) => write!(f, "{n} threads, {n} at once"),
            Threading::Inside(n) => write!(f, "{n} threads inside one"),
        }
    }
}

/// Runs `check` on every input under `threading` and returns the wall time per input in
/// ms, or `None` when a check failed (a wrong bootstrap result). The first input runs once
/// untimed before (the FFT plans of a new polynomial size are made on first use).
fn timed<T: Send + Clone>(
    inputs: Vec<T>,
    threading: Threading,
    check: impl Fn(T) -> bool + Sync + Send,
) -> Option<f64> {
    if !check(inputs.first()?.clone()) {
        return None;
    }
    let n = inputs.len().max(1) as f64;
    match threading {
        Threading::Parallel(t) if t > 1 => {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .ok()?;
            let t0 = Instant::now();
            let ok =
                pool.install(|| inputs.into_par_iter().map(&check).filter(|ok| !ok).count()) == 0;
            ok.then(|| t0.elapsed().as_secs_f64() * 1e3 / n)
        }
        _ => {
            let t0 = Instant::now();
            let ok = inputs.into_iter().map(&check).filter(|ok| !ok).count() == 0;
            ok.then(|| t0.elapsed().as_secs_f64() * 1e3 / n)
        }
    }
}

/// Mean wall time of one keyswitch + bootstrap on the calling thread, ms (`reps` runs of a
/// `p`-bit identity table; every result is checked). `None` when a result was wrong.
pub fn pbs_latency(ck: &ClientKey, sk: &ServerKey, p: u32, reps: usize) -> Option<f64> {
    pbs_time(ck, sk, p, reps, Threading::One)
}

/// [`pbs_latency`] under `threading` (wall time per bootstrap).
pub fn pbs_time(
    ck: &ClientKey,
    sk: &ServerKey,
    p: u32,
    reps: usize,
    threading: Threading,
) -> Option<f64> {
    let d = delta(p);
    let lut = table_lut(sk.params(), p, d, |i| i as u64);
    let inputs: Vec<_> = (0..reps)
        .map(|r| {
            let v = (r as i64 * 5 + 3) % (1 << p);
            (v, table_input(ck, v, p))
        })
        .collect();
    timed(inputs, threading, |(v, x)| {
        ck.decrypt_one(&sk.bootstrap(&x, &lut).as_view(), 0) == v
    })
}

/// Wall time of one many-LUT bootstrap (tfhe's: `k` tables of one input in one blind
/// rotation, [`ServerKey::bootstrap_many`]) on a `p`-bit table space, whose input has
/// `p - log2 k` bits; ms per bootstrap (divide by `k` for a table read). Table `j` of
/// input `x` is `x + j`; every output is checked. `None` when one was wrong or `k` is not a
/// power of two below `2^p`.
pub fn many_lut_time(
    ck: &ClientKey,
    sk: &ServerKey,
    p: u32,
    k: usize,
    reps: usize,
    threading: Threading,
) -> Option<f64> {
    if !k.is_power_of_two() || k < 2 || k.ilog2() >= p {
        return None;
    }
    let q = p - k.ilog2();
    let d = delta(p);
    let n = sk.params().polynomial_size;
    let stride = (n >> p) << q;
    let lut = table_lut(sk.params(), p, d, |i| {
        let (j, x) = (i >> q, i & ((1 << q) - 1));
        ((x + j) % (1 << p)) as u64
    });
    let inputs: Vec<_> = (0..reps)
        .map(|r| {
            let v = (r as i64 * 5 + 3) % (1 << q);
            (v, table_input(ck, v, p))
        })
        .collect();
    timed(inputs, threading, |(v, x)| {
        sk.bootstrap_many(&x, &lut, k, stride)
            .iter()
            .enumerate()
            .all(|(j, out)| ck.decrypt_one(&out.as_view(), 0) == (v + j as i64) % (1 << p))
    })
}

/// Keys of a multi-bit set (tfhe's multi-bit blind rotation with `grouping` key bits per
/// group): the big key's secret, the keyswitching key to the small key and the Fourier
/// multi-bit bootstrapping key. For measurement: the runtime does not use them yet.
pub struct MultiBitKeys {
    big: LweSecretKeyOwned<u64>,
    ksk: LweKeyswitchKeyOwned<u64>,
    bsk: FourierLweMultiBitBootstrapKeyOwned,
    params: FheParams,
}

fn gaussian(std: f64) -> Gaussian<f64> {
    Gaussian::from_dispersion_parameter(StandardDev(std), 0.0)
}

/// Generates [`MultiBitKeys`] for `params` (whose LWE dimension `grouping` divides) and
/// the key generation time, s. `None` when `grouping` does not divide it.
pub fn multi_bit_keys(params: &FheParams, grouping: usize) -> Option<(MultiBitKeys, f64)> {
    if grouping < 2 || !params.lwe_dimension.is_multiple_of(grouping) {
        return None;
    }
    let t0 = Instant::now();
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
    let big = LweSecretKey::from_container(glwe.as_lwe_secret_key().as_ref().to_vec());
    let ksk = allocate_and_generate_new_lwe_keyswitch_key(
        &big,
        &small,
        DecompositionBaseLog(params.ks_base_log),
        DecompositionLevelCount(params.ks_level),
        gaussian(params.lwe_std),
        CiphertextModulus::new_native(),
        &mut enc_gen,
    );
    let std_bsk = par_allocate_and_generate_new_lwe_multi_bit_bootstrap_key(
        &small,
        &glwe,
        DecompositionBaseLog(params.pbs_base_log),
        DecompositionLevelCount(params.pbs_level),
        LweBskGroupingFactor(grouping),
        gaussian(params.glwe_std),
        CiphertextModulus::new_native(),
        &mut enc_gen,
    );
    let mut bsk = FourierLweMultiBitBootstrapKey::new(
        std_bsk.input_lwe_dimension(),
        std_bsk.glwe_size(),
        std_bsk.polynomial_size(),
        std_bsk.decomposition_base_log(),
        std_bsk.decomposition_level_count(),
        std_bsk.grouping_factor(),
    );
    par_convert_standard_lwe_multi_bit_bootstrap_key_to_fourier(&std_bsk, &mut bsk);
    let keys = MultiBitKeys {
        big,
        ksk,
        bsk,
        params: params.clone(),
    };
    Some((keys, t0.elapsed().as_secs_f64()))
}

/// Wall time of one keyswitch + multi-bit bootstrap of a `p`-bit identity table, ms
/// (`reps` runs, every result checked; [`Threading::Inside`] gives the blind rotation its
/// threads). `None` when a result was wrong.
pub fn multi_bit_time(
    keys: &MultiBitKeys,
    p: u32,
    reps: usize,
    threading: Threading,
) -> Option<f64> {
    let d = delta(p);
    let set = &keys.params;
    let lut = table_lut(set, p, d, |i| i as u64);
    let mut seeder = new_seeder();
    let seeder = seeder.as_mut();
    let mut enc_gen =
        EncryptionRandomGenerator::<DefaultRandomGenerator>::new(seeder.seed(), seeder);
    let big_size = LweDimension(set.big_dimension()).to_lwe_size();
    let inputs: Vec<_> = (0..reps)
        .map(|r| {
            let v = (r as u64 * 5 + 3) % (1 << p);
            let mut ct = LweCiphertext::new(0u64, big_size, CiphertextModulus::new_native());
            let m = v.wrapping_mul(d).wrapping_add(1u64 << (62 - p));
            encrypt_lwe_ciphertext(
                &keys.big,
                &mut ct,
                Plaintext(m),
                gaussian(set.glwe_std),
                &mut enc_gen,
            );
            (v, ct)
        })
        .collect();
    let inner = match threading {
        Threading::Inside(t) => t.max(1),
        _ => 1,
    };
    timed(inputs, threading, |(v, ct)| {
        let mut small = LweCiphertext::new(
            0u64,
            LweDimension(set.lwe_dimension).to_lwe_size(),
            CiphertextModulus::new_native(),
        );
        keyswitch_lwe_ciphertext(&keys.ksk, &ct, &mut small);
        let mut out = LweCiphertext::new(0u64, big_size, CiphertextModulus::new_native());
        multi_bit_programmable_bootstrap_lwe_ciphertext(
            &small,
            &mut out,
            &lut,
            &keys.bsk,
            ThreadCount(inner),
            true,
        );
        let phase = decrypt_lwe_ciphertext(&keys.big, &out).0;
        let code = (phase.wrapping_add(d / 2) / d) & ((1u64 << (p + 1)) - 1);
        code == v
    })
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

/// `size` independent table bootstrap outputs (`p`-bit identity table) with their values
/// removed: encryptions of 0 carrying `V_pbs` each (a table of zeros would give noiseless
/// outputs: its blind rotation never leaves the trivial zero).
fn noise_pool(ck: &ClientKey, sk: &ServerKey, p: u32, size: usize) -> Vec<LweCiphertextOwned<u64>> {
    let d = delta(p);
    let ident = table_lut(sk.params(), p, d, |i| i as u64);
    (0..size)
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
    let pool = noise_pool(ck, sk, p, 256);
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
    // a measured error rate is a tail event of the sum of TERMS pool elements, and so set
    // by the pool's few largest errors: with 256 of them the observed rate spread 8-36
    // errors in 1,500 around a predicted 24 from one pool to the next (8 is near the fhe
    // test's lower bound, predicted / 4); with 1,024, 20-38 in five runs
    let pool = noise_pool(ck, sk, b.min(4), 1024);
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
