"""The table "exports that work" (docs/exports.md): every common way a model reaches fhec,
compiled at the defaults, with the numbers fhec itself writes as JSON.

    python3 docs/results/exports.py            # run (release build first), write exports.json, render
    python3 docs/results/exports.py --render   # re-render docs/exports.md from exports.json
    python3 docs/results/exports.py --only cml_builtin,brevitas_qonnx   # rerun some rows

Needs only python3's standard library and `target/release/fhec` (`cargo build --release`).
Per row: the float run against the framework's own outputs (`fhec run --mode float
--reference`, largest difference relative to the largest output), a default compile
(`fhec MODEL.onnx --calib`), clear mode on the test split (`fhec run --mode clear --json`),
and one encrypted sample (`fhec bench --samples 1 --json`: same class as clear mode,
bootstraps, latency on this machine's threads). The framework's accuracy is its own run on
the same test split (torch, Brevitas, onnxruntime's int8 run, Concrete ML's clear mode).
The models and their generators: models/exports/make_exports.py, models/make_models.py.
"""

import json
import os
import platform
import subprocess
import sys
import tempfile

from common import ROOT, last_json, put_table

FHEC = os.environ.get("FHEC", os.path.join(ROOT, "target", "release", "fhec"))
OUT = os.path.join(ROOT, "docs", "results", "exports.json")
DOC = os.path.join(ROOT, "docs", "exports.md")

# (row name, how it was exported, model prefix, framework accuracy source)
ROWS = [
    ("torch 2.x default (dynamo, `.onnx.data`, batch fixed at 1)", "models/exports/torch_dynamo_cnn", "exports"),
    ("torch 2.x dynamo, opset 23 (RMSNormalization, Gelu, shape arithmetic)", "models/exports/torch_dynamo_rms", "exports"),
    ("torch dynamo with a dynamic batch", "models/exports/torch_dynamo_bc", "exports"),
    ("torch legacy default (`dynamo=False`, batch fixed at 1)", "models/exports/torch_legacy_silu", "exports"),
    ("Brevitas QONNX (`export_qonnx`, batch 1)", "models/exports/brevitas_qonnx", "exports"),
    ("Brevitas QCDQ (`export_onnx_qcdq`, batch 1)", "models/exports/brevitas_qcdq", "exports"),
    ("onnxruntime int8 QDQ (`quantize_static`)", "models/digits_mlp_qdq", "models"),
    ("onnxruntime int8 QOperator (`quantize_static`)", "models/digits_mlp_qop", "models"),
    ("Concrete ML built-in `NeuralNetClassifier` export", "models/exports/cml_builtin", "cml"),
    ("`fhec train` (QONNX, 3-bit)", None, "train"),
]


def fhec(*args):
    r = subprocess.run([FHEC, *args], cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"fhec {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


def framework_accuracy(prefix, kind):
    name = os.path.basename(prefix)
    if kind == "models":
        m = json.load(open(os.path.join(ROOT, "models", "manifest.json")))
        return next(e["float_accuracy"] for e in m["models"] if e["name"] == name)
    m = json.load(open(os.path.join(ROOT, "models", "exports", "manifest.json")))
    e = m[name]
    return e.get("framework_clear_accuracy", e["accuracy"])


def run_row(label, prefix, kind, tmp):
    if kind == "train":
        # fhec's own QAT network on the digits split of models/data (raw features)
        prefix = os.path.join(tmp, "fhec_train")
        fhec("train", "--input", "models/data/digits_train_x.npy", "--labels", "models/data/digits_train_y.npy", "--out", prefix + ".onnx")
        x, y = "models/data/digits_test_x.npy", "models/data/digits_test_y.npy"
        calib = None
        ref = None
    else:
        x, y, calib = prefix + "_test_x.npy", prefix + "_test_y.npy", prefix + "_calib.npy"
        ref = prefix + "_test_out.npy"
    onnx = prefix + ".onnx"
    fhe = os.path.join(tmp, os.path.basename(prefix) + ".fhe")
    rep = os.path.join(tmp, os.path.basename(prefix) + ".json")
    row = {"row": label, "model": os.path.relpath(onnx, ROOT) if kind != "train" else "fhec train"}
    args = ["run", onnx, "--input", x, "--labels", y, "--mode", "float", "--json"]
    if ref:
        args += ["--reference", ref]
    f = last_json(fhec(*args))
    row["float_accuracy"] = f["accuracy_float"]
    row["max_rel_diff"] = f.get("max_rel_diff_vs_reference")
    compile_args = [onnx, "-o", fhe, "--report", rep] + (["--calib", calib] if calib else [])
    fhec(*compile_args)
    report = json.load(open(rep))
    row["auto"] = report.get("auto", [])
    row["import_notes"] = report.get("import_notes", [])
    c = last_json(fhec("run", fhe, "--input", x, "--labels", y, "--mode", "clear", "--json"))
    row["clear_accuracy"] = c["accuracy_clear"]
    row["framework_accuracy"] = row["float_accuracy"] if kind == "train" else framework_accuracy(prefix, kind)
    b = last_json(fhec("bench", fhe, "--input", x, "--samples", "1", "--json"))
    row.update(
        bootstraps=b["pbs_count"],
        latency_s=b["latency_s_median"],
        same_class=b["same_class_as_clear"],
        equal_clear=b["equal_clear"],
        rounding=b["rounding"],
        threads=b["threads"],
        server_key_mib=b["server_key_bytes"]["main_bsk"] / 2**20,
    )
    print(json.dumps(row), flush=True)
    return row


def machine():
    cpu = ""
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "system": platform.platform(), "fhec": fhec("--version").strip()}


def render(data):
    # rows rerun with --only keep their own machine, version and date (older rows: the file's)
    m = data["machine"]
    runs = {}
    for r in data["rows"]:
        key = (r.get("cpu", m["cpu"]), r.get("cores", m["cores"]), r.get("fhec", m["fhec"]), r.get("date", data["date"]))
        runs.setdefault(key, []).append(r["model"].split("/")[-1].removesuffix(".onnx") if r.get("model") else "train")
    where = "; ".join(
        f"{cpu} ({cores} cores), {v}, {d}" + (f" ({', '.join(names)})" if len(runs) > 1 else "")
        for (cpu, cores, v, d), names in sorted(runs.items(), key=lambda kv: -len(kv[1]))
    )
    lines = [
        f"Measured on {where}; `python3 docs/results/exports.py` reruns it.",
        "",
        "| export | float vs framework (max rel. diff) | framework accuracy | fhec clear accuracy (defaults) | 1 encrypted sample = clear class | bootstraps | latency (s, 1 sample) | what compile chose |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in data["rows"]:
        diff = "—" if r["max_rel_diff"] is None else f"{r['max_rel_diff']:.1e}"
        def chose(a):
            # "no exact plan exists …; compiled as with FLAGS, the cheapest plan that does (…)"
            if "compiled as with " in a:
                return "no exact plan: " + a.split("compiled as with ")[1].split(", the cheapest")[0]
            return a.split(" (")[0]

        auto = "; ".join(chose(a) for a in r["auto"]) or "as asked (exact rounding)"
        if r["import_notes"]:
            auto += "; Concrete ML's weight quantizers read its way"
        lines.append(
            f"| {r['row']} | {diff} | {100 * r['framework_accuracy']:.2f} % | {100 * r['clear_accuracy']:.2f} % | "
            f"{'yes' if r['same_class'] == 1 else 'no'} | {r['bootstraps']} ({r['rounding']}) | {r['latency_s']:.2f} | {auto} |"
        )
    table = "\n".join(lines)
    put_table(DOC, "exports", table)


def main():
    if "--render" not in sys.argv:
        import datetime

        only = sys.argv[sys.argv.index("--only") + 1].split(",") if "--only" in sys.argv else None
        today, here = datetime.date.today().isoformat(), machine()
        if only:
            # rerun the rows whose model is named, keep the others as measured (a row without
            # its own machine and date has the file's: render)
            data = json.load(open(OUT))
            with tempfile.TemporaryDirectory() as tmp:
                for i, (label, p, kind) in enumerate(ROWS):
                    if os.path.basename(p or "train") in only:
                        row = run_row(label, os.path.join(ROOT, p) if p else None, kind, tmp)
                        data["rows"][i] = dict(row, date=today, fhec=here["fhec"], cpu=here["cpu"], cores=here["cores"])
        else:
            with tempfile.TemporaryDirectory() as tmp:
                rows = [run_row(label, os.path.join(ROOT, p) if p else None, kind, tmp) for label, p, kind in ROWS]
            data = {"date": today, "machine": here, "rows": rows}
        json.dump(data, open(OUT, "w"), indent=1)
    render(json.load(open(OUT)))


if __name__ == "__main__":
    main()
