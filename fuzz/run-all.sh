#!/usr/bin/env bash
# A fuzz campaign: runs every target (or those named) for MINUTES each under
# AddressSanitizer, merges the inputs that found new coverage into
# fuzz/corpus/TARGET (the corpus tests/tests/fuzz_corpus.rs replays on
# stable), and prints one row per target: executions, executions per
# second, coverage (libFuzzer's `cov` edges and `ft` features) at the end,
# corpus entries before and after, and crashes.
#
#   fuzz/run-all.sh MINUTES [TARGET ...]
#
# MINUTES may be a fraction (0.5 is 30 s). Needs cargo-fuzz
# (`cargo install cargo-fuzz --locked`); AddressSanitizer takes a nightly
# flag, which RUSTC_BOOTSTRAP=1 (set here) lets the stable toolchain use. Each run's libFuzzer output is
# in fuzz/logs/TARGET.log; a crash leaves its input in
# fuzz/artifacts/TARGET/ and the script exits 1 after the table
# (reproduce with `cargo fuzz run TARGET fuzz/artifacts/TARGET/FILE`).
#
# RSS_LIMIT_MB (default 2048) is libFuzzer's -rss_limit_mb: a target that
# grows past it is a finding, as an input that takes more than
# TIMEOUT_SECONDS (default 10) is.
set -euo pipefail
cd "$(dirname "$0")"

if [ $# -lt 1 ]; then
  echo "usage: fuzz/run-all.sh MINUTES [TARGET ...]" >&2
  exit 2
fi
seconds=$(awk -v minutes="$1" 'BEGIN { s = int(minutes * 60); if (s < 1) exit 1; print s }') || {
  echo "MINUTES must be a positive number, not '$1'" >&2
  exit 2
}
shift
rss_limit_mb=${RSS_LIMIT_MB:-2048}
timeout_seconds=${TIMEOUT_SECONDS:-10}

export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "needs cargo-fuzz: cargo install cargo-fuzz --locked" >&2
  exit 2
fi

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

# One build for all targets, so the first run's time is its own.
cargo fuzz build --sanitizer address >/dev/null

mkdir -p logs
rows=()
crashed=0
for target in "${targets[@]}"; do
  corpus="corpus/$target"
  mkdir -p "$corpus"
  before=$(find "$corpus" -type f | wc -l)
  scratch=$(mktemp -d)
  log="logs/$target.log"
  status=0
  # New inputs go to the scratch directory (the first one named); the
  # committed corpus is read as seeds.
  cargo fuzz run --sanitizer address "$target" "$scratch" "$corpus" -- \
    -max_total_time="$seconds" -rss_limit_mb="$rss_limit_mb" \
    -timeout="$timeout_seconds" -print_final_stats=1 >"$log" 2>&1 || status=$?
  # Keep only what reaches new code (edges, not hit counts: counting hits
  # would commit hundreds of near-copies) in the committed corpus, which
  # the suite replays on every run.
  cargo fuzz run --sanitizer address "$target" "$corpus" "$scratch" -- \
    -merge=1 -use_counters=0 -rss_limit_mb="$rss_limit_mb" >"logs/$target.merge.log" 2>&1 || true
  rm -rf "$scratch"
  after=$(find "$corpus" -type f | wc -l)
  executions=$(awk '/^stat::number_of_executed_units:/ { print $2 }' "$log" | tail -1)
  per_second=$(awk '/^stat::average_exec_per_sec:/ { print $2 }' "$log" | tail -1)
  cov=$(grep -Eo 'cov: [0-9]+' "$log" | tail -1 | awk '{ print $2 }')
  ft=$(grep -Eo 'ft: [0-9]+' "$log" | tail -1 | awk '{ print $2 }')
  crashes=$(find "artifacts/$target" -type f 2>/dev/null | wc -l)
  if [ "$status" -ne 0 ] || [ "$crashes" -gt 0 ]; then
    crashed=1
  fi
  rows+=("$(printf '%-28s %6s %12s %9s %6s %7s %7s %6s %7s' \
    "$target" "$seconds" "${executions:-?}" "${per_second:-?}" "${cov:-?}" "${ft:-?}" \
    "$before" "$after" "$crashes")")
  echo "done: $target (exit $status)" >&2
done

printf '%-28s %6s %12s %9s %6s %7s %7s %6s %7s\n' \
  target seconds executions "exec/s" cov ft "corpus" "after" crashes
for row in "${rows[@]}"; do
  echo "$row"
done
exit "$crashed"
