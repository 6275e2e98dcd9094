//! Encrypted inference on real ciphertexts equals `eval_int` bit for bit.

use fhec::ir::{Graph, Op, Tensor, TensorType, Unary};
use fhec::{CompileOptions, Model, QuantConfig};
use ndarray::{ArrayD, IxDyn};

/// 4 inputs → 4 → ReLU → 2, built directly in the IR.
fn tiny() -> Model {
    let mut g = Graph::new();
    let x = g.add_input("x", TensorType::f32(vec![1, 4]), true);
    let w1 = g.add_const(
        "w1",
        Tensor::F32(
            ArrayD::from_shape_vec(
                IxDyn(&[4, 4]),
                vec![
                    0.5, -0.3, 0.8, 0.1, -0.6, 0.9, 0.2, -0.4, 0.3, 0.3, -0.7, 0.6, 0.1, -0.8, 0.4,
                    0.5,
                ],
            )
            .expect("w1"),
        ),
    );
    let b1 = g.add_const(
        "b1",
        Tensor::F32(ArrayD::from_shape_vec(IxDyn(&[4]), vec![0.1, -0.2, 0.05, 0.0]).expect("b1")),
    );
    let h = g
        .add_op(
            "fc1",
            Op::Gemm {
                alpha: 1.0,
                beta: 1.0,
                trans_a: false,
                trans_b: false,
            },
            &[x, w1, b1],
        )
        .expect("fc1");
    let r = g
        .add_op("relu", Op::Unary(Unary::Relu), &[h])
        .expect("relu");
    let w2 = g.add_const(
        "w2",
        Tensor::F32(
            ArrayD::from_shape_vec(
                IxDyn(&[4, 2]),
                vec![0.7, -0.5, -0.2, 0.9, 0.6, 0.3, -0.4, 0.8],
            )
            .expect("w2"),
        ),
    );
    let y = g
        .add_op(
            "fc2",
            Op::Gemm {
                alpha: 1.0,
                beta: 1.0,
                trans_a: false,
                trans_b: false,
            },
            &[r, w2],
        )
        .expect("fc2");
    g.add_output("y", y);
    Model::new(g, "tiny")
}

fn calib() -> ArrayD<f32> {
    ArrayD::from_shape_fn(IxDyn(&[64, 4]), |i| {
        (((i[0] * 7 + i[1] * 13) % 17) as f32 / 8.0) - 1.0
    })
}

/// Row `s` of the calibration data, quantized as the client does.
fn calib_row(m: &fhec::CompiledModel, s: usize) -> Vec<Tensor> {
    let row = calib()
        .slice_axis(ndarray::Axis(0), ndarray::Slice::from(s..s + 1))
        .to_owned();
    fhec::ir::quantize_sample(&[Tensor::F32(row)], m.input_quant())
}

/// Inputs in the calibration box that drive some table input beyond its calibrated domain
/// (found by a seeded search; the calibration set itself never does).
fn overflowing_rows(m: &fhec::CompiledModel, want: usize) -> Vec<Vec<Tensor>> {
    overflowing_rows_at(m, want, |_| true)
}

/// [`overflowing_rows`] whose overflow is at a layer `at` accepts.
fn overflowing_rows_at(
    m: &fhec::CompiledModel,
    want: usize,
    at: impl Fn(&str) -> bool,
) -> Vec<Vec<Tensor>> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f32 / (1u64 << 53) as f32
    };
    let mut rows = Vec::new();
    for _ in 0..4000 {
        let x = ArrayD::from_shape_fn(IxDyn(&[1, 4]), |_| 2.0 * next() - 1.0);
        let (_, ov) = m.run_clear_counted(std::slice::from_ref(&x)).expect("runs");
        if ov.by_layer.iter().any(|(l, (o, _))| *o > 0 && at(l)) {
            rows.push(fhec::ir::quantize_sample(
                &[Tensor::F32(x)],
                m.input_quant(),
            ));
            if rows.len() == want {
                break;
            }
        }
    }
    rows
}

/// Exact rounding on real ciphertexts, on two partitions: the bit extractions on their own
/// small set, whose key holds the registers, the tables keyswitched to their key and back.
#[test]
fn encrypted_tiny_mlp_equals_eval_int_exactly() {
    encrypted_tiny_mlp_exact(fhec::backend::TableSplit::Off);
}

/// The same with split tables: each table as two bootstraps of one bit less, its index's low
/// bit extracted and used as the second one's sign ([`fhec::backend::Program::split`]).
#[test]
fn encrypted_split_tables_equal_eval_int_exactly() {
    encrypted_tiny_mlp_exact(fhec::backend::TableSplit::On);
}

fn encrypted_tiny_mlp_exact(split: fhec::backend::TableSplit) {
    // calibrated ranges without a margin, so that reads beyond a table's domain occur: the
    // encrypted run must wrap exactly as the integer program says
    let cfg = QuantConfig {
        rounding_bits: Some(4),
        range_margin: 0.0,
        ..QuantConfig::with_n_bits(3)
    };
    let m = fhec::compile_model(
        &tiny(),
        &[calib()],
        &CompileOptions {
            auto: fhec::AutoOptions::keep_precision(),
            quant: cfg,
            fhe: fhec::backend::FheOptions {
                split_tables: split,
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .expect("compiles");
    // the decrypted layer runs as limbs (3-bit weights + 4), each decrypted on its own
    assert!(
        m.report().outputs.len() >= 2
            && m.report().outputs.iter().any(|(o, _)| o.contains(":limb")),
        "{:?}",
        m.report().outputs
    );
    let session = fhec::Session::new(&m).expect("parameters and keys");
    let p = &session.plan().program;
    let choice = &session.plan().choice;
    println!(
        "tiny: {} table lookups, {} bootstraps, table bits {}, message bits {}, params {}, extraction {:?}, split {}, p_error {:.2e}, keygen {:.2?}",
        p.tlu_count, p.pbs_count, p.tlu_bits, p.msg_bits, choice.params, choice.extract.as_ref().map(ToString::to_string), p.split, choice.p_error, session.keygen_time
    );
    assert_eq!(p.split, split == fhec::backend::TableSplit::On);
    assert_eq!(choice.split_tables, p.split);
    assert!(
        choice.extract.is_some(),
        "the extractions should run on their own set"
    );
    assert!(
        p.pbs_count > p.tlu_count,
        "exact rounding should extract bits"
    );
    // some table inputs are narrower than the message width (the decrypted limbs set it):
    // their extractions work at the table's read scale, 2^(B−drop−p) > 1
    assert!(
        p.stages.iter().flatten().any(|i| matches!(
            i,
            fhec::backend::Instr::Tlu { drop, .. } if *drop > 0 && p.msg_bits > drop + p.tlu_bits
        )),
        "no narrow table input: the scaled extraction is not exercised"
    );
    let wrapping = overflowing_rows(&m, 2);
    assert_eq!(
        wrapping.len(),
        2,
        "no input leaves a calibrated table domain"
    );
    // the decrypted output's calibrated window (Op::Wrap) left: the client wraps as the
    // integer program does
    let beyond_window = overflowing_rows_at(&m, 1, |l| l.ends_with("(decrypted)"));
    assert_eq!(beyond_window.len(), 1, "no input leaves the output window");
    let rows = [0usize, 5, 9, 17, 30, 63].map(|s| (format!("{s}"), calib_row(&m, s)));
    let wrapping = wrapping
        .into_iter()
        .chain(beyond_window)
        .enumerate()
        .map(|(i, q)| (format!("beyond a domain #{i}"), q));
    for (s, q) in rows.into_iter().chain(wrapping) {
        let want = m.boundary_clear(p, &q).expect("clear");
        let (got, t) = session.run_sample(&q, None).expect("encrypted run");
        println!(
            "sample {s}: clear {want:?} encrypted {got:?} in {:.2?}",
            t.evaluate
        );
        assert_eq!(got, want, "sample {s}: encrypted differs from eval_int");
        let outs = m.client_tail(p, &got).expect("tail");
        let clear = fhec::ir::eval_int(m.program(), &q).expect("eval_int");
        assert_eq!(outs, clear, "client tail");
    }
}

/// The register program run in the clear equals `eval_int` on every shipped model: the
/// lowering (register renaming, leveled sums, table offsets and contents) is checked without
/// the cost of encryption.
#[test]
fn program_interpreter_equals_eval_int_on_shipped_models() {
    use crate::common::model;
    let mut wrapped = 0;
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model("manifest.json")).expect("manifest"))
            .expect("json");
    let names: Vec<&str> = manifest["models"]
        .as_array()
        .expect("models")
        .iter()
        .map(|m| m["name"].as_str().expect("name"))
        .collect();
    assert!(names.len() >= 10, "{names:?}");
    for name in names {
        let calib = fhec::npy::read_f32(&model(&format!("{name}_calib.npy"))).expect("calib");
        // no margin, so that reads beyond the calibrated domains occur on the scaled inputs
        let opts = CompileOptions {
            auto: fhec::AutoOptions::keep_precision(),
            quant: QuantConfig {
                range_margin: 0.0,
                ..QuantConfig::default()
            },
            ..Default::default()
        };
        let m = fhec::compile(&model(&format!("{name}.onnx")), &[calib], &opts).expect("compiles");
        let x = fhec::npy::read_f32(&model(&format!("{name}_test_x.npy"))).expect("test x");
        let x = x
            .slice_axis(ndarray::Axis(0), ndarray::Slice::from(0..12))
            .to_owned();
        // the test inputs, and the same pushed out of the calibration range
        let x =
            ndarray::concatenate(ndarray::Axis(0), &[x.view(), (&x * 2.5).view()]).expect("batch");
        wrapped += m
            .run_clear_counted(std::slice::from_ref(&x))
            .expect("runs")
            .1
            .outside;
        let prog =
            fhec::backend::lower(m.program(), m.input_quant(), fhec::backend::Rounding::Exact)
                .expect("lowers");
        for sample in fhec::model::split_batch(m.float_graph(), &[x]).expect("batch") {
            let q = fhec::ir::quantize_sample(&sample, m.input_quant());
            let ints: Vec<Vec<i64>> = q.iter().map(Tensor::i64_values).collect();
            let got = prog.eval_clear(&ints, None).expect("runs");
            assert_eq!(got, m.boundary_clear(&prog, &q).expect("clear"), "{name}");
        }
        println!(
            "{name}: {} table lookups, {} bootstraps (exact), tables of {} bits, {} message bits",
            prog.tlu_count, prog.pbs_count, prog.tlu_bits, prog.msg_bits
        );
    }
    assert!(wrapped > 0, "no read beyond a domain was exercised");
}

/// Approximate rounding on real ciphertexts: every table lookup returns the entry of the
/// exact index or of a neighbour (checked per lookup on decrypted registers, so errors do not
/// compound), and neighbours occur at about the predicted rate.
#[test]
fn approximate_rounding_is_off_by_at_most_one_per_lookup() {
    approximate_off_by_one(fhec::backend::TableSplit::Off);
}

/// The same with the rounded tables on the second partition ([`fhec::backend::Program::light`]):
/// keyswitched from the registers' key to that partition's small key, bootstrapped there,
/// and the off-by-one rate that partition's noise predicts.
#[test]
fn light_tables_are_off_by_at_most_one_per_lookup() {
    approximate_off_by_one(fhec::backend::TableSplit::On);
}

fn approximate_off_by_one(split: fhec::backend::TableSplit) {
    use fhec::backend::{FheOptions, Instr, Rounding};
    let cfg = QuantConfig {
        rounding_bits: Some(3),
        ..QuantConfig::with_n_bits(4)
    };
    let m = fhec::compile_model(
        &tiny(),
        &[calib()],
        &CompileOptions {
            auto: fhec::AutoOptions::keep_precision(),
            quant: cfg,
            fhe: FheOptions {
                rounding: Rounding::Approximate,
                split_tables: split,
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .expect("compiles");
    let session = fhec::Session::new(&m).expect("parameters and keys");
    let prog = &session.plan().program;
    assert_eq!(prog.pbs_count, prog.tlu_count, "no bit extraction");
    let light = split == fhec::backend::TableSplit::On;
    assert_eq!(prog.light, light);
    assert_eq!(session.plan().choice.light_tables, light);
    assert_eq!(session.plan().choice.extract.is_some(), light);
    let b = prog.msg_bits;
    let (mut lookups, mut neighbours, mut rounded) = (0usize, 0usize, 0usize);
    for s in 0..24 {
        let q = calib_row(&m, s);
        let vals = session.run_registers(&q, -(1i64 << b)).expect("runs");
        for ins in prog.stages.iter().flatten() {
            let Instr::Tlu {
                dst,
                src,
                offset,
                drop,
                table,
            } = ins
            else {
                continue;
            };
            let u = vals[*src as usize].expect("source decrypts") + offset;
            let idx = u >> drop;
            let t = &prog.tables[*table as usize];
            let got = vals[*dst as usize].expect("result decrypts");
            let at = |i: i64| t.get(i as usize).copied();
            lookups += 1;
            rounded += usize::from(*drop > 0);
            if Some(got) == at(idx) {
                continue;
            }
            assert!(
                *drop > 0 && (Some(got) == at(idx - 1) || Some(got) == at(idx + 1)),
                "lookup {u} >> {drop}: got {got}, table around {idx}: {:?}",
                &t[(idx - 1).max(0) as usize..(idx + 2).min(t.len() as i64) as usize]
            );
            neighbours += 1;
        }
    }
    let rate = neighbours as f64 / rounded.max(1) as f64;
    println!(
        "approximate: {lookups} lookups ({rounded} rounded), {neighbours} neighbour entries (rate {rate:.3}, predicted at most {:.3}), params {:?}, second partition {:?}",
        session.plan().choice.off_by_one, session.plan().choice.params, session.plan().choice.extract
    );
    assert!(
        rate <= 4.0 * session.plan().choice.off_by_one + 0.05,
        "off-by-one rate {rate}"
    );
}

/// The noise model against real bootstraps: with the input noise tuned so that the model
/// predicts a 2^-6 error rate, the observed rate over 1,500 lookups is within a factor of 4;
/// with the noise the optimizer allows at 2^-40, no error.
#[test]
fn observed_table_error_rate_matches_the_noise_model() {
    use fhec::backend::params::{search, Target};
    use fhec::runtime::measure;
    let p = 4;
    let one = measure::table_constraint(p, 1);
    let params = search(
        std::slice::from_ref(&one),
        p,
        Target::p_error(2f64.powi(-40)),
        2.5e9,
    )
    .expect("parameters")
    .params;
    // the weight at which the model predicts failures at 2^-6
    let w = (1..1u64 << 20)
        .find(|&w| params.p_error(&measure::table_constraint(p, w)) >= 2f64.powi(-6))
        .expect("a noise level that fails");
    let predicted = params.p_error(&measure::table_constraint(p, w));
    let (ck, sk, _) = measure::keys(&params, p);
    let trials = 1500;
    let errors = measure::table_errors(&ck, &sk, p, w, trials, 1);
    let observed = errors as f64 / trials as f64;
    println!(
        "{params:?}: weight {w}, predicted {predicted:.4}, observed {observed:.4} ({errors}/{trials})"
    );
    assert!(
        observed >= predicted / 4.0 && observed <= predicted * 4.0,
        "observed {observed} vs predicted {predicted}"
    );
    assert_eq!(measure::table_errors(&ck, &sk, p, 1, trials, 2), 0);
    // the bootstrap output noise itself, against the formula
    let v = measure::pbs_output_variance(&ck, &sk, p, 400);
    println!(
        "bootstrap output variance 2^{:.2}, formula 2^{:.2}",
        v.log2(),
        params.v_pbs().log2()
    );
    assert!(
        v > params.v_pbs() / 2.0 && v < params.v_pbs() * 2.0,
        "V_pbs {v}"
    );
}

/// The client/server split through files, with the library API: keygen, encrypt, serve,
/// decrypt equal clear mode; keys and ciphertexts of another key pair or model, truncated
/// and damaged files, and files of the wrong kind are refused with errors naming them.
#[test]
fn client_server_split_through_files() {
    use crate::common::model;
    use fhec::runtime::files::{self, CT_LIMIT, KEY_LIMIT};
    use fhec::runtime::{
        CiphertextShape, ClientKey, CompressedServerKey, EncryptedInputs, KeyShape,
    };
    use fhec::{Ciphertexts, Client, EvaluationKeys, Server};
    let dir = std::env::temp_dir().join(format!("fhec-split-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let m = crate::common::compile_iris(3, 4);
    let x = fhec::npy::read_f32(&model("iris_mlp_test_x.npy")).expect("x");
    let x = x
        .slice_axis(ndarray::Axis(0), ndarray::Slice::from(0..3))
        .to_owned();

    // client
    let (client, keys) = Client::keygen(&m).expect("keys");
    let (ckp, skp) = (dir.join("client.key"), dir.join("server.key"));
    client.save_key(&ckp).expect("save client key");
    keys.save(&skp).expect("save server key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&ckp).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "client.key must be private");
    }
    let client = Client::load(&m, &ckp).expect("load client key");
    let cts = client.encrypt(std::slice::from_ref(&x)).expect("encrypts");
    let ctp = dir.join("x.ct");
    cts.save(&ctp).expect("save inputs");
    // server: the evaluation keys and the ciphertexts only
    let keys = EvaluationKeys::load(&m, &skp).expect("load");
    let server = Server::new(&m, &keys).expect("expands");
    let cts = Ciphertexts::load_inputs(&m, &ctp).expect("load");
    let outs = server.run(&cts).expect("evaluates");
    let yp = dir.join("y.ct");
    outs.save(&yp).expect("save outputs");
    // client
    let outs = Ciphertexts::load_outputs(&m, &yp).expect("load");
    let y = client.decrypt(&outs).expect("decrypts");
    assert_eq!(y, m.run_clear(std::slice::from_ref(&x)).expect("clear"));
    // bytes and files are the same formats
    assert_eq!(
        outs.to_bytes().expect("bytes"),
        std::fs::read(&yp).expect("read")
    );
    assert_eq!(
        keys.to_bytes().expect("bytes"),
        std::fs::read(&skp).expect("read")
    );
    // the plan bounds the keys as they travel (what `fhec serve` accepts), tightly, and
    // says how large ciphertexts are
    let info = m.plan_info().expect("plan");
    let key_len = keys.to_bytes().expect("bytes").len() as u64;
    let framing = fhec::ExpectedKeySizes::FRAMING;
    assert!(
        key_len <= info.key_bytes.seeded_max && key_len + framing >= info.key_bytes.seeded_max,
        "seeded keys of {key_len} bytes, bound {}",
        info.key_bytes.seeded_max
    );
    // inputs travel seeded (8 bytes a ciphertext and a seed per tensor), results whole
    let ct_len = std::fs::read(&ctp).expect("read").len() as u64;
    let seeded = 3 * 8 * info.input_ciphertexts as u64;
    assert!(
        ct_len >= seeded && ct_len <= seeded + 1024,
        "3 samples in {ct_len} bytes, {seeded} bytes of seeded bodies"
    );
    let y_len = std::fs::read(&yp).expect("read").len() as u64;
    let whole = 3 * info.output_ciphertexts as u64 * info.ciphertext_bytes;
    assert!(
        y_len >= whole && y_len <= whole + 1024,
        "3 results in {y_len} bytes, {whole} bytes of ciphertexts"
    );

    // another key pair: ids differ
    let (client2, keys2) = Client::keygen(&m).expect("keys");
    let e = Server::new(&m, &keys2)
        .expect("expands")
        .run(&cts)
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("another key pair"), "{e}");
    let e = client2.decrypt(&outs).expect_err("refused").to_string();
    assert!(e.contains("another key pair"), "{e}");
    let e = server.run(&outs).err().expect("refused").to_string();
    assert!(e.contains("encrypted results"), "{e}");
    // another model (other bits: other program)
    let opts4 = CompileOptions {
        auto: fhec::AutoOptions::keep_precision(),
        quant: QuantConfig {
            rounding_bits: Some(5),
            ..QuantConfig::with_n_bits(4)
        },
        ..Default::default()
    };
    let calib = fhec::npy::read_f32(&model("iris_mlp_calib.npy")).expect("calib");
    let m4 = fhec::compile(&model("iris_mlp.onnx"), &[calib], &opts4).expect("compiles");
    let e = EvaluationKeys::load(&m4, &skp)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        e.contains("server.key")
            && (e.contains("another model") || e.contains("dimensions do not match")),
        "{e}"
    );
    // wrong kind of file, truncated, damaged
    // keys and ciphertexts of mismatched dimensions are refused before any use
    let plan = m.plan().expect("plan");
    let kshape = KeyShape::of(
        &plan.program,
        &plan.choice.params,
        plan.choice.extract.as_ref(),
    );
    let ishape = CiphertextShape::inputs(&plan.program, plan.choice.home());
    let mut other_dims = kshape.clone();
    other_dims.params.lwe_dimension += 8;
    for (what, r) in [
        (
            "server key",
            files::load::<CompressedServerKey>(&skp, "server key", KEY_LIMIT, &other_dims).err(),
        ),
        (
            "client key",
            files::load::<ClientKey>(&ckp, "client key", KEY_LIMIT, &{
                let mut k = kshape.clone();
                k.params.polynomial_size *= 2;
                k
            })
            .err(),
        ),
    ] {
        let e = r.expect("refused").to_string();
        assert!(e.contains("dimensions do not match"), "{what}: {e}");
    }
    let mut more = ishape.clone();
    more.counts[0] += 1;
    let e = files::load::<EncryptedInputs>(&ctp, "encrypted input", CT_LIMIT, &more)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        e.contains("x.ct") && e.contains("dimensions do not match"),
        "{e}"
    );
    let e = Client::load(&m, &skp).err().expect("refused").to_string();
    assert!(
        e.contains("server.key") && e.contains("not an fhec client key"),
        "{e}"
    );
    let bytes = std::fs::read(&ctp).expect("read");
    let cut = dir.join("cut.ct");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).expect("write");
    let e = Ciphertexts::load_inputs(&m, &cut)
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("cut.ct") && e.contains("checksum"), "{e}");
    let mut flipped = bytes.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x10;
    std::fs::write(&cut, &flipped).expect("write");
    let e = Ciphertexts::load_inputs(&m, &cut)
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("checksum"), "{e}");
    std::fs::write(&cut, b"").expect("write");
    assert!(Ciphertexts::load_inputs(&m, &cut).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--mode sim` injects bootstrap failures: none at probability 0 (exact rounding then equals
/// clear mode), at the requested rate otherwise (binomial, 5σ), deterministic for a seed.
#[test]
fn sim_injects_bootstrap_failures_at_the_requested_rate() {
    use crate::common::model;
    use fhec::backend::{FheOptions, Rounding};
    let m = crate::common::compile_iris(4, 4);
    let x = fhec::npy::read_f32(&model("iris_mlp_test_x.npy")).expect("x");
    let views: Vec<_> = (0..20).map(|_| x.view()).collect();
    let x = ndarray::concatenate(ndarray::Axis(0), &views).expect("tiled");
    let n = x.shape()[0] as u64;
    let xs = std::slice::from_ref(&x);

    // exact rounding: every lookup costs 1 + dropped bits bootstraps
    let (y, st) = m.run_simulated_with(xs, 1, Some(0.0)).expect("sim");
    assert_eq!(st.failures, 0);
    assert_eq!(
        st.bootstraps,
        n * m.plan().expect("plan").program.pbs_count as u64
    );
    assert_eq!(y, m.run_clear(xs).expect("clear"));

    // approximate rounding: one bootstrap per lookup, so failures / bootstraps estimates p
    let approx = m
        .with_fhe_options(FheOptions {
            rounding: Rounding::Approximate,
            ..Default::default()
        })
        .expect("approximate plan");
    let p = 0.05;
    let (y1, st1) = approx.run_simulated_with(xs, 7, Some(p)).expect("sim");
    let b = st1.bootstraps as f64;
    let sd = (b * p * (1.0 - p)).sqrt();
    println!(
        "sim failures: {} of {} bootstraps (p = {p}, expected {:.0} ± {sd:.1})",
        st1.failures,
        st1.bootstraps,
        b * p
    );
    assert!(
        (st1.failures as f64 - b * p).abs() < 5.0 * sd,
        "{} failures in {} bootstraps at p = {p}",
        st1.failures,
        st1.bootstraps
    );
    // deterministic for a seed, and a loose p shows: outputs move
    let (y2, st2) = approx.run_simulated_with(xs, 7, Some(p)).expect("sim");
    assert_eq!((y1.clone(), st1), (y2, st2));
    let (y0, _) = approx.run_simulated_with(xs, 7, Some(0.0)).expect("sim");
    assert_ne!(y1, y0, "5% failed lookups change some output");
    assert!(approx.run_simulated_with(xs, 7, Some(1.5)).is_err());
}

/// The bit-extraction partition against the noise model, on real bootstraps: its own
/// parameter set, whose big key holds the registers (an extraction keyswitches to its small
/// key and bootstraps; a table keyswitches to the main set's small key, bootstraps and
/// keyswitches back). At the register noise where the model predicts bit errors at 2^-6,
/// the observed rate over 1,500 extractions is within a factor of 4; at the noise the
/// optimizer allows for 2^-40, no error; an extracted bit's variance and a table output's
/// (bootstrap + keyswitch back) match the formulas.
#[test]
fn observed_bit_extraction_error_rate_matches_the_noise_model() {
    use fhec::backend::params::{search, Target};
    use fhec::backend::partition::search_extract;
    use fhec::runtime::measure;
    let b = 6;
    let target = Target::p_error(2f64.powi(-40));
    let main = search(&[measure::table_constraint(4, 1)], 4, target, 2.5e9)
        .expect("main set")
        .params;
    // the bit is read (decrypted here; by later extractions and the table in a program)
    let read_bit = fhec::backend::params::Constraint {
        kind: fhec::backend::params::ConstraintKind::Decryption,
        at: "measurement".into(),
        count: 1,
        alpha: 0.0,
        gamma: 1.0,
        beta: 0.0,
        scale: 1.0,
        margin: 2f64.powi(-(b as i32) - 2),
    };
    let (main, x) = search_extract(
        &main,
        &[measure::extraction_constraint(b, 1), read_bit],
        target,
    )
    .expect("extraction set");
    assert!(
        x.set.polynomial_size < main.polynomial_size || x.set.lwe_dimension < main.lwe_dimension,
        "the extraction set should be smaller: {x} vs {main}"
    );
    let variance = |w: u64| {
        fhec::backend::params::read_variance(&main, Some(&x), &measure::extraction_constraint(b, w))
    };
    let predicted_of = |w: u64| fhec::backend::params::p_error_of(variance(w), 0.25);
    let w = (1..1u64 << 20)
        .find(|&w| predicted_of(w) >= 2f64.powi(-6))
        .expect("a noise level that fails");
    let predicted = predicted_of(w);
    let (ck, sk, _) = measure::keys_with(&main, Some(&x), b);
    let trials = 1500;
    let errors = measure::extraction_errors(&ck, &sk, b, w, trials, 3);
    let observed = errors as f64 / trials as f64;
    println!(
        "main {main}, extraction {x}: weight {w}, predicted {predicted:.4}, observed {observed:.4} ({errors}/{trials})"
    );
    assert!(
        observed >= predicted / 4.0 && observed <= predicted * 4.0,
        "observed {observed} vs predicted {predicted}"
    );
    assert_eq!(measure::extraction_errors(&ck, &sk, b, 1, trials, 4), 0);
    let v = measure::bit_output_variance(&ck, &sk, b, 400);
    let want = x.v_bit();
    println!(
        "extracted bit variance 2^{:.2}, formula 2^{:.2}",
        v.log2(),
        want.log2(),
    );
    assert!(v > want / 2.0 && v < want * 2.0, "V_bit {v} vs {want}");
    // a table output: keys of the same sets for 4-bit messages (what the main set reads)
    let (ck, sk, _) = measure::keys_with(&main, Some(&x), 4);
    let v = measure::pbs_output_variance(&ck, &sk, 4, 400);
    let want = x.v_table(&main);
    println!(
        "table output variance 2^{:.2}, formula 2^{:.2} (bootstrap 2^{:.2} + keyswitch back 2^{:.2})",
        v.log2(),
        want.log2(),
        main.v_pbs().log2(),
        x.v_fks(&main).log2()
    );
    assert!(v > want / 2.0 && v < want * 2.0, "V_table {v} vs {want}");
}

/// `bench` measures latency sample by sample and throughput as one batch (the way the
/// server evaluates a request): both decrypt to the integer program, bit for bit.
#[test]
fn bench_batches_equal_clear_mode() {
    use crate::common::model;
    let m = crate::common::compile_iris(3, 4);
    let x = fhec::npy::read_f32(&model("iris_mlp_test_x.npy")).expect("x");
    let x = x
        .slice_axis(ndarray::Axis(0), ndarray::Slice::from(0..4))
        .to_owned();
    let (r, _) = fhec::bench::bench("iris", &m, &[x], None, |_| {}).expect("bench");
    assert_eq!(r.samples, 4);
    assert_eq!(r.equal_clear, 4, "sample by sample");
    assert_eq!(r.batch_equal_clear, 4, "as one batch");
    assert!(r.throughput_samples_per_s > 0.0 && r.sequential_samples_per_s > 0.0);
}

/// `bench-pbs` measures classic, many-LUT and multi-bit bootstraps side by side, each
/// result checked (a wrong table read is an error, not a row): at 2 bits, many-LUT reads two
/// tables per bootstrap, and every vetted multi-bit grouping factor of that width runs on one
/// thread, on two inside one bootstrap, and two at once.
#[test]
fn bench_pbs_multi_bit_and_many_lut_decrypt_right() {
    let o = fhec::bench::PbsOptions {
        bits: vec![2],
        norm2: 1.0,
        p_error: 2f64.powi(-40),
        reps: 2,
        vetted: false,
        multi_bit: true,
        many_lut: true,
        threads: vec![1, 2],
    };
    let rows =
        fhec::bench::bench_pbs(&o, |_| {}, |p, e| panic!("{p} bits: {e}")).expect("bench-pbs");
    let kinds: std::collections::BTreeSet<&str> = rows.iter().map(|r| r.kind.as_str()).collect();
    for k in [
        "classic",
        "many-LUT x2",
        "multi-bit g2",
        "multi-bit g3",
        "multi-bit g4",
    ] {
        assert!(kinds.contains(k), "{k} measured: {kinds:?}");
    }
    for r in &rows {
        assert!(r.ms_per_pbs > 0.0 && r.ms_per_table > 0.0, "{r:?}");
        assert_eq!(r.ms_per_table * r.tables_per_pbs as f64, r.ms_per_pbs);
        assert!(r.p_error < 1e-9, "{r:?}");
    }
    let inside = rows
        .iter()
        .filter(|r| r.threading == "2 threads inside one")
        .count();
    assert_eq!(inside, 3, "one per grouping factor");
    // options out of range are setting errors naming the flag
    let bad = fhec::bench::PbsOptions {
        threads: vec![0],
        ..o
    };
    let e = fhec::bench::bench_pbs(&bad, |_| {}, |_, _| {}).expect_err("0 threads");
    assert!(e.to_string().contains("--threads"), "{e}");
}
