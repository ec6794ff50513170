#!/usr/bin/env bash
# Model v2, the whole training recipe from the cached datasets to the stage-4 checkpoint and its
# CK+ cross-validation, resumable.
# Every stage checkpoints into $FERRITE_RUNS/v2/<stage>/ and is skipped once its final file exists, so
# rerunning this script continues where the last run stopped (a session's end, a reboot, --minutes).
# The run directories live outside the checkout (the work tree may be laid anew); if one is gone, its
# stage starts again from the previous stage's output.
#
#   nohup nice -n 10 models/recipe_v2.sh --minutes 120 > ~/ferrite-runs/v2.log 2>&1 &
#
# Stages (models/README.md, "Model v2"):
#   prep  dlib teacher landmarks for FER2013 train/public_test and CK+48 (cache)
#   s1    landmark regression per part (paper), FER2013 train, 20 epochs
#   s2    frozen backbones, new heads (paper-faithful variant), selected on public_test
#   s3    fine-tune everything on FER2013 train: label smoothing, random erasing, crop-scale jitter
#   s4    short fine-tune on FER2013 train + CK+48 (contempt dropped, labels mapped), the shipped model
#   cv    s4 ten times, each without one CK+ subject fold, scored on that fold (models/cv_eval.py)
# Export, quantization and evaluation follow the card's "Reproduce" section.
set -euo pipefail
cd "$(dirname "$0")/.."

minutes=0
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) minutes="$2"; shift 2 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "recipe_v2: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
done

runs="${FERRITE_RUNS:-$HOME/ferrite-runs}"
cache="$runs/cache"
out="$runs/v2"
mkdir -p "$out"
start=$(date +%s)
export TQDM_DISABLE="${TQDM_DISABLE:-1}"

# Minutes left of the --minutes budget (0 = unlimited), passed to each stage as --max-minutes.
left() {
  if [ "$minutes" = 0 ]; then echo 0; return; fi
  awk -v m="$minutes" -v s="$start" -v now="$(date +%s)" 'BEGIN { l = m - (now - s) / 60; printf "%.1f", (l > 0.5 ? l : 0.5) }'
}
# A stage that stopped on --max-minutes leaves no final file: stop here, a rerun resumes it.
need() {
  if [ ! -e "$1" ]; then
    echo "recipe_v2: $(date -u +%FT%TZ) stopped before $1 exists; rerun to resume"
    exit 0
  fi
}
log() { echo "recipe_v2: $(date -u +%FT%TZ) $*"; }

if [ ! -f "$cache/fer2013_train.npz" ] || [ ! -f "$cache/fer2013_public_test.npz" ] || [ ! -f "$cache/ckplus48.npz" ]; then
  log "prep: teacher landmarks into $cache"
  python3 models/prep_data.py --cache "$cache"
fi

common=(--cache "$cache" --size 48 --seed 0)
if [ ! -f "$out/s1/history.json" ]; then
  log "s1: landmark regression"
  python3 models/train.py stage1 "${common[@]}" --batch 128 --epochs 20 --lr 2e-3 --out "$out/s1" --max-minutes "$(left)"
fi
need "$out/s1/history.json"

if [ ! -f "$out/s2/best.pt" ]; then
  log "s2: frozen backbones, new heads"
  python3 models/train.py stage2 "${common[@]}" --init "$out/s1/last.pt" --epochs 30 --out "$out/s2"
fi
need "$out/s2/best.pt"

if [ ! -f "$out/s3/history.json" ]; then
  log "s3: fine-tune on FER2013"
  python3 models/train.py stage3 "${common[@]}" --init "$out/s2/best.pt" --batch 128 --epochs 40 --lr 2e-3 \
    --eval-every 224 --label-smoothing 0.1 --erase 0.25 --scale-jitter 0.1 --out "$out/s3" --max-minutes "$(left)"
fi
need "$out/s3/history.json"

# s4's settings, shared with the cross-validation folds below.
s4=(--train fer2013_train,ckplus48 --mix-weight 4 --batch 128 --epochs 2 --lr 2e-4 --eval-every 112
    --label-smoothing 0.1 --erase 0.25 --scale-jitter 0.1)
if [ ! -f "$out/s4/history.json" ]; then
  log "s4: fine-tune on FER2013 + CK+48"
  python3 models/train.py stage3 "${common[@]}" --init "$out/s3/best.pt" "${s4[@]}" --out "$out/s4" \
    --max-minutes "$(left)"
fi
need "$out/s4/history.json"
log "done: $out/s4/best.pt (FER2013 + CK+48) and $out/s3/best.pt (FER2013 only)"

# cv: s4 once per CK+ subject fold with that fold's subjects left out, scored on them.
for fold in 0 1 2 3 4 5 6 7 8 9; do
  if [ ! -f "$out/cv/fold$fold/history.json" ]; then
    log "cv: fold $fold of 10"
    python3 models/train.py stage3 "${common[@]}" --init "$out/s3/best.pt" "${s4[@]}" \
      --exclude-fold "$fold" --folds 10 --out "$out/cv/fold$fold" --max-minutes "$(left)"
  fi
  need "$out/cv/fold$fold/history.json"
done
if [ ! -f "$out/cv/result.json" ]; then
  python3 models/cv_eval.py --runs "$out/cv" --cache "$cache" --out "$out/cv/result.json" --png "$out/cv/result.png"
fi
log "cv done: $out/cv/result.json"
