//! `fhec serve`: compiled models over HTTP. A front like the CLI and the Python package: it
//! stands on the library's public API (models, [`EvaluationKeys`], [`Server`],
//! [`Ciphertexts`]) and adds no compiler logic. The wire formats are the CLI's files: a
//! client uploads `server.key` once, then posts `fhec encrypt`'s ciphertexts and gets
//! `fhec decrypt`'s input back. `docs/serving.md` is the user's guide, `docs/openapi.yaml`
//! the contract.
//!
//! What the server bounds: request bodies (a key: the model's seeded key size; ciphertexts:
//! `--max-samples` samples), uploads in flight (`--max-uploads`), evaluations (`--max-concurrent`
//! running, `--max-queue` waiting, 503 past that), time (`--upload-timeout`, `--request-timeout`,
//! after which the evaluation is stopped), and expanded keys held in memory
//! (`--key-cache-bytes`, least recently used first out).

pub mod client;
mod metrics;
pub mod store;

use crate::{Ciphertexts, CompiledModel, ErrorKind, EvaluationKeys, PlanInfo, Server};
use axum::body::Body;
use axum::extract::{MatchedPath, Path as UrlPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics::Metrics;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
pub use store::{DirStore, KeyStore};
use tokio::sync::Semaphore;

/// What `fhec serve` was asked to do.
#[derive(Clone, Debug)]
pub struct Config {
    /// The models served, by name (the name is the URL's `{model}`).
    pub models: Vec<(String, PathBuf)>,
    /// Address to listen on (`127.0.0.1:0` picks a free port; the line printed says which).
    pub listen: String,
    /// Where uploaded keys are kept (shared by replicas behind a load balancer).
    pub keys_dir: PathBuf,
    /// Evaluations at once (each uses every thread of the pool).
    pub max_concurrent: usize,
    /// Evaluations waiting for a slot before the server answers 503.
    pub max_queue: usize,
    /// Key uploads at once (each holds up to one seeded key in memory).
    pub max_uploads: usize,
    /// Memory for expanded evaluation keys (bytes); the least recently used leave first.
    pub key_cache_bytes: u64,
    /// Samples in one inference request.
    pub max_samples: usize,
    /// An evaluation running longer is stopped at its next stage (504).
    pub request_timeout: Duration,
    /// A request body (key or ciphertexts) arriving slower is refused (408).
    pub upload_timeout: Duration,
    /// Size limits for reading the models.
    pub limits: crate::ir::Limits,
}

impl Config {
    /// Defaults for `models` served on `listen` with keys in `keys_dir`.
    pub fn new(models: Vec<(String, PathBuf)>, listen: &str, keys_dir: PathBuf) -> Self {
        Self {
            models,
            listen: listen.to_string(),
            keys_dir,
            max_concurrent: 1,
            max_queue: 8,
            max_uploads: 2,
            key_cache_bytes: 2 << 30,
            max_samples: 64,
            request_timeout: Duration::from_secs(600),
            upload_timeout: Duration::from_secs(120),
            limits: crate::ir::Limits::default(),
        }
    }
}

/// Why the server could not start (one line each).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("model `{path}`: {source}")]
    Model {
        path: String,
        #[source]
        source: Box<crate::Error>,
    },
    #[error("model `{path}` has no encrypted plan; compile it again with `fhec compile` (today's defaults always make one)")]
    NoPlan { path: String },
    #[error("two models are named `{0}`; name them with NAME=PATH")]
    DuplicateName(String),
    #[error("model name `{0}`: use letters, digits, `-`, `_` and `.` only")]
    BadName(String),
    #[error("no model to serve; give at least one MODEL.fhe")]
    NoModel,
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    #[error("key folder `{path}`: {source}")]
    KeysDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on `{addr}`: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("server stopped: {0}")]
    Io(#[from] std::io::Error),
}

/// One model as served.
struct Served {
    model: CompiledModel,
    bytes: Vec<u8>,
    info: PlanInfo,
    inputs: Vec<Tensor>,
    outputs: Vec<Tensor>,
    /// The most bytes an inference request may have.
    max_request: u64,
    /// The most bytes an uploaded key may have.
    max_key: u64,
}

#[derive(Clone, Serialize)]
struct Tensor {
    name: String,
    shape: String,
}

struct Cached {
    server: Arc<Server>,
    key_id: u64,
    bytes: u64,
    used: u64,
}

/// Expanded keys in memory under a byte budget, least recently used out first.
#[derive(Default)]
struct KeyCache {
    entries: HashMap<String, Cached>,
    bytes: u64,
    clock: u64,
}

impl KeyCache {
    fn get(&mut self, k: &str) -> Option<(Arc<Server>, u64)> {
        self.clock += 1;
        let now = self.clock;
        self.entries.get_mut(k).map(|e| {
            e.used = now;
            (e.server.clone(), e.key_id)
        })
    }
    fn insert(&mut self, k: String, server: Arc<Server>, key_id: u64, bytes: u64, budget: u64) {
        // one key always fits, however large: the budget bounds the others
        while self.bytes + bytes > budget && !self.entries.is_empty() {
            let old = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
                .unwrap_or_default();
            self.remove(&old);
        }
        self.clock += 1;
        self.bytes += bytes;
        self.entries.insert(
            k,
            Cached {
                server,
                key_id,
                bytes,
                used: self.clock,
            },
        );
    }
    fn remove(&mut self, k: &str) {
        if let Some(e) = self.entries.remove(k) {
            self.bytes -= e.bytes;
        }
    }
}

struct AppState {
    models: BTreeMap<String, Served>,
    store: Arc<dyn KeyStore>,
    cache: Mutex<KeyCache>,
    /// One key expansion at a time (each takes seconds and the expanded key's memory).
    loading: tokio::sync::Mutex<()>,
    eval: Arc<Semaphore>,
    admitted: AtomicUsize,
    running: Arc<AtomicUsize>,
    uploads: Arc<Semaphore>,
    metrics: Metrics,
    ready: AtomicBool,
    cfg: Config,
}

type St = Arc<AppState>;

/// An HTTP error: status and one line (JSON `{"error", "kind"}`).
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
            retry_after: None,
        }
    }
    fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NotFound", what)
    }
    fn internal(e: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal", e.to_string())
    }
}

/// A library error as an HTTP answer: bad bytes from the client are 4xx, our failures 5xx.
impl From<crate::Error> for ApiError {
    fn from(e: crate::Error) -> Self {
        let status = match e.kind() {
            ErrorKind::Input | ErrorKind::Keys | ErrorKind::Artifact | ErrorKind::Settings => {
                StatusCode::BAD_REQUEST
            }
            ErrorKind::Model => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::Cancelled => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Io | ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, e.kind().name(), e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message, "kind": self.kind });
        let mut r = (self.status, Json(body)).into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

type ApiResult<T> = Result<T, ApiError>;

fn model<'a>(st: &'a AppState, name: &str) -> ApiResult<&'a Served> {
    st.models.get(name).ok_or_else(|| {
        ApiError::not_found(format!(
            "no model `{name}` (GET /v1/models lists the models served)"
        ))
    })
}

fn key_id(id: &str) -> ApiResult<&str> {
    if store::valid_id(id) {
        Ok(id)
    } else {
        Err(ApiError::not_found(format!(
            "no key `{id}` (a key id is the 32 hex digits POST .../keys answered)"
        )))
    }
}

/// The request body, refused past `limit` bytes (413) or `--upload-timeout` (408).
async fn body(st: &AppState, body: Body, limit: u64, what: &str) -> ApiResult<Vec<u8>> {
    let read = axum::body::to_bytes(body, usize::try_from(limit).unwrap_or(usize::MAX));
    let bytes = match tokio::time::timeout(st.cfg.upload_timeout, read).await {
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "Timeout",
                format!(
                    "{what} did not arrive within {} s (--upload-timeout)",
                    st.cfg.upload_timeout.as_secs()
                ),
            ))
        }
        Ok(Err(e)) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            return Err(if too_large {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "TooLarge",
                    format!("{what} is larger than {limit} bytes, the most this model's can be"),
                )
            } else {
                ApiError::new(StatusCode::BAD_REQUEST, "Input", format!("{what}: {e}"))
            });
        }
        Ok(Ok(b)) => b,
    };
    st.metrics
        .bytes_in
        .fetch_add(bytes.len() as u64, Ordering::Relaxed);
    Ok(bytes.to_vec())
}

/// Answers `e` after reading and dropping what the client is still sending (up to the
/// largest body any model takes, for at most --upload-timeout): a client that is told no
/// before it has sent its body then reads the answer instead of a broken connection.
async fn refuse(st: &AppState, body: Body, e: ApiError) -> ApiError {
    use http_body_util::BodyExt;
    let cap = st
        .models
        .values()
        .map(|m| m.max_key.max(m.max_request))
        .max()
        .unwrap_or(0);
    let drain = async {
        let mut body = body;
        let mut seen = 0u64;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, |d| d.len() as u64);
            if seen > cap {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(st.cfg.upload_timeout, drain).await;
    e
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)
}

// ---- handlers ----

async fn list_models(State(st): State<St>) -> Json<serde_json::Value> {
    let models: Vec<_> = st
        .models
        .iter()
        .map(|(n, m)| {
            serde_json::json!({
                "name": n,
                "fingerprint": m.info.model_id,
                "inputs": m.inputs,
                "outputs": m.outputs,
                "parameters": m.info.params,
                "security_bits": m.info.security_bits,
                "p_error": m.info.p_error,
                "bootstraps_per_sample": m.info.bootstraps,
                "max_key_bytes": m.max_key,
                "expanded_key_bytes": expanded_key_bytes(&m.info),
            })
        })
        .collect();
    Json(serde_json::json!({ "models": models }))
}

async fn describe(State(st): State<St>, UrlPath(name): UrlPath<String>) -> ApiResult<Response> {
    let m = model(&st, &name)?;
    Ok(Json(serde_json::json!({
        "name": name,
        "fingerprint": m.info.model_id,
        "inputs": m.inputs,
        "outputs": m.outputs,
        "plan": m.info,
        "limits": {
            "max_samples": st.cfg.max_samples,
            "max_key_bytes": m.max_key,
            "max_request_bytes": m.max_request,
        },
        "keys_stored": st.store.count(&m.info.model_id),
    }))
    .into_response())
}

async fn model_file(State(st): State<St>, UrlPath(name): UrlPath<String>) -> ApiResult<Response> {
    let m = model(&st, &name)?;
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream")],
        m.bytes.clone(),
    )
        .into_response())
}

async fn upload_key(
    State(st): State<St>,
    UrlPath(name): UrlPath<String>,
    req: Body,
) -> ApiResult<Response> {
    let m = match model(&st, &name) {
        Ok(m) => m,
        Err(e) => return Err(refuse(&st, req, e).await),
    };
    let Ok(_slot) = st.uploads.clone().try_acquire_owned() else {
        st.metrics.rejected.fetch_add(1, Ordering::Relaxed);
        let mut e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Busy",
            format!(
                "{} key uploads are in flight (--max-uploads); retry shortly",
                st.cfg.max_uploads
            ),
        );
        e.retry_after = Some(1);
        return Err(refuse(&st, req, e).await);
    };
    let bytes = body(&st, req, m.max_key, "the key").await?;
    // decode and check against the model before anything is stored
    let st2 = st.clone();
    let name2 = name.clone();
    let bytes = blocking(move || -> ApiResult<Vec<u8>> {
        let m = &st2.models[&name2];
        EvaluationKeys::from_bytes(&m.model, &bytes)?;
        Ok(bytes)
    })
    .await??;
    let id = format!("{:032x}", rand::RngExt::random::<u128>(&mut rand::rng()));
    let (st2, fp, id2) = (st.clone(), m.info.model_id.clone(), id.clone());
    let n = bytes.len();
    blocking(move || st2.store.put(&fp, &id2, &bytes))
        .await?
        .map_err(|e| ApiError::internal(format!("cannot store the key: {e}")))?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "key_id": id, "bytes": n, "model": name })),
    )
        .into_response())
}

async fn key_info(
    State(st): State<St>,
    UrlPath((name, id)): UrlPath<(String, String)>,
) -> ApiResult<Response> {
    let m = model(&st, &name)?;
    let id = key_id(&id)?;
    if !st.store.exists(&m.info.model_id, id) {
        return Err(ApiError::not_found(format!(
            "no key `{id}` for model `{name}`"
        )));
    }
    Ok(Json(serde_json::json!({ "key_id": id, "model": name })).into_response())
}

async fn delete_key(
    State(st): State<St>,
    UrlPath((name, id)): UrlPath<(String, String)>,
) -> ApiResult<Response> {
    let m = model(&st, &name)?;
    let id = key_id(&id)?;
    let fp = m.info.model_id.clone();
    if let Ok(mut c) = st.cache.lock() {
        c.remove(&format!("{fp}/{id}"));
    }
    let (st2, id2) = (st.clone(), id.to_string());
    let found = blocking(move || st2.store.delete(&fp, &id2))
        .await?
        .map_err(ApiError::internal)?;
    if found {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::not_found(format!(
            "no key `{id}` for model `{name}`"
        )))
    }
}

/// The expanded keys for `id`: from the cache, or read from the store and expanded (one at
/// a time). 404 when the store has no such key (deleted through another replica included).
async fn server_for(st: &St, name: &str, id: &str) -> ApiResult<(Arc<Server>, u64)> {
    let m = model(st, name)?;
    let fp = &m.info.model_id;
    let k = format!("{fp}/{id}");
    let missing = || ApiError::not_found(format!("no key `{id}` for model `{name}`; upload one"));
    if !st.store.exists(fp, id) {
        if let Ok(mut c) = st.cache.lock() {
            c.remove(&k);
        }
        return Err(missing());
    }
    if let Some(hit) = st.cache.lock().ok().and_then(|mut c| c.get(&k)) {
        return Ok(hit);
    }
    let _one = st.loading.lock().await;
    if let Some(hit) = st.cache.lock().ok().and_then(|mut c| c.get(&k)) {
        return Ok(hit);
    }
    let (st2, name2, fp2, id2) = (st.clone(), name.to_string(), fp.clone(), id.to_string());
    let (server, key_id, bytes) = blocking(move || -> ApiResult<_> {
        let m = &st2.models[&name2];
        let Some(b) = st2
            .store
            .get(&fp2, &id2, m.max_key)
            .map_err(ApiError::internal)?
        else {
            return Ok(None);
        };
        let keys = EvaluationKeys::from_bytes(&m.model, &b)?;
        let server = Server::new(&m.model, &keys)?;
        Ok(Some((
            Arc::new(server),
            keys.key_id(),
            keys.sizes().total() as u64,
        )))
    })
    .await??
    .ok_or_else(missing)?;
    if let Ok(mut c) = st.cache.lock() {
        c.insert(k, server.clone(), key_id, bytes, st.cfg.key_cache_bytes);
    }
    Ok((server, key_id))
}

/// Sets the flag when dropped: an evaluation whose request is gone (client disconnected,
/// timed out) stops at its next stage.
struct CancelOnDrop(Arc<AtomicBool>);
impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A place in the admission count, given back when the request ends.
struct Admitted<'a>(&'a AtomicUsize);
impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn infer(
    State(st): State<St>,
    UrlPath((name, id)): UrlPath<(String, String)>,
    req: Body,
) -> ApiResult<Response> {
    let (m, id) = match model(&st, &name).and_then(|m| Ok((m, key_id(&id)?.to_string()))) {
        Ok(x) => x,
        Err(e) => return Err(refuse(&st, req, e).await),
    };
    // admission first: memory is bounded by (running + queued) request bodies
    let bound = st.cfg.max_concurrent + st.cfg.max_queue;
    if st.admitted.fetch_add(1, Ordering::Relaxed) >= bound {
        st.admitted.fetch_sub(1, Ordering::Relaxed);
        st.metrics.rejected.fetch_add(1, Ordering::Relaxed);
        let mut e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Busy",
            format!(
                "{} evaluations running or waiting (--max-concurrent {} + --max-queue {}); retry later",
                bound, st.cfg.max_concurrent, st.cfg.max_queue
            ),
        );
        e.retry_after = Some(1);
        return Err(refuse(&st, req, e).await);
    }
    let _admitted = Admitted(&st.admitted);
    let bytes = body(&st, req, m.max_request, "the ciphertexts").await?;
    let (server, key) = server_for(&st, &name, &id).await?;
    let cts = Ciphertexts::inputs_from_bytes(&m.model, &bytes)?;
    drop(bytes);
    if cts.samples() > st.cfg.max_samples {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "TooLarge",
            format!(
                "{} samples in one request; this server takes at most {} (--max-samples): split them",
                cts.samples(),
                st.cfg.max_samples
            ),
        ));
    }
    if cts.key_id() != key {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "Keys",
            format!(
                "the ciphertexts were encrypted under key pair {:016x}, key `{id}` is {key:016x}: use the key id of the pair that encrypted them",
                cts.key_id()
            ),
        ));
    }
    let permit = st
        .eval
        .clone()
        .acquire_owned()
        .await
        .map_err(ApiError::internal)?;
    let cancel = Arc::new(AtomicBool::new(false));
    let _guard = CancelOnDrop(cancel.clone());
    let samples = cts.samples() as u64;
    let running = st.running.clone();
    running.fetch_add(1, Ordering::Relaxed);
    let work = tokio::task::spawn_blocking(move || {
        let out = server.run_watched(&cts, None, Some(&cancel));
        running.fetch_sub(1, Ordering::Relaxed);
        drop(permit);
        out.map(|o| (o, server.table_lookups() as u64))
    });
    let out = match tokio::time::timeout(st.cfg.request_timeout, work).await {
        Err(_) => {
            st.metrics.cancelled.fetch_add(1, Ordering::Relaxed);
            return Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "Timeout",
                format!(
                    "the evaluation took longer than {} s (--request-timeout) and was stopped; send fewer samples",
                    st.cfg.request_timeout.as_secs()
                ),
            ));
        }
        Ok(joined) => joined.map_err(ApiError::internal)?,
    };
    let (out, tlus) = out?;
    st.metrics.samples.fetch_add(samples, Ordering::Relaxed);
    st.metrics
        .bootstraps
        .fetch_add(samples * tlus, Ordering::Relaxed);
    let bytes = out.to_bytes()?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(st): State<St>) -> Response {
    if st.ready.load(Ordering::Relaxed) {
        "ready\n".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    }
}

async fn metrics(State(st): State<St>) -> Response {
    let (keys, bytes) = st
        .cache
        .lock()
        .map_or((0, 0), |c| (c.entries.len(), c.bytes));
    let admitted = st.admitted.load(Ordering::Relaxed);
    let running = st.running.load(Ordering::Relaxed);
    let text = st.metrics.render(&[
        ("fhec_in_flight", "Evaluations running.", running as f64),
        (
            "fhec_queue_depth",
            "Inference requests admitted and not running (reading, loading keys, waiting).",
            admitted.saturating_sub(running) as f64,
        ),
        (
            "fhec_keys_cached",
            "Expanded evaluation keys in memory.",
            keys as f64,
        ),
        (
            "fhec_key_cache_bytes",
            "Bytes of expanded evaluation keys in memory.",
            bytes as f64,
        ),
    ]);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// Counts every routed request by its route pattern and status, and its latency.
async fn track(State(st): State<St>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "other".to_string(), |p| p.as_str().to_string());
    let t = Instant::now();
    let r = next.run(req).await;
    if let Some(n) = axum::body::HttpBody::size_hint(r.body()).exact() {
        st.metrics.bytes_out.fetch_add(n, Ordering::Relaxed);
    }
    st.metrics
        .request(&route, r.status().as_u16(), t.elapsed().as_secs_f64());
    r
}

fn router(st: St) -> Router {
    Router::new()
        .route("/v1/models", get(list_models))
        .route("/v1/models/{name}", get(describe))
        .route("/v1/models/{name}/model", get(model_file))
        .route("/v1/models/{name}/keys", post(upload_key))
        .route(
            "/v1/models/{name}/keys/{id}",
            get(key_info).delete(delete_key),
        )
        .route("/v1/models/{name}/keys/{id}/infer", post(infer))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route_layer(axum::middleware::from_fn_with_state(st.clone(), track))
        .fallback(|| async { ApiError::not_found("no such route (see docs/openapi.yaml)") })
        .with_state(st)
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn load(cfg: &Config) -> Result<BTreeMap<String, Served>, ServeError> {
    if cfg.models.is_empty() {
        return Err(ServeError::NoModel);
    }
    for (v, what) in [
        (cfg.max_concurrent, "--max-concurrent"),
        (cfg.max_uploads, "--max-uploads"),
        (cfg.max_samples, "--max-samples"),
    ] {
        if v == 0 {
            return Err(ServeError::Zero(what));
        }
    }
    let mut out = BTreeMap::new();
    for (name, path) in &cfg.models {
        if !valid_name(name) {
            return Err(ServeError::BadName(name.clone()));
        }
        let p = path.display().to_string();
        let err = |e: crate::Error| ServeError::Model {
            path: p.clone(),
            source: Box::new(e),
        };
        let model =
            CompiledModel::load_with_limits(path, &cfg.limits).map_err(|e| err(e.into()))?;
        if !model.has_plan() {
            return Err(ServeError::NoPlan { path: p });
        }
        let info = model.plan_info().map_err(|e| err(e.into()))?;
        let bytes = model.to_bytes().map_err(|e| err(e.into()))?;
        let g = model.float_graph();
        let tensors = |ns: Vec<(String, String)>| {
            ns.into_iter()
                .map(|(name, shape)| Tensor { name, shape })
                .collect::<Vec<_>>()
        };
        let inputs = tensors(
            g.inputs
                .iter()
                .map(|i| (i.name.clone(), g.g[i.node].ty.to_string()))
                .collect(),
        );
        let outputs = tensors(
            g.outputs
                .iter()
                .map(|o| (o.name.clone(), g.g[o.node].ty.to_string()))
                .collect(),
        );
        // inputs travel seeded: 8 bytes a ciphertext, plus a seed and lengths per input
        // tensor of each sample, plus the file's header
        let per_sample = 8 * info.input_ciphertexts as u64 + 256 * g.inputs.len() as u64;
        let max_request = (cfg.max_samples as u64)
            .saturating_mul(per_sample)
            .saturating_add(64 * 1024);
        let max_key = info.key_bytes.seeded_max;
        let served = Served {
            model,
            bytes,
            info,
            inputs,
            outputs,
            max_request,
            max_key,
        };
        if out.insert(name.clone(), served).is_some() {
            return Err(ServeError::DuplicateName(name.clone()));
        }
    }
    Ok(out)
}

/// Serves until SIGTERM or SIGINT, then stops taking requests (`/readyz` answers 503) and
/// ends once those in flight are answered. Prints `listening on http://ADDR` first.
///
/// # Errors
/// A model that cannot be served, a key folder or address that cannot be used.
pub fn run(cfg: Config) -> Result<(), ServeError> {
    let store = DirStore::open(&cfg.keys_dir).map_err(|source| ServeError::KeysDir {
        path: cfg.keys_dir.display().to_string(),
        source,
    })?;
    run_with_store(cfg, Arc::new(store))
}

/// [`run`] with another key store (a database, an object store: anything the replicas
/// share); `cfg.keys_dir` is not used.
///
/// # Errors
/// As [`run`].
pub fn run_with_store(cfg: Config, store: Arc<dyn KeyStore>) -> Result<(), ServeError> {
    let models = load(&cfg)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(cfg.max_concurrent + cfg.max_uploads + 4)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&cfg.listen)
            .await
            .map_err(|source| ServeError::Listen {
                addr: cfg.listen.clone(),
                source,
            })?;
        let addr = listener.local_addr()?;
        let st = Arc::new(AppState {
            models,
            store,
            cache: Mutex::default(),
            loading: tokio::sync::Mutex::new(()),
            eval: Arc::new(Semaphore::new(cfg.max_concurrent)),
            admitted: AtomicUsize::new(0),
            running: Arc::new(AtomicUsize::new(0)),
            uploads: Arc::new(Semaphore::new(cfg.max_uploads)),
            metrics: Metrics::default(),
            ready: AtomicBool::new(true),
            cfg,
        });
        {
            use std::io::Write;
            let names: Vec<&str> = st.models.keys().map(String::as_str).collect();
            let mut out = std::io::stdout().lock();
            let _ = writeln!(
                out,
                "listening on http://{addr} (models: {})",
                names.join(", ")
            );
            let _ = out.flush();
        }
        let st2 = st.clone();
        axum::serve(listener, router(st.clone()))
            .with_graceful_shutdown(async move {
                shutdown_signal().await;
                st2.ready.store(false, Ordering::Relaxed);
                eprintln!("shutting down: finishing the requests in flight");
            })
            .await?;
        Ok(())
    })
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        if let (Ok(mut term), Ok(mut int)) = (term, int) {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Total expanded-key bytes a model's keys take in memory (for sizing `--key-cache-bytes`).
pub fn expanded_key_bytes(info: &PlanInfo) -> u64 {
    let k = &info.key_bytes;
    k.main_bsk + k.main_ksk + k.main_fksk + k.second_bsk + k.second_ksk
}
