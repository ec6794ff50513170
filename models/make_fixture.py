#!/usr/bin/env python3
"""Build the ensemble test fixture for the Rust runtime's tests.

Same architecture and ONNX interface as the shipped models (input `input` [N,1,48,48]; outputs
`probabilities` [N,7], `part_probabilities` [N,5,7], `landmarks` [N,68,2]) but seeded random weights and
reduced widths (4/4/8/8, head 16) to keep the files small. Writes, for the fp32 graph and its int8
QOperator form (QLinearConv/QLinearMatMul, standard domain only):

  <out>/ensemble/{model.onnx, manifest.json, input.f32, probabilities.f32, part_probabilities.f32, landmarks.f32}
  <out>/ensemble-int8/{same files}

*.f32 are raw little-endian float32 in C order: input [1,1,48,48], probabilities [1,7],
part_probabilities [1,5,7], landmarks [1,68,2]; outputs are onnxruntime's (single thread) for that input.

    python3 models/make_fixture.py            # writes tests/fixtures/ensemble{,-int8}
"""
import argparse
import json
from pathlib import Path

import numpy as np
import torch

import fermodel as fm


def build(seed: int, widths, hidden):
    torch.manual_seed(seed)
    m = fm.Ensemble(n_classes=7, widths=widths, hidden=hidden)
    g = torch.Generator().manual_seed(seed + 1)
    # non-trivial BatchNorm statistics so that BN folding is exercised
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            c = mod.num_features
            mod.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
            mod.running_var.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
            mod.weight.data.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
            mod.bias.data.copy_(torch.randn(c, generator=g) * 0.1)
    # sharpen the random classifier so the fixture's probabilities are far from uniform
    with torch.no_grad():
        for s in m.subnets:
            s.cls_head[-1].weight.mul_(40.0)
            s.lm_head[-1].weight.mul_(4.0)
    return m.eval()


def fixture_input(seed: int, size: int) -> np.ndarray:
    """A smooth face-like-ish pattern plus seeded noise, in [-1, 1]."""
    rs = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1)
    base = 0.6 * np.cos(3.0 * xx) * np.sin(4.0 * yy) - 0.2
    x = np.clip(base + 0.3 * rs.uniform(-1, 1, (size, size)), -1, 1).astype(np.float32)
    return x.reshape(1, 1, size, size)


def write_ref(dir_: Path, model_path: Path, x: np.ndarray):
    sess = fm.ort_session(model_path, threads=1)
    probs, parts, lms = sess.run(["probabilities", "part_probabilities", "landmarks"], {"input": x})
    assert probs.shape == (1, 7) and parts.shape == (1, 5, 7) and lms.shape == (1, 68, 2)
    for name, arr in [("input", x), ("probabilities", probs), ("part_probabilities", parts), ("landmarks", lms)]:
        np.ascontiguousarray(arr, dtype="<f4").tofile(dir_ / f"{name}.f32")
    return probs, parts, lms


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(fm.REPO_ROOT / "tests" / "fixtures"), help="fixtures directory")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--size", type=int, default=48)
    ap.add_argument("--widths", default="4,4,8,8")
    ap.add_argument("--hidden", type=int, default=16)
    args = ap.parse_args()
    widths = tuple(int(w) for w in args.widths.split(","))
    out = Path(args.out)
    fdir, qdir = out / "ensemble", out / "ensemble-int8"
    fdir.mkdir(parents=True, exist_ok=True)
    qdir.mkdir(parents=True, exist_ok=True)

    m = build(args.seed, widths, args.hidden)
    x = fixture_input(args.seed, args.size)
    fm.export_onnx(m, fdir / "model.onnx", args.size)
    p, pp, lm = write_ref(fdir, fdir / "model.onnx", x)
    with torch.no_grad():
        tp, tpp, tlm = fm.ExportWrapper(m)(torch.from_numpy(x))
    err = max(np.abs(tp.numpy() - p).max(), np.abs(tpp.numpy() - pp).max(), np.abs(tlm.numpy() - lm).max())
    assert err < 1e-4, err
    fm.write_manifest(fdir, "ensemble-fixture-fp32", "random-weight test fixture (reduced widths), fp32",
                      "test-fixture", "fp32", args.size, fm.FER_LABELS)

    rs = np.random.RandomState(args.seed + 7)
    calib = np.concatenate([fixture_input(args.seed + 100 + i, args.size) for i in range(32)]
                           + [rs.uniform(-1, 1, (32, 1, args.size, args.size)).astype(np.float32)])
    fm.quantize_int8(fdir / "model.onnx", qdir / "model.onnx", calib)
    qp, qpp, qlm = write_ref(qdir, qdir / "model.onnx", x)
    fm.write_manifest(qdir, "ensemble-fixture-int8", "random-weight test fixture (reduced widths), int8 QOperator",
                      "test-fixture", "int8", args.size, fm.FER_LABELS)
    ops = fm.check_standard_domains(qdir / "model.onnx")
    print(f"fp32: torch vs onnxruntime max abs err {err:.2e}; probabilities {np.round(p, 4).tolist()}")
    print(f"int8: ops {ops}")
    print(f"int8: probabilities {np.round(qp, 4).tolist()}; max |int8-fp32| prob {np.abs(qp - p).max():.4f}")
    for d in (fdir, qdir):
        print(d, sorted(f.name for f in d.iterdir()), (d / "model.onnx").stat().st_size, "bytes")


if __name__ == "__main__":
    main()
