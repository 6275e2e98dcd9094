//! fhec's compiler passes, one file per pass, and the pass manager.
//!
//! The pipeline is data, built in one place ([`Pipeline::standard`]); it reads top to bottom:
//!
//! | pass | needs → makes | does |
//! |---|---|---|
//! | [`canonicalize`] | float → float | folds BatchNorm into Conv/Gemm, folds constants, drops Identity (the graph `--mode float` runs) |
//! | [`drop_grids`] | float → float | with `requantize` only: a self-quantized model's grids become their clips (before [`client_head`], so that an input's clip goes to the client) |
//! | [`client_head`] | float → float | cuts elementwise preprocessing of the inputs off for the client, and maps the calibration samples through it |
//! | [`calibrate`] | float → calibrated | runs `eval_f32` on calibration data, records every tensor's range |
//! | [`quantize`] | calibrated → quantized | integer accumulators, `Dequant → float ops → Quant` chains, client-side tail |
//! | [`fuse_tlu`] | quantized → fused | each `Dequant → univariate* → Quant` chain becomes one `Tlu` |
//! | [`bitwidth`] | fused → fused | worst-case and observed interval of every integer tensor (analysis) |
//! | [`prune_check`] | fused → fused | accumulator budget per neuron; L1 pruning with `n_accum_bits` |
//! | [`round`] | fused → fused | `Round` before every table/output wider than `rounding_bits` |
//!
//! The manager runs `Graph::verify` after every pass, refuses to run a pass on a graph in
//! the wrong stage or on an analysis a pass since made stale ([`Pass::invalidates`]).

pub mod bitwidth;
pub mod calibrate;
pub mod canonicalize;
pub mod client_head;
pub mod drop_grids;
pub mod fuse_tlu;
pub mod prune_check;
pub mod quantize;
pub mod round;

use fhec_ir::{Graph, Interval, IrError, NodeIndex, QuantParams, Tensor};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// How far lowering has come.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Stage {
    Float,
    Calibrated,
    Quantized,
    Fused,
}

/// Quantization settings (Concrete ML's names where they exist).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QuantConfig {
    /// Bits of the quantized model inputs (unsigned).
    pub n_bits_inputs: u32,
    /// Bits of the weights (signed symmetric).
    pub n_bits_weights: u32,
    /// Bits of the requantized activations (unsigned).
    pub n_bits_activations: u32,
    /// Bits of the weights of a layer the client decrypts (its accumulator feeds no table),
    /// `None`: [`QuantConfig::DECRYPTED_EXTRA`] more than `n_bits_weights`. Such a layer runs
    /// as limbs of at most `n_bits_weights` bits, each decrypted on its own, which the client
    /// sums: the extra precision costs no bootstrap and no wider decryption.
    #[serde(default)]
    pub n_bits_decrypted: Option<u32>,
    /// One weight scale per output channel instead of one per tensor.
    pub per_channel: bool,
    /// Drop the low bits of every accumulator wider than this before its table lookup.
    pub rounding_bits: Option<u32>,
    /// Widest table-lookup input the backend accepts; wider accumulators are refused.
    pub max_tlu_bits: u32,
    /// Prune weights (L1, smallest first) until every accumulator fits this many bits.
    pub n_accum_bits: Option<u32>,
    /// Per-layer overrides, by the ONNX name of a Gemm, MatMul, Conv or pooling node.
    #[serde(default)]
    pub layers: BTreeMap<String, LayerPrecision>,
    /// How table domains (and so rounding) are sized.
    #[serde(default)]
    pub ranges: RangePolicy,
    /// `Calibrated`: each element's calibration range is widened by this fraction of the
    /// layer's typical range on each side (see [`RangePolicy`]).
    #[serde(default = "default_margin")]
    pub range_margin: f32,
    /// Compile a model that quantizes itself (QDQ, QOperator, QONNX) as the float model it
    /// approximates: its grids become their clips ([`drop_grids`]) and fhec quantizes it
    /// from calibration data on its own `n_bits` grids.
    #[serde(default)]
    pub requantize: bool,
}

fn default_margin() -> f32 {
    QuantConfig::DEFAULT_MARGIN
}

/// How the `round` pass sizes each table's domain, and with it the bits rounding drops.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RangePolicy {
    /// The proven worst-case interval of each element: no input can leave its table, so the
    /// encrypted result is the function's for every input (the guarantee fhec gave before
    /// calibrated ranges; costs about two bits of precision on typical networks).
    Proven,
    /// The element's range on the calibration set, widened by `range_margin`, within the
    /// proven interval. An input beyond it reads the table's negacyclic wrap (see
    /// `fhec_ir::TableDomain`); clear mode counts such reads. Concrete ML sizes its tables
    /// from calibration ranges the same way (per tensor, without a margin).
    #[default]
    Calibrated,
}

impl RangePolicy {
    pub fn name(self) -> &'static str {
        match self {
            Self::Proven => "proven",
            Self::Calibrated => "calibrated",
        }
    }
}

/// The precision of one layer; unset fields take the global setting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerPrecision {
    /// Bits the layer's input is requantized to when it is an activation (graph inputs keep
    /// `n_bits_inputs`: the client quantizes them).
    #[serde(default)]
    pub input_bits: Option<u32>,
    /// Bits of the layer's weights.
    #[serde(default)]
    pub weight_bits: Option<u32>,
    /// Bits the layer's accumulator is rounded to before its table lookup.
    #[serde(default)]
    pub rounding_bits: Option<u32>,
}

/// A per-layer precision that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PrecisionError {
    #[error("`{part}`: expected w<bits>, i<bits> or r<bits>")]
    Spec { part: String },
    #[error("{field} {bits} is outside [{lo}, 16]")]
    Range {
        field: &'static str,
        bits: u32,
        lo: u32,
    },
}

/// A per-layer precision file (`--precision FILE.json`); the compile report's `config`
/// holds the same `layers` object, so a report's config can be edited and fed back.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PrecisionFile {
    pub layers: BTreeMap<String, LayerPrecision>,
}

impl LayerPrecision {
    /// Parses the command-line form `w4,i4,r5` (any subset, any order).
    ///
    /// # Errors
    /// [`PrecisionError`] naming the part or field.
    pub fn parse(spec: &str) -> Result<Self, PrecisionError> {
        let mut p = Self::default();
        for part in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (key, val) = part.split_at(1);
            let bits: u32 = val.parse().map_err(|_| PrecisionError::Spec {
                part: part.to_string(),
            })?;
            match key {
                "w" => p.weight_bits = Some(bits),
                "i" => p.input_bits = Some(bits),
                "r" => p.rounding_bits = Some(bits),
                _ => {
                    return Err(PrecisionError::Spec {
                        part: part.to_string(),
                    })
                }
            }
        }
        p.check()?;
        Ok(p)
    }

    /// The command-line form [`LayerPrecision::parse`] reads (`w4,i4,r5`, set fields only).
    pub fn spec(&self) -> String {
        [
            ('w', self.weight_bits),
            ('i', self.input_bits),
            ('r', self.rounding_bits),
        ]
        .iter()
        .filter_map(|(k, b)| b.map(|b| format!("{k}{b}")))
        .collect::<Vec<_>>()
        .join(",")
    }

    /// Bits in range: inputs and weights 2 to 16, rounding 1 to 16.
    ///
    /// # Errors
    /// [`PrecisionError::Range`] naming the field.
    pub fn check(&self) -> Result<(), PrecisionError> {
        for (field, v, lo) in [
            ("input_bits", self.input_bits, 2),
            ("weight_bits", self.weight_bits, 2),
            ("rounding_bits", self.rounding_bits, 1),
        ] {
            if let Some(bits) = v.filter(|b| !(lo..=16).contains(b)) {
                return Err(PrecisionError::Range { field, bits, lo });
            }
        }
        Ok(())
    }
}

impl Default for QuantConfig {
    fn default() -> Self {
        Self {
            n_bits_inputs: 6,
            n_bits_weights: 6,
            n_bits_activations: 6,
            n_bits_decrypted: None,
            per_channel: false,
            rounding_bits: Some(6),
            max_tlu_bits: 8,
            n_accum_bits: None,
            layers: BTreeMap::new(),
            ranges: RangePolicy::default(),
            range_margin: Self::DEFAULT_MARGIN,
            requantize: false,
        }
    }
}

impl QuantConfig {
    /// Default `range_margin`.
    pub const DEFAULT_MARGIN: f32 = 0.25;

    /// Default extra weight bits of a decrypted layer (see `n_bits_decrypted`): on
    /// digits_transformer the head's 6-bit weights cost 4.2 points of accuracy, 10-bit ones
    /// 0.8; more gain little.
    pub const DECRYPTED_EXTRA: u32 = 4;

    /// `layer`'s own precision (every field unset when it has none).
    fn own(&self, layer: &str) -> LayerPrecision {
        self.layers.get(layer).copied().unwrap_or_default()
    }

    /// Weight bits of `layer`.
    pub fn weight_bits(&self, layer: &str) -> u32 {
        self.own(layer).weight_bits.unwrap_or(self.n_bits_weights)
    }

    /// Weight bits of `layer` when the client decrypts its output: its own setting, else
    /// `n_bits_decrypted`.
    pub fn decrypted_weight_bits(&self, layer: &str) -> u32 {
        self.own(layer)
            .weight_bits
            .or(self.n_bits_decrypted)
            .unwrap_or(self.n_bits_weights + Self::DECRYPTED_EXTRA)
    }

    /// Bits `layer` reads a requantized activation at.
    pub fn input_bits(&self, layer: &str) -> u32 {
        self.own(layer)
            .input_bits
            .unwrap_or(self.n_bits_activations)
    }

    /// Rounding of `layer`'s accumulator (`None`: exact).
    pub fn rounding_for(&self, layer: &str) -> Option<u32> {
        self.own(layer).rounding_bits.or(self.rounding_bits)
    }

    /// Whether any layer rounds.
    pub fn any_rounding(&self) -> bool {
        self.rounding_bits.is_some() || self.layers.values().any(|l| l.rounding_bits.is_some())
    }

    /// One `n_bits` for inputs, weights and activations.
    pub fn with_n_bits(n: u32) -> Self {
        Self {
            n_bits_inputs: n,
            n_bits_weights: n,
            n_bits_activations: n,
            ..Self::default()
        }
    }
}

/// What the passes know about the graph, beyond the graph itself: what they are asked
/// (settings, calibration samples), then one record per pass that produces something, so
/// that a reader sees who writes what.
#[derive(Clone, Debug, Default)]
pub struct PassContext {
    pub config: QuantConfig,
    /// Calibration samples: one tensor per graph input, per sample (batch axis 1); after
    /// `client_head`, the head's outputs (what the program's inputs see).
    pub calib: Vec<Vec<Tensor>>,
    /// `client_head`: the float preprocessing cut off the graph, which the client runs.
    pub head: Option<Graph>,
    /// `calibrate`: `(min, max)` of every float node over the calibration set.
    pub float_ranges: HashMap<NodeIndex, (f32, f32)>,
    /// `quantize`: the client's quantizers and where each integer node comes from.
    pub quant: Quantized,
    /// `bitwidth`: the interval analyses of the integer program (made again after every
    /// pass that invalidates them).
    pub analysis: Analyses,
    /// `prune_check`: weights zeroed per layer.
    pub pruned: Vec<(String, usize)>,
    /// `round`: what rounding decided.
    pub round: Rounded,
    pub stage: Option<Stage>,
    /// Analyses made since the last pass that invalidates them ([`Pass::invalidates`]).
    pub valid: BTreeSet<Analysis>,
    /// One line per pass: what it did.
    pub log: Vec<String>,
}

/// What `quantize` records.
#[derive(Clone, Debug, Default)]
pub struct Quantized {
    /// How the client quantizes each graph input.
    pub input_quant: Vec<QuantParams>,
    /// The float node name each integer node stands for.
    pub origin: HashMap<NodeIndex, String>,
    /// The weight bits of each layer whose weights fhec quantized, by the name of each of
    /// its integer nodes (a decrypted layer's limbs included).
    pub weight_bits: HashMap<String, u32>,
}

/// What `bitwidth` computes (the IR's analyses, `fhec_ir::analysis`).
#[derive(Clone, Debug, Default)]
pub struct Analyses {
    /// Proven per-element bounds of every integer node.
    pub bounds: HashMap<NodeIndex, bitwidth::Bounds>,
    /// Proven interval of every integer node (union over its elements).
    pub intervals: HashMap<NodeIndex, Interval>,
    /// Interval observed on the calibration set.
    pub observed: HashMap<NodeIndex, Interval>,
    /// Per-element range observed on the calibration set.
    pub observed_elems: HashMap<NodeIndex, bitwidth::Bounds>,
}

/// What `round` decides.
#[derive(Clone, Debug, Default)]
pub struct Rounded {
    /// Per table lookup, the interval of its (unrounded) source each element's table was
    /// sized for, and the proven one.
    pub domains: HashMap<NodeIndex, DomainChoice>,
    /// Decrypted integers read in a calibrated window: proven and window bits.
    pub windows: HashMap<NodeIndex, (u32, u32)>,
    /// Most bits dropped by each `Round` node.
    pub rounded: HashMap<NodeIndex, u32>,
    /// Power-of-two requantizations folded into rounding: the layer, the shift (bits), and
    /// whether an integer bias moved into the accumulator.
    pub shifts: Vec<(String, u32, bool)>,
}

/// An analysis recorded in the [`PassContext`], which a pass may need and may invalidate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Analysis {
    /// `calibrate`'s float ranges.
    FloatRanges,
    /// `bitwidth`'s proven and observed intervals.
    Intervals,
}

impl PassContext {
    pub fn new(config: QuantConfig, calib: Vec<Vec<Tensor>>) -> Self {
        Self {
            config,
            calib,
            stage: Some(Stage::Float),
            ..Self::default()
        }
    }
}

/// How one table lookup's domain was sized (`round`), for the compile report.
#[derive(Clone, Debug, PartialEq)]
pub struct DomainChoice {
    /// Widest element interval the table was sized for (bits, before rounding).
    pub used_bits: u32,
    /// The same after rounding: the table input width this layer needs (every table of the
    /// program is read at the widest such width).
    pub input_bits: u32,
}

/// Why compilation stopped.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error("pass `{pass}` needs a {needs:?} graph, but the graph is {have:?}")]
    Stage {
        pass: &'static str,
        needs: Stage,
        have: Option<Stage>,
    },
    #[error("pass `{pass}` reads the {analysis:?} analysis, which is stale or not made; run the pass that makes it first")]
    Stale {
        pass: &'static str,
        analysis: Analysis,
    },
    #[error("pass `{pass}` left an invalid graph: {source}")]
    Verify { pass: &'static str, source: IrError },
    #[error(transparent)]
    Ir(#[from] IrError),
    #[error("calibration: {reason}")]
    Calibration { reason: String },
    #[error("precision config: {reason}")]
    Config { reason: String },
    #[error("node `{node}` ({op}): {reason}")]
    Unsupported {
        node: String,
        op: &'static str,
        reason: String,
    },
    /// A compiler bug: what a pass found that cannot happen.
    #[error("internal error in pass `{pass}`: {what}; please report")]
    Internal { pass: &'static str, what: String },
    #[error(
        "layer `{layer}`, neuron {neuron}: the accumulator needs {bits} bits (range [{lo}, {hi}]) but table lookups take at most {budget}; \
         the seed bound Ω = {omega} active weights of {fan_in} at these widths; fix: use --rounding-bits {budget} (or lower), \
         fewer bits (--n-bits {fewer}), or prune with --n-accum-bits {budget}"
    )]
    Accumulator {
        layer: String,
        neuron: usize,
        bits: u32,
        lo: i64,
        hi: i64,
        budget: u32,
        omega: u64,
        fan_in: usize,
        fewer: u32,
    },
}

impl PassError {
    /// Whether this is a bug in fhec rather than something about the model or settings.
    pub fn is_internal(&self) -> bool {
        matches!(
            self,
            Self::Internal { .. } | Self::Stage { .. } | Self::Verify { .. }
        )
    }
}

/// Whether a pass changed the graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Changed {
    Yes,
    No,
}

/// A compiler pass: a small struct with one `run`.
pub trait Pass {
    fn name(&self) -> &'static str;
    /// The stage the graph must be in.
    fn requires(&self) -> Stage;
    /// The stage the graph is in afterwards.
    fn produces(&self) -> Stage;
    /// The analyses this pass reads (the manager refuses to run it when one is stale).
    fn needs(&self) -> &'static [Analysis] {
        &[]
    }
    /// The analyses this pass makes.
    fn makes(&self) -> &'static [Analysis] {
        &[]
    }
    /// The analyses this pass makes stale (by changing the graph).
    fn invalidates(&self) -> &'static [Analysis] {
        &[]
    }
    /// # Errors
    /// The pass cannot do its job on this graph; the error names the node and the fix.
    fn run(&self, g: &mut Graph, cx: &mut PassContext) -> Result<Changed, PassError>;
}

/// An ordered list of passes.
pub struct Pipeline {
    pub passes: Vec<Box<dyn Pass>>,
}

impl Pipeline {
    /// The compiler: the imported float graph to the rounded, analyzed integer program.
    /// Each pass runs once, in this order:
    ///
    /// | pass | stage | needs | makes | invalidates |
    /// |---|---|---|---|---|
    /// | canonicalize | float → float | | | float ranges |
    /// | drop_grids | float → float | | | float ranges |
    /// | client_head | float → float | | | float ranges |
    /// | calibrate | float → calibrated | | float ranges | |
    /// | quantize | calibrated → quantized | float ranges | | intervals |
    /// | fuse_tlu | quantized → fused | | | intervals |
    /// | bitwidth | fused → fused | | intervals | |
    /// | prune_check | fused → fused | intervals | | (keeps them: re-runs bitwidth when it prunes) |
    /// | round | fused → fused | intervals | | intervals |
    /// | bitwidth | fused → fused | | intervals | |
    pub fn standard() -> Self {
        Self {
            passes: vec![
                Box::new(canonicalize::Canonicalize),
                Box::new(drop_grids::DropGrids),
                Box::new(client_head::ClientHead),
                Box::new(calibrate::Calibrate),
                Box::new(quantize::Quantize),
                Box::new(fuse_tlu::FuseTlu),
                Box::new(bitwidth::Bitwidth),
                Box::new(prune_check::PruneCheck),
                Box::new(round::Round),
                Box::new(bitwidth::Bitwidth),
            ],
        }
    }

    /// Runs every pass in order, verifying the graph after each and tracking which analyses
    /// are current. `dump_after` names passes whose output is appended to the returned dumps
    /// (`--dump-after`); `after` sees the graph after each pass (the driver keeps the
    /// canonical float graph that `--mode float` runs).
    ///
    /// # Errors
    /// The first pass that fails, a pass run out of stage order or on a stale analysis, or
    /// an invalid graph.
    pub fn run(
        &self,
        g: &mut Graph,
        cx: &mut PassContext,
        dump_after: &[String],
        mut after: impl FnMut(&'static str, &Graph),
    ) -> Result<Vec<String>, PassError> {
        let mut dumps = Vec::new();
        for p in &self.passes {
            if cx.stage != Some(p.requires()) {
                return Err(PassError::Stage {
                    pass: p.name(),
                    needs: p.requires(),
                    have: cx.stage,
                });
            }
            if let Some(&analysis) = p.needs().iter().find(|a| !cx.valid.contains(a)) {
                return Err(PassError::Stale {
                    pass: p.name(),
                    analysis,
                });
            }
            let changed = p.run(g, cx)?;
            g.verify().map_err(|source| PassError::Verify {
                pass: p.name(),
                source,
            })?;
            cx.stage = Some(p.produces());
            cx.valid.extend(p.makes());
            if changed == Changed::Yes {
                for a in p.invalidates() {
                    cx.valid.remove(a);
                }
                cx.log.push(format!(
                    "{}: changed the graph ({} nodes)",
                    p.name(),
                    g.g.node_count()
                ));
            }
            after(p.name(), g);
            if dump_after.iter().any(|d| d == p.name()) {
                dumps.push(format!("// after {}\n{}", p.name(), g.dump()));
            }
        }
        Ok(dumps)
    }
}
