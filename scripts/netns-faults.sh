#!/usr/bin/env bash
# Six real `meshsync node` processes, each in its own network namespace with
# its own address on one bridge, through the faults of a real network:
#
#   (a) a 3|3 partition, then heal: every head equal within HEAL_BOUND_SECS;
#   (b) kill -9 during range sync, restart on the data directory: no
#       durable block lost, and it catches up;
#   (c) SIGSTOP of a peer: the others drop it as silent and keep producing;
#       SIGCONT: it rejoins and catches up;
#   (d) 10 % of one node's inbound packets dropped: it stays synced.
#
# Faults are nftables rules inside a namespace (this kernel has no netem, so
# there is no added delay). Two nodes hold the genesis's two proposer keys,
# one on each side of the partition. The finality depth (256 slots, the
# most a genesis allows) is kept above the whole run's length in slots (1 s
# slots quick, 2 s in full), so neither side of the partition finalizes its
# fork and no block is pruned while (b) counts them.
#
#   scripts/netns-faults.sh [--quick] [--meshsync PATH] [--keep]
#
# --quick shortens every phase (what .ci/run runs, about 4 minutes);
# without it each fault lasts 60 s (about 8 minutes). --meshsync names the
# binary (default: target/release/meshsync, built if missing); --keep
# leaves the work directory (logs, data directories) for reading.
#
# Needs root, iproute2 and nftables. Where a network namespace cannot be
# created (not root, no `ip`, a sandbox that forbids it) it prints why and
# exits 0: there is nothing to test there. Every check that fails prints
# what it saw and the script exits 1; every wait has a deadline.
set -euo pipefail

quick=0
keep=0
meshsync=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --keep) keep=1 ;;
    --meshsync)
      meshsync=${2:?--meshsync needs a path}
      shift
      ;;
    *)
      echo "usage: scripts/netns-faults.sh [--quick] [--meshsync PATH] [--keep]" >&2
      exit 2
      ;;
  esac
  shift
done
repo=$(cd "$(dirname "$0")/.." && pwd)

skip() {
  echo "netns-faults: skipped: $1"
  exit 0
}
[ "$(id -u)" = 0 ] || skip "needs root to create network namespaces"
command -v ip >/dev/null || skip "no \`ip\` (iproute2)"
if ! command -v nft >/dev/null; then
  echo "netns-faults: needs nftables for its drop rules (apt-get install nftables)" >&2
  exit 2
fi

if [ -z "$meshsync" ]; then
  meshsync=$repo/target/release/meshsync
  [ -x "$meshsync" ] || (cd "$repo" && cargo build --release --locked -p meshsync-mio --bin meshsync)
fi
[ -x "$meshsync" ] || {
  echo "netns-faults: no binary at $meshsync" >&2
  exit 2
}
meshsync=$(cd "$(dirname "$meshsync")" && pwd)/$(basename "$meshsync")

if [ $quick = 1 ]; then
  mode=quick
  slot_ms=1000
  partition_secs=10
  stop_secs=30
  silence_secs=20
  drop_secs=20
  behind_secs=120
else
  mode=full
  slot_ms=2000
  partition_secs=60
  stop_secs=60
  silence_secs=30
  drop_secs=60
  behind_secs=260
fi
readonly NODES=6
readonly FINALITY_DEPTH=256
readonly BODY_BYTES=65536
readonly PORT=9000
readonly METRICS_PORT=9100
# Bounds: every head equal within this after a heal, a restart or SIGCONT.
readonly HEAL_BOUND_SECS=30
# A node under 10 % inbound loss may trail the others' head by this many slots.
readonly DROP_LAG_SLOTS_MAX=2
# Inbound bytes per second the syncing node gets in (b), so that its range
# sync lasts long enough to be cut short. It is down for about 120 slots
# (nearly two 64-slot range-sync batches), so that once the first batch is
# written at least one more is still on its way when the kill comes; at
# 70 slots the second, small, batch sometimes landed before the kill.
readonly SYNC_RATE_KBYTES=1024
# The longest any start-up, mesh or condition wait lasts.
readonly WAIT_SECS=60

# Names unique to this run: the bridge and veth names must fit in 15 bytes.
tag=$(($$ % 100000))
bridge=msb$tag
subnet=10.$((200 + $$ % 50)).$(($$ % 250)).
work=$(mktemp -d /tmp/netns-faults.XXXXXX)
declare -a pids
failed=0

ns() { echo "ms${tag}n$1"; }
ip_of() { echo "${subnet}$1"; }

cleanup() {
  set +e
  for i in $(seq 1 $NODES); do
    pid=${pids[$i]:-}
    if [ -n "$pid" ]; then
      kill -CONT "$pid" 2>/dev/null
      kill -9 "$pid" 2>/dev/null
      wait "$pid" 2>/dev/null
    fi
    ip netns del "$(ns "$i")" 2>/dev/null
  done
  ip link del "$bridge" 2>/dev/null
  if [ $keep = 1 ] || [ $failed = 1 ]; then
    echo "netns-faults: logs and data in $work"
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT

if ! ip netns add "$(ns 1)" 2>"$work/netns.err"; then
  skip "cannot create a network namespace: $(head -c 200 "$work/netns.err")"
fi
ip link add "$bridge" type bridge
ip addr add "$(ip_of 254)/24" dev "$bridge"
ip link set "$bridge" up
for i in $(seq 1 $NODES); do
  [ "$i" = 1 ] || ip netns add "$(ns "$i")"
  ip link add "${bridge}v$i" type veth peer name eth0 netns "$(ns "$i")"
  ip link set "${bridge}v$i" master "$bridge" up
  ip -n "$(ns "$i")" addr add "$(ip_of "$i")/24" dev eth0
  ip -n "$(ns "$i")" link set eth0 up
  ip -n "$(ns "$i")" link set lo up
done

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
fail() {
  failed=1
  echo "FAIL: $*" >&2
  exit 1
}

# One scrape of node $1's metrics; empty if it does not answer.
scrape() {
  local out=""
  if exec 3<>"/dev/tcp/$(ip_of "$1")/$METRICS_PORT" 2>/dev/null; then
    printf 'GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n' >&3
    out=$(timeout 5 cat <&3 || true)
    exec 3<&-
  fi
  printf '%s\n' "$out"
}
# Metric $2 of node $1 (the sample whose name and labels are exactly $2), or 0.
metric() {
  scrape "$1" | awk -v name="$2" '$1 == name { value = $2 } END { print value + 0 }'
}
peers_of() {
  local samples
  samples=$(scrape "$1")
  awk '$1 ~ /^meshsync_peers\{direction=/ { sum += $2 } END { print sum + 0 }' <<<"$samples"
}

# "SLOT ROOT" of each of node $1's last $2 status lines, newest last.
heads_of() {
  grep -a "status: peers" "$work/n$1.log" | tail -n "$2" |
    sed -nE 's/.*head slot ([0-9]+) \(root ([0-9a-f]+)\).*/\1 \2/p'
}
head_slot_of() { heads_of "$1" 1 | awk '{ print $1 + 0 }'; }
head_root_of() { heads_of "$1" 1 | awk '{ print $2 }'; }

# The newest head (SLOT ROOT) at slot >= $1 that every node in the rest of
# the arguments logged in its last 4 status lines (4 s at one a second),
# or nothing: two nodes that logged the same root at the same slot are on
# one chain there.
common_head() {
  local min_slot=$1
  shift
  local count=$#
  for i in "$@"; do heads_of "$i" 4 | sort -u; done |
    awk -v n="$count" -v min="$min_slot" '
      $1 >= min { seen[$0]++ }
      END {
        best = -1
        for (h in seen) if (seen[h] == n) { split(h, p, " "); if (p[1] + 0 > best) { best = p[1] + 0; head = h } }
        if (best >= 0) print head
      }'
}

# Waits at most $1 s for command $2... to succeed; 1 if it never did.
wait_for() {
  local deadline=$(($(date +%s) + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt $deadline ] || return 1
    sleep 0.2
  done
}
has_common_head() { [ -n "$(common_head "$@")" ]; }
all_nodes() { seq 1 $NODES; }
has_peers() { [ "$(peers_of "$1")" -ge "$2" ]; }

echo "netns-faults ($mode): $NODES nodes in network namespaces on ${subnet}0/24, 2 proposers, slot $slot_ms ms, $((BODY_BYTES / 1024)) KiB bodies, --peer-silence-secs $silence_secs"

"$meshsync" genesis --proposers 2 --out "$work/net" --slot-ms $slot_ms \
  --network-id 77 --finality-depth $FINALITY_DEPTH >/dev/null
declare -a ids
for i in $(all_nodes); do
  ids[$i]=$("$meshsync" keygen --out "$work/n$i.key")
done

# Node 1 holds proposer key 0 (side A: nodes 1-3), node 4 key 1 (side B:
# nodes 4-6). Each node keeps every lower-numbered node as a static peer, so
# every pair is one connection that its higher end redials after a drop.
start_node() {
  local i=$1
  local args=(node --listen "$(ip_of "$i"):$PORT" --key "$work/n$i.key"
    --genesis "$work/net/genesis.toml" --data-dir "$work/n$i-data"
    --metrics "$(ip_of "$i"):$METRICS_PORT" --status-interval-secs 1
    --peer-silence-secs "$silence_secs" --no-discovery --body-bytes $BODY_BYTES)
  case $i in
    1) args+=(--proposer-key "$work/net/proposer-0.key") ;;
    4) args+=(--proposer-key "$work/net/proposer-1.key") ;;
  esac
  for j in $(seq 1 $((i - 1))); do
    args+=(--static-peer "$(ip_of "$j"):$PORT@${ids[$j]}")
  done
  RUST_LOG=info ip netns exec "$(ns "$i")" "$meshsync" "${args[@]}" \
    >/dev/null 2>>"$work/n$i.log" &
  pids[$i]=$!
}
for i in $(all_nodes); do start_node "$i"; done
started=$(now)
for i in $(all_nodes); do
  wait_for $WAIT_SECS has_peers "$i" $((NODES - 1)) ||
    fail "node $i has $(peers_of "$i") peers, not $((NODES - 1)), ${WAIT_SECS} s after the start"
done
wait_for $WAIT_SECS has_common_head 3 $(all_nodes) ||
  fail "no common head at slot 3 or later: $(for i in $(all_nodes); do echo "node $i: $(heads_of "$i" 1)"; done)"
echo "start: $NODES nodes meshed (5 peers each) on one head at slot $(common_head 3 $(all_nodes) | cut -d' ' -f1), $(since "$started") s after the start"

# --- (a) partition 3|3, then heal ---------------------------------------
side_a="1 2 3"
side_b="4 5 6"
isolate() { # node, the addresses it may not exchange packets with
  local i=$1
  shift
  local set
  set=$(printf '%s, ' "$@")
  ip netns exec "$(ns "$i")" nft -f - <<EOF
table inet netns_faults {
  chain input { type filter hook input priority 0; ip saddr { ${set%, } } drop; }
  chain output { type filter hook output priority 0; ip daddr { ${set%, } } drop; }
}
EOF
}
clear_rules() { ip netns exec "$(ns "$1")" nft delete table inet netns_faults 2>/dev/null || true; }
addresses() { for i in "$@"; do ip_of "$i"; done; }

before_slot=$(head_slot_of 1)
for i in $side_a; do isolate "$i" $(addresses $side_b); done
for i in $side_b; do isolate "$i" $(addresses $side_a); done
sleep $partition_secs # the fault's length, not a wait for a result
a_slot=$(head_slot_of 1)
b_slot=$(head_slot_of 4)
a_root=$(head_root_of 1)
b_root=$(head_root_of 4)
[ "$a_slot" -gt "$before_slot" ] && [ "$b_slot" -gt "$before_slot" ] ||
  fail "(a) a side stopped producing in the partition: slot $before_slot before, side A $a_slot, side B $b_slot"
[ "$a_root" != "$b_root" ] || fail "(a) both sides on one head ($a_root) after a partition"
has_common_head 0 $side_a || fail "(a) side A not on one head"
has_common_head 0 $side_b || fail "(a) side B not on one head"
for i in $(all_nodes); do clear_rules "$i"; done
healed=$(now)
heal_slot=$(($(head_slot_of 1) > $(head_slot_of 4) ? $(head_slot_of 1) : $(head_slot_of 4)))
wait_for $HEAL_BOUND_SECS has_common_head $((heal_slot + 1)) $(all_nodes) ||
  fail "(a) heads not equal ${HEAL_BOUND_SECS} s after the heal: $(for i in $(all_nodes); do echo "node $i: $(heads_of "$i" 1)"; done)"
heal_secs=$(since "$healed")
echo "(a) partition 3|3 for ${partition_secs} s: side A went on to slot $a_slot ($a_root), side B to slot $b_slot ($b_root); healed: every head equal after $heal_secs s (bound ${HEAL_BOUND_SECS} s)  PASS"

# --- (c) SIGSTOP of a peer for stop_secs, then SIGCONT ------------------
frozen=3
others="1 2 4 5 6"
declare -a silent_before
for i in $others; do silent_before[$i]=$(metric "$i" meshsync_peers_silent_total); done
stop_slot=$(head_slot_of 1)
kill -STOP "${pids[$frozen]}"
stopped=$(now)
sleep $stop_secs # the fault's length
# Each of the five has let it go: as silent, or scored out for requests
# it sent just before the freeze and never had answered.
as_silent=0
for i in $others; do
  [ "$(peers_of "$i")" = 4 ] || fail "(c) node $i still counts $(peers_of "$i") peers ${stop_secs} s into node $frozen's freeze"
  now_silent=$(metric "$i" meshsync_peers_silent_total)
  if awk -v a="$now_silent" -v b="${silent_before[$i]}" 'BEGIN { exit !(a > b) }'; then
    as_silent=$((as_silent + 1))
  fi
done
produced_slot=$(head_slot_of 1)
[ $((produced_slot - stop_slot)) -ge $((stop_secs * 1000 / slot_ms / 2)) ] ||
  fail "(c) producing stalled while node $frozen was frozen: slot $stop_slot to $produced_slot in ${stop_secs} s"
has_common_head 0 $others || fail "(c) the other five not on one head"
kill -CONT "${pids[$frozen]}"
resumed=$(now)
wait_for $HEAL_BOUND_SECS has_common_head $((produced_slot + 1)) $(all_nodes) ||
  fail "(c) node $frozen not on the common head ${HEAL_BOUND_SECS} s after SIGCONT: $(heads_of $frozen 1)"
rejoin_secs=$(since "$resumed")
echo "(c) SIGSTOP of node $frozen for ${stop_secs} s: all 5 peers dropped it ($as_silent as silent, $((5 - as_silent)) for requests it left unanswered); the chain went on from slot $stop_slot to $produced_slot; after SIGCONT it was on the common head in $rejoin_secs s (bound ${HEAL_BOUND_SECS} s)  PASS"

# --- (d) 10 % inbound packet drop on one node ---------------------------
lossy=5
ip netns exec "$(ns "$lossy")" nft -f - <<EOF
table inet netns_faults {
  chain input {
    type filter hook input priority 0;
    ip saddr ${subnet}0/24 counter;
    ip saddr ${subnet}0/24 numgen random mod 100 < 10 counter drop;
  }
}
EOF
lag_max=0
samples=0
deadline=$(($(date +%s) + drop_secs))
while [ "$(date +%s)" -lt $deadline ]; do
  sleep 1 # one sample a second, as the status lines come
  best=0
  for i in 1 2 3 4 6; do
    s=$(head_slot_of "$i")
    [ "$s" -gt "$best" ] && best=$s
  done
  lag=$((best - $(head_slot_of $lossy)))
  [ $lag -gt $lag_max ] && lag_max=$lag
  samples=$((samples + 1))
done
# The two counters: every packet from a peer, then those dropped.
read -r arrived_packets dropped_packets < <(ip netns exec "$(ns "$lossy")" nft list chain inet netns_faults input |
  awk '/counter packets/ { for (f = 1; f < NF; f++) if ($f == "packets") printf "%s ", $(f + 1) } END { print "" }')
clear_rules $lossy
[ $lag_max -le $DROP_LAG_SLOTS_MAX ] ||
  fail "(d) node $lossy fell $lag_max slots behind under 10 % inbound loss (bound $DROP_LAG_SLOTS_MAX)"
echo "(d) 10 % inbound drop on node $lossy for ${drop_secs} s: at most $lag_max slots behind the others' newest head over $samples samples (bound $DROP_LAG_SLOTS_MAX); $dropped_packets of $arrived_packets packets dropped  PASS"

# --- (b) kill -9 during range sync, restart on the data directory -------
syncing=6
kill -9 "${pids[$syncing]}"
wait "${pids[$syncing]}" 2>/dev/null || true
sleep $behind_secs # the chain grows while it is down
ip netns exec "$(ns "$syncing")" nft -f - <<EOF
table inet netns_faults {
  chain input { type filter hook input priority 0; ip saddr ${subnet}0/24 limit rate over $SYNC_RATE_KBYTES kbytes/second burst 256 kbytes drop; }
}
EOF
loaded_line() { grep -a "blocks loaded" "$work/n$syncing.log" | tail -n 1; }
lives_before=$(grep -ac "blocks loaded" "$work/n$syncing.log")
start_node $syncing
has_new_life() { [ "$(grep -ac "blocks loaded" "$work/n$syncing.log")" -gt "$lives_before" ]; }
wait_for $WAIT_SECS has_new_life || fail "(b) node $syncing did not start"
loaded=$(loaded_line | sed -nE 's/.*: ([0-9]+) blocks loaded.*/\1/p')
start_target=$(head_slot_of 1)
written_some() { [ "$(metric $syncing meshsync_store_blocks_written_total)" -ge 1 ]; }
wait_for $WAIT_SECS written_some || fail "(b) node $syncing wrote no blocks while syncing"
# Cut it off from its peers the moment its first batch is written, so the
# kill finds it mid-sync however fast the rest would have come (its
# metrics still answer: the scrape comes from the bridge's address).
clear_rules $syncing
isolate $syncing $(addresses 1 2 3 4 5)
# The head from the node itself, not its last status line (up to 1 s old).
kill_slot=$(metric $syncing meshsync_head_slot)
network_head=$(metric 1 meshsync_head_slot)
written=$(metric $syncing meshsync_store_blocks_written_total)
kill -9 "${pids[$syncing]}"
wait "${pids[$syncing]}" 2>/dev/null || true
behind_at_kill=$((network_head - kill_slot))
[ $behind_at_kill -gt 1 ] ||
  fail "(b) node $syncing had caught up (slot $kill_slot, the network at $network_head) before it was cut off"
target=$network_head
clear_rules $syncing
lives_before=$(grep -ac "blocks loaded" "$work/n$syncing.log")
start_node $syncing
restarted=$(now)
wait_for $WAIT_SECS has_new_life || fail "(b) node $syncing did not restart"
reloaded=$(loaded_line | sed -nE 's/.*: ([0-9]+) blocks loaded.*/\1/p')
[ "$reloaded" -ge $((loaded + written)) ] ||
  fail "(b) durable blocks lost: $loaded loaded + $written written before kill -9, $reloaded after"
wait_for $HEAL_BOUND_SECS has_common_head "$target" $(all_nodes) ||
  fail "(b) node $syncing not on the common head ${HEAL_BOUND_SECS} s after its restart: $(heads_of $syncing 1)"
catchup_secs=$(since "$restarted")
echo "(b) kill -9 of node $syncing during range sync (inbound capped at $SYNC_RATE_KBYTES KB/s; down ${behind_secs} s, so it started with $loaded blocks, $((start_target - loaded)) slots behind): cut off and killed at slot $kill_slot, $behind_at_kill slots behind the network, after writing $written blocks; restarted with $reloaded blocks (>= $loaded + $written: none lost); on the common head $catchup_secs s after the restart (bound ${HEAL_BOUND_SECS} s)  PASS"

for i in $(all_nodes); do
  if grep -aq "panicked" "$work/n$i.log"; then fail "node $i panicked: $(grep -a -m1 panicked "$work/n$i.log")"; fi
done
echo "netns-faults ($mode): every check passed in $(since "$started") s"
