#!/usr/bin/env python3
"""Scores face-detector settings on a labelled detection set: recall, false faces, scores and time.

    python3 models/detection_eval.py [--binary target/release/ferrite] [--set tests/detection]
                                     [--setting "NAME=ARGS"]... [--json FILE]

Runs `ferrite classify --max-faces 64 ARGS <every image of the set>` once per setting (ARGS may set
its own --max-faces) and matches the JSON lines it prints against the set's labels.json
(tests/detection/make_set.py writes the stored set; any folder with the same format will do).

Matching: per image, detections in falling score order each take the unmatched labelled face they
overlap most, if that IoU is at least MATCH_IOU; a detection that takes none is a false face, so a
second detection of one face counts as false. MATCH_IOU is 0.4, not the usual 0.5: a rotated face's
label is the bounding box of its rotated reference box, larger than the box the detector draws (on
the stored set its correct detections overlap the label at IoU 0.56-0.60), and 0.4 leaves room for
that and for the small shifts of a rescaled face.

The table gives, per setting: recall over all faces and over the faces not marked "hard"; false
faces per image with faces; false faces on the negative images (with the files); the score of the
true detections (min, 10th percentile, median) and of the best false one; and wall time per image
(the whole classify run, start-up and the expression model included, divided by the images).
A second table gives recall per face size: box height as a fraction of the image height.
"""
import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MATCH_IOU = 0.4
MAX_FACES = 64  # more than any image holds, so that the detector's own cap never hides a face
BUCKETS = ((0.0, 0.08, "<8 %"), (0.08, 0.20, "8-20 %"), (0.20, 0.50, "20-50 %"), (0.50, float("inf"), ">50 %"))
DEFAULT_SETTINGS = (
    "short=--detector short",
    "short no-verify=--detector short --no-verify",
    "short untiled=--detector short --tiles off --no-verify",
    "long=--detector long",
    "long untiled=--detector long --tiles off --no-verify",
)


def iou(a, b):
    """Intersection over union of two [x, y, w, h] boxes (0 when either is empty)."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def match(detections, faces, threshold=MATCH_IOU):
    """Greedy matching of one image's detections [(box, score)] to its labelled face boxes.

    Returns (matches, false): matches as (detection index, face index) pairs, false as the indices
    of the detections that matched no face. Highest score first; each face is taken once."""
    taken, matches, false = set(), [], []
    for d in sorted(range(len(detections)), key=lambda i: -detections[i][1]):
        best, best_iou = None, threshold
        for f, face in enumerate(faces):
            overlap = iou(detections[d][0], face)
            if f not in taken and overlap >= best_iou:
                best, best_iou = f, overlap
        if best is None:
            false.append(d)
        else:
            taken.add(best)
            matches.append((d, best))
    return matches, false


def bucket(fraction):
    """The size bucket of a face whose box height is `fraction` of the image height."""
    return next(name for lo, hi, name in BUCKETS if lo <= fraction < hi)


def parse_setting(text):
    """'NAME=ARGS' -> (NAME, [args...]), with --max-faces MAX_FACES unless ARGS sets it."""
    name, sep, args = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=ARGS, got {text!r}")
    argv = shlex.split(args)
    if not any(a == "--max-faces" or a.startswith("--max-faces=") for a in argv):
        argv += ["--max-faces", str(MAX_FACES)]
    return name, argv


def run_setting(binary, argv, paths):
    """Runs classify once on every path: (detections per path [(box, score)], errors {path: message},
    exit status, wall seconds). An image without faces prints no line; one that fails prints an error line."""
    cmd = [binary, "classify", *argv, *map(str, paths)]
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if out.returncode not in (0, 1):  # 2: bad command line, 3: start-up failed; nothing was classified
        sys.exit(f"detection_eval: {shlex.join(cmd[:2] + argv)} exited {out.returncode}: {out.stderr.strip()}")
    detections, errors = {str(p): [] for p in paths}, {}
    for line in out.stdout.splitlines():
        record = json.loads(line)
        if "error" in record:
            errors[record["file"]] = record["error"]
        elif "box" in record:
            detections[record["file"]].append((record["box"], record["score"]))
    return detections, errors, out.returncode, seconds


def score(images, detections):
    """The numbers of one setting: images are labels.json records, detections are per record."""
    total = found = total_easy = found_easy = false_on_faces = 0
    by_size = {name: [0, 0] for _, _, name in BUCKETS}  # bucket -> [found, total]
    true_scores, false_scores, on_negatives, missed = [], [], {}, []
    for image, dets in zip(images, detections):
        faces = [f["box"] for f in image["faces"]]
        matches, false = match(dets, faces)
        hit = {f for _, f in matches}
        true_scores += [dets[d][1] for d, _ in matches]
        false_scores += [dets[d][1] for d in false]
        if image["negative"]:
            if false:
                on_negatives[image["file"]] = sorted((round(dets[d][1], 3) for d in false), reverse=True)
        else:
            false_on_faces += len(false)
        for f, face in enumerate(image["faces"]):
            size = by_size[bucket(face["box"][3] / image["height"])]
            size[1] += 1
            total += 1
            found += f in hit
            size[0] += f in hit
            if not face.get("hard"):
                total_easy += 1
                found_easy += f in hit
            if f not in hit:
                missed.append((image["file"], f))
    positives = sum(not im["negative"] for im in images)
    return {
        "faces": total, "found": found, "faces_not_hard": total_easy, "found_not_hard": found_easy,
        "false_per_positive_image": false_on_faces / positives if positives else 0.0,
        "false_on_negatives": on_negatives,
        "true_scores": percentiles(true_scores),
        "false_score_max": round(max(false_scores), 3) if false_scores else None,
        "by_size": by_size, "missed": missed,
    }


def percentiles(scores):
    if not scores:
        return None
    return {"min": round(float(np.min(scores)), 3), "p10": round(float(np.percentile(scores, 10)), 3),
            "median": round(float(np.median(scores)), 3)}


def pct(part, whole):
    return f"{part}/{whole} ({100 * part / whole:.0f} %)" if whole else "-"


def tables(results):
    lines = ["| setting | recall | recall, not hard | false faces / image with faces | false faces on negatives "
             "| TP score min / p10 / median | FP score max | ms / image |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        neg = r["false_on_negatives"]
        count = sum(len(v) for v in neg.values())
        where = ", ".join(f"{Path(f).name} ({' '.join(map(str, s))})" for f, s in neg.items())
        tp = r["true_scores"]
        lines.append(f"| {r['name']} | {pct(r['found'], r['faces'])} | {pct(r['found_not_hard'], r['faces_not_hard'])} "
                     f"| {r['false_per_positive_image']:.2f} | {count}{': ' + where if where else ''} "
                     f"| {'-' if tp is None else '{min} / {p10} / {median}'.format(**tp)} "
                     f"| {r['false_score_max'] if r['false_score_max'] is not None else '-'} | {r['ms_per_image']:.0f} |")
    lines += ["", "recall by face size (box height / image height):", "",
              "| setting | " + " | ".join(name for _, _, name in BUCKETS) + " |", "|---" * (len(BUCKETS) + 1) + "|"]
    for r in results:
        lines.append(f"| {r['name']} | " + " | ".join(pct(*r["by_size"][name]) for _, _, name in BUCKETS) + " |")
    return "\n".join(lines)


def main():
    doc = __doc__.split("\n\n")
    ap = argparse.ArgumentParser(
        description="\n\n".join([doc[0]] + doc[2:]), formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  python3 models/detection_eval.py --binary target/release/ferrite\n"
               "  python3 models/detection_eval.py --setting 'short=--detector short' "
               "--setting 'short@0.4=--detector short --score-threshold 0.4'\n"
               "  python3 models/detection_eval.py --setting 'long-min40=--detector long --min-face 40' --json out.json")
    ap.add_argument("--binary", default=str(ROOT / "target/release/ferrite"), help="the ferrite binary (default: %(default)s)")
    ap.add_argument("--set", default=str(ROOT / "tests/detection"), help="folder holding labels.json (default: %(default)s)")
    ap.add_argument("--setting", action="append", type=parse_setting, metavar="NAME=ARGS",
                    help="a name and the classify options to score, e.g. 'long@0.6=--detector long --score-threshold 0.6'; "
                         f"repeat for more (default: {'; '.join(DEFAULT_SETTINGS)})")
    ap.add_argument("--json", help="also write every number (and each setting's missed faces) here")
    args = ap.parse_args()
    settings = args.setting or [parse_setting(s) for s in DEFAULT_SETTINGS]
    root = Path(args.set)
    images = json.loads((root / "labels.json").read_text())["images"]
    paths = [root / im["file"] for im in images]
    results = []
    for name, argv in settings:
        detections, errors, status, seconds = run_setting(args.binary, argv, paths)
        for file, message in errors.items():
            print(f"detection_eval: {name}: {file}: {message}", file=sys.stderr)
        result = {"name": name, "args": argv, "exit_status": status, "errors": errors,
                  "ms_per_image": 1000 * seconds / len(paths)}
        result.update(score(images, [detections[str(p)] for p in paths]))
        results.append(result)
    faces = sum(len(im["faces"]) for im in images)
    print(f"{len(images)} images ({sum(im['negative'] for im in images)} without faces), {faces} faces "
          f"({sum(f.get('hard', False) for im in images for f in im['faces'])} hard), in {root}; match at IoU >= {MATCH_IOU}")
    print()
    print(tables(results))
    never = set.intersection(*(set(r["missed"]) for r in results))
    if never:
        print("\nfaces no setting found:")
        for file, f in sorted(never):
            image = next(im for im in images if im["file"] == file)
            face = image["faces"][f]
            print(f"  {file} face {f}: {face['source']}, {100 * face['box'][3] / image['height']:.1f} % of the height"
                  f"{', hard' if face.get('hard') else ''}{', rotated %d' % face['rotated'] if face.get('rotated') else ''}")
    if any(r["exit_status"] for r in results):
        print("\nclassify exit status: " + ", ".join(f"{r['name']} {r['exit_status']}" for r in results))
    if args.json:
        Path(args.json).write_text(json.dumps({"set": str(root), "match_iou": MATCH_IOU, "settings": results}, indent=1))


if __name__ == "__main__":
    main()
