#!/usr/bin/env python3
"""ferrite (tract) against onnxruntime on the same ONNX files, the same tensors, the same machine.

For each graph ferrite runs, the bundled expression models (models/<name>/model.onnx, fp32 and int8)
and the bundled BlazeFace detectors (models/blazeface/blazeface_{short_128,long_256}.onnx, the files
ferrite embeds), this script

1. runs the release binary, `ferrite bench --graphs-only --all-models --json --save-inputs DIR`
   (one thread: the graph alone on the tensors the pipeline builds from the bundled sample image,
   written to DIR as raw little-endian f32);
2. runs the same file with onnxruntime's CPU provider on the same tensor, one thread
   (intra_op_num_threads = inter_op_num_threads = 1, sequential execution), timed the same way
   (median and nearest-rank p95 over --runs after --warmup);
3. prints the ratio ferrite / onnxruntime per graph (below 1: ferrite is faster);
4. counts each graph's FLOPs from the ONNX graph itself (2 x multiply-accumulates of Conv,
   ConvInteger, QLinearConv, Gemm, MatMul, MatMulInteger, QLinearMatMul, shapes from ONNX shape
   inference at batch 1; pooling, activations, softmax and the like are not counted) and the
   GFLOP/s each runtime achieves;
5. measures this CPU's peak single-thread FP32 rate: numpy's float32 matrix multiply (OpenBLAS
   sgemm) on square --peak-size matrices, one BLAS thread, best of --peak-reps, counted as
   2 n^3 FLOPs. That is what a tuned GEMM reaches on one core, an attainable peak, not the
   datasheet number (which it usually approaches within 10-20 %); the achieved rates are also
   given as a fraction of it.

The ratios say how tract and onnxruntime compare on this CPU; they say nothing about a board.
Run it on an otherwise idle machine: every number is a wall-clock time.

    cargo build --release
    python3 models/side_by_side.py                       # table
    python3 models/side_by_side.py --json side.json      # and the full results as JSON
    python3 models/side_by_side.py --flops models/fer2013-48-fp32/model.onnx   # FLOP count only

Needs: onnx, onnxruntime, numpy (models/requirements.txt). It lives in models/ with the other
Python (nothing of it runs on a board) and next to benchmark.py, which times onnxruntime alone.
"""
from __future__ import annotations

import os

# One BLAS thread for the peak measurement. Set before numpy is imported: OpenBLAS reads it at load.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DETECTOR_FILES = {"short": "blazeface_short_128.onnx", "long": "blazeface_long_256.onnx"}

# Ops whose cost is counted: op type -> (index of the input holding A or X, index of the weight B or W).
CONV_OPS = {"Conv": (0, 1), "ConvInteger": (0, 1), "QLinearConv": (0, 3)}
MATMUL_OPS = {"MatMul": (0, 1), "MatMulInteger": (0, 1), "QLinearMatMul": (0, 3), "Gemm": (0, 1)}


# ----------------------------------------------------------------------------------------- FLOPs

def _dims(type_proto) -> list | None:
    if not type_proto.HasField("tensor_type") or not type_proto.tensor_type.HasField("shape"):
        return None
    out = []
    for d in type_proto.tensor_type.shape.dim:
        out.append(d.dim_value if d.HasField("dim_value") else None)
    return out


def count_flops(model, input_shape: list[int] | None = None) -> dict:
    """FLOPs of one pass of `model` (a path or an onnx.ModelProto) as 2 x MACs of its Conv, Gemm and
    MatMul nodes (plain, integer and QLinear forms). `input_shape` fixes the first graph input's
    shape (default: its declared shape with symbolic dimensions set to 1).

    Returns {"flops", "macs", "by_op": {op: flops}, "nodes": counted nodes, "unresolved": names of
    counted-op nodes whose shapes inference could not resolve (their cost is missing)}."""
    import onnx

    m = onnx.load(str(model)) if not isinstance(model, onnx.ModelProto) else model
    m = onnx.ModelProto.FromString(m.SerializeToString())  # never edit the caller's proto
    g = m.graph
    inits = {t.name: list(t.dims) for t in g.initializer}
    graph_inputs = [i for i in g.input if i.name not in inits]
    if graph_inputs:
        dims = graph_inputs[0].type.tensor_type.shape.dim
        declared = [d.dim_value if d.HasField("dim_value") else 1 for d in dims]
        want = list(input_shape) if input_shape is not None else declared
        if len(want) != len(dims):
            raise ValueError(f"input {graph_inputs[0].name}: rank {len(dims)}, got shape {want}")
        for d, v in zip(dims, want):
            d.Clear()
            d.dim_value = int(v)
        for extra in graph_inputs[1:]:
            for d in extra.type.tensor_type.shape.dim:
                if not d.HasField("dim_value"):
                    d.Clear()
                    d.dim_value = 1
    m = onnx.shape_inference.infer_shapes(m, data_prop=True)
    shapes = dict(inits)
    for vi in list(m.graph.input) + list(m.graph.value_info) + list(m.graph.output):
        d = _dims(vi.type)
        if d is not None:
            shapes[vi.name] = d

    def known(name):
        s = shapes.get(name)
        return s if s is not None and all(v is not None for v in s) else None

    macs_by_op: dict[str, int] = {}
    unresolved, nodes = [], 0
    for node in m.graph.node:
        op = node.op_type
        if op not in CONV_OPS and op not in MATMUL_OPS:
            continue
        nodes += 1
        a_ix, w_ix = (CONV_OPS if op in CONV_OPS else MATMUL_OPS)[op]
        a = known(node.input[a_ix]) if len(node.input) > a_ix else None
        w = known(node.input[w_ix]) if len(node.input) > w_ix else None
        y = known(node.output[0])
        if op in CONV_OPS:
            # W [C_out, C_in / group, k...], Y [N, C_out, spatial...]
            if w is None or y is None:
                unresolved.append(node.name or op)
                continue
            macs = int(np.prod(y, dtype=np.int64)) * int(np.prod(w[1:], dtype=np.int64))
        elif op == "Gemm":
            attrs = {at.name: at.i for at in node.attribute}
            if a is None or y is None:
                unresolved.append(node.name or op)
                continue
            k = a[0] if attrs.get("transA", 0) else a[1]
            macs = int(np.prod(y, dtype=np.int64)) * k
        else:
            # Y [..., M, N] = A [..., M, K] x B [..., K, N]; a 1-D A has K = A[0].
            if a is None or y is None:
                unresolved.append(node.name or op)
                continue
            macs = max(int(np.prod(y, dtype=np.int64)), 1) * a[-1]
        macs_by_op[op] = macs_by_op.get(op, 0) + macs
    total = sum(macs_by_op.values())
    return {"flops": 2 * total, "macs": total, "by_op": {k: 2 * v for k, v in sorted(macs_by_op.items())},
            "nodes": nodes, "unresolved": unresolved}


# ---------------------------------------------------------------------------------------- timing

def summarize(samples_ms: list[float]) -> dict:
    """Median and p95 exactly as ferrite's bench computes them: nearest rank, index round((n-1) q)
    (Rust rounds halves away from zero)."""
    s = sorted(samples_ms)
    if not s:
        return {"median_ms": 0.0, "p95_ms": 0.0, "runs": 0}

    def at(q):
        x = (len(s) - 1) * q
        return s[int(np.floor(x + 0.5))]
    return {"median_ms": at(0.5), "p95_ms": at(0.95), "runs": len(s)}


def ort_session(path, threads: int = 1):
    """The CPU provider with `threads` intra-op threads and no inter-op parallelism (as fermodel.ort_session)."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def time_ort(path, x: np.ndarray, runs: int, warmup: int) -> dict:
    sess = ort_session(path)
    feed = {sess.get_inputs()[0].name: x}
    for _ in range(warmup):
        sess.run(None, feed)
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, feed)
        ts.append((time.perf_counter() - t) * 1e3)
    return summarize(ts)


def peak_sgemm(n: int = 2048, reps: int = 7) -> dict:
    """Best single-thread float32 GEMM rate (GFLOP/s) over `reps` products of two n x n matrices."""
    rs = np.random.RandomState(0)
    a = rs.standard_normal((n, n)).astype(np.float32)
    b = rs.standard_normal((n, n)).astype(np.float32)
    c = np.empty((n, n), np.float32)
    np.matmul(a, b, out=c)  # warm-up: first-touch pages, kernel selection
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        np.matmul(a, b, out=c)
        best = min(best, time.perf_counter() - t)
    try:
        process_threads = len(os.listdir("/proc/self/task"))
    except OSError:
        process_threads = None
    return {"gflops": 2.0 * n ** 3 / best / 1e9, "n": n, "reps": reps, "best_s": best,
            "blas_threads_env": os.environ.get("OPENBLAS_NUM_THREADS"),
            "process_threads": process_threads}


def cpu_info() -> dict:
    info = {"machine": platform.machine(), "cpus": os.cpu_count(), "load_average": os.getloadavg()}
    try:
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and "model" not in info:
                info["model"] = value.strip()
            elif key == "cpu MHz" and "mhz" not in info:
                info["mhz"] = float(value)
            elif key == "flags" and "simd" not in info:
                flags = set(value.split())
                info["simd"] = [f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni")
                                if f in flags]
    except OSError:
        pass
    return info


# ------------------------------------------------------------------------------------- ferrite

def run_ferrite(binary: Path, detector: str, models: list[str] | None, runs: int, warmup: int,
                inputs: Path) -> list[dict]:
    """Rows of `ferrite bench --graphs-only --json` for `models` (None: every bundled model)."""
    cmd = [str(binary), "bench", "--graphs-only", "--json", "--runs", str(runs), "--warmup", str(warmup),
           "--detector", detector, "--save-inputs", str(inputs)]
    rows = []
    for extra in [["--all-models"]] if models is None else [["--model", m] for m in models]:
        out = subprocess.run(cmd + extra, check=True, stdout=subprocess.PIPE, text=True)
        rows += json.loads(out.stdout)
    return rows


def onnx_file(row: dict) -> Path:
    """The ONNX file a ferrite graph row ran: the bundled detector, or the bundled model's file."""
    if row["stage"] == "detect graph":
        return REPO / "models" / "blazeface" / DETECTOR_FILES[row["detector"]]
    model = Path(row["model"])
    d = model if model.is_dir() else REPO / "models" / row["model"]
    manifest = json.loads((d / "manifest.json").read_text())
    return d / manifest["file"]


def compare(rows: list[dict], runs: int, warmup: int, peak_gflops: float | None) -> list[dict]:
    """One result per distinct graph of `rows` (ferrite's --graphs-only JSON rows with input files)."""
    out, seen = [], set()
    for row in rows:
        path = onnx_file(row)
        key = (row["stage"], str(path))
        if key in seen:
            continue
        seen.add(key)
        shape = row["input_shape"]
        x = np.fromfile(row["input_file"], dtype="<f4").reshape(shape)
        ort = time_ort(path, x, runs, warmup)
        flops = count_flops(path, shape)
        name = f"detect {row['detector']}" if row["stage"] == "detect graph" else f"ensemble {row['model']}"
        r = {"graph": name, "file": str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path),
             "input_shape": shape, "gflop": flops["flops"] / 1e9,
             "ferrite": {k: row[k] for k in ("median_ms", "p95_ms", "runs")}, "onnxruntime": ort,
             "ratio": row["median_ms"] / ort["median_ms"]}
        for who in ("ferrite", "onnxruntime"):
            gflops = flops["flops"] / 1e9 / (r[who]["median_ms"] / 1e3)
            r[who]["gflops"] = gflops
            if peak_gflops:
                r[who]["fraction_of_peak"] = gflops / peak_gflops
        out.append(r)
    return out


def best_of(rounds: list[list[dict]], peak_gflops: float | None) -> list[dict]:
    """Per graph, each runtime's round with the lowest median (on a shared machine the least
    disturbed one), and the ratio of those two medians."""
    best = []
    for graph in rounds[0]:
        same = [r for results in rounds for r in results if r["graph"] == graph["graph"]]
        r = dict(graph)
        for who in ("ferrite", "onnxruntime"):
            r[who] = dict(min((x[who] for x in same), key=lambda t: t["median_ms"]))
            r[who]["gflops"] = r["gflop"] / (r[who]["median_ms"] / 1e3)
            if peak_gflops:
                r[who]["fraction_of_peak"] = r[who]["gflops"] / peak_gflops
        r["ratio"] = r["ferrite"]["median_ms"] / r["onnxruntime"]["median_ms"]
        r["rounds"] = len(same)
        best.append(r)
    return best


def print_table(results: list[dict], peak: dict | None, cpu: dict):
    print(f"CPU: {cpu.get('model', '?')} ({cpu.get('cpus')} CPUs, {', '.join(cpu.get('simd', []))}), "
          f"load average {cpu['load_average'][0]:.2f}")
    if peak:
        print(f"peak single-thread FP32 (numpy sgemm {peak['n']}x{peak['n']}, 1 thread, best of {peak['reps']}): "
              f"{peak['gflops']:.1f} GFLOP/s")
    head = f"{'GRAPH':<30} {'GFLOP':>7} {'ferrite ms':>11} {'ort ms':>9} {'RATIO':>6} {'ferrite GF/s':>13} {'ort GF/s':>9}"
    if peak:
        head += f" {'ferrite %peak':>14} {'ort %peak':>10}"
    print(head)
    for r in results:
        f, o = r["ferrite"], r["onnxruntime"]
        line = (f"{r['graph']:<30} {r['gflop']:>7.3f} {f['median_ms']:>11.2f} {o['median_ms']:>9.2f} "
                f"{r['ratio']:>6.2f} {f['gflops']:>13.1f} {o['gflops']:>9.1f}")
        if peak:
            line += f" {100 * f['fraction_of_peak']:>13.1f}% {100 * o['fraction_of_peak']:>9.1f}%"
        print(line)
    print("RATIO = ferrite median / onnxruntime median (below 1: ferrite faster); medians of single-thread runs.")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ferrite", type=Path, default=None,
                    help="ferrite binary (default: $CARGO_TARGET_DIR/release/ferrite, else target/release/ferrite)")
    ap.add_argument("--runs", type=int, default=200, help="timed runs per graph and runtime (default 200)")
    ap.add_argument("--warmup", type=int, default=20, help="untimed runs first (default 20)")
    ap.add_argument("--detectors", default="short,long", help="BlazeFace graphs to compare (default short,long)")
    ap.add_argument("--model", action="append",
                    help="expression model (bundled name or directory; repeatable; default: every bundled one)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="repeat the whole comparison and keep each runtime's best round (shared machines)")
    ap.add_argument("--peak-size", type=int, default=2048, help="matrix side of the sgemm peak measurement")
    ap.add_argument("--peak-reps", type=int, default=7)
    ap.add_argument("--no-peak", action="store_true", help="skip the peak FLOP/s measurement")
    ap.add_argument("--flops", nargs="+", metavar="ONNX", help="only print the FLOP count of these files")
    ap.add_argument("--json", type=Path, help="also write every number to this file")
    args = ap.parse_args(argv)

    if args.flops:
        for p in args.flops:
            c = count_flops(p)
            print(f"{p}: {c['flops'] / 1e9:.4f} GFLOP ({c['nodes']} nodes; "
                  + ", ".join(f"{k} {v / 1e9:.4f}" for k, v in c["by_op"].items())
                  + (f"; unresolved: {c['unresolved']}" if c["unresolved"] else "") + ")")
        return 0

    binary = args.ferrite
    if binary is None:
        target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
        binary = target / "release" / "ferrite"
    if not binary.exists():
        sys.exit(f"{binary} not found: build it with `cargo build --release` or pass --ferrite")

    cpu = cpu_info()
    # Peak first, before any onnxruntime session exists in this process.
    peak = None if args.no_peak else peak_sgemm(args.peak_size, args.peak_reps)
    detectors = [d.strip() for d in args.detectors.split(",") if d.strip()]
    for det in detectors:
        if det not in DETECTOR_FILES:
            sys.exit(f"unknown detector {det!r}: expected one of {', '.join(DETECTOR_FILES)}")
    rounds = []
    for round_ in range(max(1, args.rounds)):
        if peak is not None and round_ > 0:
            again = peak_sgemm(args.peak_size, args.peak_reps)
            peak = again if again["gflops"] > peak["gflops"] else peak
        rows = []
        with tempfile.TemporaryDirectory(prefix="ferrite-sbs-") as tmp:
            for i, det in enumerate(detectors):
                # The expression models need timing once; later detectors run with one model
                # and keep only their detector row.
                models = args.model if i == 0 else [rows[0]["model"]]
                got = run_ferrite(binary, det, models, args.runs, args.warmup, Path(tmp))
                rows += [r for r in got if i == 0 or r["stage"] == "detect graph"]
            rounds.append(compare(rows, args.runs, args.warmup, None))
    results = best_of(rounds, peak["gflops"] if peak else None)
    print_table(results, peak, cpu)
    if len(rounds) > 1:
        print(f"best of {len(rounds)} rounds per runtime (each round: ferrite, then onnxruntime)")
    if args.json:
        import onnxruntime
        doc = {"cpu": cpu, "peak_sgemm": peak, "graphs": results, "rounds": rounds,
               "conditions": {"ferrite": str(binary), "onnxruntime": onnxruntime.__version__,
                              "numpy": np.__version__, "threads": 1, "batch": 1, "runs": args.runs,
                              "warmup": args.warmup, "tract_cpu_isa": os.environ.get("TRACT_CPU_ISA"),
                              "load_average_at_end": os.getloadavg()}}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
