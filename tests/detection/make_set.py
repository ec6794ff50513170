#!/usr/bin/env python3
"""Generates ferrite's labelled face-detection set: composites of public-domain and CC0 images.

    python3 tests/detection/make_set.py [--out tests/detection] [--seed 0] [--limit N]

Writes OUT/images/*.jpg (JPEG quality 85) and OUT/labels.json, which models/detection_eval.py scores
detector settings on. Every input is public domain or CC0 (scikit-image's sample data and matplotlib's
grace_hopper.jpg; see SOURCES and tests/detection/README.md), so the set can live in the repository.

- Positives: head-and-shoulders patches of three photographed faces (astronaut, grace_hopper, and
  camera, a man in near-profile marked "hard"), cut around the face with a soft-edged alpha mask,
  scaled, sometimes flipped, toned or rotated, and pasted on textures, photos or synthetic gradients.
  Face boxes run from ~4 % to ~80 % of the image height, 1 to 6 faces per image.
- Negatives: faceless images (cat, coffee and rocket at their own size, and other sample images), and
  collages of them.

A label box is the detector's own box for the source face (BlazeFace: square, eyebrows to mouth),
measured once with the binary (REFERENCE_BOXES) and carried through the same scale, flip, rotation
and offset as the pixels. Each image draws from its own generator seeded with (seed, index), so
`--limit N` writes exactly the first N images of the full set, byte for byte.
"""
import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter
from skimage import data

HERE = Path(__file__).resolve().parent
JPEG_QUALITY = 85

# Where each input comes from and under which terms (from each scikit-image data function's docstring).
# Left out for want of a clear licence: `moon` (its docstring states none) and `coins` (the Brooklyn
# Museum's "no known copyright restrictions" is a status, not a dedication).
SOURCES = {
    "astronaut": ("Eileen Collins, NASA portrait (scikit-image data.astronaut)", "public domain",
                  "https://flic.kr/p/r9qvLn"),
    "grace_hopper": ("Commodore Grace M. Hopper, official US Navy photo (matplotlib sample_data)",
                     "public domain", "https://commons.wikimedia.org/wiki/File:Commodore_Grace_M._Hopper,_USN_(covered).jpg"),
    "camera": ("Man behind a camera, by Lav Varshney (scikit-image data.camera)", "CC0 1.0",
               "https://github.com/scikit-image/scikit-image/issues/3927"),
    "brick": ("Bricks25 texture, CC0Textures (scikit-image data.brick)", "CC0 1.0",
              "https://cc0textures.com/view.php?tex=Bricks25"),
    "grass": ("Grass-01 texture by linolafett (scikit-image data.grass)", "CC0 1.0",
              "https://www.deviantart.com/linolafett/art/Grass-01-434853879"),
    "gravel": ("Gravel04 texture, CC0Textures (scikit-image data.gravel)", "CC0 1.0",
               "https://cc0textures.com/view.php?tex=Gravel04"),
    "coffee": ("Coffee cup, by Rachel Michetti (scikit-image data.coffee)", "CC0 1.0",
               "https://scikit-image.org/docs/stable/api/skimage.data.html#skimage.data.coffee"),
    "rocket": ("Falcon 9 launch, SpaceX (scikit-image data.rocket)", "public domain",
               "https://www.flickr.com/photos/spacexphotos/16511594820/"),
    "hubble_deep_field": ("Hubble eXtreme Deep Field, NASA (scikit-image data.hubble_deep_field)",
                          "public domain", "http://hubblesite.org/newscenter/archive/releases/2012/37/image/a/"),
    "retina": ("Fundus photograph of a left eye, Mikael Häggström (scikit-image data.retina)", "CC0 1.0",
               "https://commons.wikimedia.org/wiki/File:Fundus_photograph_of_normal_left_eye.jpg"),
    "cat": ("Chelsea the cat, by Stefan van der Walt (scikit-image data.chelsea)", "CC0 1.0",
            "https://scikit-image.org/docs/stable/api/skimage.data.html#skimage.data.chelsea"),
    "horse": ("Horse silhouette, by Andreas Preuss (scikit-image data.horse)", "CC0 1.0",
              "http://openclipart.org/detail/158377/horse-by-marauder"),
    "clock": ("Clock, by Stefan van der Walt (scikit-image data.clock)", "public domain",
              "https://scikit-image.org/docs/stable/api/skimage.data.html#skimage.data.clock"),
    "synthetic": ("Gradient and smoothed noise drawn by this script", "CC0 1.0", ""),
}

# Each source face's box as `ferrite classify --detector short` (default threshold 0.6, commit a6ff2b9)
# reports it on the source image, [x, y, w, h] in pixels: astronaut as assets/astronaut.png (score
# 0.92), grace_hopper as matplotlib's JPEG (0.93), camera as a PNG of skimage.data.camera() (0.79).
# Measured once and written here so that generating the set needs no binary.
REFERENCE_BOXES = {
    "astronaut": (178.06, 80.83, 94.12, 94.12),
    "grace_hopper": (163.24, 140.78, 203.27, 202.83),
    "camera": (179.37, 121.77, 84.05, 84.05),
}
HARD = {"camera"}  # near-profile behind a camera: scored separately
MAX_UPSCALE = 3.0  # a source face is not enlarged more than this (more would be visibly soft)

# Positives: (width, height, faces, options). A face is (lowest, highest box height as a fraction of
# the image height) plus optional "src" (a source name) and "rot" (in-plane degrees, positive =
# counter-clockwise). Options: "tone" varies each face's brightness and contrast, "gray" saves a
# one-channel JPEG (what a camera's Y plane gives the detector), "blur" is a Gaussian radius for the
# whole image, "dim" scales the whole image's brightness (a dark room).
SMALL, TINY = (0.08, 0.11), (0.04, 0.05)
POSITIVES = [
    (640, 480, [(0.45, 0.55)], {}),
    (640, 480, [(0.78, 0.82, {"src": "grace_hopper"})], {}),
    (640, 480, [(0.2, 0.3), (0.2, 0.3)], {"tone": True}),
    (640, 480, [SMALL] * 5, {}),
    (640, 480, [TINY] * 3, {}),
    (640, 480, [(0.25, 0.35, {"src": "camera"}), (0.12, 0.16)], {}),
    (640, 480, [(0.3, 0.4, {"rot": 15})], {"gray": True}),
    (1280, 720, [(0.04, 0.07)] * 6, {}),
    (1280, 720, [(0.1, 0.2)] * 3, {"tone": True}),
    (1280, 720, [(0.6, 0.7)], {}),
    (1280, 720, [(0.2, 0.3, {"rot": -12}), (0.15, 0.25)], {"blur": 1.2}),
    (1280, 720, [(0.08, 0.15)] * 4, {"gray": True}),
    (1280, 720, [(0.2, 0.25, {"src": "camera"}), (0.3, 0.4)], {}),
    (1280, 720, [(0.76, 0.8)], {"tone": True}),
    (1280, 720, [(0.35, 0.45)], {"dim": 0.45}),
    (1920, 1080, [TINY] * 6, {}),
    (1920, 1080, [(0.05, 0.12)] * 5, {"blur": 1.0}),
    (1920, 1080, [(0.5, 0.56)], {}),
    (1920, 1280, [(0.1, 0.3), (0.1, 0.3, {"rot": 8}), (0.1, 0.3)], {}),
]
BACKGROUNDS = ("brick", "grass", "gravel", "coffee", "rocket", "hubble_deep_field", "retina", "synthetic")

# Negatives: sample images at their own size (cat, coffee and rocket are the ones issue 16 names),
# then collages of them.
NEGATIVES = ("cat", "coffee", "rocket", "horse", "brick", "grass", "gravel", "clock", "hubble_deep_field",
             "retina")
COLLAGES = [(1280, 720, {}), (1920, 1080, {}), (1280, 720, {"gray": True})]


def load(name):
    """A source image as RGB (horse, a boolean silhouette, as black on white)."""
    if name == "grace_hopper":
        import matplotlib.cbook

        return Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    pixels = getattr(data, "chelsea" if name == "cat" else name)()
    if pixels.dtype == bool:
        pixels = np.where(pixels, 255, 0).astype(np.uint8)
    return Image.fromarray(pixels).convert("RGB")


def face_sources():
    """The face cut-outs; grace_hopper only where matplotlib (which ships it) is installed."""
    sources = {}
    for name, box in REFERENCE_BOXES.items():
        try:
            sources[name] = Patch(load(name), box)
        except (ImportError, OSError, ValueError):
            print(f"make_set: {name} not found; the set will differ from the stored one", file=sys.stderr)
    return sources


def smoothstep(edge0, edge1, x):
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


class Patch:
    """A head-and-shoulders cut-out around a reference box, with an alpha that fades to 0 everywhere
    before the cut's edges (no rectangle shows) and is 1 over the whole face box."""

    def __init__(self, image, box):
        x, y, w, h = box
        side = max(w, h)
        cx, cy = x + w / 2, y + h / 2
        # Generous margins: 1.6 sides either way, 1.4 above, 2.3 below for the shoulders.
        x0, y0 = max(0, math.floor(cx - 1.6 * side)), max(0, math.floor(cy - 1.4 * side))
        x1, y1 = min(image.width, math.ceil(cx + 1.6 * side)), min(image.height, math.ceil(cy + 2.3 * side))
        self.box = box
        self.centre = (cx - x0, cy - y0)  # the box centre in patch coordinates
        yy, xx = np.mgrid[y0:y1, x0:x1] + 0.5
        # An ellipse a little below the face (head and shoulders), opaque inside 0.7 of its radius...
        r = np.hypot((xx - cx) / (1.45 * side), (yy - cy - 0.45 * side) / (1.75 * side))
        alpha = smoothstep(1.0, 0.7, r)
        # ...and a fade over a quarter side towards each edge of the cut, where the source image ends.
        edge = np.minimum.reduce([xx - x0, x1 - xx, yy - y0, y1 - yy])
        alpha *= smoothstep(0.0, 0.25 * side, edge)
        rgba = np.dstack([np.asarray(image.crop((x0, y0, x1, y1))), np.round(alpha * 255).astype(np.uint8)])
        self.image = Image.fromarray(rgba, "RGBA")

    def label_size(self, scale, degrees):
        """Width and height of the label: the axis-aligned bounding box of the scaled, rotated reference box."""
        c, s = abs(math.cos(math.radians(degrees))), abs(math.sin(math.radians(degrees)))
        w, h = self.box[2] * scale, self.box[3] * scale
        return w * c + h * s, w * s + h * c

    def place(self, scale, degrees, flip, centre, canvas_size, tone=None):
        """The patch drawn on a canvas, scaled, rotated about the face centre and flipped, with that
        centre at `centre`: returns (RGBA layer, its top-left corner on the canvas, face box)."""
        c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
        fx = -1.0 if flip else 1.0
        # Forward map: canvas = centre + scale * R * F * (patch - patch_centre), R counter-clockwise
        # on screen (y points down). The layer needs the inverse, patch = pc + F * R^T * (canvas - centre) / scale.
        inv = np.array([[fx * c, -fx * s], [s, c]]) / scale
        forward = np.array([[c * fx, s], [-s * fx, c]]) * scale
        corners = np.array([[0, 0], [self.image.width, 0], [0, self.image.height],
                            [self.image.width, self.image.height]]) - self.centre
        mapped = corners @ forward.T + centre
        left, top = np.floor(mapped.min(axis=0)).astype(int)
        right, bottom = np.ceil(mapped.max(axis=0)).astype(int)
        left, top = max(left, 0), max(top, 0)
        right, bottom = min(right, canvas_size[0]), min(bottom, canvas_size[1])
        source = self.image
        if tone:
            rgb = ImageEnhance.Contrast(ImageEnhance.Brightness(source.convert("RGB")).enhance(tone[0])).enhance(tone[1])
            source = Image.merge("RGBA", (*rgb.split(), source.getchannel("A")))
        if scale < 1:
            # Bicubic resampling does not average when it shrinks: blur first so small faces do not alias.
            source = source.filter(ImageFilter.GaussianBlur(0.5 / scale))
        offset = inv @ (np.array([left, top], float) - centre) + self.centre
        layer = source.transform((right - left, bottom - top), Image.Transform.AFFINE,
                                 (inv[0, 0], inv[0, 1], offset[0], inv[1, 0], inv[1, 1], offset[1]),
                                 resample=Image.Resampling.BICUBIC)
        bw, bh = self.label_size(scale, degrees)
        box = (centre[0] - bw / 2, centre[1] - bh / 2, bw, bh)
        return layer, (left, top), box


def iou(a, b):
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def cover(image, size, rng, zoom=1.3):
    """`image` scaled to cover `size` (and up to `zoom` more), cropped at a random place."""
    k = max(size[0] / image.width, size[1] / image.height) * rng.uniform(1.0, zoom)
    scaled = image.resize((max(size[0], round(image.width * k)), max(size[1], round(image.height * k))),
                          Image.Resampling.BICUBIC)
    x, y = rng.integers(0, scaled.width - size[0] + 1), rng.integers(0, scaled.height - size[1] + 1)
    return scaled.crop((x, y, x + size[0], y + size[1]))


def synthetic(size, rng):
    """A two-colour linear gradient at a random angle with smooth low-frequency noise on top."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    angle = rng.uniform(0, 2 * math.pi)
    t = (xx * math.cos(angle) + yy * math.sin(angle)) / math.hypot(w, h) + 0.5
    a, b = rng.uniform(20, 235, 3), rng.uniform(20, 235, 3)
    rgb = a + np.clip(t, 0, 1)[..., None] * (b - a)
    noise = Image.fromarray(rng.uniform(0, 255, (h // 40 + 2, w // 40 + 2)).astype(np.uint8))
    # Upscaled noise shows its 40-pixel grid; a blur of a third of a cell hides it.
    noise = noise.resize(size, Image.Resampling.BICUBIC).filter(ImageFilter.GaussianBlur(14))
    rgb += (np.asarray(noise, float)[..., None] - 128) * 0.15
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def background(name, size, rng):
    if name == "synthetic":
        return synthetic(size, rng)
    image = cover(load(name), size, rng)
    if name in ("brick", "grass", "gravel"):  # gray textures: tint them a random colour
        tint = rng.uniform(0.5, 1.1, 3)
        image = Image.fromarray(np.clip(np.asarray(image, float) * tint, 0, 255).astype(np.uint8))
    return image


def make_positive(spec, sources, rng):
    width, height, faces, options = spec
    bg = str(rng.choice(BACKGROUNDS))
    canvas = background(bg, (width, height), rng)
    placed = []  # (box, record)
    # Paste far (small) faces first so nearer ones lie over them, as in a group photo.
    wanted = sorted(((rng.uniform(f[0], f[1]), f[2] if len(f) > 2 else {}) for f in faces), key=lambda f: f[0])
    for fraction, extra in wanted:
        side = fraction * height
        if "src" in extra:
            name = extra["src"]
        else:
            # Any unhard source that need not be enlarged beyond MAX_UPSCALE.
            names = sorted(n for n, p in sources.items() if n not in HARD and side / max(p.box[2:]) <= MAX_UPSCALE)
            name = str(rng.choice(names))
        patch = sources[name]
        scale = side / max(patch.box[2:])
        degrees = extra.get("rot", 0)
        flip = bool(rng.integers(2))
        tone = (rng.uniform(0.65, 1.35), rng.uniform(0.7, 1.3)) if options.get("tone") else None
        bw, bh = patch.label_size(scale, degrees)
        for _ in range(500):
            centre = (rng.uniform(bw / 2 + 1, width - bw / 2 - 1), rng.uniform(bh / 2 + 1, height - bh / 2 - 1))
            layer, corner, box = patch.place(scale, degrees, flip, centre, (width, height), tone)
            if fits(box, layer, corner, [b for b, _ in placed], (width, height)):
                break
        else:
            raise RuntimeError(f"no room for a {fraction:.0%} face in a {width}x{height} image; change POSITIVES")
        canvas.paste(layer, corner, layer)
        placed.append((box, {"box": [round(v, 2) for v in box], "source": name, "hard": name in HARD,
                             "rotated": degrees}))
    if "dim" in options:
        canvas = ImageEnhance.Brightness(canvas).enhance(options["dim"])
    if "blur" in options:
        canvas = canvas.filter(ImageFilter.GaussianBlur(options["blur"]))
    if options.get("gray"):
        canvas = canvas.convert("L")
    names = [bg] + sorted({r["source"] for _, r in placed})
    return canvas, [r for _, r in sorted(placed, key=lambda p: (p[0][1], p[0][0]))], names


def fits(box, layer, corner, boxes, size):
    """Whether a new face may go here: its box inside the image, touching no earlier face box (stricter
    than the IoU < 0.1 the tests ask), and its layer, drawn on top, nearly transparent over every earlier box."""
    x, y, w, h = box
    if x < 0 or y < 0 or x + w > size[0] or y + h > size[1]:
        return False
    alpha = np.asarray(layer.getchannel("A"))
    for other in boxes:
        if iou(box, other) > 0:
            return False
        ox, oy, ow, oh = other
        # The earlier box, 10 % bigger each way, in layer coordinates.
        x0, y0 = int(max(0, ox - 0.1 * ow - corner[0])), int(max(0, oy - 0.1 * oh - corner[1]))
        x1, y1 = int(max(0, ox + 1.1 * ow - corner[0] + 1)), int(max(0, oy + 1.1 * oh - corner[1] + 1))
        region = alpha[y0:y1, x0:x1]
        if region.size and region.max() > 10:  # 4 % opacity
            return False
    return True


def make_collage(spec, rng):
    """Negative images scaled into the cells of a 3x2 (or 4x3) grid, jittered, on a synthetic ground."""
    width, height, options = spec
    canvas = synthetic((width, height), rng)
    cols, rows = (3, 2) if width < 1600 else (4, 3)
    order = rng.permutation(len(NEGATIVES))  # repeated where there are more cells than images
    names = [NEGATIVES[order[i % len(order)]] for i in range(cols * rows)]
    for i, name in enumerate(names):
        image = load(name)
        cw, ch = width // cols, height // rows
        k = min(cw / image.width, ch / image.height) * rng.uniform(0.7, 1.0)
        image = image.resize((round(image.width * k), round(image.height * k)), Image.Resampling.LANCZOS)
        x = (i % cols) * cw + int(rng.integers(0, cw - image.width + 1))
        y = (i // cols) * ch + int(rng.integers(0, ch - image.height + 1))
        canvas.paste(image, (x, y))
    if options.get("gray"):
        canvas = canvas.convert("L")
    return canvas, ["synthetic"] + sorted(set(names))


def plan():
    """Every image of the set in order: (file name, kind, spec)."""
    out = [(f"faces_{i + 1:02d}.jpg", "positive", spec) for i, spec in enumerate(POSITIVES)]
    out += [(f"{name}.jpg", "negative", name) for name in NEGATIVES]
    out += [(f"collage_{i + 1}.jpg", "collage", spec) for i, spec in enumerate(COLLAGES)]
    return out


def licence(names):
    """The terms of an image's inputs (the generated images themselves are dedicated CC0 1.0)."""
    return " and ".join(sorted({SOURCES[n][1] for n in names}))


def main():
    doc = __doc__.split("\n\n")
    ap = argparse.ArgumentParser(description="\n\n".join([doc[0]] + doc[2:]),
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="The stored set is the default run (seed 0, no limit).")
    ap.add_argument("--out", default=str(HERE),
                    help="directory for images/ and labels.json; its images/*.jpg are replaced (default: beside this script)")
    ap.add_argument("--seed", type=int, default=0, help="base seed; image i draws from (seed, i) (default 0)")
    ap.add_argument("--limit", type=int,
                    help="write only the first N images, byte for byte those of the full set (the determinism test uses 2)")
    args = ap.parse_args()
    out = Path(args.out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    for old in (out / "images").glob("*.jpg"):  # a smaller run must not leave the last run's files behind
        old.unlink()
    sources = face_sources()
    records = []
    for index, (file, kind, spec) in enumerate(plan()[:args.limit]):
        rng = np.random.default_rng([args.seed, index])
        faces = []
        if kind == "positive":
            image, faces, names = make_positive(spec, sources, rng)
        elif kind == "collage":
            image, names = make_collage(spec, rng)
        else:
            image, names = load(spec), [spec]
            if spec in ("brick", "grass", "gravel", "clock", "horse"):
                image = image.convert("L")  # one-channel sources stay one channel
        image.save(out / "images" / file, quality=JPEG_QUALITY, optimize=True)
        records.append({"file": f"images/{file}", "width": image.width, "height": image.height, "faces": faces,
                        "negative": kind != "positive", "licence": licence(names), "sources": names})
    labels = {
        "about": "Generated by tests/detection/make_set.py; boxes are [x, y, w, h] in pixels in BlazeFace's "
                 "convention; file paths are relative to this file.",
        "seed": args.seed,
        "images": records,
        "sources": {n: {"what": w, "licence": l, "url": u} for n, (w, l, u) in SOURCES.items()},
    }
    (out / "labels.json").write_text(json.dumps(labels, indent=1, ensure_ascii=False) + "\n")
    n_faces = sum(len(r["faces"]) for r in records)
    size = sum((out / r["file"]).stat().st_size for r in records)
    print(f"make_set: {len(records)} images ({sum(not r['negative'] for r in records)} with faces), "
          f"{n_faces} faces, {size / 1e6:.2f} MB in {out}")


if __name__ == "__main__":
    main()
