//! The server's side: a register program evaluated on ciphertexts with the evaluation keys
//! only — leveled sums, and one keyswitch + programmable bootstrap per table lookup or bit
//! extraction; the independent instructions of a stage in parallel (rayon).

use super::error::RuntimeError;
use super::keys::ServerKey;
use super::{delta, modulus};
use crate::backend::params::FheParams;
use crate::backend::{Instr, Operand, Program, Rounding};
use rayon::prelude::*;
use tfhe::core_crypto::algorithms::slice_algorithms::slice_wrapping_add_scalar_mul_assign;
use tfhe::core_crypto::prelude::*;

type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// Fills a bootstrap test polynomial so that a phase in box `i` (the torus interval
/// `[i, i+1)·2^-(p+1)`) gives `f(i)·Δ`. The caller places values inside their boxes.
pub(crate) fn table_lut(
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
    keyswitch_rotations(ct, luts, ksk, bsk, set).map(|acc| extract_at(&acc, set, 0))
}

/// Keyswitch to `set`'s small key, centered modulus switch to its `2N` (half a switched unit
/// added first, see [`keyswitch_bootstrap`]), and one blind rotation of each test
/// polynomial: the accumulators, before sample extraction.
fn keyswitch_rotations<const L: usize>(
    ct: &LweCiphertextOwned<u64>,
    luts: [&GlweCiphertextOwned<u64>; L],
    ksk: &LweKeyswitchKeyOwned<u64>,
    bsk: &FourierLweBootstrapKeyOwned,
    set: &FheParams,
) -> [GlweCiphertextOwned<u64>; L] {
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
        acc
    })
}

/// Sample extraction of `acc`'s coefficient `degree` under `set`'s big key.
fn extract_at(
    acc: &GlweCiphertextOwned<u64>,
    set: &FheParams,
    degree: usize,
) -> LweCiphertextOwned<u64> {
    let mut out = LweCiphertext::new(
        0u64,
        LweDimension(set.big_dimension()).to_lwe_size(),
        modulus(),
    );
    extract_lwe_sample_from_glwe_ciphertext(acc, &mut out, MonomialDegree(degree));
    out
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

    /// Several tables of one input in one bootstrap (tfhe's many-LUT bootstrap): one
    /// keyswitch, one blind rotation of `lut` (which holds the `k` tables one after the
    /// other, `stride` coefficients apart), `k` sample extractions at `0, stride, …`. The
    /// input must sit in the first `N / k` coefficients' boxes (its top `log2 k` bits zero).
    pub(crate) fn bootstrap_many(
        &self,
        ct: &LweCiphertextOwned<u64>,
        lut: &GlweCiphertextOwned<u64>,
        k: usize,
        stride: usize,
    ) -> Vec<LweCiphertextOwned<u64>> {
        let set = self.params();
        let [acc] = keyswitch_rotations(ct, [lut], &self.ksk, &self.bsk, set);
        (0..k)
            .map(|j| self.to_home(extract_at(&acc, set, j * stride)))
            .collect()
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
        self.evaluate_outputs(prog, inputs, progress, None)
    }

    /// [`ServerKey::evaluate`], stopping before the next stage once `cancel` is set.
    ///
    /// # Errors
    /// As [`ServerKey::evaluate`]; [`RuntimeError::Cancelled`].
    pub fn evaluate_outputs(
        &self,
        prog: &Program,
        inputs: &[SeededLweCiphertextListOwned<u64>],
        progress: Option<&indicatif::ProgressBar>,
        cancel: Option<&std::sync::atomic::AtomicBool>,
    ) -> Result<Vec<LweCiphertextListOwned<u64>>> {
        let regs = self.evaluate_watched(prog, inputs, progress, cancel)?;
        Ok(self.outputs_of(prog, &regs))
    }

    /// The output ciphertexts in the registers of one evaluated sample.
    fn outputs_of(
        &self,
        prog: &Program,
        regs: &[Option<LweCiphertextOwned<u64>>],
    ) -> Vec<LweCiphertextListOwned<u64>> {
        prog.outputs
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
            .collect()
    }

    /// Runs the program on several samples at once: stage by stage, the instructions of
    /// every sample in one parallel pool, so that a stage narrower than the machine (the
    /// last layer, a model of few neurons) still keeps every core busy; the test
    /// polynomials are made once for the batch. Memory: every sample's registers (the
    /// caller bounds the samples). The results are those of [`ServerKey::evaluate_outputs`]
    /// on each sample.
    ///
    /// # Errors
    /// As [`ServerKey::evaluate_outputs`].
    pub fn evaluate_batch(
        &self,
        prog: &Program,
        samples: &[Vec<SeededLweCiphertextListOwned<u64>>],
        progress: Option<&indicatif::ProgressBar>,
        cancel: Option<&std::sync::atomic::AtomicBool>,
    ) -> Result<Vec<Vec<LweCiphertextListOwned<u64>>>> {
        let luts = self.luts(prog);
        let mut regs = samples
            .iter()
            .map(|s| self.load_inputs(prog, s))
            .collect::<Result<Vec<_>>>()?;
        for stage in &prog.stages {
            if cancel.is_some_and(|c| c.load(std::sync::atomic::Ordering::Relaxed)) {
                return Err(RuntimeError::Cancelled);
            }
            let results: Vec<(usize, u32, LweCiphertextOwned<u64>)> = regs
                .par_iter()
                .enumerate()
                .flat_map(|(i, r)| {
                    let luts = &luts;
                    stage.par_iter().map(move |ins| {
                        self.exec(prog, luts, r, ins, progress)
                            .map(|(dst, ct)| (i, dst, ct))
                    })
                })
                .collect::<Result<_>>()?;
            for (i, dst, ct) in results {
                regs[i][dst as usize] = Some(ct);
            }
        }
        Ok(regs.iter().map(|r| self.outputs_of(prog, r)).collect())
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
        self.evaluate_watched(prog, inputs, progress, None)
    }

    /// [`ServerKey::evaluate_registers`], stopping before the next stage once `cancel` is
    /// set.
    ///
    /// # Errors
    /// As [`ServerKey::evaluate`]; [`RuntimeError::Cancelled`].
    pub fn evaluate_watched(
        &self,
        prog: &Program,
        inputs: &[SeededLweCiphertextListOwned<u64>],
        progress: Option<&indicatif::ProgressBar>,
        cancel: Option<&std::sync::atomic::AtomicBool>,
    ) -> Result<Vec<Option<LweCiphertextOwned<u64>>>> {
        let luts = self.luts(prog);
        let mut regs = self.load_inputs(prog, inputs)?;
        for stage in &prog.stages {
            if cancel.is_some_and(|c| c.load(std::sync::atomic::Ordering::Relaxed)) {
                return Err(RuntimeError::Cancelled);
            }
            let results: Vec<(u32, LweCiphertextOwned<u64>)> = stage
                .par_iter()
                .map(|ins| self.exec(prog, &luts, &regs, ins, progress))
                .collect::<Result<_>>()?;
            for (dst, ct) in results {
                regs[dst as usize] = Some(ct);
            }
        }
        Ok(regs)
    }

    /// The registers with the inputs decompressed into theirs.
    fn load_inputs(
        &self,
        prog: &Program,
        inputs: &[SeededLweCiphertextListOwned<u64>],
    ) -> Result<Vec<Option<LweCiphertextOwned<u64>>>> {
        if inputs.len() != prog.inputs.len() {
            return Err(RuntimeError::mismatch(format!(
                "the program takes {} input(s), got {}",
                prog.inputs.len(),
                inputs.len()
            )));
        }
        let big_size = self.big_size();
        let mut regs: Vec<Option<LweCiphertextOwned<u64>>> = vec![None; prog.n_regs as usize];
        for (i, (rs, cts)) in prog.inputs.iter().zip(inputs).enumerate() {
            if rs.len() != cts.lwe_ciphertext_count().0 || cts.lwe_size() != big_size {
                return Err(RuntimeError::mismatch(format!(
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
        Ok(regs)
    }

    /// The test polynomials a program's lookups read under these keys.
    pub(crate) fn luts(&self, prog: &Program) -> Luts {
        let b = self.info.msg_bits;
        let d = delta(b);
        let p = prog.tlu_bits;
        // a split table's two halves, in half units: (t[2m] + t[2m+1])/2, (t[2m] − t[2m+1])/2
        // (the second half only for a split table)
        let tables = prog
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
        let light = if prog.light {
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
        let signs = (0..=b + 1)
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
        Luts {
            tables,
            light,
            signs,
        }
    }

    /// Runs one instruction on the registers written so far.
    fn exec(
        &self,
        prog: &Program,
        luts: &Luts,
        regs: &[Option<LweCiphertextOwned<u64>>],
        ins: &Instr,
        progress: Option<&indicatif::ProgressBar>,
    ) -> Result<(u32, LweCiphertextOwned<u64>)> {
        let get = |r: u32| {
            regs[r as usize]
                .as_ref()
                .ok_or_else(|| RuntimeError::Internal {
                    what: format!("register {r} read before written"),
                })
        };
        let d = delta(self.info.msg_bits);
        match ins {
            Instr::Lin { dst, terms, c } => {
                let mut out = LweCiphertext::new(0u64, self.big_size(), modulus());
                for &(r, w) in terms {
                    slice_wrapping_add_scalar_mul_assign(out.as_mut(), get(r)?.as_ref(), w as u64);
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
                let out = self.lookup(prog, luts, x, *drop, *table);
                if let Some(pb) = progress {
                    pb.inc(1);
                }
                Ok((*dst, out))
            }
        }
    }

    /// One table lookup of `x` (offset applied): exact rounding extracts the `drop` low
    /// bits (and a split table's index bit) and subtracts them; the table then reads the
    /// index's top bits. Exact rounding works on `x·2^o`, `o = B−drop−p`, the scale at which
    /// the table reads: each bit's bootstrap outputs it at that scale, so that its noise
    /// is not multiplied up by the later reads (the lowering's noise checks count it so).
    fn lookup(
        &self,
        prog: &Program,
        luts: &Luts,
        mut x: LweCiphertextOwned<u64>,
        drop: u32,
        table: u32,
    ) -> LweCiphertextOwned<u64> {
        let b = self.info.msg_bits;
        let d = delta(b);
        let p = prog.tlu_bits;
        // bits left below the table index when the table reads
        let mut below = drop;
        // a split table (one with a second half) reads its index bit (bit `drop`) too, and
        // keeps it
        let (lut, lut_signed) = &luts.tables[table as usize];
        let mut low = None;
        // exact rounding works at the table's read scale from the start: x·2^o
        let exact = prog.rounding == Rounding::Exact;
        let o = if exact { b - drop - p } else { 0 };
        if exact {
            // exact removal of the low `drop` bits (and the index's low bit for a split
            // table), lowest first, on x·2^o: bit j is read at 2^(B−j−o) and output at
            // its weight 2^(j+o)
            lwe_ciphertext_cleartext_mul_assign(&mut x, Cleartext(1u64 << o));
            let extract = drop + u32::from(lut_signed.is_some());
            for j in 0..extract {
                let mut t = x.clone();
                lwe_ciphertext_cleartext_mul_assign(&mut t, Cleartext(1u64 << (b - j - o)));
                lwe_ciphertext_plaintext_add_assign(&mut t, Plaintext(1u64 << 62));
                let w = j + o;
                let c = if w == 0 { d / 2 } else { d << (w - 1) };
                let mut bit = if j == drop {
                    // a split table's index bit: also at the top
                    let [bit, mut top] = self.bootstrap_bit_twice(
                        &t,
                        [&luts.signs[w as usize], &luts.signs[b as usize + 1]],
                    );
                    lwe_ciphertext_plaintext_add_assign(&mut top, Plaintext(1 << 62));
                    low = Some(top);
                    bit
                } else {
                    self.bootstrap_bit(&t, &luts.signs[w as usize])
                };
                lwe_ciphertext_plaintext_add_assign(&mut bit, Plaintext(c));
                lwe_ciphertext_sub_assign(&mut x, &bit);
            }
            below = 0;
        }
        // the index's top bit under the padding bit, then half a slot up so that the value
        // sits mid-way in it (a split table's slots are twice as wide: it reads p−1 bits)
        let read = p - u32::from(low.is_some());
        lwe_ciphertext_cleartext_mul_assign(&mut x, Cleartext(1u64 << (b - drop - p - o)));
        lwe_ciphertext_plaintext_add_assign(&mut x, Plaintext(1u64 << (62 - below - read)));
        match (low, lut_signed) {
            (Some(top), Some(lut_signed)) => {
                // the low bit at the top: the second half's sign
                let mut xs = top;
                lwe_ciphertext_add_assign(&mut xs, &x);
                self.bootstrap_sum(&x, lut, &xs, lut_signed)
            }
            // a light table: on the second partition
            _ if prog.light_lookup(drop) => self.bootstrap_bit(&x, &luts.light[table as usize]),
            _ => self.bootstrap(&x, lut),
        }
    }
}

/// A program's test polynomials under one server key: each table (and a split table's
/// second half), each table on the second partition (light tables), and the sign tables of
/// bit extraction.
pub(crate) struct Luts {
    tables: Vec<(GlweCiphertextOwned<u64>, Option<GlweCiphertextOwned<u64>>)>,
    light: Vec<GlweCiphertextOwned<u64>>,
    signs: Vec<GlweCiphertextOwned<u64>>,
}
