//! Backend: the integer IR becomes a flat [`Program`] over ciphertext registers, and TFHE
//! parameters are chosen for it ([`params`]).
//!
//! One LWE ciphertext per integer, as Concrete does. Leveled work is a `Lin` (a weighted sum
//! of registers plus a constant: dense and convolution accumulators, encrypted ± encrypted);
//! reshapes, transposes, slices, gathers, pads and concats are register renaming, free at run
//! time. Each table lookup is a `Tlu`: with exact rounding of `k` low bits it costs `k` 1-bit
//! sign bootstraps (bit extraction: the bit is multiplied up to the most significant position
//! and read by a constant table) plus one table bootstrap, and equals `eval_int` exactly up to
//! the bootstraps' error probability. The extraction works on the register times
//! `2^(B−k−p)` (the table's read scale) and outputs each bit at that scale, so that a table
//! input narrower than `B` bits keeps its bits' noise at its own width. With split tables
//! ([`Program::split`]) the index's low bit is extracted too and the table runs as two
//! bootstraps of one bit less, which the tables' parameter set can read on a quarter of the
//! polynomial.
//!
//! With [`Rounding::Approximate`] the `k` low bits are not extracted: the table input is
//! scaled so that its `p` high bits select the table box and the `k` low bits only move the
//! value inside its box; the bootstrap's modulus switch discards them. One bootstrap per
//! table, and the noise budget is that of the `p`-bit table instead of the `(p+k)`-bit
//! accumulator; the price is that a value near a box edge may land in the neighbouring box
//! (the table index is then off by one), at a rate the parameter search predicts.
//!
//! Encoding: every integer `x` is `x·Δ`, `Δ = 2^64 / 2^(B+1)`, with one circuit-wide `B`
//! large enough for every table input's bits (`k + p`) and every decrypted integer.

pub mod error;
pub mod lower;
pub mod params;
pub mod partition;
pub mod plan;
pub mod program;

pub use error::{BackendError, SettingError};
pub use lower::{lower, lower_with, Layout, MAX_TLU_BITS};
use params::Choice;
pub use plan::{ExpectedKeySizes, Plan, PlanInfo};
pub use program::{Instr, Operand, Program, ProgramOutput, SimNoise};
use serde::{Deserialize, Serialize};

type Result<T, E = BackendError> = std::result::Result<T, E>;

/// How table inputs drop their low bits (`--rounding-method`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rounding {
    /// Bit for bit equal to `eval_int`: one sign bootstrap per dropped bit.
    #[default]
    Exact,
    /// The modulus switch absorbs the dropped bits: no extra bootstrap, a table index may be
    /// off by one near a rounding boundary.
    Approximate,
}

impl Rounding {
    pub fn name(self) -> &'static str {
        match self {
            Rounding::Exact => "exact",
            Rounding::Approximate => "approximate",
        }
    }
}

/// Where the TFHE parameters come from (`--params`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamsPolicy {
    /// Searched for this circuit ([`params::search`]).
    #[default]
    Optimized,
    /// The cheapest of tfhe's vetted sets that meets the target ([`params::search_vetted`]).
    Vetted,
}

/// Whether the tables use the second partition (`--split-tables`): exact rounding's tables
/// run split into two bootstraps of `p−1` bits ([`Program::split`]), approximate rounding's
/// rounded tables run on the second partition ([`Program::light`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TableSplit {
    /// Whichever program the parameter search estimates faster.
    #[default]
    Auto,
    /// Always (optimized parameters; exact rounding: tables of 2 bits or more).
    On,
    /// Never.
    Off,
}

/// How the encrypted program is built and parameterized; stored in the compiled model so
/// that every process (keygen, encrypt, serve-run, decrypt) derives the same program.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FheOptions {
    /// Error probability of one bootstrap (default 2^-40, as Concrete ML).
    pub p_error: f64,
    /// Error probability of one whole sample, split evenly over its bootstraps and
    /// decryptions (union bound); replaces `p_error` when set.
    pub global_p_error: Option<f64>,
    pub rounding: Rounding,
    pub params: ParamsPolicy,
    /// Approximate rounding: largest predicted rate of a table index off by one (1 = any).
    pub max_off_by_one: f64,
    pub split_tables: TableSplit,
}

impl Default for FheOptions {
    fn default() -> Self {
        FheOptions {
            p_error: 2f64.powi(-40),
            global_p_error: None,
            rounding: Rounding::Exact,
            params: ParamsPolicy::Optimized,
            max_off_by_one: 1.0,
            split_tables: TableSplit::Auto,
        }
    }
}

impl FheOptions {
    /// Checks that the settings are meaningful (they come from the command line or from a
    /// compiled model's file).
    ///
    /// # Errors
    /// A one-line reason naming the setting's flag.
    pub fn validate(&self) -> std::result::Result<(), SettingError> {
        let prob = |v: f64| v > 0.0 && v < 1.0;
        let bad = |flag: &'static str, reason: String| Err(SettingError { flag, reason });
        if !prob(self.p_error) {
            return bad(
                "--p-error",
                format!("must be a probability in (0, 1), got {}", self.p_error),
            );
        }
        if let Some(g) = self.global_p_error.filter(|&g| !prob(g)) {
            return bad(
                "--global-p-error",
                format!("must be a probability in (0, 1), got {g}"),
            );
        }
        if self.split_tables == TableSplit::On && self.params != ParamsPolicy::Optimized {
            return bad(
                "--split-tables",
                "on needs optimized parameters (a vetted set is one set); drop it or use --params optimized".into(),
            );
        }
        if !(self.max_off_by_one > 0.0 && self.max_off_by_one <= 1.0) {
            return bad(
                "--max-off-by-one",
                format!("must be a rate in (0, 1], got {}", self.max_off_by_one),
            );
        }
        Ok(())
    }

    /// The per-bootstrap target for a program.
    pub fn target(&self, p: &Program) -> f64 {
        match self.global_p_error {
            Some(g) => {
                let reads: usize = p.constraints.iter().map(|c| c.count).sum();
                g / reads.max(1) as f64
            }
            None => self.p_error,
        }
    }
}

/// Chooses parameters for a program.
///
/// # Errors
/// No secure parameters meet the target; the error names the hardest layer.
pub fn choose_params(p: &Program, opts: &FheOptions) -> Result<Choice> {
    let target = opts.target(p);
    if !(target > 0.0 && target < 1.0) {
        return Err(SettingError {
            flag: "--global-p-error",
            reason: format!("leaves each bootstrap a probability of {target:e}, outside (0, 1)"),
        }
        .into());
    }
    let target = params::Target {
        p_error: target,
        off_by_one: opts.max_off_by_one,
    };
    match opts.params {
        ParamsPolicy::Optimized => {
            partition::search_circuit(&p.constraints, p.read_bits(), target, 2.5e9)
        }
        ParamsPolicy::Vetted => params::search_vetted(&p.constraints, p.read_bits(), target),
    }
    .map(|c| c.for_program(p))
    .map_err(BackendError::from)
}

/// Checks parameters stored with a compiled model against its program instead of searching
/// again: each set on tfhe's 132-bit curve for its dimensions and above the search's floors,
/// every noise constraint meeting the target ([`partition::verify`]).
///
/// # Errors
/// Parameters that are not secure or do not meet the target, naming why.
pub fn verify_params(p: &Program, opts: &FheOptions, stored: &Choice) -> Result<Choice> {
    let target = params::Target {
        p_error: opts.target(p),
        off_by_one: opts.max_off_by_one,
    };
    partition::verify(stored, &p.constraints, p.read_bits(), target).map(|c| c.for_program(p))
}
