//! The float interpreter against two oracles on every shipped model: the outputs its
//! framework computed when it was exported (torch, Brevitas, onnxruntime, Concrete ML), and
//! tract-onnx where tract reads the model.

use crate::common::{beside, model, rel_err, shipped, stem};
use fhec::{npy, Model};
use std::path::Path;
use tract_onnx::prelude::*;

/// tract's outputs, or why tract cannot run the model.
fn tract_run(path: &Path, x: &ndarray::ArrayD<f32>) -> Result<Vec<f32>, String> {
    let fact = InferenceFact::dt_shape(f32::datum_type(), x.shape().to_vec());
    let plan = tract_onnx::onnx()
        .model_for_path(path)
        .and_then(|m| m.with_input_fact(0, fact))
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .map_err(|e| format!("{e}"))?;
    let input: Tensor = x.clone().into();
    let out = plan.run(tvec!(input.into())).map_err(|e| format!("{e}"))?;
    let t = out[0].clone().into_tensor();
    Ok(t.to_plain_array_view::<f32>()
        .map_err(|e| format!("{e}"))?
        .iter()
        .copied()
        .collect())
}

/// Models tract does not read: custom-domain quantizers (QONNX, com.microsoft), int8
/// operators (QLinear*), opset 23's RMSNormalization, a batch axis fixed at 1 with N
/// samples.
fn tract_reads(name: &str) -> bool {
    !(name.starts_with("digits_q")
        || name.contains("_qop")
        || name.contains("_qdq")
        || name.contains("_mixed")
        || name.starts_with("brevitas")
        || name.starts_with("cml_")
        || name.starts_with("torch_"))
}

#[test]
fn float_interpreter_matches_its_framework_and_tract_on_every_shipped_model() {
    for prefix in shipped() {
        let name = stem(&prefix);
        let m = Model::load(&beside(&prefix, ".onnx")).expect("shipped model imports");
        let x = npy::read_f32(&beside(&prefix, "_test_x.npy")).expect("test inputs");
        let ours: Vec<f32> = m.run_float(std::slice::from_ref(&x)).expect("runs")[0]
            .iter()
            .copied()
            .collect();
        let framework: Vec<f32> = npy::read_f32(&beside(&prefix, "_test_out.npy"))
            .expect("framework outputs")
            .iter()
            .copied()
            .collect();
        let e = rel_err(&ours, &framework);
        let tract = if tract_reads(&name) {
            let t = tract_run(&beside(&prefix, ".onnx"), &x)
                .unwrap_or_else(|e| panic!("tract cannot run {name}: {e}"));
            let et = rel_err(&ours, &t);
            assert!(et <= 1e-5, "{name}: rel. error vs tract {et}");
            format!("{et:.2e}")
        } else {
            "-".into()
        };
        println!("{name}: rel. error vs its framework {e:.2e}, vs tract {tract}");
        assert!(e <= 1e-4, "{name}: rel. error vs its framework {e}");
    }
}

#[test]
fn float_accuracy_equals_the_exported_models() {
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model("manifest.json")).expect("manifest"))
            .expect("json");
    for entry in manifest["models"].as_array().expect("models list") {
        let name = entry["name"].as_str().expect("name");
        let m = Model::load(&model(&format!("{name}.onnx"))).expect("imports");
        let x = npy::read_f32(&model(&format!("{name}_test_x.npy"))).expect("x");
        let out = &m.run_float(&[x]).expect("runs")[0];
        if let Some(want) = entry["float_r2"].as_f64() {
            // a regression model: float targets, scored by R² (torch's, in f32)
            let t = npy::read_f32(&model(&format!("{name}_test_y.npy"))).expect("targets");
            let r2 = fhec::tune::Metric::R2.score(out, &t).expect("r2") / 100.0;
            assert!(
                (r2 - want).abs() < 1e-4,
                "{name}: R² {r2}, torch had {want}"
            );
            continue;
        }
        let y = npy::read_labels(&model(&format!("{name}_test_y.npy"))).expect("y");
        let acc = fhec::accuracy(out, &y).expect("accuracy");
        let want = entry["float_accuracy"].as_f64().expect("float_accuracy");
        assert!(
            (acc - want).abs() < 1e-9,
            "{name}: accuracy {acc}, torch had {want}"
        );
    }
}

#[test]
fn every_shipped_model_verifies_and_dumps_stably() {
    for prefix in shipped() {
        let p = beside(&prefix, ".onnx");
        let m = Model::load(&p).expect("imports");
        m.graph.verify().expect("verifies");
        let again = Model::load(&p).expect("imports");
        assert_eq!(
            m.graph.dump(),
            again.graph.dump(),
            "{}: dump is not stable",
            p.display()
        );
    }
}

#[test]
fn torch_view_subgraph_folds_to_one_static_reshape() {
    let m = Model::load(&model("digits_cnn.onnx")).expect("imports");
    let dump = m.graph.dump();
    assert!(dump.contains("Reshape{shape=[1,64]}"), "{dump}");
    for op in ["Shape", "Gather", "Unsqueeze", "Concat"] {
        assert!(
            !dump.contains(&format!("= {op}")),
            "{op} left in the graph:\n{dump}"
        );
    }
}
