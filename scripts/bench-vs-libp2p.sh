#!/usr/bin/env bash
# meshsync's benchmarks beside rust-libp2p's on the same workloads, on this
# machine, as one table of ratios.
#
#   scripts/bench-vs-libp2p.sh [--quick] [--libp2p-threads N]
#
# Builds both in release: meshsync with cargo in this repository (its
# usual target directory, or $CARGO_TARGET_DIR), the libp2p peer in
# benches/libp2p-peer with its own target directory there (several minutes
# the first time, for libp2p). Then runs each pair of workloads back to
# back with the same parameters, meshsync first:
#
#   throughput   1 GiB (256 MiB with --quick) in 1 MiB answers, one connection
#   handshakes   2000 connect-and-close cycles (500 with --quick)
#   gossip       30 nodes, 1 KiB messages, degree 6, seed 42, at 50/s and
#                200/s: 1000 messages each (250 with --quick)
#
# and prints one Markdown table on stdout: each figure, meshsync's over
# libp2p's, and the goal for the ratio (docs/performance.md says how to read
# each). Progress and build output go to stderr; every run's JSON and stderr
# stay in the directory printed at the end.
#
# The libp2p peer runs on one tokio worker thread unless --libp2p-threads
# says otherwise (docs/performance.md says which threads each side uses).
#
# A goal missed is a finding, not a failure: the exit status is 0 then. It
# is non-zero only when a build or a run fails. Needs jq or python3 to read
# the JSON. Not run in CI (a build of libp2p takes minutes); .ci/run only
# checks this script's syntax.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

quick=0
libp2p_threads=1
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --libp2p-threads)
      libp2p_threads=${2:?--libp2p-threads needs a number}
      shift
      ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "bench-vs-libp2p: unknown argument $1 (see --help)" >&2
      exit 2
      ;;
  esac
  shift
done

if [ "$quick" = 1 ]; then
  throughput_bytes=$((256 << 20))
  handshake_count=500
  gossip_messages=250
else
  throughput_bytes=$((1 << 30))
  handshake_count=2000
  gossip_messages=1000
fi
gossip_rates="50 200"
gossip_flags=(--nodes 30 --size 1024 --degree 6 --seed 42 --warmup-secs 5 --drain-secs 10
  --messages "$gossip_messages")
# A bound on each run, beyond the deadlines the benchmarks keep themselves.
run_timeout_secs=1200

if command -v jq >/dev/null; then
  # field FILE NAME: the JSON field NAME of FILE's one object, or "null".
  field() { jq -r --arg name "$2" '.[$name] // "null"' "$1"; }
elif command -v python3 >/dev/null; then
  field() {
    python3 -c 'import json, sys
value = json.load(open(sys.argv[1])).get(sys.argv[2])
print("null" if value is None else value)' "$1" "$2"
  }
else
  echo "bench-vs-libp2p: needs jq or python3 to read the benchmarks' JSON" >&2
  exit 1
fi

echo "== building meshsync (cargo build --release -p meshsync-mio)" >&2
cargo build --release --locked -p meshsync-mio >&2
meshsync="${CARGO_TARGET_DIR:-$root/target}/release/meshsync"
echo "== building the libp2p peer (benches/libp2p-peer, its own target directory)" >&2
(cd benches/libp2p-peer &&
  CARGO_TARGET_DIR="$root/benches/libp2p-peer/target" cargo build --release --locked >&2)
peer="$root/benches/libp2p-peer/target/release/libp2p-peer"

results=$(mktemp -d "${TMPDIR:-/tmp}/bench-vs-libp2p.XXXXXX")

# run NAME COMMAND...: runs one benchmark, its JSON to $results/NAME.json.
run() {
  local name=$1
  shift
  echo "== $name: $*" >&2
  if ! timeout "$run_timeout_secs" "$@" >"$results/$name.json" 2>"$results/$name.stderr"; then
    echo "bench-vs-libp2p: $name failed; the end of its stderr:" >&2
    tail -n 20 "$results/$name.stderr" >&2
    exit 1
  fi
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)
run throughput-meshsync "$meshsync" bench throughput --bytes "$throughput_bytes" --json
run throughput-libp2p "$peer" throughput --bytes "$throughput_bytes" --threads "$libp2p_threads"
run handshakes-meshsync "$meshsync" bench handshakes --count "$handshake_count" --json
run handshakes-libp2p "$peer" handshakes --count "$handshake_count" --threads "$libp2p_threads"
for rate in $gossip_rates; do
  run "gossip-$rate-meshsync" "$meshsync" bench gossip --rate "$rate" "${gossip_flags[@]}" --json
  run "gossip-$rate-libp2p" "$peer" gossip --rate "$rate" "${gossip_flags[@]}" --threads "$libp2p_threads"
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)

# row LABEL FIELD PAIR GOAL_OP GOAL: one line of the table, meshsync's FIELD
# of $results/PAIR-meshsync.json over libp2p's, checked against the goal
# (GOAL_OP is ">=" or "<="; "-" for a figure shown for context, "none"
# for one whose ratio means nothing).
row() {
  local label=$1 name=$2 pair=$3 op=$4 goal=$5
  local ours theirs
  ours=$(field "$results/$pair-meshsync.json" "$name")
  theirs=$(field "$results/$pair-libp2p.json" "$name")
  awk -v label="$label" -v ours="$ours" -v theirs="$theirs" -v op="$op" -v goal="$goal" '
    function figure(x) { return x == "null" ? "n/a" : sprintf(x >= 100 ? "%.0f" : "%.3g", x) }
    BEGIN {
      known = ours != "null" && theirs != "null" && theirs + 0 != 0
      ratio = known ? ours / theirs : 0
      shown = op == "none" ? "-" : known ? sprintf("%.2f", ratio) : "n/a"
      if (op == "-" || op == "none") { target = "-"; met = "-" }
      else {
        target = op " " goal
        met = !known ? "n/a" : (op == ">=" ? ratio >= goal : ratio <= goal) ? "yes" : "no"
      }
      printf "| %-44s | %9s | %9s | %6s | %6s | %4s |\n", label, figure(ours), figure(theirs), shown, target, met
    }'
}

cpu_model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo 2>/dev/null | head -n 1)
libp2p_version=$(awk '/^name = "libp2p"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' \
  benches/libp2p-peer/Cargo.lock)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
mode=$([ "$quick" = 1 ] && echo ", --quick" || true)
echo "meshsync $commit against rust-libp2p $libp2p_version ($libp2p_threads tokio worker thread(s)), $(date -u +%Y-%m-%d)$mode"
echo "machine: $(nproc) cores, ${cpu_model:-unknown CPU}; load average $load_before before, $load_after after"
echo
printf '| %-44s | %9s | %9s | %6s | %6s | %4s |\n' workload meshsync libp2p ratio goal met
printf '|%s|%s|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..46})" ----------: ----------: -------: -------: ------
row "throughput: MB per CPU-second" mb_per_cpu_second throughput ">=" 2
row "throughput: MB per second (context)" mb_per_second throughput - -
row "handshakes: CPU microseconds per connection" cpu_us_per_connection handshakes "<=" 0.7
row "handshakes: per second (context)" tcp_handshakes_per_second handshakes - -
for rate in $gossip_rates; do
  row "gossip $rate/s: CPU microseconds per delivery" cpu_us_per_delivery "gossip-$rate" "<=" 0.3
  row "gossip $rate/s: duplicates per delivery" duplicates_per_delivery "gossip-$rate" "<=" 1
  row "gossip $rate/s: delivery ratio (context)" delivery_ratio "gossip-$rate" - -
  row "gossip $rate/s: latency p50 ms (context)" latency_p50_ms "gossip-$rate" - -
  row "gossip $rate/s: latency p99 ms (context)" latency_p99_ms "gossip-$rate" - -
  row "gossip $rate/s: cores busy (context)" cpu_cores "gossip-$rate" - -
  row "gossip $rate/s: other processes' cores" other_cpu_cores "gossip-$rate" none -
done
echo
# What the machine did besides: a run that shared it measured less well.
# meshsync reports it for gossip only (the rows above).
others=""
for pair in throughput handshakes; do
  others+=" $pair $(field "$results/$pair-libp2p.json" other_cpu_cores |
    awk '{ printf($1 == "null" ? "n/a" : "%.2f", $1) }'),"
done
echo "other processes' cores during libp2p's runs:${others%,}"
for rate in $gossip_rates; do
  ours_edges=$(field "$results/gossip-$rate-meshsync.json" edges)
  their_edges=$(field "$results/gossip-$rate-libp2p.json" edges)
  if [ "$ours_edges" != "$their_edges" ]; then
    echo "warning: gossip at $rate/s ran on different graphs ($ours_edges and $their_edges edges)"
  fi
done
echo "every run's JSON and stderr: $results" >&2
