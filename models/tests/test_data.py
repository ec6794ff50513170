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
