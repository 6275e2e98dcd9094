//! The float interpreter against two oracles on every shipped model: tract-onnx, and the
//! outputs torch computed when the model was exported.

use crate::common::{model, rel_err, MODELS};
use fhec::{npy, Model};
use tract_onnx::prelude::*;

fn tract_run(name: &str, x: &ndarray::ArrayD<f32>) -> Vec<f32> {
    let path = model(&format!("{name}.onnx"));
    let fact = InferenceFact::dt_shape(f32::datum_type(), x.shape().to_vec());
    let plan = tract_onnx::onnx()
        .model_for_path(&path)
        .and_then(|m| m.with_input_fact(0, fact))
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .unwrap_or_else(|e| panic!("tract cannot load {name}: {e:?}"));
    let input: Tensor = x.clone().into();
    let out = plan
        .run(tvec!(input.into()))
        .unwrap_or_else(|e| panic!("tract cannot run {name}: {e:?}"));
    let t = out[0].clone().into_tensor();
    t.to_plain_array_view::<f32>()
        .expect("tract output is f32")
        .iter()
        .copied()
        .collect()
}

#[test]
fn float_interpreter_matches_tract_and_torch_on_shipped_models() {
    for name in MODELS {
        let m = Model::load(&model(&format!("{name}.onnx"))).expect("shipped model imports");
        let x = npy::read_f32(&model(&format!("{name}_test_x.npy"))).expect("test inputs");
        let ours: Vec<f32> = m.run_float(std::slice::from_ref(&x)).expect("runs")[0]
            .iter()
            .copied()
            .collect();
        let tract = tract_run(name, &x);
        let torch: Vec<f32> = npy::read_f32(&model(&format!("{name}_test_out.npy")))
            .expect("torch outputs")
            .iter()
            .copied()
            .collect();
        let e_tract = rel_err(&ours, &tract);
        let e_torch = rel_err(&ours, &torch);
        println!("{name}: rel. error vs tract {e_tract:.2e}, vs torch {e_torch:.2e}");
        assert!(e_tract <= 1e-5, "{name}: rel. error vs tract {e_tract}");
        assert!(e_torch <= 1e-4, "{name}: rel. error vs torch {e_torch}");
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
    for name in MODELS {
        let m = Model::load(&model(&format!("{name}.onnx"))).expect("imports");
        m.graph.verify().expect("verifies");
        let again = Model::load(&model(&format!("{name}.onnx"))).expect("imports");
        assert_eq!(
            m.graph.dump(),
            again.graph.dump(),
            "{name}: dump is not stable"
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
