#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, clippy, the Rust tests and the Python model
# tests. Installs what a fresh machine lacks first (setup.sh --dev).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh --dev
export PATH="$HOME/.cargo/bin:$PATH"   # a toolchain setup.sh just installed
# A one-off build gains nothing from incremental state; it only costs disk.
export CARGO_INCREMENTAL=0
cargo fmt --check
cargo clippy --all-targets -- -D warnings
cargo test
python3 -m pytest models/tests -q
