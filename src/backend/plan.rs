//! A compiled program's encrypted form: the register [`Program`], its TFHE parameters
//! ([`Choice`]) and the fingerprint that keys and ciphertexts are bound to; and
//! [`PlanInfo`], what the fronts show of it.

use super::error::BackendError;
use super::params::{partition_counts, Choice, ExtractParams, FheParams};
use super::program::ProgramOutput;
use super::{
    choose_params, lower, lower_with, verify_params, FheOptions, Layout, ParamsPolicy, Program,
    TableSplit,
};
use fhec_ir::{Graph, QuantParams};
use serde::Serialize;

type Result<T, E = BackendError> = std::result::Result<T, E>;

/// The encrypted form of a compiled model: its register program, its parameters, and the
/// fingerprint keys and ciphertexts are bound to.
#[derive(Clone, Debug)]
pub struct Plan {
    pub program: Program,
    pub choice: Choice,
    pub model_id: u64,
}

impl Plan {
    /// Lowers `g` and searches its parameters. With optimized parameters the program's
    /// second layout is tried too — split tables for exact rounding ([`Program::split`]),
    /// light tables for approximate rounding ([`Program::light`]) — and whichever is
    /// estimated faster is kept (`--split-tables auto`), or the one asked for.
    ///
    /// # Errors
    /// A node that cannot run encrypted; no parameters meet the target (names the read).
    pub fn search(g: &Graph, input_quant: &[QuantParams], opts: &FheOptions) -> Result<Self> {
        let second = || lower_with(g, input_quant, opts.rounding, Layout::Second);
        let optimized = opts.params == ParamsPolicy::Optimized;
        let (program, choice) = if optimized && opts.split_tables == TableSplit::On {
            let alt = second()?;
            let choice = choose_params(&alt, opts)?;
            (alt, choice)
        } else {
            let program = lower(g, input_quant, opts.rounding)?;
            let whole = choose_params(&program, opts);
            if !optimized || opts.split_tables == TableSplit::Off {
                (program, whole?)
            } else {
                let alt = second()?;
                if !alt.split && !alt.light {
                    (program, whole?)
                } else {
                    match (whole, choose_params(&alt, opts)) {
                        (Ok(w), Ok(a)) if w.est_ms <= a.est_ms => (program, w),
                        (_, Ok(a)) => (alt, a),
                        (whole, Err(_)) => (program, whole?),
                    }
                }
            }
        };
        Ok(Self::new(program, choice))
    }

    /// The plan of a compiled model whose parameters were chosen when it was compiled:
    /// lowered again (deterministic) and the stored parameters checked, not searched again.
    ///
    /// # Errors
    /// As [`Plan::search`]; stored parameters that are not secure or miss the target.
    pub fn stored(
        g: &Graph,
        input_quant: &[QuantParams],
        opts: &FheOptions,
        stored: &Choice,
    ) -> Result<Self> {
        let layout = Layout::of_stored(stored.split_tables, stored.light_tables);
        let program = lower_with(g, input_quant, opts.rounding, layout)?;
        let choice = verify_params(&program, opts, stored)?;
        Ok(Self::new(program, choice))
    }

    fn new(program: Program, choice: Choice) -> Self {
        let model_id = fingerprint(&program, &choice);
        Plan {
            program,
            choice,
            model_id,
        }
    }

    /// What the fronts show of this plan.
    pub fn info(&self) -> PlanInfo {
        let prog = &self.program;
        let c = &self.choice;
        let (main, second) = partition_counts(&prog.constraints);
        let table_pbs = prog.tlu_count * if prog.split { 2 } else { 1 };
        let keys = ExpectedKeySizes::of(&c.params, c.extract.as_ref());
        PlanInfo {
            table_lookups: prog.tlu_count,
            bootstraps: prog.pbs_count,
            table_bootstraps: table_pbs,
            extractions: prog.pbs_count.saturating_sub(table_pbs),
            second_partition_bootstraps: second,
            main_partition_bootstraps: main,
            table_bits: prog.tlu_bits,
            read_bits: prog.read_bits(),
            message_bits: prog.msg_bits,
            rounding: prog.rounding.name(),
            split_tables: prog.split,
            light_tables: prog.light,
            source: c.source.clone(),
            params: c.params.to_string(),
            second_params: c.extract.as_ref().map(ToString::to_string),
            polynomial_size: c.params.polynomial_size,
            security_bits: c.security_bits,
            p_error: c.p_error,
            global_p_error: c.global_p_error,
            off_by_one: c.off_by_one,
            est_ms: c.est_ms,
            est_ms_per_table: c
                .extract
                .as_ref()
                .map_or_else(|| c.params.est_ms_per_pbs(), |x| x.est_table_ms(&c.params)),
            est_ms_per_second: c.extract.as_ref().map(ExtractParams::est_ms),
            key_bytes: keys,
            input_ciphertexts: prog.inputs.iter().map(Vec::len).sum(),
            output_ciphertexts: prog.outputs.iter().map(ProgramOutput::ciphertexts).sum(),
            ciphertext_bytes: 8 * (c.home().big_dimension() as u64 + 1),
            model_id: format!("{:016x}", self.model_id),
        }
    }
}

/// Identity of a program under parameters: payload length and CRC-32 of both.
fn fingerprint(prog: &Program, choice: &Choice) -> u64 {
    let mut h = crc32fast::Hasher::new();
    // the key layout: registers under the extraction set's key when there is one
    h.update(b"fhec registers home v2");
    let mut len = 0u64;
    for bytes in [
        bincode::serialize(prog),
        bincode::serialize(&choice.params),
        bincode::serialize(&choice.extract),
    ]
    .into_iter()
    .flatten()
    {
        len += bytes.len() as u64;
        h.update(&bytes);
    }
    (len << 32) | u64::from(h.finalize())
}

/// Server key sizes per partition, bytes, as the parameters imply them (expanded: 64-bit
/// words, bootstrapping keys in the standard domain). The seeded keys a client uploads are
/// about half.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ExpectedKeySizes {
    /// Tables: bootstrapping key, keyswitch in, keyswitch back (0 with one set).
    pub main_bsk: u64,
    pub main_ksk: u64,
    pub main_fksk: u64,
    /// The second partition: bootstrapping key and keyswitch in.
    pub second_bsk: u64,
    pub second_ksk: u64,
    /// The most bytes the evaluation keys can take as they travel (seeded: bootstrapping keys
    /// keep one polynomial of each GLWE ciphertext, keyswitch keys the body of each LWE
    /// ciphertext; plus [`ExpectedKeySizes::FRAMING`] for the headers): what a server accepts
    /// for an upload.
    pub seeded_max: u64,
}

impl ExpectedKeySizes {
    /// Bytes of headers, parameters and seeds a seeded key file holds beyond its
    /// polynomials (measured: under 2 KiB; `tests/it` checks the bound on real keys).
    pub const FRAMING: u64 = 64 * 1024;

    fn of(main: &FheParams, x: Option<&ExtractParams>) -> Self {
        let bsk = |s: &FheParams| {
            let g = (s.glwe_dimension + 1) as u64;
            8 * s.lwe_dimension as u64 * s.pbs_level as u64 * g * g * s.polynomial_size as u64
        };
        let ksk =
            |from: usize, to: usize, level: usize| 8 * from as u64 * level as u64 * (to as u64 + 1);
        // seeded: one of the k+1 polynomials per GLWE row, the body of each LWE row
        let seeded_bsk = |s: &FheParams| bsk(s) / (s.glwe_dimension as u64 + 1);
        let seeded_ksk = |from: usize, level: usize| 8 * from as u64 * level as u64;
        // the registers' key: the second set's big key when there is one
        let home = x.map_or(main, |x| &x.set);
        let seeded = seeded_bsk(main)
            + seeded_ksk(home.big_dimension(), main.ks_level)
            + x.map_or(0, |x| {
                seeded_ksk(main.big_dimension(), x.fks_level)
                    + seeded_bsk(&x.set)
                    + seeded_ksk(x.set.big_dimension(), x.set.ks_level)
            });
        Self {
            seeded_max: seeded + Self::FRAMING,
            main_bsk: bsk(main),
            main_ksk: ksk(home.big_dimension(), main.lwe_dimension, main.ks_level),
            main_fksk: x.map_or(0, |x| {
                ksk(main.big_dimension(), x.set.big_dimension(), x.fks_level)
            }),
            second_bsk: x.map_or(0, |x| bsk(&x.set)),
            second_ksk: x.map_or(0, |x| {
                ksk(x.set.big_dimension(), x.set.lwe_dimension, x.set.ks_level)
            }),
        }
    }

    pub fn total(&self) -> u64 {
        self.main_bsk + self.main_ksk + self.main_fksk + self.second_bsk + self.second_ksk
    }
}

/// What a front shows of a plan (the CLI's plan lines, the Python `Model.parameters`, the
/// server's model list), as plain data.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlanInfo {
    pub table_lookups: usize,
    /// Programmable bootstraps per sample (tables and bit extractions).
    pub bootstraps: usize,
    pub table_bootstraps: usize,
    pub extractions: usize,
    pub main_partition_bootstraps: usize,
    pub second_partition_bootstraps: usize,
    pub table_bits: u32,
    /// Bits each table bootstrap reads (one less than `table_bits` with split tables).
    pub read_bits: u32,
    pub message_bits: u32,
    pub rounding: &'static str,
    pub split_tables: bool,
    pub light_tables: bool,
    /// `optimizer`, or the name of tfhe's vetted set.
    pub source: String,
    /// The main (table) set, `n=… k=… N=… pbs L×B ks L×B`.
    pub params: String,
    /// The second partition's set, if any.
    pub second_params: Option<String>,
    pub polynomial_size: usize,
    pub security_bits: u32,
    pub p_error: f64,
    pub global_p_error: f64,
    pub off_by_one: f64,
    /// The optimizer's estimate of one sample on one thread, ms.
    pub est_ms: f64,
    pub est_ms_per_table: f64,
    pub est_ms_per_second: Option<f64>,
    pub key_bytes: ExpectedKeySizes,
    /// Ciphertexts per sample: encrypted inputs (one per input element) and results.
    pub input_ciphertexts: usize,
    pub output_ciphertexts: usize,
    /// Bytes of one result ciphertext (an LWE ciphertext under the registers' key). Inputs
    /// travel seeded: 8 bytes each (the body) plus a seed per input tensor.
    pub ciphertext_bytes: u64,
    /// The fingerprint keys and ciphertexts carry (hex).
    pub model_id: String,
}

impl PlanInfo {
    /// The lines `fhec compile`, `run --mode fhe`, `keygen` and `bench` print.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "encrypted program: {} table lookups{}{} = {} bootstraps per sample; tables of {} bits{}, {} message bits, {} rounding\n",
            self.table_lookups,
            if self.split_tables {
                format!(" (split: {} bootstraps)", self.table_bootstraps)
            } else if self.light_tables && self.second_params.is_some() {
                format!(" ({} rounded, on the second partition)", self.second_partition_bootstraps)
            } else {
                String::new()
            },
            if self.extractions > 0 {
                format!(" + {} bit extractions", self.extractions)
            } else {
                String::new()
            },
            self.bootstraps,
            self.table_bits,
            if self.split_tables {
                format!(" read as two of {}", self.read_bits)
            } else {
                String::new()
            },
            self.message_bits,
            self.rounding
        );
        let (main_what, second_what) = if self.light_tables {
            ("unrounded tables", "rounded tables")
        } else {
            ("tables", "bit extractions")
        };
        let parts = match &self.second_params {
            Some(x) => format!(
                "{main_what} {}; {second_what} {x} (two partitions, keyswitched)",
                self.params
            ),
            None => format!("{} (one set for every bootstrap)", self.params),
        };
        s += &format!(
            "parameters ({}): {parts}; security {} bits (tfhe's lattice-estimator curves); p_error {:.2e} per bootstrap, {:.2e} per sample{}\n",
            self.source,
            self.security_bits,
            self.p_error,
            self.global_p_error,
            if self.off_by_one > 0.0 {
                format!(
                    "; off-by-one table index rate {:.1e} (approximate rounding)",
                    self.off_by_one
                )
            } else {
                String::new()
            }
        );
        s += &match self.est_ms_per_second {
            Some(x) => format!(
                "estimated on one thread: {:.1} ms per bootstrap of the {main_what}, {:.2} ms per bootstrap of the {second_what}, {:.2} s per sample\n",
                self.est_ms_per_table,
                x,
                self.est_ms / 1e3
            ),
            None => format!(
                "estimated: {:.1} ms per bootstrap on one thread, {:.2} s per sample on one thread\n",
                self.est_ms_per_table,
                self.est_ms / 1e3
            ),
        };
        s
    }
}
