//! Key and ciphertext files: tfhe's versioned safe serialization (a header naming the type
//! and its version, a size limit on reading), followed by a CRC-32 of everything before it.
//!
//! Reading a file checks, in order: the checksum (truncated or damaged files), the type name
//! (a server key given where a client key is expected, or any other file), the version, and
//! the size limit. Which model and which key pair a file belongs to is checked by the
//! caller ([`crate::CompiledModel::check_key`] and the ids in the ciphertext files).

use crate::error::{Error, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::Path;
use tfhe::named::Named;
use tfhe::safe_serialization::{safe_deserialize, safe_serialize};
use tfhe_versionable::{Unversionize, Versionize};

/// Largest key file read (bytes).
pub const KEY_LIMIT: u64 = 1 << 33;
/// Largest ciphertext file read (bytes).
pub const CT_LIMIT: u64 = 1 << 32;

/// Writes `obj` to `path`.
///
/// # Errors
/// [`Error::Write`] naming the file.
pub fn save<T: Serialize + Versionize + Named>(obj: &T, path: &Path) -> Result<u64> {
    let w = |reason: String| Error::Write {
        path: path.display().to_string(),
        reason,
    };
    let mut bytes = Vec::new();
    safe_serialize(obj, &mut bytes, u64::MAX).map_err(|e| w(e.to_string()))?;
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    std::fs::write(path, &bytes).map_err(|e| w(e.to_string()))?;
    Ok(bytes.len() as u64)
}

/// Reads a `what` (e.g. "client key") from `path`.
///
/// # Errors
/// [`Error::Artifact`] naming the file: missing, truncated or corrupt, of another kind, or
/// over `limit` bytes.
pub fn load<T: DeserializeOwned + Unversionize + Named>(
    path: &Path,
    what: &str,
    limit: u64,
) -> Result<T> {
    let bad = |reason: String| Error::Artifact {
        path: path.display().to_string(),
        reason,
    };
    let len = std::fs::metadata(path)
        .map_err(|e| bad(format!("cannot open: {e}")))?
        .len();
    if len > limit {
        return Err(bad(format!(
            "{len} bytes, more than the {limit} a {what} may have"
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    let Some(split) = bytes.len().checked_sub(4) else {
        return Err(bad(format!("too short to be a {what}")));
    };
    let (body, crc) = bytes.split_at(split);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return Err(bad(format!(
            "not an fhec {what}, or truncated or corrupt (checksum mismatch); make it again"
        )));
    }
    safe_deserialize(body, limit).map_err(|e| bad(format!("not an fhec {what}: {e}")))
}
