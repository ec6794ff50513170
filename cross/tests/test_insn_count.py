"""insn_count.py: the arithmetic (slope over run counts, spread, ratios), the parsing (plugin output,
`bench --help`, bench JSON, apt's --print-uris), the table and the JSON, all with fake counts and no
qemu; then, where qemu-aarch64, an aarch64 C compiler and the built plugin are present, the whole
script on a fake aarch64 "ferrite" whose instructions per run are known."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import insn_count as ic

SCRIPT = Path(ic.__file__)
MODELS = [{"name": "fer2013-48-int8", "format": "int8"}, {"name": "fer2013-48-fp32", "format": "fp32"}]


def test_parse_counts():
    assert ic.parse_counts("insns 123456789\nvcpus 1\n") == {"insns": 123456789, "vcpus": 1}
    assert ic.parse_counts("noise\ninsns 5\n") == {"insns": 5}
    with pytest.raises(ic.Fail):
        ic.parse_counts("vcpus 1\n")


def test_parse_runs():
    assert ic.parse_runs("8,2,5") == [2, 5, 8]
    for bad in ("3", "3,3", "0,4", "a,b"):
        with pytest.raises(Exception):
            ic.parse_runs(bad)


def test_per_run_cancels_the_fixed_cost():
    # 1e9 to load and optimise, 7.18e7 per run: the slope is the per-run count, exactly.
    points = [(n, 1_000_000_000 + 71_800_000 * n) for n in (2, 5, 8)]
    slope, spread = ic.per_run(points)
    assert slope == pytest.approx(71_800_000)
    assert spread == pytest.approx(0, abs=1e-12)
    assert ic.per_run([(1, 1106360088), (2, 1212028882)]) == (105668794, 0.0)


def test_per_run_spread_measures_nonlinearity():
    # Slopes 100 (2->5) and 110 (5->8): least squares gives 105, each pair off by 5/105.
    points = [(2, 1000), (5, 1300), (8, 1630)]
    slope, spread = ic.per_run(points)
    assert slope == pytest.approx(105)
    assert spread == pytest.approx(5 / 105)


def test_per_run_rejects_counts_that_do_not_grow():
    with pytest.raises(ic.Fail):
        ic.per_run([(2, 1000), (5, 1000)])
    with pytest.raises(ValueError):
        ic.per_run([(2, 1000), (2, 1100)])


def test_graph_flag_and_jobs():
    old = "      --graphs-only\n          Time only the two tract graphs\n      --json\n"
    new = old + "      --graph <GRAPH>\n          With --graphs-only: time only this graph\n"
    assert not ic.has_graph_flag(old)
    assert ic.has_graph_flag(new)

    both = ic.jobs(MODELS, False, "short")
    assert [(j[0], j[2]) for j in both] == [("fer2013-48-int8", "detector (short) + ensemble"),
                                             ("fer2013-48-fp32", "detector (short) + ensemble")]
    assert all("--graph" not in j[3] for j in both)
    split = ic.jobs(MODELS, True, "long")
    assert [(j[0], j[2]) for j in split] == [("fer2013-48-int8", "ensemble"), ("fer2013-48-fp32", "ensemble"),
                                              ("blazeface-long", "detector")]
    assert split[2][3] == ["--model", "fer2013-48-int8", "--graph", "detector"]
    with_f16 = ic.jobs(MODELS, True, "short", f16=True)
    assert [(j[0], j[1]) for j in with_f16] == [("fer2013-48-int8", "int8"), ("fer2013-48-fp32", "fp32"),
                                                 ("fer2013-48-fp32", "f16"), ("blazeface-short", "fp32")]
    assert with_f16[2][3][-2:] == ["--precision", "f16"]
    assert ic.has_precision_flag("      --precision <stored|f16>\n") and not ic.has_precision_flag(old)
    assert ic.bench_args(split[0][3], "long", 1, 5) == [
        "bench", "--graphs-only", "--json", "--detector", "long", "--warmup", "1", "--runs", "5",
        "--model", "fer2013-48-int8", "--graph", "ensemble"]


def test_check_bench_output():
    both = json.dumps([{"stage": "detect graph", "runs": 5}, {"stage": "ensemble graph", "runs": 5}])
    ic.check_bench_output(both, "detector (short) + ensemble", 5)
    ic.check_bench_output(json.dumps([{"stage": "ensemble graph", "runs": 2}]), "ensemble", 2)
    with pytest.raises(ic.Fail):
        ic.check_bench_output(both, "ensemble", 5)  # an old binary that ignored --graph
    with pytest.raises(ic.Fail):
        ic.check_bench_output(both, "detector (short) + ensemble", 8)
    with pytest.raises(ic.Fail):
        ic.check_bench_output("MODEL DETECTOR ...", "ensemble", 5)
    f16 = json.dumps([{"stage": "ensemble graph", "runs": 2, "precision": "f16"}])
    ic.check_bench_output(f16, "ensemble", 2, "f16")
    fell_back = json.dumps([{"stage": "ensemble graph", "runs": 2, "precision": "stored"}])
    with pytest.raises(ic.Fail):
        ic.check_bench_output(fell_back, "ensemble", 2, "f16")


def fake_count(per_graph):
    """A count function like main()'s: a fixed cost plus per-run instructions of the graphs asked for."""
    calls = []

    def count(bench, graph, runs):
        calls.append(bench)
        model = bench[bench.index("--model") + 1]
        graphs = (["detector"] if graph != "ensemble" else []) + ([model] if graph != "detector" else [])
        return 900_000_000 + runs * sum(per_graph[g] for g in graphs)
    return count, calls


def test_measure_ratios_table_with_graph_flag():
    per = {"detector": 34_000_000, "fer2013-48-fp32": 71_800_000, "fer2013-48-int8": 118_200_000}
    count, calls = fake_count(per)
    rows = ic.measure(count, ic.jobs(MODELS, True, "short"), [2, 5, 8], 1, "short")
    assert len(calls) == 9 and {c[c.index("--runs") + 1] for c in calls} == {"2", "5", "8"}
    rows = ic.with_ratios([{"arch": "aarch64", "cpu": "cortex-a72", **r} for r in rows])
    got = {r["model"]: (r["minsns"], r["vs_fp32"]) for r in rows}
    assert got == {"fer2013-48-int8": (118.2, 1.646), "fer2013-48-fp32": (71.8, 1.0), "blazeface-short": (34.0, None)}
    assert rows[0]["counts"] == {"2": 900_000_000 + 2 * 118_200_000, "5": 900_000_000 + 5 * 118_200_000,
                                 "8": 900_000_000 + 8 * 118_200_000}
    text = ic.table(rows)
    lines = text.splitlines()
    assert lines[0].startswith("| arch") and "M insns/inference" in lines[0] and set(lines[1]) <= {"|", "-"}
    assert "| 118.2 " in lines[2] and "| 1.65 " in lines[2] and "| 0.00 % |" in lines[2]
    assert len({len(line) for line in lines}) == 1  # aligned


def test_measure_without_graph_flag_counts_both_graphs():
    per = {"detector": 34_000_000, "fer2013-48-fp32": 71_800_000, "fer2013-48-int8": 98_500_000}
    count, _ = fake_count(per)
    rows = ic.measure(count, ic.jobs(MODELS, False, "short"), [2, 6], 1, "short")
    rows = ic.with_ratios([{"arch": "aarch64", "cpu": "cortex-a76", **r} for r in rows])
    got = {r["model"]: (r["minsns"], r["vs_fp32"]) for r in rows}
    assert got == {"fer2013-48-int8": (132.5, round(132.5 / 105.8, 3)), "fer2013-48-fp32": (105.8, 1.0)}


def test_ratios_stay_within_one_cpu():
    rows = [{"arch": "aarch64", "cpu": cpu, "model": m, "format": f, "graph": "ensemble", "minsns": v}
            for cpu, m, f, v in [("cortex-a72", "m-fp32", "fp32", 70.0), ("cortex-a72", "m-int8", "int8", 140.0),
                                 ("cortex-a76", "m-fp32", "fp32", 70.0), ("cortex-a76", "m-int8", "int8", 105.0)]]
    assert [r["vs_fp32"] for r in ic.with_ratios(rows)] == [1.0, 2.0, 1.0, 1.5]


def test_parse_print_uris():
    text = ("Need to get 23.9 MB of source archives.\n"
            "'http://deb.debian.org/debian/pool/main/q/qemu/qemu_7.2%2bdfsg-7%2bdeb12u18.dsc' "
            "qemu_7.2+dfsg-7+deb12u18.dsc 6909 SHA256:" + "ab" * 32 + "\n"
            "'http://deb.debian.org/debian/pool/main/q/qemu/qemu_7.2%2bdfsg.orig.tar.xz' "
            "qemu_7.2+dfsg.orig.tar.xz 23523172 SHA256:" + "0f" * 32 + "\n")
    assert ic.parse_print_uris(text) == {"qemu_7.2+dfsg-7+deb12u18.dsc": (6909, "ab" * 32),
                                         "qemu_7.2+dfsg.orig.tar.xz": (23523172, "0f" * 32)}


def test_main_writes_table_and_json(tmp_path, monkeypatch, capsys):
    """main() end to end with the guest faked: the plugin's count file written by a fake run_guest."""
    binary = tmp_path / "ferrite"
    binary.write_bytes(b"not really aarch64")
    per = {"detector": 34_000_000, "fer2013-48-fp32": 71_800_000, "fer2013-48-int8": 118_200_000}
    count, _ = fake_count(per)

    envs = {}

    def run_guest(cmd, timeout, env=None):
        cmd = [str(c) for c in cmd]
        args = cmd[cmd.index(str(binary)) + 1:]
        if args[0] == "models":
            return json.dumps(MODELS)
        if args == ["bench", "--help"]:
            return "      --graphs-only\n      --graph <GRAPH>\n      --precision <stored|f16>\n"
        envs[cmd[cmd.index("-cpu") + 1]] = env
        out = Path(cmd[cmd.index("-plugin") + 1].split(",out=")[1])
        graph = args[args.index("--graph") + 1]
        runs = int(args[args.index("--runs") + 1])
        out.write_text(f"insns {count(args, graph, runs)}\nvcpus 1\n")
        stage = {"ensemble": "ensemble graph", "detector": "detect graph"}[graph]
        precision = args[args.index("--precision") + 1] if "--precision" in args else "stored"
        return json.dumps([{"stage": stage, "runs": runs, "precision": precision}])

    monkeypatch.setattr(ic, "run_guest", run_guest)
    monkeypatch.setattr(ic, "build_plugin", lambda no_apt, qemus: (ic.CACHE / "fake.so", "1:7.2+dfsg-7"))
    monkeypatch.setattr(ic, "sh", lambda cmd, **kw: subprocess.CompletedProcess(cmd, 0, "qemu-aarch64 version 7.2\n", ""))
    out_json = tmp_path / "counts.json"
    monkeypatch.setattr(sys, "argv", ["insn_count.py", "--arch", "aarch64", "--binary", str(binary),
                                      "--json", str(out_json)])
    ic.main()
    printed = capsys.readouterr().out
    assert "not a time" in printed and "qemu-aarch64 version 7.2" in printed
    # f16 only where the core has FP16 arithmetic, with tract told so.
    assert printed.count("cortex-a72") == 3 and printed.count("cortex-a76") == 4
    assert envs == {"cortex-a72": {"TRACT_CPU_AARCH64_KIND": "cortex-a72", "FERRITE_CONV": "auto"},
                    "cortex-a76": {"TRACT_CPU_AARCH64_KIND": "cortex-a75", "FERRITE_CONV": "auto"}}
    report = json.loads(out_json.read_text())
    assert report["note"] == ic.NOTE and report["runs"] == [2, 5, 8]
    assert report["binaries"]["aarch64"]["graph_flag"] is True
    table = {(r["cpu"], r["model"], r["graph"]): (r["minsns"], r["vs_fp32"]) for r in report["rows"]}
    for cpu in ("cortex-a72", "cortex-a76"):
        assert table[(cpu, "fer2013-48-int8", "ensemble")] == (118.2, 1.646)
        assert table[(cpu, "blazeface-short", "detector")] == (34.0, None)


def test_timeout_is_one_line(monkeypatch):
    def slow(cmd, **kw):
        raise subprocess.TimeoutExpired(cmd, kw["timeout"])
    monkeypatch.setattr(ic, "sh", slow)
    cmd = ["/usr/bin/qemu-aarch64", "-plugin", "x.so,out=c", "-cpu", "cortex-a72", "/t/ferrite", "bench", "--runs", "2"]
    with pytest.raises(ic.Fail) as e:
        ic.run_guest(cmd, 3)
    assert str(e.value) == "qemu-aarch64 -cpu cortex-a72 ferrite bench --runs 2 did not finish in 3 s"


FAKE_FERRITE = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
/* Exactly 2 instructions per iteration (one translation block): subs, b.ne. */
static void spin(long n) { __asm__ volatile("1: subs %0, %0, #1\n b.ne 1b" : "+r"(n) :: "cc"); }
int main(int argc, char **argv) {
    const char *graph = "both"; long runs = 0, warmup = 0;
    if (argc > 1 && !strcmp(argv[1], "models")) {
        puts("[{\"name\":\"m-int8\",\"format\":\"int8\"},{\"name\":\"m-fp32\",\"format\":\"fp32\"}]");
        return 0;
    }
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--help")) { puts("      --graphs-only\n      --graph <GRAPH>"); return 0; }
        if (i + 1 < argc && !strcmp(argv[i], "--graph")) graph = argv[i + 1];
        if (i + 1 < argc && !strcmp(argv[i], "--runs")) runs = atol(argv[i + 1]);
        if (i + 1 < argc && !strcmp(argv[i], "--warmup")) warmup = atol(argv[i + 1]);
    }
    int int8 = 0;
    for (int i = 2; i + 1 < argc; i++) if (!strcmp(argv[i], "--model")) int8 = strstr(argv[i + 1], "int8") != 0;
    spin(1000000);  /* loading: cancels out */
    for (long r = 0; r < warmup + runs; r++) {
        if (strcmp(graph, "ensemble")) spin(50000);             /* detector: 100k instructions */
        if (strcmp(graph, "detector")) spin(int8 ? 150000 : 100000);  /* 300k int8, 200k fp32 */
    }
    if (!strcmp(graph, "ensemble")) printf("[{\"stage\":\"ensemble graph\",\"runs\":%ld}]\n", runs);
    else if (!strcmp(graph, "detector")) printf("[{\"stage\":\"detect graph\",\"runs\":%ld}]\n", runs);
    else printf("[{\"stage\":\"detect graph\",\"runs\":%ld},{\"stage\":\"ensemble graph\",\"runs\":%ld}]\n", runs, runs);
    return 0;
}
"""


def test_real_plugin_on_a_fake_ferrite(tmp_path):
    """The plugin under qemu-aarch64 counts a known loop: per run 200k (fp32), 300k (int8), 100k (detector)
    instructions, plus the few of the loop around them."""
    if not (shutil.which("qemu-aarch64") and shutil.which("aarch64-linux-gnu-gcc")):
        pytest.skip("needs qemu-aarch64 (qemu-user) and aarch64-linux-gnu-gcc")
    try:
        ic.build_plugin(True, ["qemu-aarch64"])
    except ic.Fail as e:
        pytest.skip(f"no plugin (run cross/insn_count.py once to set it up): {e}")
    src = tmp_path / "fake.c"
    src.write_text(FAKE_FERRITE)
    binary = tmp_path / "ferrite"
    subprocess.run(["aarch64-linux-gnu-gcc", "-O2", "-static", "-o", binary, src], check=True)
    out = tmp_path / "counts.json"
    subprocess.run([sys.executable, SCRIPT, "--no-apt", "--arch", "aarch64", "--binary", binary,
                    "--runs", "2,4", "--json", out], check=True, capture_output=True, timeout=300)
    rows = {(r["cpu"], r["model"]): r for r in json.loads(out.read_text())["rows"]}
    for cpu in ("cortex-a72", "cortex-a76"):
        for model, want in (("m-fp32", 200_000), ("m-int8", 300_000), ("blazeface-short", 100_000)):
            assert rows[(cpu, model)]["insns"] == pytest.approx(want, abs=40), (cpu, model)
        assert rows[(cpu, "m-int8")]["vs_fp32"] == pytest.approx(1.5, abs=1e-3)


def test_kernels_are_read_from_the_bench_and_kept_apart_in_ratios():
    both = [{"stage": "detect graph", "detector_kernels": "direct-neon"},
            {"stage": "ensemble graph", "conv_kernels": "direct-neon"}]
    assert ic.kernels_of(both) == "direct-neon/direct-neon"
    assert ic.kernels_of([{"stage": "ensemble graph"}]) == "tract", "older binaries name no kernels"
    assert ic.check_bench_output(json.dumps([{"stage": "ensemble graph", "runs": 2}]), "ensemble", 2) == [
        {"stage": "ensemble graph", "runs": 2}]

    def count(bench, graph, runs):
        return 1_000_000 + runs * 50_000_000, {"kernels": "direct-neon"}
    rows = ic.measure(count, ic.jobs(MODELS, True, "short")[:1], [2, 5], 1, "short")
    assert rows[0]["kernels"] == "direct-neon" and rows[0]["minsns"] == 50.0

    rows = [{"arch": "aarch64", "cpu": "cortex-a72", "model": m, "format": f, "graph": "ensemble", "minsns": v,
             "kernels": k, "spread": 0.0}
            for m, f, v, k in [("m-fp32", "fp32", 70.0, "tract"), ("m-fp32", "fp32", 50.0, "direct-neon"),
                               ("m-int8", "int8", 140.0, "tract")]]
    assert [r["vs_fp32"] for r in ic.with_ratios(rows)] == [1.0, 1.0, 2.0]
    lines = ic.table(rows).splitlines()
    assert "kernels" in lines[0] and "direct-neon" in lines[3]
