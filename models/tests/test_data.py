"""Subject-independent folds, label mapping, landmark flip permutation, augmentation consistency."""
import numpy as np
import pytest
import torch

import data as D
import fermodel as fm


def synthetic_ck_names(n_subjects=37, seed=0):
    rs = np.random.RandomState(seed)
    names = []
    for s in range(n_subjects):
        for q in range(rs.randint(1, 5)):
            for fr in range(3):
                names.append(f"S{s * 7 + 5:03d}_{q + 1:03d}_{fr + 10:08d}.png")
    return np.array(names)


@pytest.mark.parametrize("n_folds", [3, 10])
def test_subject_folds_never_split_a_subject(n_folds):
    names = synthetic_ck_names()
    folds = D.subject_folds(names, n_folds, seed=0)
    by_subject = {}
    for n, f in zip(names, folds):
        by_subject.setdefault(D.subject_of(n), set()).add(int(f))
    assert all(len(v) == 1 for v in by_subject.values())
    assert set(folds) == set(range(n_folds))
    # deterministic for a given seed
    assert (D.subject_folds(names, n_folds, seed=0) == folds).all()


def test_subject_folds_on_real_ckplus():
    root = fm.DEFAULT_DATA / "ckplus48"
    if not root.exists():
        pytest.skip(f"{root} absent (research dataset not on this machine)")
    names = [p.name for p in root.rglob("*.png")]
    folds = D.subject_folds(names, 10)
    subj = np.array([D.subject_of(n) for n in names])
    for s in set(subj):
        assert len(set(folds[subj == s])) == 1, s
    for f in range(10):
        assert not (set(subj[folds == f]) & set(subj[folds != f]))


def test_subject_parse():
    assert D.subject_of("S010_004_00000019.png") == "S010"
    with pytest.raises(ValueError):
        D.subject_of("img_001.png")


def test_label_mapping():
    m = D.fer_label_map(fm.CK_LABELS)
    mapped = {c: (fm.FER_LABELS[i] if i >= 0 else None) for c, i in zip(fm.CK_LABELS, m)}
    assert mapped["anger"] == "angry"
    assert mapped["sadness"] == "sad"
    assert mapped["contempt"] is None
    for c in ("disgust", "fear", "happy", "surprise"):
        assert mapped[c] == c
    assert list(D.fer_label_map(fm.FER_LABELS)) == list(range(7))
    assert "neutral" not in fm.CK_LABELS and "contempt" not in fm.FER_LABELS
    assert fm.FER_LABELS == ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]


def test_flip_permutation():
    p = np.array(fm.FLIP68)
    assert (p[p] == np.arange(68)).all()  # an involution
    # pairs that must swap in the iBUG-68 layout
    for a, b in [(0, 16), (17, 26), (36, 45), (39, 42), (31, 35), (48, 54), (60, 64)]:
        assert p[a] == b and p[b] == a
    for c in (8, 27, 30, 33, 51, 57, 62, 66):
        assert p[c] == c
    # each part maps to itself
    for _, s, e in fm.PARTS:
        assert set(p[s:e]) == set(range(s, e))


def test_hflip_landmarks_consistent():
    x = torch.zeros(1, 1, 48, 48)
    x[0, 0, 10, 5] = 1.0  # bright pixel at column 5
    lm = torch.rand(1, 68, 2)
    lm[0, 36] = torch.tensor([(5 + 0.5) / 48, (10 + 0.5) / 48])
    xf, lf = D.hflip(x, lm)
    # point 36 moved to index 45 and onto the mirrored pixel
    col = int(lf[0, 45, 0] * 48)
    assert xf[0, 0, 10, col] == 1.0
    x2, l2 = D.hflip(xf, lf)
    assert torch.allclose(x2, x) and torch.allclose(l2, lm)


def test_augment_moves_landmarks_with_pixels():
    """A bright dot labelled as a landmark must stay under that landmark after a random affine."""
    g = torch.Generator().manual_seed(3)
    x = torch.full((16, 1, 48, 48), -1.0)
    lm = torch.full((16, 68, 2), 0.5)
    for i in range(16):
        r, c = 14 + i, 30 - i
        x[i, 0, r - 1:r + 2, c - 1:c + 2] = 1.0
        lm[i, :, 0] = (c + 0.5) / 48
        lm[i, :, 1] = (r + 0.5) / 48
    xo, lo = D.augment(x, lm, g)
    for i in range(16):
        px, py = lo[i, 0] * 48
        r, c = int(py), int(px)
        assert xo[i, 0, r, c] > 0.0, (i, r, c)
    # identity augmentation leaves everything unchanged
    xi, li = D.augment(x, lm, g, rot_deg=0, shift=0, shear=0, flip=False)
    assert torch.allclose(xi, x, atol=1e-5) and torch.allclose(li, lm, atol=1e-6)


def test_preprocess_range():
    img = (np.arange(48 * 48) % 256).astype(np.uint8).reshape(48, 48)
    x = fm.preprocess_gray(img)
    assert x.dtype == np.float32 and x.min() >= -1.0 and x.max() <= 1.0
    assert fm.preprocess_gray(img, 64).shape == (64, 64)


def test_scale_jitter_moves_landmarks_with_pixels():
    """Crop-scale jitter (zoom) is part of the same affine: the dot stays under its landmark."""
    g = torch.Generator().manual_seed(5)
    x = torch.full((16, 1, 48, 48), -1.0)
    lm = torch.full((16, 68, 2), 0.5)
    for i in range(16):
        r, c = 12 + i, 34 - i
        x[i, 0, r - 1:r + 2, c - 1:c + 2] = 1.0
        lm[i, :, 0] = (c + 0.5) / 48
        lm[i, :, 1] = (r + 0.5) / 48
    xo, lo = D.augment(x, lm, g, rot_deg=0, shift=0, shear=0, flip=False, scale=0.3)
    moved = 0
    for i in range(16):
        px, py = lo[i, 0] * 48
        assert xo[i, 0, int(py), int(px)] > 0.0, i
        moved += not torch.allclose(lo[i, 0], lm[i, 0], atol=1e-3)
    assert moved >= 12, "zoom moved almost no landmark"
    # scale=0 keeps the paper's random stream: the same draws as before the option existed
    a = D.augment(x, lm, torch.Generator().manual_seed(9))
    b = D.augment(x, lm, torch.Generator().manual_seed(9), scale=0.0)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_random_erase_covers_one_box_per_hit_image():
    g = torch.Generator().manual_seed(0)
    x = torch.full((200, 1, 48, 48), 7.0)  # outside [-1, 1]: erased pixels are recognisable
    out = D.random_erase(x, g, p=0.5)
    erased = (out != 7.0).squeeze(1)
    hit = erased.flatten(1).any(1)
    assert 60 < int(hit.sum()) < 140  # about half the images
    for i in torch.nonzero(hit).flatten().tolist():
        rows = erased[i].any(1).nonzero().flatten()
        cols = erased[i].any(0).nonzero().flatten()
        box = erased[i, rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert box.float().mean() > 0.99, "one filled rectangle"
        area = box.numel() / (48 * 48)
        assert 0.01 <= area <= 0.3, area
    assert out[erased.unsqueeze(1)].abs().max() <= 1.0  # noise within the input range
    assert torch.equal(D.random_erase(x, g, p=0.0), x)


def test_balanced_indices_weight_within_classes():
    import train
    labels = np.array([0] * 900 + [1] * 100 + [1] * 10)
    weight = np.array([1.0] * 1000 + [5.0] * 10)  # the last 10 (class 1) drawn 5x as often
    idx = train.balanced_indices(labels, 40000, np.random.RandomState(0), weight)
    per_class = np.bincount(labels[idx], minlength=2) / len(idx)
    assert abs(per_class[0] - 0.5) < 0.02 and abs(per_class[1] - 0.5) < 0.02
    # class 1: 100 images of weight 1 and 10 of weight 5, so the 10 take 50/150 of its draws
    share = np.isin(idx, np.arange(1000, 1010)).sum() / (labels[idx] == 1).sum()
    assert abs(share - 1 / 3) < 0.03, share


def test_mapped_split_drops_contempt_and_a_held_out_fold(tmp_path):
    names = np.array([f"S{s:03d}_001_{k:08d}.png" for s in range(20) for k in range(3)])
    classes = np.array(fm.CK_LABELS)
    labels = np.arange(len(names)) % len(classes)
    np.savez(tmp_path / "ck.npz", images=np.zeros((len(names), 48, 48), np.uint8), labels=labels,
             classes=classes, names=names, landmarks=np.zeros((len(names), 68, 2), np.float32))
    s = D.mapped_split("ck", tmp_path, 48, fm.FER_LABELS)
    assert fm.FER_LABELS.index("neutral") not in s["y"]
    assert len(s["y"]) == (labels != fm.CK_LABELS.index("contempt")).sum()
    assert set(s["y"]) <= {fm.FER_LABELS.index(fm.CK_TO_FER[c]) for c in fm.CK_LABELS if fm.CK_TO_FER[c]}
    held = D.mapped_split("ck", tmp_path, 48, fm.FER_LABELS, exclude_fold=2, folds=5)
    folds = D.subject_folds(names, 5)
    test_subjects = {D.subject_of(n) for n in names[folds == 2]}
    assert test_subjects and not ({D.subject_of(n) for n in held["names"]} & test_subjects)


def test_precision_choice():
    cpu = torch.device("cpu")
    assert fm.pick_precision("fp32", cpu) == "fp32"
    assert fm.pick_precision("bf16", cpu) == "bf16"
    assert fm.pick_precision("auto", cpu) == ("bf16" if fm.cpu_has_native_bf16() else "fp32")
    with pytest.raises(ValueError):
        fm.pick_precision("fp16", cpu)


def test_camera_crop_moves_landmarks_with_pixels():
    """The camera path rescales, shifts and degrades the face: a bright dot labelled as a landmark
    must still be the brightest spot near that landmark in the 48x48 crop."""
    rng = np.random.default_rng(4)
    background = np.full((48, 48), 20, np.uint8)
    for i in range(40):
        r, c = 10 + (i * 7) % 28, 12 + (i * 5) % 24
        raw = np.full((48, 48), 20, np.uint8)
        raw[r - 2:r + 3, c - 2:c + 3] = 250
        lm = np.full((68, 2), 0.5, np.float32)
        lm[0] = [(c + 0.5) / 48, (r + 0.5) / 48]
        crop, moved = D.camera_crop(raw, lm, background, rng)
        assert crop.shape == (48, 48) and crop.dtype == np.uint8
        peak = np.unravel_index(int(np.argmax(crop)), crop.shape)
        px, py = moved[0] * 48
        assert abs(peak[1] + 0.5 - px) <= 2.5 and abs(peak[0] + 0.5 - py) <= 2.5, (i, peak, px, py)


def test_camera_batch_replaces_the_drawn_fraction_reproducibly():
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, (64, 48, 48), dtype=np.uint8)
    lm = rng.random((64, 68, 2)).astype(np.float32)
    none = D.camera_batch(raw, lm, raw, np.random.default_rng(1), p=0.0)
    assert len(none[0]) == 0
    every = D.camera_batch(raw, lm, raw, np.random.default_rng(1), p=1.0)
    assert list(every[0]) == list(range(64)) and every[1].shape == (64, 48, 48)
    a = D.camera_batch(raw, lm, raw, np.random.default_rng(7), p=0.5)
    b = D.camera_batch(raw, lm, raw, np.random.default_rng(7), p=0.5)
    assert 16 < len(a[0]) < 48
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and np.array_equal(a[2], b[2])
    # the crops are CLAHE'd like the cache: full-range contrast even from a dim face
    dim = (raw // 4).astype(np.uint8)
    out = D.camera_batch(dim, lm, dim, np.random.default_rng(3), p=1.0)[1]
    assert out.max() - out.min() > 128
