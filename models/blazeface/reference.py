#!/usr/bin/env python3
"""Reference outputs of the folded BlazeFace graphs, from onnxruntime, for the Rust parity test.

For each model (short 128, long 256) this writes under tests/fixtures/:

    blazeface_input_<S>.png       the model input as 8-bit RGB: assets/astronaut.png (square,
                                  512x512) resized to SxS with OpenCV INTER_AREA, so no padding
    blazeface_<name>_ort.f32      the four raw outputs, flattened and concatenated in model output
                                  order (scores [1,512,1], scores [1,384,1], regressors [1,512,16],
                                  regressors [1,384,16]), little-endian f32

The input tensor is NHWC `png / 127.5 - 1` in f32, exactly what src/detect.rs computes.
The test `detect::tests::parity_with_onnxruntime_*` runs tract on the same PNG and requires every
output value to agree within 1e-4.

    python3 models/blazeface/reference.py

Needs: python3 with onnxruntime, opencv-python(-headless), numpy.
"""

from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[2]
MODELS = [("short_128", 128), ("long_256", 256)]


def main() -> None:
    fixtures = ROOT / "tests" / "fixtures"
    fixtures.mkdir(parents=True, exist_ok=True)
    bgr = cv2.imread(str(ROOT / "assets" / "astronaut.png"), cv2.IMREAD_COLOR)
    if bgr is None:
        raise SystemExit("assets/astronaut.png not found")
    for name, size in MODELS:
        small = cv2.resize(bgr, (size, size), interpolation=cv2.INTER_AREA)
        png = fixtures / f"blazeface_input_{size}.png"
        cv2.imwrite(str(png), small, [cv2.IMWRITE_PNG_COMPRESSION, 9])
        rgb = cv2.cvtColor(cv2.imread(str(png), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        x = (rgb.astype(np.float32) / np.float32(127.5) - np.float32(1.0))[None]

        so = ort.SessionOptions()
        so.log_severity_level = 3
        sess = ort.InferenceSession(
            str(ROOT / "models" / "blazeface" / f"blazeface_{name}.onnx"), so, providers=["CPUExecutionProvider"]
        )
        outs = sess.run(None, {sess.get_inputs()[0].name: x})
        shapes = [o.shape for o in outs]
        expected = [(1, 512, 1), (1, 384, 1), (1, 512, 16), (1, 384, 16)]
        if shapes != expected:
            raise SystemExit(f"{name}: output shapes {shapes}, expected {expected}")
        flat = np.concatenate([o.astype("<f4").ravel() for o in outs])
        out = fixtures / f"blazeface_{name}_ort.f32"
        flat.tofile(out)
        best_logit = max(float(outs[0].max()), float(outs[1].max()))
        best = 1 / (1 + np.exp(-np.clip(best_logit, -100, 100)))
        print(f"{png.name} {png.stat().st_size} B, {out.name} {out.stat().st_size} B, best score {best.max():.4f}")


if __name__ == "__main__":
    main()
