#!/usr/bin/env bash
# Cross-compiles ferrite for Arm boards with Debian's own toolchain, since rustup cannot always add
# targets: rustc-web/cargo-web 1.96 from bookworm-security, the matching standard library for the
# target, and the gcc cross compiler as linker.
#
#   cross/build.sh                     aarch64: Raspberry Pi 4/5 on 64-bit OS, Jetson
#   cross/build.sh --target armv7      armv7: Raspberry Pi 3 / Zero 2 W on 32-bit Raspberry Pi OS
#   cross/build.sh --target all        both
#   cross/build.sh --no-apt ...        build only (the toolchain is already installed)
#   cross/build.sh --fast ...          no LTO, 16 codegen units: builds in much less time, runs a
#                                      little slower, computes the same; for CI's checks, not boards
#   cross/build.sh --with-feeder ...   also the emulated board's vivid_feed, in the same cargo run
#                                      (the vivid-feed feature gates only that binary)
#
# Output: target/<triple>/release/ferrite (stripped, models embedded), for
# aarch64-unknown-linux-gnu and armv7-unknown-linux-gnueabihf.
# Run it on x86 with qemu-user, e.g.
#   qemu-aarch64-static -cpu cortex-a72 target/aarch64-unknown-linux-gnu/release/ferrite
#   qemu-arm-static -L /usr/arm-linux-gnueabihf -cpu cortex-a7 target/armv7-unknown-linux-gnueabihf/release/ferrite
set -euo pipefail
cd "$(dirname "$0")/.."

apt=1
targets=(aarch64)
bins=(--bin ferrite)
while [ $# -gt 0 ]; do
  case "$1" in
    --no-apt) apt=0 ;;
    --with-feeder) bins=(--features vivid-feed --bin ferrite --bin vivid_feed) ;;
    --fast)
      # Thin LTO over tract costs ~10 CPU-minutes per target in the final link alone; Rust does not
      # reorder float arithmetic, so the results stay the same without it.
      export CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 ;;
    --target)
      shift
      case "${1:-}" in
        aarch64|armv7) targets=("$1") ;;
        all) targets=(aarch64 armv7) ;;
        *) echo "cross/build.sh: --target takes aarch64, armv7 or all" >&2; exit 2 ;;
      esac ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "cross/build.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
if [ "$apt" = 1 ]; then
  $sudo dpkg --add-architecture arm64
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq rustc-web cargo-web "libstd-rust-web-dev:arm64" gcc-aarch64-linux-gnu \
    gcc-arm-linux-gnueabihf libclang-dev cmake qemu-user-static curl >/dev/null
fi

# Debian's cargo-web installs as /usr/bin/cargo; prefer it over a rustup cargo on PATH, whose
# standard library has no Arm builds here.
cargo=/usr/bin/cargo
rustc=/usr/bin/rustc
"$rustc" --version
export RUSTC="$rustc"
export CARGO_TARGET_DIR=target

# The armhf standard library. Debian carries 1.96 only in bookworm-security, whose armhf index has
# failed to download here since 2026-11-22 ("File has unexpected size ... Mirror sync in
# progress?"), and a broken index makes `apt-get update` fail for every architecture. So the
# library is not installed through multiarch: the two packages are fetched from the pool, checked
# against the sha256 sums that index lists, and unpacked into a private sysroot that only the armv7
# build sees.
armhf_version="1.96.0+dfsg1-1~deb12u2"
armhf_pool="http://deb.debian.org/debian-security/pool/updates/main/r/rustc-web"
armhf_debs=(
  "libstd-rust-web-dev_${armhf_version}_armhf.deb b9f9dd1d03a903680f918cb2bba00a2a3d76558545d5e6a8061072ab461bb989"
)
armhf_sysroot=target/armhf-sysroot

armhf_std() {
  local rustc_version deb sum dir=target/armhf-debs
  rustc_version=$("$rustc" --version | awk '{print $2}')
  if [ "${armhf_version%%+*}" != "$rustc_version" ]; then
    echo "cross/build.sh: rustc is $rustc_version but the pinned armhf standard library is ${armhf_version%%+*};" \
      "update armhf_version and its sha256 in $0 from bookworm-security's armhf Packages index" >&2
    exit 1
  fi
  [ -d "$armhf_sysroot/lib/rustlib/armv7-unknown-linux-gnueabihf/lib" ] && return
  mkdir -p "$dir" "$armhf_sysroot"
  for entry in "${armhf_debs[@]}"; do
    read -r deb sum <<<"$entry"
    if [ ! -f "$dir/$deb" ]; then
      echo "cross/build.sh: fetching $deb"
      # '+' and '~' must be percent-encoded in the pool URL.
      curl -fsS -o "$dir/$deb.part" "$armhf_pool/$(printf '%s' "$deb" | sed 's/+/%2B/g; s/~/%7E/g')"
      mv "$dir/$deb.part" "$dir/$deb"
    fi
    if ! echo "$sum  $dir/$deb" | sha256sum --check --quiet; then
      rm -f "$dir/$deb"
      echo "cross/build.sh: $deb does not match its pinned sha256; refusing to use it" >&2
      exit 1
    fi
    dpkg-deb -x "$dir/$deb" "$dir/root"
  done
  mkdir -p "$armhf_sysroot/lib"
  rm -rf "$armhf_sysroot/lib/rustlib"
  cp -a "$dir/root/usr/lib/rustlib" "$armhf_sysroot/lib/"
}

for arch in "${targets[@]}"; do
  case "$arch" in
    aarch64)
      target=aarch64-unknown-linux-gnu; strip=aarch64-linux-gnu-strip
      export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc ;;
    armv7)
      target=armv7-unknown-linux-gnueabihf; strip=arm-linux-gnueabihf-strip
      armhf_std
      export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_LINKER=arm-linux-gnueabihf-gcc
      # Only target crates see this sysroot; build scripts and proc macros keep the host's.
      export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_RUSTFLAGS="--sysroot=$PWD/$armhf_sysroot" ;;
  esac
  # bindgen (the v4l crate's V4L2 bindings) reads the target's kernel headers that the gcc cross
  # compiler's libc6-dev-*-cross brings, through clang's --target (it passes TARGET).
  "$cargo" build --release --target "$target" "${bins[@]}"
  "$strip" "target/$target/release/ferrite"
  ls -l "target/$target/release/ferrite"
done
