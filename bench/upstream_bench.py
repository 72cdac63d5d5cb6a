"""Upstream sync bench: records/s from the bridge's outbox to the reference receiver.

    .venv/bin/python bench/upstream_bench.py [--records 100000] [--batch 500] [--alg hmac-sha256]

Runs the reference receiver as its own process (`pingjia receiver`, its own
SQLite file), then in the same run:
  1. baseline: the receiver's own request rate for a trivial payload (signed
     POST of an empty batch, keep-alive, one client), i.e. HTTP + signature +
     JSON with no records;
  2. outage: the platform answers 503 while the backlog of N records sits in
     the outbox (the sender's circuit opens);
  3. recovery: the platform is back; the sender drains the backlog in batches;
     records/s = N / drain time;
  4. checks: every outbox record 'sent', the receiver holds exactly N records
     (keyed by idempotency key: 0 lost, 0 duplicated), stars match.
"""
import argparse
import http.client
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pingjia.bridge.store import Store  # noqa: E402
from pingjia.bridge.upstream import signing  # noqa: E402
from pingjia.bridge.upstream.sender import Sender, status  # noqa: E402

KEY = "hex:" + "5a" * 32
T0 = 1763690400.0


def seed(path, n):
    Store(path).migrate()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executemany("INSERT INTO windows (window_id, name, dept_code, dept_name, created_at) VALUES (?,?,?,?,?)",
                     [("W%02d" % w, "窗口%02d" % w, "D%d" % (w % 4), "部门%d" % (w % 4), T0) for w in range(1, 21)])
    cases, ratings, outbox = [], [], []
    for i in range(1, n + 1):
        pno = "BJ2025%08d" % i
        at = T0 + i * 0.5
        stars = 5 - (i % 5)
        cases.append((i, pno, "W%02d" % (i % 20 + 1), "T%03d" % (i % 50), "事项%d" % (i % 50), "C%02d" % (i % 30),
                      "经办人%d" % (i % 30), "rated", at - 300, at, at))
        ratings.append((i, stars, "501" if stars <= 2 else "", "KP-%04d" % (i % 20 + 1), i, at + 3, at + 3))
        outbox.append(("rating", i, "rating:%s:1" % pno, at + 3, at + 3))
    conn.executemany("INSERT INTO cases (case_id, project_no, window_id, task_code, task_name, clerk_id, clerk_name, state, "
                     "opened_at, finished_at, closed_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)", cases)
    conn.executemany("INSERT INTO ratings (case_id, assess_number, stars, reasons, device_id, seq, pressed_at, updated_at) "
                     "VALUES (?,1,?,?,?,?,?,?)", ratings)
    conn.executemany("INSERT INTO outbox (kind, case_id, assess_number, idem_key, next_try_at, created_at) VALUES (?,?,1,?,?,?)",
                     outbox)
    conn.commit()
    conn.close()


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def admin(port, path, body=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("POST" if body is not None else "GET", path, body=json.dumps(body) if body is not None else None)
    r = c.getresponse()
    data = json.loads(r.read())
    c.close()
    return data


def baseline(port, alg, seconds):
    """Signed POSTs of an empty batch on one keep-alive connection: the receiver's own request rate."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    body = b'{"records":[],"unrated":[]}'
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        h = {"Content-Type": "application/json"}
        h.update(signing.sign_headers(signing.key_bytes(KEY), "POST", "/api/evaluations", body, alg))
        c.request("POST", "/api/evaluations", body=body, headers=h)
        r = c.getresponse()
        r.read()
        assert r.status == 200, r.status
        n += 1
    dt = time.perf_counter() - t0
    c.close()
    return n / dt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=100000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--alg", default="hmac-sha256", choices=["hmac-sha256", "hmac-sm3"])
    ap.add_argument("--baseline-seconds", type=float, default=3.0)
    ap.add_argument("--fail-rate", type=float, default=0.0, help="share of batches the platform answers 503 during the drain")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="upbench-"))
    db = str(tmp / "bridge.db")
    t = time.perf_counter()
    seed(db, a.records)
    print("seeded %d rated cases + outbox records in %.1fs" % (a.records, time.perf_counter() - t))
    port = free_port()
    env = dict(os.environ, PINGJIA_UPSTREAM_KEY=KEY)
    rc = subprocess.Popen([sys.executable, "-c", "from pingjia.tools.cli import main; main()", "receiver", "--port", str(port),
                           "--db", str(tmp / "receiver.db"), "--sign-alg", a.alg, "--profile", "zhejiang"],
                          cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        print(rc.stdout.readline().strip())
        base = baseline(port, a.alg, a.baseline_seconds)
        print("baseline: receiver's own rate, trivial signed POST (empty batch): %.0f requests/s" % base)
        cfg = {"endpoint": "http://127.0.0.1:%d/api/evaluations" % port, "profile": "zhejiang", "sign_alg": a.alg,
               "sign_key": KEY, "area_code": "330102", "batch_size": a.batch, "timeout": 30.0, "backoff_base": 0.2,
               "backoff_max": 1.0, "breaker_failures": 3, "breaker_cooldown": 0.5}
        s = Sender(db, cfg)
        # outage: the platform is down while the backlog waits
        admin(port, "/admin/faults", {"down": True})
        for _ in range(5):
            s.run_once()
        st = status(db)
        print("outage: %d pending, circuit %s after %d failed requests" % (st["pending"], s.state()["circuit"], s.totals["failed_requests"]))
        failed0 = admin(port, "/admin/faults", {"down": False, "fail_rate": a.fail_rate})["counters"]["failed"]
        s.conn.execute("UPDATE outbox SET next_try_at = 0 WHERE state = 'pending'")  # due now: measure the drain, not the backoff
        s.open_until = 0.0
        t = time.perf_counter()
        total = {"sent": 0, "batches": 0, "retry": 0}
        while True:
            d = s.drain()
            for k in total:
                total[k] += d[k]
            if status(db)["pending"] == 0:
                break
            time.sleep(0.01)  # records in backoff after an injected failure
        dt = time.perf_counter() - t
        st = status(db)
        rs = admin(port, "/admin/state")
        conn = sqlite3.connect(db)
        sent = conn.execute("SELECT COUNT(*) FROM outbox WHERE state = 'sent'").fetchone()[0]
        rconn = sqlite3.connect(str(tmp / "receiver.db"))
        keys_bridge = {r[0] for r in conn.execute("SELECT idem_key FROM outbox")}
        keys_recv = [r[0] for r in rconn.execute("SELECT idem_key FROM records")]
        mism = rconn.execute("ATTACH ? AS b", (db,)) and rconn.execute(
            "SELECT COUNT(*) FROM records r JOIN b.cases c ON c.project_no = r.project_no "
            "JOIN b.ratings t ON t.case_id = c.case_id AND t.assess_number = r.assess_number WHERE t.stars != r.stars").fetchone()[0]
        lost = len(keys_bridge - set(keys_recv))
        dup = len(keys_recv) - len(set(keys_recv)) + rs["repeats"]
        rate = a.records / dt
        print("drain: %d records in %.2fs = %.0f records/s (%d batches of %d, %s, %d failed batches retried, fail rate %.2f)" % (
            total["sent"], dt, rate, total["batches"], a.batch, a.alg, rs["counters"]["failed"] - failed0, a.fail_rate))
        print("check: outbox sent %d/%d, receiver stored %d, lost %d, duplicated %d, stars mismatched %d, pending %d, quarantined %d"
              % (sent, a.records, rs["stored"], lost, dup, mism, st["pending"], st["quarantined"]))
        print("ratio: %.1f records/s per baseline request/s (%.0f records per trivial-request time)" % (rate / base, rate / base))
        exact = lost == 0 and dup == 0 and mism == 0 and sent == a.records
        if a.fail_rate:  # a faulty platform: the rate is the backoff's, the check is exactly-once
            ok = exact
            print("0 lost, 0 duplicated with %.0f%% of batches failing: %s" % (a.fail_rate * 100, "PASS" if ok else "FAIL"))
        else:
            ok = exact and rate >= 5000
            print("bar >= 5,000 records/s, 0 lost, 0 duplicated: %s" % ("PASS" if ok else "FAIL"))
        return 0 if ok else 1
    finally:
        rc.terminate()
        rc.wait(10)
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
