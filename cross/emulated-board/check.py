#!/usr/bin/env python3
"""Checks what the emulated board (cross/emulated-board.sh) recorded; standard library only.

  check.py RESULTS_DIR --frames N --config cross/emulated-board/ferrite.toml

RESULTS_DIR holds what the guest wrote (init.sh) plus qemu's PL061 trace. Checks, in order:
  camera    the feeder verified vivid's loopback byte for byte; ferrite streamed the camera and
            exited 0 after exactly N frames (its --stats table)
  events    an `appeared` event with a label, and a `state` line with a face for most frames
  gpio      from the kernel (debugfs samples in the guest) and from the emulated PL061 (qemu
            trace on the host): face_present and the appeared label's line went high and were
            back low at the end; lines of labels never reported never went high; the change
            line pulsed (qemu trace)
  display   the framebuffer, read back while the face was shown and after the run, equals the PNG
            driver's rendering of the same state (`ferrite classify` of the exact camera frame,
            and of a blank image) pixel for pixel, except the FPS text, which only the live run
            has; qemu's screendump of the emulated display (virtio-gpu scanout) at those moments
            equals the framebuffer
Prints one line per check; on the first failure prints "emulated-board: FAIL: <reason>" and exits 1.
"""

import argparse
import json
import re
import struct
import sys
import tomllib
import zlib
from pathlib import Path

NEGATIVE = {"angry", "disgust", "fear", "sad", "contempt"}
TEXT = (240, 240, 240)  # src/display/ui.rs TEXT


def fail(reason):
    print(f"emulated-board: FAIL: {reason}", file=sys.stderr)
    sys.exit(1)


def ok(what, detail):
    print(f"  ok  {what:<9} {detail}")


def read(results, name):
    path = results / name
    if not path.exists():
        fail(f"the guest did not write {name}")
    return path.read_text(errors="replace")


# --- images ------------------------------------------------------------------------------------


def read_png(path):
    """8-bit RGB or RGBA PNG (what the image crate writes) -> (width, height, rows of RGB bytes)."""
    data = path.read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        fail(f"{path.name} is not a PNG")
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
    width, height, depth, colour, _, _, interlace = header
    if depth != 8 or colour not in (2, 6) or interlace:
        fail(f"{path.name}: unsupported PNG layout (depth {depth}, colour type {colour})")
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 255
        prev = line
        rgb = line if bpp == 3 else bytes(v for i, v in enumerate(line) if i % 4 != 3)
        rows.append(bytes(rgb))
    return width, height, rows


def write_png(path, width, rows):
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    raw = b"".join(b"\0" + r for r in rows)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, len(rows), 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )


def read_fb(path, width, height, stride, offsets):
    """A raw 32-bit framebuffer dump -> rows of RGB bytes, channels at the given bit offsets."""
    data = path.read_bytes()
    if len(data) < stride * height:
        fail(f"{path.name}: {len(data)} bytes, expected at least {stride * height}")
    r, g, b = (o // 8 for o in offsets)
    rows = []
    for y in range(height):
        line = data[y * stride : y * stride + width * 4]
        out = bytearray(width * 3)
        out[0::3], out[1::3], out[2::3] = line[r::4], line[g::4], line[b::4]
        rows.append(bytes(out))
    return rows


def read_ppm(path):
    """A binary PPM (P6, 8 bits; what qemu's screendump writes) -> (width, height, rows of RGB)."""
    data = path.read_bytes()
    fields, pos = [], 0
    while len(fields) < 4:
        while data[pos : pos + 1].isspace():
            pos += 1
        if data[pos : pos + 1] == b"#":
            pos = data.index(b"\n", pos)
            continue
        end = pos
        while not data[end : end + 1].isspace():
            end += 1
        fields.append(data[pos:end])
        pos = end
    if fields[0] != b"P6" or fields[3] != b"255":
        fail(f"{path.name}: not an 8-bit binary PPM")
    width, height = int(fields[1]), int(fields[2])
    pos += 1
    return width, height, [data[pos + y * width * 3 : pos + (y + 1) * width * 3] for y in range(height)]


def differing(a, b, width, mask):
    """Pixels that differ outside `mask` (x0, y0, x1, y1): (count, first (x, y) or None)."""
    count, first = 0, None
    x0, y0, x1, y1 = mask
    for y, (ra, rb) in enumerate(zip(a, b)):
        if ra == rb:
            continue
        for x in range(width):
            if ra[3 * x : 3 * x + 3] != rb[3 * x : 3 * x + 3] and not (x0 <= x < x1 and y0 <= y < y1):
                count += 1
                first = first or (x, y)
    return count, first


def fps_mask(width, height):
    """The FPS text's area: the right half of the header strip (22 px) of the layout that
    src/display/ui.rs picks for this size, centred like it does."""
    if width < 120 or height < 120:
        fail(f"a {width}x{height} framebuffer gets the monochrome layout, which this check does not cover")
    lw, lh = (320, 240) if width * 4 >= height * 5 and width >= 320 else (240, 240)
    ox, oy = max(width - lw, 0) // 2, max(height - lh, 0) // 2
    return (ox + lw // 2, oy, ox + lw, oy + 22)


# --- checks ------------------------------------------------------------------------------------


def check_camera(results, frames):
    feed = read(results, "feed.log")
    if "loopback verified" not in feed:
        fail(f"vivid loopback not verified: {feed.strip().splitlines()[-1:]}")
    log = read(results, "ferrite.log")
    rc = read(results, "ferrite.rc").strip()
    if rc != "0":
        last = [l for l in log.splitlines() if l.strip()][-1:]
        fail(f"ferrite run exited {rc}: {last}")
    streaming = re.search(r"/dev/video\d+: .* streaming (\S+ \d+x\d+)", log)
    if not streaming:
        fail("ferrite.log has no 'streaming' line for the camera")
    table = re.search(r"^frames (\d+)\s+dropped (\d+)\s+capture errors (\d+).*?elapsed ([\d.]+) s\s+([\d.]+) fps", log, re.M)
    if not table:
        fail("ferrite printed no --stats table")
    done, dropped, errors = int(table[1]), int(table[2]), int(table[3])
    if done != frames:
        fail(f"ferrite processed {done} frames, expected {frames}")
    verified = next(l for l in feed.splitlines() if "loopback verified" in l).split(": ", 1)[1]
    ok("camera", f"{verified}; ferrite streamed {streaming[1]}, "
       f"{done} frames in {table[4]} s ({table[5]} fps), {dropped} dropped, {errors} capture errors")
    return {"frames": done, "elapsed": float(table[4])}


def check_events(results, frames):
    events = [json.loads(l) for l in read(results, "events.jsonl").splitlines() if l.strip()]
    appeared = [e for e in events if e["type"] == "appeared"]
    if not appeared:
        fail(f"no face was reported: no 'appeared' event in {len(events)} JSON lines")
    first = appeared[0]
    if not first.get("label"):
        fail("the 'appeared' event has no label")
    states = [e for e in events if e["type"] == "state"]
    with_face = [e for e in states if e["faces"]]
    # min_hits detection passes pass before a face is reported; every later frame shows it.
    if len(with_face) < frames - 3:
        fail(f"only {len(with_face)} of {len(states)} frames had a reported face")
    labels = {e["label"] for e in events if e["type"] in ("appeared", "expression_changed")}
    ok("events", f"appeared at frame {first['frame']}: track {first['track']} {first['label']} "
       f"({first['confidence']:.3f}), box {[round(v) for v in first['box']]}; "
       f"{len(with_face)}/{len(states)} frames with a face; "
       f"{sum(e['type'] == 'left' for e in events)} left; labels {sorted(labels)}")
    return labels


def gpio_expectations(config, labels):
    """Lines that must go high during the run, lines that must never, and the pulsed line."""
    gpio = config["gpio"]
    must, never = {gpio["face_present"]["line"]: "face_present"}, {}
    for out in gpio.get("outputs", []):
        wanted = set()
        for l in out["labels"]:
            wanted |= NEGATIVE if l == "negative" else {"happy"} if l == "positive" else {l}
        name = f"{'/'.join(out['labels'])}"
        if "any" in out["labels"] or wanted & labels:
            must[out["line"]] = name
        else:
            never[out["line"]] = name
    pulse = gpio.get("change", {}).get("line")
    return must, never, pulse


def debugfs_levels(text):
    """gpio-samples.txt -> {line offset: [levels over time]} (requested lines only)."""
    levels = {}
    base = None
    for line in text.splitlines():
        m = re.match(r"gpiochip\d+: GPIOs (\d+)-\d+", line)
        if m:
            base = int(m[1])
        m = re.match(r"\s*gpio-(\d+)\s+\([^|]*\|[^)]*\)\s+(out|in)\s+(hi|lo)", line)
        if m and base is not None:
            levels.setdefault(int(m[1]) - base, []).append(1 if m[3] == "hi" else 0)
    return levels


def check_gpio(results, config, labels):
    must, never, pulse = gpio_expectations(config, labels)
    sampled = debugfs_levels(read(results, "gpio-samples.txt"))
    traced = {}
    for m in re.finditer(r"pl061_set_output \S+ setting output (\d+) to (\d+)", read(results, "qemu-trace.log")):
        traced.setdefault(int(m[1]), []).append(int(m[2]))
    report = []
    for source, levels in (("debugfs", sampled), ("qemu PL061", traced)):
        for line, name in must.items():
            seq = levels.get(line, [])
            if 1 not in seq:
                fail(f"GPIO line {line} ({name}) never went high ({source}: {seq[:20]})")
            # debugfs lists requested lines only, and ferrite releases the lines right after
            # putting them back into their safe state: the final low is qemu's to see.
            if source != "debugfs" and seq[-1] != 0:
                fail(f"GPIO line {line} ({name}) was not back low at the end ({source})")
        for line, name in never.items():
            if 1 in levels.get(line, []):
                fail(f"GPIO line {line} ({name}) went high but no such label was reported ({source})")
    if pulse is not None:
        seq = traced.get(pulse, [])
        if 1 not in seq or seq[-1] != 0:
            fail(f"GPIO line {pulse} (change) did not pulse (qemu PL061: {seq})")
    def transitions(levels, line):
        seq = levels.get(line, [])
        return "".join("lh"[v] for i, v in enumerate(seq) if i == 0 or v != seq[i - 1])
    for line in sorted(set(must) | set(never) | ({pulse} if pulse is not None else set())):
        name = must.get(line) or never.get(line) or "change"
        report.append(f"{line} {name}: {transitions(sampled, line) or '-'} / {transitions(traced, line) or '-'}")
    ok("gpio", "levels debugfs / qemu (l=low h=high): " + "; ".join(report))


def check_display(results):
    info = dict(l.split("=", 1) for l in read(results, "fbinfo").splitlines() if "=" in l)
    width, height = (int(v) for v in info["virtual_size"].split(","))
    stride, bpp = int(info["stride"]), int(info["bits_per_pixel"])
    log = read(results, "ferrite.log")
    m = re.search(r"/dev/fb\d+: (\d+)x(\d+) Rgb32 \{ red: (\d+), green: (\d+), blue: (\d+) \}", log)
    if bpp != 32 or not m:
        fail(f"framebuffer {info.get('name')} {width}x{height} {bpp} bpp: ferrite did not report "
             f"opening it as 32-bit RGB (ferrite.log)")
    if (int(m[1]), int(m[2])) != (width, height):
        fail(f"ferrite drew {m[1]}x{m[2]} on a {width}x{height} framebuffer")
    offsets = (int(m[3]), int(m[4]), int(m[5]))
    mask = fps_mask(width, height)
    pictures = {}
    for name, ref in (("fb-face", "ref-face"), ("fb-end", "ref-noface")):
        if not (results / f"{name}.raw").exists():
            fail(f"no framebuffer snapshot {name}.raw (was a face ever shown?)")
        fb = read_fb(results / f"{name}.raw", width, height, stride, offsets)
        write_png(results / f"{name}.png", width, fb)
        rw, rh, expected = read_png(results / f"{ref}.png")
        if (rw, rh) != (width, height):
            fail(f"{ref}.png is {rw}x{rh}, the framebuffer {width}x{height}")
        count, first = differing(fb, expected, width, mask)
        if count:
            fail(f"{name}: {count} pixels differ from {ref}.png outside the FPS text, first at {first} "
                 f"(see {results}/{name}.png)")
        pictures[name] = (fb, expected)
    count, _ = differing(pictures["fb-face"][1], pictures["fb-end"][1], width, mask)
    if count < 1000:
        fail(f"the face and no-face references differ in only {count} pixels: the comparison means nothing")
    # What the emulated display showed, taken by qemu from outside the guest at the same moments.
    for name in ("face", "end"):
        path = results / f"screendump-{name}.ppm"
        if not path.exists():
            fail(f"no qemu screendump of the {name} picture (console.log, monitor)")
        sw, sh, screen = read_ppm(path)
        if (sw, sh) != (width, height):
            fail(f"{path.name} is {sw}x{sh}, the framebuffer {width}x{height}")
        diff, first = differing(screen, pictures[f"fb-{name}"][0], width, mask)
        if diff:
            fail(f"the emulated display differs from /dev/fb0 ({name}) in {diff} pixels, first at {first}")
    # The live run draws its frame rate; `ferrite classify` does not. Under one frame per second
    # the UI shows none (a one-second window), so its absence is reported, not failed.
    x0, y0, x1, y1 = mask
    fps_pixels = sum(
        pictures["fb-face"][0][y][3 * x : 3 * x + 3] == bytes(TEXT) for y in range(y0, y1) for x in range(x0, x1)
    )
    ok("display", f"{info['name']} {width}x{height} XRGB (red/green/blue at bits {offsets}), "
       f"stride {stride}: while the face was shown and after the run, /dev/fb0 and qemu's "
       f"screendump equal the PNG references outside the FPS text ({x1 - x0}x{y1 - y0} px at {x0},{y0}: "
       f"{'FPS text drawn' if fps_pixels else 'no FPS text: the UI shows it only with two frames within a second'}); "
       f"the two references differ in {count} px")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("results", type=Path)
    parser.add_argument("--frames", type=int, required=True)
    parser.add_argument("--config", type=Path, required=True)
    args = parser.parse_args()
    config = tomllib.loads(args.config.read_text())
    check_camera(args.results, args.frames)
    labels = check_events(args.results, args.frames)
    check_gpio(args.results, config, labels)
    check_display(args.results)


if __name__ == "__main__":
    main()
