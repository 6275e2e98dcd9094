"""`fhec tune` on every shipped model, tuned on one half of its test split and scored on the
other half it never saw (docs/results.md, "Tune on unseen data").

    python3 docs/results/tune.py                 # tune every model, score the hold-out half
    python3 docs/results/tune.py --bench         # then time each choice on one encrypted sample
    python3 docs/results/tune.py --only digits_mlp,iris_mlp
    python3 docs/results/tune.py --render        # re-render docs/results.md from tune.json

Needs only python3's standard library and `target/release/fhec`. For each model: the test
split cut in two (first half: validation for tune; second: the hold-out), `fhec tune`
with its defaults (`--json` records the choice, its bound on the drop and its margin), then
`fhec run --mode sim` on the hold-out half (exact rounding at a negligible error
probability simulates as clear mode; approximate rounding draws its noise), float beside
it; `--bench` adds `fhec bench --samples 1` on the chosen model (run it on a quiet
machine: it is the only timed step).
"""

import json
import os
import subprocess
import sys
import tempfile

from common import ROOT, last_json, machine, models, put_table

FHEC = os.environ.get("FHEC", os.path.join(ROOT, "target", "release", "fhec"))
OUT = os.path.join(ROOT, "docs", "results", "tune.json")
DOC = os.path.join(ROOT, "docs", "results.md")
REGRESSION = {"diabetes_mlp", "digits_autoenc"}


def fhec(*args):
    r = subprocess.run([FHEC, *args], cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"fhec {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


def npy_read(path):
    """A version 1.0 .npy file: its header dictionary and its data bytes (stdlib only)."""
    import ast

    raw = open(path, "rb").read()
    assert raw[:6] == b"\x93NUMPY" and raw[6] == 1, f"{path}: not a version 1.0 .npy"
    hlen = int.from_bytes(raw[8:10], "little")
    header = ast.literal_eval(raw[10 : 10 + hlen].decode("latin1"))
    return header, raw[10 + hlen :]


def npy_write(path, header, body):
    text = repr(header)
    # header padded with spaces to a multiple of 64 bytes with the magic, ending in newline
    total = 10 + len(text) + 1
    text = text + " " * ((64 - total % 64) % 64) + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text.encode("latin1") + body)


def split(prefix, tmp):
    """The test split's first half (validation) and second half (hold-out), as .npy files."""
    halves = {}
    for part in ("x", "y"):
        header, body = npy_read(f"{prefix}_test_{part}.npy")
        n = header["shape"][0]
        per = len(body) // n
        h = n // 2
        for name, (a, b) in (("val", (0, h)), ("hold", (h, n))):
            hdr = dict(header, shape=(b - a,) + tuple(header["shape"][1:]))
            path = os.path.join(tmp, f"{os.path.basename(prefix)}_{name}_{part}.npy")
            npy_write(path, hdr, body[a * per : b * per])
            halves[(name, part)] = path
    return halves


def run_model(prefix, tmp):
    name = os.path.basename(prefix)
    h = split(prefix, tmp)
    metric = ["--metric", "r2"] if name in REGRESSION else []
    fhe = os.path.join(tmp, name + ".fhe")
    rep = os.path.join(tmp, name + ".json")
    fhec("tune", prefix + ".onnx", "--calib", prefix + "_calib.npy", "--val", h[("val", "x")], "--val-labels", h[("val", "y")], "--confirm", "0", "-o", fhe, "--json", rep, *metric)
    t = json.load(open(rep))
    key = "r2" if metric else "accuracy"
    hold = last_json(fhec("run", fhe, "--input", h[("hold", "x")], "--labels", h[("hold", "y")], "--mode", "sim", "--json", *metric))
    row = {
        "model": name,
        "metric": "R²" if metric else "accuracy",
        "tune_s": t["seconds"],
        "candidates": t["candidates"],
        "float_val": t["float_score"],
        "chosen": t["chosen"],
        "margin": t["margin"],
        "hold_float": 100 * hold[f"{key}_float"],
        "hold_clear": 100 * hold[f"{key}_clear"],
        "hold_sim": 100 * hold[f"{key}_sim"],
    }
    if "--bench" in sys.argv:
        b = last_json(fhec("bench", fhe, "--input", h[("hold", "x")], "--samples", "1", "--json"))
        row["measured_s"] = b["latency_s_median"]
        row["bench_threads"] = b["threads"]
    print(json.dumps(row), flush=True)
    return row


def render(data):
    # rows from several runs keep their own machine and date (older rows: the file's)
    runs = sorted({(r.get("machine", data["machine"]), r.get("date", data["date"])) for r in data["rows"]})
    where = "; ".join(f"{m}, {d}" for m, d in runs)
    lines = [
        f"Measured on {where}; `python3 docs/results/tune.py` reruns it (`--bench` for the timings).",
        "",
        "| model | chosen | float (val) | est. drop / 95 % bound | hold-out: float → clear / sim | hold-out drop | bootstraps | est. s (1 thread) | measured s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in data["rows"]:
        if "error" in r:
            lines.append(f"| {r['model']} | tune found no setting: {r['error'].split('error: ', 1)[-1]} | | | | | | | |")
            continue
        c = r["chosen"]
        flags = f"{'own/' if c['own_grids'] else ''}{c['n_bits']} / {c['rounding_bits']}, {c['ranges']}, {c['rounding']} {c['p_error']:.0e}"
        if c["requantize"]:
            flags += ", requantize"
        if c["layers"]:
            flags += ", " + ", ".join(c["layers"])
        drop = r["hold_float"] - r["hold_sim"]
        measured = f"{r['measured_s']:.2f}" if "measured_s" in r else "—"
        unit = "" if r["metric"] == "accuracy" else " (R²)"
        lines.append(
            f"| {r['model']}{unit} | {flags} | {r['float_val']:.2f} | {c.get('drop_estimate', float('nan')):.2f} / {c['drop_bound']:.2f} | {r['hold_float']:.2f} → {r['hold_clear']:.2f} / {r['hold_sim']:.2f} | {drop:+.2f} | {c['pbs_count']} | {c['est_ms'] / 1e3:.2f} | {measured} |"
        )
    within = sum(1 for r in data["rows"] if "error" not in r and r["hold_float"] - r["hold_sim"] <= 1.0)
    lines.append("")
    lines.append(
        f"Within 1 point of float on the hold-out half: {within} of the {len(data['rows'])} models run "
        f"({len(models())} shipped; the script records each model as it finishes, so a partial run shows here)."
    )
    table = "\n".join(lines)
    put_table(DOC, "tune", table)


def main():
    if "--render" not in sys.argv:
        import datetime

        only = None
        if "--only" in sys.argv:
            only = sys.argv[sys.argv.index("--only") + 1].split(",")
        old = {r["model"]: r for r in json.load(open(OUT))["rows"]} if os.path.exists(OUT) else {}
        here = machine()

        def save():
            data = {
                "date": datetime.date.today().isoformat(),
                "machine": here,
                "rows": [old[k] for k in sorted(old)],
            }
            json.dump(data, open(OUT, "w"), indent=1)

        with tempfile.TemporaryDirectory() as tmp:
            for p in models():
                if only and os.path.basename(p) not in only:
                    continue
                try:
                    row = run_model(p, tmp)
                    row["machine"] = here
                    row["date"] = datetime.date.today().isoformat()
                    old[os.path.basename(p)] = row
                except RuntimeError as e:
                    print(f"{os.path.basename(p)}: {e}", file=sys.stderr, flush=True)
                    old[os.path.basename(p)] = {"model": os.path.basename(p), "error": str(e)}
                save()
    render(json.load(open(OUT)))


if __name__ == "__main__":
    main()
