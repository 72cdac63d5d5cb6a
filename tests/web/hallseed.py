"""A hall's SQLite file for page and fleet tests: the bridge's schema, a few windows, keypads, cases."""
import sqlite3
import time

from pingjia.bridge import statuspage
from pingjia.bridge.store import Store

WINDOWS = [
    ("W01", "综合受理窗口", "政务服务中心"),
    ("W02", "不动产登记", "自然资源局"),
    ("W03", "社保医保", "人社局"),
    ("W04", "公安户政", "公安局"),
    ("W05", "税务办理", "税务局"),
    ("W06", "企业开办", "市场监管局"),
]


def create(path):
    """An empty store at `path`, migrated by the bridge's own Store; a plain connection to fill it."""
    Store(str(path)).migrate()
    return sqlite3.connect(str(path))


def seed(path, now=None):
    """Six windows, five keypads (W06 has none), a morning's cases and ratings, two 差评 follow-ups."""
    now = time.time() if now is None else now
    conn = create(path)
    t0 = max(now - 3 * 3600, statuspage.day_start(now) + 1)  # all of it "today"
    step = max(1.0, min(600.0, (now - t0 - 120) / 12))
    for wid, name, dept in WINDOWS:
        conn.execute("INSERT INTO windows (window_id, name, dept_name, created_at) VALUES (?,?,?,?)", (wid, name, dept, t0))
    for i, (wid, _, _) in enumerate(WINDOWS[:5], 1):
        conn.execute(
            """INSERT INTO devices (device_id, key_hex, window_id, created_at, fw_version, board, boot,
               online, last_seen, uptime_s, journal_depth, journal_cap, free_heap, rssi, status_flags, last_error)
               VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)""",
            ("KP-%04d" % i, "00" * 32, wid, t0, "1.0.0", "rp2-pico", 3, 1, now - 5, 10800, 0, 2000, 70000, 127, 0, ""),
        )
    case = 0
    stars_seq = [5, 5, 4, 5, 3, 5, 1, 5, 4, 5, 2, 5]
    for i, stars in enumerate(stars_seq):
        wid = WINDOWS[i % 5][0]
        case += 1
        at = t0 + 60 + i * step
        conn.execute(
            """INSERT INTO cases (case_id, project_no, window_id, task_name, clerk_name, state, device_id,
               opened_at, finished_at, closed_at) VALUES (?,?,?,?,?,?,?,?,?,?)""",
            (case, "BJ2026%04d" % case, wid, "事项%d" % case, "张三", "rated", "KP-%04d" % (i % 5 + 1), at - 30, at, at + 2),
        )
        conn.execute(
            "INSERT INTO ratings (case_id, stars, device_id, seq, pressed_at, updated_at) VALUES (?,?,?,?,?,?)",
            (case, stars, "KP-%04d" % (i % 5 + 1), case, at + 1, at + 2),
        )
        if stars <= 2:
            conn.execute("INSERT INTO followups (case_id, opened_at, deadline) VALUES (?,?,?)", (case, at, at + 7 * 86400))
    case += 1  # one unrated
    conn.execute(
        """INSERT INTO cases (case_id, project_no, window_id, state, opened_at, finished_at, closed_at)
           VALUES (?,?,?,?,?,?,?)""",
        (case, "BJ2026%04d" % case, "W02", "unrated", now - 100, now - 90, now - 80),
    )
    conn.commit()
    return conn


def add_rating(conn, window_id, device_id, stars, now=None):
    """A finished case at `window_id` rated `stars` now (what the hub would commit)."""
    now = time.time() if now is None else now
    case = conn.execute("SELECT coalesce(max(case_id), 0) + 1 FROM cases").fetchone()[0]
    conn.execute(
        """INSERT INTO cases (case_id, project_no, window_id, task_name, state, device_id, opened_at, finished_at, closed_at)
           VALUES (?,?,?,?,?,?,?,?,?)""",
        (case, "NEW%05d" % case, window_id, "新办件%d" % case, "rated", device_id, now - 60, now - 2, now),
    )
    conn.execute(
        "INSERT INTO ratings (case_id, stars, device_id, seq, pressed_at, updated_at) VALUES (?,?,?,?,?,?)",
        (case, stars, device_id, 1000 + case, now - 1, now),
    )
    conn.commit()
    return "NEW%05d" % case
