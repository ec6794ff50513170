#!/usr/bin/env python3
"""What the web view costs the pipeline: the CPU time (user + system, all threads, from wait4) of
`ferrite run` paced at 10 fps over a looping recording, without the web view and with it for each
given config, one /stream.mjpg and one /events client connected. Cases alternate run by run;
medians are printed. Pause other work on the machine first.

    scripts/web-cost.py BINARY FRAMES_DIR [--frames 200] [--reps 5] [CONFIG.toml ...]

A CONFIG is a ferrite config file with a [web] section (e.g. `[web]\\nstream_fps = 5.0`); with
none, the defaults are measured. docs/web.md ("Cost") has the numbers and the recording used.
"""
import argparse
import os
import re
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request


def drain(url):
    try:
        with urllib.request.urlopen(url, timeout=120) as r:
            while r.read(65536):
                pass
    except OSError:
        pass


def run(binary, frames_dir, frames, config, web):
    args = [binary, "run", "--input", frames_dir, "--fps", "10", "--loop", "--no-json",
            "--max-frames", str(frames)]
    if web:
        args += ["--web", "127.0.0.1:0"] + (["--config", config] if config else [])
    with tempfile.NamedTemporaryFile("w+", suffix=".log") as log:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log)
        if web:
            url, deadline = None, time.time() + 60
            while url is None:
                if time.time() > deadline or proc.poll() is not None:
                    raise SystemExit(f"no web view announced: {open(log.name).read()}")
                m = re.search(r"live view at (\S+)", open(log.name).read())
                url = m.group(1) if m else None
                time.sleep(0.05)
            for path in ("stream.mjpg", "events"):
                threading.Thread(target=drain, args=(url + path,), daemon=True).start()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = 0
        if status != 0:
            raise SystemExit(f"ferrite failed: {open(log.name).read()}")
    return usage.ru_utime + usage.ru_stime


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("binary")
    p.add_argument("frames_dir")
    p.add_argument("configs", nargs="*")
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--reps", type=int, default=5)
    a = p.parse_args()
    cases = [("no web view", None, False)] + [
        (f"web {c}", c, True) for c in (a.configs or [None])
    ]
    if not a.configs:
        cases[1] = ("web defaults", None, True)
    times = {name: [] for name, _, _ in cases}
    for rep in range(a.reps):
        for name, config, web in cases:
            times[name].append(run(a.binary, a.frames_dir, a.frames, config, web))
            print(f"rep {rep + 1}/{a.reps} {name}: {times[name][-1]:.2f} s CPU", flush=True)
    base = statistics.median(times["no web view"])
    for name, values in times.items():
        m = statistics.median(values)
        print(f"{name:28s} median {m:.2f} s CPU per {a.frames} frames "
              f"({m / a.frames * 1000:.1f} ms a frame), {m / base:.3f}x")


if __name__ == "__main__":
    main()
