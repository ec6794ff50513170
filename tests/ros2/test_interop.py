"""`ferrite run --ros2` against an independent DDS implementation (Eclipse Cyclone DDS, PyPI).

ferrite runs a paced recording of two moving faces with `--json-state`, publishing REP-155 topics
on a private domain over loopback only; Cyclone subscribes with the ROS 2 wire types of
hri_msgs.py. Every expression update in the JSON state lines must arrive on the face's topic, in
order, with the same label (REP-155 name), confidence, valence/arousal estimate and stamp spacing;
the tracked list must name the faces and end empty.

Needs a ferrite built with the `ros2` feature (FERRITE_BIN, default target/debug/ferrite) and
`pip install -r tests/ros2/requirements.txt`. Without either the tests skip, unless
FERRITE_REQUIRE_ROS2=1 (scripts/test.sh sets it), where they fail.
"""
import json
import os
import random
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REQUIRED = os.environ.get("FERRITE_REQUIRE_ROS2") == "1"

# Discovery by unicast to 127.0.0.1 only: `lo` has no multicast here, and nothing may leave the
# machine. rustdds (ferrite's side, with --ros2-localhost-only) announces itself to the first
# participant ports on 127.0.0.1, as this config makes Cyclone do.
os.environ["CYCLONEDDS_URI"] = (
    '<CycloneDDS><Domain Id="any">'
    '<General><Interfaces><NetworkInterface name="lo"/></Interfaces>'
    "<AllowMulticast>false</AllowMulticast></General>"
    "<Discovery><ParticipantIndex>auto</ParticipantIndex>"
    "<MaxAutoParticipantIndex>20</MaxAutoParticipantIndex>"
    '<Peers><Peer address="127.0.0.1"/></Peers></Discovery>'
    "</Domain></CycloneDDS>"
)

try:
    from cyclonedds.core import Policy, Qos
    from cyclonedds.domain import DomainParticipant
    from cyclonedds.internal import InvalidSample
    from cyclonedds.sub import DataReader
    from cyclonedds.topic import Topic
    from cyclonedds.util import duration

    from hri_msgs import Expression_, IdsList_, NormalizedRegionOfInterest2D_
except ImportError as e:  # pragma: no cover - depends on the machine
    if REQUIRED:
        raise
    pytest.skip(f"cyclonedds is not installed ({e})", allow_module_level=True)

REP155 = {
    "angry": "angry",
    "disgust": "disgusted",
    "fear": "scared",
    "happy": "happy",
    "sad": "sad",
    "surprise": "surprised",
    "neutral": "neutral",
}
# docs/robotics.md: Russell & Mehrabian (1977) pleasure and arousal per expression.
CIRCUMPLEX = {
    "neutral": (0.0, 0.0),
    "happy": (0.81, 0.61),
    "sad": (-0.63, -0.27),
    "angry": (-0.51, 0.59),
    "fear": (-0.64, 0.60),
    "disgust": (-0.60, 0.35),
    "surprise": (0.40, 0.67),
}
FPS = 10
FRAMES = 36
FACELESS = 6  # frames before the faces enter: discovery settles first


def ferrite_bin():
    path = Path(os.environ.get("FERRITE_BIN", ROOT / "target/debug/ferrite"))
    if not path.exists():
        if REQUIRED:
            pytest.fail(f"{path} does not exist: build ferrite first")
        pytest.skip(f"{path} does not exist")
    probe = subprocess.run([str(path), "run", "--help"], capture_output=True, text=True)
    if "--ros2" not in probe.stdout:
        pytest.fail(f"{path} has no --ros2 flag")
    return path


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """Two faces (the public-domain astronaut's, and its mirror image) drifting across a 640x480
    frame, after a few faceless frames."""
    from PIL import Image, ImageOps

    out = tmp_path_factory.mktemp("two_faces")
    astronaut = Image.open(ROOT / "assets/astronaut.png").convert("RGB")
    face = astronaut.crop((110, 10, 350, 250))
    other = ImageOps.mirror(face)
    for i in range(FRAMES):
        frame = Image.new("RGB", (640, 480), (118, 118, 118))
        if i >= FACELESS:
            frame.paste(face, (20 + 3 * i, 120))
            frame.paste(other, (380, 200 - 2 * i))
        frame.save(out / f"{i:03d}.png")
    return out


def qos(durability, depth):
    return Qos(
        Policy.Reliability.Reliable(duration(seconds=1)),
        durability,
        Policy.History.KeepLast(depth),
    )


class Subscriber:
    """Readers for the tracked list and for the first few faces' expression and ROI topics,
    created before ferrite starts (ids are assigned from 1)."""

    def __init__(self, domain, faces=4):
        self.participant = DomainParticipant(domain)
        dp = self.participant
        latched = qos(Policy.Durability.TransientLocal, 1000)
        self.tracked = DataReader(dp, Topic(dp, "rt/humans/faces/tracked", IdsList_), qos=latched)
        self.expressions, self.rois = {}, {}
        for track in range(1, faces + 1):
            fid = f"f{track:05d}"
            base = f"rt/humans/faces/{fid}"
            self.expressions[fid] = DataReader(
                dp, Topic(dp, f"{base}/expression", Expression_), qos=latched
            )
            self.rois[fid] = DataReader(
                dp, Topic(dp, f"{base}/roi", NormalizedRegionOfInterest2D_), qos=latched
            )
        self.lists, self.got_expressions, self.got_rois = [], {}, {}

    def drain(self):
        self.lists += valid(self.tracked.take(N=1000))
        for fid, reader in self.expressions.items():
            self.got_expressions.setdefault(fid, []).extend(valid(reader.take(N=1000)))
        for fid, reader in self.rois.items():
            self.got_rois.setdefault(fid, []).extend(valid(reader.take(N=1000)))


def valid(samples):
    """Data samples only: a writer that goes away (a face that left) also delivers an
    "unregistered" notice, which carries no data."""
    return [s for s in samples if not isinstance(s, InvalidSample)]


def run_ferrite(binary, recording, domain, stderr, extra=()):
    return subprocess.Popen(
        [
            str(binary), "run", "--input", str(recording), "--fps", str(FPS),
            "--min-hits", "2", "--json-state",
            "--ros2", "--ros2-domain", str(domain), "--ros2-localhost-only",
            "--ros2-frame-id", "test_camera", *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )


def stamp_s(header):
    return header.stamp.sec + header.stamp.nanosec * 1e-9


def missing(times, stamps):
    """Which stream times have no message. A stamp is the stream's start plus the frame's time;
    the start is taken from whichever end of the stream arrived."""
    if not stamps:
        return "none arrived"
    best = []
    for start in (stamps[0] - times[0], stamps[-1] - times[-1]):
        arrived = {round(s - start, 2) for s in stamps}
        absent = [t for t in times if round(t, 2) not in arrived]
        if not best or len(absent) < len(best):
            best = absent
    return f"missing at stream times {best} of {times[0]}..{times[-1]} s"


def test_every_expression_update_arrives_in_order_with_rep155_types(recording, tmp_path):
    binary = ferrite_bin()
    domain = random.randint(100, 200)
    sub = Subscriber(domain)
    log = tmp_path / "ferrite.log"
    proc = run_ferrite(binary, recording, domain, log.open("w"))
    deadline = time.time() + 60
    while proc.poll() is None and time.time() < deadline:
        sub.drain()
        time.sleep(0.05)
    if proc.poll() is None:
        proc.kill()
        pytest.fail("ferrite did not finish within 60 s")
    stdout, _ = proc.communicate()
    stderr = log.read_text()
    assert proc.returncode == 0, stderr
    # The empty list at shutdown and the last frames' messages may still be in flight.
    end = time.time() + 2
    while time.time() < end and not (sub.lists and sub.lists[-1].ids == []):
        sub.drain()
        time.sleep(0.05)
    sub.drain()

    states = [json.loads(line) for line in stdout.splitlines()]
    states = [s for s in states if s["type"] == "state"]
    expected = {}
    for s in states:
        for f in s["faces"]:
            expected.setdefault(f"f{f['track']:05d}", []).append((s["time"], f))
    assert len(expected) >= 2, f"expected two tracked faces, got {sorted(expected)}: {stderr}"
    assert set(expected) <= set(sub.expressions), sorted(expected)

    for fid, updates in expected.items():
        got = sub.got_expressions[fid]
        assert len(got) == len(updates), (
            f"{fid}: {len(got)} of {len(updates)} updates arrived; "
            + missing([t for t, _ in updates], [stamp_s(m.header) for m in got])
        )
        t0, g0 = updates[0][0], stamp_s(got[0].header)
        for (t, face), msg in zip(updates, got):
            assert msg.expression == REP155[face["label"]]
            assert abs(msg.confidence - face["confidence"]) < 1e-4
            probs = face["probabilities"]
            valence = sum(p * CIRCUMPLEX[label][0] for label, p in probs.items())
            arousal = sum(p * CIRCUMPLEX[label][1] for label, p in probs.items())
            assert abs(msg.valence - valence) < 2e-3 and abs(msg.arousal - arousal) < 2e-3
            assert msg.header.frame_id == "test_camera"
            # Stamps keep the stream's spacing (the JSON rounds times to 1 ms).
            assert abs((stamp_s(msg.header) - g0) - (t - t0)) < 2e-3, (fid, t, msg.header)
        rois = sub.got_rois[fid]
        assert len(rois) == len(updates), (
            f"{fid}: {len(rois)} of {len(updates)} boxes; "
            + missing([t for t, _ in updates], [stamp_s(m.header) for m in rois])
        )
        for (_, face), roi in zip(updates, rois):
            x, y, w, h = face["box"]
            assert abs(roi.xmin - max(x, 0) / 640) < 1e-3 and abs(roi.ymax - min(y + h, 480) / 480) < 1e-3
            assert 0 < roi.c <= 1

    # The stamps sit on the wall clock, within this test's lifetime.
    first = min(stamp_s(m[0].header) for m in sub.got_expressions.values() if m)
    assert abs(first - time.time()) < 120
    lists = [list(m.ids) for m in sub.lists]
    assert sorted(expected) in lists, lists
    assert lists[-1] == [], lists[-3:]


def test_a_late_subscriber_gets_the_current_list_and_a_leaving_one_stalls_nothing(
    recording, tmp_path
):
    binary = ferrite_bin()
    domain = random.randint(100, 200)
    log = tmp_path / "ferrite.log"
    proc = run_ferrite(binary, recording, domain, log.open("w"), extra=["--stats"])
    # Join once the faces are tracked: the latched list arrives without waiting for a change.
    time.sleep((FACELESS + 8) / FPS + 1.0)
    late = DomainParticipant(domain)
    reader = DataReader(
        late,
        Topic(late, "rt/humans/faces/tracked", IdsList_),
        qos=qos(Policy.Durability.TransientLocal, 1),
    )
    seen, end = [], time.time() + 3
    while not seen and time.time() < end:
        seen = valid(reader.take(N=10))
        time.sleep(0.05)
    assert seen and len(seen[-1].ids) >= 1, "no latched tracked list for a late subscriber"
    # Then the subscriber goes away mid-stream; ferrite must finish every frame regardless.
    del reader, late
    proc.communicate(timeout=60)
    stderr = log.read_text()
    assert proc.returncode == 0, stderr
    assert f"frames {FRAMES}" in stderr, stderr
