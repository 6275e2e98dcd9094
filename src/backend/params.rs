//! TFHE parameters chosen for the circuit.
//!
//! # Model
//! Variances are in torus units (a fraction of the ciphertext modulus q = 2^64, squared).
//! Every ciphertext is one LWE encryption of one integer `x` with the encoding `x·Δ`,
//! `Δ = 2^-(B+1)` (B message bits and one padding bit, for the whole circuit). A register's
//! noise is `α·V_pbs + β·V_fresh`: `V_pbs` is a bootstrap's output variance and `V_fresh` a
//! fresh encryption's (inputs are encrypted under the big key, dimension k·N); a leveled
//! `Σ wᵢ·xᵢ` gives `α = Σ wᵢ²αᵢ`, `β = Σ wᵢ²βᵢ` (the 2-norm, not tfhe's L1 `max_noise_level`).
//! Before a bootstrap the register is multiplied by a power of two `M` (to bring the bits read
//! to the top), key-switched (`V_ks`) and modulus-switched to 2N (`V_ms`):
//! `V = M²·(α·V_pbs + β·V_fresh) + V_ks + V_ms`, and the bootstrap is right unless the noise
//! passes its margin `m` (half a box): `p_err = erfc(m / √(2V))` for Gaussian noise.
//!
//! # Formulas
//! `V_pbs`, `V_ks`, `V_ms` are tfhe 1.8's own (`noise_formulas::{lwe_programmable_bootstrap,
//! lwe_keyswitch, centered_mean_shifted_modulus_switch}`, FFT with a 53-bit mantissa; the
//! runtime uses the centered modulus switch, as tfhe's vetted sets do). Keys are made with the
//! smallest Gaussian noise that tfhe's curves (`noise_formulas::secure_noise`,
//! `minimal_{lwe,glwe}_variance_for_132_bits_security_gaussian`) give 132 bits of security at
//! that dimension: security ≥ 128 bits by construction, for every candidate.
//!
//! # Reads and margins
//! - exact table (`p` bits): the value sits mid-box, margin half a box, `2^-(p+2)`;
//! - bit extraction: the bit is multiplied up to the top, margin a quarter torus;
//! - approximate table: the `k` dropped bits place the value anywhere in its box; an error
//!   (counted in p_error) is a landing beyond the neighbouring boxes, margin one box
//!   `2^-(p+1)`; a landing in a neighbouring box is the expected off-by-one, at the rate
//!   `2∫₀¹ Q(f/s) df ≈ s·√(2/π)` for a value uniform in its box and noise `s` boxes
//!   ([`FheParams::off_by_one`]; `--max-off-by-one` caps it);
//! - decryption: half a unit exactly, or `2^t` units when approximate rounding lets the
//!   output be off by the precision the tables drop anyway (`t = width − p − 1`).
//!
//! The model is checked against real bootstraps (`tests/it/fhe.rs`): at a predicted table
//! error rate of 1.63 % the observed rate was 1.1 % and 1.8 % in two runs of 1,500 lookups
//! (the test asserts a factor 4); the bootstrap output variance matched `V_pbs` (2^-30.22
//! measured, 2^-30.18 predicted; asserted within a factor 2). Given the vetted sets
//! and their documented 2-norms, it reproduces tfhe's own failure probabilities
//! (2^-128.2, -128.6, -128.1, -128.7 against the documented -128.19, -128.60, -128.12,
//! -128.73).
//!
//! # Search
//! Over polynomial sizes, GLWE dimensions, LWE dimensions and decomposition (base, level) of
//! the bootstrap and the key switch, the cheapest candidate whose every constraint meets the
//! target error probability and whose bootstrapping key fits the memory cap. The cost is an
//! estimate of one thread's time on this machine: per LWE coefficient of the blind rotation,
//! `(k+1)(ℓ_pbs+1)` FFTs of `N·log₂N` and `(k+1)²·ℓ_pbs·N` Fourier multiply-adds, plus one
//! read per keyswitching-key word (`in·ℓ_ks·(out+1)`), with weights fitted to 13 measured
//! blind rotations (k from 1 to 8: a k=4, N=512 set is a third cheaper than the k=1,
//! N=2048 set of the same size, which an `(k+1)²·N·log N` model got backwards).
//! `--global-p-error` splits a per-sample target evenly over the sample's bootstraps and
//! decryptions (union bound).
//!
//! # Vetted sets
//! `--params vetted` takes the cheapest of tfhe 1.8's Gaussian KS-PBS sets
//! (`V1_8_PARAM_MESSAGE_{1..4}_CARRY_{1..4}_KS_PBS_GAUSSIAN_2M128`, 2^-128 at their own
//! precision, security per tfhe) whose message space holds the tables and that meets the
//! same constraints; they budget for an L1 noise of a few fresh ciphertexts, so real layers
//! (‖w‖₂ of tens) rarely fit, which the error says.

use tfhe::core_crypto::commons::noise_formulas::centered_mean_shifted_modulus_switch::centered_binary_shifted_modulus_switch_additive_variance_impl as ms_var;
use tfhe::core_crypto::commons::noise_formulas::lwe_keyswitch::keyswitch_additive_variance_132_bits_security_gaussian_impl as ks_var;
use tfhe::core_crypto::commons::noise_formulas::lwe_programmable_bootstrap::pbs_variance_132_bits_security_gaussian_fft_mul_impl as pbs_var;
pub(super) use tfhe::core_crypto::commons::noise_formulas::secure_noise::minimal_lwe_variance_for_132_bits_security_gaussian_impl as min_var;

pub(super) const Q: f64 = 18_446_744_073_709_551_616.0; // 2^64
const MANTISSA: f64 = 53.0;
/// Milliseconds per unit of [`FheParams::cost`] (nanoseconds on one thread of this machine).
const MS_PER_COST: f64 = 1e-6;
/// Nanoseconds per FFT butterfly unit (`N·log₂N` of one forward or inverse transform) and per
/// Fourier-domain multiply-add of one coefficient, fitted to 13 blind rotations on this
/// machine (`k` 1–8, `N` 2^8–2^14, 1–4 levels; within 12 % of each but the two largest, which
/// it under-estimates by 8 %).
const NS_PER_FFT_UNIT: f64 = 0.146;
const NS_PER_MAC: f64 = 0.408;
/// Nanoseconds per keyswitching-key word read (the keyswitch is a stream over its key),
/// measured at 0.24–0.41 on this machine.
const NS_PER_KS_WORD: f64 = 0.3;

/// A TFHE parameter set (keyswitch-then-bootstrap, Gaussian noise, native 2^64 modulus).
#[derive(
    Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize, tfhe_versionable::Versionize,
)]
#[versionize(FheParamsVersions)]
pub struct FheParams {
    pub lwe_dimension: usize,
    pub glwe_dimension: usize,
    pub polynomial_size: usize,
    pub pbs_base_log: usize,
    pub pbs_level: usize,
    pub ks_base_log: usize,
    pub ks_level: usize,
    /// Standard deviations, torus units.
    pub lwe_std: f64,
    pub glwe_std: f64,
}

impl std::fmt::Display for FheParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "n={} k={} N={} pbs {}x{} ks {}x{}",
            self.lwe_dimension,
            self.glwe_dimension,
            self.polynomial_size,
            self.pbs_level,
            self.pbs_base_log,
            self.ks_level,
            self.ks_base_log
        )
    }
}

#[derive(tfhe_versionable::VersionsDispatch)]
#[allow(unused)]
pub enum FheParamsVersions {
    V0(FheParams),
}

impl FheParams {
    /// Secure parameters for these dimensions: the minimal 132-bit-secure noise.
    pub fn secure(
        n: usize,
        k: usize,
        big_n: usize,
        pbs: (usize, usize),
        ks: (usize, usize),
    ) -> Self {
        Self {
            lwe_dimension: n,
            glwe_dimension: k,
            polynomial_size: big_n,
            pbs_base_log: pbs.0,
            pbs_level: pbs.1,
            ks_base_log: ks.0,
            ks_level: ks.1,
            lwe_std: min_var(n as f64, Q).sqrt(),
            glwe_std: min_var((k * big_n) as f64, Q).sqrt(),
        }
    }
    pub fn v_pbs(&self) -> f64 {
        pbs_var(
            self.lwe_dimension as f64,
            self.glwe_dimension as f64,
            self.polynomial_size as f64,
            2f64.powi(self.pbs_base_log as i32),
            self.pbs_level as f64,
            MANTISSA,
            Q,
        )
    }
    pub fn v_ks(&self) -> f64 {
        ks_variance(
            self.big_dimension(),
            self.lwe_dimension,
            self.ks_base_log,
            self.ks_level,
        )
    }
    pub fn v_ms(&self) -> f64 {
        ms_var(
            self.lwe_dimension as f64,
            Q,
            2.0 * self.polynomial_size as f64,
        )
    }
    pub fn v_fresh(&self) -> f64 {
        self.glwe_std * self.glwe_std
    }
    /// Relative cost of one keyswitch (from this set's own big key) + bootstrap.
    pub fn cost(&self) -> f64 {
        self.blind_rotation_cost()
            + ks_cost(self.big_dimension(), self.lwe_dimension, self.ks_level)
    }
    /// Relative cost of the blind rotation alone: per LWE coefficient, `(k+1)·ℓ` forward and
    /// `k+1` inverse FFTs of `N` points and `(k+1)²·ℓ` Fourier multiply-adds of `N`
    /// coefficients, each weighted by its measured time.
    pub fn blind_rotation_cost(&self) -> f64 {
        let (n, k1, big_n, l) = (
            self.lwe_dimension as f64,
            (self.glwe_dimension + 1) as f64,
            self.polynomial_size as f64,
            self.pbs_level as f64,
        );
        n * (NS_PER_FFT_UNIT * k1 * (l + 1.0) * big_n * big_n.log2()
            + NS_PER_MAC * k1 * k1 * l * big_n)
    }
    /// Estimated wall time of one keyswitch + bootstrap on one thread of this machine, ms:
    /// [`FheParams::cost`] in milliseconds.
    pub fn est_ms_per_pbs(&self) -> f64 {
        self.cost() * MS_PER_COST
    }
    /// Size of the bootstrapping key in the Fourier domain, bytes.
    pub fn bsk_bytes(&self) -> f64 {
        let k1 = (self.glwe_dimension + 1) as f64;
        self.lwe_dimension as f64
            * k1
            * k1
            * self.pbs_level as f64
            * self.polynomial_size as f64
            * 8.0
    }
    /// Variance of the value a constraint reads when every bootstrap runs on this set,
    /// torus units.
    pub fn read_variance(&self, c: &Constraint) -> f64 {
        read_variance(self, None, c)
    }
    /// Error probability of one constraint when every bootstrap runs on this set.
    pub fn p_error(&self, c: &Constraint) -> f64 {
        p_error_of(self.read_variance(c), c.margin)
    }
    /// Approximate rounding: the rate at which a table index is off by one, for a value
    /// uniformly placed in its box (box = the margin): `2∫₀¹ Q(f/s) df ≈ s·√(2/π)` with
    /// `s = σ / box`.
    pub fn off_by_one(&self, c: &Constraint) -> f64 {
        off_by_one_of(self.read_variance(c), c.margin)
    }
    /// Dimension of the big (GLWE-derived) LWE key: `k·N`.
    pub fn big_dimension(&self) -> usize {
        self.glwe_dimension * self.polynomial_size
    }
}

/// `erfc(m / √(2v))`: a Gaussian of variance `v` passing the margin `m`.
pub fn p_error_of(v: f64, margin: f64) -> f64 {
    if v <= 0.0 {
        return 0.0;
    }
    libm::erfc(margin / (2.0 * v).sqrt())
}

pub(super) fn off_by_one_of(v: f64, margin: f64) -> f64 {
    let s = v.sqrt() / margin;
    (s * (2.0 / std::f64::consts::PI).sqrt()).min(1.0)
}

/// Variance of the value a constraint reads, torus units, when tables run on `main` and
/// exact rounding's bit extractions on `extract` (`None`: on `main` too).
pub fn read_variance(main: &FheParams, extract: Option<&ExtractParams>, c: &Constraint) -> f64 {
    PlanNoise::of(main, extract).read(c)
}

/// The variances a plan's reads combine, computed once (the search checks many constraints
/// per candidate).
#[derive(Clone, Copy, Debug)]
pub(super) struct PlanNoise {
    table: f64,
    bit: f64,
    fresh: f64,
    /// Keyswitch + modulus switch before a bit extraction and before a table.
    switch_bit: f64,
    switch_table: f64,
}

impl PlanNoise {
    pub(super) fn of(main: &FheParams, extract: Option<&ExtractParams>) -> Self {
        match extract {
            Some(x) => PlanNoise {
                table: x.v_table(main),
                bit: x.v_bit(),
                fresh: x.set.v_fresh(),
                switch_bit: x.v_ks() + x.v_ms(),
                switch_table: x.v_ks_table(main) + main.v_ms(),
            },
            None => {
                let switch = main.v_ks() + main.v_ms();
                PlanNoise {
                    table: main.v_pbs(),
                    bit: main.v_pbs(),
                    fresh: main.v_fresh(),
                    switch_bit: switch,
                    switch_table: switch,
                }
            }
        }
    }

    /// Variance of the value constraint `c` reads.
    pub(super) fn read(&self, c: &Constraint) -> f64 {
        let v =
            (c.alpha * self.table + c.gamma * self.bit + c.beta * self.fresh) * c.scale * c.scale;
        match c.kind {
            ConstraintKind::Decryption => v,
            k if k.on_second() => v + self.switch_bit,
            _ => v + self.switch_table,
        }
    }
}

/// The second partition of an exact-rounding circuit: the 1-bit sign bootstraps that extract
/// the dropped bits. They read one bit with a quarter-torus margin, so they need neither a
/// large polynomial (the modulus switch to `2N` only has to keep one bit) nor the table
/// partition's low output noise.
///
/// Registers (inputs, accumulators, extracted bits, table outputs) live under this set's big
/// key (dimension `k·N`, typically 2048), as Concrete's multi-parameter circuits keep them
/// under the key of their cheapest partition: linear layers, inputs and outputs are a
/// quarter of the size they would be under the tables' `N = 8192` key, and the many
/// extractions need no keyswitch beyond their own. Paths:
/// - bit extraction: keyswitch from this big key to this set's small key (`set.ks_*`),
///   modulus switch to `2·set.N`, blind rotation (`set.pbs_*`), sample extraction under this
///   big key: done;
/// - table: keyswitch from this big key to the main set's small key (the main set's `ks_*`),
///   the main set's bootstrap, and a keyswitch from its big key back to this one (`fks_*`),
///   once per table.
///
/// Security: both keys of this set sit on tfhe's 132-bit curve for their dimensions (as
/// [`FheParams::secure`]), and every keyswitching key is encrypted under its output key with
/// that key's own secure noise.
#[derive(
    Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize, tfhe_versionable::Versionize,
)]
#[versionize(ExtractParamsVersions)]
pub struct ExtractParams {
    /// n, k, N and the bootstrap decomposition of this set; `ks_*` is the keyswitch from this
    /// set's big key to its small key.
    pub set: FheParams,
    /// Keyswitch from the main (table) set's big key to this set's big key, after each table.
    pub fks_base_log: usize,
    pub fks_level: usize,
}

#[derive(tfhe_versionable::VersionsDispatch)]
#[allow(unused)]
pub enum ExtractParamsVersions {
    V0(ExtractParams),
}

impl std::fmt::Display for ExtractParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} fks {}x{}",
            self.set, self.fks_level, self.fks_base_log
        )
    }
}

impl ExtractParams {
    /// Variance of an extraction's keyswitch (this big key to this small key).
    pub fn v_ks(&self) -> f64 {
        self.set.v_ks()
    }
    pub fn v_ms(&self) -> f64 {
        self.set.v_ms()
    }
    /// Variance of a table's keyswitch in: this big key to the main set's small key.
    pub fn v_ks_table(&self, main: &FheParams) -> f64 {
        ks_variance(
            self.set.big_dimension(),
            main.lwe_dimension,
            main.ks_base_log,
            main.ks_level,
        )
    }
    /// Variance the keyswitch back from the main set's big key adds to a table output.
    pub fn v_fks(&self, main: &FheParams) -> f64 {
        ks_variance(
            main.big_dimension(),
            self.set.big_dimension(),
            self.fks_base_log,
            self.fks_level,
        )
    }
    /// Noise of an extracted bit where it is subtracted (this set's big key).
    pub fn v_bit(&self) -> f64 {
        self.set.v_pbs()
    }
    /// Noise of a table output back under this set's big key.
    pub fn v_table(&self, main: &FheParams) -> f64 {
        main.v_pbs() + self.v_fks(main)
    }
    /// Relative cost of one extraction: keyswitch and bootstrap (units of
    /// [`FheParams::cost`]).
    pub fn cost(&self) -> f64 {
        self.set.cost()
    }
    /// Relative cost of one table lookup under this layout: keyswitch in from this big key,
    /// the main set's bootstrap, keyswitch back.
    pub fn table_cost(&self, main: &FheParams) -> f64 {
        main.blind_rotation_cost()
            + ks_cost(self.set.big_dimension(), main.lwe_dimension, main.ks_level)
            + ks_cost(
                main.big_dimension(),
                self.set.big_dimension(),
                self.fks_level,
            )
    }
    /// Estimated wall time of one extraction on one thread, ms.
    pub fn est_ms(&self) -> f64 {
        self.cost() * MS_PER_COST
    }
    /// Estimated wall time of one table lookup on one thread, ms.
    pub fn est_table_ms(&self, main: &FheParams) -> f64 {
        self.table_cost(main) * MS_PER_COST
    }
}

/// What a noise check guards.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum ConstraintKind {
    /// A table read at its exact precision (half a box of margin).
    Table,
    /// A table read by approximate rounding (a whole box of margin; off-by-one counted).
    ApproximateTable,
    /// The same, run on the second partition ([`Program::light`](super::Program::light)):
    /// read after that partition's keyswitch and modulus switch.
    ApproximateTableLight,
    /// A 1-bit sign bootstrap of exact rounding (a quarter torus of margin).
    BitExtraction,
    /// The client's decryption of an output (no bootstrap).
    Decryption,
}

impl ConstraintKind {
    /// Read by approximate rounding: a whole box of margin, off-by-one counted.
    pub fn is_approximate(self) -> bool {
        matches!(
            self,
            ConstraintKind::ApproximateTable | ConstraintKind::ApproximateTableLight
        )
    }

    /// Read by a bootstrap of the second partition (when the plan has one).
    pub fn on_second(self) -> bool {
        matches!(
            self,
            ConstraintKind::BitExtraction | ConstraintKind::ApproximateTableLight
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            ConstraintKind::Table => "table",
            ConstraintKind::ApproximateTable => "approximate table",
            ConstraintKind::ApproximateTableLight => "approximate table (light partition)",
            ConstraintKind::BitExtraction => "bit extraction",
            ConstraintKind::Decryption => "decryption",
        }
    }
}

impl std::fmt::Display for ConstraintKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One kind of noise check the circuit needs (a worst case over its instances).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Constraint {
    pub kind: ConstraintKind,
    /// Where the worst case is (a layer name).
    pub at: String,
    /// How many times per sample.
    pub count: usize,
    /// Register noise `α·V_pbs + γ·V_bit + β·V_fresh`: table outputs, extracted bits
    /// (subtracted from the register before it is read), fresh encryptions.
    pub alpha: f64,
    pub gamma: f64,
    pub beta: f64,
    /// The multiplier applied before reading (a power of two).
    pub scale: f64,
    /// Half the decision interval, torus units.
    pub margin: f64,
}

impl Constraint {
    /// Read by a bootstrap (adds key switch and modulus switch noise), not by decryption.
    pub fn bootstrap(&self) -> bool {
        self.kind != ConstraintKind::Decryption
    }
}

/// What the search found, for the report.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Choice {
    /// `optimizer`, or the name of the tfhe vetted set.
    pub source: String,
    /// The main set: table lookups (and every bootstrap when `extract` is `None`).
    pub params: FheParams,
    /// Exact rounding's bit extractions on a set of their own (a second partition, whose big
    /// key holds the registers: [`Choice::home`]), or `None` (one set for every bootstrap).
    pub extract: Option<ExtractParams>,
    /// Worst error probability of one bootstrap or decryption.
    pub p_error: f64,
    /// Union bound over one sample's bootstraps and decryptions.
    pub global_p_error: f64,
    pub security_bits: u32,
    /// Approximate rounding: predicted rate of a table index off by one, per lookup
    /// (worst layer); 0 in exact mode.
    pub off_by_one: f64,
    /// Approximate rounding: standard deviation of the noise where the table reads, in table
    /// boxes (worst layer); 0 in exact mode.
    pub approx_sigma: f64,
    /// Standard deviation of the noise at decryption, torus units (worst output).
    pub decrypt_sigma: f64,
    /// Estimated wall time of one sample's bootstraps on one thread, ms.
    pub est_ms: f64,
    /// The parameters are for the program with split tables ([`Program::split`](
    /// super::Program::split)).
    #[serde(default)]
    pub split_tables: bool,
    /// The parameters are for the program with light tables ([`Program::light`](
    /// super::Program::light)).
    #[serde(default)]
    pub light_tables: bool,
}

/// Bootstraps per sample on each partition: the main set's (table lookups), the second's
/// (bit extractions, light tables).
pub fn partition_counts(constraints: &[Constraint]) -> (usize, usize) {
    let count = |second: bool| {
        constraints
            .iter()
            .filter(|c| c.bootstrap() && c.kind.on_second() == second)
            .map(|c| c.count)
            .sum::<usize>()
    };
    (count(false), count(true))
}

/// Relative cost of one sample's bootstraps (units of [`FheParams::cost`]).
pub(super) fn circuit_cost(
    main: &FheParams,
    extract: Option<&ExtractParams>,
    counts: (usize, usize),
) -> f64 {
    match extract {
        Some(x) => counts.0 as f64 * x.table_cost(main) + counts.1 as f64 * x.cost(),
        None => (counts.0 + counts.1) as f64 * main.cost(),
    }
}

impl Choice {
    /// The set whose big key holds the registers: inputs are encrypted, linear layers run
    /// and outputs are decrypted under it (the extraction set's when there is one).
    pub fn home(&self) -> &FheParams {
        self.extract.as_ref().map_or(&self.params, |x| &x.set)
    }

    /// This choice marked as made for program `p` (whether its tables are split).
    pub(super) fn for_program(self, p: &super::Program) -> Self {
        Choice {
            split_tables: p.split,
            light_tables: p.light,
            ..self
        }
    }

    pub(super) fn new(
        source: String,
        params: FheParams,
        extract: Option<ExtractParams>,
        constraints: &[Constraint],
    ) -> Self {
        let x = extract.as_ref();
        let p_err = |c: &Constraint| p_error_of(read_variance(&params, x, c), c.margin);
        let p_error = constraints.iter().map(p_err).fold(0.0, f64::max);
        let global_p_error = constraints
            .iter()
            .map(|c| p_err(c) * c.count as f64)
            .sum::<f64>()
            .min(1.0);
        let approx = constraints.iter().filter(|c| c.kind.is_approximate());
        let off_by_one = approx
            .clone()
            .map(|c| off_by_one_of(read_variance(&params, x, c), c.margin))
            .fold(0.0, f64::max);
        let decrypt_sigma = constraints
            .iter()
            .filter(|c| c.kind == ConstraintKind::Decryption)
            .map(|c| read_variance(&params, x, c).sqrt())
            .fold(0.0, f64::max);
        let approx_sigma = approx
            .map(|c| read_variance(&params, x, c).sqrt() / c.margin)
            .fold(0.0, f64::max);
        let est_ms = circuit_cost(&params, x, partition_counts(constraints)) * MS_PER_COST;
        Choice {
            source,
            params,
            extract,
            p_error,
            global_p_error,
            security_bits: 128,
            off_by_one,
            approx_sigma,
            decrypt_sigma,
            est_ms,
            split_tables: false,
            light_tables: false,
        }
    }
}

/// A tfhe Gaussian noise distribution's standard deviation (the vetted sets used here are
/// all Gaussian).
fn gaussian_std(d: tfhe::core_crypto::prelude::DynamicDistribution<u64>) -> f64 {
    use tfhe::core_crypto::prelude::DynamicDistribution;
    match d {
        DynamicDistribution::Gaussian(g) => g.std,
        DynamicDistribution::TUniform(_) => f64::NAN,
    }
}

/// The [`FheParams`] of a tfhe shortint parameter set (classic or multi-bit: the fields
/// they share).
macro_rules! vetted_params {
    ($p:expr) => {{
        let p = $p;
        FheParams {
            lwe_dimension: p.lwe_dimension.0,
            glwe_dimension: p.glwe_dimension.0,
            polynomial_size: p.polynomial_size.0,
            pbs_base_log: p.pbs_base_log.0,
            pbs_level: p.pbs_level.0,
            ks_base_log: p.ks_base_log.0,
            ks_level: p.ks_level.0,
            lwe_std: gaussian_std(p.lwe_noise_distribution),
            glwe_std: gaussian_std(p.glwe_noise_distribution),
        }
    }};
}

/// tfhe 1.8's vetted Gaussian KS-PBS sets (2^-128 failure probability at their own
/// precision), as `--params vetted` uses them: name and message+carry bits.
pub fn vetted_sets() -> Vec<(&'static str, u32, FheParams)> {
    use tfhe::shortint::parameters::v1_8::*;
    macro_rules! sets {
        ($($set:ident: $bits:expr),*) => {
            vec![$((stringify!($set), $bits, vetted_params!($set))),*]
        };
    }
    sets![
        V1_8_PARAM_MESSAGE_1_CARRY_1_KS_PBS_GAUSSIAN_2M128: 2,
        V1_8_PARAM_MESSAGE_2_CARRY_2_KS_PBS_GAUSSIAN_2M128: 4,
        V1_8_PARAM_MESSAGE_3_CARRY_3_KS_PBS_GAUSSIAN_2M128: 6,
        V1_8_PARAM_MESSAGE_4_CARRY_4_KS_PBS_GAUSSIAN_2M128: 8
    ]
}

/// tfhe's vetted multi-bit sets (Gaussian, p_fail 2^-128): name, table width (message +
/// carry bits), grouping factor, log2 of the stated failure probability and parameters.
/// The optimizer does not choose them yet; `fhec bench-pbs --multi-bit` measures them
/// against the classic sets of the same width.
pub fn vetted_multi_bit_sets() -> Vec<(&'static str, u32, usize, f64, FheParams)> {
    use tfhe::shortint::parameters::v1_8::*;
    macro_rules! sets {
        ($($set:ident: $bits:expr),*) => {
            vec![$((
                stringify!($set),
                $bits,
                $set.grouping_factor.0,
                $set.log2_p_fail,
                vetted_params!($set),
            )),*]
        };
    }
    sets![
        V1_8_PARAM_MULTI_BIT_GROUP_2_MESSAGE_1_CARRY_1_KS_PBS_GAUSSIAN_2M128: 2,
        V1_8_PARAM_MULTI_BIT_GROUP_3_MESSAGE_1_CARRY_1_KS_PBS_GAUSSIAN_2M128: 2,
        V1_8_PARAM_MULTI_BIT_GROUP_4_MESSAGE_1_CARRY_1_KS_PBS_GAUSSIAN_2M128: 2,
        V1_8_PARAM_MULTI_BIT_GROUP_2_MESSAGE_2_CARRY_2_KS_PBS_GAUSSIAN_2M128: 4,
        V1_8_PARAM_MULTI_BIT_GROUP_3_MESSAGE_2_CARRY_2_KS_PBS_GAUSSIAN_2M128: 4,
        V1_8_PARAM_MULTI_BIT_GROUP_4_MESSAGE_2_CARRY_2_KS_PBS_GAUSSIAN_2M128: 4,
        V1_8_PARAM_MULTI_BIT_GROUP_2_MESSAGE_3_CARRY_3_KS_PBS_GAUSSIAN_2M128: 6,
        V1_8_PARAM_MULTI_BIT_GROUP_3_MESSAGE_3_CARRY_3_KS_PBS_GAUSSIAN_2M128: 6,
        V1_8_PARAM_MULTI_BIT_GROUP_4_MESSAGE_3_CARRY_3_KS_PBS_GAUSSIAN_2M128: 6,
        V1_8_PARAM_MULTI_BIT_GROUP_2_MESSAGE_4_CARRY_4_KS_PBS_GAUSSIAN_2M128: 8,
        V1_8_PARAM_MULTI_BIT_GROUP_3_MESSAGE_4_CARRY_4_KS_PBS_GAUSSIAN_2M128: 8,
        V1_8_PARAM_MULTI_BIT_GROUP_4_MESSAGE_4_CARRY_4_KS_PBS_GAUSSIAN_2M128: 8
    ]
}

/// The cheapest vetted set that meets `target` for every constraint and has room for
/// `p`-bit tables.
///
/// # Errors
/// [`ParamsError::Vetted`] when none does.
pub fn search_vetted(
    constraints: &[Constraint],
    p: u32,
    target: Target,
) -> Result<Choice, ParamsError> {
    for (name, bits, params) in vetted_sets() {
        if bits < p {
            continue;
        }
        if constraints.iter().all(|c| target.meets(&params, c)) {
            return Ok(Choice::new(name.to_string(), params, None, constraints));
        }
    }
    let (name, _, params) = vetted_sets().pop().expect("four vetted sets");
    let worst = constraints
        .iter()
        .max_by(|a, b| params.p_error(a).total_cmp(&params.p_error(b)));
    Err(ParamsError::Vetted {
        target: target.p_error,
        at: worst.map_or_else(String::new, |c| format!("{} at `{}`", c.kind, c.at)),
        best: worst.map_or(0.0, |c| params.p_error(c)),
        name: name.to_string(),
    })
}

/// What the parameters must reach.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Target {
    /// Error probability of every bootstrap and decryption.
    pub p_error: f64,
    /// Approximate rounding: largest off-by-one rate of a table index (1 = no limit).
    pub off_by_one: f64,
}

impl Target {
    pub fn p_error(p_error: f64) -> Self {
        Target {
            p_error,
            off_by_one: 1.0,
        }
    }
    fn meets(&self, params: &FheParams, c: &Constraint) -> bool {
        self.meets_variance(params.read_variance(c), c)
    }
    pub(super) fn meets_variance(&self, v: f64, c: &Constraint) -> bool {
        p_error_of(v, c.margin) <= self.p_error
            && (!c.kind.is_approximate() || off_by_one_of(v, c.margin) <= self.off_by_one)
    }
}

/// Why no parameters were found.
#[derive(Debug, thiserror::Error)]
pub enum ParamsError {
    #[error(
        "no 128-bit-secure TFHE parameters reach p_error {target:.1e} for the {kind} at `{at}`: it reads {bits} bits exactly from a value carrying the noise of {noise:.2e} bootstrap outputs (the dot product's squared 2-norm, scaled by the bits read), and even the most precise parameters tried allow {budget:.2e}{cap}; \
         fix: fewer bits (--n-bits), fewer accumulator bits kept (--rounding-bits), --rounding-method approximate, or a looser --p-error"
    )]
    Infeasible {
        target: f64,
        at: String,
        kind: ConstraintKind,
        bits: u32,
        noise: f64,
        budget: f64,
        cap: String,
    },
    #[error(
        "no tfhe vetted parameter set reaches p_error {target:.1e}: the {at} fails with p_error {best:.1e} even under {name} \
         (vetted sets budget for an L1 noise of a few fresh ciphertexts, not this circuit's dot products); \
         fix: drop `--params vetted` to let the optimizer choose, use --rounding-method approximate, or fewer bits"
    )]
    Vetted {
        target: f64,
        at: String,
        best: f64,
        name: String,
    },
}

/// `x` with `erfc(x) = p` (bisection; `p` in (0, 1)).
fn erfc_inv(p: f64) -> f64 {
    let (mut lo, mut hi) = (0.0f64, 40.0f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if libm::erfc(mid) > p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// The cheapest secure set (by [`FheParams::cost`]) that `feasible` accepts: over polynomial
/// sizes from `2^min_poly_log`, GLWE dimensions, LWE dimensions and decompositions, with
/// bootstrapping keys of at most `max_bsk_bytes`.
pub(super) fn search_set(
    min_poly_log: u32,
    max_bsk_bytes: f64,
    feasible: impl Fn(&FheParams) -> bool,
) -> Option<FheParams> {
    let mut best: Option<FheParams> = None;
    for log_n in min_poly_log.max(8)..=16u32 {
        let big_n = 1usize << log_n;
        for k in 1..=3usize {
            if k * big_n > 1 << 16 {
                continue;
            }
            for n in (384..=1536).step_by(8) {
                let base = FheParams::secure(n, k, big_n, (1, 1), (1, 1));
                if best.as_ref().is_some_and(|b| {
                    FheParams {
                        pbs_level: 1,
                        ks_level: 1,
                        ..base.clone()
                    }
                    .cost()
                        >= b.cost()
                }) {
                    continue;
                }
                for lp in 1..=5 {
                    let Some(p) = best_pbs(&base, lp) else {
                        continue;
                    };
                    if p.bsk_bytes() > max_bsk_bytes {
                        break;
                    }
                    for lk in 1..=12 {
                        let Some(kk) = best_ks(base.big_dimension(), base.lwe_dimension, lk) else {
                            continue;
                        };
                        let cand = FheParams {
                            ks_base_log: kk,
                            ks_level: lk,
                            ..p.clone()
                        };
                        if best.as_ref().is_some_and(|b| cand.cost() >= b.cost()) {
                            break;
                        }
                        if feasible(&cand) {
                            best = Some(cand);
                            break;
                        }
                    }
                }
            }
        }
    }
    best
}

/// `base` with the bootstrap base for `level` decomposition levels that gives the smallest
/// output variance.
pub(super) fn best_pbs(base: &FheParams, level: usize) -> Option<FheParams> {
    // the variance formulas are costly (powers) and the searches ask again and again: the
    // answer depends on the dimensions only (noises are the secure ones), so it is cached
    let key = (
        base.lwe_dimension,
        base.glwe_dimension,
        base.polynomial_size,
        level,
        base.lwe_std.to_bits(),
        base.glwe_std.to_bits(),
    );
    let b = BEST_PBS.with(|cache| {
        *cache.borrow_mut().entry(key).or_insert_with(|| {
            (1..=(64 / level).min(40)).min_by(|&a, &b| {
                let v = |bl| {
                    FheParams {
                        pbs_base_log: bl,
                        pbs_level: level,
                        ..base.clone()
                    }
                    .v_pbs()
                };
                v(a).total_cmp(&v(b))
            })
        })
    })?;
    Some(FheParams {
        pbs_base_log: b,
        pbs_level: level,
        ..base.clone()
    })
}

type PbsKey = (usize, usize, usize, usize, u64, u64);

thread_local! {
    static BEST_PBS: std::cell::RefCell<std::collections::HashMap<PbsKey, Option<usize>>> =
        std::cell::RefCell::default();
    static BEST_KS: std::cell::RefCell<std::collections::HashMap<(usize, usize, usize), Option<usize>>> =
        std::cell::RefCell::default();
}

/// The keyswitch base log for `level` levels from a key of dimension `input` to one of
/// dimension `output` that gives the smallest variance (cached, as [`best_pbs`]).
pub(super) fn best_ks(input: usize, output: usize, level: usize) -> Option<usize> {
    BEST_KS.with(|cache| {
        *cache
            .borrow_mut()
            .entry((input, output, level))
            .or_insert_with(|| {
                (1..=(64 / level).min(30)).min_by(|&a, &b| {
                    ks_variance(input, output, a, level)
                        .total_cmp(&ks_variance(input, output, b, level))
                })
            })
    })
}

/// Relative cost of one keyswitch from dimension `input` to `output` with `level` levels
/// (units of [`FheParams::cost`]): one read of each key word.
pub(super) fn ks_cost(input: usize, output: usize, level: usize) -> f64 {
    NS_PER_KS_WORD * (input * level * (output + 1)) as f64
}

/// Variance a keyswitch adds (tfhe's formula; the output key at its secure noise).
pub(super) fn ks_variance(input: usize, output: usize, base_log: usize, level: usize) -> f64 {
    ks_var(
        input as f64,
        output as f64,
        2f64.powi(base_log as i32),
        level as f64,
        Q,
        Q,
    )
}

/// The cheapest secure parameters meeting `target` for every constraint, one set for every
/// bootstrap.
///
/// # Errors
/// [`ParamsError::Infeasible`] naming the hardest constraint.
pub fn search(
    constraints: &[Constraint],
    min_poly_log: u32,
    target: Target,
    max_bsk_bytes: f64,
) -> Result<Choice, ParamsError> {
    let best = search_set(min_poly_log, max_bsk_bytes, |cand| {
        constraints.iter().all(|c| target.meets(cand, c))
    });
    match best {
        Some(params) => Ok(Choice::new("optimizer".into(), params, None, constraints)),
        None => {
            // the constraint the largest secure set fails by the most
            let big = FheParams::secure(1024, 1, 1 << 15, (15, 3), (3, 8));
            let hardest = constraints
                .iter()
                .max_by(|a, b| big.p_error(a).total_cmp(&big.p_error(b)))
                .cloned()
                .unwrap_or(Constraint {
                    kind: ConstraintKind::Table,
                    at: "?".into(),
                    count: 0,
                    alpha: 0.0,
                    gamma: 0.0,
                    beta: 0.0,
                    scale: 1.0,
                    margin: 0.0,
                });
            // the register noise the big set tolerates at this read, in V_pbs units
            let z = erfc_inv(target.p_error);
            let v_max = (hardest.margin / z).powi(2) / 2.0;
            let fixed = if hardest.bootstrap() {
                big.v_ks() + big.v_ms()
            } else {
                0.0
            };
            let budget = ((v_max - fixed) / (hardest.scale * hardest.scale) / big.v_pbs()).max(0.0);
            Err(ParamsError::Infeasible {
                target: target.p_error,
                at: hardest.at,
                kind: hardest.kind,
                bits: (-hardest.margin.log2() - 2.0).round().max(1.0) as u32,
                noise: hardest.alpha + hardest.gamma,
                budget,
                cap: if target.off_by_one < 1.0 {
                    format!(" (and the off-by-one cap {} may bind)", target.off_by_one)
                } else {
                    String::new()
                },
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(p: u32, alpha: f64) -> Constraint {
        Constraint {
            kind: ConstraintKind::Table,
            at: "t".into(),
            count: 1,
            alpha,
            gamma: 0.0,
            beta: 0.0,
            scale: 1.0,
            margin: 2f64.powi(-(p as i32) - 2),
        }
    }

    #[test]
    fn search_is_monotone_in_precision_and_norm() {
        let t = 2f64.powi(-40);
        let c4 = search(&[table(4, 100.0)], 4, Target::p_error(t), 2e9).expect("4 bits");
        let c6 = search(&[table(6, 100.0)], 6, Target::p_error(t), 2e9).expect("6 bits");
        let c6w = search(&[table(6, 10_000.0)], 6, Target::p_error(t), 2e9).expect("6 bits, wide");
        assert!(c4.params.cost() <= c6.params.cost());
        assert!(c6.params.cost() <= c6w.params.cost());
        assert!(c6.p_error <= t);
    }

    /// Given the targets tfhe's vetted sets are made for (their precision, the 2-norm they
    /// document), the model reproduces their documented failure probability (2^-128.1 to
    /// 2^-128.7) and the search finds parameters as cheap (within 2 %: fhec's keys sit on
    /// tfhe's 132-bit curve and the LWE dimension moves by 8) at an equal or lower error.
    #[test]
    fn search_matches_or_beats_the_vetted_sets_at_their_targets() {
        for ((name, bits, vetted), norm) in vetted_sets().into_iter().zip([3.0, 5.0, 9.0, 17.0]) {
            let c = table(bits, norm * norm);
            let t = 2f64.powi(-128);
            let claimed = vetted.p_error(&c).log2();
            assert!(
                (-129.0..-127.9).contains(&claimed),
                "{name}: model says 2^{claimed}"
            );
            let ours = search(std::slice::from_ref(&c), bits, Target::p_error(t), 1e10)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            println!(
                "{name}: vetted cost {:.3e} p_error 2^{:.1} (our model) | optimizer {:?} cost {:.3e} p_error 2^{:.1}",
                vetted.cost(),
                vetted.p_error(&c).log2(),
                ours.params,
                ours.params.cost(),
                ours.p_error.log2()
            );
            assert!(ours.p_error <= t, "{name}");
            // within 2 %: our keys sit on the 132-bit curve (vetted: 128) and n moves by 8
            assert!(
                ours.params.cost() <= 1.02 * vetted.cost(),
                "{name}: costlier than vetted"
            );
        }
    }

    #[test]
    fn impossible_requests_are_refused() {
        assert!(search(&[table(40, 1.0)], 16, Target::p_error(2f64.powi(-40)), 2e9).is_err());
    }

    #[test]
    fn secure_noise_is_tfhes_curve() {
        let p = FheParams::secure(742, 1, 2048, (23, 1), (3, 5));
        // tfhe's 132-bit curve at n = 742: 2^(5.3147 - 0.04978·742) + 2^-124
        let want =
            (2f64.powf(5.31469187675068 - 0.0497829131652661 * 742.0) + 2f64.powi(-124)).sqrt();
        assert!((p.lwe_std / want - 1.0).abs() < 1e-12);
    }
}
