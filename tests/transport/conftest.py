"""Transport fixtures: a real Mosquitto per test (free port, password file, ACL,
restartable), device keys, a recording hub for transport-only tests, real ptys."""
import os
import select
import threading
import time

import pytest

from pingjia.bridge.broker import LocalBroker
from pingjia.protocol import messages

HALL = "h1"


def make_keys(n, prefix="KP-"):
    """n deterministic (device_id, key) pairs."""
    return {"%s%04d" % (prefix, i + 1): bytes((i * 7 + j) & 0xFF for j in range(32)) for i in range(n)}


@pytest.fixture
def keys():
    return make_keys(8)


@pytest.fixture
def broker(tmp_path, keys):
    """A real Mosquitto on a free port with passwd + ACL for `keys`' devices.
    `broker.restart()` keeps the port and the persisted sessions."""
    b = LocalBroker(tmp_path / "mosquitto", HALL)
    b.add_user("rogue", "rogue-pw")  # valid credentials, no ACL lines
    b.set_devices(keys)
    b.start()
    yield b
    b.stop()


def wait_for(pred, timeout=20.0, what="condition", step=0.01):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(step)
    raise AssertionError("timed out waiting for %s" % what)


class RecordingHub:
    """Stands in for bridge.hub.Hub in transport-only tests: verifies with the
    keys, records each (device_id, seq) once, ACKs every journaled event
    (duplicates again) on the link it came from."""

    def __init__(self, keys):
        self.keys = keys
        self.lock = threading.Lock()
        self.events = {}  # (dev, seq) -> Message
        self.submits = 0
        self.duplicates = 0
        self.rejected = []
        self.texts = []  # (link name, device_id, line)
        self.states = []  # (device_id, online, link name)
        self.others = []
        self._cmd = {}

    def submit(self, raw, link):
        try:
            m = messages.decode(raw, self.keys.get)
        except Exception as e:  # noqa: BLE001
            with self.lock:
                self.rejected.append(e)
            return
        with self.lock:
            self.submits += 1
            if m.type not in messages.JOURNALED:
                self.others.append(m)
                return
            if (m.device_id, m.seq) in self.events:
                self.duplicates += 1
            else:
                self.events[(m.device_id, m.seq)] = m
            n = self._cmd[m.device_id] = self._cmd.get(m.device_id, 0) + 1
        ack = messages.encode(messages.Message(messages.ACK, m.device_id, m.boot, n, upto=0, seqs=[m.seq]), self.keys[m.device_id])
        link.send(m.device_id, ack)

    def reject(self, device_id, code, detail, link):
        with self.lock:
            self.rejected.append((device_id, code))

    def device_text(self, link, device_id, line):
        with self.lock:
            self.texts.append((link.name, device_id, line))

    def link_state(self, device_id, online, link):
        with self.lock:
            self.states.append((device_id, online, link.name))


@pytest.fixture
def rhub(keys):
    return RecordingHub(keys)


@pytest.fixture
def bstore(tmp_path, keys):
    """The bridge's real SQLite store with `keys`' keypads registered, KP-0001 bound to window W01."""
    from pingjia.bridge import devices
    from pingjia.bridge.store import Store

    s = Store(tmp_path / "bridge.db")
    s.migrate()
    conn = s.connect()
    try:
        devices.add_window(conn, "W01", name="1号窗口", dept_name="政务服务中心")
        for i, (d, k) in enumerate(sorted(keys.items())):
            devices.add(conn, d, key=k, window_id="W01" if i == 0 else None, transport="mqtt")
    finally:
        conn.close()
    return s


@pytest.fixture
def hub(bstore):
    """The real bridge core (bridge.hub.Hub) over bstore."""
    from pingjia.bridge.hub import Hub

    h = Hub(bstore, hall=HALL).start()
    yield h
    h.stop()


def q(store, sql, params=()):
    conn = store.connect()
    try:
        return [tuple(r) for r in conn.execute(sql, params)]
    finally:
        conn.close()


class Pty:
    """A pseudo-terminal standing in for a USB serial keypad, reachable at a
    stable symlink (like /dev/serial/by-id/...). unplug() closes the master
    (the slave then reads EIO, as a pulled cable does); plug() makes a new pty
    behind the same symlink."""

    def __init__(self, link_path):
        self.link = str(link_path)
        self.master = None
        self.slave_name = None
        self._rx = bytearray()
        self.plug()

    def plug(self):
        import tty

        m, s = os.openpty()
        tty.setraw(s)
        self.slave_name = os.ttyname(s)
        os.close(s)  # the bridge opens it by name
        self.master = m
        tmp = self.link + ".tmp"
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(self.slave_name, tmp)
        os.replace(tmp, self.link)

    def unplug(self, remove_link=False):
        if self.master is not None:
            os.close(self.master)
            self.master = None
        if remove_link and os.path.lexists(self.link):
            os.unlink(self.link)

    def write(self, data):
        view = memoryview(data)
        while view:
            n = os.write(self.master, view)
            view = view[n:]

    def read_available(self, timeout=0.0):
        r, _, _ = select.select([self.master], [], [], timeout)
        if not r:
            return b""
        try:
            return os.read(self.master, 65536)
        except OSError:
            return b""

    def read_frames(self, want, timeout=10.0):
        """Read from the master until `want` frames arrived; returns their messages."""
        from pingjia.protocol import framing

        dec = framing.Decoder()
        got = []
        end = time.monotonic() + timeout
        while len(got) < want and time.monotonic() < end:
            data = self.read_available(0.05)
            if data:
                got += [v for k, v in dec.feed(data) if k == framing.FRAME]
        return got

    def close(self):
        self.unplug()
