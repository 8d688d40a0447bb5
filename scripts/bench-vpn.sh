#!/usr/bin/env bash
# VPN throughput and CPU cost, all in one run on the same namespace topology (root only):
#   (c) plain: client → exit host → internet over veth, no tunnel
#   (a) top 1 hop: `top vpn up` to the exit relay (kill switch off: the data path alone)
#   (a2) top 2 hops: through the entry relay, which forwards in the kernel (nftables)
#   (a3) top 2 hops through a second entry relay that forwards in user space (kernel_forward off)
#   (b) boringtun (userspace WireGuard, `boringtun-cli --threads 1`) between the same hosts
# Each: one iperf3 TCP stream client → internet for $SECS seconds. CPU is user+system seconds of
# the tunnel's processes (both ends, and the entry's nft session; kernel softirq work, such as
# the kernel-forwarding entry's, is not included), per GB carried.
# $ROUNDS rounds, each measuring every path in turn; every round is printed, then the medians.
# Usage: scripts/bench-vpn.sh [SECS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
ROUNDS=${2:-5}
P=bv$$
ROOT=$(pwd)
TOOLS=$ROOT/target/bench-tools
WORK=$(mktemp -d)
bash scripts/install-deps.sh
command -v wg >/dev/null || apt-get install -y -q wireguard-tools >/dev/null
cargo build --release --workspace --bins -q
[ -x "$TOOLS/bin/boringtun-cli" ] || cargo install -q --root "$TOOLS" boringtun-cli --locked
TOP=$ROOT/target/release/top
RELAY=$ROOT/target/release/toprelay
BT=$TOOLS/bin/boringtun-cli

cleanup() {
  pkill -f "$WORK" 2>/dev/null || true
  bash scripts/vpn-netns.sh down $P
  rm -rf "$WORK"
}
trap cleanup EXIT
bash scripts/vpn-netns.sh up $P
nsx() { local n=$1; shift; ip netns exec "$P$n" "$@"; }

cpu_of() { # total user+system clock ticks of the given pids; "tree:PID": PID, the children
  # it reaped and those it has now (the entry's nft sessions, renewed every minute)
  local t=0
  for pid in "$@"; do
    if [[ $pid == tree:* ]]; then
      pid=${pid#tree:}
      read -r -a f < <(sed 's/.*) //' "/proc/$pid/stat")
      t=$((t + f[13] + f[14]))
      for child in $(pgrep -P "$pid" || true); do
        read -r -a g < <(sed 's/.*) //' "/proc/$child/stat" 2>/dev/null || echo)
        t=$((t + ${g[11]:-0} + ${g[12]:-0}))
      done
    fi
    read -r -a f < <(sed 's/.*) //' "/proc/$pid/stat")
    t=$((t + f[11] + f[12]))
  done
  echo $t
}

# iperf3 from the client to the internet host; prints "gbit cpu_s_per_gb" (cpu of PIDS).
measure() {
  nsx i iperf3 -s -1 -B 10.91.4.2 -D >/dev/null
  sleep 0.3
  local before; before=$(cpu_of "$@")
  local json; json=$(nsx c iperf3 -c 10.91.4.2 -t "$SECS" -J)
  local after; after=$(cpu_of "$@")
  python3 - "$json" "$before" "$after" "$#" <<'PY'
import json, os, sys
r = json.loads(sys.argv[1])["end"]["sum_received"]
gbit = r["bits_per_second"] / 1e9
gb = r["bytes"] / 1e9
ticks = int(sys.argv[3]) - int(sys.argv[2])
hz = os.sysconf("SC_CLK_TCK")
cpu = (ticks / hz) / gb if int(sys.argv[4]) > 0 and gb > 0 else float("nan")
print(f"{gbit:.3f} {cpu:.2f}")
PY
}

# Relays: exit in x (dev chain, VPN exit), entry in e following it.
nsx x "$RELAY" init --data-dir "$WORK/x" --listen 0.0.0.0:7700 --http 127.0.0.1:7780 --dev >/dev/null 2>&1
sed -i -e 's/vpn_exit = false/vpn_exit = true/' -e 's/allow_private = false/allow_private = true/' \
  -e 's/block_interval_ms = 1000/block_interval_ms = 200/' "$WORK/x/config.toml"
nsx x "$RELAY" run --data-dir "$WORK/x" > "$WORK/x.out" 2>/dev/null &
while [ ! -s "$WORK/x.out" ]; do sleep 0.05; done
X=$(head -1 "$WORK/x.out" | cut -d@ -f1)
nsx e "$RELAY" init --data-dir "$WORK/e" --listen 0.0.0.0:7700 --http 127.0.0.1:7780 \
  --peer "$X@10.91.3.1:7700" >/dev/null 2>&1
nsx e sysctl -qw net.ipv4.ip_forward=1
nsx e "$RELAY" run --data-dir "$WORK/e" > "$WORK/e.out" 2>/dev/null &
while [ ! -s "$WORK/e.out" ]; do sleep 0.05; done
E=$(head -1 "$WORK/e.out" | cut -d@ -f1)
nsx e "$RELAY" init --data-dir "$WORK/u" --listen 0.0.0.0:7710 --http 127.0.0.1:7790 \
  --peer "$X@10.91.3.1:7700" >/dev/null 2>&1
sed -i 's/kernel_forward = true/kernel_forward = false/' "$WORK/u/config.toml"
nsx e "$RELAY" run --data-dir "$WORK/u" > "$WORK/u.out" 2>/dev/null &
while [ ! -s "$WORK/u.out" ]; do sleep 0.05; done
U=$(head -1 "$WORK/u.out" | cut -d@ -f1)
XPID=$(pgrep -f "toprelay run --data-dir $WORK/x")
EPID=$(pgrep -f "toprelay run --data-dir $WORK/e")
UPID=$(pgrep -f "toprelay run --data-dir $WORK/u")
H=$WORK/client
nsx c "$TOP" --home "$H" init --relay "$X@10.91.1.1:7700" >/dev/null 2>&1
nsx c "$TOP" --home "$H" wallet faucet 1000 >/dev/null
nsx c "$TOP" --home "$H" wallet deposit 900 >/dev/null

vpn_up() {
  nsx c "$TOP" --home "$H" vpn up --no-kill-switch --lock 100 "$@" > /dev/null 2>"$WORK/vpn.err" &
  for _ in $(seq 200); do
    nsx c "$TOP" --home "$H" vpn status --json 2>/dev/null | grep -q '"state": "up"' && return 0
    sleep 0.1
  done
  cat "$WORK/vpn.err" >&2; return 1
}
vpn_down() { nsx c "$TOP" --home "$H" vpn down >/dev/null; }

# boringtun between client and exit, its route added only while it is measured (top's
# tunnel routes everything else).
for side in c x; do
  wg genkey > "$WORK/$side.key"; wg pubkey < "$WORK/$side.key" > "$WORK/$side.pub"
done
nsx c env WG_SUDO=1 "$BT" --threads 1 --disable-drop-privileges wgb0 >/dev/null 2>&1
nsx x env WG_SUDO=1 "$BT" --threads 1 --disable-drop-privileges wgb1 >/dev/null 2>&1
nsx x wg set wgb1 listen-port 51820 private-key "$WORK/x.key" peer "$(cat "$WORK/c.pub")" allowed-ips 10.92.0.2/32
nsx c wg set wgb0 private-key "$WORK/c.key" peer "$(cat "$WORK/x.pub")" allowed-ips 0.0.0.0/0 endpoint 10.91.1.1:51820
nsx c ip addr add 10.92.0.2/24 dev wgb0; nsx c ip link set wgb0 mtu 1420 up
nsx x ip addr add 10.92.0.1/24 dev wgb1; nsx x ip link set wgb1 mtu 1420 up
nsx x nft add table ip benchnat
nsx x nft add chain ip benchnat post '{ type nat hook postrouting priority srcnat; }'
nsx x nft add rule ip benchnat post ip saddr 10.92.0.0/24 masquerade
BTPIDS=$(pgrep -f "boringtun-cli --threads 1" | tr '\n' ' ')

ROWS=$WORK/rows
for round in $(seq "$ROUNDS"); do
  echo "round $round/$ROUNDS: plain veth …" >&2
  plain=$(measure)
  echo "round $round/$ROUNDS: top 1 hop …" >&2
  vpn_up --exit "$X@10.91.1.1:7700"
  CPID=$(pgrep -f "vpn up --no-kill-switch" | head -1)
  top1=$(measure "$CPID" "$XPID")
  vpn_down
  echo "round $round/$ROUNDS: top 2 hops …" >&2
  vpn_up --exit "$X@10.91.3.1:7700" --via "$E@10.91.2.1:7700"
  CPID=$(pgrep -f "vpn up --no-kill-switch" | head -1)
  # The entry's nft sessions (its counts and quotas) are part of its cost.
  top2=$(measure "$CPID" "tree:$EPID" "$XPID")
  vpn_down
  echo "round $round/$ROUNDS: top 2 hops, user-space entry …" >&2
  vpn_up --exit "$X@10.91.3.1:7700" --via "$U@10.91.2.1:7710"
  CPID=$(pgrep -f "vpn up --no-kill-switch" | head -1)
  topu=$(measure "$CPID" "$UPID" "$XPID")
  vpn_down
  echo "round $round/$ROUNDS: boringtun …" >&2
  nsx c ip route add 10.91.4.2/32 dev wgb0
  [ "$(nsx c curl -s -m 3 http://10.91.4.2:8080/)" = 10.91.4.1 ] || { echo "boringtun path broken" >&2; exit 1; }
  # shellcheck disable=SC2086
  bt=$(measure $BTPIDS)
  nsx c ip route del 10.91.4.2/32 dev wgb0
  echo "$plain $top1 $top2 $bt $topu" >> "$ROWS"
done

python3 - "$ROWS" <<'PY'
import statistics, sys
rows = [[float(x) for x in line.split()] for line in open(sys.argv[1])]
print("Gbit/s per path; bt = boringtun --threads 1; 2 hops: kernel-forwarding entry,"
      " 2h user: user-space entry")
print(f"{'round':<6}{'plain':>8}{'1 hop':>8}{'2 hops':>8}{'bt':>8}{'2h user':>8}"
      f"{'1hop/bt':>9}{'2hop/1hop':>10}{'2huser/1hop':>12}{'CPU/GB 1hop/bt':>16}")
for i, r in enumerate(rows, 1):
    g = r[0::2]; c = r[1::2]
    print(f"{i:<6}" + "".join(f"{x:>8.3f}" for x in g)
          + f"{g[1] / g[3]:>9.2f}{g[2] / g[1]:>10.2f}{g[4] / g[1]:>12.2f}{c[1] / c[3]:>16.2f}")
med = lambda k: statistics.median(k)
g1 = [r[2] / r[6] for r in rows]; g2 = [r[4] / r[2] for r in rows]; gu = [r[8] / r[2] for r in rows]
print(f"median  top 1 hop / boringtun: {med(g1):.2f}   top 2 hops / 1 hop: {med(g2):.2f}"
      f"   (user-space entry: {med(gu):.2f})")
print("CPU s/GB per round (plain, 1 hop, 2 hops, boringtun, 2 hops user-space entry): "
      + "; ".join(" ".join(f"{x:.2f}" for x in r[1::2]) for r in rows))
PY
