#!/usr/bin/env bash
# The whole test suite: installs what the namespace tests need (when root), then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
# A fresh CI checkout builds once: incremental state would only take disk.
if [ "${CI:-}" = "true" ]; then export CARGO_INCREMENTAL=0; fi
cargo test --workspace --locked "$@"
