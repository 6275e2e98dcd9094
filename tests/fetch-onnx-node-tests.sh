#!/usr/bin/env bash
# Fetches ONNX's backend node tests (the `onnx==1.22.0` wheel ships them; 1.23 does not) into
# a cache folder outside the repo, and prints that folder. Idempotent.
#   FHEC_ONNX_NODE_DIR  overrides the folder (default: ~/.cache/fhec/onnx-1.22.0-node)
set -euo pipefail
dest="${FHEC_ONNX_NODE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/fhec/onnx-1.22.0-node}"
if [ -f "$dest/.complete" ]; then
  echo "$dest"
  exit 0
fi
py=$(command -v python3 || command -v python)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$py" -m pip download --quiet --no-deps --only-binary=:all: onnx==1.22.0 -d "$tmp" >&2
whl=$(ls "$tmp"/onnx-1.22.0-*.whl | head -n 1)
"$py" - "$whl" "$dest" <<'PY'
import os, sys, zipfile
whl, dest = sys.argv[1], sys.argv[2]
prefix = "onnx/backend/test/data/node/"
with zipfile.ZipFile(whl) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            out = os.path.join(dest, name[len(prefix):])
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with z.open(name) as src, open(out, "wb") as dst:
                dst.write(src.read())
PY
touch "$dest/.complete"
echo "$dest"
