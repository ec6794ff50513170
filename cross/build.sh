#!/usr/bin/env bash
# Cross-compiles ferrite for 64-bit Arm boards (Raspberry Pi 4/5 on 64-bit OS, Jetson) with
# Debian's own toolchain, since rustup cannot always add targets: rustc-web/cargo-web 1.96 from
# bookworm-security, the matching arm64 standard library, and gcc-aarch64-linux-gnu as linker.
#
#   cross/build.sh            install the toolchain (apt, as root) and build
#   cross/build.sh --no-apt   build only
#
# Output: target/aarch64-unknown-linux-gnu/release/ferrite (stripped, models embedded).
# Run it on x86 with: qemu-aarch64-static -cpu cortex-a72 target/aarch64-unknown-linux-gnu/release/ferrite
set -euo pipefail
cd "$(dirname "$0")/.."
target=aarch64-unknown-linux-gnu

if [ "${1:-}" != "--no-apt" ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo dpkg --add-architecture arm64
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq rustc-web cargo-web "libstd-rust-web-dev:arm64" gcc-aarch64-linux-gnu libclang-dev qemu-user-static >/dev/null
fi

# Debian's cargo-web installs as /usr/bin/cargo; prefer it over a rustup cargo on PATH, whose
# standard library has no arm64 build here.
cargo=/usr/bin/cargo
rustc=/usr/bin/rustc
"$rustc" --version
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export RUSTC="$rustc"
export CARGO_TARGET_DIR=target
# bindgen (the v4l crate's V4L2 bindings) reads the arm64 kernel headers that
# gcc-aarch64-linux-gnu's libc6-dev-arm64-cross brings, through clang's --target (it passes TARGET).
"$cargo" build --release --target "$target" --bin ferrite
aarch64-linux-gnu-strip "target/$target/release/ferrite"
ls -l "target/$target/release/ferrite"
