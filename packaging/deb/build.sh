#!/usr/bin/env bash
# Builds the Debian packages: toprelay (daemon, systemd unit, man page, completions, Grafana
# dashboard) and top (the user's command, man page, completions). Output: target/debian/*.deb
# Needs cargo-deb (installed here from crates.io when missing).
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v cargo-deb >/dev/null || cargo install --locked cargo-deb
cargo build --release --locked -p top-relay --bin toprelay -p top-cli --bin top
out=target/packaging
mkdir -p "$out"
for bin in toprelay top; do
  "target/release/$bin" man > "$out/$bin.1"
  gzip -9nf "$out/$bin.1"
  "target/release/$bin" completions bash > "$out/$bin.bash"
  "target/release/$bin" completions zsh > "$out/_$bin"
  "target/release/$bin" completions fish > "$out/$bin.fish"
done
cargo deb --no-build -p top-relay
cargo deb --no-build -p top-cli
ls -l target/debian/*.deb
