#!/usr/bin/env bash
# Every simulator scenario at a small size over a range of seeds: one
# `meshsync-sim campaign` per scenario, each seed a deterministic run, its
# summary in OUT/SCENARIO.json and its summary line printed as it ends.
# Exits 1 if any run failed; each failing seed's replay command is in the
# campaign's output and in its JSON.
#
#   scripts/sim-sweep.sh [--seeds A..B] [--jobs N] [--out DIR] [--sim PATH] [--only NAME,NAME...]
#   scripts/sim-sweep.sh --speed [--seeds N] [--out DIR] [--sim PATH] [--only NAME,NAME...]
#
# Defaults: seeds 1..20, 2 jobs, OUT a fresh temporary directory, the release
# build of meshsync-sim (built if missing). The sizes are small versions of
# each story (see each scenario's module docs); one seed of every scenario
# takes about 50 s of one core, half of it in churn, late-joiner,
# hostile-servers, dht-eclipse, restart-recall and slow-readers.
#
# --speed measures instead how fast the simulator runs each scenario at its
# default size: one run each (seed 1 unless --seeds names one), one after
# another on one core, one line each with the virtual seconds, the wall
# seconds, virtual seconds per wall second, events per wall second, the
# share of wall time spent setting the world up before the first event
# (signing chains, building nodes), and the trace hash's first 12 digits
# (two builds whose nodes behave alike agree on it). It takes several
# minutes, most of them in gossip-1k, gossip-blocks and churn.
set -euo pipefail
cd "$(dirname "$0")/.."

SEEDS=1..20
JOBS=2
OUT=""
SIM=""
ONLY=""
SPEED=""
while [ $# -gt 0 ]; do
  case "$1" in
    --speed) SPEED=1; shift ;;
    --seeds) SEEDS="$2"; shift 2 ;;
    --jobs) JOBS="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --sim) SIM="$2"; shift 2 ;;
    --only) ONLY="$2"; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
if [ -z "$SIM" ]; then
  cargo build --release -q -p meshsync-sim
  SIM=target/release/meshsync-sim
fi
OUT=${OUT:-$(mktemp -d -t sim-sweep.XXXXXX)}
mkdir -p "$OUT"

# scenario, then its small world's flags.
SIZES=(
  "connect --nodes 20 --duration 10s"
  "request-flood --duration 20s"
  "unresponsive-peer --duration 20s"
  "static-peer-restart"
  "gossip-1k --nodes 100 --duration 5s"
  "gossip-blocks --nodes 30 --duration 4s"
  "gossip-spam --nodes 50 --duration 5s"
  "gossip-eclipse --nodes 50 --duration 5s"
  "gossip-withhold --nodes 50 --duration 5s"
  "cold-boot --nodes 50 --duration 5s"
  "slow-readers --nodes 50 --duration 5s"
  "prune-flood --nodes 50 --duration 5s"
  "late-joiner --nodes 11"
  "hostile-servers --nodes 11"
  "partition-heal --nodes 10"
  "crash-restart --nodes 8 --duration 20s"
  "junk-blocks --duration 20s"
  "budget-sybils --duration 20s"
  "sync-liars --duration 30s"
  "chaos --nodes 8 --duration 20s"
  "discovery --nodes 60"
  "restart-recall"
  "churn --nodes 50 --duration 6m"
  "dht-eclipse --nodes 50"
  "handshake-flood"
)

# The value of a top-level number field in a one-line JSON summary.
field() {
  sed -E "s/.*\"$1\":([0-9.eE+-]+).*/\1/" "$2"
}

# One run of `name` at its default size; prints its line of the table.
speed_line() {
  local name=$1 json="$OUT/$1.json"
  "$SIM" run --scenario "$name" --seed "${SEEDS%%..*}" --json >"$json" 2>/dev/null || true
  if ! grep -q '"wall_seconds"' "$json"; then
    echo "$name: no summary (see $json)"
    return
  fi
  awk -v name="$name" \
    -v virtual="$(field virtual_seconds "$json")" \
    -v wall="$(field wall_seconds "$json")" \
    -v setup="$(field setup_wall_seconds "$json")" \
    -v events="$(field events "$json")" \
    -v trace="$(sed -E 's/.*"trace_hash":"([0-9a-f]{12}).*/\1/' "$json")" \
    'BEGIN { printf "%-20s %9.1f %9.2f %12.2f %12.0f %7.1f%% %s\n",
             name, virtual, wall, virtual / wall, events / wall, 100 * setup / wall, trace }'
}

if [ -n "$SPEED" ]; then
  printf '%-20s %9s %9s %12s %12s %8s %s\n' scenario virtual_s wall_s virtual/wall events/s setup trace
fi
failed=0
for line in "${SIZES[@]}"; do
  read -r name flags <<<"$line"
  if [ -n "$ONLY" ] && [[ ",$ONLY," != *",$name,"* ]]; then
    continue
  fi
  if [ -n "$SPEED" ]; then
    speed_line "$name"
    continue
  fi
  # shellcheck disable=SC2086 # the flags are words
  if ! "$SIM" campaign --scenario "$name" $flags --seeds "$SEEDS" --jobs "$JOBS" \
    --json "$OUT/$name.json" >"$OUT/$name.out" 2>/dev/null; then
    failed=1
  fi
  grep -E '^(campaign|failing seeds)' "$OUT/$name.out" || echo "campaign $name: no summary (see $OUT/$name.out)"
done
if [ -n "$SPEED" ]; then
  echo "summaries: $OUT"
  exit 0
fi
echo "summaries and replay commands: $OUT"
exit "$failed"
