//! The `fhec` command on good and bad input: one-line errors, exit code 1, never a panic.

use crate::common::{fhec, model, s, tmp, user_error};
use std::path::{Path, PathBuf};

#[test]
fn run_float_prints_accuracy_and_writes_outputs() {
    let out_path = tmp("mlp_out.npy");
    let out = fhec(&[
        "run",
        s(&model("digits_mlp.onnx")),
        "--input",
        s(&model("digits_mlp_test_x.npy")),
        "--output",
        s(&out_path),
        "--labels",
        s(&model("digits_mlp_test_y.npy")),
    ]);
    let so = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(so.contains("accuracy (float): 0.9667"), "{so}");
    let y = fhec::npy::read_f32(&out_path).expect("output written");
    assert_eq!(y.shape(), &[360, 10]);
}

#[test]
fn inspect_summarizes() {
    let out = fhec(&["inspect", s(&model("digits_cnn.onnx"))]);
    let so = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        so.contains("input  `input`: f32[1,1,8,8] (axis 0 = batch: N samples run one by one)"),
        "{so}"
    );
    assert!(so.contains("Conv                 2"), "{so}");
}

#[test]
fn missing_model_file() {
    user_error(
        &fhec(&["inspect", "/nonexistent/model.onnx"]),
        &["/nonexistent/model.onnx", "cannot read"],
    );
}

#[test]
fn truncated_and_random_bytes_are_not_models() {
    let bytes = std::fs::read(model("digits_mlp.onnx")).expect("model");
    let trunc = tmp("trunc.onnx");
    std::fs::write(&trunc, &bytes[..bytes.len() / 2]).expect("write");
    user_error(
        &fhec(&["inspect", s(&trunc)]),
        &["trunc.onnx", "not a valid ONNX model"],
    );
    let rand = tmp("random.onnx");
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let junk: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(&rand, junk).expect("write");
    let out = fhec(&["inspect", s(&rand)]);
    user_error(&out, &["random.onnx"]);
}

/// Builds a model with two unsupported nodes, with the prost types.
fn unsupported_model() -> PathBuf {
    use crate::common::{onnx_model, value_info};
    use tract_onnx::pb;
    let node = |name: &str, op: &str, i: &str, o: &str| pb::NodeProto {
        name: name.into(),
        op_type: op.into(),
        input: vec![i.into()],
        output: vec![o.into()],
        ..Default::default()
    };
    let bytes = onnx_model(
        vec![
            node("a", "Relu", "x", "h"),
            node("b", "Hardmax", "h", "h2"),
            node("c", "Sin", "h2", "y"),
        ],
        vec![],
        vec![value_info("x", &[4])],
        vec![value_info("y", &[4])],
    );
    let p = tmp("unsupported.onnx");
    std::fs::write(&p, bytes).expect("write");
    p
}

#[test]
fn unsupported_ops_are_all_listed_with_the_supported_set() {
    let out = fhec(&["inspect", s(&unsupported_model())]);
    user_error(
        &out,
        &[
            "2 unsupported node(s)",
            "`b` (Hardmax, opset 17)",
            "`c` (Sin, opset 17)",
            "supported ops: Abs",
        ],
    );
}

#[test]
fn wrong_input_shape_dtype_and_nan() {
    let m = model("digits_mlp.onnx");
    let write = |name: &str, a: ndarray::ArrayD<f32>| {
        let p = tmp(name);
        fhec::npy::write_f32(&p, &a).expect("write");
        p
    };
    let bad_shape = write(
        "bad_shape.npy",
        ndarray::ArrayD::zeros(ndarray::IxDyn(&[3, 63])),
    );
    user_error(
        &fhec(&[
            "run",
            s(&m),
            "--input",
            s(&bad_shape),
            "--output",
            s(&tmp("o.npy")),
        ]),
        &["input `input`", "[N,64]", "[3,63]"],
    );

    let f64_path = tmp("f64.npy");
    {
        use ndarray_npy::WriteNpyExt;
        let a = ndarray::Array2::<f64>::zeros((2, 64));
        a.write_npy(std::fs::File::create(&f64_path).expect("create"))
            .expect("write");
    }
    user_error(
        &fhec(&[
            "run",
            s(&m),
            "--input",
            s(&f64_path),
            "--output",
            s(&tmp("o.npy")),
        ]),
        &["f64.npy", "float32"],
    );

    let mut nan = ndarray::ArrayD::<f32>::zeros(ndarray::IxDyn(&[2, 64]));
    nan[[1, 5]] = f32::NAN;
    let nan_path = write("nan.npy", nan);
    user_error(
        &fhec(&[
            "run",
            s(&m),
            "--input",
            s(&nan_path),
            "--output",
            s(&tmp("o.npy")),
        ]),
        &["input `input`", "NaN"],
    );

    user_error(
        &fhec(&["run", s(&m), "--input", "/nonexistent/x.npy"]),
        &["/nonexistent/x.npy"],
    );
}

#[test]
fn bad_arguments_exit_1() {
    let out = fhec(&["run"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

#[test]
fn bare_form_compiles_and_clear_mode_runs() {
    let out_path = tmp("mlp.fhe");
    let report = tmp("mlp.json");
    let out = fhec(&[
        s(&model("digits_mlp.onnx")),
        "--calib",
        s(&model("digits_mlp_calib.npy")),
        "-o",
        s(&out_path),
        "--report",
        s(&report),
    ]);
    let so = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "/net/net.0/Gemm",
        "proven",
        "used",
        "total: 64 table lookups (PBS) per sample, widest table input 6 bits",
    ] {
        assert!(so.contains(needle), "`{needle}` missing from:\n{so}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("report")).expect("json");
    assert_eq!(json["pbs_count"], 64);
    assert!(json["layers"][0]["acc_bits"].as_u64().is_some());
    let run = fhec(&[
        "run",
        s(&out_path),
        "--mode",
        "clear",
        "--input",
        s(&model("digits_mlp_test_x.npy")),
        "--labels",
        s(&model("digits_mlp_test_y.npy")),
    ]);
    let so = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(so.contains("accuracy (clear): 0.96"), "{so}");
}

/// `fhec compile models/NAME.onnx --calib models/CALIB.npy EXTRA… -o <a temp file>`.
fn compile_cli(name: &str, calib: &str, extra: &[&str]) -> std::process::Output {
    let (onnx, calib) = (
        model(&format!("{name}.onnx")),
        model(&format!("{calib}.npy")),
    );
    let out = tmp(&format!("{name}{}.fhe", extra.concat()));
    let mut args = vec!["compile", s(&onnx), "--calib", s(&calib)];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["-o", s(&out)]);
    fhec(&args)
}

/// `--requantize` on onnxruntime's int8 MLP: asked for exact rounding on its own grids, the
/// compile is refused in one line naming the flag; at the defaults it falls back to the
/// cheapest plan that exists and says so; with the flag the plan is exact rounding on two
/// partitions, and the input's clip is listed as the client's.
#[test]
fn requantize_flag_gives_an_int8_model_an_exact_plan() {
    let compile = |extra: &[&str]| {
        let out = compile_cli("digits_mlp_qdq", "digits_mlp_qdq_calib", extra);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let exact = compile_cli(
        "digits_mlp_qdq",
        "digits_mlp_qdq_calib",
        &["--rounding-method", "exact"],
    );
    user_error(
        &exact,
        &["no 128-bit-secure TFHE parameters", "--requantize"],
    );
    let own = compile(&[]);
    assert!(
        own.contains("auto: no exact plan exists") && own.contains("cheapest plan that does"),
        "{own}"
    );
    let rq = compile(&["--requantize"]);
    for needle in [
        "bit extractions = ",
        "exact rounding",
        "client side before encryption (float, then the input grid): Clip",
    ] {
        assert!(rq.contains(needle), "`{needle}` missing from:\n{rq}");
    }
    // requantizing needs calibration data, which the model's own grids did not
    user_error(
        &fhec(&[
            "compile",
            s(&model("digits_mlp_qdq.onnx")),
            "--requantize",
            "-o",
            s(&tmp("never.fhe")),
        ]),
        &["`input`", "--calib"],
    );
}

#[test]
fn compile_refusals() {
    user_error(
        &fhec(&["compile", s(&model("digits_mlp.onnx"))]),
        &["calibration data", "--calib"],
    );
    // the decrypted layer's weight bits are range-checked like every width
    user_error(
        &compile_cli(
            "digits_mlp",
            "digits_mlp_calib",
            &["--n-bits-decrypted", "17"],
        ),
        &["--n-bits-decrypted", "2..=16"],
    );
    // an over-wide accumulator without rounding: named layer, neuron, width and the fixes
    let out = compile_cli("digits_mlp", "digits_mlp_calib", &["--no-rounding"]);
    user_error(
        &out,
        &[
            "layer `/net/net.0/Gemm`",
            "neuron",
            "needs 15 bits",
            "--rounding-bits",
            "--n-accum-bits",
            "Ω",
        ],
    );
    // calibration data of the wrong shape
    user_error(
        &compile_cli("digits_mlp", "digits_cnn_calib", &[]),
        &["input `input`", "[N,64]"],
    );
    user_error(
        &fhec(&[
            "run",
            s(&model("digits_mlp.onnx")),
            "--mode",
            "clear",
            "--input",
            s(&model("digits_mlp_test_x.npy")),
        ]),
        &["compile first"],
    );
}

#[test]
fn corrupt_or_foreign_artifacts_are_refused() {
    let good = tmp("good.fhe");
    let out = fhec(&[
        "compile",
        s(&model("breast_cancer_mlp.onnx")),
        "--calib",
        s(&model("breast_cancer_mlp_calib.npy")),
        "-o",
        s(&good),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&good).expect("artifact");
    let x = model("breast_cancer_mlp_test_x.npy");
    let run = |p: &Path| fhec(&["run", s(p), "--mode", "clear", "--input", s(&x)]);

    let trunc = tmp("trunc.fhe");
    std::fs::write(&trunc, &bytes[..bytes.len() - 100]).expect("write");
    user_error(&run(&trunc), &["trunc.fhe", "truncated"]);

    let foreign = tmp("foreign.fhe");
    std::fs::copy(model("breast_cancer_mlp.onnx"), &foreign).expect("copy");
    user_error(
        &run(&foreign),
        &["foreign.fhe", "not an fhec compiled model"],
    );

    let mut flipped = bytes.clone();
    let mid = 24 + (flipped.len() - 24) / 3;
    for b in &mut flipped[mid..mid + 64] {
        *b ^= 0xA5;
    }
    let corrupt = tmp("corrupt.fhe");
    std::fs::write(&corrupt, &flipped).expect("write");
    user_error(&run(&corrupt), &["corrupt.fhe", "checksum mismatch"]);

    let mut newer = bytes;
    newer[8] = 99;
    let v = tmp("newer.fhe");
    std::fs::write(&v, &newer).expect("write");
    user_error(&run(&v), &["format version 99", "recompile"]);
}

/// keygen → encrypt → serve-run → decrypt through files, in separate processes, equals
/// clear mode; a result decrypted with another key pair's client key and a truncated
/// ciphertext file are refused with one-line errors.
#[test]
fn client_server_commands_round_trip() {
    let fhe = tmp("iris.fhe");
    let out = fhec(&[
        "compile",
        s(&model("iris_mlp.onnx")),
        "--calib",
        s(&model("iris_mlp_calib.npy")),
        "--n-bits",
        "3",
        "--rounding-bits",
        "4",
        "-o",
        s(&fhe),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let so = String::from_utf8_lossy(&out.stdout);
    assert!(
        so.contains("security 128 bits") && so.contains("p_error"),
        "{so}"
    );
    let (keys, keys2) = (tmp("keys"), tmp("keys2"));
    for k in [&keys, &keys2] {
        let out = fhec(&["keygen", s(&fhe), "--out", s(k)]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (ct, yct, y, yc) = (tmp("x.ct"), tmp("y.ct"), tmp("y.npy"), tmp("yc.npy"));
    let x = model("iris_mlp_test_x.npy");
    let run = |args: &[&str]| {
        let out = fhec(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    run(&[
        "encrypt",
        s(&fhe),
        "--key",
        s(&keys.join("client.key")),
        "--input",
        s(&x),
        "--samples",
        "4",
        "--out",
        s(&ct),
    ]);
    let so = run(&[
        "serve-run",
        s(&fhe),
        "--key",
        s(&keys.join("server.key")),
        "--input",
        s(&ct),
        "--out",
        s(&yct),
    ]);
    assert!(so.contains("ms per bootstrap"), "{so}");
    run(&[
        "decrypt",
        s(&fhe),
        "--key",
        s(&keys.join("client.key")),
        "--input",
        s(&yct),
        "--output",
        s(&y),
    ]);
    // clear mode on the same four samples
    let x4 = tmp("x4.npy");
    let xa = fhec::npy::read_f32(&x).expect("x");
    fhec::npy::write_f32(
        &x4,
        &xa.slice_axis(ndarray::Axis(0), ndarray::Slice::from(0..4))
            .to_owned(),
    )
    .expect("write");
    run(&[
        "run",
        s(&fhe),
        "--input",
        s(&x4),
        "--mode",
        "clear",
        "--output",
        s(&yc),
    ]);
    assert_eq!(
        fhec::npy::read_f32(&y).expect("fhe output"),
        fhec::npy::read_f32(&yc).expect("clear output")
    );
    // another key pair's client key
    let out = fhec(&[
        "decrypt",
        s(&fhe),
        "--key",
        s(&keys2.join("client.key")),
        "--input",
        s(&yct),
        "--output",
        s(&y),
    ]);
    user_error(&out, &["y.ct", "another key pair"]);
    // the server key where the client key belongs
    let out = fhec(&[
        "encrypt",
        s(&fhe),
        "--key",
        s(&keys.join("server.key")),
        "--input",
        s(&x),
        "--out",
        s(&ct),
    ]);
    user_error(&out, &["server.key", "not an fhec client key"]);
    // a truncated ciphertext file
    let bytes = std::fs::read(&yct).expect("read");
    std::fs::write(&yct, &bytes[..bytes.len() - 100]).expect("write");
    let out = fhec(&[
        "decrypt",
        s(&fhe),
        "--key",
        s(&keys.join("client.key")),
        "--input",
        s(&yct),
        "--output",
        s(&y),
    ]);
    user_error(&out, &["y.ct", "truncated or corrupt"]);
    // an ONNX file where a compiled model belongs
    let out = fhec(&["keygen", s(&model("iris_mlp.onnx")), "--out", s(&keys2)]);
    user_error(&out, &["fhec compile"]);
}

/// `--split-tables on` with vetted parameters (one set, nothing to split) is refused in one
/// line naming the flag and the fix.
#[test]
fn split_tables_on_needs_optimized_parameters() {
    let (onnx, calib, out_path) = (
        model("iris_mlp.onnx"),
        model("iris_mlp_calib.npy"),
        tmp("split_refused.fhe"),
    );
    let vetted = ["--params", "vetted"];
    for extra in [
        &vetted[..],
        &["--rounding-method", "approximate", "--params", "vetted"],
    ] {
        let mut args = vec![
            "compile",
            s(&onnx),
            "--calib",
            s(&calib),
            "--split-tables",
            "on",
            "-o",
            s(&out_path),
        ];
        args.extend(extra);
        let out = fhec(&args);
        user_error(&out, &["--split-tables on", "--params optimized"]);
    }
}

/// docs/cli.md is `fhec --help` and every command's `--help`, as the binary prints them
/// (`FHEC_BLESS=1` rewrites it).
#[test]
fn the_cli_reference_is_the_binarys_help() {
    let help = |args: &[&str]| {
        let out = fhec(args);
        assert!(out.status.success(), "{args:?}");
        String::from_utf8_lossy(&out.stdout).trim_end().to_string()
    };
    let top = help(&["--help"]);
    let mut md = String::from(
        "# CLI reference\n\n`fhec --help` and each command's `--help`, as the binary prints them \
         (checked by `tests/it/cli.rs`; `FHEC_BLESS=1 cargo test --release cli_reference` \
         rewrites this file). Every command exits 0 on success and 1 with one line on stderr \
         naming the file, node or tensor and the fix.\n\n```\n",
    );
    md += &top;
    md += "\n```\n";
    // the commands, as `--help` lists them
    let commands: Vec<String> = top
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|c| c != "help")
        .collect();
    assert!(commands.len() >= 10, "{commands:?}");
    for c in &commands {
        let this = help(&[c, "--help"]);
        md += &format!("\n## fhec {c}\n\n```\n{this}\n```\n");
        // a command with commands of its own (`fhec client`): each of them too
        let subs: Vec<String> = this
            .lines()
            .skip_while(|l| !l.starts_with("Commands:"))
            .skip(1)
            .take_while(|l| l.starts_with("  "))
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .filter(|c| c != "help")
            .collect();
        for sub in &subs {
            md += &format!(
                "\n### fhec {c} {sub}\n\n```\n{}\n```\n",
                help(&[c, sub, "--help"])
            );
        }
    }
    let path = crate::common::repo().join("docs/cli.md");
    if std::env::var_os("FHEC_BLESS").is_some() {
        std::fs::write(&path, &md).expect("write");
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        want == md,
        "docs/cli.md is stale (FHEC_BLESS=1 rewrites it)"
    );
}
