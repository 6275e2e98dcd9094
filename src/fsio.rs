//! Files: reading an untrusted file whole after checking its size against a cap, and
//! writing a file atomically.

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

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, flushed to
/// disk, then renamed over `path` (a crash leaves the old file or the new one, never half).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
