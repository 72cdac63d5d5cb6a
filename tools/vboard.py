# pingjia.tools.vboard: start a virtual keypad board (real MicroPython on Node) on a pseudo-terminal; inject keys, read LEDs.
#
#   with VirtualBoard(flash_dir) as vb:
#       subprocess.run(["mpremote", "connect", vb.port, "fs", "cp", "main.py", ":main.py"])
#       vb.press(5); vb.wait_for(lambda s: s["leds"] & 0x10)
#
#   python -m pingjia.tools.vboard --flash DIR      one board; prints its port, runs until Ctrl-C
#
# The board's console is the slave side of a pty this object opens (`.port`,
# e.g. /dev/pts/7): open it with pyserial or mpremote like /dev/ttyACM0. The
# master side is Node's stdin/stdout (firmware/virtual/vboard.mjs). The pty lives
# as long as this object, so the port survives power_cut() + start(), like a
# board that re-enumerates under the same /dev/serial/by-id name.
# Keys, LEDs and the buzzer go through the side channel: JSON lines on a Unix
# socket (protocol documented at the top of vboard.mjs).
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import termios
import threading
import time
import tty
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VBOARD_MJS = ROOT / "firmware" / "virtual" / "vboard.mjs"

# Key numbers: 1..5 are the star keys (bit 0..4 of the board's keys()), 6.. reason keys.
STAR_KEYS = (1, 2, 3, 4, 5)


class VirtualBoardError(Exception):
    """The virtual board could not start or its side channel failed; str() says why."""


class VirtualBoard:
    """One virtual board: a Node process running MicroPython, its console on a pty."""

    def __init__(self, flash_dir, uid=None, heap=512 * 1024, node=None, start_timeout=30.0):
        self.flash_dir = Path(flash_dir).resolve()
        self.uid = uid
        self.heap = heap
        self.node = node or shutil.which("node")
        self.start_timeout = start_timeout
        self._tmp = None
        self._master = self._slave = None
        self.port = None
        self.proc = None
        self._sock = None
        self._rfile = None
        self._lock = threading.Lock()  # one request/reply at a time on the side channel

    # -- lifecycle -------------------------------------------------------------------------
    def start(self):
        """Power on: spawn Node on the pty (opened on first start) and wait for its side channel."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        if not self.node:
            raise VirtualBoardError("node is required for the virtual board (install Node 20)")
        if self._master is None:
            self._master, self._slave = os.openpty()
            tty.setraw(self._slave)  # a USB CDC port: no echo, no line editing, binary-safe
            self.port = os.ttyname(self._slave)
            self._tmp = tempfile.mkdtemp(prefix="vboard-")
        self.flash_dir.mkdir(parents=True, exist_ok=True)
        # What the host sent while the board was off never reached it.
        termios.tcflush(self._master, termios.TCIFLUSH)
        ctl = os.path.join(self._tmp, "ctl.sock")
        if os.path.exists(ctl):
            os.unlink(ctl)
        cmd = [self.node, str(VBOARD_MJS), "--flash", str(self.flash_dir), "--ctl", ctl, "--heap", str(self.heap)]
        if self.uid:
            cmd += ["--uid", self.uid]
        self._log = open(os.path.join(self._tmp, "node.log"), "ab")
        self.proc = subprocess.Popen(cmd, stdin=self._master, stdout=self._master, stderr=self._log, cwd=ROOT,
                                     start_new_session=True)
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self.proc.poll() is not None:
                raise VirtualBoardError("vboard exited with %s: %s" % (self.proc.returncode, self.log_text()[-2000:]))
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(ctl)
                break
            except OSError:
                s.close()
                if time.monotonic() > deadline:
                    self.power_cut()
                    raise VirtualBoardError("vboard did not open its side channel within %.0fs" % self.start_timeout)
                time.sleep(0.02)
        s.settimeout(10)
        self._sock, self._rfile = s, s.makefile("rb")
        return self

    def power_cut(self):
        """Cut the power: kill -9 Node. The flash directory keeps what was written; the pty stays."""
        if self._sock is not None:
            self._rfile.close()
            self._sock.close()
            self._sock = self._rfile = None
        if self.proc is not None:
            if self.proc.poll() is None:
                os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self._log.close()
            self.proc = None

    def restart(self):
        """Power cut followed by power on."""
        self.power_cut()
        return self.start()

    def stop(self):
        """Power off and release the pty."""
        self.power_cut()
        for fd in (self._master, self._slave):
            if fd is not None:
                os.close(fd)
        self._master = self._slave = None
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def log_text(self):
        """Node's stderr (harness messages, JS crashes)."""
        try:
            return Path(self._tmp, "node.log").read_text(errors="replace")
        except (OSError, TypeError):
            return ""

    # -- side channel ----------------------------------------------------------------------
    def _call(self, **req):
        if self._sock is None:
            raise VirtualBoardError("the virtual board is not running")
        try:
            with self._lock:
                self._sock.sendall((json.dumps(req) + "\n").encode())
                line = self._rfile.readline()
        except OSError as e:
            raise VirtualBoardError("side channel failed: %s" % e) from None
        if not line:
            raise VirtualBoardError("side channel closed (board process died?): %s" % self.log_text()[-500:])
        reply = json.loads(line)
        if not reply.pop("ok"):
            raise VirtualBoardError(reply.get("error", "side channel error"))
        return reply

    def state(self):
        """{'mode': 'boot'|'app'|'repl'|'raw', 'leds': mask, 'beep': {...}, 'keys', 'boots', 'cause', 'led_log', ...}."""
        return self._call(op="state")

    def press(self, key):
        """Hold key `key` down (1..5 = stars, 6.. = reason keys)."""
        self._call(op="press", key=key)

    def release(self, key):
        self._call(op="release", key=key)

    def tap(self, key, ms=80):
        """Press, and release after `ms` milliseconds once the app has read keys() twice (timed by the harness)."""
        self._call(op="tap", key=key, ms=ms)

    def set_keys(self, mask):
        """Set the whole raw key bitmask."""
        self._call(op="keys", mask=mask)

    def reset(self, cause="hard"):
        """Reset like the reset button (cause 'hard'), or 'soft', 'wdt', 'power' (keeps the process)."""
        self._call(op="reset", cause=cause)

    def wait_for(self, pred, timeout=20.0, what="condition"):
        """Poll state() until pred(state) is true; returns that state or raises TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            s = self.state()
            if pred(s):
                return s
            if time.monotonic() > deadline:
                raise TimeoutError("virtual board: %s not reached within %.0fs (last state %r)" % (what, timeout, s))
            time.sleep(0.02)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="vboard", description="Run one virtual keypad board on a pseudo-terminal.")
    ap.add_argument("--flash", required=True, help="host directory holding the board's flash")
    ap.add_argument("--uid", help="unique_id as hex (default: derived from the flash path)")
    args = ap.parse_args(argv)
    vb = VirtualBoard(args.flash, uid=args.uid)
    vb.start()
    print("port: %s" % vb.port, flush=True)
    print("flash: %s" % vb.flash_dir, flush=True)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    try:
        while not stop and vb.proc.poll() is None:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        vb.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
