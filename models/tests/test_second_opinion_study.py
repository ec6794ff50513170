import os
import subprocess
from pathlib import Path

import pytest
from PIL import Image

import second_opinion_study as sos

ROOT = Path(__file__).resolve().parents[2]
LOG = """[2026-12-07T19:05:26Z DEBUG ferrite::detect] second opinion 0.681 on a face scoring 0.748 at BBox \
{ x: 154.56857, y: 105.26459, w: 107.24835, h: 107.23743 } (WholeFrame): kept
[2026-12-07T19:05:26Z DEBUG ferrite::detect] second opinion 0.477 on a face scoring 0.742 at BBox \
{ x: 305.39487, y: 145.05043, w: 32.43405, h: 32.434006 } (Tiles): rejected
"""


def test_checks_are_read_from_the_log_and_matched_to_the_face():
    found = sos.checks(LOG, face_box=[144, 91, 145, 145])
    assert [(c["pass"], c["opinion"], c["score"], c["true"]) for c in found] == [
        ("WholeFrame", 0.681, 0.748, True), ("Tiles", 0.477, 0.742, False)]
    assert [c["true"] for c in sos.checks(LOG, face_box=None)] == [False, False]


def test_table_counts_dropped_true_and_kept_false_faces_per_pass():
    checks = [{"pass": "WholeFrame", "opinion": 0.66, "true": True},
              {"pass": "WholeFrame", "opinion": 0.61, "true": True},
              {"pass": "WholeFrame", "opinion": 0.63, "true": False},
              {"pass": "Tiles", "opinion": 0.69, "true": False}]
    rows = sos.table(checks, thresholds=(0.6, 0.65, 0.7))
    assert rows["WholeFrame"] == {0.6: (0, 1), 0.65: (1, 0), 0.7: (2, 0)}
    assert rows["Tiles"] == {0.6: (0, 1), 0.65: (0, 1), 0.7: (0, 0)}


def test_the_binary_logs_checks_in_the_format_the_script_reads(tmp_path):
    # The gray face upscaled from 24 px of the Rust test
    # the_second_opinion_keeps_a_blurry_face_the_whole_frame_pass_found: a whole-frame face the
    # detector is unsure of, so it is checked.
    binary = next((p for p in (ROOT / "target/debug/ferrite", ROOT / "target/release/ferrite") if p.exists()), None)
    if binary is None:
        pytest.skip("no ferrite binary built (cargo build)")
    face = Image.open(ROOT / "assets/astronaut.png").convert("L").crop((150, 40, 330, 220))
    blurry = face.resize((24, 24), Image.Resampling.BILINEAR).resize((140, 140), Image.Resampling.BILINEAR)
    frame = Image.new("L", (320, 240), 110)
    frame.paste(blurry, (90, 50))
    frame.save(tmp_path / "frame.png")
    found = sos.run(str(binary), tmp_path / "frame.png", [90, 50, 140, 140], ["--tiles", "off"])
    assert [(c["pass"], c["true"]) for c in found] == [("WholeFrame", True)]
    assert 0.5 < found[0]["opinion"] < 0.85
