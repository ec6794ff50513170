#!/usr/bin/env python3
"""Expression accuracy on rolled (tilted) faces with the crop's eye levelling on and off.

    python3 models/roll_study.py [--binary target/release/ferrite] [--data ../shared/datasets]
                                 [--faces 300] [--angles=-30,-20,-10,0,10,20,30] [--tiles off|auto]
                                 [--json FILE]

ferrite levels each face crop by the eye line from the detector's keypoints before classifying
(the manifest's `crop.rotate`, src/align.rs). This script measures what that buys. It takes
`--faces` random FER2013 public_test faces (research data: the frames go to a temporary directory,
never into the repository), upscales each to 160 px, rotates it by every angle (bilinear; positive
turns the face anticlockwise as seen in the image) and pastes it through a soft elliptical mask at
the centre of a plain mid-gray 400x400 frame. Then it runs `ferrite classify --max-faces 1` (with
`--tiles off` unless told otherwise) on all frames twice, with the same weights:
- `rotate on`: the bundled fer2013-48-fp32 (the default model on x86_64 and aarch64), as shipped;
- `rotate off`: a copy of models/fer2013-48-fp32 whose manifest says `"rotate": false` (the
  manifest's sha256 covers the ONNX file only, so the copy loads).
Per angle and setting it reports the detection rate, the accuracy (a missed face counts as wrong),
the accuracy over detected faces, and the agreement with the same face at 0 degrees (over faces
detected at both angles); per angle also the faces right only with rotate on and only with it off
(the discordant pairs of the paired comparison) and their exact sign test's p: the chance of a
split at least as uneven if the setting made no difference. Seeded (seed 0).
"""
import argparse
import json
import math
import random
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
MODEL = "fer2013-48-fp32"
FACE_SIDE = 160
FRAME_SIDE = 400
BACKGROUND = 128
SETTINGS = ("rotate", "norotate")
FRAME_NAME = re.compile(r"^(\d+)_([+-]\d+)\.png$")


def soft_ellipse(side: int) -> np.ndarray:
    """Alpha in [0, 1] over a side x side face: 1 inside a face-shaped ellipse, easing to 0 over its
    outer 15 %. The semi-axes (0.46 and 0.49 of the side) stay under half the side at any rotation,
    so rotating the square in place cuts nothing and its corners never show; a narrower ellipse or
    a wider fade hides cheeks and chin, and BlazeFace then misses more faces (80 % found upright at
    0.42/0.48 with a 25 % fade, 92 % here)."""
    centre = (np.arange(side) + 0.5 - side / 2) / side
    y, x = np.meshgrid(centre, centre, indexing="ij")
    r = np.hypot(x / 0.46, y / 0.49)
    t = np.clip((1.0 - r) / 0.15, 0.0, 1.0)
    # smoothstep, not a linear ramp: no kink where the fade starts either
    return t * t * (3 - 2 * t)


def face_frame(face: Image.Image, angle: int, side: int = FACE_SIDE, size: int = FRAME_SIDE,
               background: int = BACKGROUND) -> Image.Image:
    """A size x size gray frame with `face` scaled to side x side, rotated by `angle` degrees
    (anticlockwise) about its centre and blended in through soft_ellipse, centred in the frame."""
    face = face.convert("L").resize((side, side), Image.BILINEAR)
    alpha = Image.fromarray(np.round(soft_ellipse(side) * 255).astype(np.uint8))
    frame = Image.new("L", (size, size), background)
    corner = (size - side) // 2
    frame.paste(face.rotate(angle, Image.BILINEAR), (corner, corner),
                mask=alpha.rotate(angle, Image.BILINEAR))
    return frame


def frame_name(face: int, angle: int) -> str:
    return f"{face:04d}_{angle:+03d}.png"


def predictions(lines):
    """{(face, angle): predicted label} from `ferrite classify` JSON lines (a frame without a face
    has no line), and the error messages of frames that could not be read."""
    found, errors = {}, []
    for line in lines:
        record = json.loads(line)
        if "error" in record:
            errors.append(f"{record['file']}: {record['error']}")
            continue
        m = FRAME_NAME.match(Path(record["file"]).name)
        found[int(m[1]), int(m[2])] = record["label"]
    return found, errors


def score(labels, found, angles):
    """Per angle: detection, accuracy (misses count as wrong), accuracy over detected frames, and
    agreement with the same face's prediction at 0 degrees (over faces detected at both)."""
    out = {}
    for angle in angles:
        detected = [i for i in range(len(labels)) if (i, angle) in found]
        correct = sum(found[i, angle] == labels[i] for i in detected)
        both = [i for i in detected if (i, 0) in found]
        agree = sum(found[i, angle] == found[i, 0] for i in both)
        out[angle] = {
            "frames": len(labels), "detected": len(detected), "correct": correct,
            "detection": len(detected) / len(labels) if labels else None,
            "accuracy": correct / len(labels) if labels else None,
            "accuracy_detected": correct / len(detected) if detected else None,
            "agreement_of": len(both), "agreement": agree / len(both) if both else None,
        }
    return out


def discordant(labels, first, second, angles):
    """Per angle: faces right with `first` and not `second`, and the other way round."""
    out = {}
    for angle in angles:
        right = [[found.get((i, angle)) == label for i, label in enumerate(labels)]
                 for found in (first, second)]
        out[angle] = {"only_first": sum(a and not b for a, b in zip(*right)),
                      "only_second": sum(b and not a for a, b in zip(*right))}
    return out


def sign_test(a: int, b: int) -> float:
    """Two-sided exact sign test (McNemar's exact test) on a and b discordant pairs: how likely a
    split at least this uneven is when either setting is as likely to be the one that is right."""
    n, k = a + b, min(a, b)
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)


def table(scores, pairs):
    """Markdown, one row per angle: each rate as `rotate on / rotate off`, then the discordant pairs
    and their sign test."""
    def pct(v):
        return "-" if v is None else f"{100 * v:.1f}"

    lines = ["| angle | detected % | accuracy % | accuracy of detected % | agreement with 0° % "
             "| right only on / only off | p |", "|---|---|---|---|---|---|---|"]
    for angle, pair in pairs.items():
        on, off = scores["rotate"][angle], scores["norotate"][angle]
        cells = [f"{pct(on[k])} / {pct(off[k])}"
                 for k in ("detection", "accuracy", "accuracy_detected", "agreement")]
        a, b = pair["only_first"], pair["only_second"]
        lines.append(f"| {angle:+d}° | " + " | ".join(cells) + f" | {a} / {b} | {sign_test(a, b):.2g} |")
    return "\n".join(lines)


def angle_list(text):
    try:
        angles = sorted({int(a) for a in text.split(",")})
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of whole degrees: {text!r}")
    if 0 not in angles:
        raise argparse.ArgumentTypeError("must include 0, the upright frame that agreement compares with")
    return angles


def make_frames(root: Path, data: Path, faces: int, angles, rng: random.Random):
    """Writes every face at every angle under root and returns the faces' true labels."""
    files = sorted((data / "fer2013/public_test").glob("*/*.png"))
    if not 0 < faces <= len(files):
        sys.exit(f"roll_study: {len(files)} FER2013 public_test faces under {data}, {faces} asked for")
    rng.shuffle(files)
    labels = []
    for i, path in enumerate(files[:faces]):
        labels.append(path.parent.name)
        face = Image.open(path)
        for angle in angles:
            face_frame(face, angle).save(root / frame_name(i, angle))
    return labels


def norotate_copy(dst: Path) -> Path:
    """A copy of models/fer2013-48-fp32 with `crop.rotate` false; everything else, weights included,
    unchanged."""
    src = ROOT / "models" / MODEL
    manifest = json.loads((src / "manifest.json").read_text())
    manifest["crop"]["rotate"] = False
    dst.mkdir()
    (dst / "manifest.json").write_text(json.dumps(manifest, indent=2))
    shutil.copyfile(src / manifest["file"], dst / manifest["file"])
    return dst


def check_same_weights(binary: str, copy: Path):
    """The bundled model must be the one the copy was made from, or the two runs differ in more
    than the rotation (a binary built before the model was last replaced)."""
    out = subprocess.run([binary, "models", "--json"], capture_output=True, text=True, check=True)
    bundled = {m["name"]: m["sha256"] for m in json.loads(out.stdout)}
    ours = json.loads((copy / "manifest.json").read_text())["sha256"]
    if bundled.get(MODEL) != ours:
        sys.exit(f"roll_study: {binary} bundles {MODEL} with sha256 {bundled.get(MODEL)}, "
                 f"models/{MODEL} has {ours}: rebuild the binary")


def classify(binary: str, model: str, tiles: str, frames: Path):
    cmd = [binary, "classify", "--max-faces", "1", "--tiles", tiles, "--model", model, str(frames)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    # 1: some frame could not be read; the rest is on stdout, and its errors are reported below
    if out.returncode not in (0, 1):
        sys.exit(f"roll_study: {' '.join(cmd[:-1])} failed: {out.stderr.strip()}")
    found, errors = predictions(out.stdout.splitlines())
    for error in errors:
        print(f"roll_study: {error} (counted as a miss)", file=sys.stderr)
    return found


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", default=str(ROOT / "target/release/ferrite"),
                    help="ferrite executable (default target/release/ferrite)")
    ap.add_argument("--data", default=str(ROOT.parent / "shared/datasets"),
                    help="folder holding fer2013/public_test/<label>/*.png (default ../shared/datasets)")
    ap.add_argument("--faces", type=int, default=300,
                    help="random public_test faces, each framed at every angle (default 300; at 300 a "
                         "95%% interval on one accuracy is about +-5 points, so compare settings by "
                         "the paired right-only counts and their p)")
    ap.add_argument("--angles", type=angle_list, default=angle_list("-30,-20,-10,0,10,20,30"),
                    help="roll angles in whole degrees, anticlockwise positive, including 0; write "
                         "--angles=-30,0,30 (with '=') so the leading minus is not read as an option")
    # The faces fill 40 % of the frame, far above the whole-frame pass's 1/8, yet tiling still finds a
    # few more of the tilted ones (50 faces at 0 and +30 degrees: 91 of 100 frames against 86) and
    # moves some boxes, at 11x the time. Both settings see the same detections either way.
    ap.add_argument("--tiles", default="off", choices=("off", "auto"),
                    help="ferrite classify --tiles: `off` (default) detects with the whole-frame pass only; "
                         "`auto`, ferrite's default for still images, finds a few more tilted faces but "
                         "takes about 11x as long")
    ap.add_argument("--json", help="also write the counts and rates here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        norotate = norotate_copy(tmp / "norotate")
        check_same_weights(args.binary, norotate)
        frames = tmp / "frames"
        frames.mkdir()
        labels = make_frames(frames, Path(args.data), args.faces, args.angles, random.Random(0))
        print(f"roll_study: classifying {len(labels) * len(args.angles)} frames, rotate on then off",
              file=sys.stderr)
        found = {"rotate": classify(args.binary, MODEL, args.tiles, frames),
                 "norotate": classify(args.binary, str(norotate), args.tiles, frames)}
    scores = {s: score(labels, found[s], args.angles) for s in SETTINGS}
    pairs = discordant(labels, found["rotate"], found["norotate"], args.angles)
    print(f"{args.faces} FER2013 public_test faces, {FACE_SIDE} px, rolled in a {FRAME_SIDE}x{FRAME_SIDE} "
          f"frame; rates as rotate on / rotate off, p: exact sign test on the right-only counts:")
    print(table(scores, pairs))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "model": MODEL, "tiles": args.tiles, "faces": args.faces, "seed": 0,
            "face_side": FACE_SIDE, "frame_side": FRAME_SIDE, "angles": args.angles,
            "settings": {s: {str(a): v for a, v in scores[s].items()} for s in SETTINGS},
            "right_only": {str(a): {"rotate": p["only_first"], "norotate": p["only_second"],
                                    "p": sign_test(p["only_first"], p["only_second"])}
                           for a, p in pairs.items()},
        }, indent=1) + "\n")


if __name__ == "__main__":
    main()
