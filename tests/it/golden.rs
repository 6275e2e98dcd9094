//! The compiled programs of every shipped model, pinned: for each, the plan's fingerprint (a
//! CRC of the register program and its parameters: the `model_id` keys carry), its
//! bootstraps and parameters, and a CRC of clear mode's outputs on its test split, compiled
//! at the default precision with the fallback allowed (`AutoOptions::keep_precision`).
//! A refactoring must leave them equal; a change that means to change a program regenerates
//! the file (`FHEC_BLESS=1 cargo test --release golden`) and says why in its commit.
//!
//! tests/golden/programs.json was first written at the commit that moved the analyses into
//! the IR, after checking plans and clear outputs of every shipped model against the
//! previous main's binary.

use crate::common::{beside, repo, shipped, stem};
use std::collections::BTreeMap;

fn digest(prefix: &std::path::Path) -> serde_json::Value {
    let calib = fhec::npy::read_f32(&beside(prefix, "_calib.npy")).expect("calib");
    let opts = fhec::CompileOptions {
        auto: fhec::AutoOptions::keep_precision(),
        ..Default::default()
    };
    let m = fhec::compile(&beside(prefix, ".onnx"), &[calib], &opts).expect("compiles");
    let info = m.plan_info().expect("plan");
    let x = fhec::npy::read_f32(&beside(prefix, "_test_x.npy")).expect("x");
    let clear = m.run_clear(&[x]).expect("clear");
    let mut h = crc32fast::Hasher::new();
    for y in &clear {
        for v in y.iter() {
            h.update(&v.to_le_bytes());
        }
    }
    serde_json::json!({
        "model_id": info.model_id,
        "bootstraps": info.bootstraps,
        "params": info.params,
        "second_params": info.second_params,
        "rounding": info.rounding,
        "clear_outputs_crc32": format!("{:08x}", h.finalize()),
    })
}

#[test]
fn every_shipped_model_compiles_to_its_pinned_program() {
    let path = repo().join("tests/golden/programs.json");
    let got: BTreeMap<String, serde_json::Value> =
        shipped().iter().map(|p| (stem(p), digest(p))).collect();
    if std::env::var_os("FHEC_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().expect("dir")).expect("dir");
        let text = serde_json::to_string_pretty(&got).expect("json");
        std::fs::write(&path, text + "\n").expect("write");
    }
    let want: BTreeMap<String, serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("tests/golden/programs.json"))
            .expect("json");
    let mut differ = Vec::new();
    for (name, w) in &want {
        match got.get(name) {
            Some(g) if g == w => {}
            Some(g) => differ.push(format!("{name}: pinned {w}, now {g}")),
            None => differ.push(format!("{name}: pinned, no longer shipped")),
        }
    }
    for name in got.keys().filter(|n| !want.contains_key(*n)) {
        differ.push(format!("{name}: shipped, not pinned"));
    }
    assert!(
        differ.is_empty(),
        "programs changed:\n{}",
        differ.join("\n")
    );
}
