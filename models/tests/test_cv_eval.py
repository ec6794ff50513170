import numpy as np

import cv_eval
import data as D
import fermodel as fm
from test_data import synthetic_ck_names

CK_CLASSES = ["anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise"]


def test_each_fold_is_tested_on_exactly_the_images_its_training_left_out(monkeypatch):
    names = np.array(synthetic_ck_names())
    raw = np.random.default_rng(0).integers(0, len(CK_CLASSES), len(names))
    split = {"names": names, "labels": raw, "classes": np.array(CK_CLASSES),
             "landmarks": np.zeros((len(names), 68, 2), np.float32),
             "images": np.zeros((len(names), 48, 48), np.uint8)}
    monkeypatch.setattr(D, "load_split", lambda name, cache: split)
    monkeypatch.setattr(D, "preprocessed", lambda d, size, name, cache: np.zeros((len(names), 1, 4, 4)))
    labels = list(fm.FER_LABELS)
    # The model's class per image as cv_eval computes it; contempt is -1.
    y = np.array([labels.index(fm.CK_TO_FER[c]) if fm.CK_TO_FER[c] else -1 for c in CK_CLASSES])[raw]
    assert (y == -1).any() and (y >= 0).any()
    seen = []
    for fold in range(10):
        test = cv_eval.held_out(names, y, fold)
        trained = D.mapped_split("ckplus48", None, 48, labels, exclude_fold=fold)["names"]
        assert len(test) and not set(names[test]) & set(trained)
        assert len(test) + len(trained) == (y >= 0).sum()
        assert not {D.subject_of(n) for n in names[test]} & {D.subject_of(n) for n in trained}
        seen.extend(test)
    assert sorted(seen) == list(np.flatnonzero(y >= 0)), "every known-class image is tested once"
