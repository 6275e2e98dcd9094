#!/usr/bin/env bash
# The Python package's tests (README's test command runs this after the Rust tests):
#   1. a venv outside the repository (FHEC_VENV, default ~/.cache/fhec/venv) with maturin,
#      numpy, pytest, scikit-learn, onnx and tqdm;
#   2. the wheel, built by maturin into the workspace's target/ on the release profile, so
#      it reuses the Rust tests' build of fhec and its dependencies;
#   3. pytest python/tests (torch tests run when torch is in the venv: FHEC_VENV can point at
#      one that has it).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
venv="${FHEC_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/fhec/venv}"
if [ ! -x "$venv/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$venv"
fi
py="$venv/bin/python"
"$py" -m pip install -q --disable-pip-version-check \
    "maturin>=1.8,<2" "numpy>=1.21" "pytest>=7" "scikit-learn>=1.2" "onnx>=1.14" tqdm

rm -rf target/wheels
(cd python && "$venv/bin/maturin" build --release --out "$root/target/wheels" --interpreter "$py")
"$py" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps target/wheels/fhec-*.whl

# the `fhec` command the interoperability tests call (the Rust tests built it already)
cargo build --release --bin fhec
FHEC_BIN="$root/target/release/fhec" "$py" -m pytest -q python/tests "$@"
