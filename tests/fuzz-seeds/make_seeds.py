"""Regenerates the fuzz seeds in this folder (tests/it/fuzz.rs): the sample face (scikit-image's
astronaut.png, public domain) cropped and shrunk to 64x64 and saved as PNG, JPEG, BMP and PGM, a
four-frame mono Y4M of it, and copies of the example config and the test-fixture manifest. Small on
purpose: every fuzz case decodes and classifies one of them.

    python3 tests/fuzz-seeds/make_seeds.py
"""
from pathlib import Path
import shutil

from PIL import Image

here = Path(__file__).resolve().parent
root = here.parents[1]

face = Image.open(root / "assets/astronaut.png").convert("RGB").crop((150, 20, 330, 200)).resize((64, 64))
face.save(here / "face.png")
face.save(here / "face.jpg", quality=85)
face.save(here / "face.bmp")
face.convert("L").save(here / "face.pgm")

gray = face.convert("L")
with open(here / "clip.y4m", "wb") as out:
    out.write(b"YUV4MPEG2 W64 H64 F10:1 Ip A1:1 Cmono\n")
    for shift in range(4):
        out.write(b"FRAME\n")
        out.write(gray.rotate(shift * 5).tobytes())

shutil.copy(root / "examples/ferrite.toml", here / "ferrite.toml")
shutil.copy(root / "tests/fixtures/ensemble/manifest.json", here / "manifest.json")
