//! `fhec train`: the quantization-aware network, its exported QONNX model as fhec compiles it
//! (accumulators within budget, proven by the bit-width pass; clear mode equal to the model's
//! own quantized semantics), determinism, an encrypted sample, and bad data refused.

use crate::common::{fhec, model, s, tmp, user_error};
use fhec::train::{self, net::Activation, Task, TrainOptions};
use fhec::{CompileOptions, QuantConfig};

fn digits() -> train::Dataset {
    train::load_npy(
        &model("data/digits_train_x.npy"),
        &model("data/digits_train_y.npy"),
        Task::Classification,
    )
    .expect("digits")
}

/// A small, quick network (hidden width 64) on digits.
fn small() -> TrainOptions {
    TrainOptions {
        n_hidden_multiplier: 1,
        epochs: 25,
        ..TrainOptions::default()
    }
}

fn write(name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = tmp(name);
    std::fs::write(&p, bytes).expect("write");
    p
}

fn test_split() -> (ndarray::ArrayD<f32>, Vec<i64>) {
    (
        fhec::npy::read_f32(&model("data/digits_test_x.npy")).expect("x"),
        fhec::npy::read_labels(&model("data/digits_test_y.npy")).expect("y"),
    )
}

/// Every accumulator of the exported model fits `--n-accum-bits`, as fhec's own bit-width
/// pass proves it (nothing left for prune_check to cut); the model compiles without
/// calibration; clear mode equals the QONNX model's float semantics within one output step
/// and scores as the trainer said.
#[test]
fn trained_model_fits_its_accumulator_budget_and_compiles_without_calibration() {
    for (bits, act, po2) in [
        (8, Activation::Relu, false),
        (8, Activation::Sigmoid, false),
        // power-of-two scales leave weights' top code unused: still read on their own grid
        (8, Activation::Relu, true),
    ] {
        let o = TrainOptions {
            n_accum_bits: Some(bits),
            activation: act,
            power_of_two: po2,
            ..small()
        };
        let t = train::train(&digits(), &o, |_, _| {}).expect("trains");
        assert!(t.layers.iter().all(|l| l.2 <= bits), "{:?}", t.layers);
        let p = write(&format!("digits_a{bits}.onnx"), &t.onnx);
        let opts = CompileOptions {
            auto: fhec::AutoOptions::keep_precision(),
            // no rounding: clear mode is then the model's own integer semantics
            quant: QuantConfig {
                n_accum_bits: Some(bits),
                rounding_bits: None,
                ..QuantConfig::default()
            },
            ..Default::default()
        };
        let m = fhec::compile(&p, &[], &opts).expect("compiles without calibration");
        assert!(
            m.report().pruned.iter().all(|(_, z)| *z == 0),
            "fhec had to prune: {:?}",
            m.report().pruned
        );
        let dense: Vec<_> = m
            .report()
            .layers
            .iter()
            .filter(|l| l.op == "IntDense")
            .collect();
        assert_eq!(dense.len(), 3);
        for l in &dense {
            let proven = l.acc_bits.expect("proven width");
            assert!(proven <= bits, "{}: {proven} bits > {bits}", l.layer);
        }
        // the standardization runs on the client
        assert_eq!(
            m.report().client_head.len(),
            2,
            "{:?}",
            m.report().client_head
        );
        let (x, y) = test_split();
        let float = m.run_float(std::slice::from_ref(&x)).expect("float")[0].clone();
        let clear = m.run_clear(std::slice::from_ref(&x)).expect("clear")[0].clone();
        let agree = (0..y.len())
            .filter(|&i| {
                let row = |a: &ndarray::ArrayD<f32>| {
                    let r = a.index_axis(ndarray::Axis(0), i);
                    r.iter()
                        .enumerate()
                        .max_by(|a, b| a.1.total_cmp(b.1))
                        .map(|(k, _)| k)
                };
                row(&float) == row(&clear)
            })
            .count();
        let gap = float
            .iter()
            .zip(&clear)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let acc_f = fhec::accuracy(&float, &y).expect("labels");
        let acc_c = fhec::accuracy(&clear, &y).expect("labels");
        println!(
            "{act:?}{}, {bits}-bit accumulators: float {acc_f:.4}, clear {acc_c:.4}, same class {agree}/{}, largest |float − clear| {gap:.2e}, val {:?}, live {:?}",
            if po2 { " (power-of-two scales)" } else { "" },
            y.len(),
            t.val_score,
            t.live
        );
        // float ops vs integers: only a value on a rounding boundary may land one step off
        assert!(
            agree * 1000 >= y.len() * 995,
            "{agree} of {} agree",
            y.len()
        );
        assert!(gap < 1e-3, "float and clear differ by {gap}");
        assert!(acc_c >= 0.88, "clear accuracy {acc_c}");
    }
}

#[test]
fn training_is_deterministic_for_a_seed() {
    let o = TrainOptions {
        epochs: 4,
        ..small()
    };
    let d = digits();
    let a = train::train(&d, &o, |_, _| {}).expect("trains");
    let b = train::train(&d, &o, |_, _| {}).expect("trains");
    assert!(a.onnx == b.onnx, "same seed, different models");
    let c = train::train(&d, &TrainOptions { seed: 7, ..o }, |_, _| {}).expect("trains");
    assert!(a.onnx != c.onnx, "another seed gave the same model");
}

/// `--prune-neurons`: that fraction of each hidden layer leaves the exported model, and the
/// table lookups with it.
#[test]
fn structured_pruning_removes_whole_neurons() {
    let o = TrainOptions {
        prune_neurons: 0.5,
        epochs: 10,
        ..small()
    };
    let t = train::train(&digits(), &o, |_, _| {}).expect("trains");
    assert_eq!(t.sizes, vec![64, 64, 64, 10]);
    assert!(t.live[0] <= 32 && t.live[1] <= 32, "{:?}", t.live);
    assert_eq!(t.live[2], 10);
    let p = write("digits_p50.onnx", &t.onnx);
    let m = fhec::compile(
        &p,
        &[],
        &CompileOptions {
            auto: fhec::AutoOptions::keep_precision(),
            ..Default::default()
        },
    )
    .expect("compiles");
    assert_eq!(m.report().pbs_count, t.live[0] + t.live[1]);
}

/// Regression from a CSV file with a named target column; R² on the held-out split.
#[test]
fn regression_from_csv() {
    let d = train::load_csv(
        &model("data/diabetes_train.csv"),
        Some("progression"),
        Task::Regression,
    )
    .expect("csv");
    assert_eq!((d.x.nrows(), d.x.ncols()), (331, 10));
    let o = TrainOptions {
        task: Task::Regression,
        epochs: 40,
        ..TrainOptions::default()
    };
    let t = train::train(&d, &o, |_, _| {}).expect("trains");
    let p = write("diabetes.onnx", &t.onnx);
    let m = fhec::compile(
        &p,
        &[],
        &CompileOptions {
            auto: fhec::AutoOptions::keep_precision(),
            ..Default::default()
        },
    )
    .expect("compiles");
    let x = fhec::npy::read_f32(&model("data/diabetes_test_x.npy")).expect("x");
    let y = fhec::npy::read_f32(&model("data/diabetes_test_y.npy")).expect("y");
    let clear = m.run_clear(std::slice::from_ref(&x)).expect("clear")[0].clone();
    let r2 = fhec::tune::Metric::R2.score(&clear, &y).expect("r2");
    println!("diabetes: clear R² {r2:.2} %");
    assert!(r2 > 30.0, "R² {r2} %");
}

/// One sample of a trained network on real ciphertexts, exact rounding: equal to the integer
/// program bit for bit.
#[test]
fn trained_model_runs_encrypted_exactly() {
    let d = train::load_npy(
        &model("data/breast_cancer_train_x.npy"),
        &model("data/breast_cancer_train_y.npy"),
        Task::Classification,
    )
    .expect("data");
    let o = TrainOptions {
        n_layers: 2,
        n_hidden_multiplier: 1,
        n_w_bits: 2,
        n_a_bits: 2,
        n_accum_bits: Some(5),
        epochs: 20,
        ..TrainOptions::default()
    };
    let t = train::train(&d, &o, |_, _| {}).expect("trains");
    let p = write("bc_tiny.onnx", &t.onnx);
    let opts = CompileOptions {
        auto: fhec::AutoOptions::keep_precision(),
        quant: QuantConfig {
            rounding_bits: Some(4),
            ..QuantConfig::default()
        },
        ..Default::default()
    };
    let m = fhec::compile(&p, &[], &opts).expect("compiles");
    let session = fhec::Session::new(&m).expect("keys");
    let prog = &session.plan().program;
    let x = fhec::npy::read_f32(&model("data/breast_cancer_test_x.npy")).expect("x");
    let x = x
        .slice_axis(ndarray::Axis(0), ndarray::Slice::from(0..1))
        .to_owned();
    let sample = fhec::model::split_batch(m.float_graph(), &[x]).expect("batch");
    let q = m.quantize_inputs(&sample[0]).expect("quantize");
    let want = m.boundary_clear(prog, &q).expect("clear");
    let (got, tm) = session.run_sample(&q, None).expect("encrypted");
    println!(
        "breast cancer 2-bit: {} bootstraps ({} tables), {:.2?}",
        prog.pbs_count, prog.tlu_count, tm.evaluate
    );
    assert_eq!(got, want, "encrypted differs from the integer program");
}

/// Bad data and settings: one line naming the file and the fix, exit code 1.
#[test]
fn bad_training_data_is_refused_in_one_line() {
    let x = tmp("bad_x.npy");
    let nan = ndarray::ArrayD::from_shape_fn(ndarray::IxDyn(&[4, 2]), |i| {
        if i[0] == 2 && i[1] == 1 {
            f32::NAN
        } else {
            1.0
        }
    });
    fhec::npy::write_f32(&x, &nan).expect("write");
    let ok_x = tmp("ok_x.npy");
    fhec::npy::write_f32(&ok_x, &ndarray::ArrayD::ones(ndarray::IxDyn(&[4, 2]))).expect("write");
    let labels = |name: &str, v: &[f32]| {
        let p = tmp(name);
        fhec::npy::write_f32(&p, &ndarray::arr1(v).into_dyn()).expect("write");
        p
    };
    let y = labels("y.npy", &[0.0, 1.0, 0.0, 1.0]);
    let y_neg = labels("y_neg.npy", &[0.0, -1.0, 0.0, 1.0]);
    let y_frac = labels("y_frac.npy", &[0.0, 1.5, 0.0, 1.0]);
    let y_short = labels("y_short.npy", &[0.0, 1.0, 0.0]);
    let out = tmp("bad.onnx");
    let run = |xp: &std::path::Path, yp: &std::path::Path, extra: &[&str]| {
        let mut a = vec!["train", "--input", s(xp), "--labels", s(yp), "-o", s(&out)];
        a.extend_from_slice(extra);
        fhec(&a)
    };
    user_error(
        &run(&x, &y, &[]),
        &["bad_x.npy", "row 2, column 1", "NaN", "impute"],
    );
    user_error(&run(&ok_x, &y_neg, &[]), &["y_neg.npy", "row 1", "0.."]);
    user_error(
        &run(&ok_x, &y_frac, &[]),
        &["y_frac.npy", "1.5", "--task regression"],
    );
    user_error(
        &run(&ok_x, &y_short, &[]),
        &["y_short.npy", "3 target row(s) for 4"],
    );
    user_error(
        &run(&ok_x, &y, &["--n-accum-bits", "4"]),
        &["--n-accum-bits 4"],
    );
    user_error(&run(&ok_x, &y, &["--val-split", "1.5"]), &["--val-split"]);
    user_error(&run(&ok_x, &y, &["--report", "r.json"]), &["add --compile"]);
    user_error(
        &fhec(&["train", "--input", s(&ok_x), "-o", s(&out)]),
        &["--labels"],
    );
    // CSV: a missing target column, a field that is not a number
    let csv = tmp("bad.csv");
    std::fs::write(&csv, "a,b,label\n1,2,0\n3,x,1\n").expect("write");
    user_error(
        &fhec(&[
            "train",
            "--input",
            s(&csv),
            "--target",
            "klass",
            "-o",
            s(&out),
        ]),
        &["bad.csv", "no column `klass`", "a, b, label"],
    );
    user_error(
        &fhec(&["train", "--input", s(&csv), "-o", s(&out)]),
        &["bad.csv", "row 3, column `b`", "`x` is not a number"],
    );
}
