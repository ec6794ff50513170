"""Architecture (parameter count), export round trip, int8 quantization, shipped models and fixtures."""
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import fermodel as fm

REPO = fm.REPO_ROOT


def test_parameter_count():
    m = fm.Ensemble(n_classes=7, in_ch=1)
    per, total = fm.ensemble_param_count(m)
    print(f"parameters per sub-network {per}, total {total}")
    assert per == [329_079] * 5
    assert total == 1_645_395
    # the design brief's 3-channel figure
    m3 = fm.Ensemble(n_classes=7, in_ch=3)
    assert fm.ensemble_param_count(m3)[1] == 1_646_835


@torch.no_grad()
def vary_batchnorm(model, scales=False, seed=1):
    """BatchNorm statistics (and with `scales`, scales) that differ per channel, as after training."""
    g = torch.Generator().manual_seed(seed)
    for mod in model.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.copy_(torch.randn(mod.num_features, generator=g) * 0.1)
            mod.running_var.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
            if scales:
                mod.weight.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
    return model


def subnet_params(widths, n_classes=7, hidden=128):
    """The Keras-style count written out: per block two 3x3 convs with bias and two BatchNorms (4
    numbers per channel each), then the three-layer classification head."""
    n, c = 0, 1
    for w in widths:
        n += (9 * c * w + w) + (9 * w * w + w) + 2 * 4 * w
        c = w
    return n + (c * hidden + hidden) + (hidden * hidden + hidden) + (hidden * n_classes + n_classes)


def test_widths_change_the_backbone_and_the_count():
    assert subnet_params(fm.PAPER_WIDTHS) == 329_079
    wide = (32, 64, 128, 256)
    assert fm.parse_widths("32,64,128,256") == wide
    per, _ = fm.ensemble_param_count(fm.Ensemble(widths=wide))
    assert per == [subnet_params(wide)] * 5
    p, pp, lm = fm.ExportWrapper(fm.Ensemble(widths=wide).eval())(torch.zeros(2, 1, 48, 48))
    assert p.shape == (2, 7) and pp.shape == (2, 5, 7) and lm.shape == (2, 68, 2)
    for bad in ("32,64,128", "32,64,128,256,512", "32,x,128,256", "0,64,128,256", ""):
        with pytest.raises(ValueError, match="widths"):
            fm.parse_widths(bad)


def test_widening_keeps_what_the_model_computes():
    torch.manual_seed(0)
    m = vary_batchnorm(fm.Ensemble().eval(), scales=True)
    x = torch.rand(4, 1, 48, 48) * 2 - 1
    logits, lms = m(x)
    for widths in ((32, 64, 128, 256), (16, 40, 64, 200)):  # exact copies; uneven copy counts
        wide = fm.widen(m, widths).eval()
        assert [s.backbone.out_dim for s in wide.subnets] == [widths[-1]] * 5
        wl, wm = wide(x)
        assert torch.allclose(wl, logits, atol=1e-5) and torch.allclose(wm, lms, atol=1e-5)
    noisy, _ = fm.widen(m, (32, 64, 128, 256), noise=0.01, seed=3).eval()(x)
    assert 1e-6 < (noisy - logits).abs().max() < 0.1
    with pytest.raises(ValueError, match="cannot widen"):
        fm.widen(m, (8, 32, 64, 128))


def test_forward_shapes():
    m = fm.Ensemble().eval()
    p, pp, lm = fm.ExportWrapper(m)(torch.zeros(3, 1, 48, 48))
    assert p.shape == (3, 7) and pp.shape == (3, 5, 7) and lm.shape == (3, 68, 2)
    assert torch.allclose(p.sum(-1), torch.ones(3), atol=1e-5)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    m = vary_batchnorm(fm.Ensemble().eval())  # so that folding matters
    d = tmp_path_factory.mktemp("export")
    fm.export_onnx(m, d / "fp32.onnx", 48)
    x = np.random.RandomState(0).uniform(-1, 1, (64, 1, 48, 48)).astype(np.float32)
    fm.quantize_int8(d / "fp32.onnx", d / "int8.onnx", x)
    return m, d, x


def test_export_round_trip(exported):
    m, d, x = exported
    sess = fm.ort_session(d / "fp32.onnx")
    assert [i.name for i in sess.get_inputs()] == ["input"]
    assert [o.name for o in sess.get_outputs()] == ["probabilities", "part_probabilities", "landmarks"]
    outs = sess.run(None, {"input": x[:5]})
    with torch.no_grad():
        ref = fm.ExportWrapper(m)(torch.from_numpy(x[:5]))
    for o, r in zip(outs, ref):
        assert o.shape == tuple(r.shape)
        assert np.abs(o - r.numpy()).max() < 1e-4
    ops = {n.op_type for n in onnx.load(d / "fp32.onnx").graph.node}
    assert "Gemm" not in ops and "BatchNormalization" not in ops and "MatMul" in ops
    assert onnx.load(d / "fp32.onnx").opset_import[0].version >= 13


def test_quantized_loads_runs_standard_ops(exported):
    _, d, x = exported
    g = onnx.load(d / "int8.onnx")
    for n in g.graph.node:
        assert n.domain in ("", "ai.onnx"), (n.op_type, n.domain)
    ops = {n.op_type for n in g.graph.node}
    assert {"QLinearConv", "QLinearMatMul"} <= ops
    assert not ({"Conv", "MatMul", "Gemm", "QGemm", "QLinearAdd"} & ops)
    p, pp, lm = fm.ort_session(d / "int8.onnx").run(None, {"input": x[:4]})
    assert p.shape == (4, 7) and pp.shape == (4, 5, 7) and lm.shape == (4, 68, 2)
    assert np.isfinite(p).all() and np.allclose(p.sum(-1), 1, atol=1e-3)


def _model_dirs():
    dirs = [p.parent for p in (REPO / "models").glob("*/manifest.json")]
    dirs += [p.parent for p in (REPO / "tests" / "fixtures").glob("ensemble*/manifest.json")]
    return sorted(dirs)


SCHEMA_KEYS = ["name", "description", "purpose", "format", "file", "sha256", "input", "preprocess", "labels", "parts",
               "outputs"]


@pytest.mark.parametrize("mdir", _model_dirs(), ids=lambda p: p.name)
def test_shipped_manifest(mdir):
    man = json.loads((mdir / "manifest.json").read_text())
    keys = list(man)
    assert keys == SCHEMA_KEYS or keys == SCHEMA_KEYS + ["crop"], keys
    if "crop" in man:
        assert set(man["crop"]) == {"scale", "shift_x", "shift_y", "rotate"}
        assert 0.5 < man["crop"]["scale"] < 3.0 and isinstance(man["crop"]["rotate"], bool)
    assert man["sha256"] == fm.sha256(mdir / man["file"])
    assert man["format"] in ("fp32", "int8") and man["purpose"] in ("classifier", "test-fixture")
    assert man["input"]["name"] == "input" and man["input"]["channels"] == 1
    assert man["preprocess"] == {"clahe_clip_limit": 2.0, "clahe_tiles": [8, 8], "scale": 1 / 127.5, "offset": -1.0}
    assert man["parts"] == fm.PART_NAMES
    if man["purpose"] == "classifier" and mdir.name.startswith("fer2013"):
        assert man["labels"] == fm.FER_LABELS
    g = onnx.load(mdir / man["file"])
    for n in g.graph.node:
        assert n.domain in ("", "ai.onnx")
    if man["format"] == "int8":
        assert "QLinearConv" in {n.op_type for n in g.graph.node}
    h = man["input"]["height"]
    x = np.random.RandomState(0).uniform(-1, 1, (2, 1, h, h)).astype(np.float32)
    sess = fm.ort_session(mdir / man["file"])
    names = [o.name for o in sess.get_outputs()]
    assert names == ["probabilities", "part_probabilities", "landmarks"]
    p, pp, lm = sess.run(None, {"input": x})
    C = len(man["labels"])
    assert p.shape == (2, C) and pp.shape == (2, 5, C) and lm.shape == (2, 68, 2)


@pytest.mark.parametrize("name", ["ensemble", "ensemble-int8"])
def test_fixture_reference_outputs(name):
    d = REPO / "tests" / "fixtures" / name
    if not (d / "model.onnx").exists():
        pytest.skip("fixture not generated (python3 models/make_fixture.py)")
    x = np.fromfile(d / "input.f32", dtype="<f4").reshape(1, 1, 48, 48)
    outs = fm.ort_session(d / "model.onnx").run(None, {"input": x})
    for o, n, shape in zip(outs, ["probabilities", "part_probabilities", "landmarks"], [(1, 7), (1, 5, 7), (1, 68, 2)]):
        ref = np.fromfile(d / f"{n}.f32", dtype="<f4").reshape(shape)
        assert np.abs(o - ref).max() < 1e-5, n
