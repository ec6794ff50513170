#!/usr/bin/env python3
"""Checks that the aarch64 binary (run under qemu-user) prints the same JSON as the host binary.

    cross/equivalence.py [--cpu cortex-a72] [IMAGE ...]

Runs `ferrite classify --landmarks` with both binaries, for each bundled model, on the same inputs
(default: the bundled sample as PNG and JPEG) and compares every number with a relative tolerance of 1e-4
and every string exactly. Exits non-zero on the first difference. Build both binaries first:
`cargo build --release` and `cross/build.sh`.
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOST = ROOT / "target/release/ferrite"
ARM = ROOT / "target/aarch64-unknown-linux-gnu/release/ferrite"


def compare(a, b, path="$"):
    if isinstance(a, dict):
        if a.keys() != b.keys():
            raise AssertionError(f"{path}: keys {sorted(a)} != {sorted(b)}")
        return max((compare(a[k], b[k], f"{path}.{k}") for k in a), default=0.0)
    if isinstance(a, list):
        if len(a) != len(b):
            raise AssertionError(f"{path}: lengths {len(a)} != {len(b)}")
        return max((compare(x, y, f"{path}[{i}]") for i, (x, y) in enumerate(zip(a, b))), default=0.0)
    if isinstance(a, float) or isinstance(b, float):
        rel = abs(a - b) / max(1.0, abs(b))
        if rel > 1e-4:
            raise AssertionError(f"{path}: {a} != {b}")
        return rel
    if a != b:
        raise AssertionError(f"{path}: {a!r} != {b!r}")
    return 0.0


def run(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if out.returncode not in (0, 1):
        sys.exit(f"{' '.join(map(str, cmd))} failed ({out.returncode}): {out.stderr.strip()}")
    return [json.loads(line) for line in out.stdout.splitlines()]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu", default="cortex-a72", help="qemu CPU model (cortex-a72: Pi 4, cortex-a76: Pi 5)")
    ap.add_argument("images", nargs="*", default=["assets/astronaut.png", "assets/astronaut.jpg"])
    args = ap.parse_args()
    for binary in (HOST, ARM):
        if not binary.exists():
            sys.exit(f"missing {binary}: build it first (see the docstring)")
    # Each architecture has its own default model, so name the model explicitly.
    for model in ("fer2013-48-fp32", "fer2013-48-int8"):
        cli = ["classify", "--landmarks", "--threads", "1", "--model", model, *args.images]
        host = run([HOST, *cli])
        arm = run(["qemu-aarch64-static", "-cpu", args.cpu, ARM, *cli])
        worst = compare(host, arm)
        print(f"{model}: {len(host)} JSON lines equal within 1e-4 relative "
              f"(max difference {worst:.2e}), qemu -cpu {args.cpu}")


if __name__ == "__main__":
    main()
