#!/usr/bin/env bash
# CDN throughput, all in one run on this machine (loopback):
#   (a) the relay's HTTP gateway serving a 256 MiB file from its warm cache (an edge relay that
#       fetched it from the origin relay once), and
#   (b) nginx (Debian package, sendfile on) serving the same file,
# each with the same client: wrk, $CONNS concurrent connections, $SECS seconds, alternating
# $ROUNDS times. Then the SDK: `top cdn get` of the whole file from the warm edge relay (every
# chunk verified), and curl of the same file from the gateway (one connection) for comparison,
# both timed over the whole command.
# Usage: scripts/bench-cdn.sh [SECS] [ROUNDS] [CONNS]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
ROUNDS=${2:-3}
CONNS=${3:-8}
ROOT=$(pwd)
WORK=$(mktemp -d)
chmod 755 "$WORK" # nginx workers (www-data) read the file from here
bash scripts/install-deps.sh
if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nginx-light wrk >/dev/null
fi
cargo build --release -p top-relay -p top-cli --bins -q
TOP=$ROOT/target/release/top
RELAY=$ROOT/target/release/toprelay

cleanup() {
  pkill -f "$WORK" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

set_peers() { # name, peers...
  python3 - "$WORK/$1/config.toml" "${@:2}" <<'PY'
import re, sys
path, peers = sys.argv[1], sys.argv[2:]
text = re.sub(r"(?m)^peers = \[.*\]$", "peers = [" + ", ".join(f'"{p}"' for p in peers) + "]", open(path).read())
open(path, "w").write(text)
PY
}
run_relay() { # name ; prints the relay address
  local dir=$WORK/$1
  rm -f "$dir.addr"
  "$RELAY" run --data-dir "$dir" >"$dir.addr" 2>>"$dir.log" &
  echo $! >"$dir.pid"
  for _ in $(seq 100); do [ -s "$dir.addr" ] && break; sleep 0.1; done
  head -1 "$dir.addr"
}
start_relay() { # name, peers... ; prints the relay address
  local dir=$WORK/$1
  "$RELAY" init --data-dir "$dir" --listen "127.0.0.1:$(free_port)" --http "127.0.0.1:$(free_port)" >/dev/null
  set_peers "$@"
  run_relay "$1"
}
http_of() { grep -o '^http = .*' "$WORK/$1/config.toml" | cut -d'"' -f2; }

mkdir -p "$WORK/www"
head -c $((256 << 20)) /dev/urandom >"$WORK/www/file.bin"
ORIGIN=$(start_relay origin)
EDGE=$(start_relay edge "$ORIGIN")
# Without a chain, relays link only with relays their operators configured: both ways. The
# origin learns the edge's address now, and restarts with it.
kill "$(cat "$WORK/origin.pid")"
while kill -0 "$(cat "$WORK/origin.pid")" 2>/dev/null; do sleep 0.1; done
set_peers origin "$EDGE"
ORIGIN=$(run_relay origin)
"$TOP" --home "$WORK/home" init --relay "$ORIGIN" >/dev/null 2>&1
CID=$("$TOP" --home "$WORK/home" cdn put "$WORK/www/file.bin")
GW="http://$(http_of edge)/cdn/$CID"
for _ in $(seq 50); do # the edge links to the origin in the background
  code=$(curl -s -o "$WORK/warm.bin" -w '%{http_code}' "$GW" || true)
  [ "$code" = 200 ] && break
  sleep 0.2
done
cmp -s "$WORK/warm.bin" "$WORK/www/file.bin" || { echo "gateway served wrong bytes" >&2; exit 1; }
rm -f "$WORK/warm.bin"

NGINX_PORT=$(free_port)
mkdir -p "$WORK/nginx"
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes auto;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  client_body_temp_path $WORK/nginx/body;
  proxy_temp_path $WORK/nginx/proxy;
  fastcgi_temp_path $WORK/nginx/fastcgi;
  uwsgi_temp_path $WORK/nginx/uwsgi;
  scgi_temp_path $WORK/nginx/scgi;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    root $WORK/www;
  }
}
EOF
nginx -c "$WORK/nginx/nginx.conf" -g 'daemon off;' &
NG="http://127.0.0.1:$NGINX_PORT/file.bin"
for _ in $(seq 50); do curl -sf -o "$WORK/nginx.bin" "$NG" && break; sleep 0.1; done
cmp -s "$WORK/nginx.bin" "$WORK/www/file.bin" || { echo "nginx served wrong bytes" >&2; exit 1; }
rm -f "$WORK/nginx.bin"

rate() { # url -> MiB/s as wrk measured it
  wrk -t2 -c"$CONNS" -d"${SECS}s" --timeout 30s "$1" | python3 -c '
import re, sys
text = sys.stdin.read()
m = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", text)
scale = {"B": 1 / 2**20, "KB": 1 / 1024, "MB": 1, "GB": 1024}[m.group(2)]
print(f"{float(m.group(1)) * scale:.0f}")'
}

echo "file: 256 MiB, wrk -t2 -c$CONNS -d${SECS}s, MiB/s"
echo "round  nginx  gateway  gateway/nginx"
for r in $(seq "$ROUNDS"); do
  n=$(rate "$NG")
  g=$(rate "$GW")
  python3 -c "print(f'$r      $n   $g     {$g / $n:.2f}')"
done

wall() { # command... ; prints MiB/s of the 256 MiB file over the whole command, start to exit
  local t0 t1
  t0=$(date +%s.%N)
  "$@" >/dev/null
  t1=$(date +%s.%N)
  python3 -c "print(f'{256 / ($t1 - $t0):.0f}')"
}
own_speed() { # curl's own figure: bytes over its transfer time (no process start or exit)
  local speed
  # Taken whole before python starts: python starting beside a transfer of ~80 ms takes a
  # core from it (measured: 1,850 instead of 3,300 MiB/s).
  speed=$(curl -s -o /dev/null -w '%{speed_download}' "$GW")
  python3 -c "print(f'{$speed / 2**20:.0f}')"
}
# Both clients are timed the same way, as a user sees them: the whole command, start to exit
# (the SDK's includes loading the identity, the QUIC handshake and the close). curl's own
# figure (its transfer alone) is shown beside it.
echo "one client, whole file from the warm edge, MiB/s"
echo "round  sdk(top cdn get)  curl(gateway)  sdk/curl  curl's own figure  sdk/that"
for r in $(seq "$ROUNDS"); do
  s=$(wall "$TOP" --home "$WORK/home" --relay "$EDGE" cdn get "$CID")
  c=$(wall curl -s "$GW")
  o=$(own_speed)
  python3 -c "print(f'$r      $s              $c         {$s / $c:.2f}      $o              {$s / $o:.2f}')"
done
