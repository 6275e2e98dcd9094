"""Every shipped model at `fhec compile`'s defaults, both rounding methods, before and after
a change (docs/results.md, "Every model, before and after").

    python3 docs/results/models.py --before OLD_FHEC            # table for docs/results.md
    python3 docs/results/models.py --before OLD_FHEC --cap 15   # measure plans up to 15 s
    python3 docs/results/models.py --before OLD_FHEC --rounding approximate --only digits_mlp
    python3 docs/results/models.py --render                     # re-render from models.json

Needs only python3's standard library, `target/release/fhec` (the "after" binary; FHEC
overrides it) and the "before" binary. For each model and rounding method, each binary
compiles the model on its calibration file (`--rounding-method`, every other setting at its
default) and reports its plan: bootstraps, the optimizer's estimate of one sample on one
thread, and the parameters. A plan estimated at most `--cap` seconds (default 15) is also
measured: `fhec bench --samples 2 --json` (keygen, evaluation keys' size expanded, one
sample's latency, and throughput of the two as one batch on every core; each sample checked
against clear mode). Run it on a quiet machine: the benches are timed. Larger plans show
their estimate only.
"""

import json
import os
import re
import subprocess
import sys
import tempfile

from common import ROOT, last_json, machine, models, put_table

AFTER = os.environ.get("FHEC", os.path.join(ROOT, "target", "release", "fhec"))
OUT = os.path.join(ROOT, "docs", "results", "models.json")
DOC = os.path.join(ROOT, "docs", "results.md")
# outputs that are not class scores (approximate rounding is compared by class elsewhere)
REGRESSION = {"diabetes_mlp", "digits_autoenc"}


def run(binary, *args):
    r = subprocess.run([binary, *args], cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "failed")
    return r.stdout + r.stderr


def plan(binary, prefix, rounding, tmp, cap):
    fhe = os.path.join(tmp, "m.fhe")
    text = run(binary, "compile", prefix + ".onnx", "--calib", prefix + "_calib.npy", "--rounding-method", rounding, "-o", fhe)
    boot = int(re.search(r"= (\d+) bootstraps per sample", text).group(1))
    est = float(re.search(r"([0-9.]+) s per sample", text).group(1))
    params = re.search(r"^parameters \([^)]*\): (.*?); security", text, re.M).group(1)
    row = {"bootstraps": boot, "est_s": est, "params": params}
    if est <= cap:
        b = last_json(run(binary, "bench", fhe, "--input", prefix + "_test_x.npy", "--samples", "2", "--json"))
        row.update(
            keygen_s=b["keygen_s"],
            key_mib=sum(b["server_key_bytes"].values()) / 2**20,
            latency_s=b["latency_s_median"],
            throughput=b["throughput_samples_per_s"],
            equal_clear=b["equal_clear"] == b["samples"] and b["batch_equal_clear"] == b["samples"],
            same_class=b["same_class_as_clear"] / b["samples"],
            threads=b["threads"],
        )
    return row


def render(data):
    lines = [
        f"Measured on {data['machine']}, {data['date']}; `python3 docs/results/models.py --before OLD_FHEC` reruns it (before: {data['before']}; after: {data['after']}).",
        "",
        "| model | rounding | bootstraps | est. s (1 thread) before → after | measured s before → after | samples/s (2 at once) before → after | keygen s before → after | eval. keys MiB (expanded) before → after | vs clear mode |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in data["rows"]:
        b, a = r.get("before"), r.get("after")
        if "error" in r:
            # the refusal up to what it reads (the full line names the fix)
            why = r["error"].removeprefix("error: ").split(": it reads")[0]
            lines.append(f"| {r['model']} | {r['rounding']} | refused: {why} | | | | | | |")
            continue

        def pair(key, fmt):
            if key not in a or key not in b:
                return "—"
            return f"{fmt.format(b[key])} → {fmt.format(a[key])}"

        boots = f"{a['bootstraps']}" if a["bootstraps"] == b["bootstraps"] else f"{b['bootstraps']} → {a['bootstraps']}"
        if "equal_clear" not in a:
            eq = "—"
        elif r["rounding"] == "exact":
            eq = "yes" if a["equal_clear"] and b["equal_clear"] else "NO"
        elif r["model"] in REGRESSION:
            eq = "— (regression)"
        else:
            # approximate rounding may move a table index by one: the class is what counts
            same = min(a.get("same_class", 0), b.get("same_class", 0))
            eq = f"same class {100 * same:.0f} %"
        lines.append(
            f"| {r['model']} | {r['rounding']} | {boots} | {pair('est_s', '{:.2f}')} | {pair('latency_s', '{:.2f}')} | {pair('throughput', '{:.3f}')} | {pair('keygen_s', '{:.1f}')} | {pair('key_mib', '{:.0f}')} | {eq} |"
        )
    table = "\n".join(lines)
    put_table(DOC, "models", table)


def main():
    if "--render" not in sys.argv:
        import datetime

        before = sys.argv[sys.argv.index("--before") + 1]
        cap = float(sys.argv[sys.argv.index("--cap") + 1]) if "--cap" in sys.argv else 15.0
        only = sys.argv[sys.argv.index("--only") + 1].split(",") if "--only" in sys.argv else None
        roundings = sys.argv[sys.argv.index("--rounding") + 1].split(",") if "--rounding" in sys.argv else ["exact", "approximate"]
        # a partial run (--only, --rounding) replaces its rows in the last run's file
        old = json.load(open(OUT))["rows"] if (only or "--rounding" in sys.argv) and os.path.exists(OUT) else []
        rows = []
        with tempfile.TemporaryDirectory() as tmp:
            for prefix in models():
                name = os.path.basename(prefix)
                if only and name not in only:
                    continue
                for rounding in roundings:
                    row = {"model": name, "rounding": rounding}
                    try:
                        row["before"] = plan(before, prefix, rounding, tmp, cap)
                        row["after"] = plan(AFTER, prefix, rounding, tmp, cap)
                    except RuntimeError as e:
                        row = {"model": name, "rounding": rounding, "error": str(e)}
                    print(json.dumps(row), flush=True)
                    rows.append(row)
        if old:
            fresh = {(r["model"], r["rounding"]): r for r in rows}
            rows = [fresh.get((r["model"], r["rounding"]), r) for r in old]
        data = {
            "date": datetime.date.today().isoformat(),
            "machine": machine(),
            "before": os.environ.get("BEFORE_NAME", os.path.basename(before)),
            "after": os.environ.get("AFTER_NAME", "this tree"),
            "cap_s": cap,
            "rows": rows,
        }
        json.dump(data, open(OUT, "w"), indent=1)
    render(json.load(open(OUT)))


if __name__ == "__main__":
    main()
