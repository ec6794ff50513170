#!/usr/bin/env python3
"""Data preparation: load a dataset split, run the teacher landmark model, cache everything.

For each split writes models/cache/<dataset>_<split>.npz with
  images    uint8 [N,48,48]   the crops as stored (FER2013/CK+48 are already tight face crops)
  labels    int64 [N]         index into `classes`
  classes   str   [C]         folder names in sorted order
  names     str   [N]         file names (CK+48: S<subject>_<seq>_<frame>.png)
  landmarks float32 [N,68,2]  teacher landmarks (dlib 68-point, iBUG 300-W order), x,y normalised to [0,1]
                              by the crop size (0 = left/top edge, 1 = right/bottom edge)

Teacher: dlib's shape_predictor_68_face_landmarks.dat (Debian: `apt-get install libdlib-data`,
path /usr/share/dlib/; Python binding: pip dlib-bin). It is a regression-tree ensemble, not a
neural network, so it is not converted to ONNX; it runs only here, at data-preparation time. It was
trained on iBUG 300-W, whose licence excludes commercial use. The whole crop, upscaled 4x, is
given as the face rectangle.

A dataset layout of <root>/<split>/<class>/*.png works for your own data too (see README.md).

    python3 models/prep_data.py                       # fer2013 train + public_test, ckplus48
    python3 models/prep_data.py --data /path/to/datasets --only fer2013/train
    python3 models/prep_data.py --draw 16             # also write a landmark overlay PNG to models/runs/
"""
import argparse
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

import fermodel as fm

DEFAULT_PREDICTOR = "/usr/share/dlib/shape_predictor_68_face_landmarks.dat"
SPLITS = ["fer2013/train", "fer2013/public_test", "ckplus48"]


def list_split(root: Path):
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    files, labels = [], []
    for ci, c in enumerate(classes):
        fs = sorted(p for p in (root / c).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp"))
        files += fs
        labels += [ci] * len(fs)
    return classes, files, np.array(labels, dtype=np.int64)


class Teacher:
    def __init__(self, predictor_path=DEFAULT_PREDICTOR, upscale=4):
        import dlib
        self.dlib = dlib
        self.sp = dlib.shape_predictor(str(predictor_path))
        self.upscale = upscale

    def __call__(self, img_u8: np.ndarray) -> np.ndarray:
        h, w = img_u8.shape
        u = self.upscale
        big = cv2.resize(img_u8, (w * u, h * u), interpolation=cv2.INTER_LINEAR)
        rect = self.dlib.rectangle(0, 0, w * u - 1, h * u - 1)
        s = self.sp(big, rect)
        pts = np.array([[s.part(i).x, s.part(i).y] for i in range(68)], dtype=np.float32)
        pts = (pts + 0.5) / np.array([w * u, h * u], dtype=np.float32)  # pixel centres -> [0,1] of the crop
        return pts


def prepare(data_root: Path, split: str, cache_dir: Path, teacher: Teacher, size=48, force=False, limit=None):
    out = cache_dir / (split.replace("/", "_") + ".npz")
    if out.exists() and not force:
        print(f"{out} exists (use --force to rebuild)")
        return out
    classes, files, labels = list_split(data_root / split)
    if limit:
        rs = np.random.RandomState(0)
        idx = np.sort(rs.choice(len(files), min(limit, len(files)), replace=False))
        files, labels = [files[i] for i in idx], labels[idx]
    imgs = np.zeros((len(files), size, size), np.uint8)
    lms = np.zeros((len(files), 68, 2), np.float32)
    for i, f in enumerate(tqdm(files, desc=split, unit="img")):
        im = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
        if im.shape != (size, size):
            im = cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA)
        imgs[i] = im
        lms[i] = teacher(im)
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, images=imgs, labels=labels, classes=np.array(classes), names=np.array([f.name for f in files]),
                        landmarks=lms)
    print(f"wrote {out}: {len(files)} images, classes {classes}")
    return out


def draw(npz: Path, n: int, png: Path, scale=4):
    d = np.load(npz)
    rs = np.random.RandomState(1)
    idx = rs.choice(len(d["images"]), n, replace=False)
    cols = 8
    rows = (n + cols - 1) // cols
    s = 48 * scale
    canvas = np.zeros((rows * s, cols * s, 3), np.uint8)
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255)]
    for k, i in enumerate(idx):
        im = cv2.cvtColor(cv2.resize(d["images"][i], (s, s), interpolation=cv2.INTER_LINEAR), cv2.COLOR_GRAY2BGR)
        for pi, (_, a, b) in enumerate(fm.PARTS):
            for x, y in d["landmarks"][i][a:b]:
                cv2.circle(im, (int(x * s), int(y * s)), 2, colors[pi], -1)
        r, c = divmod(k, cols)
        canvas[r * s:(r + 1) * s, c * s:(c + 1) * s] = im
    png.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(png), canvas)
    print(f"wrote {png}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(fm.DEFAULT_DATA), help="datasets root (default: ../shared/datasets)")
    ap.add_argument("--cache", default=str(fm.REPO_ROOT / "models" / "cache"))
    ap.add_argument("--only", action="append", help=f"split(s) relative to --data (default: {SPLITS})")
    ap.add_argument("--predictor", default=DEFAULT_PREDICTOR)
    ap.add_argument("--upscale", type=int, default=4)
    ap.add_argument("--limit", type=int, help="random subset of N images per split (smoke tests)")
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--draw", type=int, default=0, help="write an overlay of N random crops per split to models/runs/")
    args = ap.parse_args()
    teacher = Teacher(args.predictor, args.upscale)
    for split in args.only or SPLITS:
        out = prepare(Path(args.data), split, Path(args.cache), teacher, force=args.force, limit=args.limit)
        if args.draw:
            draw(out, args.draw, fm.REPO_ROOT / "models" / "runs" / f"landmarks_{split.replace('/', '_')}.png")


if __name__ == "__main__":
    main()
