#!/usr/bin/env python3
"""Camera frames against crops: how much accuracy the detect-and-crop path of a live camera costs.

Builds camera-like frames from labelled face crops (FER2013 public_test by default): each face is
upscaled to a random size, pasted at a random place on a real texture or photo (scikit-image's CC0
and public-domain sample data), and the frame is then blurred, toned, JPEG-compressed and turned
gray the way a camera's Y plane reaches the detector. `ferrite classify` then runs twice on the
same faces: on the frames (detect, crop, classify) and on the original crops (`--no-detect`).
A face counts as found when a detection's centre lies inside the pasted face and its size is
between 0.4 and 1.4 times the face's; a face not found counts as wrong on the frames.

    python3 models/camera_frames.py --binary target/release/ferrite \\
        --split ../shared/datasets/fer2013/public_test --limit 1000 --out /tmp/camera-frames

The frames are written under OUT/frames/<label>/ (never commit them: they are FER2013 faces), the
result to OUT/result.json (or --json) with the crop geometry of the found faces (where the pasted
face sits relative to the detector's box, in a manifest's `crop` terms), and one line per face
(its box, the detection matched to it, both labels) to OUT/faces.jsonl. Every frame draws from a generator seeded with
(--seed, index), so a run is reproducible and `--limit N` builds the first N frames of the full
set. The model card (models/README.md, "Camera frames") quotes the result.
"""
import argparse
import json
import subprocess
import sys
import time
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".pgm"}
# Gray textures and photos without faces; each is CC0 or public domain (tests/detection/README.md).
BACKGROUNDS = ("brick", "grass", "gravel", "coffee", "rocket", "hubble_deep_field")
# The face's side in pixels on a 320x240 frame: from a face across the room of a 640x480 camera
# at half resolution (96) to a face close to a kiosk (200). The detector's own limits sit outside.
FACE_SIZES = (96, 200)
FRAME = (320, 240)
ALIASES = {"anger": "angry", "sadness": "sad"}


def labelled_images(split):
    """(path, label) of every image under split/<label>/, sorted for a stable order. CK+'s class
    names are read as the model's (anger = angry, sadness = sad), as `ferrite eval` does."""
    items = []
    for label_dir in sorted(p for p in Path(split).iterdir() if p.is_dir()):
        label = ALIASES.get(label_dir.name, label_dir.name)
        for path in sorted(label_dir.rglob("*")):
            if path.suffix.lower() in EXTENSIONS:
                items.append((path, label))
    return items


def pick(items, limit, seed):
    """A fixed random subset of `limit` items (all with 0), in a seeded order."""
    order = np.random.default_rng(seed).permutation(len(items))
    if limit:
        order = order[:limit]
    return [items[i] for i in sorted(order)]


def load_backgrounds():
    from skimage import data  # only here: the tests build frames without it

    images = []
    for name in BACKGROUNDS:
        image = Image.fromarray(getattr(data, name)())
        images.append(image.convert("L"))
    return images


def cover(image, size, rng):
    """`image` scaled to cover `size` (up to 1.5x more) and cropped at a random place."""
    k = max(size[0] / image.width, size[1] / image.height) * rng.uniform(1.0, 1.5)
    scaled = image.resize((max(size[0], round(image.width * k)), max(size[1], round(image.height * k))),
                          Image.Resampling.BICUBIC)
    x = int(rng.integers(0, scaled.width - size[0] + 1))
    y = int(rng.integers(0, scaled.height - size[1] + 1))
    return scaled.crop((x, y, x + size[0], y + size[1]))


def camera_frame(face, backgrounds, rng, frame=FRAME, sizes=FACE_SIZES):
    """One gray camera-like frame with `face` pasted on it, and the face's box [x, y, w, h]."""
    side = int(rng.integers(sizes[0], sizes[1] + 1))
    side = min(side, frame[0], frame[1])
    canvas = cover(backgrounds[int(rng.integers(len(backgrounds)))], frame, rng)
    x = int(rng.integers(0, frame[0] - side + 1))
    y = int(rng.integers(0, frame[1] - side + 1))
    canvas.paste(face.convert("L").resize((side, side), Image.Resampling.BICUBIC), (x, y))
    # A camera's optics and auto-exposure: a little defocus, a gain and an offset.
    canvas = canvas.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.0, 1.2))))
    toned = np.asarray(canvas, float) * rng.uniform(0.75, 1.25) + rng.uniform(-20, 20)
    canvas = Image.fromarray(np.clip(toned, 0, 255).astype(np.uint8))
    # The compression of an MJPEG camera.
    buffer = BytesIO()
    canvas.save(buffer, "JPEG", quality=int(rng.integers(60, 91)))
    buffer.seek(0)
    return Image.open(buffer).convert("L"), [x, y, side, side]


def found(face_box, detection_box):
    """Whether a detection is the pasted face: its centre inside the face, a plausible size."""
    fx, fy, fw, fh = face_box
    dx, dy, dw, dh = detection_box
    cx, cy = dx + dw / 2, dy + dh / 2
    inside = fx <= cx <= fx + fw and fy <= cy <= fy + fh
    return inside and 0.4 * fw <= max(dw, dh) <= 1.4 * fw


def classify(binary, paths, extra, no_detect):
    """`ferrite classify` over `paths`: file -> list of its JSON lines."""
    argv = [binary, "classify", *extra] + (["--no-detect"] if no_detect else []) + [str(p) for p in paths]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"camera_frames: {' '.join(argv[:4])} ... failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    lines = {}
    for line in done.stdout.splitlines():
        record = json.loads(line)
        lines.setdefault(record["file"], []).append(record)
    return lines


def score(items, frames, boxes, frame_lines, crop_lines, labels):
    """Accuracy on the frames and on the crops, the faces found, and both confusion matrices."""
    index = {label: i for i, label in enumerate(labels)}
    n = len(items)
    conf_frames = np.zeros((len(labels), len(labels)), int)
    conf_crops = np.zeros_like(conf_frames)
    hits = right_frames = right_crops = 0
    detail = []
    for (path, label), frame, box in zip(items, frames, boxes):
        truth = index[label]
        crop = (crop_lines.get(str(path)) or [{}])[0]
        if crop.get("label") in index:
            conf_crops[truth, index[crop["label"]]] += 1
            right_crops += crop["label"] == label
        faces = [r for r in frame_lines.get(str(frame), []) if "box" in r and found(box, r["box"])]
        best = max(faces, key=lambda r: r.get("score") or 0.0) if faces else {}
        if faces:
            hits += 1
            conf_frames[truth, index[best["label"]]] += 1
            right_frames += best["label"] == label
        detail.append({"frame": str(frame), "crop": str(path), "truth": label, "face_box": box,
                       "detection": best.get("box"), "score": best.get("score"),
                       "frame_label": best.get("label"), "crop_label": crop.get("label")})
    return {
        "faces": n,
        "found": hits / n,
        "frames_accuracy": right_frames / n,
        "crops_accuracy": right_crops / n,
        "frames_minus_crops_points": 100 * (right_frames - right_crops) / n,
        "frames_accuracy_of_found": right_frames / hits if hits else None,
        "labels": labels,
        "confusion_frames": conf_frames.tolist(),
        "confusion_crops": conf_crops.tolist(),
    }, detail


def crop_geometry(detail):
    """Where the pasted faces sit relative to the detector's boxes, as a manifest's `crop` block
    measures it: side = scale * max(w, h), centre = box centre + (shift_x, shift_y) * max(w, h).
    Medians over the found faces, with quartiles: a calibration for camera-like frames."""
    rows = []
    for d in detail:
        if not d["detection"]:
            continue
        x, y, w, h = d["detection"]
        fx, fy, fw, fh = d["face_box"]
        extent = max(w, h)
        rows.append((fw / extent, (fx + fw / 2 - x - w / 2) / extent, (fy + fh / 2 - y - h / 2) / extent))
    if not rows:
        return None
    values = np.array(rows)
    quartiles = np.percentile(values, [25, 50, 75], axis=0)
    return {name: {"median": float(quartiles[1, i]), "quartiles": [float(quartiles[0, i]), float(quartiles[2, i])]}
            for i, name in enumerate(("scale", "shift_x", "shift_y"))} | {"faces": len(rows)}


def write_calibration(path, geometry, args):
    """The medians as the `crop` block a manifest carries, with the spread and the command."""
    command = (f"python3 models/camera_frames.py --split {args.split} --limit {args.limit} --seed {args.seed} "
               f"--calibration {path}")
    path.write_text(json.dumps({
        "_comment": f"Measured by: {command}. Where the detector's box sits on camera-like frames "
                    "relative to the pasted face; export.py --crop-calibration copies the geometry into "
                    "a manifest's \"crop\".",
        "geometry": {"scale": geometry["scale"]["median"], "shift_x": geometry["shift_x"]["median"],
                     "shift_y": geometry["shift_y"]["median"], "rotate": True},
        "faces": geometry["faces"],
        "quartiles": {k: geometry[k]["quartiles"] for k in ("scale", "shift_x", "shift_y")},
    }, indent=2) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default="target/release/ferrite", help="the ferrite binary to measure")
    ap.add_argument("--split", default="../shared/datasets/fer2013/public_test",
                    help="labelled crops: SPLIT/<label>/*.png")
    ap.add_argument("--out", required=True, help="directory for the frames and result.json")
    ap.add_argument("--limit", type=int, default=1000, help="faces to use (0: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="result file [default: OUT/result.json]")
    ap.add_argument("--calibration", help="also write the found faces' median crop geometry as a crop "
                    "calibration (models/crop_calibration.json's format, for export.py --crop-calibration); "
                    "measure it on a training split, never on the faces you report")
    ap.add_argument("--ferrite-arg", action="append", default=[],
                    help="passed to both classify runs, e.g. --ferrite-arg=--model=models/fer2013-48-int8")
    args = ap.parse_args()

    items = pick(labelled_images(args.split), args.limit, args.seed)
    if not items:
        sys.exit(f"camera_frames: no labelled images under {args.split}")
    backgrounds = load_backgrounds()
    out = Path(args.out)
    frames, boxes = [], []
    start = time.time()
    for i, (path, label) in enumerate(items):
        rng = np.random.default_rng([args.seed, i])
        frame, box = camera_frame(Image.open(path), backgrounds, rng)
        target = out / "frames" / label / f"{i:05d}_{path.stem}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        frame.save(target, quality=95)
        frames.append(target)
        boxes.append(box)
        if (i + 1) % 250 == 0:
            print(f"camera_frames: built {i + 1}/{len(items)} frames", file=sys.stderr)
    print(f"camera_frames: {len(items)} frames in {time.time() - start:.0f} s; classifying", file=sys.stderr)
    frame_lines = classify(args.binary, frames, args.ferrite_arg, no_detect=False)
    crop_lines = classify(args.binary, [p for p, _ in items], args.ferrite_arg, no_detect=True)
    # The split's classes and the model's: either may have one the other lacks (CK+ has no neutral).
    predicted = {r["label"] for lines in (frame_lines, crop_lines)
                 for records in lines.values() for r in records if "label" in r}
    labels = sorted({label for _, label in items} | predicted)
    result, detail = score(items, frames, boxes, frame_lines, crop_lines, labels)
    result["crop_geometry"] = crop_geometry(detail)
    with (out / "faces.jsonl").open("w") as f:
        f.writelines(json.dumps(d) + "\n" for d in detail)
    result["settings"] = {
        "split": args.split, "limit": args.limit, "seed": args.seed, "frame": FRAME,
        "face_sizes": FACE_SIZES, "backgrounds": BACKGROUNDS, "ferrite_args": args.ferrite_arg,
    }
    if args.calibration and result["crop_geometry"]:
        write_calibration(Path(args.calibration), result["crop_geometry"], args)
    target = Path(args.json) if args.json else out / "result.json"
    target.write_text(json.dumps(result, indent=1) + "\n")
    print(f"faces {result['faces']}: found {100 * result['found']:.1f} %, "
          f"frames {100 * result['frames_accuracy']:.2f} %, crops {100 * result['crops_accuracy']:.2f} % "
          f"({result['frames_minus_crops_points']:+.2f} points); {target}")


if __name__ == "__main__":
    main()
