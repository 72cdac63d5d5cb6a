"""Bridge core throughput: verify + dedup + attach + group commit + ACK, without a transport.

    .venv/bin/python bench/bridge_commit_bench.py [--keypads 500] [--events 20] [--threads 2]

Feeds pre-signed events from N keypads (a third of them ratings on open
prompts, the rest unsolicited) into Hub.submit from `--threads` threads and
waits for every ACK. Baselines measured in the same run on the same file:
  - raw SQLite: the same rows INSERTed in one transaction per 500 (the floor
    any design on this disk pays),
  - one commit per event (what group commit saves).
Prints events/s for each and the hub's batch sizes.
"""
import argparse
import os
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pingjia.bridge import devices  # noqa: E402
from pingjia.bridge.hub import Hub  # noqa: E402
from pingjia.bridge.store import Store  # noqa: E402
from pingjia.protocol import messages as m  # noqa: E402


class CountingLink:
    name = "bench"

    def __init__(self, want):
        self.want, self.n = want, 0
        self.done = threading.Event()
        self.lock = threading.Lock()

    def send(self, device_id, raw):
        if raw[1] != m.ACK:
            return
        k = raw[len(device_id) + 4 + 8 + 4]  # seqs count byte: after header, id, boot, seq, upto
        with self.lock:
            self.n += k
            if self.n >= self.want:
                self.done.set()


def setup(path, keypads):
    store = Store(path)
    store.migrate()
    conn = store.connect()
    keys = {}
    conn.execute("BEGIN")
    for w in range(keypads):
        conn.execute("INSERT INTO windows (window_id, name, created_at) VALUES (?,?,?)", ("W%04d" % w, "", time.time()))
    conn.execute("COMMIT")
    for i in range(keypads):
        d = "KP-%04d" % i
        keys[d] = devices.add(conn, d, window_id="W%04d" % i)
    conn.close()
    return store, keys


def run_hub(path, keypads, events, threads):
    store, keys = setup(path, keypads)
    hub = Hub(store).start(timer=False)
    tokens = {}
    for i, d in enumerate(keys):
        if i % 3 == 0:
            hub.open_case({"project_no": "P%05d" % i, "window_id": "W%04d" % i})
            tokens[d] = hub.finish_case("P%05d" % i)["token"]
    raws = []
    for s in range(1, events + 1):
        for d, k in keys.items():
            if d in tokens and s == 1:
                msg = m.Message(m.RATING, d, 1, s, stars=5, age_ms=10, token=tokens[d], nth=1, dt_ms=0)
            else:
                msg = m.Message(m.UNSOLICITED, d, 1, s, stars=4, age_ms=10)
            raws.append(m.encode(msg, k))
    link = CountingLink(len(raws))
    parts = [raws[i::threads] for i in range(threads)]
    t0 = time.perf_counter()
    ths = [threading.Thread(target=lambda p=p: [hub.submit(r, link) for r in p]) for p in parts]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    link.done.wait(300)
    dt = time.perf_counter() - t0
    st = hub.stats()
    hub.stop()
    return len(raws) / dt, st


def run_sqlite(path, n, per_commit):
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE e (d TEXT, s INTEGER, x TEXT, PRIMARY KEY (d, s))")
    t0 = time.perf_counter()
    for i in range(0, n, per_commit):
        conn.execute("BEGIN")
        for j in range(i, min(n, i + per_commit)):
            conn.execute("INSERT INTO e VALUES (?,?,?)", ("KP-%04d" % (j % 500), j, "x" * 64))
        conn.execute("COMMIT")
    dt = time.perf_counter() - t0
    conn.close()
    return n / dt


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keypads", type=int, default=500)
    ap.add_argument("--events", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        rate, st = run_hub(os.path.join(d, "hub.db"), a.keypads, a.events, a.threads)
        n = a.keypads * a.events
        raw500 = run_sqlite(os.path.join(d, "raw500.db"), n, 500)
        raw1 = run_sqlite(os.path.join(d, "raw1.db"), min(n, 2000), 1)
    print("hub: %d events from %d keypads: %.0f events/s committed+ACKed (batches %d, max batch %d)"
          % (n, a.keypads, rate, st["batches"], st["max_batch"]))
    print("baseline raw SQLite, 500 rows/commit: %.0f rows/s; 1 row/commit: %.0f rows/s" % (raw500, raw1))
    print("hub / raw-500 = %.2f; hub / 1-per-commit = %.1fx" % (rate / raw500, rate / raw1))
    import resource

    print("peak RSS of this process: %.0f MB" % (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


if __name__ == "__main__":
    main()
