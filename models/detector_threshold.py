#!/usr/bin/env python3
"""How many faces the face detector finds at each score threshold, in gray and colour frames.

    python3 models/detector_threshold.py [--binary target/release/ferrite] [--detector short|long]
                                         [--data ../shared/datasets] [--fer 200] [--json FILE]

Cameras give ferrite's detector gray frames (the Y plane of YUYV, no colour conversion), and BlazeFace
scores a gray face lower than the same face in colour. This script measures what that does to each
threshold. It writes 640x480 frames into a temporary directory and runs `ferrite classify
--score-threshold 0.05 --max-faces 1` on them:
- `colour` / `gray`: the public-domain photos (scikit-image's astronaut from assets/, and matplotlib's
  grace_hopper.jpg when matplotlib is installed), each at 5 sizes and 4 random positions on a plain
  background, once in colour and once converted to gray;
- `fer-gray`: `--fer` random FER2013 public_test faces (research data, never written into the
  repository), upscaled to 120-260 px and pasted on a gray background;
- `faceless`: crops of the photos' lower parts (no face), scaled to 640x480.
A frame counts as found at threshold t when its best detection scores at least t. Seeded (seed 0).
"""
import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
THRESHOLDS = (0.4, 0.5, 0.6, 0.65, 0.7, 0.75)
FRAME = (640, 480)


def photos():
    out = {"astronaut": Image.open(ROOT / "assets/astronaut.png").convert("RGB")}
    try:
        import matplotlib

        hopper = Path(matplotlib.get_data_path()) / "sample_data/grace_hopper.jpg"
        out["grace_hopper"] = Image.open(hopper).convert("RGB")
    except (ImportError, OSError):
        print("detector_threshold: matplotlib's grace_hopper.jpg not found; astronaut only", file=sys.stderr)
    return out


def make_frames(root: Path, data: Path, fer: int, rng: random.Random):
    """Writes the frame sets under root/<set>/ and returns their names."""
    for name in ("colour", "gray", "fer-gray", "faceless"):
        (root / name).mkdir(parents=True)
    for name, im in photos().items():
        for h in (240, 320, 400, 480, 560):
            w = im.width * h // im.height
            scaled = im.resize((w, h))
            for k in range(4):
                frame = Image.new("RGB", FRAME, tuple(rng.randint(20, 200) for _ in range(3)))
                frame.paste(scaled, (rng.randint(-w // 4, FRAME[0] - w + w // 4),
                                     rng.randint(-h // 6, max(-h // 6 + 1, FRAME[1] - h))))
                frame.save(root / "colour" / f"{name}_{h}_{k}.png")
                frame.convert("L").save(root / "gray" / f"{name}_{h}_{k}.png")
        gray = im.convert("L")
        for k in range(20):
            x0, y0 = rng.randint(0, gray.width // 3), rng.randint(gray.height // 2, 2 * gray.height // 3)
            crop = gray.crop((x0, y0, min(gray.width, x0 + gray.width // 2), gray.height))
            crop.resize(FRAME).save(root / "faceless" / f"{name}_{k}.png")
    files = sorted((data / "fer2013/public_test").glob("*/*"))
    if not files:
        print(f"detector_threshold: no FER2013 public_test under {data}; fer-gray skipped", file=sys.stderr)
    rng.shuffle(files)
    for i, path in enumerate(files[:fer]):
        side = rng.choice((120, 160, 200, 260))
        face = Image.open(path).convert("L").resize((side, side), Image.BILINEAR)
        frame = Image.new("L", FRAME, rng.randint(30, 200))
        frame.paste(face, (rng.randint(0, FRAME[0] - side), rng.randint(0, FRAME[1] - side)))
        frame.save(root / "fer-gray" / f"{i:04d}.png")


def best_scores(lines, names):
    """The best detection score per file name (0 where nothing was detected), in `names` order."""
    best = {}
    for line in lines:
        record = json.loads(line)
        if "score" in record:
            name = Path(record["file"]).name
            best[name] = max(best.get(name, 0.0), record["score"])
    return [best.get(n, 0.0) for n in names]


def found(scores, thresholds=THRESHOLDS):
    return {t: sum(s >= t for s in scores) for t in thresholds}


def table(rows):
    head = "| frames | n | " + " | ".join(f">= {t}" for t in THRESHOLDS) + " |"
    lines = [head, "|" + "---|" * (len(THRESHOLDS) + 2)]
    for name, n, counts in rows:
        lines.append(f"| {name} | {n} | " + " | ".join(str(counts[t]) for t in THRESHOLDS) + " |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", default=str(ROOT / "target/release/ferrite"))
    ap.add_argument("--detector", default="short", choices=("short", "long"))
    ap.add_argument("--data", default=str(ROOT.parent / "shared/datasets"))
    ap.add_argument("--fer", type=int, default=200, help="FER2013 faces to paste (default 200)")
    ap.add_argument("--json", help="also write the counts here")
    args = ap.parse_args()
    rng = random.Random(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_frames(root, Path(args.data), args.fer, rng)
        for name in ("colour", "gray", "fer-gray", "faceless"):
            names = sorted(p.name for p in (root / name).glob("*.png"))
            if not names:
                continue
            cmd = [args.binary, "classify", "--threads", "1", "--detector", args.detector,
                   "--score-threshold", "0.05", "--max-faces", "1", str(root / name)]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode not in (0, 1):
                sys.exit(f"detector_threshold: {' '.join(cmd[:2])} failed: {out.stderr.strip()}")
            rows.append((name, len(names), found(best_scores(out.stdout.splitlines(), names))))
    print(f"frames whose best {args.detector}-detector score reaches each threshold:")
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"detector": args.detector, "rows": [{"frames": n, "count": c, "found": {str(t): v for t, v in f.items()}}
                                                 for n, c, f in rows]}, indent=1))


if __name__ == "__main__":
    main()
