//! `fhec._fhec`: the Python package's native module. Type and error conversion over the
//! `fhec` library's public API, nothing else: every decision (settings, checks, what a
//! compile may do on its own) is the library's, so Python, the CLI and `fhec serve` behave
//! the same. The Python layer (`python/fhec/`) adds the conveniences Python users expect
//! (paths, `onnx.ModelProto`, `torch.nn.Module`, estimators, progress bars).
//!
//! Long work (compile, tune, train, keygen, encrypted evaluation) runs on a worker thread
//! while the calling thread waits with the GIL released, waking every 100 ms to deliver
//! progress and to look for signals: Ctrl-C raises `KeyboardInterrupt` at once and asks the
//! work to stop (encrypted evaluation stops before its next stage; a compile in flight
//! finishes in the background and its result is dropped).

use fhec::{CompiledModel, ErrorKind};
use ndarray::ArrayD;
use numpy::{IntoPyArray, PyArrayDyn, PyReadonlyArrayDyn};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::PyBytes;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

// ---------------------------------------------------------------------------------------
// errors

/// The `fhec.errors` class for `kind` called with `msg` (a `RuntimeError` if the Python
/// layer is missing, which only a broken install can cause).
fn raise(py: Python<'_>, kind: ErrorKind, msg: String) -> PyErr {
    let class = py
        .import("fhec.errors")
        .and_then(|m| m.getattr(format!("{}Error", kind.name())));
    match class.and_then(|c| c.call1((msg.clone(),))) {
        Ok(e) => PyErr::from_value(e),
        Err(_) => PyRuntimeError::new_err(msg),
    }
}

/// The CLI's flag names (`--n-bits`) as Python's keywords (`n_bits`).
fn keyword_names(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(i) = rest.find("--") {
        let after = &rest[i + 2..];
        let len = after
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
            .unwrap_or(after.len());
        let at_word = i == 0 || !rest.as_bytes()[i - 1].is_ascii_alphanumeric();
        if len > 0 && at_word && after.as_bytes()[0].is_ascii_lowercase() {
            out.push_str(&rest[..i]);
            out.push_str(&after[..len].replace('-', "_"));
            rest = &after[len..];
        } else {
            out.push_str(&rest[..i + 2]);
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn err(py: Python<'_>, e: &fhec::Error) -> PyErr {
    let kind = e.kind();
    let msg = e.to_string();
    let msg = if matches!(kind, ErrorKind::Settings | ErrorKind::Input) {
        keyword_names(&msg)
    } else {
        msg
    };
    raise(py, kind, msg)
}

fn settings_err(py: Python<'_>, msg: impl Into<String>) -> PyErr {
    raise(py, ErrorKind::Settings, msg.into())
}

fn internal(py: Python<'_>, what: impl std::fmt::Display) -> PyErr {
    raise(
        py,
        ErrorKind::Internal,
        format!("internal error: {what}; please report"),
    )
}

// ---------------------------------------------------------------------------------------
// long work off the GIL

/// What the worker shares with the waiting thread: progress (position, length) and the
/// stop request.
struct Watch {
    bar: indicatif::ProgressBar,
    cancel: AtomicBool,
}

impl Watch {
    fn set(&self, pos: u64, len: u64) {
        self.bar.set_length(len);
        self.bar.set_position(pos);
    }
}

/// Runs `work` on a worker thread; the caller waits with the GIL released, calls
/// `progress(done, total)` when it changed, and stops waiting on a signal (Ctrl-C).
fn run_work<T: Send + 'static>(
    py: Python<'_>,
    progress: Option<&Bound<'_, PyAny>>,
    work: impl FnOnce(&Watch) -> fhec::Result<T> + Send + 'static,
) -> PyResult<T> {
    let watch = Arc::new(Watch {
        bar: indicatif::ProgressBar::hidden(),
        cancel: AtomicBool::new(false),
    });
    let (tx, rx) = mpsc::sync_channel(1);
    let w = watch.clone();
    std::thread::Builder::new()
        .name("fhec-work".into())
        .spawn(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&w)));
            let _ = tx.send(r);
        })
        .map_err(|e| internal(py, format!("cannot start a worker thread ({e})")))?;
    let mut shown = (u64::MAX, u64::MAX);
    let mut report = || -> PyResult<()> {
        if let Some(cb) = progress {
            let now = (watch.bar.position(), watch.bar.length().unwrap_or_default());
            if now != shown && now.1 > 0 {
                shown = now;
                cb.call1(now)?;
            }
        }
        Ok(())
    };
    let mut rx = rx;
    loop {
        // the receiver crosses into the GIL-free closure and back (it is Send, not Sync)
        let (got, back) = py.detach(move || (rx.recv_timeout(Duration::from_millis(100)), rx));
        rx = back;
        match got {
            Ok(Ok(Ok(v))) => {
                report()?;
                return Ok(v);
            }
            Ok(Ok(Err(e))) => return Err(err(py, &e)),
            Ok(Err(panic)) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "the worker panicked".into());
                return Err(internal(py, what));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let stop = py.check_signals().and_then(|()| report());
                if let Err(e) = stop {
                    watch.cancel.store(true, Ordering::Relaxed);
                    return Err(e);
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(internal(py, "the worker thread vanished"))
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// arrays

fn arrays_in(xs: Vec<PyReadonlyArrayDyn<'_, f32>>) -> Vec<ArrayD<f32>> {
    xs.iter().map(|x| x.as_array().to_owned()).collect()
}

fn arrays_out(py: Python<'_>, ys: Vec<ArrayD<f32>>) -> Vec<Bound<'_, PyArrayDyn<f32>>> {
    ys.into_iter().map(|y| y.into_pyarray(py)).collect()
}

// ---------------------------------------------------------------------------------------
// the compiled model

/// A compiled model (the artifact `fhec compile` writes): nothing secret, nothing per key.
#[pyclass(name = "CompiledModel", module = "fhec._fhec", frozen)]
struct PyCompiledModel {
    inner: CompiledModel,
}

fn limits() -> fhec::ir::Limits {
    fhec::ir::Limits::default()
}

#[pymethods]
impl PyCompiledModel {
    /// Reads a compiled model file.
    #[staticmethod]
    fn load(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let inner = py
            .detach(|| CompiledModel::load(&path))
            .map_err(|e| err(py, &e.into()))?;
        Ok(Self { inner })
    }

    /// A compiled model from the bytes of a file.
    #[staticmethod]
    fn from_bytes(py: Python<'_>, data: PyBackedBytes) -> PyResult<Self> {
        let inner = py
            .detach(|| CompiledModel::from_bytes(&data, &limits()))
            .map_err(|e| err(py, &e.into()))?;
        Ok(Self { inner })
    }

    /// The bytes of the compiled model file.
    fn to_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let b = self.inner.to_bytes().map_err(|e| err(py, &e.into()))?;
        Ok(PyBytes::new(py, &b))
    }

    /// Writes the compiled model file.
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        py.detach(|| self.inner.save(&path))
            .map_err(|e| err(py, &e.into()))
    }

    /// The compile report, as JSON.
    fn report_json(&self, py: Python<'_>) -> PyResult<String> {
        serde_json::to_string(self.inner.report()).map_err(|e| internal(py, e))
    }

    /// The compile report as the CLI prints it.
    fn report_text(&self) -> String {
        self.inner.report().to_text()
    }

    /// The encrypted program's plan (parameters, bootstraps, key sizes), as JSON.
    fn plan_json(&self, py: Python<'_>) -> PyResult<String> {
        let info = self.inner.plan_info().map_err(|e| err(py, &e.into()))?;
        serde_json::to_string(&info).map_err(|e| internal(py, e))
    }

    /// The plan as the CLI prints it.
    fn plan_text(&self, py: Python<'_>) -> PyResult<String> {
        Ok(self
            .inner
            .plan_info()
            .map_err(|e| err(py, &e.into()))?
            .to_text())
    }

    /// The graph inputs: (name, shape, whether axis 0 is the batch).
    fn inputs(&self) -> Vec<(String, Vec<usize>, bool)> {
        let g = self.inner.float_graph();
        g.inputs
            .iter()
            .map(|i| (i.name.clone(), g.g[i.node].ty.shape.clone(), i.batched))
            .collect()
    }

    /// The graph outputs' names.
    fn outputs(&self) -> Vec<String> {
        let g = self.inner.float_graph();
        g.outputs.iter().map(|o| o.name.clone()).collect()
    }

    /// Runs without keys: `mode` is `float` (the float graph), `clear` (the integer program;
    /// encrypted exact-mode results equal it bit for bit) or `simulate` (the integer program
    /// with the encrypted program's approximate-rounding noise and failure rate, drawn from
    /// `seed`). One array per graph input, axis 0 = samples.
    #[pyo3(signature = (inputs, mode, seed=0, progress=None))]
    fn run<'py>(
        &self,
        py: Python<'py>,
        inputs: Vec<PyReadonlyArrayDyn<'py, f32>>,
        mode: &str,
        seed: u64,
        progress: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Vec<Bound<'py, PyArrayDyn<f32>>>> {
        let xs = arrays_in(inputs);
        let m = self.inner.clone();
        let ys = match mode {
            "float" => run_work(py, progress, move |_| m.run_float(&xs))?,
            "clear" => run_work(py, progress, move |_| m.run_clear(&xs))?,
            "simulate" => run_work(py, progress, move |_| m.run_simulated(&xs, seed))?,
            other => {
                return Err(settings_err(
                    py,
                    format!("mode `{other}`: expected float, clear or simulate"),
                ))
            }
        };
        Ok(arrays_out(py, ys))
    }

    /// The same model with other encrypted-program settings (its parameters searched
    /// again), from a JSON object of compile settings.
    fn with_fhe_settings(&self, py: Python<'_>, settings_json: &str) -> PyResult<Self> {
        let s = settings(py, settings_json)?;
        let base = self.inner.fhe_options().clone();
        let m = self.inner.clone();
        let inner = run_work(py, None, move |_| {
            let o = s.fhe_options(base)?;
            Ok(m.with_fhe_options(o)?)
        })?;
        Ok(Self { inner })
    }

    /// Programmable bootstraps per sample.
    #[getter]
    fn bootstraps(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self
            .inner
            .plan_info()
            .map_err(|e| err(py, &e.into()))?
            .bootstraps)
    }

    /// The fingerprint keys and ciphertexts carry (hex).
    #[getter]
    fn fingerprint(&self, py: Python<'_>) -> PyResult<String> {
        Ok(self
            .inner
            .plan_info()
            .map_err(|e| err(py, &e.into()))?
            .model_id)
    }
}

// ---------------------------------------------------------------------------------------
// compile, tune, train

fn settings(py: Python<'_>, json: &str) -> PyResult<fhec::Settings> {
    serde_json::from_str(json).map_err(|e| {
        let msg = e.to_string();
        // serde says "unknown field `x`, expected one of …"; keep the first clause
        let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
        settings_err(py, format!("compile settings: {msg}"))
    })
}

/// Where an ONNX model comes from: a file (its folder holds its external data), or bytes
/// with the external files given by name.
fn onnx_model(
    path: Option<PathBuf>,
    data: Option<PyBackedBytes>,
    external: HashMap<String, Vec<u8>>,
    source: String,
) -> fhec::Result<fhec::Model> {
    match (path, data) {
        (Some(p), _) => fhec::Model::load_with_limits(&p, &limits()),
        (None, Some(d)) => {
            let ext = if external.is_empty() {
                fhec::ExternalData::None
            } else {
                fhec::ExternalData::Files(external)
            };
            fhec::Model::from_bytes(&d, &source, ext, &limits())
        }
        (None, None) => Err(fhec::Error::Internal {
            what: "no model given".into(),
        }),
    }
}

/// An imported ONNX model, run in float (what `fhe="disable"` runs before a compile).
#[pyclass(name = "OnnxModel", module = "fhec._fhec", frozen)]
struct PyOnnxModel {
    inner: fhec::Model,
}

#[pymethods]
impl PyOnnxModel {
    /// Imports an ONNX model: a file (its folder holds its external data), or bytes with
    /// their external data files by name.
    #[new]
    #[pyo3(signature = (path=None, data=None, external=None, source=String::from("<bytes>")))]
    fn new(
        py: Python<'_>,
        path: Option<PathBuf>,
        data: Option<PyBackedBytes>,
        external: Option<HashMap<String, Vec<u8>>>,
        source: String,
    ) -> PyResult<Self> {
        let external = external.unwrap_or_default();
        let inner = run_work(py, None, move |_| onnx_model(path, data, external, source))?;
        Ok(Self { inner })
    }

    /// Runs the float graph: one array per graph input, axis 0 = samples.
    fn run<'py>(
        &self,
        py: Python<'py>,
        inputs: Vec<PyReadonlyArrayDyn<'py, f32>>,
    ) -> PyResult<Vec<Bound<'py, PyArrayDyn<f32>>>> {
        let xs = arrays_in(inputs);
        let m = self.inner.clone();
        let ys = run_work(py, None, move |_| m.run_float(&xs))?;
        Ok(arrays_out(py, ys))
    }

    /// The graph inputs: (name, shape, whether axis 0 is the batch).
    fn inputs(&self) -> Vec<(String, Vec<usize>, bool)> {
        let g = &self.inner.graph;
        g.inputs
            .iter()
            .map(|i| (i.name.clone(), g.g[i.node].ty.shape.clone(), i.batched))
            .collect()
    }

    /// How the importer read what a literal reading would get wrong.
    fn notes(&self) -> Vec<String> {
        self.inner.notes.clone()
    }
}

/// Compiles an ONNX model (a file, or bytes plus its external data files by name) on
/// calibration data with compile settings given as JSON (the CLI's names, underscored).
#[pyfunction]
#[pyo3(signature = (calib, settings_json, path=None, data=None, external=None, source=String::from("<bytes>"), progress=None))]
#[allow(clippy::too_many_arguments)]
fn compile<'py>(
    py: Python<'py>,
    calib: Vec<PyReadonlyArrayDyn<'py, f32>>,
    settings_json: &str,
    path: Option<PathBuf>,
    data: Option<PyBackedBytes>,
    external: Option<HashMap<String, Vec<u8>>>,
    source: String,
    progress: Option<&Bound<'py, PyAny>>,
) -> PyResult<PyCompiledModel> {
    let s = settings(py, settings_json)?;
    let calib = arrays_in(calib);
    let external = external.unwrap_or_default();
    let inner = run_work(py, progress, move |_| {
        let opts = s.options()?;
        let m = onnx_model(path, data, external, source)?;
        fhec::compile_model(&m, &calib, &opts)
    })?;
    Ok(PyCompiledModel { inner })
}

/// The options of `tune`, as the Python layer sends them.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TuneArgs {
    metric: String,
    max_accuracy_drop: f64,
    n_bits: Vec<u32>,
    rounding_bits: Vec<u32>,
    ranges: Vec<fhec::RangePolicy>,
    p_errors: Option<Vec<f64>>,
    per_layer: bool,
    raise_steps: usize,
    seed: u64,
}

/// Searches the cheapest settings whose estimated drop below float on unseen data stays
/// within `max_accuracy_drop` points (`fhec tune`); returns the chosen compiled
/// model and the search as JSON.
#[pyfunction]
#[pyo3(signature = (calib, val_x, val_y, options_json, path=None, data=None, external=None, source=String::from("<bytes>"), progress=None))]
#[allow(clippy::too_many_arguments)]
fn tune<'py>(
    py: Python<'py>,
    calib: Vec<PyReadonlyArrayDyn<'py, f32>>,
    val_x: Vec<PyReadonlyArrayDyn<'py, f32>>,
    val_y: PyReadonlyArrayDyn<'py, f32>,
    options_json: &str,
    path: Option<PathBuf>,
    data: Option<PyBackedBytes>,
    external: Option<HashMap<String, Vec<u8>>>,
    source: String,
    progress: Option<&Bound<'py, PyAny>>,
) -> PyResult<(PyCompiledModel, String)> {
    let a: TuneArgs = serde_json::from_str(options_json)
        .map_err(|e| settings_err(py, format!("tune settings: {e}")))?;
    let metric = match a.metric.as_str() {
        "accuracy" => fhec::tune::Metric::Accuracy,
        "r2" => fhec::tune::Metric::R2,
        m => {
            return Err(settings_err(
                py,
                format!("metric `{m}`: expected accuracy or r2"),
            ))
        }
    };
    let mut opts = fhec::tune::TuneOptions {
        metric,
        max_drop: a.max_accuracy_drop,
        n_bits: a.n_bits,
        rounding_bits: a.rounding_bits,
        ranges: a.ranges,
        per_layer: a.per_layer,
        raise_steps: a.raise_steps,
        seed: a.seed,
        ..Default::default()
    };
    if let Some(p) = a.p_errors {
        opts.p_errors = p;
    }
    let calib = arrays_in(calib);
    let xs = arrays_in(val_x);
    let y = val_y.as_array().to_owned();
    let external = external.unwrap_or_default();
    let (inner, json) = run_work(py, progress, move |w| {
        opts.validate()?;
        let m = onnx_model(path, data, external, source)?;
        let t = fhec::tune::tune(&m, &calib, &xs, &y, &opts, |i, n| {
            w.set(i as u64, n as u64);
        })?;
        let doc = serde_json::json!({
            "float_score": t.float_score,
            "max_drop": t.max_drop,
            "candidates": t.candidates.len(),
            "chosen": t.candidates[t.chosen].summary(),
            "margin": t.margin(),
            "pareto": t.pareto().into_iter().map(|i| t.candidates[i].summary()).collect::<Vec<_>>(),
        });
        Ok((t.model, doc.to_string()))
    })?;
    Ok((PyCompiledModel { inner }, json))
}

/// The options of `train`, as the Python layer sends them (the CLI's names).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TrainArgs {
    task: String,
    n_layers: usize,
    n_hidden_multiplier: usize,
    n_w_bits: u32,
    n_a_bits: u32,
    n_accum_bits: Option<u32>,
    prune_neurons: f64,
    activation: String,
    power_of_two: bool,
    epochs: usize,
    lr: f64,
    batch_size: usize,
    balanced: bool,
    val_split: f64,
    seed: u64,
}

/// Trains a quantization-aware network on `x` ([N, F]) and `y` (N class indices, or
/// [N] / [N, K] float targets); returns the QONNX model's bytes and the training log as
/// JSON.
#[pyfunction]
#[pyo3(signature = (x, y, options_json, progress=None))]
fn train<'py>(
    py: Python<'py>,
    x: PyReadonlyArrayDyn<'py, f32>,
    y: PyReadonlyArrayDyn<'py, f64>,
    options_json: &str,
    progress: Option<&Bound<'py, PyAny>>,
) -> PyResult<(Bound<'py, PyBytes>, String)> {
    use fhec::train::{net::Activation, Task, TrainOptions};
    let a: TrainArgs = serde_json::from_str(options_json)
        .map_err(|e| settings_err(py, format!("train settings: {e}")))?;
    let task = match a.task.as_str() {
        "classification" => Task::Classification,
        "regression" => Task::Regression,
        t => {
            return Err(settings_err(
                py,
                format!("task `{t}`: expected classification or regression"),
            ))
        }
    };
    let activation = match a.activation.as_str() {
        "relu" => Activation::Relu,
        "sigmoid" => Activation::Sigmoid,
        "tanh" => Activation::Tanh,
        t => {
            return Err(settings_err(
                py,
                format!("activation `{t}`: expected relu, sigmoid or tanh"),
            ))
        }
    };
    let opts = TrainOptions {
        task,
        n_layers: a.n_layers,
        n_hidden_multiplier: a.n_hidden_multiplier,
        n_w_bits: a.n_w_bits,
        n_a_bits: a.n_a_bits,
        n_accum_bits: a.n_accum_bits,
        prune_neurons: a.prune_neurons,
        activation,
        power_of_two: a.power_of_two,
        epochs: a.epochs,
        lr: a.lr,
        batch_size: a.batch_size,
        balanced: a.balanced,
        val_split: a.val_split,
        seed: a.seed,
    };
    let x = x.as_array().to_owned();
    let ya = y.as_array();
    let y_cols = if ya.ndim() == 2 { ya.shape()[1] } else { 1 };
    if ya.ndim() > 2 {
        return Err(raise(
            py,
            ErrorKind::Input,
            format!(
                "y: targets of shape {:?}: expected [N] or [N, K]",
                ya.shape()
            ),
        ));
    }
    let y: Vec<f64> = ya.iter().copied().collect();
    let (onnx, log) = run_work(py, progress, move |w| {
        let data = fhec::train::Dataset::from_arrays(x, y, y_cols, task)?;
        let epochs = opts.epochs as u64;
        let t = fhec::train::train(&data, &opts, |e, _| w.set(e.epoch as u64, epochs))?;
        let doc = serde_json::json!({
            "chosen_epoch": t.chosen_epoch,
            "val_score": t.val_score,
            "history": t.history.iter().map(|e| serde_json::json!({
                "epoch": e.epoch, "loss": e.loss, "val": e.val, "budget": e.budget,
            })).collect::<Vec<_>>(),
            "layers": t.layers.iter().zip(&t.live).map(|((kept, all, bits), live)| serde_json::json!({
                "kept_weights": kept, "weights": all, "accumulator_bits": bits, "neurons": live,
            })).collect::<Vec<_>>(),
            "sizes": t.sizes,
        });
        Ok((t.onnx, doc.to_string()))
    })?;
    Ok((PyBytes::new(py, &onnx), log))
}

// ---------------------------------------------------------------------------------------
// client and server

/// The client side of one key pair: holds the secret key; encrypts and decrypts.
#[pyclass(name = "Client", module = "fhec._fhec", frozen)]
struct PyClient {
    inner: fhec::Client,
}

#[pymethods]
impl PyClient {
    /// A fresh key pair for `model`: the client, and the evaluation keys' bytes for the
    /// server (a `server.key` file's contents; no secret).
    #[staticmethod]
    #[pyo3(signature = (model, progress=None))]
    fn keygen<'py>(
        py: Python<'py>,
        model: &PyCompiledModel,
        progress: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<(Self, Bound<'py, PyBytes>)> {
        let m = model.inner.clone();
        let (inner, keys) = run_work(py, progress, move |_| {
            let (c, k) = fhec::Client::keygen(&m)?;
            Ok((c, k.to_bytes()?))
        })?;
        Ok((Self { inner }, PyBytes::new(py, &keys)))
    }

    /// A client from its secret key's bytes (a `client.key` file).
    #[staticmethod]
    fn from_key_bytes(
        py: Python<'_>,
        model: &PyCompiledModel,
        data: PyBackedBytes,
    ) -> PyResult<Self> {
        let inner = py
            .detach(|| fhec::Client::from_key_bytes(&model.inner, &data))
            .map_err(|e| err(py, &e))?;
        Ok(Self { inner })
    }

    /// The secret key's bytes (a `client.key` file). Keep them secret.
    fn key_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let b = self.inner.key_bytes().map_err(|e| err(py, &e))?;
        Ok(PyBytes::new(py, &b))
    }

    /// The key pair's id (hex).
    #[getter]
    fn key_id(&self) -> String {
        format!("{:016x}", self.inner.key_id())
    }

    /// Quantizes and encrypts a batch (one array per graph input, axis 0 = samples); the
    /// bytes of an `X.ct` file.
    fn encrypt<'py>(
        &self,
        py: Python<'py>,
        inputs: Vec<PyReadonlyArrayDyn<'py, f32>>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let xs = arrays_in(inputs);
        let c = self.inner.clone();
        let b = run_work(py, None, move |_| c.encrypt(&xs)?.to_bytes())?;
        Ok(PyBytes::new(py, &b))
    }

    /// Decrypts encrypted results (a `Y.ct` file's bytes) and runs the client-side tail:
    /// one array per graph output, axis 0 = samples.
    fn decrypt<'py>(
        &self,
        py: Python<'py>,
        data: PyBackedBytes,
    ) -> PyResult<Vec<Bound<'py, PyArrayDyn<f32>>>> {
        let c = self.inner.clone();
        let ys = run_work(py, None, move |_| {
            let cts = fhec::Ciphertexts::outputs_from_bytes(c.model(), &data)?;
            c.decrypt(&cts)
        })?;
        Ok(arrays_out(py, ys))
    }

    /// Decrypts encrypted results to the integers at the encrypted boundary (what clear
    /// mode computes), per sample, per output.
    fn decrypt_integers(
        &self,
        py: Python<'_>,
        data: PyBackedBytes,
    ) -> PyResult<Vec<Vec<Vec<i64>>>> {
        let c = self.inner.clone();
        run_work(py, None, move |_| {
            let cts = fhec::Ciphertexts::outputs_from_bytes(c.model(), &data)?;
            c.decrypt_integers(&cts)
        })
    }
}

/// Expanded evaluation keys held by a [`PyServer`], by a keyed hash of their bytes.
struct Held {
    hash: u64,
    len: usize,
    server: Arc<fhec::Server>,
}

/// The server side: a compiled model and the evaluation keys it was sent. Computes on
/// ciphertexts only.
#[pyclass(name = "Server", module = "fhec._fhec", frozen)]
struct PyServer {
    model: CompiledModel,
    /// The last `capacity` key sets expanded, most recent last.
    held: Arc<Mutex<Vec<Held>>>,
    capacity: usize,
    hasher: std::collections::hash_map::RandomState,
}

#[pymethods]
impl PyServer {
    #[new]
    #[pyo3(signature = (model, key_cache=2))]
    fn new(model: &PyCompiledModel, key_cache: usize) -> Self {
        Self {
            model: model.inner.clone(),
            held: Arc::new(Mutex::new(Vec::new())),
            capacity: key_cache,
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    /// Runs the encrypted program: `ciphertexts` (an `X.ct` file's bytes) under
    /// `evaluation_keys` (a `server.key` file's bytes) → the encrypted results (a `Y.ct`
    /// file's bytes). The keys' expansion is kept for the next call with the same keys.
    #[pyo3(signature = (ciphertexts, evaluation_keys, progress=None))]
    fn run<'py>(
        &self,
        py: Python<'py>,
        ciphertexts: PyBackedBytes,
        evaluation_keys: PyBackedBytes,
        progress: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let model = self.model.clone();
        let held = self.held.clone();
        let capacity = self.capacity;
        let hasher = self.hasher.clone();
        let out = run_work(py, progress, move |w| {
            let mut h = hasher.build_hasher();
            h.write(&evaluation_keys);
            let (hash, len) = (h.finish(), evaluation_keys.len());
            let cached = {
                let held = held.lock().map_err(|_| fhec::Error::Internal {
                    what: "key cache poisoned".into(),
                })?;
                held.iter()
                    .find(|k| k.hash == hash && k.len == len)
                    .map(|k| k.server.clone())
            };
            let server = match cached {
                Some(s) => s,
                None => {
                    let keys = fhec::EvaluationKeys::from_bytes(&model, &evaluation_keys)?;
                    let s = Arc::new(fhec::Server::new(&model, &keys)?);
                    if capacity > 0 {
                        let mut held = held.lock().map_err(|_| fhec::Error::Internal {
                            what: "key cache poisoned".into(),
                        })?;
                        held.retain(|k| k.hash != hash);
                        if held.len() >= capacity {
                            held.remove(0);
                        }
                        held.push(Held {
                            hash,
                            len,
                            server: s.clone(),
                        });
                    }
                    s
                }
            };
            let cts = fhec::Ciphertexts::inputs_from_bytes(&model, &ciphertexts)?;
            let total = (server.table_lookups() * cts.samples()) as u64;
            w.bar.set_length(total);
            let out = server.run_watched(&cts, Some(&w.bar), Some(&w.cancel))?;
            out.to_bytes()
        })?;
        Ok(PyBytes::new(py, &out))
    }
}

/// `fhec`'s version.
#[pyfunction]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

#[pymodule]
fn _fhec(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyCompiledModel>()?;
    m.add_class::<PyOnnxModel>()?;
    m.add_class::<PyClient>()?;
    m.add_class::<PyServer>()?;
    m.add_function(wrap_pyfunction!(compile, m)?)?;
    m.add_function(wrap_pyfunction!(tune, m)?)?;
    m.add_function(wrap_pyfunction!(train, m)?)?;
    m.add_function(wrap_pyfunction!(version, m)?)?;
    Ok(())
}
