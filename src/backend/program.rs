//! The flat register program the server runs ([`Program`]), and its clear interpreter
//! ([`Program::eval_clear`]): exactly what the encrypted run computes, with the simulation
//! of its noise for `--mode sim`.

use super::error::BackendError;
use super::params::Constraint;
use super::Rounding;
use fhec_ir::NodeIndex;
use serde::{Deserialize, Serialize};

/// A value in the program: a ciphertext register or a clear constant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operand {
    Reg(u32),
    Const(i64),
}

/// One instruction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Instr {
    /// `dst = Σ w·src + c` (leveled).
    Lin {
        dst: u32,
        terms: Vec<(u32, i64)>,
        c: i64,
    },
    /// `dst = tables[table][(src + offset) >> drop]`, the low `drop` bits removed exactly.
    Tlu {
        dst: u32,
        src: u32,
        offset: i64,
        drop: u32,
        table: u32,
    },
}

/// An integer tensor the client decrypts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProgramOutput {
    /// The node of the compiled model's program graph it stands for.
    pub node: NodeIndex,
    pub shape: Vec<usize>,
    pub elems: Vec<Operand>,
    /// Lower bound of each element (decoding window).
    pub lo: Vec<i64>,
    /// Approximate rounding: decryption may be off by up to `2^tolerance` units (the
    /// precision beyond the tables' `p` bits that approximate rounding gives up anyway);
    /// 0 = exact.
    pub tolerance: u32,
    /// A calibrated window (`Op::Wrap`): the decrypted value is taken modulo `2^bits` into
    /// `[lo, lo + 2^bits)`, as the integer program says.
    pub wrap: Option<u32>,
}

impl ProgramOutput {
    /// Elements held in registers: the ciphertexts the client decrypts (the others are
    /// constants).
    pub fn ciphertexts(&self) -> usize {
        self.elems
            .iter()
            .filter(|e| matches!(e, Operand::Reg(_)))
            .count()
    }

    /// A decrypted (or clear-run) register value as the integer program reads it.
    pub fn read(&self, e: usize, v: i64) -> i64 {
        match self.wrap {
            Some(bits) => fhec_ir::wrap(v, self.lo[e], bits),
            None => v,
        }
    }
}

/// The flat program the server runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Program {
    pub n_regs: u32,
    /// Registers of each graph input, row-major.
    pub inputs: Vec<Vec<u32>>,
    /// Groups of independent instructions, in order.
    pub stages: Vec<Vec<Instr>>,
    /// Table contents, `2^tlu_bits` values each.
    pub tables: Vec<Vec<i64>>,
    pub outputs: Vec<ProgramOutput>,
    /// Table precision `p` (bits of a table index).
    pub tlu_bits: u32,
    /// Message bits `B` of the encoding.
    pub msg_bits: u32,
    /// Bootstraps per sample: tables plus bit extractions.
    pub pbs_count: usize,
    pub tlu_count: usize,
    /// The noise checks the parameters must pass.
    pub constraints: Vec<Constraint>,
    pub rounding: Rounding,
    /// Exact rounding with split tables: a lookup also extracts its index's low bit `b`
    /// (bit `drop`; one keyswitch, two blind rotations: `b` at its weight, subtracted, and
    /// `b` at the top, `b/2`, with no noise amplified) and runs as two bootstraps of `p−1`
    /// bits reading the rest `m`: one of `(t[2m] + t[2m+1])/2`, one of
    /// `(t[2m] − t[2m+1])/2` with `b/2` added to its input, where the bootstrap's negacyclic
    /// sign turns it into `(−1)^b`; their sum is `t[2m+b]`, exactly (tables in half units).
    /// Reading `p−1` bits lets the table set run on a polynomial a quarter the size (a 6-bit
    /// read needs N = 8192, a 5-bit one 2048), for one more extraction and a second, much
    /// cheaper, table bootstrap. Beyond the table, both halves wrap together, so the result
    /// wraps as one `p`-bit read would.
    pub split: bool,
    /// Approximate rounding with light tables: a lookup that drops bits runs on the second
    /// partition (keyswitch to its small key, blind rotation, output under the registers'
    /// key, as exact rounding's bit extractions do), and only the lookups that read a value
    /// unrounded stay on the main set. An unrounded read sits `2^(B−p)` below the top of the
    /// message space, so its noise counts `4^(B−p)` times: a few of them (MaxPool's
    /// comparisons, LayerNorm's requantizations) would otherwise set the price of every
    /// bootstrap.
    #[serde(default)]
    pub light: bool,
}

/// Whether a lookup that drops `drop` bits runs on the second partition in a program with
/// light tables or without ([`Program::light`]; only approximate rounding has them).
pub(crate) fn light_lookup(light: bool, drop: u32) -> bool {
    light && drop > 0
}

impl Program {
    /// Whether a lookup that drops `drop` bits runs on the second partition.
    pub fn light_lookup(&self, drop: u32) -> bool {
        light_lookup(self.light, drop)
    }

    /// Bits a table bootstrap reads: `p`, or `p − 1` with split tables.
    pub fn read_bits(&self) -> u32 {
        self.tlu_bits - u32::from(self.split)
    }

    /// Bootstraps of one table lookup that drops `drop` bits.
    pub fn lookup_bootstraps(&self, drop: u32) -> u32 {
        match self.rounding {
            Rounding::Exact if self.split => 4 + drop,
            Rounding::Exact => 1 + drop,
            Rounding::Approximate => 1,
        }
    }
}

/// What the clear simulation of an encrypted run draws (`--mode sim`): approximate
/// rounding's noise, the decryption noise, and bootstrap failures, with counts of what it
/// injected.
pub struct SimNoise<'a> {
    /// Standard normal samples.
    pub normal: &'a mut dyn FnMut() -> f64,
    /// Uniform samples in `[0, 1)`.
    pub uniform: &'a mut dyn FnMut() -> f64,
    /// Approximate rounding's noise where the table reads, in table boxes (standard deviation).
    pub approx_sigma: f64,
    /// Decryption noise in output units (standard deviation).
    pub decrypt_sigma: f64,
    /// Probability that one bootstrap fails. A failure is modelled as the table read landing
    /// in a neighbouring box (one index up or down, equally likely): the noise has crossed
    /// the margin, and by little, since the tail of a Gaussian falls fast.
    pub p_fail: f64,
    /// Bootstraps simulated so far.
    pub bootstraps: u64,
    /// Failures injected so far (table lookups moved one box).
    pub failures: u64,
}

impl SimNoise<'_> {
    /// Whether one bootstrap of `count` fails; advances the counters.
    fn any_fails(&mut self, count: u32) -> bool {
        self.bootstraps += u64::from(count);
        let mut failed = false;
        if self.p_fail > 0.0 {
            for _ in 0..count {
                if (self.uniform)() < self.p_fail {
                    failed = true;
                }
            }
        }
        if failed {
            self.failures += 1;
        }
        failed
    }
}

/// What a bootstrap reads at table index `idx`: the table inside it, beyond it the
/// negacyclic wrap (each wrap around the `2^p` boxes negates).
pub(super) fn negacyclic_read(table: &[i64], idx: i128) -> i64 {
    let boxes = table.len().max(1) as i128;
    let j = idx.rem_euclid(boxes);
    let v = table.get(j as usize).copied().unwrap_or(0);
    if idx.div_euclid(boxes).rem_euclid(2) == 0 {
        v
    } else {
        v.saturating_neg()
    }
}

impl Program {
    /// Runs the program on clear integers (one vector per graph input, row-major) exactly as
    /// the encrypted run computes it; returns one integer vector per output. Without `sim` it
    /// equals `eval_int` (a test checks it). With `sim`, approximate rounding is simulated
    /// (the table reads `⌊u/2^k + (½ + e)/2^k… ⌋` where the value sits in its box, beyond the
    /// table's range wrapping negacyclically as the bootstrap does), outputs that tolerate an
    /// approximate decryption get the decryption noise, and each bootstrap fails with
    /// probability `sim.p_fail` (a table lookup's `1 + drop` bootstraps in exact mode).
    ///
    /// # Errors
    /// Inputs that do not match the program.
    pub fn eval_clear(
        &self,
        inputs: &[Vec<i64>],
        mut sim: Option<&mut SimNoise<'_>>,
    ) -> Result<Vec<Vec<i64>>, BackendError> {
        if inputs.len() != self.inputs.len()
            || inputs
                .iter()
                .zip(&self.inputs)
                .any(|(a, b)| a.len() != b.len())
        {
            return Err(BackendError::Inputs {
                reason: format!(
                    "{} input(s) of {:?} values, the program takes {:?}",
                    inputs.len(),
                    inputs.iter().map(Vec::len).collect::<Vec<_>>(),
                    self.inputs.iter().map(Vec::len).collect::<Vec<_>>()
                ),
            });
        }
        let mut regs = vec![0i64; self.n_regs as usize];
        for (rs, xs) in self.inputs.iter().zip(inputs) {
            for (&r, &x) in rs.iter().zip(xs) {
                regs[r as usize] = x;
            }
        }
        for stage in &self.stages {
            for ins in stage {
                match ins {
                    Instr::Lin { dst, terms, c } => {
                        regs[*dst as usize] = terms.iter().fold(*c, |a, &(r, w)| {
                            a.wrapping_add(regs[r as usize].wrapping_mul(w))
                        });
                    }
                    Instr::Tlu {
                        dst,
                        src,
                        offset,
                        drop,
                        table,
                    } => {
                        let u = regs[*src as usize] + offset;
                        let mut idx = u >> drop;
                        if let Some(sim) = sim.as_deref_mut() {
                            if self.rounding == Rounding::Approximate && *drop > 0 {
                                let unit = 1.0 / (1i64 << drop) as f64;
                                let pos = (u & ((1i64 << drop) - 1)) as f64 * unit + 0.5 * unit;
                                idx += (pos + sim.approx_sigma * (sim.normal)()).floor() as i64;
                            }
                            if sim.any_fails(self.lookup_bootstraps(*drop)) {
                                idx += if (sim.uniform)() < 0.5 { -1 } else { 1 };
                            }
                        }
                        regs[*dst as usize] =
                            negacyclic_read(&self.tables[*table as usize], i128::from(idx));
                    }
                }
            }
        }
        Ok(self
            .outputs
            .iter()
            .map(|o| {
                o.elems
                    .iter()
                    .enumerate()
                    .map(|(i, e)| match (e, sim.as_deref_mut()) {
                        (Operand::Reg(r), Some(sim)) if o.tolerance > 0 => o.read(
                            i,
                            regs[*r as usize] + (sim.decrypt_sigma * (sim.normal)()).round() as i64,
                        ),
                        (Operand::Reg(r), _) => o.read(i, regs[*r as usize]),
                        (Operand::Const(v), _) => o.read(i, *v),
                    })
                    .collect()
            })
            .collect())
    }
}
