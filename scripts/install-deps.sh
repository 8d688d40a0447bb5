#!/usr/bin/env bash
# Installs the Debian packages the tests and benchmarks need (as root; otherwise prints them).
# The VPN namespace test uses ip (iproute2), nft (nftables), curl, python3 and dnsmasq; the
# end-to-end CLI test checks /metrics with promtool (prometheus); the VPN benchmark adds iperf3
# (scripts/bench-cdn.sh installs nginx-light and wrk itself); the service test checks the unit with
# systemd-analyze (systemd) and its man page (man-db); the dashboard test drives Debian's chromium
# through chromedriver.
set -euo pipefail
packages=(iproute2 nftables curl python3 dnsmasq-base iperf3 procps prometheus systemd man-db chromium chromium-driver)
tools=(ip nft curl python3 dnsmasq iperf3 pkill promtool systemd-analyze man chromium chromedriver)
missing=0
for t in "${tools[@]}"; do command -v "$t" >/dev/null || missing=1; done
[ "$missing" = 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "missing tools; as root run: apt-get install -y ${packages[*]}" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${packages[@]}"
