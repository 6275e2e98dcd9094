//! Entry points of the fuzz targets (`fuzz/`), one per untrusted input format: ONNX models,
//! `.npy` arrays, compiled models (`.fhe`), key files and ciphertext files.
//!
//! Each takes arbitrary bytes and must return, never panic, abort, hang or allocate without
//! bound. They run what a real command runs on a file that loads: an imported model is
//! evaluated, a compiled model is lowered and run in the clear, a key is expanded. The fuzz
//! targets call them under libFuzzer; `tests/it/hostile.rs` replays every committed corpus
//! file and every crash the fuzzers found through them.
//!
//! Sizes are capped lower than the command line's defaults ([`fuzz_limits`]) so that one
//! input runs in milliseconds; the caps are the same code paths as `--max-elements`.

use crate::backend::params::{ExtractParams, FheParams};
use crate::backend::{lower, Rounding};
use crate::runtime::files::{load_bytes, CT_LIMIT, KEY_LIMIT};
use crate::runtime::{
    CiphertextShape, ClientKey, CompressedServerKey, EncryptedInputs, EncryptedOutputs, KeyShape,
};
use crate::CompiledModel;
use fhec_ir::Limits;
use ndarray::{ArrayD, IxDyn};

/// The limits the fuzz targets import and load under: 2^16 elements per tensor, 2^20 in
/// all, 2^24 multiply-accumulates per node.
pub fn fuzz_limits() -> Limits {
    Limits {
        max_tensor_elements: 1 << 16,
        max_total_elements: 1 << 20,
        max_node_macs: 1 << 24,
    }
}

/// A batch of one all-zero sample for every graph input (after a successful import or load).
fn zero_batch(g: &fhec_ir::Graph) -> Vec<ArrayD<f32>> {
    g.inputs
        .iter()
        .map(|i| ArrayD::zeros(IxDyn(&g.g[i.node].ty.shape)))
        .collect()
}

/// ONNX bytes: import under [`fuzz_limits`], run the float interpreter on zeros, then
/// compile (every pass, calibrated on that zero sample) and lower the integer program.
pub fn onnx(data: &[u8]) {
    let opts = crate::import::ImportOptions {
        limits: fuzz_limits(),
        ..Default::default()
    };
    let Ok(graph) = crate::import::import_bytes_with(data, "fuzz.onnx", &opts) else {
        return;
    };
    let zeros = zero_batch(&graph);
    let model = crate::Model::new(graph, "fuzz.onnx");
    if model.run_float(&zeros).is_err() {
        return;
    }
    // the passes (a parameter search per input would be slow), then the lowering
    if let Ok(m) = crate::quantize_model(&model, &zeros, &crate::QuantConfig::default()) {
        let _ = lower(m.program(), m.input_quant(), Rounding::Exact);
    }
}

/// `.npy` bytes: the checked parser the CLI uses.
pub fn npy(data: &[u8]) {
    let _ = crate::npy::parse_f32(data);
}

/// The bytes with their checksum made valid, so that mutations reach the decoders behind
/// it (a `.fhe` header's version, length and CRC-32, or a key or ciphertext file's CRC-32
/// trailer).
fn with_valid_checksum(data: &[u8], fhe_header: bool) -> Option<Vec<u8>> {
    let mut v = data.to_vec();
    if fhe_header {
        let body_len = v.len().checked_sub(24)?;
        v[8..12].copy_from_slice(&crate::artifact::FORMAT_VERSION.to_le_bytes());
        v[12..20].copy_from_slice(&(body_len as u64).to_le_bytes());
        let crc = crc32fast::hash(&v[24..]);
        v[20..24].copy_from_slice(&crc.to_le_bytes());
    } else {
        let n = v.len().checked_sub(4)?;
        let crc = crc32fast::hash(&v[..n]);
        v[n..].copy_from_slice(&crc.to_le_bytes());
    }
    Some(v)
}

/// `.fhe` bytes, as they are and with a valid checksum: load and check under
/// [`fuzz_limits`], then lower the program (both rounding methods) and run clear mode on a
/// zero sample.
pub fn compiled_model(data: &[u8]) {
    let _ = CompiledModel::from_bytes(data, &fuzz_limits());
    let Some(fixed) = with_valid_checksum(data, true) else {
        return;
    };
    let Ok(m) = CompiledModel::from_bytes(&fixed, &fuzz_limits()) else {
        return;
    };
    let _ = lower(m.program(), m.input_quant(), Rounding::Exact);
    let _ = lower(m.program(), m.input_quant(), Rounding::Approximate);
    // stored parameters are checked, not searched (a search per input would be slow)
    if m.has_plan() {
        let _ = m.plan();
    }
    let _ = m.run_clear(&zero_batch(m.float_graph()));
}

/// Parameters of the fuzzed key and ciphertext files: tiny, so that a seed key is a few
/// kilobytes. **Not secure** — they only give the loaders a shape to check against; no
/// data is ever encrypted under them.
pub fn fuzz_params() -> FheParams {
    FheParams {
        lwe_dimension: 16,
        glwe_dimension: 1,
        polynomial_size: 256,
        pbs_base_log: 15,
        pbs_level: 2,
        ks_base_log: 4,
        ks_level: 3,
        lwe_std: 1e-5,
        glwe_std: 1e-9,
    }
}

/// The bit-extraction partition of the fuzzed keys: tiny too, **not secure**.
pub fn fuzz_extract_params() -> ExtractParams {
    ExtractParams {
        set: FheParams {
            lwe_dimension: 8,
            glwe_dimension: 1,
            polynomial_size: 256,
            pbs_base_log: 15,
            pbs_level: 1,
            ks_base_log: 4,
            ks_level: 2,
            lwe_std: 1e-5,
            glwe_std: 1e-9,
        },
        fks_base_log: 8,
        fks_level: 2,
    }
}

/// The key shape the key target checks against (two partitions).
pub fn fuzz_key_shape() -> KeyShape {
    KeyShape {
        params: fuzz_params(),
        extract: Some(fuzz_extract_params()),
        msg_bits: 6,
    }
}

/// The ciphertext shape the ciphertext target checks against (two lists of 3 and 1).
pub fn fuzz_ciphertext_shape() -> CiphertextShape {
    CiphertextShape {
        params: fuzz_params(),
        counts: vec![3, 1],
    }
}

/// Key-file bytes, as they are and with a valid checksum: load as a client key and as a
/// server key; a conformant server key is expanded (mask regeneration and Fourier
/// conversion) as `serve-run` does.
pub fn keys(data: &[u8]) {
    let shape = fuzz_key_shape();
    let _ = load_bytes::<ClientKey>(data, "client key", KEY_LIMIT, &shape);
    let Some(data) = with_valid_checksum(data, false) else {
        return;
    };
    let _ = load_bytes::<ClientKey>(&data, "client key", KEY_LIMIT, &shape);
    if let Ok(sk) = load_bytes::<CompressedServerKey>(&data, "server key", KEY_LIMIT, &shape) {
        let _ = sk.expand();
    }
}

/// Ciphertext-file bytes with a valid checksum: load as encrypted inputs (and decompress
/// them, as the server does) and as encrypted results.
pub fn ciphertexts(data: &[u8]) {
    let shape = fuzz_ciphertext_shape();
    let Some(data) = with_valid_checksum(data, false) else {
        return;
    };
    let data = data.as_slice();
    if let Ok(cts) = load_bytes::<EncryptedInputs>(data, "encrypted input", CT_LIMIT, &shape) {
        for s in &cts.samples {
            for list in s {
                let _ = list.clone().decompress_into_lwe_ciphertext_list();
            }
        }
    }
    let _ = load_bytes::<EncryptedOutputs>(data, "encrypted result", CT_LIMIT, &shape);
}

/// A fuzz target's entry point.
pub type Target = fn(&[u8]);

/// The target function of each fuzz target, by name (the replay test walks them all).
pub const TARGETS: &[(&str, Target)] = &[
    ("onnx", onnx),
    ("npy", npy),
    ("compiled_model", compiled_model),
    ("keys", keys),
    ("ciphertexts", ciphertexts),
];
