"""Python's overhead on an encrypted prediction (docs/results.md "Python overhead"): the same
compiled model and samples through `fhec bench` and through the Python package, interleaved
so that the machine's drift hits both alike.

    ~/.cache/fhec/venv/bin/python docs/results/python_overhead.py   # needs the wheel (bash python/test.sh) and target/release/fhec
    python3 docs/results/python_overhead.py --render                  # re-render from python_overhead.json

Per model and rounding mode: one key pair on each side; per round, every sample through
`fhec.Server.run` alone (the server's work: evaluation keys already expanded, ciphertext
bytes parsed and checked, the result serialized) and through `Model.predict(fhe="execute")`
(encrypt + run + decrypt from numpy to numpy), then `fhec bench --samples N --json` on the
same samples (its evaluation median, and its encrypt + evaluate + decrypt). Overhead =
Python's median over the CLI's median, minus one.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from common import ROOT, machine, put_table

FHEC = os.environ.get("FHEC", os.path.join(ROOT, "target", "release", "fhec"))
OUT = os.path.join(ROOT, "docs", "results", "python_overhead.json")
DOC = os.path.join(ROOT, "docs", "results.md")
SAMPLES = 5
ROUNDS = 2
CASES = [("digits_mlp", "approximate"), ("digits_mlp", "exact")]


def bench(model, xpath, n):
    out = subprocess.run(
        [FHEC, "bench", model, "--input", xpath, "--samples", str(n), "--json"],
        check=True, capture_output=True, text=True,
    ).stdout
    return json.loads(out[out.index("{"):])


def run_case(name, rounding, tmp):
    import numpy as np

    import fhec

    fhec.set_progress(False)
    calib = np.load(os.path.join(ROOT, "models", f"{name}_calib.npy"))
    x = np.load(os.path.join(ROOT, "models", f"{name}_test_x.npy"))[:SAMPLES]
    xpath = os.path.join(tmp, "x.npy")
    np.save(xpath, x)
    m = fhec.compile(os.path.join(ROOT, "models", f"{name}.onnx"), calib, rounding_method=rounding)
    path = os.path.join(tmp, f"{name}_{rounding}.fhe")
    m.save(path)
    m = fhec.load(path)
    client = m.client()
    client.keygen()
    keys = client.evaluation_keys()
    server = fhec.Server(m)
    server.run(client.encrypt(x[:1]), keys)  # expand the keys once, as bench's keygen does
    m.keygen()
    py_run, py_full, cli_eval, cli_full = [], [], [], []
    for _ in range(ROUNDS):
        for i in range(SAMPLES):
            ct = client.encrypt(x[i : i + 1])
            t0 = time.perf_counter()
            server.run(ct, keys)
            py_run.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            m.predict(x[i : i + 1], fhe="execute")
            py_full.append(time.perf_counter() - t0)
        b = bench(path, xpath, SAMPLES)
        cli_eval += b["latency_s_all"]
        cli_full += [t + b["encrypt_s_mean"] + b["decrypt_s_mean"] for t in b["latency_s_all"]]
    med = statistics.median
    return {
        "model": name,
        "rounding": rounding,
        "bootstraps": m.bootstraps,
        "samples": SAMPLES * ROUNDS,
        "cli_eval_s": med(cli_eval),
        "py_run_s": med(py_run),
        "cli_full_s": med(cli_full),
        "py_predict_s": med(py_full),
        "run_overhead": med(py_run) / med(cli_eval) - 1,
        "predict_overhead": med(py_full) / med(cli_full) - 1,
        "threads": b["threads"],
    }


def render(data):
    lines = [
        f"Measured on {data['machine']}, {data['date']}; `python docs/results/python_overhead.py` reruns it.",
        "",
        "| model | rounding | bootstraps | `fhec bench` evaluate (s) | `Server.run` (s) | overhead | bench encrypt+evaluate+decrypt (s) | `predict(fhe=\"execute\")` (s) | overhead |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in data["rows"]:
        lines.append(
            f"| {r['model']} | {r['rounding']} | {r['bootstraps']} | {r['cli_eval_s']:.3f} | {r['py_run_s']:.3f} | {r['run_overhead'] * 100:+.1f} % | {r['cli_full_s']:.3f} | {r['py_predict_s']:.3f} | {r['predict_overhead'] * 100:+.1f} % |"
        )
    lines.append("")
    lines.append(f"Medians of {data['rows'][0]['samples']} samples each, one sample per call, {data['rows'][0]['threads']} threads.")
    table = "\n".join(lines)
    put_table(DOC, "python", table)


def main():
    if "--render" not in sys.argv:
        import datetime

        with tempfile.TemporaryDirectory() as tmp:
            rows = [run_case(n, r, tmp) for n, r in CASES]
        data = {"date": datetime.date.today().isoformat(), "machine": machine(), "rows": rows}
        json.dump(data, open(OUT, "w"), indent=1)
    render(json.load(open(OUT)))


if __name__ == "__main__":
    main()
