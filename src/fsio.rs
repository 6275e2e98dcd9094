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
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(ReadError::Open)?;
    let size = file.metadata().map_err(ReadError::Open)?.len();
    let too_large = |size| ReadError::TooLarge {
        size,
        limit,
        what: what.to_string(),
    };
    if size > limit {
        return Err(too_large(size));
    }
    // The length a regular file reports may change, and a pipe or device reports none: read
    // at most one byte past the cap whatever the metadata said.
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(ReadError::Read)?;
    if bytes.len() as u64 > limit {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, flushed to
/// disk, then renamed over `path` (a crash leaves the old file or the new one, never half).
/// A `path` that exists and is not a regular file (`/dev/null`, a pipe) is written in place:
/// renaming over it would replace the device with a file.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    if let Ok(meta) = std::fs::metadata(path) {
        if !meta.is_file() && !meta.is_dir() {
            return std::fs::OpenOptions::new()
                .write(true)
                .open(path)?
                .write_all(bytes);
        }
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.{}-{}.tmp",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_device_is_written_in_place_not_replaced() {
        use std::os::unix::fs::FileTypeExt;
        write_atomic(Path::new("/dev/null"), b"model bytes").unwrap();
        let meta = std::fs::metadata("/dev/null").unwrap();
        assert!(meta.file_type().is_char_device(), "/dev/null was replaced");
    }

    #[cfg(unix)]
    #[test]
    fn an_endless_file_is_refused_at_the_cap() {
        // /dev/zero reports length 0 and never ends
        let err = read_capped(Path::new("/dev/zero"), 1000, "an input file").unwrap_err();
        assert!(
            matches!(err, ReadError::TooLarge { limit: 1000, .. }),
            "{err}"
        );
    }

    #[test]
    fn a_file_is_replaced_whole_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("fhec-fsio-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.fhe");
        write_atomic(&path, b"old").unwrap();
        write_atomic(&path, b"new bytes").unwrap();
        assert_eq!(read_capped(&path, 9, "a file").unwrap(), b"new bytes");
        assert!(read_capped(&path, 8, "a file").is_err());
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(names.len(), 1, "a temporary file was left behind");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
