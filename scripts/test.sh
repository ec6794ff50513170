#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, clippy, the Rust tests, the Python model tests,
# then the Arm checks: an aarch64 cross build, its JSON equivalence with this machine's binary under
# qemu-user, and the emulated board (cross/emulated-board.sh). Installs what a fresh machine lacks
# first (setup.sh --dev; cross/build.sh and the board script install their own packages).
#   FERRITE_SKIP_ARM=1 ./scripts/test.sh    everything but the Arm checks (about 20 minutes less)
set -euo pipefail
cd "$(dirname "$0")/.."
# Each stage's start, in seconds since the script began: where CI's time goes. CI keeps no output
# of a run that passed, so with FERRITE_STAGE_LOG set (.ci/run sets it) the lines go there too.
stage() {
  printf '[test.sh %5ds] %s\n' "$SECONDS" "$*"
  if [ -n "${FERRITE_STAGE_LOG:-}" ]; then
    printf '%s %s [test.sh %5ds] %s\n' "$(date -u +%FT%TZ)" "$run_id" "$SECONDS" "$*" \
      >> "$FERRITE_STAGE_LOG"
  fi
}
run_id="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)@$$"
if [ -n "${FERRITE_STAGE_LOG:-}" ]; then mkdir -p "$(dirname "$FERRITE_STAGE_LOG")"; fi
trap 'rc=$?; if [ "$rc" != 0 ]; then stage "failed: exit $rc"; fi' EXIT
stage "setup.sh --dev"
./scripts/setup.sh --dev
export PATH="$HOME/.cargo/bin:$PATH"   # a toolchain setup.sh just installed
# A one-off build gains nothing from incremental state; it only costs disk.
export CARGO_INCREMENTAL=0
stage "cargo fmt --check"
cargo fmt --check
stage "cargo clippy --all-targets"
# vivid-feed: the emulated board's feeder binary is linted too.
cargo clippy --all-targets --features vivid-feed -- -D warnings
# setup.sh --dev installed the broker (and ca-certificates brings openssl): the tests that need
# them must run, not skip (tests/it/needs.rs).
stage "cargo test"
FERRITE_REQUIRE_HW="mosquitto,openssl" cargo test
stage "pytest"
# tests/ros2 runs `ferrite run --ros2` (the debug build above) against Cyclone DDS on loopback;
# tests/web loads `ferrite run --web` in headless Chromium.
FERRITE_REQUIRE_ROS2=1 FERRITE_REQUIRE_WEB=1 \
  python3 -m pytest models/tests cross/tests tests/ros2 tests/web -q

# A build without the optional features (no V4L2 binding, no MQTT: neither bindgen nor ring) must
# still compile cleanly and classify images: clippy over every target, then its CLI tests run the
# binary on the sample image. Without bindgen most dependencies build again (syn's and libc's
# features change), so the tests use the ci-minimal profile (Cargo.toml): dependencies unoptimised,
# in their own target/ci-minimal, leaving target/debug/ferrite alone.
minimal_build_classifies() {
  stage "the --no-default-features build: clippy, CLI tests"
  cargo clippy --no-default-features --all-targets -- -D warnings
  cargo test --no-default-features --profile ci-minimal --test it cli::
  echo "test.sh: the --no-default-features build classifies images"
}

if [ "${FERRITE_SKIP_ARM:-0}" = 1 ]; then
  minimal_build_classifies
  stage "done: Arm checks skipped (FERRITE_SKIP_ARM=1)"
  exit 0
fi
# The checks' binaries need no LTO (the results are the same; see cross/build.sh --fast); the
# board's vivid feeder is built in the same cargo run, so no dependency builds twice.
export CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
stage "cross/build.sh --target aarch64 --with-feeder"
./cross/build.sh --target aarch64 --with-feeder
stage "cross/equivalence.py under qemu-user"
python3 cross/equivalence.py --arch aarch64 --host target/debug/ferrite
stage "cross/emulated-board.sh"
./cross/emulated-board.sh --binary target/aarch64-unknown-linux-gnu/release/ferrite \
  --feeder target/aarch64-unknown-linux-gnu/release/vivid_feed
minimal_build_classifies
stage "done: all stages passed"
