"""Part-based ensemble (Wadhawan & Gandhi, arXiv 2104.11274) as specified in ../shared/DESIGN.md.

Shared by every script in models/: architecture, parameter count, preprocessing, BN folding,
ONNX export (Linear -> MatMul+Add, never Gemm) and int8 QOperator quantization.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = (REPO_ROOT / ".." / "shared" / "datasets").resolve()

FER_LABELS = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
CK_LABELS = ["anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise"]
# CK+ folder name -> FER2013 label (None: no FER2013 counterpart)
CK_TO_FER = {"anger": "angry", "contempt": None, "disgust": "disgust", "fear": "fear",
             "happy": "happy", "sadness": "sad", "surprise": "surprise"}
# 0-based dlib / iBUG 300-W indices [start, end)
PARTS = [("jaw", 0, 17), ("eyebrows", 17, 27), ("nose", 27, 36), ("eyes", 36, 48), ("mouth", 48, 68)]
PART_NAMES = [p[0] for p in PARTS]
# The backbone's four block widths as the paper sets them (1.65M parameters in all).
PAPER_WIDTHS = (16, 32, 64, 128)

# Horizontal-flip permutation of the 68-point iBUG layout: new[i] = old[FLIP68[i]].
FLIP68 = (list(range(16, -1, -1))                      # jaw 0..16 <-> 16..0
          + list(range(26, 16, -1))                    # brows 17..21 <-> 26..22
          + [27, 28, 29, 30]                           # nose bridge
          + [35, 34, 33, 32, 31]                       # nostrils
          + [45, 44, 43, 42, 47, 46]                   # right eye <- left eye
          + [39, 38, 37, 36, 41, 40]                   # left eye <- right eye
          + [54, 53, 52, 51, 50, 49, 48]               # outer upper lip
          + [59, 58, 57, 56, 55]                       # outer lower lip
          + [64, 63, 62, 61, 60]                       # inner upper lip
          + [67, 66, 65])                              # inner lower lip
assert sorted(FLIP68) == list(range(68))

CLAHE_CLIP = 2.0
CLAHE_TILES = (8, 8)
SCALE = 1.0 / 127.5
OFFSET = -1.0


def preprocess_gray(img_u8: np.ndarray, size: int | None = None) -> np.ndarray:
    """uint8 HxW gray -> float32 HxW in [-1,1]: (resize) -> CLAHE(2.0, 8x8) -> x/127.5-1.

    Resizing happens before CLAHE, as the runtime does (crop at model size, then CLAHE)."""
    import cv2
    if size is not None and img_u8.shape[:2] != (size, size):
        img_u8 = cv2.resize(img_u8, (size, size), interpolation=cv2.INTER_LINEAR if size > img_u8.shape[0] else cv2.INTER_AREA)
    clahe = cv2.createCLAHE(clipLimit=CLAHE_CLIP, tileGridSize=CLAHE_TILES)
    return clahe.apply(img_u8).astype(np.float32) * SCALE + OFFSET


def parse_widths(text: str) -> tuple[int, ...]:
    """"16,32,64,128" -> (16, 32, 64, 128): four positive block widths (train.py --widths, --widen)."""
    try:
        widths = tuple(int(w) for w in text.split(","))
    except ValueError:
        raise ValueError(f"widths must be four comma-separated integers, got {text!r}") from None
    if len(widths) != 4 or min(widths) < 1:
        raise ValueError(f"widths must be four positive integers (one per backbone block), got {text!r}")
    return widths


class Linear(nn.Linear):
    """nn.Linear that exports as MatMul + Add (not Gemm) so onnxruntime quantizes it to QLinearMatMul."""

    def forward(self, x):
        return torch.matmul(x, self.weight.t()) + self.bias


class Backbone(nn.Module):
    def __init__(self, in_ch: int = 1, widths=PAPER_WIDTHS):
        super().__init__()
        layers = []
        c = in_ch
        for w in widths:
            for _ in range(2):
                layers += [nn.Conv2d(c, w, 3, padding=1, bias=True), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
                c = w
            layers.append(nn.MaxPool2d(3, stride=2, padding=1))
        self.features = nn.Sequential(*layers)
        self.out_dim = c

    def forward(self, x):
        return self.features(x).mean(dim=(2, 3))  # global average pooling


class SubNet(nn.Module):
    def __init__(self, n_points: int, n_classes: int, in_ch=1, widths=PAPER_WIDTHS, hidden=128, dropout=0.3):
        super().__init__()
        self.backbone = Backbone(in_ch, widths)
        d = self.backbone.out_dim
        self.lm_head = nn.Sequential(Linear(d, hidden), nn.ReLU(inplace=True), Linear(hidden, 2 * n_points))
        self.cls_head = nn.Sequential(Linear(d, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                      Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                      Linear(hidden, n_classes))
        self.n_points = n_points

    def forward(self, x):
        f = self.backbone(x)
        return self.cls_head(f), self.lm_head(f).view(-1, self.n_points, 2)


class Ensemble(nn.Module):
    def __init__(self, n_classes: int = 7, in_ch=1, widths=PAPER_WIDTHS, hidden=128, dropout=0.3):
        super().__init__()
        self.n_classes = n_classes
        self.subnets = nn.ModuleList([SubNet(e - s, n_classes, in_ch, widths, hidden, dropout) for _, s, e in PARTS])

    def forward(self, x):
        """Returns (part logits [N,5,C], landmarks [N,68,2])."""
        outs = [s(x) for s in self.subnets]
        logits = torch.stack([o[0] for o in outs], dim=1)
        lms = torch.cat([o[1] for o in outs], dim=1)  # parts are contiguous and in index order
        return logits, lms

    def reset_cls_heads(self, seed: int | None = None):
        if seed is not None:
            torch.manual_seed(seed)
        for s in self.subnets:
            for m in s.cls_head:
                if isinstance(m, nn.Linear):
                    m.reset_parameters()


class ExportWrapper(nn.Module):
    """Graph outputs: probabilities [N,C] (mean of the five softmaxes), part_probabilities [N,5,C], landmarks [N,68,2]."""

    def __init__(self, model: Ensemble):
        super().__init__()
        self.model = model

    def forward(self, input):
        logits, lms = self.model(input)
        part = F.softmax(logits, dim=-1)
        return part.mean(dim=1), part, lms


def keras_param_count(sub: SubNet) -> int:
    """Keras-style count: conv weights+biases, BN gamma/beta/running mean/var, classification head.
    The stage-1 landmark head is excluded (it is not part of the paper's classifier)."""
    n = 0
    for m in sub.backbone.modules():
        if isinstance(m, nn.Conv2d):
            n += sum(p.numel() for p in m.parameters())
        elif isinstance(m, nn.BatchNorm2d):
            n += m.weight.numel() + m.bias.numel() + m.running_mean.numel() + m.running_var.numel()
    n += sum(p.numel() for p in sub.cls_head.parameters())
    return n


def ensemble_param_count(model: Ensemble) -> tuple[list[int], int]:
    per = [keras_param_count(s) for s in model.subnets]
    return per, sum(per)


def _replication(old: int, new: int, rs: np.random.RandomState) -> np.ndarray:
    """Which old channel each of `new` channels copies: every old one once, the rest drawn at random."""
    if new < old:
        raise ValueError(f"cannot widen {old} channels to {new}")
    return np.concatenate([np.arange(old), rs.randint(0, old, new - old)])


@torch.no_grad()
def widen(model: Ensemble, widths, noise: float = 0.0, seed: int = 0) -> Ensemble:
    """A wider copy of a trained ensemble that computes the same function (Net2WiderNet, Chen et
    al. 2016): each new channel copies an old one (conv filter, bias, BatchNorm), and every layer
    that reads a copied channel divides that input's weights by its number of copies. So fine-tuning
    a wider backbone starts from the trained model instead of from landmark pre-training. Copies get
    identical gradients and would stay identical: `noise` (relative to each weight tensor's standard
    deviation) breaks the tie."""
    widths = tuple(widths)
    wide = Ensemble(n_classes=model.n_classes, widths=widths)
    rs = np.random.RandomState(seed)
    g = torch.Generator().manual_seed(seed)
    for old_sub, new_sub in zip(model.subnets, wide.subnets):
        src = [m for m in old_sub.backbone.features if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
        dst = [m for m in new_sub.backbone.features if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
        reads, copies = np.arange(1), np.ones(1)  # the input image: one channel, never copied
        for i in range(0, len(src), 2):
            conv, bn, wconv, wbn = src[i], src[i + 1], dst[i], dst[i + 1]
            rep = _replication(conv.out_channels, wconv.out_channels, rs)
            w = conv.weight[rep][:, reads] / torch.from_numpy(copies[reads]).float().view(1, -1, 1, 1)
            wconv.weight.copy_(w)
            wconv.bias.copy_(conv.bias[rep])
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(wbn, name).copy_(getattr(bn, name)[rep])
            reads, copies = rep, np.bincount(rep, minlength=conv.out_channels).astype(np.float64)
        scale = torch.from_numpy(copies[reads]).float().view(1, -1)
        for head in ("cls_head", "lm_head"):
            old_head, new_head = getattr(old_sub, head), getattr(new_sub, head)
            new_head.load_state_dict(old_head.state_dict() | {"0.weight": old_head[0].weight[:, reads] / scale})
    if noise > 0:
        for p in wide.parameters():
            if p.dim() > 1:
                p.add_(torch.randn(p.shape, generator=g) * noise * p.std())
    return wide


def fold_bn(model: Ensemble) -> Ensemble:
    """Copy of the model (eval mode) with every BatchNorm folded into the preceding conv."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval
    m = copy.deepcopy(model).eval()
    for s in m.subnets:
        layers = list(s.backbone.features)
        new = []
        i = 0
        while i < len(layers):
            if isinstance(layers[i], nn.Conv2d) and i + 1 < len(layers) and isinstance(layers[i + 1], nn.BatchNorm2d):
                new.append(fuse_conv_bn_eval(layers[i], layers[i + 1]))
                i += 2
            else:
                new.append(layers[i])
                i += 1
        s.backbone.features = nn.Sequential(*new)
    return m


def export_onnx(model: Ensemble, path: str | os.PathLike, size: int, opset: int = 13, simplify: bool = True):
    """Fold BN, export with input `input` [N,1,H,W] and the three named outputs; dynamic N."""
    import onnx
    m = ExportWrapper(fold_bn(model)).eval()
    dummy = torch.zeros(1, 1, size, size)
    path = str(path)
    kwargs = dict(input_names=["input"], output_names=["probabilities", "part_probabilities", "landmarks"],
                  dynamic_axes={"input": {0: "N"}, "probabilities": {0: "N"}, "part_probabilities": {0: "N"},
                                "landmarks": {0: "N"}},
                  opset_version=opset, do_constant_folding=True)
    try:
        torch.onnx.export(m, (dummy,), path, dynamo=False, **kwargs)
    except TypeError:
        torch.onnx.export(m, (dummy,), path, **kwargs)
    g = onnx.load(path)
    if simplify:
        import onnxsim
        g2, ok = onnxsim.simplify(g)
        if ok:
            g = g2
    g.producer_name = "ferrite-models"
    onnx.checker.check_model(g)
    onnx.save(g, path)
    ops = {n.op_type for n in g.graph.node}
    assert "Gemm" not in ops and "BatchNormalization" not in ops, ops
    return path


def quantize_int8(fp32_path, int8_path, calib: np.ndarray, batch: int = 32, per_channel: bool = False):
    """Static int8 quantization, QOperator format, Conv+MatMul only (QLinearConv / QLinearMatMul), s8/s8."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_static,
                                          CalibrationMethod)

    class Reader(CalibrationDataReader):
        def __init__(self, x):
            self.batches = [x[i:i + batch] for i in range(0, len(x), batch)]
            self.i = 0

        def get_next(self):
            if self.i >= len(self.batches):
                return None
            self.i += 1
            return {"input": self.batches[self.i - 1].astype(np.float32)}

    quantize_static(str(fp32_path), str(int8_path), Reader(calib), quant_format=QuantFormat.QOperator,
                    op_types_to_quantize=["Conv", "MatMul"], activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8, per_channel=per_channel,
                    calibrate_method=CalibrationMethod.MinMax)
    check_standard_domains(int8_path)
    return int8_path


def check_standard_domains(path) -> list[str]:
    import onnx
    g = onnx.load(str(path))
    bad = [f"{n.op_type}({n.domain})" for n in g.graph.node if n.domain not in ("", "ai.onnx")]
    if bad:
        raise RuntimeError(f"{path}: non-standard ops {bad}")
    return sorted({n.op_type for n in g.graph.node})


def sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_crop_calibration(path=None):
    """The runtime's crop geometry measured by `ferrite calibrate-crop` on the training crops
    (models/crop_calibration.json, written by the Rust side); None if absent."""
    p = Path(path) if path else REPO_ROOT / "models" / "crop_calibration.json"
    if not p.exists():
        return None
    return json.loads(p.read_text())["geometry"]


def write_manifest(dir_, name, description, purpose, fmt, size, labels, landmarks=True, file="model.onnx", crop=None):
    """manifest.json as the Rust runtime reads it; `crop` (optional, last key) is the detector-crop geometry."""
    dir_ = Path(dir_)
    man = {
        "name": name,
        "description": description,
        "purpose": purpose,
        "format": fmt,
        "file": file,
        "sha256": sha256(dir_ / file),
        "input": {"name": "input", "channels": 1, "height": size, "width": size},
        "preprocess": {"clahe_clip_limit": CLAHE_CLIP, "clahe_tiles": list(CLAHE_TILES), "scale": SCALE,
                       "offset": OFFSET},
        "labels": list(labels),
        "parts": PART_NAMES,
        "outputs": {"probabilities": "probabilities", "part_probabilities": "part_probabilities",
                    "landmarks": "landmarks" if landmarks else None},
    }
    if crop is not None:
        man["crop"] = crop
    (dir_ / "manifest.json").write_text(json.dumps(man, indent=2) + "\n")
    return man


def ort_session(path, threads: int = 1):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def pick_device():
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX512-BF16 or AMX-BF16). Without it, bf16 autocast on the
    CPU is emulated and slower than fp32, so `auto` must not choose it."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_precision(requested: str, device: torch.device) -> str:
    """'fp32' or 'bf16' for a --precision of 'auto', 'fp32' or 'bf16'. auto picks bf16 autocast only where
    the hardware runs it natively (a CUDA card with bf16, or a CPU with AVX512-BF16/AMX); fp32 otherwise."""
    if requested in ("fp32", "bf16"):
        return requested
    if requested != "auto":
        raise ValueError(f"precision must be auto, fp32 or bf16, not {requested!r}")
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def autocast(device: torch.device, precision: str):
    """Mixed precision for the forward pass (master weights stay fp32); a no-op context for fp32."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def channels_last(x):
    """NHWC memory layout for a 4-D batch or a model: oneDNN's CPU convolutions and cuDNN's tensor-core paths
    are fastest in it (DESIGN.md: 1.3x fp32, 2x with bf16 on the training CPU)."""
    return x.to(memory_format=torch.channels_last)
