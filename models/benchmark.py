#!/usr/bin/env python3
"""Latency of one ensemble pass (batch 1) with onnxruntime on the CPU, single thread.

Either exported model directories, or --random SIZES to build random-weight full-width models at each
resolution (latency does not depend on the weights), export them, quantize them (calibrated on random
inputs) and time fp32 and int8. Reports the median and p90 over --runs after --warmup runs.

    python3 models/benchmark.py models/fer2013-48-fp32 models/fer2013-48-int8
    python3 models/benchmark.py --random 48,64,160 --json models/results/latency.json
"""
import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import fermodel as fm


def bench(path, size, runs=200, warmup=20, threads=1):
    sess = fm.ort_session(path, threads=threads)
    x = np.random.RandomState(0).uniform(-1, 1, (1, 1, size, size)).astype(np.float32)
    for _ in range(warmup):
        sess.run(None, {"input": x})
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, {"input": x})
        ts.append((time.perf_counter() - t) * 1000)
    return {"median_ms": float(np.median(ts)), "p90_ms": float(np.percentile(ts, 90)), "runs": runs,
            "file_bytes": os.path.getsize(path)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*")
    ap.add_argument("--random", help="comma-separated sizes for random-weight models")
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    res = {}
    for m in args.models:
        man = json.loads((Path(m) / "manifest.json").read_text())
        r = bench(Path(m) / man["file"], man["input"]["height"], args.runs, threads=args.threads)
        res[man["name"]] = r
        print(man["name"], json.dumps(r))
    if args.random:
        tmp = Path(tempfile.mkdtemp())
        for s in [int(v) for v in args.random.split(",")]:
            torch.manual_seed(0)
            model = fm.Ensemble().eval()
            fm.export_onnx(model, tmp / f"r{s}.onnx", s)
            calib = np.random.RandomState(0).uniform(-1, 1, (16, 1, s, s)).astype(np.float32)
            fm.quantize_int8(tmp / f"r{s}.onnx", tmp / f"r{s}_int8.onnx", calib)
            for kind, p in [("fp32", tmp / f"r{s}.onnx"), ("int8", tmp / f"r{s}_int8.onnx")]:
                r = bench(p, s, max(20, args.runs * 48 * 48 // (s * s)), threads=args.threads)
                res[f"random-{s}-{kind}"] = r
                print(f"random-{s}-{kind}", json.dumps(r))
    res["_conditions"] = {"runtime": "onnxruntime " + __import__("onnxruntime").__version__ + " CPUExecutionProvider",
                          "threads": args.threads, "batch": 1, "cpu": os.uname().machine,
                          "load_average_at_end": os.getloadavg()}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        old = json.loads(Path(args.json).read_text()) if Path(args.json).exists() else {}
        old.update(res)
        Path(args.json).write_text(json.dumps(old, indent=1) + "\n")


if __name__ == "__main__":
    main()
