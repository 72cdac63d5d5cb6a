"""End-to-end rig: a virtual board flashed by `pingjia.tools.flash` and the bridge run as `pingjia run` on its port.

Everything is real: MicroPython (WebAssembly) on a pty, the flashing tool over the raw REPL, the bridge process
with its SQLite file and HTTP case API. The bridge reads the board through a by-id style symlink, so the board can
be unplugged (pty closed) and come back on a new pty under the same name, as a USB keypad does.
"""
import json
import os
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import pytest

from pingjia.bridge import devices
from pingjia.bridge.store import Store
from pingjia.tools import flash as fl
from pingjia.tools.vboard import VirtualBoard

PINGJIA = str(Path(sys.executable).parent / "pingjia")
DEVICE = "KP-0001"
WINDOW = "W01"
HEARTBEAT_S = 5  # the firmware's minimum: the bridge hears a freshly started keypad within 5 s
GREEN, RED, BLUE, STARS = 0x20, 0x40, 0x80, 0x1F


def until(pred, timeout=30.0, what="condition", step=0.05):
    """Poll `pred` until it returns something truthy (returned); fail after `timeout` seconds."""
    end = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > end:
            raise AssertionError("timed out after %.0fs waiting for %s" % (timeout, what))
        time.sleep(step)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the keypad's journal on the board's flash (docs/FIRMWARE.md "Journal"), read independently of journal.py --

EVENT, ACKREC, MARK = 1, 2, 3  # record kinds


def journal_records(flash_dir):
    """[(kind, body)] of the good records in pj_journal.bin (torn/damaged stretches skipped)."""
    try:
        data = (Path(flash_dir) / "pj_journal.bin").read_bytes()
    except FileNotFoundError:
        return []
    out, pos = [], 0
    while pos + 8 <= len(data):
        if data[pos] != 0xA5:
            pos += 1
            continue
        kind, ln = struct.unpack_from("<BH", data, pos + 1)
        end = pos + 4 + ln
        if end + 4 <= len(data) and zlib.crc32(data[pos + 1:end]) == struct.unpack_from("<I", data, end)[0]:
            out.append((kind, data[pos + 4:end]))
            pos = end + 4
        else:
            pos += 1
    return out


def journal_pending(flash_dir):
    """{seq: {"type", "stars", "nth", "dt_ms", "token"}} of journaled events no ACK record covers."""
    from pingjia.protocol import messages as m

    names = {getattr(m, n): n for n in ("RATING", "REASON", "UNSOLICITED")}
    events, acked, upto = {}, set(), 0
    for kind, body in journal_records(flash_dir):
        if kind == EVENT:
            seq, _boot, _t, mtype, stars, nth, dt, _ref = struct.unpack_from("<IIIBBBII", body, 0)
            tl = body[23]
            events[seq] = {"type": names.get(mtype, mtype), "stars": stars, "nth": nth, "dt_ms": dt,
                           "token": body[24:24 + tl].decode()}
        elif kind == ACKREC:
            _boot, _t, u, n = struct.unpack_from("<IIIB", body, 0)
            upto = max(upto, u)
            acked.update(struct.unpack_from("<%dI" % n, body, 13))
    return {s: e for s, e in events.items() if s > upto and s not in acked}


# -- the bridge process ------------------------------------------------------------------------

class Bridge:
    """`pingjia run --config <toml>` as systemd would run it; stderr (logfmt) collected in a file per run."""

    def __init__(self, tmp_path, port_path):
        self.dir = tmp_path
        self.db = tmp_path / "bridge.db"
        self.http = _free_port()
        self.url = "http://127.0.0.1:%d" % self.http
        self.cfg = tmp_path / "bridge.toml"
        self.cfg.write_text(
            '[bridge]\ndb = "%s"\nhall = "e2e"\nhttp_listen = "127.0.0.1:%d"\nwatchdog = false\n'
            '[serial]\nports = ["%s"]\nrescan_s = 0.2\n[mqtt]\nenabled = false\n'
            '[cases]\nprompt_timeout_s = 120\n' % (self.db, self.http, port_path))
        self.proc = None
        self.runs = []  # stderr files, one per start

    def start(self):
        log = self.dir / ("bridge-%d.log" % (len(self.runs) + 1))
        self.runs.append(log)
        self._err = open(log, "wb")
        self.proc = subprocess.Popen([PINGJIA, "run", "--config", str(self.cfg)], stdout=subprocess.DEVNULL,
                                     stderr=self._err, start_new_session=True,
                                     env={**os.environ, "PYTHONFAULTHANDLER": "1"})

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError("bridge exited with %s:\n%s" % (self.proc.returncode, self.log()[-3000:]))
            try:
                return self.get("/api/status")
            except (urllib.error.URLError, ConnectionError):
                return None

        until(ready, 30, "the bridge's HTTP API")
        return self

    def stop(self):
        """SIGTERM: the bridge flushes, ACKs what it committed, closes the port; exit 0."""
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(30)
        self._err.close()
        assert rc == 0, self.log()[-3000:]
        assert "flushed=True" in self.log()

    def kill(self):
        """kill -9: no flush, no goodbye."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self._err.close()

    def pause(self):
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)

    def log(self, run=-1):
        return self.runs[run].read_text(errors="replace") if self.runs else ""

    def problems(self, run=-1):
        """WARNING/ERROR lines and tracebacks of one run."""
        return [ln for ln in self.log(run).splitlines()
                if "level=WARNING" in ln or "level=ERROR" in ln or "level=CRITICAL" in ln or "Traceback" in ln]

    # HTTP
    def get(self, path):
        with urllib.request.urlopen(self.url + path, timeout=10) as r:
            return json.loads(r.read())

    def post(self, path, body=None):
        req = urllib.request.Request(self.url + path, data=json.dumps(body or {}).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def keypad(self):
        return next(k for k in self.get("/api/status")["keypads"] if k["device_id"] == DEVICE)

    def case(self, project_no):
        return self.get("/api/cases/" + project_no)

    def events(self):
        """(seq, kind, stars, nth, token) of every stored event of the keypad (read-only, WAL)."""
        conn = sqlite3.connect("file:%s?mode=ro" % self.db, uri=True, timeout=10)
        try:
            return conn.execute("SELECT seq, kind, stars, nth, token FROM events WHERE device_id = ? ORDER BY seq",
                                (DEVICE,)).fetchall()
        finally:
            conn.close()


class Rig:
    """One keypad (virtual board) at window W01 and the bridge on its port."""

    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.flash_dir = tmp_path / "flash"
        self.link = tmp_path / "by-id" / "usb-pingjia_vboard_KP-0001-if00"  # what the bridge opens
        self.link.parent.mkdir()
        self.vb = None
        self.bridge = Bridge(tmp_path, self.link)

    def power_on(self):
        """A board on a fresh pty (a new VirtualBoard on the same flash), plugged in under the same name."""
        self.vb = VirtualBoard(self.flash_dir).start()
        tmp = self.link.with_suffix(".new")
        os.symlink(self.vb.port, tmp)
        os.replace(tmp, self.link)
        return self.vb

    def unplug(self):
        """Pull the USB cable: the board loses power and its pty is closed under the bridge's open port."""
        self.vb.stop()
        self.vb = None

    def flash(self, image):
        store = Store(str(self.bridge.db))
        store.migrate()
        conn = store.connect()
        devices.add_window(conn, WINDOW, "综合受理窗口", dept_name="政务服务中心")
        conn.close()
        res = fl.flash_board(self.vb.port, str(self.bridge.db), image, DEVICE, WINDOW,
                             settings={"heartbeat_s": HEARTBEAT_S})
        assert res.ok, res.reason
        return res

    def close(self):
        if self.bridge.proc is not None and self.bridge.proc.poll() is None:
            self.bridge.resume()
            self.bridge.kill()
        if self.vb is not None:
            self.vb.stop()

    # the keypad as the citizen sees it
    def wait_prompted(self, since_ms=0):
        """The running light: at least two different single star LEDs lit (since `since_ms` of the board's uptime)."""
        def running(s):
            return len({m & STARS for t, m in s["led_log"] if t >= since_ms and m & STARS in (1, 2, 4, 8, 16)}) >= 2

        return self.vb.wait_for(running, 20, "the prompt's running light")

    def press(self, stars):
        """Tap a star key and wait for its 'thank you' (the chosen stars + green) and the key to be up again."""
        self.vb.tap(stars)
        want = (1 << stars) - 1 | GREEN
        self.vb.wait_for(lambda s: s["leds"] & (STARS | GREEN | RED) == want and not s["keys"], 10,
                         "thank-you LEDs for %d stars" % stars)

    def trimmed(self, timeout=30):
        """Every journaled event ACKed (on the board's flash); returns the journal records."""
        until(lambda: not journal_pending(self.flash_dir), timeout, "the keypad's journal trimmed")
        return journal_records(self.flash_dir)

    def status_after(self, t, timeout=20):
        """The keypad's row in /api/status once a STATUS sent after `t` is in (a QUERY asks for one now)."""
        self.bridge.post("/api/devices/%s/query" % DEVICE)

        def fresh():
            k = self.bridge.keypad()
            return k if k["last_seen"] and k["last_seen"] > t and k["journal_depth"] == 0 else None

        return until(fresh, timeout, "a STATUS after the trim with journal_depth 0")


@pytest.fixture(scope="session")
def image():
    """The real keypad firmware, compiled by the flashing tool (mpy-cross)."""
    return fl.build_image()


@pytest.fixture
def rig(tmp_path, image):
    r = Rig(tmp_path)
    try:
        r.power_on()
        r.flash(image)
        yield r
    finally:
        r.close()
