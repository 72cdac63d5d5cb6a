"""Helpers for the virtual board tests: mpremote CLI, staging hashes, flashing, a frame-reading console."""
import hashlib
import subprocess
import sys
import time
from pathlib import Path

import pytest
import serial

from pingjia.protocol import framing, messages

ROOT = Path(__file__).resolve().parents[2]
KEY = b"k" * 32  # the test app's device key (board_app.KEY)


def mpremote(port, *args, timeout=120):
    """Run the real mpremote CLI against `port`; returns stdout, fails the test on a non-zero exit."""
    p = subprocess.run([sys.executable, "-m", "mpremote", "connect", port, *args],
                       capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        pytest.fail("mpremote %s failed (%d):\n%s\n%s" % (" ".join(args), p.returncode, p.stdout[-2000:], p.stderr[-2000:]))
    return p.stdout


def staged_files(stage):
    """{board path: sha256 hex} of every staged file."""
    return {"/" + p.relative_to(stage).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(stage.rglob("*")) if p.is_file()}


def flash(board, stage):
    """Copy the staged tree to the board with mpremote (recursive cp), as the flashing tool does."""
    mpremote(board.port, "fs", "cp", "-r", str(stage / "lib"), str(stage / "main.py"), ":")


class Console:
    """The board's serial port seen by a host: frames decoded with the host's protocol code, text kept."""

    def __init__(self, port, key=KEY):
        self.key = key  # frames are decoded (and their MAC checked) with this device key
        self.ser = serial.Serial(port, 115200, timeout=0.05)
        self.dec = framing.Decoder()
        self.frames = []   # decoded Messages, in arrival order
        self.lines = []    # text lines outside frames
        self.raw = bytearray()  # every byte received (for prompts without a newline)

    def pump(self):
        data = self.ser.read(4096)
        if not data:
            return
        self.raw += data
        for kind, item in self.dec.feed(data):
            if kind == framing.FRAME:
                self.frames.append(messages.decode(bytes(item), self.key))
            elif kind == framing.TEXT:
                self.lines.append(bytes(item).decode(errors="replace"))

    def wait(self, pred, timeout=30.0, what="condition"):
        deadline = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > deadline:
                raise AssertionError("console: %s not seen within %.0fs; text %r" % (what, timeout, bytes(self.raw[-600:])))
            self.pump()

    def wait_frame(self, pred, timeout=30.0, what="frame"):
        seen = []

        def found():
            seen[:] = [m for m in self.frames if pred(m)]
            return bool(seen)

        self.wait(found, timeout, what)
        return seen[0]

    def write(self, data):
        self.ser.write(data)

    def close(self):
        self.ser.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
