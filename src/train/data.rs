//! Training data: features and targets from `.npy` files or a CSV file with a header row,
//! checked (shapes, class indices, finite values) before training.

use super::Task;
use crate::error::TrainError;
use crate::{npy, Error, Result};
use ndarray::{Array2, ArrayD};
use std::path::Path;

/// Training data: features `[N, F]` and their targets.
pub struct Dataset {
    pub x: Array2<f32>,
    pub y: Targets,
    /// Where the data came from (for errors).
    pub source: String,
}

pub enum Targets {
    /// Class indices in `0..classes`.
    Classes(Vec<usize>, usize),
    /// Regression targets `[N, K]`.
    Values(Array2<f32>),
}

fn bad(path: &Path, reason: impl Into<String>) -> Error {
    TrainError::File {
        path: path.display().to_string(),
        reason: reason.into(),
    }
    .into()
}

/// Why training refused or failed.
/// Most classes a classifier may have (a label beyond is almost certainly not a class index).
pub const MAX_CLASSES: usize = 10_000;

/// Checks features and turns raw targets into [`Targets`] for `task`.
fn dataset(
    x: Array2<f32>,
    x_path: &Path,
    y: Vec<f64>,
    y_cols: usize,
    y_path: &Path,
    task: Task,
) -> Result<Dataset> {
    let n = x.nrows();
    if n < 2 || x.ncols() == 0 {
        return Err(bad(
            x_path,
            format!(
                "{} sample(s) of {} feature(s): training needs at least 2 samples and 1 feature",
                n,
                x.ncols()
            ),
        ));
    }
    if let Some((i, v)) = x.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(bad(
            x_path,
            format!(
                "row {}, column {} is {v}: remove or impute missing values before training",
                i / x.ncols(),
                i % x.ncols()
            ),
        ));
    }
    if y.len() != n * y_cols {
        return Err(bad(
            y_path,
            format!(
                "{} target row(s) for {n} feature row(s) in `{}`: give one target per sample",
                y.len() / y_cols.max(1),
                x_path.display()
            ),
        ));
    }
    if let Some((i, v)) = y.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(bad(
            y_path,
            format!(
                "target of row {} is {v}: every target must be a number",
                i / y_cols
            ),
        ));
    }
    let y = match task {
        Task::Classification => {
            if y_cols != 1 {
                return Err(bad(
                    y_path,
                    format!("{y_cols} targets per sample: a classifier takes one class index per sample (use --task regression for several targets)"),
                ));
            }
            let mut classes = Vec::with_capacity(n);
            for (i, &v) in y.iter().enumerate() {
                if v.fract() != 0.0 || v < 0.0 || v >= MAX_CLASSES as f64 {
                    return Err(bad(
                        y_path,
                        format!("label of row {i} is {v}: class labels must be integers in 0..{MAX_CLASSES} (use --task regression for real-valued targets)"),
                    ));
                }
                classes.push(v as usize);
            }
            let k = classes.iter().max().map_or(0, |m| m + 1);
            if k < 2 {
                return Err(bad(
                    y_path,
                    "every label is 0: a classifier needs at least two classes",
                ));
            }
            Targets::Classes(classes, k)
        }
        Task::Regression => Targets::Values(
            Array2::from_shape_vec((n, y_cols), y.iter().map(|&v| v as f32).collect())
                .map_err(|e| bad(y_path, e.to_string()))?,
        ),
    };
    Ok(Dataset {
        x,
        y,
        source: x_path.display().to_string(),
    })
}

impl Dataset {
    /// Training data from arrays in memory (Python's `fit(X, y)`): features `[N, F]`,
    /// targets row-major with `y_cols` per sample (class indices or floats). Errors name the
    /// arrays `X` and `y`.
    ///
    /// # Errors
    /// As [`load_npy`]: shapes, non-finite values, labels that are not class indices.
    pub fn from_arrays(x: ArrayD<f32>, y: Vec<f64>, y_cols: usize, task: Task) -> Result<Dataset> {
        let xp = Path::new("X");
        let x = to_matrix(x).map_err(|r| bad(xp, r.to_string()))?;
        dataset(x, xp, y, y_cols, Path::new("y"), task)
    }
}

/// Features from `x.npy` ([N, F] float32) and targets from `y.npy` (integer class indices or
/// float targets, [N] or [N, K]).
pub fn load_npy(x_path: &Path, y_path: &Path, task: Task) -> Result<Dataset> {
    let x = npy::read_f32(x_path)?;
    let x = to_matrix(x).map_err(|r| bad(x_path, r.to_string()))?;
    let (y, cols) = match npy::read_f32(y_path) {
        Ok(a) => {
            let cols = if a.ndim() == 2 { a.shape()[1] } else { 1 };
            if a.ndim() > 2 {
                return Err(bad(
                    y_path,
                    format!("targets of shape {:?}: expected [N] or [N, K]", a.shape()),
                ));
            }
            (a.iter().map(|&v| f64::from(v)).collect(), cols)
        }
        Err(_) => {
            let v = npy::read_labels(y_path)?;
            (v.iter().map(|&v| v as f64).collect(), 1)
        }
    };
    dataset(x, x_path, y, cols, y_path, task)
}

fn to_matrix(a: ArrayD<f32>) -> std::result::Result<Array2<f32>, TrainError> {
    let shape = a.shape().to_vec();
    let wrong = || {
        TrainError::Data(format!(
            "features of shape {shape:?}: expected [samples, features] (flatten images first)"
        ))
    };
    match shape.len() {
        2 => a.into_dimensionality().map_err(|_| wrong()),
        _ => Err(wrong()),
    }
}

/// Largest CSV file read (1 GiB).
pub const CSV_LIMIT: u64 = 1 << 30;

/// A CSV file with a header row: every column but `target` is a feature (`target`: a column
/// name or 0-based index; default the last column).
pub fn load_csv(path: &Path, target: Option<&str>, task: Task) -> Result<Dataset> {
    let bytes = crate::fsio::read_capped(path, CSV_LIMIT, "a CSV file")
        .map_err(|e| bad(path, e.to_string()))?;
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(bytes.as_slice());
    let header: Vec<String> = rdr
        .headers()
        .map_err(|e| bad(path, format!("not a CSV file: {e}")))?
        .iter()
        .map(|s| s.trim().to_string())
        .collect();
    if header.len() < 2 {
        return Err(bad(
            path,
            format!(
                "{} column(s): need features and a target column",
                header.len()
            ),
        ));
    }
    let t = match target {
        None => header.len() - 1,
        Some(t) => match header.iter().position(|h| h == t) {
            Some(i) => i,
            None => match t.parse::<usize>() {
                Ok(i) if i < header.len() => i,
                _ => {
                    return Err(bad(
                        path,
                        format!(
                            "no column `{t}` (columns: {}); name the target with --target",
                            header.join(", ")
                        ),
                    ))
                }
            },
        },
    };
    let mut x = Vec::new();
    let mut y = Vec::new();
    let mut rows = 0usize;
    for (r, rec) in rdr.records().enumerate() {
        let rec = rec.map_err(|e| bad(path, format!("row {}: {e}", r + 2)))?;
        if rec.len() != header.len() {
            return Err(bad(
                path,
                format!(
                    "row {} has {} field(s), the header {}",
                    r + 2,
                    rec.len(),
                    header.len()
                ),
            ));
        }
        for (c, field) in rec.iter().enumerate() {
            let v: f64 = field.trim().parse().map_err(|_| {
                bad(
                    path,
                    format!("row {}, column `{}`: `{field}` is not a number (encode categories as numbers first)", r + 2, header[c]),
                )
            })?;
            if c == t {
                y.push(v);
            } else {
                x.push(v as f32);
            }
        }
        rows += 1;
    }
    let x = Array2::from_shape_vec((rows, header.len() - 1), x)
        .map_err(|e| bad(path, e.to_string()))?;
    dataset(x, path, y, 1, path, task)
}
