//! Compile settings as the fronts take them — the CLI's flags, Python's keyword arguments
//! (same names), a JSON object — and the one place they become [`CompileOptions`]: ranges
//! checked with the flag named, the defaults filled in, and what the defaults may decide on
//! their own turned off where the user pinned something (a precision setting keeps the
//! precision; a rounding method keeps the rounding).

use super::{AutoOptions, CompileOptions};
use crate::backend::{FheOptions, ParamsPolicy, Rounding, SettingError, TableSplit};
use fhec_ir::Limits;
use fhec_passes::{LayerPrecision, QuantConfig, RangePolicy};
use std::collections::BTreeMap;

/// Every compile setting, unset fields taking fhec's defaults (see the CLI reference for
/// each one's meaning). Deserializes from a JSON object with these names; an unknown name is
/// an error.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub n_bits: Option<u32>,
    pub n_bits_inputs: Option<u32>,
    pub n_bits_weights: Option<u32>,
    pub n_bits_activations: Option<u32>,
    pub n_bits_decrypted: Option<u32>,
    pub rounding_bits: Option<u32>,
    #[serde(default)]
    pub no_rounding: bool,
    pub n_accum_bits: Option<u32>,
    #[serde(default)]
    pub per_channel: bool,
    pub max_tlu_bits: Option<u32>,
    /// Per layer, by ONNX node name: `w4,i4,r5` (any subset).
    #[serde(default)]
    pub layers: BTreeMap<String, String>,
    pub ranges: Option<RangePolicy>,
    pub range_margin: Option<f32>,
    #[serde(default)]
    pub requantize: bool,
    pub p_error: Option<f64>,
    pub global_p_error: Option<f64>,
    pub rounding_method: Option<Rounding>,
    pub params: Option<ParamsPolicy>,
    pub max_off_by_one: Option<f64>,
    pub split_tables: Option<TableSplit>,
    /// Percent of calibration samples on which clear mode should agree with float (0: off).
    pub agreement_target: Option<f64>,
    pub max_cost_factor: Option<f64>,
    #[serde(default)]
    pub no_auto: bool,
    pub max_elements: Option<u64>,
}

fn bad(flag: &'static str, reason: String) -> SettingError {
    SettingError { flag, reason }
}

fn bits(flag: &'static str, v: Option<u32>, lo: u32, hi: u32) -> Result<Option<u32>, SettingError> {
    match v {
        Some(b) if !(lo..=hi).contains(&b) => {
            Err(bad(flag, format!("{b} is outside [{lo}, {hi}]")))
        }
        v => Ok(v),
    }
}

impl Settings {
    /// Whether the user set any precision (then compile keeps it as given).
    pub fn pins_precision(&self) -> bool {
        self.n_bits.is_some()
            || self.n_bits_inputs.is_some()
            || self.n_bits_weights.is_some()
            || self.n_bits_activations.is_some()
            || self.n_bits_decrypted.is_some()
            || self.rounding_bits.is_some()
            || self.no_rounding
            || !self.layers.is_empty()
    }

    /// The encrypted-program settings over `base` (the defaults, or a loaded model's).
    ///
    /// # Errors
    /// A setting out of range, naming its flag.
    pub fn fhe_options(&self, base: FheOptions) -> Result<FheOptions, SettingError> {
        let mut o = base;
        if let Some(p) = self.p_error {
            o.p_error = p;
            o.global_p_error = None;
        }
        if let Some(g) = self.global_p_error {
            o.global_p_error = Some(g);
        }
        if let Some(r) = self.rounding_method {
            o.rounding = r;
        }
        if let Some(r) = self.max_off_by_one {
            o.max_off_by_one = r;
        }
        if let Some(p) = self.params {
            o.params = p;
        }
        if let Some(t) = self.split_tables {
            o.split_tables = t;
        }
        o.validate()?;
        Ok(o)
    }

    /// Whether any encrypted-program setting is set.
    pub fn sets_fhe(&self) -> bool {
        self.p_error.is_some()
            || self.global_p_error.is_some()
            || self.rounding_method.is_some()
            || self.params.is_some()
            || self.max_off_by_one.is_some()
            || self.split_tables.is_some()
    }

    /// The compile options these settings mean.
    ///
    /// # Errors
    /// A setting out of range or malformed, naming its flag (and the layer).
    pub fn options(&self) -> Result<CompileOptions, SettingError> {
        let n_bits = bits("--n-bits", self.n_bits, 2, 16)?.unwrap_or(6);
        let each = |flag, v| bits(flag, v, 2, 16).map(|v| v.unwrap_or(n_bits));
        let rounding = bits("--rounding-bits", self.rounding_bits, 1, 16)?.unwrap_or(6);
        let mut layers = BTreeMap::new();
        for (name, spec) in &self.layers {
            let p = LayerPrecision::parse(spec)
                .map_err(|e| bad("--layer", format!("`{name}={spec}`: {e}")))?;
            layers.insert(name.clone(), p);
        }
        let margin = self.range_margin.unwrap_or(QuantConfig::DEFAULT_MARGIN);
        if !(0.0..=16.0).contains(&margin) {
            return Err(bad(
                "--range-margin",
                format!("{margin} is outside [0, 16]"),
            ));
        }
        let quant = QuantConfig {
            n_bits_inputs: each("--n-bits-inputs", self.n_bits_inputs)?,
            n_bits_weights: each("--n-bits-weights", self.n_bits_weights)?,
            n_bits_activations: each("--n-bits-activations", self.n_bits_activations)?,
            n_bits_decrypted: bits("--n-bits-decrypted", self.n_bits_decrypted, 2, 16)?,
            per_channel: self.per_channel,
            rounding_bits: (!self.no_rounding).then_some(rounding),
            max_tlu_bits: bits("--max-tlu-bits", self.max_tlu_bits, 1, 16)?.unwrap_or(8),
            n_accum_bits: bits("--n-accum-bits", self.n_accum_bits, 2, 24)?,
            layers,
            ranges: self.ranges.unwrap_or_default(),
            range_margin: margin,
            requantize: self.requantize,
        };
        let target = self
            .agreement_target
            .unwrap_or(AutoOptions::DEFAULT_TARGET * 100.0);
        if !(0.0..=100.0).contains(&target) {
            return Err(bad(
                "--agreement-target",
                format!("{target} is outside [0, 100] (percent)"),
            ));
        }
        let factor = self
            .max_cost_factor
            .unwrap_or(AutoOptions::DEFAULT_COST_FACTOR);
        if !(1.0..=1000.0).contains(&factor) {
            return Err(bad(
                "--max-cost-factor",
                format!("{factor} is outside [1, 1000]"),
            ));
        }
        let auto = AutoOptions {
            fallback: !self.no_auto && self.rounding_method.is_none(),
            agreement_target: (!self.no_auto && !self.pins_precision() && target > 0.0)
                .then_some(target / 100.0),
            max_cost_factor: factor,
        };
        let limits = match self.max_elements {
            Some(0) => return Err(bad("--max-elements", "must be at least 1".into())),
            Some(n) => Limits::with_max_elements(usize::try_from(n).unwrap_or(usize::MAX)),
            None => Limits::default(),
        };
        Ok(CompileOptions {
            quant,
            fhe: self.fhe_options(FheOptions::default())?,
            auto,
            limits,
            dump_after: Vec::new(),
        })
    }
}
