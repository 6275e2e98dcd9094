//! ONNX external data: tensors whose bytes live in files beside the model (the
//! `TensorProto.external_data` keys `location`, `offset`, `length`; torch's dynamo exporter
//! writes `m.onnx.data` this way by default).
//!
//! A location is read relative to the model's own folder, and only there: absolute paths,
//! `..` components and symlinks that resolve outside the folder are refused, as are byte
//! ranges beyond the file and lengths that disagree with the tensor's type and shape. The
//! tensor's size is checked against the limits before a byte is read.

use super::ImportError;
use fhec_ir::Limits;
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};
use tract_onnx::pb;
use tract_onnx::pb::tensor_proto::DataType as D;

/// Where an imported model's external tensors are read from.
#[derive(Clone, Debug, Default)]
pub enum ExternalData {
    /// Nowhere: a model in memory with no folder; an external tensor is refused with the fix.
    #[default]
    None,
    /// The model's own folder (what [`super::import_file`] uses: the `.onnx` file's folder).
    Dir(PathBuf),
    /// Files held in memory, by their `location` (e.g. `m.onnx.data`).
    Files(HashMap<String, Vec<u8>>),
}

/// Whether a tensor keeps its bytes in an external file.
pub fn is_external(t: &pb::TensorProto) -> bool {
    t.data_location == Some(pb::tensor_proto::DataLocation::External as i32)
}

/// Bytes per element of an ONNX element type as stored raw (`None`: a type fhec does not
/// read).
fn elem_size(code: i32) -> Option<u64> {
    Some(match D::try_from(code).ok()? {
        D::Double | D::Int64 | D::Uint64 => 8,
        D::Float | D::Int32 | D::Uint32 => 4,
        D::Float16 | D::Bfloat16 | D::Int16 | D::Uint16 => 2,
        D::Int8 | D::Uint8 | D::Bool => 1,
        _ => return None,
    })
}

/// A copy of `t` with its external bytes read into `raw_data`, after every check.
///
/// # Errors
/// [`ImportError::External`] naming the tensor and the file: no folder to read from, a
/// location that escapes the model's folder, a missing file, a range beyond the file, a
/// length that disagrees with the tensor's type and shape, a tensor over `limits`.
pub fn resolve(
    t: &pb::TensorProto,
    ext: &ExternalData,
    limits: &Limits,
) -> Result<pb::TensorProto, ImportError> {
    let name = if t.name.is_empty() {
        "<unnamed>"
    } else {
        t.name.as_str()
    };
    let mut location = None;
    let mut offset = 0u64;
    let mut length = None;
    for e in &t.external_data {
        let number = |what: &str| {
            e.value.parse::<u64>().map_err(|_| ImportError::External {
                tensor: name.to_string(),
                path: location.clone().unwrap_or_default(),
                reason: format!(
                    "its external-data `{what}` is `{}`, not a byte count",
                    e.value
                ),
            })
        };
        match e.key.as_str() {
            "location" => location = Some(e.value.clone()),
            "offset" => offset = number("offset")?,
            "length" => length = Some(number("length")?),
            _ => {} // `checksum` and anything newer: not needed to read the bytes
        }
    }
    let Some(location) = location else {
        return Err(ImportError::External {
            tensor: name.to_string(),
            path: String::new(),
            reason: "its external data has no `location`; re-save the model with onnx.save".into(),
        });
    };
    let bad = |reason: String| ImportError::External {
        tensor: name.to_string(),
        path: location.clone(),
        reason,
    };
    // the size the tensor's type and shape need, checked against the limits before reading
    let size = elem_size(t.data_type).ok_or_else(|| {
        bad(format!(
            "element type {} is not supported",
            super::tensor::elem_type_name(t.data_type)
        ))
    })?;
    let mut shape = Vec::with_capacity(t.dims.len());
    for &d in &t.dims {
        shape.push(usize::try_from(d).map_err(|_| bad(format!("negative dimension {d}")))?);
    }
    let count = limits
        .check_tensor("its shape", &shape)
        .map_err(|e| bad(e.to_string()))?;
    let need = (count as u64)
        .checked_mul(size)
        .ok_or_else(|| bad("its byte size overflows".into()))?;
    if let Some(len) = length.filter(|&l| l != need) {
        return Err(bad(format!(
            "external-data length {len} disagrees with its type and shape ({} × {size} bytes = {need}); re-export the model",
            count
        )));
    }
    let end = offset
        .checked_add(need)
        .ok_or_else(|| bad(format!("offset {offset} overflows")))?;
    check_location(&location).map_err(|r| bad(r.0))?;
    let bytes = match ext {
        ExternalData::None => {
            return Err(bad(
                "stored in an external file, but the model was given without its folder; load it from its file (the data beside it) or pass its folder".into(),
            ))
        }
        ExternalData::Dir(dir) => {
            read_range(dir, &location, offset, need, end).map_err(|r| bad(r.0))?
        }
        ExternalData::Files(files) => {
            let key = normalize(&location);
            let data = files
                .iter()
                .find(|(k, _)| normalize(k) == key)
                .map(|(_, v)| v)
                .ok_or_else(|| {
                    bad("no such external file was given with the model".to_string())
                })?;
            if end > data.len() as u64 {
                return Err(bad(format!(
                    "bytes [{offset}, {end}) are beyond the end of the file ({} bytes)",
                    data.len()
                )));
            }
            data[offset as usize..end as usize].to_vec()
        }
    };
    let mut out = t.clone();
    out.external_data.clear();
    out.data_location = None;
    out.raw_data = bytes;
    Ok(out)
}

/// Why an external file is refused (the caller names the tensor and the path).
struct Refused(String);

/// A location as ONNX defines it: a relative POSIX path inside the model's folder.
fn check_location(location: &str) -> Result<(), Refused> {
    let escapes = || {
        Refused(format!(
            "location `{location}` is outside the model's folder; external data must sit in the model's folder or below it"
        ))
    };
    if location.is_empty() || location.contains('\0') {
        return Err(Refused("empty or malformed external-data location".into()));
    }
    // absolute paths, Windows drive and UNC prefixes, and `..` anywhere
    let bytes = location.as_bytes();
    if location.starts_with('/')
        || location.starts_with('\\')
        || (bytes.len() >= 2 && bytes[1] == b':')
        || location.split(['/', '\\']).any(|c| c == "..")
    {
        return Err(escapes());
    }
    if Path::new(location)
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(escapes());
    }
    Ok(())
}

/// `a/./b` and `a/b` name the same file.
fn normalize(location: &str) -> String {
    location
        .split(['/', '\\'])
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// Reads `[offset, end)` of `dir/location`, after resolving symlinks and checking that the
/// file is a regular file inside `dir`.
fn read_range(
    dir: &Path,
    location: &str,
    offset: u64,
    need: u64,
    end: u64,
) -> Result<Vec<u8>, Refused> {
    let io = |what: &str, p: &Path, e: std::io::Error| {
        Refused(format!("cannot {what} `{}`: {e}", p.display()))
    };
    let root = dir
        .canonicalize()
        .map_err(|e| io("open the model's folder", dir, e))?;
    let path = root.join(normalize(location));
    let real = path.canonicalize().map_err(|e| io("open", &path, e))?;
    if !real.starts_with(&root) {
        return Err(Refused(format!(
            "`{}` resolves to `{}`, outside the model's folder; external data must sit in the model's folder",
            path.display(),
            real.display()
        )));
    }
    let mut f = std::fs::File::open(&real).map_err(|e| io("open", &real, e))?;
    let meta = f.metadata().map_err(|e| io("read", &real, e))?;
    if !meta.is_file() {
        return Err(Refused(format!(
            "`{}` is not a regular file",
            real.display()
        )));
    }
    if end > meta.len() {
        return Err(Refused(format!(
            "bytes [{offset}, {end}) are beyond the end of `{}` ({} bytes)",
            real.display(),
            meta.len()
        )));
    }
    f.seek(SeekFrom::Start(offset))
        .map_err(|e| io("read", &real, e))?;
    let mut buf = vec![0u8; need as usize];
    f.read_exact(&mut buf).map_err(|e| io("read", &real, e))?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_that_escape_are_refused() {
        for bad in [
            "../w.bin",
            "a/../../w.bin",
            "/etc/passwd",
            "\\\\host\\share",
            "C:\\w.bin",
            "a\\..\\..\\w",
            "",
        ] {
            assert!(check_location(bad).is_err(), "{bad}");
        }
        for good in ["m.onnx.data", "./weights/m.bin", "sub/dir/w.bin"] {
            assert!(check_location(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn locations_normalize() {
        assert_eq!(normalize("./a//b/./c"), "a/b/c");
        assert_eq!(normalize("a\\b"), "a/b");
    }
}
