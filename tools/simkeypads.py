# pingjia.tools.simkeypads: many simulated keypads (the real firmware core, App) in one CPython process, over MQTT or ptys.
#
#   from pingjia.tools.simkeypads import Fleet
#   with Fleet(100, transport="mqtt", host="127.0.0.1", port=1883, hall="h1", root=tmp) as f:
#       f.keys            # {device_id: 32-byte key}: register these with the bridge
#       f.press("SIM-0001", 5)
#       f.drive(rate=50, mix={5: 70, 4: 20, 3: 5, 2: 3, 1: 2}, seconds=10)
#       f.stats()
# Serial keypads each get a pseudo-terminal (f.ports[device_id] is the path the
# bridge opens, like /dev/ttyACM0). Each keypad has its own folder under
# `root` (journal, seq/boot state), so a Fleet re-created on the same root
# continues each keypad's boot and seq like a power cycle. One thread steps
# every keypad every `period_ms`; press() is thread-safe.
import argparse
import collections
import hashlib
import json
import os
import random
import sys
import tempfile
import threading
import time

from ..firmware import config, run
from ..firmware.boards.host import HostBoard

PRESS_MS = 120  # how long a simulated finger holds a key
GAP_MS = 80  # and waits between two presses on one keypad (so no chord, no bounce)


def derive_key(seed, device_id):
    """Deterministic 32-byte key for a simulated keypad (same seed + id -> same key)."""
    return hashlib.sha256(("%s/%s" % (seed, device_id)).encode()).digest()


class Keypad:
    """One simulated keypad: HostBoard + App."""

    def __init__(self, device_id, key, root, transport="mqtt", host="127.0.0.1", port=1883, hall="h1",
                 window="", password="", heartbeat_s=30, journal_cap=500, reason_keys=0, clock=None):
        self.device_id = device_id
        self.key = key
        cfg = {"device_id": device_id, "key": key.hex(), "transport": transport, "hall": hall, "window": window,
               "heartbeat_s": heartbeat_s, "journal_cap": journal_cap}
        if transport == "mqtt":
            cfg["broker"] = {"host": host, "port": port, "user": device_id, "password": password}
        self.cfg, err = config.validate(cfg)
        if err:
            raise ValueError("keypad %s: %s" % (device_id, err[1]))
        self.board = HostBoard(os.path.join(root, device_id), clock=clock,
                               serial="pty" if transport == "serial" else None, reason_keys=reason_keys)
        self.app = run.build(self.board, self.cfg, None, self.board.now_ms())
        self.release_at = None
        self.ready_at = 0
        self.todo = collections.deque()  # keys waiting to be pressed
        self.stopped = False  # got Ctrl-C (0x03 outside a frame): sits "at the REPL"

    @property
    def port(self):
        return self.board.port

    def step(self, now):
        if self.release_at is not None and now >= self.release_at:
            self.board.release()
            self.release_at = None
            self.ready_at = now + GAP_MS
        if self.todo and self.release_at is None and now >= self.ready_at:
            k = self.todo.popleft()
            self.board.raw |= 1 << (k - 1)  # 1..5 stars, 6.. reason keys
            self.release_at = now + PRESS_MS
        if self.stopped:
            return
        try:
            self.app.step(now)
        except KeyboardInterrupt:
            self.stopped = True
            self.app.stop()

    def close(self):
        self.app.stop()
        self.board.close()

    def crash(self):
        """Power cut: the link drops without a goodbye (MQTT last will fires), files stay as they are."""
        link = self.app.link
        c = getattr(link, "_c", None)
        if c is not None and hasattr(c, "c"):
            c.c.socket().close()  # paho: no DISCONNECT packet
        if self.app.journal is not None:
            self.app.journal.close()
        self.board.close()


class Fleet:
    """N keypads stepped by one thread. See the module comment."""

    def __init__(self, n, transport="mqtt", host="127.0.0.1", port=1883, hall="h1", root=None, prefix="SIM-",
                 keys=None, seed="pingjia-sim", password=None, period_ms=10, heartbeat_s=30, journal_cap=500,
                 reason_keys=0, start=True):
        self.root = root or tempfile.mkdtemp(prefix="pj-sim-")
        self.period_ms = period_ms
        ids = list(keys) if keys else ["%s%04d" % (prefix, i + 1) for i in range(n)]
        self.keys = dict(keys) if keys else {d: derive_key(seed, d) for d in ids}
        self.pads = {}
        for d in ids:
            pw = password(d) if callable(password) else (password or "")
            self.pads[d] = Keypad(d, self.keys[d], self.root, transport, host, port, hall, password=pw,
                                  heartbeat_s=heartbeat_s, journal_cap=journal_cap, reason_keys=reason_keys)
        self._q = collections.deque()
        self._stop = threading.Event()
        self._thread = None
        self.steps = 0
        self.lock = threading.RLock()  # held while stepping: tests may read App state under it
        if start:
            self.start()

    # -- life cycle
    def start(self):
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="simkeypads", daemon=True)
            self._thread.start()
        return self

    def _loop(self):
        period = self.period_ms / 1000.0
        while not self._stop.is_set():
            t0 = time.monotonic()
            now = int(t0 * 1000)
            with self.lock:
                while self._q:
                    dev, stars = self._q.popleft()
                    self.pads[dev].todo.append(stars)
                for pad in self.pads.values():
                    pad.step(now)
                self.steps += 1
            left = period - (time.monotonic() - t0)
            if left > 0:
                time.sleep(left)

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        for pad in self.pads.values():
            pad.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    # -- driving
    @property
    def devices(self):
        return list(self.pads)

    @property
    def ports(self):
        return {d: p.port for d, p in self.pads.items()}

    def press(self, device, stars):
        """Press star key `stars` (1..5; 6.. are reason keys) on `device`: held PRESS_MS,
        released, and GAP_MS before that keypad's next queued press."""
        self._q.append((device, stars))

    def drive(self, rate, mix=None, seconds=10.0, rnd=None):
        """Press keys at `rate` presses/s in total, on random keypads, stars drawn from
        `mix` {stars: weight} (default mostly 5). Returns the number of presses."""
        rnd = rnd or random.Random(1)
        mix = mix or {5: 70, 4: 20, 3: 5, 2: 3, 1: 2}
        stars, weights = list(mix), list(mix.values())
        ids = self.devices
        n = 0
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            due = int((time.monotonic() - t0) * rate)
            while n < due:
                self.press(rnd.choice(ids), rnd.choices(stars, weights)[0])
                n += 1
            time.sleep(0.005)
        return n

    def wait(self, pred, timeout=30.0):
        """Wait until pred(fleet) is true (evaluated under the stepping lock)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                if pred(self):
                    return True
            time.sleep(0.01)
        return False

    def stats(self):
        with self.lock:
            apps = [p.app for p in self.pads.values()]
            return {
                "keypads": len(apps),
                "online": sum(1 for a in apps if a.online),
                "journal_depth": sum(a.journal.depth() for a in apps),
                "journal_full": sum(1 for a in apps if a.journal.full),
                "messages_sent": sum(a.sent for a in apps),
                "errors": sum(a.errors for a in apps),
                "steps": self.steps,
            }

    def provision(self):
        """[{device_id, key (hex), port}] for registering the fleet with a bridge."""
        return [{"device_id": d, "key": self.keys[d].hex(), "port": p.port} for d, p in self.pads.items()]


def _mix(text):
    out = {}
    for part in text.split(","):
        s, _, w = part.partition(":")
        out[int(s)] = float(w or 1)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(prog="simkeypads", description="Simulated keypads (the real firmware core) over MQTT or ptys.")
    ap.add_argument("-n", type=int, default=10, help="number of keypads")
    ap.add_argument("--transport", choices=("mqtt", "serial"), default="mqtt")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=1883)
    ap.add_argument("--hall", default="h1")
    ap.add_argument("--prefix", default="SIM-")
    ap.add_argument("--seed", default="pingjia-sim", help="keys are derived from seed + device id")
    ap.add_argument("--root", help="folder for the keypads' journals (default: a new temp folder)")
    ap.add_argument("--rate", type=float, default=5.0, help="presses per second, whole fleet")
    ap.add_argument("--mix", default="5:70,4:20,3:5,2:3,1:2", help="stars:weight,...")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--keys-out", help="write [{device_id, key, port}] JSON here for bridge registration")
    a = ap.parse_args(argv)
    with Fleet(a.n, a.transport, a.host, a.port, a.hall, a.root, a.prefix, seed=a.seed) as f:
        if a.keys_out:
            with open(a.keys_out, "w") as fh:
                json.dump(f.provision(), fh, indent=1)
        n = f.drive(a.rate, _mix(a.mix), a.seconds)
        time.sleep(1.0)
        st = f.stats()
        st["presses"] = n
        print(json.dumps(st))
    return 0


if __name__ == "__main__":
    sys.exit(main())
