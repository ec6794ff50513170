#!/usr/bin/env python3
"""Checks that the Arm binaries (run under qemu-user) print the same JSON as the host binary.

    cross/equivalence.py [--arch aarch64|armv7|all] [--cpu CPU] [--host BINARY] [IMAGE ...]

Runs `ferrite classify --landmarks` with both binaries, for each bundled model, on the same inputs
(default: the bundled sample as PNG and JPEG) and compares every number with a relative tolerance of 1e-4
and every string exactly. Exits non-zero on the first difference. Build the binaries first:
`cargo build --release` (or pass `--host target/debug/ferrite`: its dependencies, tract included, are
optimised like a release build's) and `cross/build.sh --target all`.
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# arch: (target triple, qemu-user binary, default CPU, dynamic loader, the cross compiler's libc for
# qemu's -L when that loader is not installed: gcc-*-linux-gnu* brings it, so no foreign-architecture
# libc6 is needed; cross/build.sh installs libc6:arm64 but not armhf's). The CPUs are the boards' own cores where qemu
# has them: Cortex-A72 is the Pi 4's (pass cortex-a76 for the Pi 5's); qemu-arm has no Cortex-A53 (Pi 3,
# Zero 2 W) in 32-bit mode, and Cortex-A7 offers the same ARMv7 + NEON instruction set.
ARCHES = {
    "aarch64": ("aarch64-unknown-linux-gnu", "qemu-aarch64-static", "cortex-a72", "/lib/ld-linux-aarch64.so.1",
                "/usr/aarch64-linux-gnu"),
    "armv7": ("armv7-unknown-linux-gnueabihf", "qemu-arm-static", "cortex-a7", "/lib/ld-linux-armhf.so.3",
              "/usr/arm-linux-gnueabihf"),
}


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
    try:
        # A few seconds under qemu; the bound keeps a hung emulation from hanging CI.
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    except subprocess.TimeoutExpired:
        sys.exit(f"{' '.join(map(str, cmd))} did not finish in 300 s")
    if out.returncode not in (0, 1):
        sys.exit(f"{' '.join(map(str, cmd))} failed ({out.returncode}): {out.stderr.strip()}")
    return [json.loads(line) for line in out.stdout.splitlines()]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", choices=[*ARCHES, "all"], default="aarch64")
    ap.add_argument("--cpu", help="qemu CPU model [default: cortex-a72 for aarch64 (Pi 4; cortex-a76 is the Pi 5), "
                    "cortex-a7 for armv7]")
    ap.add_argument("--host", type=Path, default=ROOT / "target/release/ferrite", help="the x86_64 binary")
    ap.add_argument("images", nargs="*", default=["assets/astronaut.png", "assets/astronaut.jpg"])
    args = ap.parse_args()
    arches = list(ARCHES) if args.arch == "all" else [args.arch]
    binaries = [args.host] + [ROOT / f"target/{ARCHES[a][0]}/release/ferrite" for a in arches]
    for binary in binaries:
        if not binary.exists():
            sys.exit(f"missing {binary}: build it first (see the docstring)")
    # Each architecture has its own default model, so name the model explicitly.
    for model in ("fer2013-48-fp32", "fer2013-48-int8"):
        # --keep-model: compare the model named, not a sibling the start-up timing prefers.
        cli = ["classify", "--landmarks", "--threads", "1", "--keep-model", "--model", model, *args.images]
        host = run([args.host, *cli])
        if not host:
            sys.exit(f"{model}: the host binary printed nothing for {args.images}")
        for arch in arches:
            triple, qemu, default_cpu, loader, libc = ARCHES[arch]
            cpu = args.cpu or default_cpu
            # Only where needed: with -L, the aarch64 binary has spun without end in its first
            # inference under qemu 10 (seen 2026-11-30; the same binary without -L takes 5 s).
            prefix = [] if Path(loader).exists() else ["-L", libc]
            arm = run([qemu, *prefix, "-cpu", cpu, ROOT / f"target/{triple}/release/ferrite", *cli])
            worst = compare(host, arm)
            print(f"{model}: {arch} prints {len(host)} JSON lines equal to the host's within 1e-4 relative "
                  f"(max difference {worst:.2e}), qemu -cpu {cpu}")


if __name__ == "__main__":
    main()
