//! `.npy` files in and out, with errors that name the file and the fix.

pub use crate::error::NpyError;
use crate::error::{Error, Result};
use ndarray::ArrayD;
use ndarray_npy::{ReadNpyError, ReadNpyExt, WriteNpyExt};
use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

/// Largest `.npy` file read (bytes).
pub const NPY_LIMIT: u64 = 1 << 32;

/// Reads a whole `.npy` file after checking that its header describes exactly the data that
/// follows: ndarray-npy allocates what the header declares before reading, so a 100-byte
/// file declaring 10^12 elements would otherwise exhaust memory.
fn read_checked(path: &Path) -> Result<Vec<u8>> {
    let bad = |reason: NpyError| Error::Npy {
        path: path.display().to_string(),
        reason,
    };
    let bytes =
        crate::fsio::read_capped(path, NPY_LIMIT, "an input file").map_err(|e| bad(e.into()))?;
    check_npy(&bytes).map_err(bad)?;
    Ok(bytes)
}

/// Checks an in-memory `.npy` file: a readable header whose shape and element size account
/// for exactly the bytes after it.
///
/// # Errors
/// [`NpyError`]: not `.npy`, an unsupported type, a size that disagrees with the data.
pub fn check_npy(bytes: &[u8]) -> std::result::Result<(), NpyError> {
    use ndarray_npy::npy::header::Header;
    check_header_shape(bytes)?;
    let mut rest = bytes;
    let header = Header::from_reader(&mut rest).map_err(|e| NpyError::Unreadable(e.to_string()))?;
    let desc = header.type_descriptor.to_string();
    let digits: String = desc
        .trim_matches(|c| c == '\'' || c == '"')
        .chars()
        .rev()
        .take_while(char::is_ascii_digit)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let elem: usize = digits.parse().map_err(|_| NpyError::Unsupported {
        found: desc.clone(),
    })?;
    let need = fhec_ir::checked_len(&header.shape)
        .and_then(|n| n.checked_mul(elem))
        .ok_or_else(|| NpyError::TooLarge {
            shape: header.shape.clone(),
        })?;
    if need != rest.len() {
        return Err(NpyError::Length {
            shape: header.shape.clone(),
            descr: desc,
            need,
            have: rest.len(),
        });
    }
    Ok(())
}

/// The header's dictionary must be a flat literal (`{'descr': …, 'fortran_order': …,
/// 'shape': (…), }`: one brace, brackets at most two deep), checked on the raw bytes before
/// ndarray-npy's parser sees it: its Python-literal grammar backtracks exponentially on
/// nested brackets (a fuzzed 113-byte header of `{{{{…` took over 10 s). The header may
/// hold printable ASCII and whitespace only, with no backslash and no triple quote (numpy
/// writes neither), so that a string ends at its next quote for the parser as for this
/// scan: a fuzzed `'descr\'…` hid `{{{{` in what the scan took for a string (32 s).
fn check_header_shape(bytes: &[u8]) -> std::result::Result<(), NpyError> {
    let bad = |why: &str| Err(NpyError::Unreadable(why.to_string()));
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return bad("no .npy magic");
    }
    let (len, start): (usize, usize) = match bytes[6] {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return bad(&format!("format version {v}")),
    };
    let Some(header) = bytes.get(start..start.saturating_add(len)) else {
        return bad("the header is truncated");
    };
    if header
        .iter()
        .any(|&c| c == b'\\' || !(c.is_ascii_graphic() || c.is_ascii_whitespace()))
    {
        return bad(
            "the header holds bytes numpy never writes (a backslash, a control or non-ASCII byte)",
        );
    }
    if header.windows(3).any(|w| w == b"\'\'\'" || w == b"\"\"\"") {
        return bad("the header holds a triple-quoted string");
    }
    let (mut depth, mut braces, mut in_str) = (0usize, 0usize, None::<u8>);
    for &c in header {
        match (in_str, c) {
            (Some(q), _) if c == q => in_str = None,
            (Some(_), _) => {}
            (None, b'\'' | b'"') => in_str = Some(c),
            (None, b'{' | b'(' | b'[') => {
                depth += 1;
                braces += usize::from(c == b'{');
                if depth > 2 || braces > 1 {
                    return bad("the header is not a flat dictionary");
                }
            }
            (None, b'}' | b')' | b']') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

fn npy_reason(e: ReadNpyError, want: &'static str) -> NpyError {
    match e {
        ReadNpyError::WrongDescriptor(d) => NpyError::WrongType {
            found: format!("{d:?}"),
            want,
        },
        other => NpyError::Unreadable(other.to_string()),
    }
}

fn npy_err(path: &Path, e: ReadNpyError, want: &'static str) -> Error {
    Error::Npy {
        path: path.display().to_string(),
        reason: npy_reason(e, want),
    }
}

/// Reads a float32 `.npy` array.
///
/// # Errors
/// [`Error::Npy`] naming the file: missing, not `.npy`, or not float32.
pub fn read_f32(path: &Path) -> Result<ArrayD<f32>> {
    let bytes = read_checked(path)?;
    ArrayD::<f32>::read_npy(bytes.as_slice()).map_err(|e| npy_err(path, e, "float32"))
}

/// Parses an in-memory float32 `.npy` file (what [`read_f32`] does after reading it).
///
/// # Errors
/// [`NpyError`].
pub fn parse_f32(bytes: &[u8]) -> std::result::Result<ArrayD<f32>, NpyError> {
    check_npy(bytes)?;
    ArrayD::<f32>::read_npy(bytes).map_err(|e| npy_reason(e, "float32"))
}

/// Writes a float32 array as `.npy` bytes (what [`write_f32`] writes to a file).
///
/// # Errors
/// [`NpyError::Unreadable`] (the encoder refused the array; a bug).
pub fn to_bytes_f32(a: &ArrayD<f32>) -> std::result::Result<Vec<u8>, NpyError> {
    let mut out = Vec::new();
    a.write_npy(&mut out)
        .map_err(|e| NpyError::Unreadable(e.to_string()))?;
    Ok(out)
}

/// Reads integer class labels (int64, int32 or float32 holding integers).
///
/// # Errors
/// [`Error::Npy`] naming the file.
pub fn read_labels(path: &Path) -> Result<Vec<i64>> {
    let bytes = read_checked(path)?;
    if let Ok(a) = ArrayD::<i64>::read_npy(bytes.as_slice()) {
        return Ok(a.iter().copied().collect());
    }
    if let Ok(a) = ArrayD::<i32>::read_npy(bytes.as_slice()) {
        return Ok(a.iter().map(|&v| v as i64).collect());
    }
    let a = ArrayD::<f32>::read_npy(bytes.as_slice()).map_err(|e| npy_err(path, e, "int64"))?;
    Ok(a.iter().map(|&v| v as i64).collect())
}

/// Writes a float32 `.npy` array.
///
/// # Errors
/// [`Error::Write`] naming the file.
pub fn write_f32(path: &Path, a: &ArrayD<f32>) -> Result<()> {
    let w = |e: String| Error::Write {
        path: path.display().to_string(),
        reason: e,
    };
    let f = File::create(path).map_err(|e| w(e.to_string()))?;
    a.write_npy(BufWriter::new(f)).map_err(|e| w(e.to_string()))
}
