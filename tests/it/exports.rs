//! Models as today's exporters write them: weights in files beside the model (ONNX external
//! data), a batch axis fixed at 1, Concrete ML's weight quantizers; and the ONNX validity
//! rules the importer enforces.

use crate::common::{fhec, model, repo, s, tmp, user_error};
use fhec::import::ExternalData;
use fhec::ir::Limits;
use fhec::Model;
use prost::Message;
use std::path::{Path, PathBuf};
use tract_onnx::pb;

fn external(name: &str) -> PathBuf {
    repo().join("tests/data/external").join(name)
}

fn decode(path: &Path) -> pb::ModelProto {
    pb::ModelProto::decode(std::fs::read(path).expect("read").as_slice()).expect("decode")
}

fn encode(m: &pb::ModelProto) -> Vec<u8> {
    m.encode_to_vec()
}

/// `iris.onnx` from tests/data/external, copied into a fresh folder with its data file,
/// after `edit` changed the model.
fn copied(tag: &str, edit: impl FnOnce(&mut pb::ModelProto)) -> PathBuf {
    let dir = tmp(&format!("external-{tag}"));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::copy(external("iris.onnx.data"), dir.join("iris.onnx.data")).expect("copy data");
    let mut m = decode(&external("iris.onnx"));
    edit(&mut m);
    let p = dir.join("iris.onnx");
    std::fs::write(&p, encode(&m)).expect("write");
    p
}

/// Sets one external-data key of the initializer `tensor`.
fn set_key(m: &mut pb::ModelProto, tensor: &str, key: &str, value: &str) {
    let g = m.graph.as_mut().expect("graph");
    let t = g
        .initializer
        .iter_mut()
        .find(|t| t.name == tensor)
        .expect("tensor");
    match t.external_data.iter_mut().find(|e| e.key == key) {
        Some(e) => e.value = value.to_string(),
        None => t.external_data.push(pb::StringStringEntryProto {
            key: key.to_string(),
            value: value.to_string(),
        }),
    }
}

fn load_err(p: &Path) -> String {
    Model::load(p).expect_err("refused").to_string()
}

#[test]
fn external_data_written_by_onnx_reads_as_the_model_with_weights_inside() {
    let inside = Model::load(&model("iris_mlp.onnx")).expect("iris");
    let x = fhec::npy::read_f32(&model("iris_mlp_test_x.npy")).expect("x");
    let want = inside.run_float(std::slice::from_ref(&x)).expect("run");
    // one data file (as torch's exporter writes it), and one file per tensor in a subfolder
    for p in [external("iris.onnx"), external("split/iris.onnx")] {
        let m = Model::load(&p).expect("external data");
        let got = m.run_float(std::slice::from_ref(&x)).expect("run");
        assert_eq!(got, want, "{}", p.display());
    }
    // in memory: the files given by location, or the folder
    let bytes = std::fs::read(external("iris.onnx")).expect("read");
    let data = std::fs::read(external("iris.onnx.data")).expect("read");
    let files = ExternalData::Files([("iris.onnx.data".to_string(), data)].into());
    let m = Model::from_bytes(&bytes, "iris.onnx", files, &Limits::default()).expect("files");
    assert_eq!(m.run_float(std::slice::from_ref(&x)).expect("run"), want);
    let dir = ExternalData::Dir(external(""));
    let m = Model::from_bytes(&bytes, "iris.onnx", dir, &Limits::default()).expect("dir");
    assert_eq!(m.run_float(std::slice::from_ref(&x)).expect("run"), want);
    // without a folder: refused with the fix
    let e = Model::from_bytes(&bytes, "iris.onnx", ExternalData::None, &Limits::default())
        .expect_err("no folder")
        .to_string();
    assert!(e.contains("iris.onnx.data") && e.contains("folder"), "{e}");
}

#[test]
fn external_data_outside_the_models_folder_is_refused() {
    // `..`, absolute paths, Windows forms
    for (tag, loc) in [
        ("dotdot", "../iris.onnx.data"),
        ("deep", "a/../../iris.onnx.data"),
        ("abs", "/etc/passwd"),
        ("win", "C:\\weights.bin"),
    ] {
        let p = copied(tag, |m| set_key(m, "net.0.weight", "location", loc));
        let e = load_err(&p);
        assert!(
            e.contains("net.0.weight")
                && e.contains(loc)
                && e.contains("outside the model's folder"),
            "{tag}: {e}"
        );
    }
    // a symlink inside the folder that resolves outside it
    #[cfg(unix)]
    {
        let outside = tmp("external-outside.bin");
        std::fs::copy(external("iris.onnx.data"), &outside).expect("copy");
        let p = copied("symlink", |m| {
            for t in ["net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias"] {
                set_key(m, t, "location", "link.data");
            }
        });
        let link = p.with_file_name("link.data");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&outside, &link).expect("symlink");
        let e = load_err(&p);
        assert!(
            e.contains("link.data") && e.contains("outside the model's folder"),
            "{e}"
        );
    }
}

#[test]
fn external_data_that_does_not_fit_is_refused_before_reading() {
    // a range beyond the file
    let p = copied("range", |m| set_key(m, "net.2.bias", "offset", "100000"));
    let e = load_err(&p);
    assert!(
        e.contains("net.2.bias") && e.contains("beyond the end"),
        "{e}"
    );
    // a length that disagrees with the type and shape
    let p = copied("length", |m| set_key(m, "net.2.bias", "length", "8"));
    let e = load_err(&p);
    assert!(
        e.contains("net.2.bias") && e.contains("disagrees with its type and shape"),
        "{e}"
    );
    // a declared shape over the limits: refused by size, not by a failed read
    let p = copied("huge", |m| {
        let g = m.graph.as_mut().expect("graph");
        let t = g
            .initializer
            .iter_mut()
            .find(|t| t.name == "net.0.weight")
            .expect("w");
        t.dims = vec![1 << 20, 1 << 20];
    });
    let e = load_err(&p);
    assert!(e.contains("net.0.weight") && e.contains("limit"), "{e}");
    // a missing file, and a malformed offset
    let p = copied("missing", |m| {
        set_key(m, "net.0.bias", "location", "nothing.data")
    });
    let e = load_err(&p);
    assert!(
        e.contains("net.0.bias") && e.contains("nothing.data"),
        "{e}"
    );
    let p = copied("offset", |m| set_key(m, "net.0.bias", "offset", "-4"));
    let e = load_err(&p);
    assert!(e.contains("net.0.bias") && e.contains("offset"), "{e}");
    // and through the CLI: one line, exit 1
    let p = copied("cli", |m| {
        set_key(m, "net.0.weight", "location", "../x.data")
    });
    let out = fhec(&["inspect", s(&p)]);
    user_error(
        &out,
        &["net.0.weight", "../x.data", "outside the model's folder"],
    );
}

/// Rewrites every graph input's and output's axis 0 to a fixed 1 (as torch's legacy exporter,
/// Brevitas and Concrete ML write it).
fn batch_one(m: &mut pb::ModelProto) {
    use pb::tensor_shape_proto::dimension::Value as Dv;
    let g = m.graph.as_mut().expect("graph");
    for vi in g.input.iter_mut().chain(g.output.iter_mut()) {
        if let Some(pb::type_proto::Value::TensorType(t)) =
            vi.r#type.as_mut().and_then(|t| t.value.as_mut())
        {
            if let Some(d) = t.shape.as_mut().and_then(|s| s.dim.first_mut()) {
                d.value = Some(Dv::DimValue(1));
            }
        }
    }
}

#[test]
fn a_leading_axis_fixed_at_one_is_the_batch_in_every_command() {
    let dir = tmp("batch1");
    std::fs::create_dir_all(&dir).expect("dir");
    let mut m = decode(&model("iris_mlp.onnx"));
    batch_one(&mut m);
    let onnx = dir.join("iris_b1.onnx");
    std::fs::write(&onnx, encode(&m)).expect("write");
    let calib = model("iris_mlp_calib.npy");
    let x = model("iris_mlp_test_x.npy");
    let y = model("iris_mlp_test_y.npy");
    // the library: float and clear runs of N samples equal the symbolic-batch model's
    let fixed = Model::load(&onnx).expect("batch-1 model");
    assert!(fixed.graph.inputs[0].batched);
    let dynamic = Model::load(&model("iris_mlp.onnx")).expect("iris");
    let xs = fhec::npy::read_f32(&x).expect("x");
    assert!(xs.shape()[0] > 1);
    assert_eq!(
        fixed.run_float(std::slice::from_ref(&xs)).expect("float"),
        dynamic.run_float(std::slice::from_ref(&xs)).expect("float")
    );
    // the CLI: compile (N calibration samples), run in float, clear and sim, tune, bench
    // and encrypt
    let fhe = dir.join("iris_b1.fhe");
    let out = fhec(&[
        "compile",
        s(&onnx),
        "--calib",
        s(&calib),
        "-o",
        s(&fhe),
        "--rounding-method",
        "approximate",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for mode in ["float", "clear", "sim"] {
        let o = dir.join(format!("y_{mode}.npy"));
        let out = fhec(&[
            "run",
            s(&fhe),
            "--input",
            s(&x),
            "--output",
            s(&o),
            "--labels",
            s(&y),
            "--mode",
            mode,
        ]);
        assert!(
            out.status.success(),
            "{mode}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got = fhec::npy::read_f32(&o).expect("y");
        assert_eq!(got.shape(), &[xs.shape()[0], 3], "{mode}");
    }
    let out = fhec(&[
        "bench",
        s(&fhe),
        "--input",
        s(&x),
        "--samples",
        "2",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let keys = dir.join("keys");
    assert!(fhec(&["keygen", s(&fhe), "--out", s(&keys)])
        .status
        .success());
    let ct = dir.join("x.ct");
    let out = fhec(&[
        "encrypt",
        s(&fhe),
        "--key",
        s(&keys.join("client.key")),
        "--input",
        s(&x),
        "--samples",
        "3",
        "--out",
        s(&ct),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = fhec(&[
        "tune",
        s(&onnx),
        "--calib",
        s(&calib),
        "--val",
        s(&x),
        "--val-labels",
        s(&y),
        "--n-bits",
        "4",
        "--rounding-bits",
        "4",
        "--ranges",
        "calibrated",
        "--no-per-layer",
        "--confirm",
        "0",
        "--max-accuracy-drop",
        "50",
        "-o",
        s(&dir.join("tuned.fhe")),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // anything else about the shape must still match
    let bad = dir.join("bad.npy");
    fhec::npy::write_f32(&bad, &ndarray::ArrayD::zeros(ndarray::IxDyn(&[5, 3]))).expect("write");
    let out = fhec(&["run", s(&fhe), "--input", s(&bad), "--mode", "clear"]);
    user_error(&out, &["expected shape [N,4]", "got [5,3]"]);
}

#[test]
fn a_name_defined_twice_is_refused() {
    let base = decode(&model("iris_mlp.onnx"));
    // two nodes write the same output
    let mut m = base.clone();
    {
        let g = m.graph.as_mut().expect("graph");
        let first = g.node[0].output[0].clone();
        let last = g.node.len() - 1;
        g.node[last].output[0] = first;
    }
    let e = fhec::import::import_bytes(&encode(&m), "twice.onnx")
        .expect_err("refused")
        .to_string();
    assert!(
        e.contains("twice.onnx") && e.contains("defined twice") && e.contains("node"),
        "{e}"
    );
    // a node's output named like a graph input
    let mut m = base.clone();
    {
        let g = m.graph.as_mut().expect("graph");
        let input = g.input[0].name.clone();
        g.node[0].output[0] = input;
    }
    let e = fhec::import::import_bytes(&encode(&m), "shadow.onnx")
        .expect_err("refused")
        .to_string();
    assert!(
        e.contains("defined twice") && e.contains("graph input"),
        "{e}"
    );
    // two initializers of one name
    let mut m = base.clone();
    {
        let g = m.graph.as_mut().expect("graph");
        let dup = g.initializer[0].clone();
        g.initializer.push(dup);
    }
    let e = fhec::import::import_bytes(&encode(&m), "init.onnx")
        .expect_err("refused")
        .to_string();
    assert!(
        e.contains("defined twice") && e.contains("initializer"),
        "{e}"
    );
    // an output no node produces
    let mut m = base;
    m.graph.as_mut().expect("graph").output[0].name = "nowhere".into();
    let e = fhec::import::import_bytes(&encode(&m), "out.onnx")
        .expect_err("refused")
        .to_string();
    assert!(e.contains("nowhere"), "{e}");
}

#[test]
fn concrete_ml_weight_quantizers_read_as_concrete_ml_reads_them() {
    // Concrete ML's built-in network as it exports it (batch fixed at 1, weight quantizers
    // signed=0 narrow=1): clear accuracy at its own grids equals Concrete ML's clear mode
    let dir = repo().join("models/exports");
    let m = Model::load(&dir.join("cml_builtin.onnx")).expect("cml export");
    let calib = fhec::npy::read_f32(&dir.join("cml_builtin_calib.npy")).expect("calib");
    let x = fhec::npy::read_f32(&dir.join("cml_builtin_test_x.npy")).expect("x");
    let y = fhec::npy::read_labels(&dir.join("cml_builtin_test_y.npy")).expect("y");
    let cml = fhec::npy::read_f32(&dir.join("cml_builtin_cml_clear.npy")).expect("cml");
    let c = fhec::compile_model(
        &m,
        &[calib],
        &fhec::CompileOptions {
            auto: fhec::AutoOptions::keep_precision(),
            ..Default::default()
        },
    )
    .expect("compile");
    let notes = &c.report().import_notes;
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(notes[0].contains("3 weight quantizer(s)") && notes[0].contains("signed=1, narrow=0"));
    let clear = c.run_clear(std::slice::from_ref(&x)).expect("clear");
    let ours = fhec::accuracy(&clear[0], &y).expect("accuracy");
    let theirs = fhec::accuracy(&cml, &y).expect("accuracy");
    assert!(
        (ours - theirs).abs() < 1e-9,
        "fhec {ours} vs Concrete ML {theirs}"
    );
    assert!(ours > 0.9, "{ours}");
}
