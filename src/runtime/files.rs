//! Key and ciphertext files: tfhe's versioned safe serialization (a header naming the type
//! and its version, a size limit on reading), followed by a CRC-32 of everything before it.
//!
//! Reading a file checks, in order: the checksum (truncated or damaged files), the type name
//! (a server key given where a client key is expected, or any other file), the version, and
//! the size limit. Which model and which key pair a file belongs to is checked by the
//! caller ([`crate::CompiledModel::check_key`] and the ids in the ciphertext files).

use crate::fsio::{read_capped, ReadError};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::Path;
use tfhe::conformance::ParameterSetConformant;
use tfhe::named::Named;
use tfhe::safe_serialization::{safe_deserialize_conformant, safe_serialize};
use tfhe_versionable::{Unversionize, Versionize};

/// Largest key file read (bytes).
pub const KEY_LIMIT: u64 = 1 << 33;
/// Largest ciphertext file read (bytes).
pub const CT_LIMIT: u64 = 1 << 32;

/// Why a key or ciphertext file cannot be read or written (names the file).
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("`{path}`: {reason}")]
    Read { path: String, reason: ReadError },
    #[error("cannot write `{path}`: {reason}")]
    Write { path: String, reason: String },
    #[error("`{path}`: {reason}")]
    Invalid { path: String, reason: DecodeError },
}

/// What is wrong with the bytes of a key or ciphertext file (`what` names its kind).
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("too short to be a {what}")]
    TooShort { what: String },
    #[error("not an fhec {what}, or truncated or corrupt (checksum mismatch); make it again")]
    Checksum { what: String },
    #[error("a {what} whose dimensions do not match this model's parameters (made for another model or compile settings, or corrupt); make keys and ciphertexts for this model again")]
    Dimensions { what: String },
    #[error("not an fhec {what}: {detail}")]
    Other { what: String, detail: String },
    #[error("cannot encode the {what}: {detail}")]
    Encode { what: String, detail: String },
}

type Result<T, E = FileError> = std::result::Result<T, E>;

/// Writes `obj` to `path` (atomically: a temporary file, synced, then renamed).
///
/// # Errors
/// [`FileError::Write`] naming the file.
pub fn save<T: Serialize + Versionize + Named>(obj: &T, path: &Path) -> Result<u64> {
    let w = |reason: String| FileError::Write {
        path: path.display().to_string(),
        reason,
    };
    let bytes = to_bytes(obj).map_err(|e| w(e.to_string()))?;
    crate::fsio::write_atomic(path, &bytes).map_err(|e| w(e.to_string()))?;
    Ok(bytes.len() as u64)
}

/// Reads a `what` (e.g. "client key") from `path` and checks it against `shape` (tfhe's
/// conformance checks: dimensions, decomposition parameters, list lengths), so that nothing
/// of the wrong size reaches the cryptographic code.
///
/// # Errors
/// [`FileError`] naming the file: missing, truncated or corrupt, of another kind, over
/// `limit` bytes, or not conformant with `shape` (made for other parameters or another model).
pub fn load<T: DeserializeOwned + Unversionize + Named + ParameterSetConformant>(
    path: &Path,
    what: &str,
    limit: u64,
    shape: &T::ParameterSet,
) -> Result<T> {
    let p = path.display().to_string();
    let bytes =
        read_capped(path, limit, &format!("a {what}")).map_err(|reason| FileError::Read {
            path: p.clone(),
            reason,
        })?;
    load_bytes(&bytes, what, limit, shape).map_err(|reason| FileError::Invalid { path: p, reason })
}

/// [`load`] on bytes in memory.
///
/// # Errors
/// As [`load`], without the file's name.
pub fn load_bytes<T: DeserializeOwned + Unversionize + Named + ParameterSetConformant>(
    bytes: &[u8],
    what: &str,
    limit: u64,
    shape: &T::ParameterSet,
) -> std::result::Result<T, DecodeError> {
    let what_s = || what.to_string();
    let Some(split) = bytes.len().checked_sub(4) else {
        return Err(DecodeError::TooShort { what: what_s() });
    };
    let (body, crc) = bytes.split_at(split);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return Err(DecodeError::Checksum { what: what_s() });
    }
    // bincode's size limit counts the bytes it reads: no valid object needs more than the
    // file holds, and a length prefix beyond it must fail before it allocates
    let limit = limit.min(body.len() as u64);
    safe_deserialize_conformant(body, limit, shape).map_err(|e| {
        if e.contains("conformant") {
            DecodeError::Dimensions { what: what_s() }
        } else {
            DecodeError::Other {
                what: what_s(),
                detail: e,
            }
        }
    })
}

/// Writes a secret file readable by its owner only (mode 0600 on Unix).
///
/// # Errors
/// [`FileError::Write`] naming the file.
pub fn save_secret<T: Serialize + Versionize + Named>(obj: &T, path: &Path) -> Result<u64> {
    let w = |reason: String| FileError::Write {
        path: path.display().to_string(),
        reason,
    };
    let bytes = to_bytes(obj).map_err(|e| w(e.to_string()))?;
    write_private(path, &bytes).map_err(|e| w(e.to_string()))?;
    Ok(bytes.len() as u64)
}

/// The file's bytes: tfhe's versioned safe serialization, then a CRC-32 of it.
///
/// # Errors
/// [`DecodeError::Encode`] (tfhe's serializer refused the object).
pub fn to_bytes<T: Serialize + Versionize + Named>(
    obj: &T,
) -> std::result::Result<Vec<u8>, DecodeError> {
    let mut bytes = Vec::new();
    safe_serialize(obj, &mut bytes, u64::MAX).map_err(|e| DecodeError::Encode {
        what: T::NAME.to_string(),
        detail: e.to_string(),
    })?;
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    Ok(bytes)
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // an existing file keeps its mode on open: tighten it before writing the secret
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(bytes)
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}
