//! `fhec serve` on loopback, as a separate process: the encrypted round trip through HTTP
//! decrypts to the integer program's results, as `serve-run`'s does (the bytes themselves
//! may differ: tfhe-fft picks its FFT algorithm by timing, so the noise differs); bad requests get one-line 4xx answers and the server
//! keeps serving; keys survive a restart and a killed upload stores nothing; past its queue
//! bound the server answers 503 with Retry-After, a body too slow gets 408, and an
//! evaluation past --request-timeout gets 504 and is stopped.

use crate::common::{fhec, model, s, tmp};
use fhec::serve::client::{ClientError, HttpClient};
use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `fhec serve`, killed (SIGKILL) when dropped.
struct Running {
    child: Child,
    addr: String,
}

impl Running {
    fn start(models: &[&str], keys: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fhec"))
            .arg("serve")
            .args(models)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--keys",
                s(keys),
                "--threads",
                "2",
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("fhec serve starts");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("first line");
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| {
                let mut err = String::new();
                let _ = child.stderr.take().map(|mut e| e.read_to_string(&mut err));
                panic!("no address in {line:?}; stderr: {err}")
            })
            .to_string();
        Self { child, addr }
    }
    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    fn client(&self) -> HttpClient {
        HttpClient::new(&self.url(), Duration::from_secs(300))
    }
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ok(args: &[&str]) -> String {
    let out = fhec(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The iris MLP compiled at `bits` (small: every encrypted sample takes well under a second),
/// a key pair and `n` encrypted samples, in `dir`.
fn setup(dir: &str, bits: &str, n: &str) -> PathBuf {
    let d = tmp(dir);
    std::fs::create_dir_all(&d).expect("dir");
    let fhe = d.join("iris.fhe");
    ok(&[
        "compile",
        s(&model("iris_mlp.onnx")),
        "--calib",
        s(&model("iris_mlp_calib.npy")),
        "--n-bits",
        bits,
        "--rounding-bits",
        "4",
        "-o",
        s(&fhe),
    ]);
    ok(&["keygen", s(&fhe), "--out", s(&d)]);
    encrypt(&d, n, &d.join("x.ct"));
    d
}

/// The first `n` iris test samples encrypted under `dir`'s client key for `dir/iris.fhe`
/// (from [`setup`]), written to `out`.
fn encrypt(dir: &Path, n: &str, out: &Path) {
    ok(&[
        "encrypt",
        s(&dir.join("iris.fhe")),
        "--key",
        s(&dir.join("client.key")),
        "--input",
        s(&model("iris_mlp_test_x.npy")),
        "--samples",
        n,
        "--out",
        s(out),
    ]);
}

fn refused(r: Result<impl std::fmt::Debug, ClientError>, status: u16, needles: &[&str]) {
    match r {
        Err(ClientError::Refused {
            status: got,
            message,
            ..
        }) => {
            assert_eq!(got, status, "{message}");
            assert_eq!(message.lines().count(), 1, "not one line: {message}");
            for n in needles {
                assert!(message.contains(n), "`{n}` missing from: {message}");
            }
        }
        other => panic!("expected {status}, got {other:?}"),
    }
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).expect("read")
}

/// Sends a request's head and part of its body by hand, and leaves the connection open.
fn partial_post(addr: &str, path: &str, announced: usize, sent: &[u8]) -> TcpStream {
    let mut t = TcpStream::connect(addr).expect("connect");
    write!(
        t,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/octet-stream\r\nContent-Length: {announced}\r\n\r\n"
    )
    .expect("head");
    t.write_all(sent).expect("body");
    t.flush().expect("flush");
    t
}

#[test]
fn http_round_trip_equals_serve_run_and_bad_requests_are_4xx() {
    let d = setup("serve-a", "3", "3");
    let other = setup("serve-b", "4", "1");
    let fhe = d.join("iris.fhe");
    // the same ciphertexts through serve-run, for the byte-for-byte comparison
    ok(&[
        "serve-run",
        s(&fhe),
        "--key",
        s(&d.join("server.key")),
        "--input",
        s(&d.join("x.ct")),
        "--out",
        s(&d.join("y_local.ct")),
    ]);
    let keys = tmp("serve-keys-a");
    let srv = Running::start(
        &[s(&fhe), &format!("other={}", s(&other.join("iris.fhe")))],
        &keys,
        &["--max-samples", "3"],
    );
    let url = srv.url();

    // the model as served is the model compiled
    let c = srv.client();
    let listed = c.models().expect("models");
    assert_eq!(
        listed["models"].as_array().map(Vec::len),
        Some(2),
        "{listed}"
    );
    let fetched = tmp("serve-fetched.fhe");
    ok(&[
        "client",
        "fetch-model",
        "iris",
        "--server",
        &url,
        "--out",
        s(&fetched),
    ]);
    let described = c.describe("iris").expect("describe");
    assert_eq!(described["limits"]["max_samples"], 3, "{described}");

    // upload, infer and decrypt through the CLI client
    let id = ok(&[
        "client",
        "upload-keys",
        "iris",
        "--server",
        &url,
        "--key",
        s(&d.join("server.key")),
    ])
    .trim()
    .to_string();
    assert_eq!(id.len(), 32, "{id}");
    ok(&[
        "client",
        "infer-ciphertexts",
        "iris",
        "--server",
        &url,
        "--key-id",
        &id,
        "--input",
        s(&d.join("x.ct")),
        "--out",
        s(&d.join("y.ct")),
    ]);
    ok(&[
        "decrypt",
        s(&fetched),
        "--key",
        s(&d.join("client.key")),
        "--input",
        s(&d.join("y.ct")),
        "--output",
        s(&d.join("y.npy")),
    ]);
    // the client side in one command: encrypt, POST, decrypt
    let so = ok(&[
        "client",
        "infer",
        "iris",
        "--server",
        &url,
        "--model",
        s(&fetched),
        "--key",
        s(&d.join("client.key")),
        "--key-id",
        &id,
        "--input",
        s(&model("iris_mlp_test_x.npy")),
        "--samples",
        "3",
        "--output",
        s(&d.join("y2.npy")),
    ]);
    assert!(so.contains("3 sample(s) through"), "{so}");
    let m = fhec::CompiledModel::load(&fhe).expect("model");
    let x = fhec::npy::read_f32(&model("iris_mlp_test_x.npy")).expect("x");
    let x = x
        .slice_axis(ndarray::Axis(0), ndarray::Slice::from(0..3))
        .to_owned();
    let clear = m.run_clear(&[x]).expect("clear");
    let y = fhec::npy::read_f32(&d.join("y.npy")).expect("y");
    assert_eq!(y, clear[0], "encrypted result differs from clear mode");
    let y2 = fhec::npy::read_f32(&d.join("y2.npy")).expect("y2");
    assert_eq!(y2, clear[0], "`fhec client infer` differs from clear mode");
    let client = fhec::Client::load(&m, &d.join("client.key")).expect("client key");
    let decrypt = |b: &[u8]| {
        client
            .decrypt_integers(&fhec::Ciphertexts::outputs_from_bytes(&m, b).expect("outputs"))
            .expect("decrypts")
    };
    let local = decrypt(&read(&d.join("y_local.ct")));
    assert_eq!(
        decrypt(&read(&d.join("y.ct"))),
        local,
        "HTTP and serve-run differ"
    );

    // bad requests: one line each, the right status, and the server goes on
    let key = read(&d.join("server.key"));
    let max_key = described["limits"]["max_key_bytes"].as_u64().expect("max");
    refused(
        c.upload_keys("iris", &vec![0u8; max_key as usize + 1]),
        413,
        &["larger than"],
    );
    refused(c.upload_keys("iris", b"not a key"), 400, &[]);
    refused(c.upload_keys("iris", &key[..key.len() / 2]), 400, &[]);
    refused(c.upload_keys("other", &key), 400, &["model"]);
    refused(c.upload_keys("nope", &key), 404, &["no model `nope`"]);
    let xct = read(&d.join("x.ct"));
    refused(
        c.infer("iris", "0123456789abcdef0123456789abcdef", &xct),
        404,
        &["no key"],
    );
    refused(c.infer("iris", "..%2F..%2Fetc", &xct), 404, &["no key"]);
    refused(c.infer("iris", &id, b"garbage"), 400, &[]);
    refused(c.infer("iris", &id, &xct[..xct.len() - 5]), 400, &[]);
    // ciphertexts of another key pair of another model
    refused(c.infer("iris", &id, &read(&other.join("x.ct"))), 400, &[]);
    // 4 samples past --max-samples 3
    let four = tmp("serve-four.ct");
    encrypt(&d, "4", &four);
    refused(c.infer("iris", &id, &read(&four)), 413, &["--max-samples"]);
    // the key still works, deleted it does not
    let again = c.infer("iris", &id, &xct).expect("infer again");
    assert_eq!(decrypt(&again), local);
    c.delete_keys("iris", &id).expect("delete");
    refused(c.infer("iris", &id, &xct), 404, &["no key"]);
    refused(c.delete_keys("iris", &id), 404, &["no key"]);

    // the counters saw it all
    let mut metrics = String::new();
    ureq::get(format!("{url}/metrics"))
        .call()
        .expect("metrics")
        .body_mut()
        .as_reader()
        .read_to_string(&mut metrics)
        .expect("text");
    for needle in [
        "fhec_requests_total{route=\"/v1/models/{name}/keys/{id}/infer\",code=\"200\"} 3",
        "fhec_requests_total{route=\"/v1/models/{name}/keys\",code=\"413\"} 1",
        "fhec_samples_total 9",
    ] {
        assert!(metrics.contains(needle), "`{needle}` missing:\n{metrics}");
    }
    srv.kill();
}

#[test]
fn keys_survive_a_restart_and_a_killed_upload_stores_nothing() {
    let d = setup("serve-c", "3", "1");
    let fhe = d.join("iris.fhe");
    let keys = tmp("serve-keys-c");
    let key = read(&d.join("server.key"));
    let srv = Running::start(&[s(&fhe)], &keys, &[]);
    let id = srv
        .client()
        .upload_keys("iris", &key)
        .expect("upload")
        .key_id;
    // an upload cut off by kill -9 halfway through its body
    let _t = partial_post(
        &srv.addr,
        "/v1/models/iris/keys",
        key.len(),
        &key[..key.len() / 2],
    );
    std::thread::sleep(Duration::from_millis(300));
    srv.kill();

    let srv = Running::start(&[s(&fhe)], &keys, &[]);
    let c = srv.client();
    assert_eq!(c.describe("iris").expect("describe")["keys_stored"], 1);
    let y = c
        .infer("iris", &id, &read(&d.join("x.ct")))
        .expect("the key uploaded before the restart works");
    assert!(!y.is_empty());
    // no temporary file left in the store
    let leftovers: Vec<_> = walk(&keys)
        .into_iter()
        .filter(|p| !p.to_string_lossy().ends_with(".key"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn walk(d: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(d).expect("dir").flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

#[test]
fn past_the_queue_bound_503_and_a_slow_body_408() {
    let d = setup("serve-d", "3", "1");
    let fhe = d.join("iris.fhe");
    let keys = tmp("serve-keys-d");
    let srv = Running::start(
        &[s(&fhe)],
        &keys,
        &[
            "--max-concurrent",
            "1",
            "--max-queue",
            "0",
            "--upload-timeout",
            "2",
        ],
    );
    let c = srv.client();
    let id = c
        .upload_keys("iris", &read(&d.join("server.key")))
        .expect("upload")
        .key_id;
    let xct = read(&d.join("x.ct"));
    // one request admitted whose body is still coming: the only place is taken
    let path = format!("/v1/models/iris/keys/{id}/infer");
    let mut slow = partial_post(&srv.addr, &path, xct.len(), &xct[..10]);
    std::thread::sleep(Duration::from_millis(300));
    refused(c.infer("iris", &id, &xct), 503, &["retry"]);
    let r = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build(),
    )
    .post(format!("{}{path}", srv.url()))
    .send(&xct[..])
    .expect("answer");
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap_or("")),
        Some("1")
    );
    // the slow body times out with 408
    let mut answer = String::new();
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let _ = slow.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("--upload-timeout"), "{answer}");
    // and the place is free again
    c.infer("iris", &id, &xct)
        .expect("served after the timeout");
}

/// The `fhec_in_flight` gauge of a running server.
fn in_flight(url: &str) -> f64 {
    let mut text = String::new();
    ureq::get(format!("{url}/metrics"))
        .call()
        .expect("metrics")
        .body_mut()
        .as_reader()
        .read_to_string(&mut text)
        .expect("text");
    text.lines()
        .find_map(|l| l.strip_prefix("fhec_in_flight "))
        .and_then(|v| v.trim().parse().ok())
        .expect("fhec_in_flight")
}

#[test]
fn an_evaluation_past_the_request_timeout_is_504_and_stopped() {
    // 45 samples: several seconds of bootstraps on this machine's two cores
    let d = setup("serve-e", "3", "45");
    let fhe = d.join("iris.fhe");
    let key = read(&d.join("server.key"));
    let xct = read(&d.join("x.ct"));
    // how long the whole evaluation takes when nothing stops it
    let keys = tmp("serve-keys-e1");
    let full = Running::start(&[s(&fhe)], &keys, &[]);
    let c = full.client();
    let id = c.upload_keys("iris", &key).expect("upload").key_id;
    let t0 = Instant::now();
    c.infer("iris", &id, &xct).expect("served in full");
    let whole = t0.elapsed();
    full.kill();
    assert!(
        whole > Duration::from_millis(1500),
        "too quick to time out: {whole:?}"
    );

    let keys = tmp("serve-keys-e2");
    let srv = Running::start(&[s(&fhe)], &keys, &["--request-timeout", "1"]);
    let c = srv.client();
    let id = c.upload_keys("iris", &key).expect("upload").key_id;
    let t0 = Instant::now();
    refused(
        c.infer("iris", &id, &xct),
        504,
        &["--request-timeout", "stopped", "fewer samples"],
    );
    // stopped at its next stage: nothing runs any more, well before the whole evaluation
    // would have ended
    while in_flight(&srv.url()) > 0.0 {
        assert!(
            t0.elapsed() < whole,
            "still running after {:?} (whole: {whole:?})",
            t0.elapsed()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    println!(
        "504 and stopped after {:?}; the whole evaluation takes {whole:?}",
        t0.elapsed()
    );
    // and the server serves on: one sample fits the deadline
    let one = d.join("one.ct");
    encrypt(&d, "1", &one);
    c.infer("iris", &id, &read(&one))
        .expect("one sample served");
    srv.kill();
}
