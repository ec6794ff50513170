#!/usr/bin/env python3
"""Collect models/results/*.json into models/results/summary.json and print the model card's tables."""
import json
from pathlib import Path

R = Path(__file__).resolve().parent / "results"
FER = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]


def main():
    s = {}
    rows, parts = [], []
    for name in ["fer2013-48-fp32", "fer2013-48-int8", "fer2013-48-frozen-fp32", "fer2013-48-frozen-int8"]:
        p = R / f"{name}_public_test.json"
        if not p.exists():
            continue
        r = json.loads(p.read_text())
        s[name] = {k: r[k] for k in ("accuracy", "part_accuracy", "recall", "landmark_mae_vs_teacher", "n")}
        rows.append(f"| `{name}` | **{r['accuracy'] * 100:.2f}** | " + " | ".join(f"{r['recall'][c] * 100:.1f}" for c in FER) + " |")
        parts.append(f"| `{name}` | " + " | ".join(f"{v * 100:.2f}" for v in r["part_accuracy"].values()) + " |")
    print("\n".join(rows))
    print()
    print("\n".join(parts))
    for f in ["ckplus48_cv_48_ft.json", "v2_ckplus48_cv.json", "resolution_study.json", "latency.json"]:
        if (R / f).exists():
            d = json.loads((R / f).read_text())
            if f.startswith("ckplus"):
                d = {k: ({kk: vv for kk, vv in v.items() if kk != "confusion"} if isinstance(v, dict) else v)
                     for k, v in d.items() if k != "folds"}
            s[f[:-5]] = d
    (R / "summary.json").write_text(json.dumps(s, indent=1) + "\n")
    print("wrote", R / "summary.json")


if __name__ == "__main__":
    main()
