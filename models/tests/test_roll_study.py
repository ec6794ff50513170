import argparse
import json
import math

import numpy as np
import pytest
from PIL import Image

import roll_study as rs


def blob_face():
    """A dark 48x48 'face' with one bright 2x2 blob whose centre is 12 px above the face's centre."""
    a = np.zeros((48, 48), np.uint8)
    a[11:13, 23:25] = 255
    return Image.fromarray(a)


def test_mask_is_opaque_inside_and_fades_to_zero_before_the_square_edge():
    alpha = rs.soft_ellipse(160)
    assert alpha[80, 80] == 1.0
    border = np.concatenate([alpha[0], alpha[-1], alpha[:, 0], alpha[:, -1]])
    assert border.max() == 0.0
    # a fade over many pixels: no neighbour step anywhere near a hard edge's 1.0
    assert max(np.abs(np.diff(alpha, axis=0)).max(), np.abs(np.diff(alpha, axis=1)).max()) < 0.2


@pytest.mark.parametrize("angle", [-30, 0, 20])
def test_frame_is_centred_and_has_no_hard_edges(angle):
    frame = np.asarray(rs.face_frame(Image.new("L", (48, 48), 255), angle), float)
    assert frame.shape == (rs.FRAME_SIDE, rs.FRAME_SIDE)
    weight = frame - rs.BACKGROUND
    ys, xs = np.indices(frame.shape) + 0.5
    centre = rs.FRAME_SIDE / 2
    assert abs((weight * xs).sum() / weight.sum() - centre) < 0.5
    assert abs((weight * ys).sum() / weight.sum() - centre) < 0.5
    # a white square pasted on gray would step by 127 somewhere, also along rotated sides
    assert max(np.abs(np.diff(frame, axis=0)).max(), np.abs(np.diff(frame, axis=1)).max()) < 25
    far = np.ones(frame.shape, bool)
    far[100:300, 100:300] = False
    assert (frame[far] == rs.BACKGROUND).all()


@pytest.mark.parametrize("angle", [-30, 0, 30])
def test_positive_angles_turn_the_face_anticlockwise(angle):
    frame = np.asarray(rs.face_frame(blob_face(), angle), float)
    ys, xs = np.nonzero(frame > 200)
    # the blob is 12 of 48 px above the centre, i.e. 40 px at 160; anticlockwise takes "up" to the left
    d, a = 12 * rs.FACE_SIDE / 48, math.radians(angle)
    centre = rs.FRAME_SIDE / 2
    assert abs(xs.mean() + 0.5 - (centre - d * math.sin(a))) < 1.5
    assert abs(ys.mean() + 0.5 - (centre - d * math.cos(a))) < 1.5


def test_predictions_key_by_face_and_angle_and_collect_errors():
    lines = [
        json.dumps({"file": "/tmp/x/frames/0003_-20.png", "face": 0, "score": 0.8, "label": "sad"}),
        json.dumps({"file": "/tmp/x/frames/0003_+00.png", "face": 0, "score": 0.9, "label": "happy"}),
        json.dumps({"file": "/tmp/x/frames/0004_+10.png", "error": "truncated"}),
    ]
    found, errors = rs.predictions(lines)
    assert found == {(3, -20): "sad", (3, 0): "happy"}
    assert errors == ["/tmp/x/frames/0004_+10.png: truncated"]
    assert rs.frame_name(3, -20) == "0003_-20.png" and rs.frame_name(3, 0) == "0003_+00.png"


def test_score_counts_misses_as_wrong_and_agreement_over_faces_seen_at_both_angles():
    labels = ["happy", "sad", "angry", "fear"]
    found = {(0, 0): "happy", (1, 0): "sad", (2, 0): "fear",  # face 3 missed upright
             (0, 20): "happy", (1, 20): "neutral", (3, 20): "fear"}  # face 2 missed tilted
    s = rs.score(labels, found, [0, 20])
    assert s[0] == {"frames": 4, "detected": 3, "correct": 2, "detection": 0.75, "accuracy": 0.5,
                    "accuracy_detected": 2 / 3, "agreement_of": 3, "agreement": 1.0}
    # tilted: faces 0 and 3 right, 2 of 4; agreement only for faces 0 and 1 (3 has no upright prediction)
    assert s[20]["accuracy"] == 0.5 and s[20]["accuracy_detected"] == 2 / 3
    assert (s[20]["agreement_of"], s[20]["agreement"]) == (2, 0.5)


def test_discordant_pairs_count_a_miss_as_wrong():
    labels = ["happy", "sad", "angry"]
    on = {(0, 10): "happy", (1, 10): "sad"}
    off = {(0, 10): "happy", (1, 10): "fear", (2, 10): "angry"}
    assert rs.discordant(labels, on, off, [10]) == {10: {"only_first": 1, "only_second": 1}}


def test_table_row_per_angle_with_on_and_off_in_each_cell():
    labels = ["happy", "sad"]
    on = {(0, 0): "happy", (1, 0): "sad"}
    off = {(0, 0): "happy"}
    scores = {"rotate": rs.score(labels, on, [0]), "norotate": rs.score(labels, off, [0])}
    text = rs.table(scores, rs.discordant(labels, on, off, [0]))
    row = "| +0° | 100.0 / 50.0 | 100.0 / 50.0 | 100.0 / 100.0 | 100.0 / 100.0 | 1 / 0 | 1 |"
    assert text.splitlines()[2] == row


def test_sign_test_is_exact_and_symmetric():
    assert rs.sign_test(0, 0) == 1.0
    assert rs.sign_test(5, 0) == rs.sign_test(0, 5) == 2 / 32
    assert rs.sign_test(3, 2) == 1.0
    assert abs(rs.sign_test(10, 2) - 2 * (1 + 12 + 66) / 4096) < 1e-12


def test_angles_must_be_whole_degrees_including_zero():
    assert rs.angle_list("10,-10,0,10") == [-10, 0, 10]
    with pytest.raises(argparse.ArgumentTypeError):
        rs.angle_list("-10,10")
    with pytest.raises(argparse.ArgumentTypeError):
        rs.angle_list("-7.5,0")
