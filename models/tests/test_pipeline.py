"""Smoke run of the whole pipeline on a tiny synthetic dataset (no research data needed):
prep_data (dlib teacher) -> stage1 -> stage2 -> stage3 -> export -> quantize -> evaluate, plus a 3-fold
CK+-style subject CV. Runs the real CLIs in subprocesses; about a minute on 2 CPU cores."""
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

import fermodel as fm

MODELS = fm.REPO_ROOT / "models"
PREDICTOR = Path("/usr/share/dlib/shape_predictor_68_face_landmarks.dat")


def cartoon_face(rs, cls):
    """48x48 gray cartoon face; the mouth shape depends on the class so there is something to learn."""
    img = np.full((48, 48), rs.randint(60, 120), np.uint8)
    cx, cy = 24 + rs.randint(-2, 3), 24 + rs.randint(-2, 3)
    cv2.ellipse(img, (cx, cy), (16, 21), 0, 0, 360, int(rs.randint(150, 210)), -1)
    for dx in (-7, 7):
        cv2.circle(img, (cx + dx, cy - 5), 2, 30, -1)
        cv2.line(img, (cx + dx - 4, cy - 10 - cls % 3), (cx + dx + 4, cy - 10), 40, 1)
    cv2.line(img, (cx, cy - 3), (cx, cy + 4), 90, 1)
    cv2.ellipse(img, (cx, cy + 10), (7, 1 + cls), 0, 0, 360 if cls % 2 else 180, 20, -1)
    return cv2.GaussianBlur(img, (3, 3), 0)


def write_split(root: Path, classes, n, names=None, seed=0):
    rs = np.random.RandomState(seed)
    k = 0
    for ci, c in enumerate(classes):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            name = names(ci, i) if names else f"{i:04d}.png"
            cv2.imwrite(str(root / c / name), cartoon_face(rs, ci))
            k += 1


def run(*args, env=None):
    r = subprocess.run([sys.executable, *map(str, args)], cwd=fm.REPO_ROOT, capture_output=True, text=True,
                       env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout


@pytest.mark.skipif(not PREDICTOR.exists(), reason="dlib predictor missing: apt-get install libdlib-data")
def test_pipeline_smoke(tmp_path):
    data, cache, runs = tmp_path / "data", tmp_path / "cache", tmp_path / "runs"
    write_split(data / "fer2013" / "train", fm.FER_LABELS, 10, seed=1)
    write_split(data / "fer2013" / "public_test", fm.FER_LABELS, 3, seed=2)
    write_split(data / "ckplus48", fm.CK_LABELS, 6, names=lambda c, i: f"S{100 + i:03d}_{c + 1:03d}_{i:08d}.png", seed=3)
    env = dict(os.environ, FERRITE_THREADS="2", TQDM_DISABLE="1")
    run(MODELS / "prep_data.py", "--data", data, "--cache", cache)
    d = np.load(cache / "fer2013_train.npz")
    assert d["images"].shape == (70, 48, 48) and d["landmarks"].shape == (70, 68, 2)
    assert np.isfinite(d["landmarks"]).all()
    common = ["--cache", cache, "--batch", "16"]
    run(MODELS / "train.py", "stage1", "--out", runs / "s1", "--epochs", "1", *common, env=env)
    run(MODELS / "train.py", "stage2", "--init", runs / "s1" / "last.pt", "--out", runs / "s2", "--epochs", "3",
        *common, env=env)
    run(MODELS / "train.py", "stage3", "--init", runs / "s2" / "best.pt", "--out", runs / "s3", "--epochs", "1",
        *common, env=env)
    # distillation from a trained model, with the camera-path augmentation on
    out = run(MODELS / "train.py", "stage3", "--init", runs / "s2" / "best.pt", "--out", runs / "s3d", "--epochs", "1",
              "--teachers", runs / "s3" / "best.pt", "--camera", "0.5", *common, env=env)
    assert "distilling 1 teacher(s)" in out and (runs / "s3d" / "history.json").exists(), out
    for stage in ("s2", "s3"):
        fp32, int8 = tmp_path / f"{stage}-fp32", tmp_path / f"{stage}-int8"
        run(MODELS / "export.py", "--ckpt", runs / stage / "best.pt", "--out", fp32, "--cache", cache, env=env)
        run(MODELS / "quantize.py", "--fp32", fp32, "--out", int8, "--cache", cache, "--n", "32", env=env)
        for m in (fp32, int8):
            man = json.loads((m / "manifest.json").read_text())
            assert man["sha256"] == fm.sha256(m / "model.onnx")
            fm.check_standard_domains(m / "model.onnx")
            out = tmp_path / f"{m.name}.json"
            run(MODELS / "evaluate.py", "--model", m, "--cache", cache, "--json", out, "--png", tmp_path / f"{m.name}.png",
                env=env)
            res = json.loads(out.read_text())
            assert res["n"] == 21 and 0.0 <= res["accuracy"] <= 1.0
    run(MODELS / "cv_ckplus.py", "--init", runs / "s1" / "last.pt", "--folds", "3", "--epochs", "2", "--int8",
        "--cache", cache, "--out", tmp_path / "cv.json", env=env)
    cv = json.loads((tmp_path / "cv.json").read_text())
    assert len(cv["folds"]) == 3 and "int8" in cv["frozen"]
    # stage 1 resumes from its checkpoint instead of starting over
    out = run(MODELS / "train.py", "stage1", "--out", runs / "s1", "--epochs", "1", *common, env=env)
    assert "resumed at step" in out, out
    # wider backbones (the accuracy/latency trade-off), trained from stage 1 or widened from a trained
    # model; stage 3 and export take the widths from the checkpoint
    run(MODELS / "train.py", "stage1", "--out", runs / "s1w", "--epochs", "1", "--widths", "32,32,48,64", *common,
        env=env)
    out = run(MODELS / "train.py", "stage3", "--init", runs / "s2" / "best.pt", "--out", runs / "s3w", "--epochs", "1",
              "--widen", "32,48,80,144", *common, env=env)
    assert "widened [16, 32, 64, 128] -> [32, 48, 80, 144]" in out, out
    for ckpt, widths in ((runs / "s1w" / "last.pt", [32, 48, 64]), (runs / "s3w" / "best.pt", [32, 48, 80, 144])):
        run(MODELS / "export.py", "--ckpt", ckpt, "--out", tmp_path / "wide", "--cache", cache, env=env)
        graph = onnx.load(tmp_path / "wide" / "model.onnx").graph
        assert sorted({i.dims[0] for i in graph.initializer if len(i.dims) == 4}) == widths
    # resuming a run with other widths fails with the reason
    r = subprocess.run([sys.executable, MODELS / "train.py", "stage1", "--out", runs / "s1w", "--epochs", "1", *common],
                       cwd=fm.REPO_ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode != 0 and "widths [32, 32, 48, 64], not [16, 32, 64, 128]" in r.stderr, r.stderr[-2000:]
