#!/usr/bin/env python3
"""Export a trained checkpoint to ONNX (fp32) with its manifest, and check the round trip.

BatchNorm is folded into the convolutions; Linear layers export as MatMul+Add (no Gemm) so that
quantize.py can turn them into QLinearMatMul. Graph: input `input` [N,1,H,W] float32 (CLAHE'd,
x/127.5-1); outputs `probabilities` [N,C] (mean of the five softmaxes), `part_probabilities` [N,5,C]
(jaw, eyebrows, nose, eyes, mouth), `landmarks` [N,68,2] (iBUG-68 order, [0,1] crop coordinates).

    python3 models/export.py --ckpt models/runs/s3_48/best.pt --size 48 --out models/fer2013-48-fp32 \\
        --description "..."
"""
import argparse
import json
from pathlib import Path

import numpy as np
import torch

import data as D
import fermodel as fm
from train import load_model


def roundtrip_error(model: fm.Ensemble, onnx_path, x: np.ndarray) -> float:
    sess = fm.ort_session(onnx_path)
    outs = sess.run(["probabilities", "part_probabilities", "landmarks"], {"input": x})
    with torch.no_grad():
        ref = fm.ExportWrapper(model.eval())(torch.from_numpy(x))
    return max(float(np.abs(o - r.numpy()).max()) for o, r in zip(outs, ref))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", help="checkpoint (required unless --manifest-only)")
    ap.add_argument("--size", type=int, default=48)
    ap.add_argument("--out", required=True, help="model directory (model.onnx + manifest.json)")
    ap.add_argument("--name", help="manifest name (default: the directory name)")
    ap.add_argument("--description", default="part-based ensemble FER classifier")
    ap.add_argument("--labels", default=",".join(fm.FER_LABELS))
    ap.add_argument("--no-landmarks", action="store_true", help="manifest says landmarks: null (output still present)")
    ap.add_argument("--crop-calibration", default=str(fm.REPO_ROOT / "models" / "crop_calibration.json"),
                    help="JSON from `ferrite calibrate-crop` on the training crops; its geometry goes into the "
                         "manifest as \"crop\" (use --no-crop for models trained on other framings)")
    ap.add_argument("--no-crop", action="store_true")
    ap.add_argument("--manifest-only", action="store_true", help="only rewrite manifest.json for an existing model.onnx")
    ap.add_argument("--check-split", default="fer2013_public_test", help="cache split used for the round-trip check")
    ap.add_argument("--cache", default=str(D.CACHE))
    args = ap.parse_args()
    labels = args.labels.split(",")
    crop = None if args.no_crop else fm.load_crop_calibration(args.crop_calibration)
    out = Path(args.out)
    if args.manifest_only:
        old = json.loads((out / "manifest.json").read_text())
        man = fm.write_manifest(out, args.name or out.name, old["description"], old["purpose"], old["format"],
                                old["input"]["height"], old["labels"], landmarks=old["outputs"]["landmarks"] is not None,
                                crop=crop)
        print(json.dumps(man))
        return
    model, ck = load_model(args.ckpt)
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    fm.export_onnx(model, out / "model.onnx", args.size)
    try:
        d = D.load_split(args.check_split, args.cache)
        x = D.to_tensor(D.preprocessed(d, args.size, args.check_split, args.cache)[:64]).numpy()
    except FileNotFoundError:
        x = np.random.RandomState(0).uniform(-1, 1, (8, 1, args.size, args.size)).astype(np.float32)
    err = roundtrip_error(model, out / "model.onnx", x)
    assert err < 1e-4, f"ONNX vs PyTorch max abs error {err}"
    man = fm.write_manifest(out, args.name or out.name, args.description, "classifier", "fp32", args.size, labels,
                            landmarks=not args.no_landmarks, crop=crop)
    print(f"wrote {out / 'model.onnx'} ({(out / 'model.onnx').stat().st_size} bytes), round-trip max abs err {err:.2e}")
    print(json.dumps(man))


if __name__ == "__main__":
    main()
