//! The `.fhe` file: magic, format version, payload length, CRC-32 of the payload, then the
//! payload (bincode, fixed-width integers, with a size limit).
//!
//! Payload of format 12: the float graph, the integer program, the client head, the input
//! quantizers, the encrypted-program settings, the stored TFHE parameters, and the compile
//! report as JSON (metadata: new report fields need no new format). Format 11 (the report
//! in bincode, without `import_notes` and `auto`) is upgraded on load; older formats changed
//! the quantization config's layout and are refused with the version named.
//!
//! Loading checks everything the code relies on, whatever the file says: both graphs
//! re-verify under the limits, the quantizers match the program's inputs, the client head
//! holds only elementwise arithmetic, the settings are in range. The stored parameters are
//! checked against the program when the plan is first made ([`CompiledModel::plan`]).

use super::CompileReport;
use super::{CompiledModel, Inner};
use crate::backend::params::Choice;
use crate::backend::FheOptions;
use crate::error::{ArtifactError, FormatError};
use fhec_ir::{Graph, Limits, Op, QuantParams};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::OnceLock;

const MAGIC: &[u8; 8] = b"FHEC\x00MDL";
/// Largest compiled-model file read (bytes).
pub const MODEL_LIMIT: u64 = 1 << 32;
/// The format this fhec writes (12: the report as JSON, with `import_notes` and `auto`).
pub const FORMAT_VERSION: u32 = 12;
/// The oldest format this fhec reads (upgraded on load).
const OLDEST_READ: u32 = 11;

/// Format 12's payload, as written.
#[derive(Serialize)]
struct PayloadRef<'a> {
    float_graph: &'a Graph,
    program: &'a Graph,
    head: &'a Option<Graph>,
    input_quant: &'a [QuantParams],
    fhe: &'a FheOptions,
    params: &'a Option<Choice>,
    report_json: String,
}

/// Format 12's payload, as read.
#[derive(Deserialize)]
struct Payload {
    float_graph: Graph,
    program: Graph,
    head: Option<Graph>,
    input_quant: Vec<QuantParams>,
    fhe: FheOptions,
    params: Option<Choice>,
    report_json: String,
}

/// Format 11, for upgrading: the report in bincode, before `import_notes` and `auto`.
mod v11 {
    use crate::artifact::{CompileReport, LayerReport};
    use crate::backend::params::Choice;
    use crate::backend::FheOptions;
    use fhec_ir::{Graph, QuantParams};
    use fhec_passes::QuantConfig;
    use std::collections::BTreeMap;

    #[derive(serde::Deserialize)]
    pub struct Report {
        model: String,
        config: QuantConfig,
        layers: Vec<LayerReport>,
        pbs_count: usize,
        max_tlu_bits: u32,
        outputs: Vec<(String, u32)>,
        client_ops: BTreeMap<String, usize>,
        client_head: Vec<String>,
        shifts: Vec<(String, u32, bool)>,
        pruned: Vec<(String, usize)>,
        calib_agreement: Option<f64>,
    }

    #[derive(serde::Deserialize)]
    pub struct Model {
        pub float_graph: Graph,
        pub program: Graph,
        pub head: Option<Graph>,
        pub input_quant: Vec<QuantParams>,
        pub report: Report,
        pub fhe: FheOptions,
        pub params: Option<Choice>,
    }

    impl From<Report> for CompileReport {
        fn from(r: Report) -> Self {
            CompileReport {
                model: r.model,
                config: r.config,
                layers: r.layers,
                pbs_count: r.pbs_count,
                max_tlu_bits: r.max_tlu_bits,
                outputs: r.outputs,
                client_ops: r.client_ops,
                client_head: r.client_head,
                shifts: r.shifts,
                pruned: r.pruned,
                calib_agreement: r.calib_agreement,
                import_notes: Vec::new(),
                auto: Vec::new(),
            }
        }
    }
}

/// bincode with a size limit: a corrupt length prefix fails instead of allocating.
fn bincode_options(limit: u64) -> impl bincode::Options {
    use bincode::Options;
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_limit(limit)
}

impl CompiledModel {
    /// The artifact's bytes (magic, version, length, checksum, payload).
    ///
    /// # Errors
    /// [`ArtifactError::NoPlan`] for a model compiled without TFHE parameters.
    pub fn to_bytes(&self) -> Result<Vec<u8>, ArtifactError> {
        use bincode::Options as _;
        let i = &self.0;
        if i.params.is_none() {
            return Err(ArtifactError::NoPlan);
        }
        let report_json = serde_json::to_string(&i.report).map_err(|e| ArtifactError::Write {
            path: "<memory>".into(),
            reason: format!("cannot encode the report: {e}"),
        })?;
        let body = bincode_options(u64::MAX)
            .serialize(&PayloadRef {
                float_graph: &i.float_graph,
                program: &i.program,
                head: &i.head,
                input_quant: &i.input_quant,
                fhe: &i.fhe,
                params: &i.params,
                report_json,
            })
            .map_err(|e| ArtifactError::Write {
                path: "<memory>".into(),
                reason: e.to_string(),
            })?;
        let mut out = Vec::with_capacity(body.len() + 24);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Writes the artifact (serialization only: the parameters were chosen at compile
    /// time), atomically: a temporary file beside `path`, synced, then renamed.
    ///
    /// # Errors
    /// [`ArtifactError::Write`] naming the file; [`ArtifactError::NoPlan`].
    pub fn save(&self, path: &Path) -> Result<(), ArtifactError> {
        let bytes = self.to_bytes()?;
        crate::fsio::write_atomic(path, &bytes).map_err(|e| ArtifactError::Write {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    }

    /// Reads an artifact under the default size limits.
    ///
    /// # Errors
    /// As [`CompiledModel::load_with_limits`].
    pub fn load(path: &Path) -> Result<Self, ArtifactError> {
        Self::load_with_limits(path, &Limits::default())
    }

    /// Reads an artifact; its graphs must fit `limits`.
    ///
    /// # Errors
    /// [`ArtifactError`] naming the file: unreadable or too large, not an fhec model, a
    /// format this fhec does not read, truncated, corrupt, inconsistent.
    pub fn load_with_limits(path: &Path, limits: &Limits) -> Result<Self, ArtifactError> {
        let p = path.display().to_string();
        let bytes =
            crate::fsio::read_capped(path, MODEL_LIMIT, "a compiled model").map_err(|reason| {
                ArtifactError::Read {
                    path: p.clone(),
                    reason,
                }
            })?;
        Self::from_bytes(&bytes, limits)
            .map_err(|reason| ArtifactError::Invalid { path: p, reason })
    }

    /// Decodes an artifact in memory (upgrading format 11) and checks its structure.
    ///
    /// # Errors
    /// [`FormatError`]: not an fhec model, a format this fhec does not read, truncated,
    /// corrupt, inconsistent.
    pub fn from_bytes(bytes: &[u8], limits: &Limits) -> Result<Self, FormatError> {
        use bincode::Options as _;
        let Some((head, body)) = bytes.split_at_checked(24) else {
            return Err(FormatError::TooShort);
        };
        if &head[..8] != MAGIC {
            return Err(FormatError::Magic);
        }
        let word = |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        let version = word(8);
        if version > FORMAT_VERSION {
            return Err(FormatError::Newer {
                found: version,
                oldest: OLDEST_READ,
                current: FORMAT_VERSION,
            });
        }
        if version < OLDEST_READ {
            return Err(FormatError::Older {
                found: version,
                oldest: OLDEST_READ,
                current: FORMAT_VERSION,
            });
        }
        let len = u64::from(word(12)) | (u64::from(word(16)) << 32);
        if body.len() as u64 != len {
            return Err(FormatError::Length {
                payload: body.len() as u64,
                header: len,
            });
        }
        if crc32fast::hash(body) != word(20) {
            return Err(FormatError::Checksum);
        }
        let payload = |e: bincode::Error| FormatError::Payload(e.to_string());
        let inner = if version == 11 {
            let m: v11::Model = bincode_options(len).deserialize(body).map_err(payload)?;
            Inner {
                float_graph: m.float_graph,
                program: m.program,
                head: m.head,
                input_quant: m.input_quant,
                report: m.report.into(),
                fhe: m.fhe,
                params: m.params,
                plan: OnceLock::new(),
            }
        } else {
            let m: Payload = bincode_options(len).deserialize(body).map_err(payload)?;
            let report: CompileReport =
                serde_json::from_str(&m.report_json).map_err(|e| FormatError::Structure {
                    what: "report",
                    reason: e.to_string(),
                })?;
            Inner {
                float_graph: m.float_graph,
                program: m.program,
                head: m.head,
                input_quant: m.input_quant,
                report,
                fhe: m.fhe,
                params: m.params,
                plan: OnceLock::new(),
            }
        };
        let inner = check_structure(inner, limits)?;
        Ok(Self::from_parts(inner))
    }
}

/// Checks what a loaded model's code relies on, whatever the file said: both graphs verify
/// (types, attributes, sizes within `limits`), the client's quantizers match the program's
/// inputs, the client head holds only elementwise arithmetic, the settings are valid.
fn check_structure(mut m: Inner, limits: &Limits) -> Result<Inner, FormatError> {
    let corrupt = |what: &'static str, reason: String| FormatError::Structure { what, reason };
    m.program.limits = *limits;
    m.float_graph.limits = *limits;
    m.program
        .verify()
        .map_err(|e| corrupt("program", e.to_string()))?;
    m.float_graph
        .verify()
        .map_err(|e| corrupt("float graph", e.to_string()))?;
    if m.input_quant.len() != m.program.inputs.len()
        || m.float_graph.inputs.len() != m.program.inputs.len()
    {
        return Err(corrupt(
            "model",
            format!(
                "{} input quantizer(s) for {} program and {} float input(s)",
                m.input_quant.len(),
                m.program.inputs.len(),
                m.float_graph.inputs.len()
            ),
        ));
    }
    if let Some((i, q)) = m
        .input_quant
        .iter()
        .enumerate()
        .find(|(_, q)| !q.is_valid())
    {
        return Err(corrupt("model", format!("input quantizer {i} is {q:?}")));
    }
    if let Some(h) = &mut m.head {
        h.limits = *limits;
        h.verify()
            .map_err(|e| corrupt("client head", e.to_string()))?;
        // only what client_head cuts: elementwise arithmetic with constants, clips
        let ok_op = |op: &Op| {
            matches!(op, Op::Input { .. } | Op::Const(_))
                || fhec_passes::client_head::is_head_op(op)
        };
        if let Some(n) = h.g.node_weights().find(|n| !ok_op(&n.op)) {
            return Err(corrupt(
                "client head",
                format!(
                    "`{}` is a {}, not elementwise arithmetic",
                    n.name,
                    n.op.name()
                ),
            ));
        }
        let fits = h.inputs.len() == m.float_graph.inputs.len()
            && h.outputs.len() == m.program.inputs.len()
            && h.outputs
                .iter()
                .zip(&m.program.inputs)
                .all(|(o, i)| h.g[o.node].ty.shape == m.program.g[i.node].ty.shape);
        if !fits {
            return Err(corrupt(
                "client head",
                "it does not map the model's inputs to the program's".into(),
            ));
        }
    }
    m.fhe
        .validate()
        .map_err(|e| corrupt("settings", e.to_string()))?;
    Ok(m)
}
