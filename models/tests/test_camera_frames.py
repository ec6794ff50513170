import numpy as np
from PIL import Image

import camera_frames as cf


def backgrounds():
    rng = np.random.default_rng(7)
    return [Image.fromarray(rng.integers(0, 255, (300, 400), dtype=np.uint8))]


def face():
    # A bright square with a dark centre, so the pasted face can be found in the frame.
    pixels = np.full((48, 48), 230, np.uint8)
    pixels[16:32, 16:32] = 10
    return Image.fromarray(pixels)


def test_a_frame_is_gray_the_face_lies_inside_it_and_the_seed_fixes_it():
    a, box = cf.camera_frame(face(), backgrounds(), np.random.default_rng([0, 3]))
    b, same = cf.camera_frame(face(), backgrounds(), np.random.default_rng([0, 3]))
    c, other = cf.camera_frame(face(), backgrounds(), np.random.default_rng([0, 4]))
    assert a.mode == "L" and a.size == cf.FRAME
    x, y, w, h = box
    assert w == h and cf.FACE_SIZES[0] <= w <= cf.FACE_SIZES[1]
    assert 0 <= x and x + w <= cf.FRAME[0] and 0 <= y and y + h <= cf.FRAME[1]
    assert box == same and np.array_equal(np.asarray(a), np.asarray(b))
    assert box != other or not np.array_equal(np.asarray(a), np.asarray(c))
    # The face's dark centre is where the box says, through blur, tone and JPEG.
    pixels = np.asarray(a, float)
    centre = pixels[y + h * 3 // 8:y + h * 5 // 8, x + w * 3 // 8:x + w * 5 // 8].mean()
    rim = pixels[y + 2:y + h // 8, x + w // 4:x + w * 3 // 4].mean()
    assert rim - centre > 80


def test_a_detection_is_the_face_only_when_centred_on_it_at_a_plausible_size():
    box = [100, 50, 120, 120]
    assert cf.found(box, [120, 70, 80, 80])
    assert not cf.found(box, [0, 0, 80, 80]), "elsewhere in the frame"
    assert not cf.found(box, [150, 100, 20, 20]), "too small: an eye, not the face"
    assert not cf.found(box, [40, 0, 240, 240]), "too large"


def test_scoring_counts_a_missed_face_as_wrong_and_picks_the_best_detection():
    items = [("a.png", "happy"), ("b.png", "sad"), ("c.png", "happy")]
    frames = ["fa.jpg", "fb.jpg", "fc.jpg"]
    boxes = [[0, 0, 100, 100]] * 3
    frame_lines = {
        "fa.jpg": [{"box": [10, 10, 80, 80], "score": 0.9, "label": "happy"},
                   {"box": [200, 10, 80, 80], "score": 0.95, "label": "sad"}],
        "fb.jpg": [{"box": [10, 10, 80, 80], "score": 0.7, "label": "happy"}],
        "fc.jpg": [],
    }
    crop_lines = {"a.png": [{"label": "happy"}], "b.png": [{"label": "sad"}],
                  "c.png": [{"label": "happy"}]}
    result, detail = cf.score(items, frames, boxes, frame_lines, crop_lines, ["happy", "sad"])
    assert result["found"] == 2 / 3
    assert result["frames_accuracy"] == 1 / 3
    assert result["crops_accuracy"] == 1.0
    assert result["confusion_frames"] == [[1, 0], [1, 0]]
    assert result["confusion_crops"] == [[2, 0], [0, 1]]
    assert [d["frame_label"] for d in detail] == ["happy", "happy", None]
    assert detail[0]["detection"] == [10, 10, 80, 80] and detail[2]["detection"] is None


def test_pick_is_a_seeded_subset_in_a_stable_order():
    items = [(f"{i}.png", "happy") for i in range(50)]
    first = cf.pick(items, 10, 0)
    assert first == cf.pick(items, 10, 0)
    assert len(first) == 10 and first == sorted(first, key=items.index)
    assert cf.pick(items, 0, 0) == items


def test_the_crop_geometry_is_the_face_relative_to_the_detection_in_manifest_terms():
    detail = [{"detection": [10, 20, 80, 80], "face_box": [0, 4, 100, 100]},
              {"detection": None, "face_box": [0, 0, 100, 100]}]
    g = cf.crop_geometry(detail)
    assert g["faces"] == 1
    assert g["scale"]["median"] == 1.25
    assert g["shift_x"]["median"] == 0.0
    assert g["shift_y"]["median"] == -0.075  # (54 - 60) / 80
    assert cf.crop_geometry(detail[1:]) is None


def test_ck_class_folders_are_read_as_the_model_s_labels(tmp_path):
    for folder in ("anger", "happy", "sadness"):
        (tmp_path / folder).mkdir()
        Image.new("L", (48, 48)).save(tmp_path / folder / "S005_001_00000011.png")
    (tmp_path / "happy" / "notes.txt").write_text("not an image")
    assert [label for _, label in cf.labelled_images(tmp_path)] == ["angry", "happy", "sad"]


def test_the_calibration_file_carries_the_medians_in_export_s_format(tmp_path):
    import argparse
    import fermodel as fm

    detail = [{"detection": [10, 20, 80, 80], "face_box": [0, 4, 100, 100]}]
    args = argparse.Namespace(split="train", limit=3, seed=1)
    path = tmp_path / "calibration.json"
    cf.write_calibration(path, cf.crop_geometry(detail), args)
    geometry = fm.load_crop_calibration(path)
    assert geometry == {"scale": 1.25, "shift_x": 0.0, "shift_y": -0.075, "rotate": True}
