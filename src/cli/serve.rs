//! `fhec serve` and `fhec client`: the HTTP server and its client (`fhec::serve`).

use super::*;
use fhec::serve::client::HttpClient;
use fhec::serve::Config;
use std::time::Duration;

#[derive(clap::Args)]
pub(super) struct ServeArgs {
    /// Compiled models: PATH (named by the file's stem) or NAME=PATH.
    #[arg(required = true)]
    models: Vec<String>,
    /// Address to listen on (port 0: any free port; the first line printed says which).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// Folder for uploaded evaluation keys (replicas behind a load balancer share it).
    #[arg(long)]
    keys: PathBuf,
    /// Evaluations at once; each uses all --threads.
    #[arg(long, default_value_t = 1)]
    max_concurrent: usize,
    /// Evaluations waiting before the server answers 503 with Retry-After.
    #[arg(long, default_value_t = 8)]
    max_queue: usize,
    /// Key uploads at once.
    #[arg(long, default_value_t = 2)]
    max_uploads: usize,
    /// Memory for expanded evaluation keys, in bytes (least recently used out first).
    #[arg(long, default_value_t = 2 << 30)]
    key_cache_bytes: u64,
    /// Samples in one inference request.
    #[arg(long, default_value_t = 64)]
    max_samples: usize,
    /// Seconds an evaluation may run before it is stopped (504).
    #[arg(long, default_value_t = 600)]
    request_timeout: u64,
    /// Seconds a request body may take to arrive (408).
    #[arg(long, default_value_t = 120)]
    upload_timeout: u64,
    /// Threads for encrypted evaluation (default: every core).
    #[arg(long)]
    threads: Option<usize>,
}

pub(super) fn serve(a: ServeArgs) -> Result<()> {
    set_threads(a.threads)?;
    let models = a
        .models
        .iter()
        .map(|m| match m.split_once('=') {
            Some((name, path)) => (name.to_string(), PathBuf::from(path)),
            None => {
                let p = PathBuf::from(m);
                let name = p
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                (name, p)
            }
        })
        .collect();
    let mut cfg = Config::new(models, &a.listen, a.keys);
    cfg.max_concurrent = a.max_concurrent;
    cfg.max_queue = a.max_queue;
    cfg.max_uploads = a.max_uploads;
    cfg.key_cache_bytes = a.key_cache_bytes;
    cfg.max_samples = a.max_samples;
    cfg.request_timeout = Duration::from_secs(a.request_timeout);
    cfg.upload_timeout = Duration::from_secs(a.upload_timeout);
    cfg.limits = limits();
    fhec::serve::run(cfg)?;
    Ok(())
}

#[derive(clap::Args)]
pub(super) struct Server {
    /// The server (or its load balancer): http://HOST:PORT.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    server: String,
    /// Seconds to wait for one answer.
    #[arg(long, default_value_t = 900)]
    timeout: u64,
}

impl Server {
    fn client(&self) -> HttpClient {
        HttpClient::new(&self.server, Duration::from_secs(self.timeout))
    }
}

#[derive(Subcommand)]
pub(super) enum ClientCmd {
    /// List the models served (JSON).
    Models {
        #[command(flatten)]
        s: Server,
    },
    /// Describe a model: inputs, outputs, plan, limits (JSON).
    Describe {
        name: String,
        #[command(flatten)]
        s: Server,
    },
    /// Download a compiled model (to make keys for it and encrypt with it).
    FetchModel {
        name: String,
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        s: Server,
    },
    /// Upload evaluation keys (`fhec keygen`'s server.key); prints the key id.
    UploadKeys {
        name: String,
        #[arg(long)]
        key: PathBuf,
        #[command(flatten)]
        s: Server,
    },
    /// Encrypt inputs (.npy, axis 0 = samples) with the client key, run them on the server,
    /// decrypt the results into .npy files: the whole client side in one command.
    Infer {
        name: String,
        /// The compiled model (as `fetch-model` wrote it; checked against the server's).
        #[arg(long)]
        model: PathBuf,
        /// The client key (`fhec keygen`'s client.key).
        #[arg(long)]
        key: PathBuf,
        /// The key id `upload-keys` printed for the matching server.key.
        #[arg(long)]
        key_id: String,
        /// One per graph input, in graph-input order.
        #[arg(long = "input", required = true)]
        inputs: Vec<PathBuf>,
        /// Only the first N samples.
        #[arg(long)]
        samples: Option<usize>,
        /// One per graph output.
        #[arg(long = "output", required = true)]
        outputs: Vec<PathBuf>,
        /// Class labels (.npy, int): print the accuracy.
        #[arg(long)]
        labels: Option<PathBuf>,
        #[command(flatten)]
        s: Server,
    },
    /// Run the model on encrypted inputs (`fhec encrypt`'s file); writes encrypted outputs
    /// for `fhec decrypt`.
    InferCiphertexts {
        name: String,
        /// The key id `upload-keys` printed.
        #[arg(long)]
        key_id: String,
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        s: Server,
    },
    /// Delete uploaded keys.
    DeleteKeys {
        name: String,
        #[arg(long)]
        key_id: String,
        #[command(flatten)]
        s: Server,
    },
}

/// A file the client sends, bounded like every file fhec reads (the server bounds it again).
fn read(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    const LIMIT: u64 = 4 << 30;
    let err = |e: std::io::Error| CliError::Usage(format!("cannot read `{}`: {e}", path.display()));
    let mut b = Vec::new();
    std::fs::File::open(path)
        .map_err(err)?
        .take(LIMIT + 1)
        .read_to_end(&mut b)
        .map_err(err)?;
    if b.len() as u64 > LIMIT {
        return Err(CliError::Usage(format!(
            "`{}` is larger than {LIMIT} bytes, more than any key or ciphertext file",
            path.display()
        )));
    }
    Ok(b)
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes)
        .map_err(|e| CliError::Usage(format!("cannot write `{}`: {e}", path.display())))
}

pub(super) fn client(c: ClientCmd) -> Result<()> {
    match c {
        ClientCmd::Models { s } => {
            println!("{:#}", s.client().models()?);
        }
        ClientCmd::Describe { name, s } => {
            println!("{:#}", s.client().describe(&name)?);
        }
        ClientCmd::FetchModel { name, out, s } => {
            let b = s.client().model_file(&name)?;
            // checked before it is written: the server may not be the one we think
            CompiledModel::from_bytes(&b, &limits())
                .map_err(|e| CliError::Usage(format!("{}: not a compiled model: {e}", s.server)))?;
            write(&out, &b)?;
            println!("wrote {} ({} bytes)", out.display(), b.len());
        }
        ClientCmd::UploadKeys { name, key, s } => {
            let b = read(&key)?;
            let up = s.client().upload_keys(&name, &b)?;
            println!("{}", up.key_id);
        }
        ClientCmd::Infer {
            name,
            model,
            key,
            key_id,
            inputs,
            samples,
            outputs,
            labels,
            s,
        } => {
            let m = load_model(&model)?;
            let client = fhec::Client::load(&m, &key)?;
            let xs = read_inputs(&inputs, samples)?;
            let cts = client.encrypt(&xs)?;
            let n = cts.samples();
            let t = Instant::now();
            let y = s.client().infer(&name, &key_id, &cts.to_bytes()?)?;
            let dt = t.elapsed();
            let outs = fhec::Ciphertexts::outputs_from_bytes(&m, &y)?;
            let ys = client.decrypt(&outs)?;
            super::keys::write_outputs(&outputs, &ys)?;
            println!(
                "{n} sample(s) through {} in {:.2} s ({:.2} s per sample)",
                s.server,
                dt.as_secs_f64(),
                dt.as_secs_f64() / n.max(1) as f64
            );
            if let Some(l) = labels {
                let mut v = npy::read_labels(&l)?;
                v.truncate(n);
                let acc = fhec::accuracy(&ys[0], &v)
                    .ok_or_else(|| labels_mismatch(&l, v.len(), &ys[0]))?;
                println!("accuracy (fhe): {acc:.4} on {} samples", v.len());
            }
        }
        ClientCmd::InferCiphertexts {
            name,
            key_id,
            input,
            out,
            s,
        } => {
            let b = read(&input)?;
            let t = Instant::now();
            let y = s.client().infer(&name, &key_id, &b)?;
            write(&out, &y)?;
            eprintln!(
                "wrote {} ({} bytes) in {:.2} s",
                out.display(),
                y.len(),
                t.elapsed().as_secs_f64()
            );
        }
        ClientCmd::DeleteKeys { name, key_id, s } => {
            s.client().delete_keys(&name, &key_id)?;
        }
    }
    Ok(())
}
