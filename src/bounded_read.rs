//! Reading an untrusted file whole, after checking its size against a cap.

use std::path::Path;

/// Why a capped read failed (the caller names the file).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot open: {0}")]
    Open(std::io::Error),
    #[error("{size} bytes, more than the {limit} {what} may have")]
    TooLarge { size: u64, limit: u64, what: String },
    #[error("cannot read: {0}")]
    Read(std::io::Error),
}

/// The bytes of `path`, refused when the file is larger than `limit`; `what` names the kind
/// of file with its article ("a compiled model").
pub(crate) fn read_capped(path: &Path, limit: u64, what: &str) -> Result<Vec<u8>, ReadError> {
    let size = std::fs::metadata(path).map_err(ReadError::Open)?.len();
    if size > limit {
        return Err(ReadError::TooLarge {
            size,
            limit,
            what: what.to_string(),
        });
    }
    std::fs::read(path).map_err(ReadError::Read)
}
