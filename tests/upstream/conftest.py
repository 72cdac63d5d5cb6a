"""Upstream test fixtures: a real bridge SQLite file, seeded cases/ratings/outbox, a real receiver."""
import socket
import sqlite3
import time

import pytest

from pingjia.bridge import migrations
from pingjia.bridge.upstream.receiver import Receiver

KEY = "hex:" + "11" * 32
T0 = 1763690400.0  # 2025-11-21 10:00:00 Asia/Shanghai (Friday)


def make_db(path):
    """The bridge's store with every migration (the core's runner when present)."""
    try:
        from pingjia.bridge.store import Store
    except ImportError:
        Store = None
    if Store is not None:
        Store(path).migrate()
    else:
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at REAL)")
        for name, sql in migrations.MIGRATIONS:
            conn.executescript(sql)
            conn.execute("INSERT INTO migrations VALUES (?, ?)", (name, time.time()))
        conn.commit()
        conn.close()
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def add_window(conn, wid, name="", dept_code="", dept_name="", at=T0):
    conn.execute("INSERT OR IGNORE INTO windows (window_id, name, dept_code, dept_name, created_at) VALUES (?,?,?,?,?)",
                 (wid, name or "窗口" + wid, dept_code, dept_name, at))


def add_case(conn, project_no, window_id, finished_at=T0, stars=None, reasons="", state=None, task_code="T001",
             task_name="事项", dept_code="D01", dept_name="部门", clerk_id="C01", clerk_name="张三", user_prop=1,
             pressed_at=None, outbox=True, contact_ref="", due=None):
    """A finished case, rated (stars) or unrated; with its outbox record (the core's idem key scheme)."""
    add_window(conn, window_id)
    st = state or ("rated" if stars else "unrated")
    cur = conn.execute(
        """INSERT INTO cases (project_no, window_id, task_code, task_name, dept_code, dept_name, clerk_id, clerk_name,
           user_prop, contact_ref, state, opened_at, finished_at, closed_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)""",
        (project_no, window_id, task_code, task_name, dept_code, dept_name, clerk_id, clerk_name, user_prop,
         contact_ref, st, (finished_at or T0) - 300, finished_at, finished_at))
    cid = cur.lastrowid
    if stars:
        pa = pressed_at if pressed_at is not None else finished_at + 5
        conn.execute("INSERT INTO ratings (case_id, assess_number, stars, reasons, device_id, seq, pressed_at, updated_at) "
                     "VALUES (?,1,?,?,?,?,?,?)", (cid, stars, reasons, "KP-0001", cid, pa, pa))
        if outbox:
            conn.execute("INSERT INTO outbox (kind, case_id, assess_number, idem_key, next_try_at, created_at) VALUES (?,?,?,?,?,?)",
                         ("rating", cid, 1, "rating:%s:1" % project_no, due if due is not None else pa, pa))
    elif outbox and st == "unrated":
        conn.execute("INSERT INTO outbox (kind, case_id, assess_number, idem_key, next_try_at, created_at) VALUES (?,?,?,?,?,?)",
                     ("unrated", cid, 1, "unrated:%s" % project_no, finished_at + 60 if due is None else due, finished_at + 60))
    return cid


def outbox(conn):
    cur = conn.execute("SELECT o.*, c.project_no FROM outbox o JOIN cases c USING (case_id) ORDER BY o.id")
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


@pytest.fixture
def db(tmp_path):
    conn = make_db(str(tmp_path / "bridge.db"))
    yield conn
    conn.close()


@pytest.fixture
def receiver(tmp_path):
    made = []

    def make(profile="zhejiang", sign_alg="hmac-sha256", key=KEY, port=0, db=None, **faults):
        rc = Receiver(profile=profile, db=str(db or tmp_path / ("receiver%d.db" % len(made))), port=port,
                      sign_alg=sign_alg, sign_key=key, seed=1, **faults).start()
        made.append(rc)
        return rc

    yield make
    for rc in made:
        try:
            rc.stop()
        except Exception:
            pass


def sender_cfg(url, **kw):
    cfg = {"endpoint": url, "profile": "zhejiang", "sign_alg": "hmac-sha256", "sign_key": KEY,
           "area_code": "330102", "data_source": "pingjia-test", "batch_size": 50, "timeout": 2.0,
           "connect_timeout": 1.0, "backoff_base": 0.02, "backoff_max": 0.2, "breaker_failures": 3,
           "breaker_cooldown": 0.2, "poll_interval": 0.05}
    cfg.update(kw)
    return cfg


def sync_until(sender, done, timeout=30.0):
    """Run the sender (real time) until done() is true; fail after timeout."""
    t0 = time.monotonic()
    while not done():
        if time.monotonic() - t0 > timeout:
            raise AssertionError("sync did not finish in %.0fs" % timeout)
        s = sender.run_once()
        if s.get("wait"):
            time.sleep(min(s["wait"], 0.05))


def seed_ratings(conn, n, prefix="P", windows=3, reasons_for_bad="501"):
    """n rated cases with stars cycling 5,4,3,2,1 (差评 with a reason)."""
    for i in range(n):
        stars = 5 - (i % 5)
        add_case(conn, "%s%05d" % (prefix, i), "W%02d" % (i % windows + 1), finished_at=T0 + i, stars=stars,
                 reasons=reasons_for_bad if stars <= 2 else "")


def states(conn):
    return dict(conn.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state").fetchall())


class Clock:
    def __init__(self, t=None):
        self.t = time.time() if t is None else t

    def __call__(self):
        return self.t

    def advance(self, s):
        self.t += s
