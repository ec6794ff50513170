#!/usr/bin/env python3
"""Input-resolution study under one reduced, equal protocol per resolution (CPU budget).

For each size: stage 1 on a fixed random subset of --limit FER2013 train images for --epochs epochs;
stage 2 (frozen) heads on the same subset -> FER2013 public_test accuracy; CK+48 subject 10-fold CV with
frozen backbones -> mean accuracy. Latency: benchmark.py --random (onnxruntime, 1 thread, batch 1).
Results go to --out (JSON). The full-protocol numbers of the shipped model are reported separately.

    python3 models/resolution_study.py --sizes 48,64 --limit 3000 --epochs 2
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(*a):
    print("+", " ".join(map(str, a)), flush=True)
    t = time.time()
    subprocess.run([sys.executable, *map(str, a)], check=True, cwd=HERE.parent)
    return round(time.time() - t, 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="48,64")
    ap.add_argument("--limit", type=int, default=3000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--runs", default=str(HERE / "runs"))
    ap.add_argument("--out", default=str(HERE / "results" / "resolution_study.json"))
    args = ap.parse_args()
    res = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
    res["protocol"] = (f"stage 1 on a fixed random {args.limit}-image subset of FER2013 train, {args.epochs} epochs; "
                       f"stage-2 frozen heads on the same subset (FER2013 public_test), CK+48 subject 10-fold CV with "
                       f"frozen backbones")
    for s in [int(v) for v in args.sizes.split(",")]:
        r = Path(args.runs) / f"res{s}"
        t1 = run(HERE / "train.py", "stage1", "--size", s, "--limit", args.limit, "--epochs", args.epochs,
                 "--out", r / "s1")
        t2 = run(HERE / "train.py", "stage2", "--size", s, "--limit", args.limit, "--epochs", 15,
                 "--init", r / "s1" / "last.pt", "--out", r / "s2")
        fer = json.loads((r / "s2" / "history.json").read_text())
        t3 = run(HERE / "cv_ckplus.py", "--init", r / "s1" / "last.pt", "--size", s, "--out", r / "cv.json")
        cv = json.loads((r / "cv.json").read_text())
        res[str(s)] = {"fer2013_public_test_frozen": max(h["ensemble"] for h in fer),
                       "ckplus48_cv_frozen_mean": cv["frozen"]["ensemble_mean"],
                       "ckplus48_cv_frozen_std": cv["frozen"]["ensemble_std"],
                       "wall_seconds": {"stage1": t1, "stage2": t2, "cv": t3}}
        print(json.dumps(res[str(s)]), flush=True)
        Path(args.out).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("FERRITE_THREADS", "1")
    os.environ.setdefault("TQDM_MININTERVAL", "30")
    main()
