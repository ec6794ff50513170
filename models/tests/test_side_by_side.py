"""side_by_side.py: the FLOP counter (hand-built graphs with known costs, the fixtures, the shipped
models against the architecture's closed form), ferrite's percentile rule, and the comparison on a
fabricated ferrite row (no ferrite build needed)."""
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import fermodel as fm
import side_by_side as sbs

REPO = fm.REPO_ROOT


def _init(name, shape, dtype=np.float32):
    return numpy_helper.from_array(np.zeros(shape, dtype), name)


def test_counts_conv_gemm_and_matmul_of_a_small_graph():
    # x [N,3,8,8] -> Conv 4x3x3x3 pad 1 -> [N,4,8,8] -> grouped Conv (2 groups) 6x2x1x1 -> [N,6,8,8]
    # -> Flatten [N,384] -> Gemm with B [10,384] transB -> [N,10] -> MatMul [10,5] -> [N,5]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["c1", "w2"], ["c2"], group=2),
        helper.make_node("Flatten", ["c2"], ["f"]),
        helper.make_node("Gemm", ["f", "b3"], ["g"], transB=1),
        helper.make_node("MatMul", ["g", "b4"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "t",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [_init("w1", (4, 3, 3, 3)), _init("w2", (6, 2, 1, 1)), _init("b3", (10, 384)), _init("b4", (10, 5))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    conv = 64 * 4 * 27 + 64 * 6 * 2
    gemm, matmul = 384 * 10, 10 * 5
    got = sbs.count_flops(model)
    assert got["unresolved"] == []
    assert got["nodes"] == 4
    assert got["macs"] == conv + gemm + matmul
    assert got["flops"] == 2 * (conv + gemm + matmul)
    assert got["by_op"] == {"Conv": 2 * conv, "Gemm": 2 * gemm, "MatMul": 2 * matmul}
    # Batch scales everything; the caller's proto is left alone.
    assert sbs.count_flops(model, [3, 3, 8, 8])["flops"] == 3 * got["flops"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    with pytest.raises(ValueError):
        sbs.count_flops(model, [1, 3, 8])


def closed_form_macs(size=48, widths=(16, 32, 64, 128), hidden=128, classes=7, in_ch=1):
    """Multiply-accumulates of the ensemble from its definition in fermodel (BN folded into convs)."""
    total = 0
    for _, start, end in fm.PARTS:
        s, c = size, in_ch
        for w in widths:
            total += s * s * w * c * 9 + s * s * w * w * 9
            c = w
            s = (s + 1) // 2  # 3x3 max-pool, stride 2, padding 1
        total += c * hidden + hidden * 2 * (end - start)          # landmark head
        total += c * hidden + hidden * hidden + hidden * classes  # classification head
    return total


@pytest.mark.parametrize("name", ["fer2013-48-fp32", "fer2013-48-int8"])
def test_shipped_models_cost_what_the_architecture_says(name):
    got = sbs.count_flops(REPO / "models" / name / "model.onnx")
    assert got["unresolved"] == []
    assert got["macs"] == closed_form_macs()
    # The design brief's "about 0.30 GFLOPs at 48x48".
    assert 0.29e9 < got["flops"] < 0.31e9


def test_fixtures_fp32_and_int8_count_the_same():
    fp32 = sbs.count_flops(REPO / "tests/fixtures/ensemble/model.onnx", [1, 1, 48, 48])
    int8 = sbs.count_flops(REPO / "tests/fixtures/ensemble-int8/model.onnx", [1, 1, 48, 48])
    assert fp32["macs"] == int8["macs"] == closed_form_macs(widths=(4, 4, 8, 8), hidden=16)
    assert set(fp32["by_op"]) == {"Conv", "MatMul"}
    assert set(int8["by_op"]) == {"QLinearConv", "QLinearMatMul"}


def test_percentiles_follow_ferrite():
    # ferrite: sorted[round((n - 1) q)], halves away from zero.
    assert sbs.summarize(list(map(float, range(20, 0, -1)))) == {"median_ms": 11.0, "p95_ms": 19.0, "runs": 20}
    assert sbs.summarize([4.0]) == {"median_ms": 4.0, "p95_ms": 4.0, "runs": 1}
    assert sbs.summarize([1.0, 2.0]) == {"median_ms": 2.0, "p95_ms": 2.0, "runs": 2}
    assert sbs.summarize([])["runs"] == 0


def test_compare_times_onnxruntime_on_the_saved_input(tmp_path):
    # A fabricated `ferrite bench --graphs-only --json` row for the fp32 test fixture.
    x = np.fromfile(REPO / "tests/fixtures/ensemble/input.f32", dtype="<f4")
    (tmp_path / "in.f32").write_bytes(x.astype("<f4").tobytes())
    row = {"model": str(REPO / "tests/fixtures/ensemble"), "detector": "short", "threads": 1,
           "stage": "ensemble graph", "median_ms": 1.0, "p95_ms": 1.5, "runs": 3,
           "input_shape": [1, 1, 48, 48], "input_file": str(tmp_path / "in.f32")}
    [r] = sbs.compare([row, dict(row)], runs=3, warmup=1, peak_gflops=100.0)  # duplicates fold
    assert r["file"] == "tests/fixtures/ensemble/model.onnx"
    assert r["onnxruntime"]["runs"] == 3
    assert r["ratio"] == pytest.approx(1.0 / r["onnxruntime"]["median_ms"])
    flops = closed_form_macs(widths=(4, 4, 8, 8), hidden=16) * 2
    assert r["gflop"] == pytest.approx(flops / 1e9)
    assert r["ferrite"]["gflops"] == pytest.approx(flops / 1e9 / 1e-3)
    assert r["ferrite"]["fraction_of_peak"] == pytest.approx(r["ferrite"]["gflops"] / 100.0)
    json.dumps(r)  # serialisable as it is


def test_ferrite_detector_rows_map_to_the_bundled_files():
    for det, size in [("short", 128), ("long", 256)]:
        path = sbs.onnx_file({"stage": "detect graph", "detector": det, "model": "fer2013-48-fp32"})
        assert path == REPO / "models" / "blazeface" / f"blazeface_{det}_{size}.onnx"
        assert path.exists()
    path = sbs.onnx_file({"stage": "ensemble graph", "detector": "short", "model": "fer2013-48-int8"})
    assert path == REPO / "models" / "fer2013-48-int8" / "model.onnx"


def test_best_of_rounds_takes_each_runtimes_lowest_median():
    def result(f, o):
        return {"graph": "ensemble m", "gflop": 0.3, "ratio": f / o,
                "ferrite": {"median_ms": f, "p95_ms": f, "runs": 5},
                "onnxruntime": {"median_ms": o, "p95_ms": o, "runs": 5}}
    [best] = sbs.best_of([[result(6.0, 2.0)], [result(3.0, 4.0)]], peak_gflops=300.0)
    assert best["ferrite"]["median_ms"] == 3.0 and best["onnxruntime"]["median_ms"] == 2.0
    assert best["ratio"] == 1.5 and best["rounds"] == 2
    assert best["ferrite"]["gflops"] == pytest.approx(100.0)
    assert best["ferrite"]["fraction_of_peak"] == pytest.approx(1 / 3)
