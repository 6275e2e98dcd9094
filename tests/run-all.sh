#!/usr/bin/env bash
# Every test of the workspace, on one build (README's test command; CI runs it):
#   1. the Rust tests on the release build (the main job's build; fhec's own crates keep
#      their debug assertions and overflow checks there: Cargo.toml) of the default
#      members: fhec, fhec-ir, fhec-passes (the Python crate is built by maturin in step 2);
#   2. the Python package's tests: the wheel built from this build's profile with maturin
#      into a venv outside the repository (FHEC_VENV, default ~/.cache/fhec/venv), then
#      pytest (python/tests/).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --release

if [ -d python ]; then
    bash python/test.sh
fi
