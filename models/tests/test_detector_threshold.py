import json

import detector_threshold as dt


def test_best_score_per_file_and_zero_when_nothing_found():
    lines = [
        json.dumps({"file": "/tmp/x/gray/a.png", "face": 0, "score": 0.62}),
        json.dumps({"file": "/tmp/x/gray/a.png", "face": 1, "score": 0.81}),
        json.dumps({"file": "/tmp/x/gray/b.png", "faces": 0}),
    ]
    assert dt.best_scores(lines, ["a.png", "b.png", "c.png"]) == [0.81, 0.0, 0.0]


def test_found_counts_scores_at_or_above_each_threshold():
    counts = dt.found([0.5, 0.6, 0.74, 0.75, 0.0], thresholds=(0.5, 0.6, 0.75))
    assert counts == {0.5: 4, 0.6: 3, 0.75: 1}


def test_table_has_one_row_per_set():
    counts = dt.found([0.7, 0.9])
    text = dt.table([("gray", 2, counts)])
    assert text.splitlines()[2].startswith("| gray | 2 | 2 |")
