"""kill -9 of the bridge's hub process in the middle of a burst, restart, keypads resend
everything un-ACKed (their journals): every event is stored exactly once, and every
event ACKed before the crash is in the database (ACK only after COMMIT)."""
import os
import signal
import subprocess
import sys
import threading

from pingjia.bridge import devices
from pingjia.bridge.store import Store
from pingjia.protocol import framing
from pingjia.protocol import messages as m
from tests.bridge.conftest import ROOT_DIR, Keypad

KEYPADS, EVENTS = 40, 100  # 4,000 events


class HubProcess:
    def __init__(self, db, keys):
        self.keys = keys
        self.acked = set()
        self.cv = threading.Condition()
        self.p = subprocess.Popen([sys.executable, "-m", "tests.bridge.hubproc", str(db)], cwd=ROOT_DIR,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        dec = framing.Decoder()
        while True:
            data = os.read(self.p.stdout.fileno(), 65536)
            if not data:
                return
            for kind, raw in dec.feed(data):
                if kind != framing.FRAME:
                    continue
                _v, _t, dev = m.peek(raw)
                ack = m.decode(raw, self.keys[dev])
                with self.cv:
                    self.acked.update((dev, s) for s in ack.seqs)
                    self.cv.notify_all()

    def send(self, raws):
        try:
            for raw in raws:
                self.p.stdin.write(framing.encode(raw))
            self.p.stdin.flush()
        except BrokenPipeError:
            pass  # killed under our feet: the keypads still hold these events

    def wait_acked(self, n, timeout=120):
        with self.cv:
            assert self.cv.wait_for(lambda: len(self.acked) >= n, timeout), "only %d ACKed" % len(self.acked)


def test_kill9_mid_burst_then_restart_stores_each_event_once(tmp_path):
    db = tmp_path / "bridge.db"
    store = Store(db)
    store.migrate()
    conn = store.connect()
    pads = [Keypad("KP-%04d" % i, devices.add(conn, "KP-%04d" % i)) for i in range(1, KEYPADS + 1)]
    conn.close()
    keys = {p.device_id: p.key for p in pads}
    journal = {}  # (device, seq) -> raw: what the keypads keep until ACKed
    for i in range(EVENTS):
        for p in pads:
            raw = p.unsolicited(1 + (i + len(p.device_id)) % 5) if i % 3 else p.rating(1 + i % 5, "TOKEN%03d" % (i % 7))
            journal[(p.device_id, p.seq)] = raw
    total = len(journal)

    first = HubProcess(db, keys)
    sender = threading.Thread(target=first.send, args=(list(journal.values()),))
    sender.start()
    first.wait_acked(total // 8)
    os.kill(first.p.pid, signal.SIGKILL)  # the bridge dies mid-burst
    first.p.wait()
    sender.join()
    with first.cv:
        acked_before = set(first.acked)
    assert 0 < len(acked_before) < total, "the kill must land in the middle of the burst"

    conn = store.connect()
    stored = {(d, s) for d, s in conn.execute("SELECT device_id, seq FROM events")}
    conn.close()
    assert acked_before <= stored  # ACKed means committed

    second = HubProcess(db, keys)
    unacked = [raw for k, raw in journal.items() if k not in acked_before]
    resent_acked = [journal[k] for k in sorted(acked_before)[:200]]  # their ACK may have been lost too
    second.send(unacked + resent_acked)
    second.wait_acked(len(set(journal) - acked_before))
    second.p.stdin.close()
    assert second.p.wait(60) == 0

    conn = store.connect()
    rows = conn.execute("SELECT device_id, seq, stars, count(*) FROM events GROUP BY device_id, seq").fetchall()
    conn.close()
    assert len(rows) == total
    assert all(r[3] == 1 for r in rows)
    for dev, seq, stars, _ in rows:
        assert m.decode(journal[(dev, seq)], keys[dev]).stars == stars
    assert second.acked | acked_before == set(journal)
