#!/usr/bin/env python3
"""Sends one command to a QEMU human monitor on a unix socket and waits for it to finish.

  monitor.py SOCKET COMMAND...     e.g. monitor.py monitor.sock screendump /tmp/screen.ppm

cross/emulated-board.sh uses it for `screendump`: what the emulated display (virtio-gpu's
scanout) shows, taken from outside the guest.
"""

import socket
import sys

PROMPT = b"(qemu) "


def until_prompt(sock):
    data = b""
    while not data.endswith(PROMPT):
        chunk = sock.recv(4096)
        if not chunk:
            sys.exit("monitor closed the connection")
        data += chunk
    return data


with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
    sock.settimeout(30)
    sock.connect(sys.argv[1])
    until_prompt(sock)  # the banner
    sock.sendall(" ".join(sys.argv[2:]).encode() + b"\n")
    reply = until_prompt(sock).decode(errors="replace")
    # The monitor echoes the command; anything else before the prompt is an error message.
    lines = [l for l in reply.replace("\r", "").split("\n")[1:] if l and not l.startswith("(qemu)")]
    if lines:
        sys.exit("monitor: " + " ".join(lines))
