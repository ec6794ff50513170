#!/usr/bin/env bash
# Installs what ferrite needs to build on a fresh Debian/Ubuntu machine: a C toolchain, libclang
# (bindgen), cmake and nasm (libjpeg-turbo) and a Rust toolchain new enough for tract (>= 1.91).
# With --dev it also installs the Python packages that the model scripts and their tests need
# (models/requirements.txt; PyTorch is ~5 GB).
set -euo pipefail
cd "$(dirname "$0")/.."

need_rust="1.91"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

if ! command -v cc >/dev/null || ! command -v pkg-config >/dev/null || ! command -v curl >/dev/null; then
  echo "setup: installing build-essential and pkg-config (apt)"
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq build-essential pkg-config curl ca-certificates >/dev/null
fi

# The v4l crate generates its V4L2 bindings from the kernel headers with bindgen, which needs
# libclang at build time (nothing at run time).
# (libclang-cpp, which some images carry, is a different library that bindgen cannot use.)
if ! compgen -G "/usr/lib/llvm-*/lib/libclang.so*" >/dev/null && ! compgen -G "/usr/lib/*/libclang-[0-9]*.so*" >/dev/null; then
  echo "setup: installing libclang-dev (apt; bindgen for the V4L2 bindings)"
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq libclang-dev >/dev/null
fi

# The web view's JPEG encoder builds libjpeg-turbo from source: cmake drives it, and on x86 nasm
# assembles its SIMD code (the build refuses to go on without it rather than encode 3x slower).
need=()
command -v cmake >/dev/null || need+=(cmake)
if [ "$(uname -m)" = x86_64 ] && ! command -v nasm >/dev/null; then need+=(nasm); fi
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]} (apt; libjpeg-turbo for the web view)"
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

version_ok() { # $1 = installed, $2 = needed; true when installed >= needed
  [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -1)" = "$2" ]
}
rust_version=$(rustc --version 2>/dev/null | awk '{print $2}' || true)
if [ -z "$rust_version" ] || ! version_ok "$rust_version" "$need_rust"; then
  if command -v rustup >/dev/null; then
    echo "setup: rustc ${rust_version:-missing} is older than $need_rust; updating stable with rustup"
    rustup update stable
  else
    echo "setup: installing Rust (stable) with rustup into ~/.cargo"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --component clippy,rustfmt
  fi
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi
echo "setup: $(rustc --version)"

if [ "${1:-}" = "--dev" ]; then
  if ! cargo clippy --version >/dev/null 2>&1 || ! cargo fmt --version >/dev/null 2>&1; then
    rustup component add clippy rustfmt
  fi
  python3 -m pip --version >/dev/null 2>&1 || { $sudo apt-get update -qq; $sudo apt-get install -y -qq python3-pip >/dev/null; }
  # dlib's 68-point shape predictor: the teacher for the landmark stage (models/README.md).
  if [ ! -f /usr/share/dlib/shape_predictor_68_face_landmarks.dat ]; then
    echo "setup: installing libdlib-data (apt; the 68-point landmark teacher)"
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq libdlib-data >/dev/null
  fi
  # Debian's mosquitto: the MQTT integration tests (tests/it/mqtt.rs) start it on loopback.
  if ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; then
    echo "setup: installing mosquitto and mosquitto-clients (apt; the MQTT tests' broker)"
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq mosquitto mosquitto-clients >/dev/null
  fi
  # Debian's Chromium: the web view's real-browser test (tests/web) drives it headless.
  if ! command -v chromium >/dev/null; then
    echo "setup: installing chromium (apt; the web view's browser test)"
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null
  fi
  echo "setup: installing Python packages for models/ (models/requirements.txt)"
  # No wheel cache: PyPI's torch brings ~4 GB of CUDA libraries, and a cached copy of the wheels
  # would double that on a CI disk that also holds the Rust build.
  python3 -m pip install -q --no-cache-dir -r models/requirements.txt
  echo "setup: installing Eclipse Cyclone DDS for the ROS 2 interop test (tests/ros2/requirements.txt)"
  python3 -m pip install -q --no-cache-dir -r tests/ros2/requirements.txt
  echo "setup: installing the DevTools client for the browser test (tests/web/requirements.txt)"
  python3 -m pip install -q --no-cache-dir -r tests/web/requirements.txt
fi
