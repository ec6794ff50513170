#!/usr/bin/env bash
# Runs every libFuzzer target for a bounded time over the committed seeds (tests/fuzz-seeds/) and
# reports, per target, the executions, the coverage reached and whether it found a crash.
#
#   fuzz/run.sh                       # 600 s per target (the issue-17 target), all five targets
#   fuzz/run.sh --seconds 60 y4m      # one target, one minute
#
# Needs a nightly toolchain (`rustup toolchain list`) and `cargo install cargo-fuzz`. The growing
# corpus and any crash input go under $FERRITE_FUZZ_DIR (default ~/ferrite-fuzz), outside the
# checkout: a crash input is minimised with `cargo fuzz tmin`, then kept as a test in
# tests/it/fuzz.rs beside its fix, never committed as a corpus file.
set -euo pipefail
cd "$(dirname "$0")"

seconds=600
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    -*) echo "fuzz/run.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
all=(image_classify y4m config manifest camera_frames)
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz/run.sh: no nightly toolchain (libFuzzer needs it); tests/it/fuzz.rs runs on stable" >&2
  exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz/run.sh: cargo-fuzz is not installed: cargo install cargo-fuzz" >&2
  exit 2
fi

work="${FERRITE_FUZZ_DIR:-$HOME/ferrite-fuzz}"
seeds=../tests/fuzz-seeds
seed_corpus() {
  local dir="$work/corpus/$1"
  mkdir -p "$dir"
  case "$1" in
    image_classify) cp "$seeds"/face.{png,jpg,bmp,pgm} "$dir/" ;;
    y4m) cp "$seeds/clip.y4m" "$dir/" ;;
    config) cp "$seeds/ferrite.toml" "$dir/" ;;
    manifest) cp "$seeds/manifest.json" "$dir/" ;;
    camera_frames)
      cp "$seeds/face.jpg" "$dir/"
      # format (0 YUYV, 1 UYVY, 2 GREY), width, height, stride (u16 LE), then a 16x8 frame.
      python3 -c "import sys; sys.stdout.buffer.write(bytes([0, 16, 8, 32, 0]) + bytes(range(256)))" > "$dir/yuyv-16x8"
      python3 -c "import sys; sys.stdout.buffer.write(bytes([2, 16, 8, 20, 0]) + bytes(160))" > "$dir/grey-16x8-padded"
      ;;
    *) echo "fuzz/run.sh: unknown target $1 (targets: ${all[*]})" >&2; exit 2 ;;
  esac
}

status=0
for target in "${targets[@]}"; do
  seed_corpus "$target"
  mkdir -p "$work/artifacts/$target"
  echo "fuzz/run.sh: $target for ${seconds}s (corpus $work/corpus/$target)"
  log="$work/$target.log"
  # -rss_limit_mb bounds what one input may allocate: an absurd header must be refused, not honoured.
  if cargo +nightly fuzz run --release "$target" "$work/corpus/$target" -- \
      -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 \
      -artifact_prefix="$work/artifacts/$target/" > "$log" 2>&1; then
    echo "  no crash: $(grep -E '^#[0-9]+.*(DONE|pulse)' "$log" | tail -1)"
  else
    status=1
    echo "  FOUND A CRASH (log $log):"
    grep -E 'ERROR|panicked|Test unit written' "$log" | head -5 | sed 's/^/    /'
  fi
done
exit $status
