"""Bridge core fixtures: a real SQLite file, a hub with a recording Link, a keypad that signs real messages."""
import threading
import time

import pytest

from pingjia.bridge import cases, devices, migrations
from pingjia.bridge.hub import Hub
from pingjia.bridge.store import Store
from pingjia.protocol import messages as m

T0 = 1795305600.0  # 2026-11-22 00:00 UTC: tests drive the bridge clock
ROOT_DIR = __import__("pathlib").Path(__file__).resolve().parents[2]


class Link:
    """What a transport is to the hub: records every message sent, decoded with the keypads' keys."""

    def __init__(self, name="test"):
        self.name = name
        self.sent = []  # (device_id, raw)
        self.cv = threading.Condition()

    def send(self, device_id, raw):
        with self.cv:
            self.sent.append((device_id, raw))
            self.cv.notify_all()

    def decoded(self, keypad, mtype=None):
        out = [m.decode(raw, keypad.key) for d, raw in list(self.sent) if d == keypad.device_id]
        return [x for x in out if mtype is None or x.type == mtype]

    def acked(self, keypad):
        return [s for a in self.decoded(keypad, m.ACK) for s in a.seqs]

    def wait(self, pred, timeout=10):
        end = time.monotonic() + timeout
        with self.cv:
            while not pred():
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError("condition not met in %ss" % timeout)
                self.cv.wait(left)


class Keypad:
    """Builds the signed messages a real keypad sends (same protocol module)."""

    def __init__(self, device_id, key, boot=1):
        self.device_id, self.key, self.boot, self.seq = device_id, key, boot, 0

    def event(self, mtype, seq=None, **fields):
        if seq is None:
            self.seq += 1
            seq = self.seq
        return m.encode(m.Message(mtype, self.device_id, self.boot, seq, **fields), self.key)

    def rating(self, stars, token, nth=1, dt_ms=0, age_ms=50, seq=None):
        return self.event(m.RATING, seq, stars=stars, token=token, nth=nth, dt_ms=dt_ms, age_ms=age_ms)

    def reason(self, ref_seq, codes, age_ms=20, seq=None):
        return self.event(m.REASON, seq, ref_seq=ref_seq, codes=tuple(codes), age_ms=age_ms)

    def unsolicited(self, stars, age_ms=10, seq=None):
        return self.event(m.UNSOLICITED, seq, stars=stars, age_ms=age_ms)

    def hello(self, fw="1.0.0", board="host"):
        return m.encode(m.Message(m.HELLO, self.device_id, self.boot, 0, fw=fw, board=board, caps=1), self.key)

    def status(self, uptime_s, depth=0, flags=0, last_error=""):
        return m.encode(m.Message(m.STATUS, self.device_id, self.boot, 0, uptime_s=uptime_s, journal_depth=depth,
                                  journal_cap=2000, free_heap=70000, rssi=127, flags=flags, last_error=last_error), self.key)


class Clock:
    def __init__(self, t=T0):
        self.t = t

    def __call__(self):
        return self.t


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "bridge.db")
    s.migrate()
    conn = s.connect()
    for w in ("W01", "W02", "W03"):
        devices.add_window(conn, w, name="%s号窗口" % w[-1], dept_name="政务服务中心", now=T0 - 86400)
    conn.close()
    return s


def add_keypad(store, device_id, window_id=None):
    conn = store.connect()
    try:
        key = devices.add(conn, device_id, window_id=window_id, now=T0 - 3600)
    finally:
        conn.close()
    return Keypad(device_id, key)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def rules():
    return cases.Rules(prompt_timeout_s=60, grace_s=3, reason_required=False, reason_window_s=8)


@pytest.fixture
def hub(store, clock, rules):
    h = Hub(store, rules=rules, hall="test", clock=clock).start(timer=False)
    yield h
    h.stop()


@pytest.fixture
def link():
    return Link()


@pytest.fixture
def kp(store, hub):
    k = add_keypad(store, "KP-0001", "W01")
    hub.reload_keys()
    return k


def q(store, sql, params=()):
    conn = store.connect()
    try:
        return [dict(r) for r in conn.execute(sql, params)]
    finally:
        conn.close()


def older_release_store(path, applied=3):
    """A store at `path` migrated by an older release: only its first `applied` migrations."""
    full = migrations.MIGRATIONS
    migrations.MIGRATIONS = full[:applied]
    try:
        Store(path).migrate()
    finally:
        migrations.MIGRATIONS = full
