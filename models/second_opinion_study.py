#!/usr/bin/env python3
"""What the detector's second opinion keeps and drops, by pass (whole frame or tiles) and threshold.

    python3 models/camera_frames.py --split ../shared/datasets/fer2013/train --limit 2000 --seed 1 \\
        --out /tmp/train-frames                       # camera-like frames, each with one known face
    python3 models/second_opinion_study.py --binary target/release/ferrite \\
        --frames /tmp/train-frames/faces.jsonl --faceless 1500 --out /tmp/second-opinion

A face scoring below 0.85 in a still image is checked again in two crops around it (docs/detection.md,
"The second opinion"), and kept when the mean of its score and its two re-detections reaches the
threshold of the pass that found it. `ferrite classify` logs every such check at debug level
(`RUST_LOG=ferrite::detect=debug`); this script runs it on one frame at a time, reads those lines,
and calls a checked detection true when it is the frame's known face (`camera_frames.found`) and
false otherwise. Two kinds of frames:
- `--frames`: the faces.jsonl of a `camera_frames.py` run, one pasted face per frame. Use FER2013
  train faces to choose thresholds; keep public_test for the result.
- `--faceless N`: N frames without faces, made (seeded) from scikit-image's CC0 and public-domain
  photos that hold none: textures, a cat, a coffee cup, a retina, the Hubble deep field; random
  crops at 320x240 or 640x480, half of them gray, blurred and JPEG-compressed like a camera's.
It prints, per pass and threshold, the true faces dropped and the false faces kept, and writes
every check to OUT/checks.json.
"""
import argparse
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from camera_frames import found  # noqa: E402

THRESHOLDS = (0.55, 0.6, 0.62, 0.65, 0.68, 0.7)
FACELESS = ("brick", "grass", "gravel", "coffee", "rocket", "hubble_deep_field", "chelsea", "horse",
            "clock", "retina")
# src/detect/mod.rs, Detector::keep_verified: the opinion, the detection's score, its box, the pass.
CHECK = re.compile(r"second opinion ([\d.]+) on a face scoring ([\d.]+) at BBox \{ x: ([-\d.e]+), "
                   r"y: ([-\d.e]+), w: ([-\d.e]+), h: ([-\d.e]+) \} \((\w+)\)")


def checks(log, face_box):
    """The second-opinion checks in one frame's debug log, each marked true when it is the face."""
    out = []
    for m in CHECK.finditer(log):
        opinion, score, x, y, w, h = map(float, m.groups()[:6])
        out.append({"opinion": opinion, "score": score, "box": [x, y, w, h], "pass": m.group(7),
                    "true": face_box is not None and found(face_box, [x, y, w, h])})
    return out


def table(all_checks, thresholds=THRESHOLDS):
    """Per pass and threshold: (true faces dropped, false faces kept) among the checked ones."""
    rows = {}
    for pass_name in sorted({c["pass"] for c in all_checks}):
        mine = [c for c in all_checks if c["pass"] == pass_name]
        rows[pass_name] = {t: (sum(c["true"] and c["opinion"] < t for c in mine),
                               sum(not c["true"] and c["opinion"] >= t for c in mine))
                           for t in thresholds}
    return rows


def faceless_frames(out, count, seed=0):
    """`count` camera-like frames without faces, as JPEG files under `out`."""
    from skimage import data  # only here: the tests need no scikit-image

    sources = []
    for name in FACELESS:
        pixels = getattr(data, name)()
        if pixels.dtype != np.uint8:
            pixels = (pixels * 255 if pixels.max() <= 1 else pixels).astype(np.uint8)
        sources.append(Image.fromarray(pixels).convert("RGB"))
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        image = sources[int(rng.integers(len(sources)))]
        size = (320, 240) if rng.random() < 0.7 else (640, 480)
        w = min(image.width, int(image.width * rng.uniform(0.3, 1.0)), int(image.height * 4 / 3))
        h = w * 3 // 4
        x, y = int(rng.integers(0, image.width - w + 1)), int(rng.integers(0, image.height - h + 1))
        frame = image.crop((x, y, x + w, y + h)).resize(size, Image.Resampling.BILINEAR)
        if rng.random() < 0.5:
            frame = frame.convert("L")
        frame = frame.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.0, 1.2))))
        buffer = BytesIO()
        frame.save(buffer, "JPEG", quality=int(rng.integers(60, 91)))
        path = out / f"faceless_{i:05d}.jpg"
        path.write_bytes(buffer.getvalue())
        paths.append(path)
    return paths


def run(binary, frame, face_box, extra):
    env = dict(os.environ, RUST_LOG="ferrite::detect=debug")
    result = subprocess.run([binary, "classify", "--threads", "1", "--keep-model", *extra, str(frame)],
                            capture_output=True, text=True, env=env)
    if result.returncode != 0:
        sys.exit(f"second_opinion_study: {binary} failed on {frame}: {result.stderr.strip()[-300:]}")
    return [dict(c, frame=str(frame)) for c in checks(result.stderr, face_box)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default="target/release/ferrite")
    ap.add_argument("--frames", help="faces.jsonl of a camera_frames.py run")
    ap.add_argument("--faceless", type=int, default=0, help="also make and check this many faceless frames")
    ap.add_argument("--out", required=True, help="directory for the faceless frames and checks.json")
    ap.add_argument("--seed", type=int, default=0, help="seed of the faceless frames")
    ap.add_argument("--ferrite-arg", action="append", default=[], help="passed to `ferrite classify`")
    args = ap.parse_args()
    out = Path(args.out)
    jobs = []
    if args.frames:
        jobs += [(Path(j["frame"]), j["face_box"]) for j in map(json.loads, open(args.frames))]
    jobs += [(p, None) for p in faceless_frames(out / "faceless", args.faceless, args.seed)]
    if not jobs:
        sys.exit("second_opinion_study: nothing to check: give --frames, --faceless or both")
    print(f"second_opinion_study: {len(jobs)} frames, one `ferrite classify` each", file=sys.stderr)
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        found_checks = [c for cs in pool.map(lambda j: run(args.binary, *j, args.ferrite_arg), jobs) for c in cs]
    (out / "checks.json").write_text(json.dumps(found_checks))
    with_face = sum(face is not None for _, face in jobs)
    print(f"{len(found_checks)} checks on {with_face} frames with a face and {len(jobs) - with_face} without")
    print("| pass | threshold | true faces dropped | false faces kept |\n|---|---|---|---|")
    for pass_name, rows in table(found_checks).items():
        for t, (dropped, kept) in rows.items():
            print(f"| {pass_name} | {t:.2f} | {dropped} | {kept} |")


if __name__ == "__main__":
    main()
