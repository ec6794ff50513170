#!/usr/bin/env bash
# The front door: set up a fresh Debian/Ubuntu machine, build ferrite (release) and classify the
# bundled sample image with the embedded models.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"   # a toolchain setup.sh just installed
cargo run --release -- classify assets/astronaut.png --pretty
