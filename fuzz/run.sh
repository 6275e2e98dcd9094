#!/usr/bin/env bash
# Runs every fuzz target for a bounded time: cargo-fuzz (libFuzzer with sanitizer coverage,
# `-s none`, so it builds on the stable toolchain). Seeds: fuzz/seeds/TARGET, the crashes
# found so far (fuzz/regressions/TARGET) and, for the ONNX and .npy targets, models/. New
# inputs go to a scratch corpus, never into the repo. A crash, a timeout (> 10 s for one
# input) or an allocation over 2 GiB fails the run; libFuzzer prints the input's path
# (fuzz/artifacts/TARGET/...): copy it to fuzz/regressions/TARGET/ once fixed.
#   usage: fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]      (default 45 s, all targets)
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-45}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(onnx npy compiled_model keys ciphertexts)
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked --version 0.13.2
fi
cargo fuzz build -O -s none
work="${FHEC_FUZZ_CORPUS:-$(mktemp -d)}"
for t in "${targets[@]}"; do
  mkdir -p "$work/$t" "regressions/$t" "seeds/$t"
  extra=()
  case "$t" in onnx | npy) extra=(../models) ;; esac
  echo "fuzz: $t for ${secs} s"
  log="$work/$t.log"
  status=0
  cargo fuzz run -O -s none "$t" "$work/$t" "seeds/$t" "regressions/$t" "${extra[@]}" -- \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1 ||
    status=$?
  grep -E "^(INFO: seed corpus|stat::number_of_executed_units|stat::new_units_added|stat::peak_rss_mb)" "$log" || true
  if [ "$status" -ne 0 ]; then
    grep -E -A4 "panicked at|ERROR: libFuzzer|SUMMARY|Failing input|Reproduce with" "$log" | cut -c1-300 >&2
    echo "fuzz: $t FAILED (exit $status); the input is under fuzz/artifacts/$t/" >&2
    exit 1
  fi
done
echo "fuzz: all targets ran ${secs} s without a crash"
