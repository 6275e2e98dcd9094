//! Reading an untrusted file whole, after checking its size against a cap.

use std::path::Path;

/// The bytes of `path`, refused when the file is larger than `limit`; `what` names the kind
/// of file with its article ("a compiled model"). The error is the reason only.
pub(crate) fn read_capped(path: &Path, limit: u64, what: &str) -> Result<Vec<u8>, String> {
    let len = std::fs::metadata(path)
        .map_err(|e| format!("cannot open: {e}"))?
        .len();
    if len > limit {
        return Err(format!(
            "{len} bytes, more than the {limit} {what} may have"
        ));
    }
    std::fs::read(path).map_err(|e| format!("cannot read: {e}"))
}
