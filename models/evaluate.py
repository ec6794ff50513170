#!/usr/bin/env python3
"""Evaluate an exported ONNX model (fp32 or int8) on a cached split with onnxruntime.

Prints and writes (JSON) ensemble accuracy, each sub-network's accuracy (from part_probabilities),
per-class recall and the confusion matrix; draws the confusion matrix to a PNG. Dataset classes are
mapped onto the model's labels by name (anger=angry, sadness=sad; classes the model lacks, e.g.
CK+ contempt, are dropped and counted).

    python3 models/evaluate.py --model models/fer2013-48-int8 --split fer2013_public_test \\
        --json models/results/fer2013-48-int8_public_test.json --png models/results/fer2013-48-int8_public_test.png
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np

import data as D
import fermodel as fm


def confusion(y, p, n):
    cm = np.zeros((n, n), int)
    np.add.at(cm, (y, p), 1)
    return cm


def plot_confusion(cm, labels, title, png):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rec = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6.2, 5.4), dpi=100)
    ax.imshow(rec, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, f"{rec[i, j] * 100:.0f}\n({cm[i, j]})", ha="center", va="center", fontsize=7,
                    color="white" if rec[i, j] > 0.6 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (row-normalised recall %, count)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    Path(png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png)
    plt.close(fig)


def metrics(y, part_probs, labels):
    """y: int labels; part_probs [N,5,C] -> dict of ensemble/part accuracies, recall, confusion."""
    ens = part_probs.mean(1).argmax(-1)
    cm = confusion(y, ens, len(labels))
    rec = {labels[i]: float(cm[i, i] / cm[i].sum()) if cm[i].sum() else None for i in range(len(labels))}
    return {"n": int(len(y)), "accuracy": float((ens == y).mean()),
            "part_accuracy": {n: float((part_probs[:, i].argmax(-1) == y).mean()) for i, n in enumerate(fm.PART_NAMES)},
            "recall": rec, "confusion": cm.tolist(), "labels": list(labels)}


def run_onnx(model_path, x, bs=128, threads=2):
    sess = fm.ort_session(model_path, threads=threads)
    pp, lm = [], []
    for i in range(0, len(x), bs):
        a, b = sess.run(["part_probabilities", "landmarks"], {"input": x[i:i + bs]})
        pp.append(a); lm.append(b)
    return np.concatenate(pp), np.concatenate(lm)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="model directory (model.onnx + manifest.json)")
    ap.add_argument("--split", default="fer2013_public_test")
    ap.add_argument("--cache", default=str(D.CACHE))
    ap.add_argument("--json")
    ap.add_argument("--png")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    mdir = Path(args.model)
    man = json.loads((mdir / "manifest.json").read_text())
    size, labels = man["input"]["height"], man["labels"]
    d = D.load_split(args.split, args.cache)
    x = D.to_tensor(D.preprocessed(d, size, args.split, args.cache)).numpy()
    cmap = D.fer_label_map(d["classes"]) if labels == fm.FER_LABELS else np.arange(len(d["classes"]))
    y = cmap[d["labels"]]
    keep = y >= 0
    t0 = time.time()
    pp, lm = run_onnx(mdir / man["file"], x[keep], threads=args.threads)
    res = metrics(y[keep], pp, labels)
    res.update(model=man["name"], format=man["format"], split=args.split, dropped=int((~keep).sum()),
               landmark_mae_vs_teacher=float(np.abs(lm - d["landmarks"][keep]).mean()),
               eval_seconds=round(time.time() - t0, 1))
    print(json.dumps({k: v for k, v in res.items() if k != "confusion"}, indent=1))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    if args.png:
        plot_confusion(np.array(res["confusion"]), labels,
                       f"{man['name']} on {args.split}: {res['accuracy'] * 100:.2f}% (n={res['n']})", args.png)


if __name__ == "__main__":
    main()
