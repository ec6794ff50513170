#!/usr/bin/env python3
"""Quantize an exported fp32 model to int8 in the form tract runs with int8 kernels.

onnxruntime.quantization.quantize_static, QuantFormat.QOperator, op_types_to_quantize=[Conv, MatMul]
(-> QLinearConv / QLinearMatMul), activations and weights QInt8 (s8), per-tensor, MinMax calibration on
training crops (preprocessed exactly like the runtime input). BatchNorm is already folded by export.py.
The result is checked to contain only standard-domain ops (no com.microsoft).

    python3 models/quantize.py --fp32 models/fer2013-48-fp32 --out models/fer2013-48-int8
"""
import argparse
import json
from pathlib import Path

import numpy as np

import data as D
import fermodel as fm


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fp32", required=True, help="directory with model.onnx + manifest.json")
    ap.add_argument("--out", required=True)
    ap.add_argument("--name")
    ap.add_argument("--description")
    ap.add_argument("--calib", default="fer2013_train", help="cache split for calibration")
    ap.add_argument("--n", type=int, default=1024, help="number of calibration crops")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--per-channel", action="store_true", help="per-channel weight scales (default per-tensor)")
    ap.add_argument("--cache", default=str(D.CACHE))
    args = ap.parse_args()
    src = Path(args.fp32)
    man = json.loads((src / "manifest.json").read_text())
    size = man["input"]["height"]
    d = D.load_split(args.calib, args.cache)
    u8 = D.preprocessed(d, size, args.calib, args.cache)
    idx = np.sort(np.random.RandomState(args.seed).choice(len(u8), min(args.n, len(u8)), replace=False))
    calib = D.to_tensor(u8[idx]).numpy()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fm.quantize_int8(src / "model.onnx", out / "model.onnx", calib, per_channel=args.per_channel)
    ops = fm.check_standard_domains(out / "model.onnx")
    name = args.name or out.name
    desc = args.description or man["description"].replace("fp32", "int8 QOperator")
    m = fm.write_manifest(out, name, desc, man["purpose"], "int8", size, man["labels"],
                          landmarks=man["outputs"]["landmarks"] is not None, crop=man.get("crop"))
    print(f"wrote {out / 'model.onnx'} ({(out / 'model.onnx').stat().st_size} bytes) ops={ops}")
    print(json.dumps(m))


if __name__ == "__main__":
    main()
