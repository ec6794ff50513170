import json
import subprocess
import sys
from pathlib import Path

import pytest

import detection_eval as de

ROOT = Path(__file__).resolve().parents[2]
MAKE_SET = ROOT / "tests/detection/make_set.py"


def test_iou_of_equal_disjoint_and_half_overlapping_boxes():
    assert de.iou([10, 10, 20, 20], [10, 10, 20, 20]) == 1.0
    assert de.iou([0, 0, 10, 10], [20, 20, 10, 10]) == 0.0
    assert de.iou([0, 0, 10, 10], [5, 0, 10, 10]) == pytest.approx(50 / 150)
    assert de.iou([0, 0, 0, 0], [0, 0, 0, 0]) == 0.0


def test_exact_match():
    assert de.match([([10, 10, 20, 20], 0.9)], [[10, 10, 20, 20]]) == ([(0, 0)], [])


def test_a_missed_face_is_in_no_match():
    matches, false = de.match([([0, 0, 20, 20], 0.9)], [[0, 0, 20, 20], [100, 100, 20, 20]])
    assert matches == [(0, 0)] and false == []


def test_a_detection_on_no_face_is_false():
    assert de.match([([200, 200, 20, 20], 0.8)], [[0, 0, 20, 20]]) == ([], [0])
    assert de.match([([0, 0, 20, 20], 0.8)], []) == ([], [0])


def test_below_the_iou_threshold_is_false():
    # IoU 1/3 < 0.4
    assert de.match([([5, 0, 10, 10], 0.9)], [[0, 0, 10, 10]]) == ([], [0])


def test_a_second_detection_of_one_face_is_false():
    dets = [([0, 0, 20, 20], 0.7), ([1, 1, 20, 20], 0.9)]
    assert de.match(dets, [[0, 0, 20, 20]]) == ([(1, 0)], [0])


def test_greedy_by_score_not_by_overlap():
    # The higher score takes the face although the lower one overlaps it better.
    dets = [([0, 0, 20, 20], 0.6), ([4, 0, 20, 20], 0.9)]
    assert de.match(dets, [[0, 0, 20, 20]]) == ([(1, 0)], [0])


def test_a_detection_takes_the_unmatched_face_it_overlaps_most():
    faces = [[0, 0, 20, 20], [6, 0, 20, 20]]
    dets = [([6, 0, 20, 20], 0.9), ([1, 0, 20, 20], 0.8)]
    assert de.match(dets, faces) == ([(0, 1), (1, 0)], [])


def test_size_buckets_include_their_lower_edge():
    assert [de.bucket(f) for f in (0.0, 0.079, 0.08, 0.2, 0.49, 0.5, 1.2)] == [
        "<8 %", "<8 %", "8-20 %", "20-50 %", "20-50 %", ">50 %", ">50 %"]


def test_setting_gets_max_faces_unless_it_sets_its_own():
    assert de.parse_setting("s=--detector short") == ("s", ["--detector", "short", "--max-faces", "64"])
    assert de.parse_setting("s=--max-faces 3") == ("s", ["--max-faces", "3"])
    assert de.parse_setting("plain=") == ("plain", ["--max-faces", "64"])
    with pytest.raises(Exception):
        de.parse_setting("--detector long")


def test_score_counts_hard_faces_sizes_and_negatives():
    images = [
        {"file": "a.jpg", "height": 100, "negative": False,
         "faces": [{"box": [0, 0, 10, 10]}, {"box": [50, 0, 60, 60], "hard": True}]},
        {"file": "cat.jpg", "height": 100, "negative": True, "faces": []},
    ]
    detections = [[([0, 0, 10, 10], 0.9), ([30, 80, 10, 10], 0.5)], [([1, 1, 5, 5], 0.7)]]
    r = de.score(images, detections)
    assert (r["found"], r["faces"], r["found_not_hard"], r["faces_not_hard"]) == (1, 2, 1, 1)
    assert r["false_per_positive_image"] == 1.0
    assert r["false_on_negatives"] == {"cat.jpg": [0.7]}
    assert r["false_score_max"] == 0.7
    assert r["by_size"]["8-20 %"] == [1, 1] and r["by_size"][">50 %"] == [0, 1]
    assert r["missed"] == [("a.jpg", 1)]


def test_run_setting_reads_detections_errors_and_silent_images(tmp_path):
    # A stand-in for ferrite: a face in a.jpg, none in b.jpg (no line), c.jpg unreadable (exit 1).
    fake = tmp_path / "ferrite"
    fake.write_text(f"#!{sys.executable}\nimport json, sys\n"
                    "for f in sys.argv[1:]:\n"
                    "    if f.endswith('a.jpg'): print(json.dumps({'file': f, 'face': 0, 'box': [1, 2, 3, 3], 'score': 0.8}))\n"
                    "    if f.endswith('c.jpg'): print(json.dumps({'file': f, 'error': 'not a readable image'}))\n"
                    "sys.exit(1)\n")
    fake.chmod(0o755)
    paths = [tmp_path / n for n in ("a.jpg", "b.jpg", "c.jpg")]
    detections, errors, status, seconds = de.run_setting(str(fake), ["--max-faces", "64"], paths)
    assert detections == {str(paths[0]): [([1, 2, 3, 3], 0.8)], str(paths[1]): [], str(paths[2]): []}
    assert errors == {str(paths[2]): "not a readable image"} and status == 1 and seconds > 0


def check_labels(root):
    labels = json.loads((root / "labels.json").read_text())
    for image in labels["images"]:
        path = root / image["file"]
        assert path.is_file(), path
        assert image["negative"] == (not image["faces"])
        assert image["licence"] and image["sources"]
        assert all(s in labels["sources"] for s in image["sources"])
        boxes = [f["box"] for f in image["faces"]]
        for x, y, w, h in boxes:
            assert 0 <= x and 0 <= y and x + w <= image["width"] and y + h <= image["height"], (image["file"], x, y, w, h)
        for i, a in enumerate(boxes):
            for b in boxes[i + 1:]:
                assert de.iou(a, b) < 0.1, image["file"]
    return labels


def test_stored_set_labels_are_inside_their_images_and_apart():
    root = ROOT / "tests/detection"
    labels = check_labels(root)
    from PIL import Image

    for image in labels["images"]:
        with Image.open(root / image["file"]) as im:
            assert im.size == (image["width"], image["height"])
    assert {p.name for p in (root / "images").iterdir()} == {Path(im["file"]).name for im in labels["images"]}


def test_generator_is_deterministic_for_a_seed(tmp_path):
    outs = [tmp_path / "one", tmp_path / "two"]
    for out in outs:
        subprocess.run([sys.executable, str(MAKE_SET), "--out", str(out), "--limit", "2", "--seed", "3"], check=True,
                       capture_output=True)
    files = sorted(p.relative_to(outs[0]) for p in outs[0].rglob("*") if p.is_file())
    assert len(files) == 3  # two images and labels.json
    assert files == sorted(p.relative_to(outs[1]) for p in outs[1].rglob("*") if p.is_file())
    for f in files:
        assert (outs[0] / f).read_bytes() == (outs[1] / f).read_bytes(), f
    check_labels(outs[0])
