#!/usr/bin/env python3
"""Scores the CK+48 10-fold subject-independent cross-validation of the v2 recipe's last stage.

`models/recipe_v2.sh` trains one fold model per CK+ subject fold after s4, with s4's settings
(FER2013 train plus CK+48, from s3's weights) and that fold's subjects left out
(`train.py stage3 --exclude-fold K`; `data.subject_folds` deals the subjects to folds). This
script evaluates each fold model on exactly the images it never saw: its fold's subjects, with
contempt dropped as in training (the model has no such class). It prints each fold's accuracy and
writes the pooled confusion matrix, per-class recall and the folds' mean and spread.

    python3 models/cv_eval.py --runs ~/ferrite-runs/v2/cv --out models/results/v2_ckplus48_cv.json \\
        --png models/results/v2_ckplus48_cv.png
"""
import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch

import data as D
import fermodel as fm
from evaluate import metrics, plot_confusion
from train import load_model, predict


def held_out(names, y, fold, folds=10, seed=0):
    """Indices of the images a fold model was tested on: its fold's subjects, known classes only.
    The complement of what `data.mapped_split(..., exclude_fold=fold)` trains on."""
    return np.flatnonzero((D.subject_folds(names, folds, seed) == fold) & (y >= 0))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", required=True, help="directory with fold0/ ... foldN/ (each with best.pt)")
    ap.add_argument("--folds", type=int, default=10)
    ap.add_argument("--split", default="ckplus48")
    ap.add_argument("--size", type=int, default=48)
    ap.add_argument("--cache", default=str(D.CACHE))
    ap.add_argument("--out", required=True, help="result JSON")
    ap.add_argument("--png", help="pooled confusion matrix PNG")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("FERRITE_THREADS", "2")))

    labels = list(fm.FER_LABELS)
    d = D.load_split(args.split, args.cache)
    y = D.mapped_labels(d, labels)
    x = D.to_tensor(D.preprocessed(d, args.size, args.split, args.cache))
    ys, probs, per_fold = [], [], []
    for fold in range(args.folds):
        ckpt = Path(args.runs) / f"fold{fold}" / "best.pt"
        if not ckpt.exists():
            raise SystemExit(f"cv_eval: {ckpt} is missing: finish the folds first (models/recipe_v2.sh)")
        idx = held_out(d["names"], y, fold, args.folds)
        model, _ = load_model(ckpt, n_classes=len(labels))
        model.to(fm.pick_device())
        logits, _ = predict(model, x[idx])
        p = torch.softmax(logits.float(), -1).numpy()
        m = metrics(y[idx], p, labels)
        per_fold.append({"fold": fold, "n": m["n"], "accuracy": m["accuracy"],
                         "subjects": len({D.subject_of(n) for n in d["names"][idx]})})
        print(f"fold {fold}: {m['n']} images, {100 * m['accuracy']:.2f} %")
        ys.append(y[idx])
        probs.append(p)
    pooled = metrics(np.concatenate(ys), np.concatenate(probs), labels)
    accs = np.array([f["accuracy"] for f in per_fold])
    result = {"protocol": f"{args.split}, {args.folds}-fold subject-independent, contempt dropped; "
                          "each fold model trained on FER2013 train + the other folds (recipe_v2.sh s4 settings)",
              "pooled": pooled, "fold_mean": float(accs.mean()), "fold_std": float(accs.std()),
              "folds": per_fold}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"pooled {100 * pooled['accuracy']:.2f} % over {pooled['n']} images; "
          f"folds {100 * accs.mean():.2f} ± {100 * accs.std():.2f} %; {args.out}")
    if args.png:
        plot_confusion(np.array(pooled["confusion"]), labels,
                       f"CK+48 {args.folds}-fold CV, v2 recipe: {100 * pooled['accuracy']:.1f} %", args.png)


if __name__ == "__main__":
    main()
