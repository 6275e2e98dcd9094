//! `.npy` files in and out, with errors that name the file and the fix.

use crate::error::{Error, Result};
use ndarray::ArrayD;
use ndarray_npy::{ReadNpyError, ReadNpyExt, WriteNpyExt};
use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

fn open(path: &Path) -> Result<File> {
    File::open(path).map_err(|e| Error::Npy {
        path: path.display().to_string(),
        reason: format!("cannot open: {e}"),
    })
}

fn npy_err(path: &Path, e: ReadNpyError, want: &str) -> Error {
    let reason = match e {
        ReadNpyError::WrongDescriptor(d) => {
            format!(
                "holds {d:?}, expected {want} (save it with `np.save(path, x.astype(np.{want}))`)"
            )
        }
        other => format!("not a readable .npy file ({other})"),
    };
    Error::Npy {
        path: path.display().to_string(),
        reason,
    }
}

/// Reads a float32 `.npy` array.
///
/// # Errors
/// [`Error::Npy`] naming the file: missing, not `.npy`, or not float32.
pub fn read_f32(path: &Path) -> Result<ArrayD<f32>> {
    ArrayD::<f32>::read_npy(open(path)?).map_err(|e| npy_err(path, e, "float32"))
}

/// Reads integer class labels (int64, int32 or float32 holding integers).
///
/// # Errors
/// [`Error::Npy`] naming the file.
pub fn read_labels(path: &Path) -> Result<Vec<i64>> {
    if let Ok(a) = ArrayD::<i64>::read_npy(open(path)?) {
        return Ok(a.iter().copied().collect());
    }
    if let Ok(a) = ArrayD::<i32>::read_npy(open(path)?) {
        return Ok(a.iter().map(|&v| v as i64).collect());
    }
    let a = ArrayD::<f32>::read_npy(open(path)?).map_err(|e| npy_err(path, e, "int64"))?;
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
