//! Hostile input: crafted ONNX models, `.npy` arrays, compiled models and key files that
//! once aborted, panicked or ran out of memory. Each is refused with exit code 1 and one
//! line naming the file, node or field — under a 1 GiB address-space limit, so a refusal that
//! allocates first fails the test — and the committed fuzz corpora and crash files replay
//! through the fuzz targets' entry points without a panic.

use crate::common::{
    attr_ints as ints, compile_iris, model, onnx_model, repo, s, tmp, user_error as refused,
    value_info as vi,
};
use fhec::ir::Limits;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tract_onnx::pb;

/// Runs `fhec` with its address space limited to 1 GiB (`ulimit -v`).
fn fhec_limited(args: &[&str]) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 1048576; exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_fhec"))
        .args(args)
        .output()
        .expect("fhec runs")
}

// ---- a small ONNX builder -------------------------------------------------------------

fn node(name: &str, op: &str, ins: &[&str], attrs: Vec<pb::AttributeProto>) -> pb::NodeProto {
    pb::NodeProto {
        name: name.into(),
        op_type: op.into(),
        input: ins.iter().map(|s| s.to_string()).collect(),
        output: vec!["y".into()],
        attribute: attrs,
        ..Default::default()
    }
}

fn init_i64(name: &str, v: &[i64]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: vec![v.len() as i64],
        data_type: 7,
        int64_data: v.to_vec(),
        ..Default::default()
    }
}

fn init_f32(name: &str, dims: &[i64], v: &[f32]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: 1,
        float_data: v.to_vec(),
        ..Default::default()
    }
}

/// One node reading graph input `x` (shape `x_dims`) and initializers, writing `y`.
fn onnx(file: &str, x_dims: &[i64], n: pb::NodeProto, inits: Vec<pb::TensorProto>) -> PathBuf {
    let p = tmp(file);
    let bytes = onnx_model(vec![n], inits, vec![vi("x", x_dims)], vec![vi("y", &[])]);
    std::fs::write(&p, bytes).expect("write");
    p
}

fn conv(file: &str, attrs: Vec<pb::AttributeProto>, w_dims: &[i64]) -> PathBuf {
    let n: i64 = w_dims.iter().product();
    onnx(
        file,
        &[1, 1, 8, 8],
        node("conv", "Conv", &["x", "w"], attrs),
        vec![init_f32("w", w_dims, &vec![0.5; n as usize])],
    )
}

// ---- ONNX: huge shapes, overflowing attributes, zero kernels, empty axes, indices -------

#[test]
fn huge_shapes_are_refused_before_allocation() {
    let limit: &[&str] = &["`big`", "limit", "--max-elements"];
    let overflow: &[&str] = &["`big`", "does not fit in 64 bits"];
    let cases = [
        onnx(
            "const_of_shape.onnx",
            &[1],
            node("big", "ConstantOfShape", &["s"], vec![]),
            vec![init_i64("s", &[100_000, 100_000, 100_000])],
        ),
        onnx(
            "expand.onnx",
            &[1],
            node("big", "Expand", &["x", "s"], vec![]),
            vec![init_i64("s", &[3_000_000, 3_000_000, 4])],
        ),
        onnx(
            "pad.onnx",
            &[1, 4],
            node("big", "Pad", &["x", "p"], vec![]),
            vec![init_i64("p", &[0, 4_000_000_000_000, 0, 0])],
        ),
        onnx(
            "pad_overflow.onnx",
            &[1, 4],
            node("big", "Pad", &["x", "p"], vec![]),
            vec![init_i64("p", &[0, i64::MAX, 0, i64::MAX])],
        ),
    ];
    for (i, p) in cases.iter().enumerate() {
        refused(
            &fhec_limited(&["inspect", s(p)]),
            if i == 3 { overflow } else { limit },
        );
    }
    // a declared input of 10^12 elements
    let p = onnx(
        "input.onnx",
        &[1_000_000, 1_000_000],
        node("r", "Relu", &["x"], vec![]),
        vec![],
    );
    refused(&fhec_limited(&["inspect", s(&p)]), &["`x`", "limit"]);
    // a rank beyond numpy's 64
    let p = onnx(
        "rank.onnx",
        &[1],
        node("r", "Reshape", &["x", "s"], vec![]),
        vec![init_i64("s", &[1; 100])],
    );
    refused(&fhec_limited(&["inspect", s(&p)]), &["`r`", "rank 100"]);
    // the limit is the user's to raise: the same Expand passes at 2^44 elements (it is
    // then refused by the address-space limit of this test only when run)
    let p = onnx(
        "expand_small.onnx",
        &[1],
        node("e", "Expand", &["x", "s"], vec![]),
        vec![init_i64("s", &[300, 4])],
    );
    refused(
        &fhec_limited(&["inspect", s(&p), "--max-elements", "1000"]),
        &["`e`", "1000"],
    );
    assert_eq!(
        fhec_limited(&["inspect", s(&p)]).status.code(),
        Some(0),
        "1200 elements are within the default limit"
    );
}

#[test]
fn overflowing_and_zero_window_attributes_are_refused() {
    let big = 1i64 << 40;
    let cases: Vec<(PathBuf, &str)> = vec![
        (
            conv(
                "strides.onnx",
                vec![ints("strides", &[big, 1])],
                &[1, 1, 3, 3],
            ),
            "strides",
        ),
        (
            conv(
                "dilations.onnx",
                vec![ints("dilations", &[1 << 62, 1])],
                &[1, 1, 3, 3],
            ),
            "dilations",
        ),
        (
            conv(
                "pads.onnx",
                vec![ints("pads", &[i64::MAX, 0, i64::MAX, 0])],
                &[1, 1, 3, 3],
            ),
            "pads",
        ),
        (
            conv(
                "zero_kernel.onnx",
                vec![ints("kernel_shape", &[0, 3])],
                &[1, 1, 0, 3],
            ),
            "kernel",
        ),
        (
            conv(
                "same_zero_kernel.onnx",
                vec![
                    ints("kernel_shape", &[0, 3]),
                    pb::AttributeProto {
                        name: "auto_pad".into(),
                        r#type: pb::attribute_proto::AttributeType::String as i32,
                        s: b"SAME_UPPER".to_vec(),
                        ..Default::default()
                    },
                ],
                &[1, 1, 0, 3],
            ),
            "kernel",
        ),
        (
            onnx(
                "pool_zero_kernel.onnx",
                &[1, 1, 8],
                node("conv", "MaxPool", &["x"], vec![ints("kernel_shape", &[0])]),
                vec![],
            ),
            "kernel",
        ),
        (
            onnx(
                "pool_stride.onnx",
                &[1, 1, 8],
                node(
                    "conv",
                    "AveragePool",
                    &["x"],
                    vec![ints("kernel_shape", &[2]), ints("strides", &[-3])],
                ),
                vec![],
            ),
            "strides",
        ),
    ];
    for (p, what) in &cases {
        refused(&fhec_limited(&["inspect", s(p)]), &["`conv`", what]);
    }
}

#[test]
fn empty_axes_and_bad_indices() {
    // a negative-step Slice over an empty axis is a valid, empty slice (it used to panic)
    let p = onnx(
        "slice_empty.onnx",
        &[2, 0],
        node("sl", "Slice", &["x", "st", "en", "ax", "sp"], vec![]),
        vec![
            init_i64("st", &[-1]),
            init_i64("en", &[i64::MIN]),
            init_i64("ax", &[1]),
            init_i64("sp", &[-1]),
        ],
    );
    let out = fhec_limited(&["inspect", s(&p)]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // the most negative step over a full axis
    let p = onnx(
        "slice_min_step.onnx",
        &[2, 5],
        node("sl", "Slice", &["x", "st", "en", "ax", "sp"], vec![]),
        vec![
            init_i64("st", &[i64::MAX]),
            init_i64("en", &[i64::MIN]),
            init_i64("ax", &[1]),
            init_i64("sp", &[i64::MIN]),
        ],
    );
    assert_eq!(fhec_limited(&["inspect", s(&p)]).status.code(), Some(0));
    let cases: Vec<(PathBuf, &str)> = vec![
        (
            onnx(
                "gather.onnx",
                &[3],
                node("bad", "Gather", &["x", "i"], vec![]),
                vec![init_i64("i", &[7])],
            ),
            "index 7 is out of range",
        ),
        (
            onnx(
                "transpose.onnx",
                &[2, 3],
                node("bad", "Transpose", &["x"], vec![ints("perm", &[0, 5])]),
                vec![],
            ),
            "perm",
        ),
        (
            onnx(
                "unsqueeze.onnx",
                &[2, 3],
                node("bad", "Unsqueeze", &["x", "a"], vec![]),
                vec![init_i64("a", &[0, 0])],
            ),
            "repeat",
        ),
        (
            onnx(
                "slice_axis.onnx",
                &[2, 3],
                node("bad", "Slice", &["x", "st", "en", "ax"], vec![]),
                vec![
                    init_i64("st", &[0]),
                    init_i64("en", &[1]),
                    init_i64("ax", &[9]),
                ],
            ),
            "axis 9 is out of range",
        ),
    ];
    for (p, what) in &cases {
        refused(&fhec_limited(&["inspect", s(p)]), &["`bad`", what]);
    }
}

#[test]
fn declared_sizes_larger_than_the_data() {
    // an initializer whose shape needs 1000 values but holds 4
    let p = onnx(
        "short_init.onnx",
        &[1000],
        node("add", "Add", &["x", "w"], vec![]),
        vec![init_f32("w", &[1000], &[1.0; 4])],
    );
    refused(
        &fhec_limited(&["inspect", s(&p)]),
        &["`w`", "holds 4 values"],
    );
    // a .npy header declaring 10^12 floats over 8 bytes of data
    let mut npy = b"\x93NUMPY\x01\x00".to_vec();
    let mut header =
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000,), }".to_string();
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    npy.extend_from_slice(&(header.len() as u16).to_le_bytes());
    npy.extend_from_slice(header.as_bytes());
    npy.extend_from_slice(&[0u8; 8]);
    let x = tmp("huge.npy");
    std::fs::write(&x, &npy).expect("write");
    let out = fhec_limited(&[
        "run",
        s(&model("iris_mlp.onnx")),
        "--input",
        s(&x),
        "--mode",
        "float",
    ]);
    refused(
        &out,
        &[
            "huge.npy",
            "declares shape [1000000000000]",
            "8 bytes follow",
        ],
    );
}

// ---- compiled models: a valid checksum over inconsistent contents -----------------------

/// Saves `m` (with a valid checksum) and loads it back.
fn round_trip(m: &fhec::CompiledModel, name: &str) -> Result<fhec::CompiledModel, String> {
    let p = tmp(name);
    m.save(&p).expect("save");
    fhec::CompiledModel::load(&p).map_err(|e| e.to_string())
}

#[test]
fn inconsistent_compiled_models_are_refused() {
    use fhec::ir::Op;
    let base = compile_iris(3, 4);
    assert!(round_trip(&base, "ok.fhe").is_ok());
    type Edit = fn(&mut fhec::CompiledModel);
    let edits: &[(&str, Edit, &str)] = &[
        (
            "round_bits",
            |m| {
                for n in m.parts_mut().program.g.node_weights_mut() {
                    if let Op::Round { bits } = &mut n.op {
                        bits.iter_mut().for_each(|b| *b = 70);
                    }
                }
            },
            "cannot drop 70 bits",
        ),
        (
            "input_quant",
            |m| {
                m.parts_mut().input_quant[0].qmin = 10;
                m.parts_mut().input_quant[0].qmax = -10;
            },
            "input quantizer 0",
        ),
        (
            "tlu_quant",
            |m| {
                for n in m.parts_mut().program.g.node_weights_mut() {
                    if let Op::Tlu(t) = &mut n.op {
                        t.out.scale = f32::NAN;
                    }
                }
            },
            "not a valid quantizer",
        ),
        (
            "p_error",
            |m| m.parts_mut().fhe.p_error = f64::NAN,
            "--p-error",
        ),
        (
            "weights_shape",
            |m| {
                for n in m.parts_mut().program.g.node_weights_mut() {
                    if let Op::IntLinear(fhec::ir::IntLinear::Dense { w }) = &mut n.op {
                        *w = ndarray::ArrayD::zeros(ndarray::IxDyn(&[0, 3]));
                    }
                }
            },
            "corrupt program",
        ),
        (
            "type",
            |m| {
                let p = &mut m.parts_mut().program;
                let n = p.g.node_indices().next_back().expect("a node");
                p.g[n].ty.shape = vec![1 << 40, 1 << 40];
            },
            "corrupt program",
        ),
    ];
    for (name, edit, needle) in edits {
        let mut m = base.clone();
        edit(&mut m);
        let e = round_trip(&m, &format!("{name}.fhe")).expect_err(name);
        assert!(e.contains(needle), "{name}: {e}");
    }
    // a conv whose stride vector is short: refused by the shape rules, not an index panic
    let mut g = fhec::ir::Graph::new();
    let x = g.add_input("x", fhec::ir::TensorType::f32(vec![1, 1, 4, 4]), false);
    let w = g.add_const(
        "w",
        fhec::ir::Tensor::F32(ndarray::ArrayD::zeros(ndarray::IxDyn(&[1, 1, 2, 2]))),
    );
    let short = Op::Conv(fhec::ir::ConvAttrs {
        kernel: vec![2, 2],
        strides: vec![1],
        pads_begin: vec![0, 0],
        pads_end: vec![0, 0],
        dilations: vec![1, 1],
        group: 1,
    });
    let e = g
        .add_op("c", short, &[x, w])
        .expect_err("refused")
        .to_string();
    assert!(
        e.contains("strides") && e.contains("1 value(s) for a 2-d kernel"),
        "{e}"
    );
}

#[test]
fn overflowing_weights_are_errors_not_wraps() {
    use fhec::ir::Op;
    let mut m = compile_iris(3, 4);
    for n in m.parts_mut().program.g.node_weights_mut() {
        if let Op::IntLinear(fhec::ir::IntLinear::Dense { w }) = &mut n.op {
            w.mapv_inplace(|v| v.signum().max(1).saturating_mul(i64::MAX / 3));
        }
    }
    let m = round_trip(&m, "huge_weights.fhe").expect("structurally valid");
    let e = m.plan().expect_err("refused").to_string();
    assert!(e.contains("overflow"), "{e}");
    let x = fhec::npy::read_f32(&model("iris_mlp_test_x.npy")).expect("x");
    let e = m.run_clear(&[x]).expect_err("refused").to_string();
    assert!(e.contains("overflow"), "{e}");
}

#[test]
fn default_limits_are_generous_for_real_models() {
    // every shipped model imports under a limit 2^10 times below the default
    for name in [
        "digits_mlp",
        "digits_cnn",
        "digits_resnet",
        "breast_cancer_mlp",
    ] {
        let limits = Limits::with_max_elements(Limits::DEFAULT_TENSOR_ELEMENTS >> 10);
        fhec::Model::load_with_limits(&model(&format!("{name}.onnx")), &limits)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

// ---- keys of mismatched dimensions ------------------------------------------------------

#[test]
fn keys_of_other_dimensions_are_refused_before_use() {
    use fhec::fuzzing::{fuzz_extract_params, fuzz_key_shape, fuzz_params};
    use fhec::runtime::files::{load_bytes, KEY_LIMIT};
    use fhec::runtime::{keygen, ClientKey, CompressedServerKey};
    let (ck, sk) = keygen(&fuzz_params(), Some(&fuzz_extract_params()), 6, 1);
    let dir = tmp("fuzz_keys");
    std::fs::create_dir_all(&dir).expect("dir");
    fhec::runtime::files::save(&sk, &dir.join("s.key")).expect("save");
    fhec::runtime::files::save_secret(&ck, &dir.join("c.key")).expect("save");
    let sb = std::fs::read(dir.join("s.key")).expect("read");
    let cb = std::fs::read(dir.join("c.key")).expect("read");
    let shape = fuzz_key_shape();
    let sk: CompressedServerKey =
        load_bytes(&sb, "server key", KEY_LIMIT, &shape).expect("conformant");
    let _ = sk.expand();
    assert!(load_bytes::<ClientKey>(&cb, "client key", KEY_LIMIT, &shape).is_ok());
    for edit in [
        |p: &mut fhec::backend::params::FheParams| p.lwe_dimension = 32,
        |p: &mut fhec::backend::params::FheParams| p.polynomial_size = 512,
        |p: &mut fhec::backend::params::FheParams| p.pbs_level = 3,
        |p: &mut fhec::backend::params::FheParams| p.ks_base_log = 5,
    ] {
        let mut other = fuzz_key_shape();
        edit(&mut other.params);
        let e = load_bytes::<CompressedServerKey>(&sb, "server key", KEY_LIMIT, &other)
            .err()
            .expect("refused")
            .to_string();
        assert!(e.contains("dimensions do not match"), "{e}");
        // the same edits on the bit-extraction partition
        let mut other = fuzz_key_shape();
        if let Some(x) = &mut other.extract {
            edit(&mut x.set);
        }
        let e = load_bytes::<CompressedServerKey>(&sb, "server key", KEY_LIMIT, &other)
            .err()
            .expect("refused")
            .to_string();
        assert!(e.contains("dimensions do not match"), "{e}");
    }
    // a key without the partition the model has, and the other way round
    let mut one_set = fuzz_key_shape();
    one_set.extract = None;
    assert!(load_bytes::<CompressedServerKey>(&sb, "server key", KEY_LIMIT, &one_set).is_err());
    let (_, sk1) = keygen(&fuzz_params(), None, 6, 1);
    fhec::runtime::files::save(&sk1, &dir.join("s1.key")).expect("save");
    let sb1 = std::fs::read(dir.join("s1.key")).expect("read");
    assert!(load_bytes::<CompressedServerKey>(&sb1, "server key", KEY_LIMIT, &shape).is_err());
}

// ---- fuzz corpora and crashes, replayed ------------------------------------------------

/// Writes the generated seed files of the fuzz targets (`FHEC_WRITE_FUZZ_SEEDS=1`): a
/// compiled model, keys and ciphertexts of the fuzz shapes. ONNX and `.npy` seeds are the
/// shipped models and arrays, which the fuzzers and this replay also read from `models/`.
fn write_seeds(root: &Path) {
    use fhec::fuzzing::{fuzz_ciphertext_shape, fuzz_extract_params, fuzz_params};
    use fhec::runtime::files::{save, save_secret};
    use fhec::runtime::{keygen, EncryptedInputs, EncryptedOutputs};
    let dir = |t: &str| {
        let d = root.join("seeds").join(t);
        std::fs::create_dir_all(&d).expect("seed dir");
        d
    };
    compile_iris(3, 4)
        .save(&dir("compiled_model").join("iris_mlp_3bit.fhe"))
        .expect("save");
    let (ck, sk) = keygen(&fuzz_params(), Some(&fuzz_extract_params()), 6, 1);
    save_secret(&ck, &dir("keys").join("client.key")).expect("save");
    save(&sk, &dir("keys").join("server.key")).expect("save");
    let counts = fuzz_ciphertext_shape().counts;
    let lists: Vec<_> = counts
        .iter()
        .map(|&n| ck.encrypt(&(0..n as i64).collect::<Vec<_>>()))
        .collect();
    let outs: Vec<_> = lists
        .iter()
        .map(|l| l.clone().decompress_into_lwe_ciphertext_list())
        .collect();
    let ins = EncryptedInputs {
        model_id: 1,
        key_id: ck.info.key_id,
        samples: vec![lists],
    };
    save(&ins, &dir("ciphertexts").join("inputs.ct")).expect("save");
    let outs = EncryptedOutputs {
        model_id: 1,
        key_id: ck.info.key_id,
        samples: vec![outs],
    };
    save(&outs, &dir("ciphertexts").join("outputs.ct")).expect("save");
}

#[test]
fn fuzz_seeds_and_crashes_replay_without_panic() {
    let root = repo().join("fuzz");
    if std::env::var_os("FHEC_WRITE_FUZZ_SEEDS").is_some() {
        write_seeds(&root);
    }
    let mut files = 0;
    for (target, f) in fhec::fuzzing::TARGETS {
        let mut dirs = vec![
            root.join("seeds").join(target),
            root.join("regressions").join(target),
        ];
        if matches!(*target, "onnx" | "npy") {
            dirs.push(repo().join("models"));
        }
        for dir in dirs {
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in rd.flatten() {
                let p = e.path();
                let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
                if dir.ends_with("models") && ext != *target {
                    continue;
                }
                let bytes = std::fs::read(&p).expect("read");
                f(&bytes);
                files += 1;
            }
        }
    }
    // the seeds the generator writes are all there and each one loads
    use fhec::runtime::files::{load_bytes, CT_LIMIT, KEY_LIMIT};
    use fhec::runtime::{ClientKey, CompressedServerKey, EncryptedInputs, EncryptedOutputs};
    let seed = |t: &str, f: &str| std::fs::read(root.join("seeds").join(t).join(f)).expect(f);
    let (ks, cs) = (
        fhec::fuzzing::fuzz_key_shape(),
        fhec::fuzzing::fuzz_ciphertext_shape(),
    );
    load_bytes::<ClientKey>(&seed("keys", "client.key"), "client key", KEY_LIMIT, &ks)
        .expect("client key seed");
    load_bytes::<CompressedServerKey>(&seed("keys", "server.key"), "server key", KEY_LIMIT, &ks)
        .expect("server key seed");
    load_bytes::<EncryptedInputs>(&seed("ciphertexts", "inputs.ct"), "inputs", CT_LIMIT, &cs)
        .expect("inputs seed");
    load_bytes::<EncryptedOutputs>(&seed("ciphertexts", "outputs.ct"), "outputs", CT_LIMIT, &cs)
        .expect("outputs seed");
    fhec::CompiledModel::from_bytes(
        &seed("compiled_model", "iris_mlp_3bit.fhe"),
        &fhec::fuzzing::fuzz_limits(),
    )
    .expect("compiled model seed");
    assert!(files >= 20, "seed files are missing ({files} read)");
}

// ---- stored TFHE parameters ------------------------------------------------------------

/// A saved model carries its plan's parameters (both partitions); loading checks them
/// instead of searching, and refuses parameters that are not secure or do not meet the
/// target, naming why.
#[test]
fn stored_parameters_are_checked_on_load() {
    let m = compile_iris(6, 6);
    let searched = m.plan().expect("plan").choice.clone();
    assert!(
        searched.extract.is_some(),
        "exact rounding on two partitions"
    );
    let dir = tmp("stored_params");
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("iris.fhe");
    m.save(&path).expect("save");
    let loaded = fhec::CompiledModel::load(&path).expect("load");
    assert_eq!(
        loaded.clone().parts_mut().params.as_ref(),
        Some(&searched),
        "stored as searched"
    );
    assert_eq!(loaded.plan().expect("verified").choice, searched);
    type Edit = fn(&mut fhec::backend::params::Choice);
    let edits: [(Edit, &str); 5] = [
        (|c| c.params.lwe_std /= 4.0, "below the 132-bit curve"),
        (|c| c.params.lwe_dimension = 256, "LWE dimension 256"),
        (|c| c.params.pbs_level = 1, "fails p_error"),
        (
            |c| {
                if let Some(x) = &mut c.extract {
                    x.set.glwe_std /= 1e3;
                }
            },
            "bit-extraction set",
        ),
        (
            |c| c.source = "PARAM_MADE_UP".into(),
            "not a tfhe vetted set",
        ),
    ];
    for (edit, want) in edits {
        let mut bad = loaded.clone();
        let mut c = searched.clone();
        edit(&mut c);
        bad.parts_mut().params = Some(c);
        bad.save(&path).expect("save");
        let again = fhec::CompiledModel::load(&path).expect("load");
        let e = again.plan().expect_err("refused").to_string();
        assert!(
            e.contains("stored TFHE parameters are refused") && e.contains(want),
            "{want}: {e}"
        );
        assert_eq!(e.lines().count(), 1, "{e}");
    }
}

/// Artifact formats: format 11 (the previous one) is upgraded on load — the same program and
/// the same clear outputs as the model compiled today, its stored parameters checked against
/// today's noise model — and saved as the current format; an older format is refused in one
/// line naming its version and the fix.
#[test]
fn older_artifact_formats_upgrade_or_are_refused_by_version() {
    let old = repo().join("tests/data/iris_mlp_3bit.v11.fhe");
    let m = fhec::CompiledModel::load(&old).expect("format 11 upgrades");
    let now = compile_iris(3, 4);
    assert_eq!(m.program().dump(), now.program().dump());
    assert_eq!(m.input_quant(), now.input_quant());
    let x = fhec::npy::read_f32(&model("iris_mlp_test_x.npy")).expect("x");
    assert_eq!(
        m.run_clear(std::slice::from_ref(&x)).expect("clear"),
        now.run_clear(&[x]).expect("clear")
    );
    // the parameters it was compiled with (today's search may choose others): secure and
    // meeting every noise check of today's program
    let stored = m.plan().expect("stored plan checked");
    assert_eq!(stored.program, now.plan().expect("plan").program);
    assert_eq!(stored.choice.security_bits, 128);
    assert!(stored.choice.p_error <= m.fhe_options().p_error);
    let again = round_trip(&m, "upgraded.fhe").expect("saved as the current format");
    assert_eq!(
        std::fs::read(tmp("upgraded.fhe")).expect("read")[8..12],
        fhec::artifact::FORMAT_VERSION.to_le_bytes()
    );
    assert_eq!(again.program().dump(), m.program().dump());
    // format 10 (and a future one) by version
    let mut bytes = std::fs::read(&old).expect("read");
    for (v, needle) in [
        (10u32, "format version 10, too old"),
        (99, "format version 99, written by a newer fhec"),
    ] {
        bytes[8..12].copy_from_slice(&v.to_le_bytes());
        let e = fhec::CompiledModel::from_bytes(&bytes, &fhec::ir::Limits::default())
            .expect_err("refused")
            .to_string();
        assert!(e.contains(needle) && e.lines().count() == 1, "{e}");
    }
}

/// `.npy` headers the Python-literal parser behind ndarray-npy would chew on for seconds
/// (it backtracks exponentially on nested brackets) are refused by a scan first: brackets
/// nested or hidden behind an escaped quote (fuzzed inputs that took 10 s and 32 s), and
/// the bytes numpy never writes; numpy's own files still parse.
#[test]
fn npy_headers_that_would_backtrack_are_refused_up_front() {
    let regressions = repo().join("fuzz/regressions/npy");
    for name in [
        "timeout-e72a6051cce3d7371d405d406fecfeb5db242dce",
        "timeout-656973e9491ff1d6e72785075686cab2af5e447b",
    ] {
        let bytes = std::fs::read(regressions.join(name)).expect(name);
        let e = fhec::npy::parse_f32(&bytes).expect_err(name);
        assert!(
            matches!(e, fhec::error::NpyError::Unreadable(_)),
            "{name}: {e}"
        );
    }
    let header = |h: &str| {
        let mut h = h.to_string();
        while !(10 + h.len() + 1).is_multiple_of(64) {
            h.push(' ');
        }
        h.push('\n');
        let mut v = b"\x93NUMPY\x01\x00".to_vec();
        v.extend_from_slice(&(h.len() as u16).to_le_bytes());
        v.extend_from_slice(h.as_bytes());
        v.extend_from_slice(&[0u8; 8]);
        v
    };
    let ok = header("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }");
    assert_eq!(fhec::npy::parse_f32(&ok).expect("numpy's form").len(), 2);
    for bad in [
        "{'descr': '<f4\\\\', 'fortran_order': False, 'shape': (2,), }",
        "{'descr': '''<f4''', 'fortran_order': False, 'shape': (2,), }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': ((((2,),),),), }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }\u{1}",
    ] {
        let e = fhec::npy::parse_f32(&header(bad)).expect_err(bad);
        assert!(
            matches!(e, fhec::error::NpyError::Unreadable(_)),
            "{bad}: {e}"
        );
    }
}
