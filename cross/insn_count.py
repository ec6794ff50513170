#!/usr/bin/env python3
"""Guest instructions per inference under qemu-user, for the board estimates (issue 7).

    cross/insn_count.py [--no-apt] [--arch auto|aarch64|armv7|all] [--cpus LIST] [--binary PATH]
                        [--runs 2,5,8] [--kernels auto,tract,neon] [--json FILE]

Counts the instructions the Arm binary executes per graph run under qemu-user's TCG with a small
counting plugin (cross/insn_count/insn_count.c), on each emulated core: aarch64 under
`qemu-aarch64 -cpu cortex-a72` (Pi 4) and `-cpu cortex-a76` (Pi 5), armv7 under `qemu-arm -cpu
cortex-a7` when an armv7 binary exists. Each count is `ferrite bench --graphs-only --model M
--warmup W --runs N` for several N; the slope of the count over N (least squares) is the
instructions per run, so loading, optimising and the warm-up cancel out. The spread column is the
largest relative difference between the slopes of consecutive N and that slope: how linear the
counts were. With a binary whose `bench --help` lists `--graph`, the ensemble graph and the detector
graph are counted separately; without it every run is one detector graph plus one ensemble graph
(the difference between two models' rows is then still exactly their ensembles' difference).

These are instruction counts under emulation: they show which kernels tract picks on that core
(NEON, SDOT when the core has FEAT_DotProd) and how much work they execute, and are an estimate,
not time; qemu's wall time says nothing about a board. qemu-user 7.2 passes the host's /proc/cpuinfo
through, where tract looks for the core's part number and "asimdhp" (it warns that it finds neither),
so each core's kind is passed to tract as a board would give it (CPU_ENV below: the Cortex-A53's own
kernels; FP16 and the dot product on the A76). tract reads FEAT_DotProd from AT_HWCAP itself. f16 rows
are counted only on cores with FP16 arithmetic (FP16_CPUS), and a bench that fell back to the stored
model is refused. `--kernels` counts each FERRITE_CONV value in turn (tract's kernels against
ferrite's direct NEON ones, say); each row names the kernels the bench reported running.

Setup (idempotent; `--no-apt` only checks): Debian's dynamic qemu-user (qemu-user-static cannot
load plugins; installed without recommends, since qemu-user-binfmt conflicts with the
qemu-user-static that cross/build.sh installs), gcc, and the qemu-plugin.h of the installed QEMU,
taken from the Debian source package of the installed version: `apt-get source --download-only`
with a temporary deb-src list and private index and cache directories (the system's apt
configuration and state are not touched); apt checks the files against the signed index, and this
script checks them again against the sha256 sums `apt-get source --print-uris` reports. The header,
its provenance and the built plugin are cached under target/insn-count/.
"""
import argparse
import datetime
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "target/insn-count"
PLUGIN_SRC = ROOT / "cross/insn_count/insn_count.c"
NOTE = ("guest instruction counts per inference under qemu-user emulation (TCG): an estimate of the "
        "work on that core, not a time")
# arch: (target triple, qemu-user binary, default CPUs, dynamic loader, libc for qemu's -L when that
# loader is not installed; see cross/equivalence.py). Only where the loader is missing: with -L the
# aarch64 binary has hung under qemu.
ARCHES = {
    "aarch64": ("aarch64-unknown-linux-gnu", "qemu-aarch64", ["cortex-a72", "cortex-a76"],
                "/lib/ld-linux-aarch64.so.1", "/usr/aarch64-linux-gnu"),
    "armv7": ("armv7-unknown-linux-gnueabihf", "qemu-arm", ["cortex-a7"], "/lib/ld-linux-armhf.so.3",
              "/usr/arm-linux-gnueabihf"),
}
# What tract must be told on each emulated core. qemu-user 7.2 shows the guest the host's
# /proc/cpuinfo, where tract reads the core's part number (Cortex-A53 and A55 get their own kernels)
# and "asimdhp" (FP16 arithmetic); so each core's kind is passed as a board's /proc/cpuinfo would
# give it. Cortex-A76 has no kind of its own in tract-linalg 0.23.9: Cortex-A75 is the kind it
# credits with FP16 and the dot product, which the A76 has, and it changes no other kernel choice.
# Only cores listed in FP16_CPUS get f16 rows: elsewhere tract emulates f16, far slower than f32.
CPU_ENV = {
    "cortex-a53": {"TRACT_CPU_AARCH64_KIND": "cortex-a53"},
    "cortex-a72": {"TRACT_CPU_AARCH64_KIND": "cortex-a72"},
    "cortex-a76": {"TRACT_CPU_AARCH64_KIND": "cortex-a75"},
}
FP16_CPUS = {"cortex-a76"}
# qemu-user: the dynamic QEMU that can load plugins; xz-utils: the source tarballs.
PACKAGES = ["qemu-user", "gcc", "xz-utils"]
HEADER = "include/qemu/qemu-plugin.h"


class Fail(Exception):
    """One line saying why; main() prints it as `insn_count: FAIL: ...` and exits 1."""


# ---- pure helpers (tested without qemu: cross/tests/test_insn_count.py) ----

def parse_counts(text):
    """The plugin's output, `insns N` and `vcpus N` lines, as a dict of ints."""
    counts = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in ("insns", "vcpus") and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    if "insns" not in counts:
        raise Fail(f"the plugin wrote no instruction count ({text.strip()[:80]!r})")
    return counts


def parse_runs(text):
    """`2,5,8` -> [2, 5, 8]: at least two distinct run counts, ascending."""
    try:
        runs = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text}")
    if len(runs) < 2 or runs[0] < 1:
        raise argparse.ArgumentTypeError("give at least two different run counts, each at least 1")
    return runs


def per_run(points):
    """Least-squares slope of count over runs for [(runs, count), ...], and the spread: the largest
    relative difference between a consecutive pair's slope and that slope (0 for two points)."""
    if len(points) < 2:
        raise ValueError("need at least two points")
    xs = [float(x) for x, _ in points]
    ys = [float(y) for _, y in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        raise ValueError("the run counts must differ")
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    if slope <= 0:
        raise Fail(f"counts do not grow with the run count: {points}")
    pairs = sorted(points)
    spread = max(abs((y1 - y0) / (x1 - x0) - slope) / slope
                 for (x0, y0), (x1, y1) in zip(pairs, pairs[1:]))
    return slope, spread


def has_graph_flag(help_text):
    """Whether `ferrite bench --help` offers `--graph` (time only one of the two graphs)."""
    return re.search(r"^\s*--graph\b", help_text, re.M) is not None


def has_precision_flag(help_text):
    """Whether `ferrite bench --help` offers `--precision` (f16 arithmetic for float models)."""
    return re.search(r"^\s*--precision\b", help_text, re.M) is not None


def jobs(models, graph_flag, detector, f16=False):
    """What to count on each core: (label, format, graph, extra bench arguments). With --graph, every
    model's ensemble alone (and, with `f16`, every fp32 model's ensemble in f16 too) and the detector
    once; without it, every model's run of both graphs."""
    out = []
    for m in models:
        if graph_flag:
            out.append((m["name"], m["format"], "ensemble", ["--model", m["name"], "--graph", "ensemble"]))
            if f16 and m["format"] == "fp32":
                out.append((m["name"], "f16", "ensemble",
                            ["--model", m["name"], "--graph", "ensemble", "--precision", "f16"]))
        else:
            out.append((m["name"], m["format"], f"detector ({detector}) + ensemble", ["--model", m["name"]]))
    if graph_flag and models:
        # The detector does not depend on --model; the first model is only what gets loaded.
        out.append((f"blazeface-{detector}", "fp32", "detector",
                    ["--model", models[0]["name"], "--graph", "detector"]))
    return out


def bench_args(extra, detector, warmup, runs):
    return ["bench", "--graphs-only", "--json", "--detector", detector, "--warmup", str(warmup),
            "--runs", str(runs), *extra]


def check_bench_output(stdout, graph, runs, precision=None):
    """The bench printed JSON rows for the graphs asked for, each with `runs` timed runs, and (when
    `precision` is given) ran the ensemble in it: a binary falls back from f16 to the stored model
    where tract sees no FP16 arithmetic, which would make an f16 row silently count fp32."""
    try:
        rows = json.loads(stdout)
    except json.JSONDecodeError:
        raise Fail(f"bench did not print JSON: {stdout.strip()[:120]!r}")
    want = {"ensemble": ["ensemble graph"], "detector": ["detect graph"]}.get(
        graph, ["detect graph", "ensemble graph"])
    got = [r.get("stage") for r in rows]
    if got != want or any(r.get("runs") != runs for r in rows):
        raise Fail(f"bench printed stages {got} with runs {[r.get('runs') for r in rows]}, expected {want} x {runs}")
    if precision and any(r.get("precision") != precision for r in rows):
        raise Fail(f"bench ran precision {[r.get('precision') for r in rows]}, asked for {precision}")
    return rows


def kernels_of(rows):
    """Who ran each graph of a bench's JSON rows ("tract" for binaries that do not say): the
    ensemble's convolutions, the detector's depthwise convolutions and pools."""
    names = []
    for r in rows:
        key = "conv_kernels" if r.get("stage") == "ensemble graph" else "detector_kernels"
        names.append(r.get(key, "tract"))
    return "/".join(names)


def with_ratios(rows):
    """Adds `vs_fp32`: the ratio to the fp32 model's count on the same arch, cpu and graph (None for
    rows without one, such as the detector)."""
    for r in rows:
        r["vs_fp32"] = None
        if r["graph"] == "detector":
            continue
        refs = [o for o in rows if o["format"] == "fp32" and o["graph"] == r["graph"]
                and o["arch"] == r["arch"] and o["cpu"] == r["cpu"] and o.get("kernels") == r.get("kernels")]
        named = [o for o in refs if o["model"] == r["model"].replace(r["format"], "fp32")]
        ref = (named or refs or [None])[0]
        if ref:
            r["vs_fp32"] = round(r["minsns"] / ref["minsns"], 3)
    return rows


def table(rows):
    head = ["arch", "cpu", "model", "format", "graph", "M insns/inference", "vs fp32", "spread"]
    body = [[r["arch"], r["cpu"], r["model"], r["format"], r["graph"], f"{r['minsns']:.1f}",
             "" if r["vs_fp32"] is None else f"{r['vs_fp32']:.2f}", f"{100 * r['spread']:.2f} %"]
            for r in rows]
    if any("kernels" in r for r in rows):
        head.insert(5, "kernels")
        for line, r in zip(body, rows):
            line.insert(5, r.get("kernels", ""))
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    lines = ["| " + " | ".join(x.ljust(w) for x, w in zip(line, widths)) + " |" for line in [head, *body]]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def measure(count, binary_jobs, runs, warmup, detector):
    """Rows for one (arch, cpu): `count(bench arguments, graph, runs)` returns a guest instruction
    count; each job is counted at every run count in `runs`."""
    rows = []
    for label, fmt, graph, extra in binary_jobs:
        points, seen = [], {}
        for n in runs:
            # `count` may also return what the bench said about itself (the kernels that ran).
            c = count(bench_args(extra, detector, warmup, n), graph, n)
            if isinstance(c, tuple):
                c, seen = c
            points.append((n, c))
        slope, spread = per_run(points)
        rows.append({"model": label, "format": fmt, "graph": graph, "minsns": round(slope / 1e6, 2),
                     "insns": round(slope), "spread": round(spread, 5),
                     "counts": {str(n): c for n, c in points}, **seen})
    return rows


# ---- setup: packages, the plugin header, the plugin ----

def sh(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def installed(package):
    out = sh(["dpkg-query", "-W", "-f=${Status}", package])
    return out.returncode == 0 and out.stdout.endswith("install ok installed")


def plugin_capable(qemu):
    return shutil.which(qemu) is not None and "-plugin" in sh([qemu, "-h"]).stdout


def ensure_packages(no_apt, qemus):
    missing = [p for p in PACKAGES if not installed(p)]
    if not missing and all(plugin_capable(q) for q in qemus):
        return
    if no_apt:
        raise Fail(f"missing {', '.join(missing) or 'a plugin-capable ' + ' '.join(qemus)} (--no-apt given)")
    print(f"insn_count: installing {' '.join(missing)}", file=sys.stderr)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # No recommends: qemu-user recommends qemu-user-binfmt, which conflicts with qemu-user-static.
    out = sh(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], env=env)
    if out.returncode != 0:
        raise Fail(f"apt-get install {' '.join(missing)}: {out.stderr.strip().splitlines()[-1:]}")
    for q in qemus:
        if not plugin_capable(q):
            raise Fail(f"{q} does not offer -plugin after installing qemu-user")


def qemu_source():
    """(source package, source version) of the installed qemu-user, e.g. ('qemu', '1:7.2+dfsg-7+deb12u18')."""
    out = sh(["dpkg-query", "-W", "-f=${source:Package} ${source:Version}", "qemu-user"])
    if out.returncode != 0 or len(out.stdout.split()) != 2:
        raise Fail(f"cannot tell the installed qemu-user's source version: {out.stderr.strip()}")
    return tuple(out.stdout.split())


def deb_src_lines():
    """deb-src lines for the repositories apt already uses for binary packages."""
    out = sh(["apt-get", "indextargets", "--format", "$(REPO_URI) $(RELEASE) $(COMPONENT) $(ORIGIN)",
              "Identifier: Packages"])
    keyring = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
    lines = []
    for entry in sorted(set(out.stdout.splitlines())):
        uri, release, component, origin = (entry.split() + [""] * 4)[:4]
        signed = f"[signed-by={keyring}] " if origin == "Debian" and keyring.exists() else ""
        lines.append(f"deb-src {signed}{uri} {release} {component}")
    if not lines:
        raise Fail("apt-get indextargets lists no repositories to take the qemu source from")
    return lines


def parse_print_uris(text):
    """`apt-get source --print-uris` lines -> {file name: (size, sha256)}."""
    files = {}
    for m in re.finditer(r"^'[^']+' (\S+) (\d+) SHA256:([0-9a-f]{64})$", text, re.M):
        files[m.group(1)] = (int(m.group(2)), m.group(3))
    return files


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_header(package, version, dest):
    """Downloads the Debian source of qemu `version`, checks it, and writes its qemu-plugin.h and a
    provenance file into `dest`."""
    with tempfile.TemporaryDirectory(prefix="insn-count-src-") as tmp:
        tmp = Path(tmp)
        (tmp / "lists/partial").mkdir(parents=True)
        (tmp / "dl").mkdir()
        (tmp / "sources.list").write_text("\n".join(deb_src_lines()) + "\n")
        apt = ["apt-get", "-q", "-o", f"Dir::Etc::SourceList={tmp / 'sources.list'}",
               "-o", "Dir::Etc::SourceParts=/dev/null", "-o", f"Dir::State::Lists={tmp / 'lists'}",
               "-o", f"Dir::Cache::pkgcache={tmp / 'pkgcache.bin'}",
               "-o", f"Dir::Cache::srcpkgcache={tmp / 'srcpkgcache.bin'}"]
        update = sh([*apt, "update"])  # a failing extra repository need not matter: checked below
        spec = f"{package}={version}"
        uris = sh([*apt, "source", "--print-uris", spec], cwd=tmp / "dl")
        files = parse_print_uris(uris.stdout)
        if uris.returncode != 0 or not files:
            raise Fail(f"apt-get source {spec} found nothing: {(uris.stderr or update.stderr).strip()[-200:]}")
        got = sh([*apt, "source", "--download-only", spec], cwd=tmp / "dl")
        if got.returncode != 0:
            raise Fail(f"apt-get source --download-only {spec}: {got.stderr.strip()[-200:]}")
        for name, (size, digest) in files.items():
            path = tmp / "dl" / name
            if not path.exists() or path.stat().st_size != size or sha256(path) != digest:
                raise Fail(f"{name}: size or sha256 differs from what apt lists ({digest})")
        orig = [n for n in files if ".orig.tar." in n]
        debian = [n for n in files if ".debian.tar." in n]
        if len(orig) != 1 or len(debian) != 1:
            raise Fail(f"unexpected source files {sorted(files)}")
        # Debian's patches apply on top; none may touch the header, or the orig copy is not the build's.
        out = sh(["tar", "-xf", tmp / "dl" / debian[0], "-C", tmp, "debian/patches"])
        patches = sorted((tmp / "debian/patches").glob("*")) if out.returncode == 0 else []
        touching = [p.name for p in patches if p.is_file() and f"/{HEADER}" in p.read_text(errors="replace")]
        if touching:
            raise Fail(f"Debian's patches {touching} change {HEADER}; apply them before building the plugin")
        out = subprocess.run(["tar", "-xOf", tmp / "dl" / orig[0], "--wildcards", f"*/{HEADER}"],
                             capture_output=True)
        if out.returncode != 0 or b"qemu_plugin_install" not in out.stdout:
            raise Fail(f"no {HEADER} in {orig[0]}: {out.stderr.decode(errors='replace').strip()}")
        dest.mkdir(parents=True, exist_ok=True)
        (dest / "qemu-plugin.h").write_bytes(out.stdout)
        provenance = {
            "source_package": package, "version": version,
            "files": {n: {"size": s, "sha256": d} for n, (s, d) in files.items()},
            "header": f"{orig[0]}:*/{HEADER}", "header_sha256": hashlib.sha256(out.stdout).hexdigest(),
            "debian_patches_touching_header": [], "checked": "apt (signed index) and this script (sha256)",
            "fetched": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        (dest / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
        print(f"insn_count: {HEADER} from {orig[0]} ({package} {version}; sha256 checked: "
              f"{files[orig[0]][1][:16]}...)", file=sys.stderr)


def build_plugin(no_apt, qemus):
    """The plugin for the installed QEMU, built if missing or older than its source or header."""
    ensure_packages(no_apt, qemus)
    package, version = qemu_source()
    dest = CACHE / ("qemu-" + re.sub(r"[^A-Za-z0-9.+-]", "_", version))
    header = dest / "qemu-plugin.h"
    if not header.exists():
        if no_apt:
            raise Fail(f"no cached {header} and --no-apt given (it comes from apt-get source)")
        fetch_header(package, version, dest)
    so = dest / "libinsn_count.so"
    if not so.exists() or so.stat().st_mtime < max(PLUGIN_SRC.stat().st_mtime, header.stat().st_mtime):
        out = sh(["gcc", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Werror", "-shared", "-fPIC",
                  "-I", dest, "-o", so, PLUGIN_SRC])
        if out.returncode != 0:
            raise Fail(f"building the plugin: {out.stderr.strip()[-300:]}")
    return so, version


# ---- measurement ----

def guest(arch, binary, cpu, plugin=None, out=None):
    _, qemu, _, loader, libc = ARCHES[arch]
    cmd = [qemu]
    if not Path(loader).exists():
        cmd += ["-L", libc]
    if plugin:
        cmd += ["-plugin", f"{plugin},out={out}"]
    return cmd + ["-cpu", cpu, str(binary)]


def describe(cmd):
    """`qemu-aarch64 -cpu cortex-a72 ferrite bench ...`: the guest command without paths or the plugin."""
    cmd = [str(c) for c in cmd]
    i = cmd.index("-cpu") if "-cpu" in cmd else len(cmd) - 1
    return " ".join([Path(cmd[0]).name, *cmd[i:i + 2], *[Path(c).name for c in cmd[i + 2:i + 3]], *cmd[i + 3:]])


def run_guest(cmd, timeout, env=None):
    try:
        out = sh([str(c) for c in cmd], timeout=timeout, cwd=ROOT, env=dict(os.environ, **(env or {})))
    except subprocess.TimeoutExpired:
        raise Fail(f"{describe(cmd)} did not finish in {timeout} s")
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or [""])[-1]
        raise Fail(f"{describe(cmd)} exited {out.returncode}: {last}")
    return out.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", choices=["auto", *ARCHES, "all"], default="auto",
                    help="auto: aarch64, and armv7 when its binary exists [default: auto]")
    ap.add_argument("--cpus", help="comma-separated qemu CPU models for every arch [default: cortex-a72,"
                    "cortex-a76 for aarch64, cortex-a7 for armv7]")
    ap.add_argument("--binary", type=Path, help="the aarch64 binary [default: target/aarch64-unknown-linux-gnu/"
                    "release/ferrite]")
    ap.add_argument("--armv7-binary", type=Path, help="the armv7 binary [default: target/armv7-unknown-"
                    "linux-gnueabihf/release/ferrite]")
    ap.add_argument("--models", help="comma-separated bundled model names [default: every bundled model]")
    ap.add_argument("--detector", choices=["short", "long"], default="short")
    ap.add_argument("--runs", type=parse_runs, default=[2, 5, 8],
                    help="bench run counts to difference [default: 2,5,8]")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--timeout", type=int, default=600, help="seconds per qemu run [default: 600]")
    ap.add_argument("--no-apt", action="store_true", help="install and download nothing; fail if missing")
    ap.add_argument("--json", type=Path, metavar="FILE", help="also write the rows and setup there")
    ap.add_argument("--kernels", default="auto",
                    help="comma-separated FERRITE_CONV values to count, e.g. tract,neon [default: auto, "
                    "what the binary picks]")
    args = ap.parse_args()

    binaries = {a: ROOT / f"target/{ARCHES[a][0]}/release/ferrite" for a in ARCHES}
    if args.binary:
        binaries["aarch64"] = args.binary.resolve()
    if args.armv7_binary:
        binaries["armv7"] = args.armv7_binary.resolve()
    if args.arch == "auto":
        arches = ["aarch64"] + (["armv7"] if binaries["armv7"].exists() else [])
        if "armv7" not in arches:
            print(f"insn_count: no armv7 binary at {binaries['armv7']}; armv7 skipped", file=sys.stderr)
    else:
        arches = list(ARCHES) if args.arch == "all" else [args.arch]
    for a in arches:
        if not binaries[a].exists():
            raise Fail(f"missing {binaries[a]}: build it with cross/build.sh or pass its path")

    qemus = sorted({ARCHES[a][1] for a in arches})
    plugin, source_version = build_plugin(args.no_apt, qemus)
    qemu_version = (sh([qemus[0], "--version"]).stdout.splitlines() or ["?"])[0]
    rows, meta = [], {"note": NOTE, "qemu": qemu_version, "qemu_source": source_version,
                      "plugin": str(plugin.relative_to(ROOT)), "runs": args.runs, "warmup": args.warmup,
                      "detector": args.detector, "binaries": {},
                      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    with tempfile.TemporaryDirectory(prefix="insn-count-") as tmp:
        for arch in arches:
            binary = binaries[arch]
            cpus = args.cpus.split(",") if args.cpus else ARCHES[arch][2]
            models = json.loads(run_guest(guest(arch, binary, cpus[0]) + ["models", "--json"], args.timeout))
            if args.models:
                wanted = args.models.split(",")
                models = [m for m in models if m["name"] in wanted]
                if len(models) != len(wanted):
                    raise Fail(f"{arch}: bundled models are not all of {wanted}")
            bench_help = run_guest(guest(arch, binary, cpus[0]) + ["bench", "--help"], args.timeout)
            graph_flag = has_graph_flag(bench_help)
            precision_flag = has_precision_flag(bench_help)
            meta["binaries"][arch] = {"path": str(binary), "sha256": sha256(binary), "graph_flag": graph_flag,
                                      "precision_flag": precision_flag}
            meta["cpu_env"] = CPU_ENV
            if not graph_flag:
                print(f"insn_count: {binary} has no `bench --graph`: counting detector + ensemble per run",
                      file=sys.stderr)
            for cpu in cpus:
                for kernels in args.kernels.split(","):
                    env = dict(CPU_ENV.get(cpu) or {}, FERRITE_CONV=kernels)

                    def count(bench, graph, runs, env=env):
                        out = Path(tmp) / "count"
                        out.unlink(missing_ok=True)
                        stdout = run_guest(guest(arch, binary, cpu, plugin, out) + bench, args.timeout, env)
                        precision = bench[bench.index("--precision") + 1] if "--precision" in bench else None
                        bench_rows = check_bench_output(stdout, graph, runs, precision)
                        if not out.exists():
                            raise Fail(f"the plugin wrote no count for {' '.join(bench)}")
                        counts = parse_counts(out.read_text())
                        if counts.get("vcpus", 1) != 1:
                            print(f"insn_count: {counts['vcpus']} guest threads ran", file=sys.stderr)
                        print(f"insn_count: {arch} {cpu} FERRITE_CONV={env['FERRITE_CONV']} {' '.join(bench)}: "
                              f"{counts['insns']} instructions", file=sys.stderr)
                        return counts["insns"], {"kernels": kernels_of(bench_rows)}
                    f16 = precision_flag and cpu in FP16_CPUS
                    for row in measure(count, jobs(models, graph_flag, args.detector, f16), args.runs,
                                       args.warmup, args.detector):
                        rows.append({"arch": arch, "cpu": cpu, **row})
    with_ratios(rows)
    print(f"\n{NOTE[0].upper() + NOTE[1:]}; ferrite bench --graphs-only, slope over --runs "
          f"{','.join(map(str, args.runs))} after {args.warmup} warm-up; {qemu_version}.\n")
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    try:
        main()
    except Fail as e:
        sys.exit(f"insn_count: FAIL: {e}")
