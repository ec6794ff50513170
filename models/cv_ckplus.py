#!/usr/bin/env python3
"""CK+48 subject-independent 10-fold cross-validation (7 classes incl. contempt).

The stage-1 backbones come from a checkpoint trained on FER2013 train only (no CK+ image is seen in
stage 1, so no CK+ subject can leak through the backbones). Per fold: stage 2 (frozen backbones, new heads,
class-balanced batches, fixed number of epochs, no model selection on the test fold) on the training
folds' crops (original + horizontal flip); optionally a short stage 3 fine-tune (--finetune-steps);
evaluation of the ensemble and of each sub-network alone on the held-out subjects; optionally the same
fold model exported and quantized to int8 (--int8) and evaluated with onnxruntime.

Folds: subjects (S### prefix) are shuffled with --seed and dealt to folds by image count; a subject's
images are never split across folds (tested in models/tests).

    python3 models/cv_ckplus.py --init models/runs/s1_48/last.pt --size 48 --out models/results/ckplus48_cv_48.json
"""
import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import data as D
import fermodel as fm
from evaluate import metrics, plot_confusion, run_onnx
from train import cached_features, finetune, load_model, predict, train_heads


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--init", required=True, help="stage-1 checkpoint (FER2013-only backbones)")
    ap.add_argument("--size", type=int, default=48)
    ap.add_argument("--folds", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=60, help="stage-2 epochs per fold")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--finetune-steps", type=int, default=0, help="stage-3 steps per fold (0: frozen only)")
    ap.add_argument("--finetune-lr", type=float, default=1e-4)
    ap.add_argument("--int8", action="store_true", help="also export+quantize each fold model and evaluate it")
    ap.add_argument("--split", default="ckplus48")
    ap.add_argument("--cache", default=str(D.CACHE))
    ap.add_argument("--out", required=True, help="results JSON")
    ap.add_argument("--png", help="pooled confusion matrix PNG (ensemble)")
    args = ap.parse_args()
    torch.set_num_threads(int(__import__("os").environ.get("FERRITE_THREADS", "2")))
    d = D.load_split(args.split, args.cache)
    labels = [str(c) for c in d["classes"]]
    y = d["labels"]
    x = D.to_tensor(D.preprocessed(d, args.size, args.split, args.cache))
    lm = torch.from_numpy(d["landmarks"])
    folds = D.subject_folds(d["names"], args.folds, args.seed)
    base, _ = load_model(args.init, n_classes=len(labels))
    base.to(fm.pick_device()).eval()
    f0 = cached_features(base, args.init, args.split, args.size, x, args.cache, False)
    f1 = cached_features(base, args.init, args.split, args.size, x, args.cache, True)
    kinds = ["frozen"] + (["finetuned"] if args.finetune_steps else [])
    pooled = {k: np.zeros((len(y), 5, len(labels)), np.float32) for k in kinds}
    pooled_q = {k: np.zeros((len(y), 5, len(labels)), np.float32) for k in kinds} if args.int8 else None
    per_fold = []
    t0 = time.time()
    tmp = Path(tempfile.mkdtemp())
    for f in range(args.folds):
        tr, te = np.where(folds != f)[0], np.where(folds == f)[0]
        model = copy.deepcopy(base)
        ftr = torch.cat([f0[tr], f1[tr]])
        ytr = np.concatenate([y[tr], y[tr]])
        train_heads(model, ftr, ytr, epochs=args.epochs, lr=args.lr, batch=64, seed=args.seed + f)
        row = {"fold": f, "n_test": int(len(te)), "test_subjects": sorted({D.subject_of(n) for n in d["names"][te]})}
        variants = [("frozen", model)]
        if args.finetune_steps:
            ft = copy.deepcopy(model)
            finetune(ft, x[tr], y[tr], lm[tr], args.finetune_steps, args.finetune_lr, 32, args.seed + f,
                     desc=f"fold {f} stage3")
            variants.append(("finetuned", ft))
        for kind, m in variants:
            lg, _ = predict(m, x[te])
            pp = F.softmax(lg, -1).numpy()
            pooled[kind][te] = pp
            r = metrics(y[te], pp, labels)
            row[kind] = {"accuracy": r["accuracy"], "part_accuracy": r["part_accuracy"]}
            if args.int8:
                fm.export_onnx(copy.deepcopy(m).cpu(), tmp / "f.onnx", args.size)
                rs = np.random.RandomState(f)
                cal = x[tr][rs.choice(len(tr), min(256, len(tr)), replace=False)].numpy()
                fm.quantize_int8(tmp / "f.onnx", tmp / "q.onnx", cal)
                qpp, _ = run_onnx(tmp / "q.onnx", x[te].numpy())
                pooled_q[kind][te] = qpp
                row[kind]["int8_accuracy"] = metrics(y[te], qpp, labels)["accuracy"]
        per_fold.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "test_subjects"}), f"({time.time() - t0:.0f}s)")

    res = {"protocol": f"CK+48 subject-independent {args.folds}-fold CV, 7 classes incl. contempt; stage-1 backbones "
                       f"trained on FER2013 train only ({args.init}); per-fold stage-2 heads ({args.epochs} epochs, "
                       f"class-balanced), stage-3 fine-tune {args.finetune_steps} steps/fold",
           "size": args.size, "labels": labels, "n": int(len(y)), "folds": per_fold,
           "wall_seconds": round(time.time() - t0, 1)}
    for kind in kinds:
        accs = np.array([r[kind]["accuracy"] for r in per_fold])
        s = {"ensemble_mean": float(accs.mean()), "ensemble_std": float(accs.std(ddof=1)),
             "parts": {n: {"mean": float(np.mean([r[kind]["part_accuracy"][n] for r in per_fold])),
                           "std": float(np.std([r[kind]["part_accuracy"][n] for r in per_fold], ddof=1))}
                       for n in fm.PART_NAMES}}
        pm = metrics(y, pooled[kind], labels)
        s["pooled_accuracy"], s["recall"], s["confusion"] = pm["accuracy"], pm["recall"], pm["confusion"]
        if args.int8:
            qa = np.array([r[kind]["int8_accuracy"] for r in per_fold])
            qm = metrics(y, pooled_q[kind], labels)
            s["int8"] = {"ensemble_mean": float(qa.mean()), "ensemble_std": float(qa.std(ddof=1)),
                         "pooled_accuracy": qm["accuracy"], "recall": qm["recall"]}
        res[kind] = s
        print(kind, json.dumps({k: v for k, v in s.items() if k != "confusion"}))
        if args.png:
            png = args.png if kind == "frozen" else args.png.replace(".png", f"_{kind}.png")
            plot_confusion(np.array(pm["confusion"]), labels,
                           f"CK+48 {args.folds}-fold ({kind}, {args.size}px): {s['ensemble_mean'] * 100:.2f} "
                           f"± {s['ensemble_std'] * 100:.2f}%", png)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
