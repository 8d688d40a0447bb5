#!/usr/bin/env bash
# The whole test suite: installs what the namespace tests need (when root), then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo test --workspace --locked "$@"
