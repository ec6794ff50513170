"""Dataset caches, preprocessing, subject folds and the paper's augmentation (shared by the scripts)."""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import fermodel as fm

CACHE = fm.REPO_ROOT / "models" / "cache"


def load_split(name: str, cache: Path = CACHE) -> dict:
    """name: 'fer2013_train', 'fer2013_public_test', 'ckplus48' (see prep_data.py)."""
    p = Path(cache) / f"{name}.npz"
    if not p.exists():
        raise FileNotFoundError(f"{p} missing: run models/prep_data.py first")
    d = np.load(p)
    return {k: d[k] for k in d.files}


def preprocessed(d: dict, size: int, name: str | None = None, cache: Path = CACHE) -> np.ndarray:
    """CLAHE'd uint8 images at `size` (resize first, then CLAHE, as the runtime does); cached on disk."""
    import cv2
    p = Path(cache) / f"{name}_clahe{size}.npy" if name else None
    if p is not None and p.exists():
        return np.load(p)
    clahe = cv2.createCLAHE(clipLimit=fm.CLAHE_CLIP, tileGridSize=fm.CLAHE_TILES)
    out = np.zeros((len(d["images"]), size, size), np.uint8)
    for i, im in enumerate(d["images"]):
        if im.shape != (size, size):
            im = cv2.resize(im, (size, size), interpolation=cv2.INTER_LINEAR if size > im.shape[0] else cv2.INTER_AREA)
        out[i] = clahe.apply(im)
    if p is not None:
        np.save(p, out)
    return out


def to_tensor(u8: np.ndarray) -> torch.Tensor:
    """uint8 [N,H,W] (already CLAHE'd) -> float [N,1,H,W] in [-1,1]."""
    return torch.from_numpy(u8).float().unsqueeze(1).mul_(fm.SCALE).add_(fm.OFFSET)


def fer_label_map(classes) -> np.ndarray:
    """Map a dataset's class folder names onto FER2013 label indices (-1 = no counterpart, e.g. contempt)."""
    out = []
    for c in classes:
        c = str(c)
        f = fm.CK_TO_FER.get(c, c)
        out.append(fm.FER_LABELS.index(f) if f in fm.FER_LABELS else -1)
    return np.array(out)


SUBJECT_RE = re.compile(r"^S(\d+)_(\d+)_(\d+)\.\w+$")


def subject_of(name: str) -> str:
    m = SUBJECT_RE.match(str(name))
    if not m:
        raise ValueError(f"not a CK+ file name S<subject>_<seq>_<frame>: {name}")
    return "S" + m.group(1)


def subject_folds(names, n_folds: int = 10, seed: int = 0) -> np.ndarray:
    """Fold index per image; all images of one subject share a fold. Subjects are shuffled (seeded) and
    dealt to the currently smallest fold (by image count) so folds are balanced in size."""
    subs = np.array([subject_of(n) for n in names])
    uniq = sorted(set(subs))
    rs = np.random.RandomState(seed)
    rs.shuffle(uniq)
    counts = {s: int((subs == s).sum()) for s in uniq}
    uniq.sort(key=lambda s: -counts[s])  # stable: largest first, shuffled among equals
    load = np.zeros(n_folds, int)
    fold_of = {}
    for s in uniq:
        f = int(np.argmin(load))
        fold_of[s] = f
        load[f] += counts[s]
    return np.array([fold_of[s] for s in subs])


def hflip(x: torch.Tensor, lm: torch.Tensor | None = None):
    x = torch.flip(x, dims=[3])
    if lm is None:
        return x
    lm = lm.clone()
    lm[..., 0] = 1.0 - lm[..., 0]
    return x, lm[:, fm.FLIP68]


def augment(x: torch.Tensor, lm: torch.Tensor | None, gen: torch.Generator, rot_deg=15.0, shift=0.05, shear=0.05,
            flip=True, scale=0.0):
    """The paper's augmentation on a batch: rotation +-rot_deg, shifts +-shift (fraction of size), shear +-shear,
    random horizontal flip; plus an optional zoom by a factor in [1-scale, 1+scale] (crop jitter: the runtime's
    detector crops vary in scale, models/crop_calibration.json). The same affine is applied to the landmark
    targets ([0,1] crop coordinates), and a flip re-indexes them with the 68-point left/right permutation.
    Border pixels are replicated."""
    n = x.shape[0]
    r = lambda lo, hi: torch.rand(n, generator=gen) * (hi - lo) + lo
    a = r(-rot_deg, rot_deg) * math.pi / 180
    sh = r(-shear, shear)
    tx, ty = r(-shift, shift) * 2, r(-shift, shift) * 2  # [-1,1] coordinates span 2
    fl = (torch.rand(n, generator=gen) < 0.5) if flip else torch.zeros(n, dtype=torch.bool)
    # drawn only when asked for, so the paper's recipe keeps its exact random stream
    zoom = r(1 - scale, 1 + scale) if scale else torch.ones(n)
    # forward map (input -> output) M = Z @ R @ Sh @ Fl ; affine_grid needs the inverse (output -> input)
    cos, sin = torch.cos(a), torch.sin(a)
    R = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)
    Sh = torch.eye(2).repeat(n, 1, 1)
    Sh[:, 0, 1] = sh
    Fl = torch.eye(2).repeat(n, 1, 1)
    Fl[:, 0, 0] = torch.where(fl, -1.0, 1.0)
    M = zoom.view(n, 1, 1) * (R @ Sh @ Fl)
    t = torch.stack([tx, ty], 1)
    Minv = torch.linalg.inv(M)
    theta = torch.cat([Minv, (-Minv @ t.unsqueeze(2))], 2)  # in = Minv @ (out - t)
    # the random draws stay on the CPU generator (identical on every device); only the warp runs on x's device
    theta = theta.to(x.device)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    xo = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if lm is None:
        return xo
    p = lm * 2 - 1  # [0,1] -> [-1,1] (align_corners=False convention: -1 = left edge)
    po = p @ M.transpose(1, 2).to(lm.device) + t.unsqueeze(1).to(lm.device)
    lo = (po + 1) / 2
    fl = fl.to(lm.device)
    if fl.any():
        lo[fl] = lo[fl][:, fm.FLIP68]
    return xo, lo


def random_erase(x: torch.Tensor, gen: torch.Generator, p: float, area=(0.02, 0.25), aspect=(0.3, 3.3)) -> torch.Tensor:
    """Random erasing (Zhong et al. 2017) as synthetic occlusion (hands, masks, glasses): with probability p per
    image, one rectangle of `area` fraction of the image and `aspect` ratio is filled with uniform noise in
    [-1, 1]. Landmark targets stay where they are: the face under the occluder has not moved."""
    if p <= 0:
        return x
    n, _, h, w = x.shape
    r = lambda lo, hi: torch.rand(n, generator=gen) * (hi - lo) + lo
    hit = torch.rand(n, generator=gen) < p
    a = r(*area) * h * w
    ar = torch.exp(r(math.log(aspect[0]), math.log(aspect[1])))
    eh, ew = (a * ar).sqrt().clamp(max=h), (a / ar).sqrt().clamp(max=w)
    y0, x0 = r(0, 1) * (h - eh), r(0, 1) * (w - ew)
    ys, xs = torch.arange(h).view(1, h, 1), torch.arange(w).view(1, 1, w)
    inside = ((ys >= y0.view(n, 1, 1)) & (ys < (y0 + eh).view(n, 1, 1))
              & (xs >= x0.view(n, 1, 1)) & (xs < (x0 + ew).view(n, 1, 1)) & hit.view(n, 1, 1))
    noise = torch.rand((n, 1, h, w), generator=gen) * 2 - 1
    inside = inside.unsqueeze(1).to(x.device)
    return torch.where(inside, noise.to(device=x.device, dtype=x.dtype), x)


# Where the runtime's crop lands relative to the face on camera-like frames: `camera_frames.py` on
# 3,000 FER2013 *train* faces (seed 1) found the face's side at 1.170 x the detector box (quartiles
# 1.076-1.282) and its centre at (0.003, -0.089) box sides from the box's (quartiles of x
# -0.034..0.044, of y -0.129..-0.046). With the manifest calibrated to those medians, a crop's side
# relative to the face is spread with a log-sd of about 0.13 and its centre by about 0.05 face
# sides; the draws below are normal with those spreads (IQR / 1.35), clipped at 2.5 sd.
CAMERA_CROP_LOG_SD = 0.13
CAMERA_CROP_SHIFT_SD = 0.05
CAMERA_FACE_PX = (40, 200)


def camera_crop(raw: np.ndarray, lm: np.ndarray, background: np.ndarray, rng: np.random.Generator,
                size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """One training face sent down a live camera's path, then cropped the way the runtime crops it.

    The face (uint8 HxW, unprocessed) is scaled to a random capture size (40-200 px), set into a
    random other training image scaled up as surroundings (hair, a wall, another person: not the
    replicated border the affine augmentation pads with), blurred by the optics (sigma 0-1.2 px),
    toned by auto-exposure (gain 0.75-1.25, offset +-20), JPEG-compressed (quality 60-90) as an
    MJPEG camera does, and cropped with the detector's measured framing spread
    (CAMERA_CROP_*), anti-aliased down (or up) to `size`. Returns the crop (uint8, not yet CLAHE'd:
    the runtime's CLAHE comes after the crop) and the landmarks ([0,1] crop coordinates) moved
    with it."""
    import cv2

    side = int(rng.integers(CAMERA_FACE_PX[0], CAMERA_FACE_PX[1] + 1))
    ratio = float(np.exp(np.clip(rng.normal(0, CAMERA_CROP_LOG_SD), -2.5 * CAMERA_CROP_LOG_SD,
                                 2.5 * CAMERA_CROP_LOG_SD)))
    clip = 2.5 * CAMERA_CROP_SHIFT_SD
    dx, dy = np.clip(rng.normal(0, CAMERA_CROP_SHIFT_SD, 2), -clip, clip)
    crop = max(8, round(ratio * side))
    # the canvas holds the face in its centre and every crop the draws above can ask for
    half = int(np.ceil(0.5 * crop + clip * side)) + 4
    canvas_side = 2 * max(half, (side + 1) // 2 + 2)
    canvas = cv2.resize(background, (canvas_side, canvas_side), interpolation=cv2.INTER_CUBIC)
    face_at = (canvas_side - side) // 2
    face = cv2.resize(raw, (side, side), interpolation=cv2.INTER_CUBIC if side > raw.shape[0] else cv2.INTER_AREA)
    canvas[face_at:face_at + side, face_at:face_at + side] = face
    sigma = float(rng.uniform(0.0, 1.2))
    if sigma > 0.1:
        canvas = cv2.GaussianBlur(canvas, (0, 0), sigma)
    toned = canvas.astype(np.float32) * float(rng.uniform(0.75, 1.25)) + float(rng.uniform(-20, 20))
    canvas = np.clip(toned, 0, 255).astype(np.uint8)
    ok, jpeg = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(60, 91))])
    if ok:
        canvas = cv2.imdecode(jpeg, cv2.IMREAD_GRAYSCALE)
    cx = face_at + side / 2 + dx * side
    cy = face_at + side / 2 + dy * side
    x0, y0 = int(round(cx - crop / 2)), int(round(cy - crop / 2))
    patch = canvas[y0:y0 + crop, x0:x0 + crop]
    out = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA if crop > size else cv2.INTER_LINEAR)
    moved = (face_at + lm * side - np.array([x0, y0], np.float32)) / crop
    return out, moved.astype(np.float32)


def camera_batch(raw: np.ndarray, lm: np.ndarray, pool: np.ndarray, rng: np.random.Generator,
                 p: float, size: int = 48):
    """camera_crop on each image with probability p, CLAHE'd like the cache. Returns the indices
    (into the batch) that were replaced, their CLAHE'd uint8 crops and their moved landmarks.
    `pool` is the uint8 image set the surroundings are drawn from."""
    import cv2

    hit = np.nonzero(rng.random(len(raw)) < p)[0]
    clahe = cv2.createCLAHE(clipLimit=fm.CLAHE_CLIP, tileGridSize=fm.CLAHE_TILES)
    crops = np.zeros((len(hit), size, size), np.uint8)
    moved = np.zeros((len(hit),) + lm.shape[1:], np.float32)
    for j, i in enumerate(hit):
        background = pool[int(rng.integers(len(pool)))]
        crop, moved[j] = camera_crop(raw[i], lm[i], background, rng, size)
        crops[j] = clahe.apply(crop)
    return hit, crops, moved


def mapped_labels(d: dict, labels: list[str]) -> np.ndarray:
    """Each image's class as an index into `labels`, matched by name (anger=angry, sadness=sad);
    -1 for a class `labels` lacks (CK+ contempt)."""
    classes = [fm.CK_TO_FER.get(str(c), str(c)) for c in d["classes"]]
    return np.array([labels.index(c) if c in labels else -1 for c in classes])[d["labels"]]


def mapped_split(name: str, cache: Path, size: int, labels: list[str], exclude_fold: int | None = None,
                 folds: int = 10, fold_seed: int = 0) -> dict:
    """A cached split with its labels mapped onto `labels` by name (anger=angry, sadness=sad); images of
    classes `labels` lacks (CK+ contempt) are dropped. exclude_fold drops one subject fold (CK+ names only),
    so a cross-validation fold's test subjects never reach its training set."""
    d = load_split(name, cache)
    y = mapped_labels(d, labels)
    keep = y >= 0
    if exclude_fold is not None:
        keep &= subject_folds(d["names"], folds, fold_seed) != exclude_fold
    x = preprocessed(d, size, name, cache)
    raw = d["images"]
    if raw.shape[1:] != (size, size):  # one shape across splits, so they concatenate (train.py --train a,b)
        import cv2
        raw = np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA) for im in raw])
    return {"x": x[keep], "y": y[keep], "landmarks": d["landmarks"][keep], "names": d["names"][keep],
            "raw": raw[keep], "dropped": int((~keep).sum())}
