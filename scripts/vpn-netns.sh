#!/usr/bin/env bash
# The VPN test topology in network namespaces (root only):
#
#   client (c) --10.91.1.0/24-- exit (x) --10.91.4.0/24-- internet (i)
#       \                        /
#     10.91.2.0/24        10.91.3.0/24
#          \                /
#           ---- entry (e) --
#
# Addresses: x = .1 on every link it is on, c = .2 on its links, e = .1 towards c and .2
# towards x, i = 10.91.4.2. The client's default route goes through x (its "ISP"), so without
# a tunnel the internet host sees 10.91.1.2; through the tunnel it sees 10.91.4.1.
# IPv6 (dual stack on the client's and the internet's links): c = fd91:1::2 and x = fd91:1::1,
# x = fd91:4::1 and i = fd91:4::2; the client's IPv6 default route also goes through x.
# The internet host runs an HTTP server on :8080 (both families) answering with the caller's
# address, and a DNS server (dnsmasq) answering internet.test (A) and internet6.test (AAAA);
# the exit uses that DNS server.
#
# Usage: vpn-netns.sh up PREFIX | down PREFIX | exec PREFIX NODE CMD...
set -euo pipefail
cmd=${1:?up|down|exec}; p=${2:?prefix}
here="$(cd "$(dirname "$0")" && pwd)"

ns() { echo "${p}$1"; }

link() { # link NS_A IF_A ADDR_A NS_B IF_B ADDR_B
  ip link add "$2" netns "$(ns "$1")" type veth peer name "$5" netns "$(ns "$4")"
  ip -n "$(ns "$1")" addr add "$3" dev "$2"; ip -n "$(ns "$1")" link set "$2" up
  ip -n "$(ns "$4")" addr add "$6" dev "$5"; ip -n "$(ns "$4")" link set "$5" up
}

case "$cmd" in
up)
  for n in c e x i; do
    ip netns add "$(ns $n)"
    ip -n "$(ns $n)" link set lo up
    mkdir -p "/etc/netns/$(ns $n)"
    : > "/etc/netns/$(ns $n)/resolv.conf"
    printf '127.0.0.1 localhost\n' > "/etc/netns/$(ns $n)/hosts"
  done
  link c cx0 10.91.1.2/24 x xc0 10.91.1.1/24
  link c ce0 10.91.2.2/24 e ec0 10.91.2.1/24
  link e ex0 10.91.3.2/24 x xe0 10.91.3.1/24
  link x xi0 10.91.4.1/24 i ix0 10.91.4.2/24
  ip -n "$(ns c)" route add default via 10.91.1.1
  ip -n "$(ns i)" route add default via 10.91.4.1
  # IPv6 without duplicate address detection (addresses usable at once).
  ip -n "$(ns c)" addr add fd91:1::2/64 dev cx0 nodad
  ip -n "$(ns x)" addr add fd91:1::1/64 dev xc0 nodad
  ip -n "$(ns x)" addr add fd91:4::1/64 dev xi0 nodad
  ip -n "$(ns i)" addr add fd91:4::2/64 dev ix0 nodad
  ip -n "$(ns c)" -6 route add default via fd91:1::1
  ip -n "$(ns x)" -6 route add default via fd91:4::2
  ip -n "$(ns i)" -6 route add default via fd91:4::1
  echo "nameserver 192.0.2.53" > "/etc/netns/$(ns c)/resolv.conf"
  echo "nameserver 10.91.4.2" > "/etc/netns/$(ns x)/resolv.conf"
  # The exit is the client's router even without a tunnel (the leak path the kill switch closes).
  ip netns exec "$(ns x)" sysctl -qw net.ipv4.ip_forward=1
  ip netns exec "$(ns x)" sysctl -qw net.ipv6.conf.all.forwarding=1
  ip netns exec "$(ns i)" python3 "$here/echo_addr_http.py" 10.91.4.2 8080 \
    >/dev/null 2>&1 &
  ip netns exec "$(ns i)" python3 "$here/echo_addr_http.py" fd91:4::2 8080 \
    >/dev/null 2>&1 &
  ip netns exec "$(ns i)" dnsmasq --keep-in-foreground --no-resolv --no-hosts \
    --listen-address=10.91.4.2 --bind-interfaces --address=/internet.test/10.91.4.2 \
    --address=/internet6.test/fd91:4::2 \
    --log-queries --log-facility="/tmp/$(ns i)-dns.log" --pid-file= --user=root \
    >/dev/null 2>&1 &
  # Wait until both servers answer.
  for _ in $(seq 100); do
    if ip netns exec "$(ns i)" bash -c 'exec 3<>/dev/tcp/10.91.4.2/8080' 2>/dev/null \
      && ip netns exec "$(ns i)" bash -c 'exec 3<>/dev/tcp/fd91:4::2/8080' 2>/dev/null \
      && [ -s "/tmp/$(ns i)-dns.log" ]; then exit 0; fi
    sleep 0.05
  done
  echo "servers in $(ns i) did not start" >&2; exit 1
  ;;
down)
  for n in c e x i; do
    if ip netns list | grep -qw "$(ns $n)"; then
      pids=$(ip netns pids "$(ns $n)" || true)
      [ -n "$pids" ] && kill -9 $pids 2>/dev/null || true
      ip netns del "$(ns $n)" || true
    fi
    rm -rf "/etc/netns/$(ns $n)"
  done
  rm -f "/tmp/$(ns i)-dns.log"
  ;;
exec)
  node=${3:?node}; shift 3
  exec ip netns exec "$(ns "$node")" "$@"
  ;;
esac
