//! `fhec tune`: deterministic for a seed, regression targets (R²), and one-line errors for
//! bad flags.

use crate::common::{fhec, model, s, user_error};
use fhec::tune::{r2, tune, Metric, TuneOptions, Tuned};
use ndarray::ArrayD;

fn small_grid(metric: Metric, seed: u64) -> TuneOptions {
    TuneOptions {
        metric,
        // iris' 45 test inputs: one sample is 2.2 points, and two of them sit within 0.15
        // of a tie, so the paired estimate of a 4-5-bit circuit is several points
        max_drop: 25.0,
        n_bits: vec![4, 5],
        rounding_bits: vec![4],
        p_errors: vec![2f64.powi(-40), 1e-3],
        seed,
        ..Default::default()
    }
}

/// A shipped model, its calibration set and its test inputs.
fn shipped(name: &str) -> (fhec::Model, ArrayD<f32>, ArrayD<f32>) {
    let m = fhec::Model::load(&model(&format!("{name}.onnx"))).expect("model");
    let calib = fhec::npy::read_f32(&model(&format!("{name}_calib.npy"))).expect("calib");
    let x = fhec::npy::read_f32(&model(&format!("{name}_test_x.npy"))).expect("x");
    (m, calib, x)
}

/// A shipped model's test labels as tune's targets.
fn labels(name: &str) -> ArrayD<f32> {
    let y: Vec<i64> = fhec::npy::read_labels(&model(&format!("{name}_test_y.npy"))).expect("y");
    ndarray::Array1::from_iter(y.iter().map(|&v| v as f32)).into_dyn()
}

fn tune_on(
    (m, calib, x): &(fhec::Model, ArrayD<f32>, ArrayD<f32>),
    y: &ArrayD<f32>,
    opts: &TuneOptions,
) -> Tuned {
    tune(
        m,
        std::slice::from_ref(calib),
        std::slice::from_ref(x),
        y,
        opts,
        |_, _| {},
    )
    .expect("tunes")
}

#[test]
fn tune_is_deterministic_and_picks_the_cheapest_passing_candidate() {
    let data = shipped("iris_mlp");
    let y = labels("iris_mlp");
    let run = |seed| tune_on(&data, &y, &small_grid(Metric::Accuracy, seed));
    let (a, b) = (run(3), run(3));
    assert_eq!(a.candidates, b.candidates);
    assert_eq!(a.chosen, b.chosen);
    // phase 1: 2 n_bits × 2 range policies × 2 rounding methods × 2 error probabilities;
    // phase 2: one trial per layer (iris: 2) at the chosen method and error probability
    let global = a.candidates.iter().filter(|c| c.config.layers.is_empty());
    assert_eq!(global.count(), 16);
    assert!(a.candidates.len() <= 18);
    assert!(a
        .candidates
        .iter()
        .any(|c| c.config.ranges == fhec::passes::RangePolicy::Proven));
    let chosen = &a.candidates[a.chosen];
    assert!(chosen.drop_estimate <= 25.0);
    assert!((a.margin() - (25.0 - chosen.drop_estimate)).abs() < 1e-12);
    for c in &a.candidates {
        assert!(
            c.drop_estimate > 25.0 || c.est_ms >= chosen.est_ms,
            "{c:?} beats {chosen:?}"
        );
        // a classifier's bound is an exact binomial one: positive even with no disagreement
        // at all; the estimate is at least the paired and the observed disagreement rates,
        // and (the paired drop being within the paired rate) at most the larger of twice the
        // one and the other
        assert!(c.drop_bound > 0.0 && c.drop_bound <= 100.0, "{c:?}");
        let paired = c.paired.expect("a classifier");
        let agreement = c.agreement.expect("a classifier");
        assert!((0.0..=1.0).contains(&agreement), "{c:?}");
        let observed = 100.0 * (1.0 - agreement);
        assert!(c.drop_estimate >= paired.max(observed) - 1e-9, "{c:?}");
        assert!(
            c.drop_estimate <= (2.0 * paired).max(observed) + 1e-9,
            "{c:?}"
        );
    }
    // the Pareto front starts at the cheapest candidate and only lowers the estimate
    let front: Vec<_> = a.pareto().into_iter().map(|i| &a.candidates[i]).collect();
    assert!(front
        .windows(2)
        .all(|w| w[1].drop_estimate < w[0].drop_estimate && w[1].est_ms >= w[0].est_ms));
    // the chosen model carries the chosen settings
    assert_eq!(a.model.fhe_options().rounding, chosen.rounding);
    assert_eq!(a.model.report().config, chosen.config);
}

/// Phase 1b: when no setting of the grid passes, tune raises precision past it (compile's
/// moves) before refusing; a refusal says what raising reached.
#[test]
fn tune_raises_precision_when_no_grid_setting_passes() {
    let data = shipped("iris_mlp");
    let y = labels("iris_mlp");
    let opts = TuneOptions {
        n_bits: vec![2],
        rounding_bits: vec![2],
        per_layer: false,
        ..small_grid(Metric::Accuracy, 0)
    };
    let t = tune_on(&data, &y, &opts);
    // 2 range policies × 2 rounding methods × 2 error probabilities, none within 25 points
    let grid = &t.candidates[..8];
    assert!(grid.iter().all(|c| c.drop_estimate > 25.0), "{grid:?}");
    let chosen = &t.candidates[t.chosen];
    assert!(t.chosen >= 8 && chosen.drop_estimate <= 25.0, "{chosen:?}");
    let c = &chosen.config;
    assert!(
        c.n_bits_weights > 2 || !c.layers.is_empty(),
        "raised: {:?}",
        chosen.summary()
    );
    // one step only, and a budget nothing meets: refused, saying what raising reached
    let e = match tune(
        &data.0,
        std::slice::from_ref(&data.1),
        std::slice::from_ref(&data.2),
        &y,
        &TuneOptions {
            max_drop: 0.0,
            raise_steps: 1,
            ..opts
        },
        |_, _| {},
    ) {
        Ok(t) => panic!("passed: {:?}", t.candidates[t.chosen].summary()),
        Err(e) => e.to_string(),
    };
    assert!(
        e.contains("raising precision, clear mode alone reached") && !e.contains('\n'),
        "{e}"
    );
}

#[test]
fn regression_targets_score_by_r2() {
    assert!((r2(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]) - 1.0).abs() < 1e-12);
    assert!(r2(&[2.0, 2.0, 2.0], &[1.0, 2.0, 3.0]).abs() < 1e-12);
    // the float model's own outputs as regression targets: float R² is 100 %, and tune
    // finds a quantized circuit within the budget
    let data = shipped("iris_mlp");
    let y = data
        .0
        .run_float(std::slice::from_ref(&data.2))
        .expect("float")[0]
        .clone();
    let mut opts = small_grid(Metric::R2, 0);
    opts.max_drop = 10.0;
    let t = tune_on(&data, &y, &opts);
    assert!((t.float_score - 100.0).abs() < 1e-9);
    assert!(t.candidates[t.chosen].score >= 90.0);
    // targets that do not match the outputs
    let e = Metric::R2
        .score(&y, &ndarray::ArrayD::zeros(ndarray::IxDyn(&[3])))
        .expect_err("refused")
        .to_string();
    assert!(e.contains("rows"), "{e}");
}

/// A model that quantizes itself is tuned on its own grids and requantized: onnxruntime's
/// int8 MLP has exact-rounding candidates only requantized (its own 8-bit × 8-bit
/// accumulators have no exact plan), approximate ones both ways.
#[test]
fn tune_tries_a_self_quantized_model_on_its_grids_and_requantized() {
    let name = "digits_mlp_qdq";
    let opts = TuneOptions {
        max_drop: 5.0,
        n_bits: vec![5],
        rounding_bits: vec![5],
        p_errors: vec![2f64.powi(-40)],
        ranges: vec![fhec::passes::RangePolicy::Calibrated],
        per_layer: false,
        ..Default::default()
    };
    let t = tune_on(&shipped(name), &labels(name), &opts);
    let kinds: Vec<(bool, bool, fhec::backend::Rounding)> = t
        .candidates
        .iter()
        .map(|c| (c.own_grids, c.config.requantize, c.rounding))
        .collect();
    use fhec::backend::Rounding::{Approximate, Exact};
    assert_eq!(
        kinds,
        vec![
            (true, false, Approximate),
            (false, true, Exact),
            (false, true, Approximate)
        ]
    );
    for c in &t.candidates {
        println!(
            "own grids {}: {:?} {:.2} %, {} PBS, est {:.0} ms",
            c.own_grids, c.rounding, c.score, c.pbs_count, c.est_ms
        );
        assert!(c.score >= t.float_score - 5.0, "{c:?}");
    }
}

/// `fhec tune` on a shipped model's calibration set and test split, plus `extra` flags.
fn tune_cli(m: &str, extra: &[&str]) -> std::process::Output {
    let f = ["", "_calib", "_test_x", "_test_y"].map(|suffix| {
        let ext = if suffix.is_empty() { "onnx" } else { "npy" };
        model(&format!("{m}{suffix}.{ext}"))
    });
    let base = [
        "tune",
        s(&f[0]),
        "--calib",
        s(&f[1]),
        "--val",
        s(&f[2]),
        "--val-labels",
        s(&f[3]),
        "-o",
        "/dev/null",
    ];
    fhec(&[&base[..], extra].concat())
}

#[test]
fn tune_bad_flags_are_one_line_errors() {
    let run = |extra: &[&str]| tune_cli("iris_mlp", extra);
    user_error(&run(&["--max-accuracy-drop=-1"]), &["--max-accuracy-drop"]);
    user_error(&run(&["--n-bits", "1"]), &["--n-bits"]);
    // the parser's own errors are one line too
    user_error(&run(&["--metric", "bleu"]), &["bleu", "accuracy, r2"]);
    user_error(
        &run(&["--ranges", "guessed"]),
        &["guessed", "calibrated, proven"],
    );
    // regression targets scored as classes: refused with the flag that fixes it, not a
    // meaningless accuracy (float targets truncated to "classes")
    for m in ["diabetes_mlp", "digits_autoenc"] {
        user_error(&tune_cli(m, &[]), &["accuracy", "--metric r2"]);
    }
}

#[test]
fn compile_range_flags_are_checked() {
    let files = ["iris_mlp.onnx", "iris_mlp_calib.npy"].map(model);
    let base = [
        "compile",
        s(&files[0]),
        "--calib",
        s(&files[1]),
        "-o",
        "/dev/null",
    ];
    let run = |extra: &[&str]| fhec(&[&base[..], extra].concat());
    user_error(
        &run(&["--range-margin=-1"]),
        &["--range-margin", "outside [0, 16]"],
    );
    user_error(&run(&["--range-margin", "NaN"]), &["--range-margin"]);
    user_error(
        &run(&["--ranges", "maybe"]),
        &["--ranges", "calibrated, proven"],
    );
    let ok = run(&["--ranges", "proven"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("ranges proven"));
}

#[test]
fn run_scores_regression_targets_by_r2() {
    let files = [
        "iris_mlp.onnx",
        "iris_mlp_test_x.npy",
        "iris_mlp_test_out.npy",
        "iris_mlp_calib.npy",
        "iris_mlp_test_y.npy",
    ]
    .map(model);
    let run = |targets: &std::path::Path, mode: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_fhec"))
            .args(["run", s(&files[0]), "--input", s(&files[1]), "--labels"])
            .arg(targets)
            .args(["--metric", "r2", "--mode", mode, "--calib", s(&files[3])])
            .output()
            .expect("runs")
    };
    // the float model's own outputs as targets: R² 1 in float mode, close to 1 in clear mode
    let out = run(&files[2], "clear");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("R² (float): 1.0000"), "{text}");
    let clear: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("R² (clear): "))
        .and_then(|v| v.trim().parse().ok())
        .expect("clear R²");
    assert!(clear > 0.9, "{text}");
    // class labels are one value per row, the outputs three: refused, naming the file
    user_error(&run(&files[4], "float"), &["iris_mlp_test_y.npy", "R²"]);
}
