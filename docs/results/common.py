"""What the scripts under docs/results/ share (python3's standard library only): the shipped
models with a test split, the last JSON line of a command's output, the machine a table
was measured on, and writing a table between its markers in a document."""

import glob
import json
import os
import platform

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def models():
    """Every shipped model with calibration data and a test split, as path prefixes."""
    out = []
    for pattern in ("models/*.onnx", "models/exports/*.onnx"):
        for p in sorted(glob.glob(os.path.join(ROOT, pattern))):
            prefix = p[: -len(".onnx")]
            if os.path.exists(prefix + "_test_x.npy") and os.path.exists(prefix + "_calib.npy"):
                out.append(prefix)
    return out


def last_json(text):
    """The last line of `text` that is a JSON object (`fhec … --json` prints it last)."""
    return json.loads([l for l in text.splitlines() if l.startswith("{")][-1])


def machine():
    """`CPU model, N cores`, as the tables' headers say it."""
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
    return f"{cpu}, {os.cpu_count()} cores"


def put_table(doc, name, table):
    """Replaces what stands between `<!-- table:NAME -->` and `<!-- /table:NAME -->` in `doc`
    with `table`."""
    text = open(doc).read()
    a, b = f"<!-- table:{name} -->", f"<!-- /table:{name} -->"
    i, j = text.index(a) + len(a), text.index(b)
    open(doc, "w").write(text[:i] + "\n" + table + "\n" + text[j:])
