//! Helpers shared by the integration tests.

use std::path::PathBuf;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn model(name: &str) -> PathBuf {
    repo().join("models").join(name)
}

/// The shipped models, by file stem.
pub const MODELS: &[&str] = &[
    "digits_mlp",
    "digits_cnn",
    "digits_poly",
    "breast_cancer_mlp",
];

/// The largest `|a - b| / max(|b|_inf, 1e-6)` over two equally shaped arrays.
pub fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "arrays differ in length");
    let scale = b.iter().fold(0f64, |m, &v| m.max(v.abs() as f64)).max(1e-6);
    a.iter()
        .zip(b)
        .fold(0f64, |m, (&x, &y)| m.max((x as f64 - y as f64).abs()))
        / scale
}
