"""Bootstrap kinds side by side (docs/results.md "Bootstrap kinds"): `fhec bench-pbs` on the
optimizer's classic set and tfhe's vetted sets (classic, multi-bit with grouping factors 2,
3 and 4, many-LUT on the classic ones) at 2, 4 and 6 bits, on 1 and 2 threads.

    python3 docs/results/bench_pbs.py            # needs target/release/fhec; ~10 min on 2 cores
    python3 docs/results/bench_pbs.py --render   # re-render from bench_pbs.json

Every bootstrap's result is checked by fhec (a wrong one is an error, not a row). A many-LUT
row at `p` bits reads `k` tables of one `p - log2 k`-bit input in one `p`-bit bootstrap; its
cost per table is the bootstrap's over `k`.
"""

import json
import os
import subprocess
import sys

from common import ROOT, machine, put_table

FHEC = os.environ.get("FHEC", os.path.join(ROOT, "target", "release", "fhec"))
OUT = os.path.join(ROOT, "docs", "results", "bench_pbs.json")
DOC = os.path.join(ROOT, "docs", "results.md")
BITS = "2,4,6"
REPS = 10


def short(name):
    for pre in ("V1_8_PARAM_",):
        if name.startswith(pre):
            name = name[len(pre):]
    return name.replace("_KS_PBS_GAUSSIAN_2M128", "")


def render(data):
    rows = data["rows"]
    groups = {}
    for r in rows:
        key = (r["bits"], r["source"], r["kind"])
        groups.setdefault(key, {"row": r})[r["threading"]] = r
    lines = [
        f"Measured on {data['machine']}, {data['date']}; `python3 docs/results/bench_pbs.py` reruns it "
        f"(`{data['command']}`).",
        "",
        "| bits | parameter set | kind | ms per table, 1 thread | ms per table, 2 threads (2 at once) | ms per bootstrap, 2 threads inside one | keygen (s) | p_error per bootstrap |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (bits, source, kind), g in groups.items():
        r = g["row"]
        one = g.get("1 thread")
        two = g.get("2 threads, 2 at once")
        inside = g.get("2 threads inside one")
        f = lambda x, key: f"{x[key]:.2f}" if x else "-"
        p = r["params"]
        desc = f"{short(source)} (n={p['lwe_dimension']}, k={p['glwe_dimension']}, N={p['polynomial_size']})"
        lines.append(
            f"| {bits} | {desc} | {kind} | {f(one, 'ms_per_table')} | {f(two, 'ms_per_table')} | {f(inside, 'ms_per_pbs')} | {r['keygen_s']:.1f} | {r['p_error']:.1e} |"
        )
    lines.append("")
    lines.append(
        "The optimizer's set is fhec's own search for a table fed by a dot product of squared norm 1 "
        "at 2^-40 per bootstrap; tfhe's sets are its vetted 2^-128 sets of message + carry = bits "
        "(their p_error column is the optimizer's formula for classic sets, tfhe's stated one for "
        "multi-bit sets). All are 128-bit secure."
    )
    table = "\n".join(lines)
    put_table(DOC, "pbs", table)


def main():
    if "--render" not in sys.argv:
        import datetime

        cmd = [FHEC, "bench-pbs", "--bits", BITS, "--vetted", "--multi-bit", "--many-lut",
               "--threads", "1,2", "--reps", str(REPS), "--json"]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
        data = {
            "date": datetime.date.today().isoformat(),
            "machine": machine(),
            "command": "fhec " + " ".join(cmd[1:]),
            "rows": rows,
        }
        json.dump(data, open(OUT, "w"), indent=1)
    render(json.load(open(OUT)))


if __name__ == "__main__":
    main()
