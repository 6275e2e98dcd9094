//! The client/server split: `fhec keygen`, `encrypt`, `serve-run`, `decrypt`.

use super::*;
use fhec::{Ciphertexts, Client, EvaluationKeys, Server};

#[derive(clap::Args)]
pub(super) struct KeygenArgs {
    model: PathBuf,
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args)]
pub(super) struct EncryptArgs {
    model: PathBuf,
    /// The client key.
    #[arg(long)]
    key: PathBuf,
    /// One per graph input, in graph-input order.
    #[arg(long = "input", required = true)]
    inputs: Vec<PathBuf>,
    /// Only the first N samples.
    #[arg(long)]
    samples: Option<usize>,
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args)]
pub(super) struct ServeRunArgs {
    model: PathBuf,
    /// The server key.
    #[arg(long)]
    key: PathBuf,
    /// Encrypted inputs (from `fhec encrypt`).
    #[arg(long)]
    input: PathBuf,
    /// Encrypted outputs.
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(clap::Args)]
pub(super) struct DecryptArgs {
    model: PathBuf,
    /// The client key.
    #[arg(long)]
    key: PathBuf,
    /// Encrypted outputs (from `fhec serve-run`).
    #[arg(long)]
    input: PathBuf,
    #[arg(long = "output", required = true)]
    outputs: Vec<PathBuf>,
    /// Class labels (.npy, int): print the accuracy.
    #[arg(long)]
    labels: Option<PathBuf>,
}

pub(super) fn keygen(a: KeygenArgs) -> Result<()> {
    keygen_cmd(&a.model, &a.out)
}

pub(super) fn encrypt(a: EncryptArgs) -> Result<()> {
    encrypt_cmd(&a.model, &a.key, &a.inputs, a.samples, &a.out)
}

pub(super) fn serve_run(a: ServeRunArgs) -> Result<()> {
    set_threads(a.threads)?;
    serve_run_cmd(&a.model, &a.key, &a.input, &a.out)
}

pub(super) fn decrypt(a: DecryptArgs) -> Result<()> {
    decrypt_cmd(&a.model, &a.key, &a.input, &a.outputs, a.labels.as_deref())
}

/// Server key sizes per partition, one line.
pub(super) fn key_sizes_line(k: &fhec::KeySizes) -> String {
    let m = |b: usize| mb(b as u64);
    let mut s = format!(
        "{:.1} MiB: tables {:.1} MiB (bootstrapping {:.1} + keyswitching {:.1}",
        m(k.total()),
        m(k.main_bsk + k.main_ksk + k.main_fksk),
        m(k.main_bsk),
        m(k.main_ksk)
    );
    if k.extract_bsk > 0 {
        s += &format!(
            " in + {:.1} back), bit extractions {:.1} MiB (bootstrapping {:.1} + keyswitching {:.1})",
            m(k.main_fksk),
            m(k.extract_bsk + k.extract_ksk),
            m(k.extract_bsk),
            m(k.extract_ksk),
        );
    } else {
        s += ")";
    }
    s + " expanded"
}

fn keygen_cmd(model: &Path, out: &Path) -> Result<()> {
    let m = load_model(model)?;
    print_plan(&m.plan_info()?);
    std::fs::create_dir_all(out).map_err(|e| fhec::Error::Write {
        path: out.display().to_string(),
        reason: e.to_string(),
    })?;
    let t0 = Instant::now();
    let (client, keys) = Client::keygen(&m)?;
    let dt = t0.elapsed();
    let (cp, sp) = (out.join("client.key"), out.join("server.key"));
    let cb = client.save_key(&cp)?;
    let sb = keys.save(&sp)?;
    println!(
        "keygen: {:.2} s; wrote {} ({:.1} MiB, secret: keep it) and {} ({:.1} MiB seeded, for the server; {})",
        dt.as_secs_f64(),
        cp.display(),
        mb(cb),
        sp.display(),
        mb(sb),
        key_sizes_line(&keys.sizes())
    );
    Ok(())
}

fn encrypt_cmd(
    model: &Path,
    key: &Path,
    inputs: &[PathBuf],
    samples: Option<usize>,
    out: &Path,
) -> Result<()> {
    let m = load_model(model)?;
    let client = Client::load(&m, key)?;
    let xs = read_inputs(inputs, samples)?;
    let t0 = Instant::now();
    let cts = client.encrypt(&xs)?;
    let dt = t0.elapsed();
    let bytes = cts.save(out)?;
    println!(
        "encrypted {} sample(s) in {:.1} ms; wrote {} ({:.2} MiB)",
        cts.samples(),
        dt.as_secs_f64() * 1e3,
        out.display(),
        mb(bytes)
    );
    Ok(())
}

fn serve_run_cmd(model: &Path, key: &Path, input: &Path, out: &Path) -> Result<()> {
    let m = load_model(model)?;
    let t0 = Instant::now();
    let keys = EvaluationKeys::load(&m, key)?;
    let server = Server::new(&m, &keys).map_err(in_file(key))?;
    let t_key = t0.elapsed();
    let cts = Ciphertexts::load_inputs(&m, input)?;
    let info = m.plan_info()?;
    let n = cts.samples();
    let pb = progress((server.table_lookups() * n) as u64);
    let t1 = Instant::now();
    let outs = server
        .run_with_progress(&cts, Some(&pb))
        .map_err(in_file(input))?;
    let dt = t1.elapsed();
    pb.finish_and_clear();
    let bytes = outs.save(out)?;
    let per = dt.as_secs_f64() / n.max(1) as f64;
    println!(
        "server key loaded in {:.2} s; evaluated {n} sample(s) in {:.2} s ({:.2} s per sample, {} bootstraps each, {:.1} ms per bootstrap, {} thread(s)); wrote {} ({:.2} MiB)",
        t_key.as_secs_f64(),
        dt.as_secs_f64(),
        per,
        info.bootstraps,
        per * 1e3 / info.bootstraps.max(1) as f64,
        rayon::current_num_threads(),
        out.display(),
        mb(bytes)
    );
    Ok(())
}

fn decrypt_cmd(
    model: &Path,
    key: &Path,
    input: &Path,
    outputs: &[PathBuf],
    labels: Option<&Path>,
) -> Result<()> {
    let m = load_model(model)?;
    let client = Client::load(&m, key)?;
    let outs = Ciphertexts::load_outputs(&m, input)?;
    let ys = client.decrypt(&outs).map_err(in_file(input))?;
    write_outputs(outputs, &ys)?;
    if let Some(l) = labels {
        let mut v = npy::read_labels(l)?;
        v.truncate(outs.samples());
        let acc = fhec::accuracy(&ys[0], &v).ok_or_else(|| labels_mismatch(l, v.len(), &ys[0]))?;
        println!("accuracy (fhe): {acc:.4} on {} samples", v.len());
    }
    Ok(())
}

/// Writes decrypted outputs, one `--output` file per model output (`decrypt`, `client
/// infer`).
pub(super) fn write_outputs(outputs: &[PathBuf], ys: &[ndarray::ArrayD<f32>]) -> Result<()> {
    if outputs.len() != ys.len() {
        return Err(CliError::Usage(format!(
            "the model has {} output(s); give one --output per output",
            ys.len()
        )));
    }
    for (p, y) in outputs.iter().zip(ys) {
        npy::write_f32(p, y)?;
        println!("wrote {} {}", p.display(), ShapeFmt(y.shape()));
    }
    Ok(())
}
