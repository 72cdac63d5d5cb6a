# pingjia.bridge.status: every keypad's state at a glance (GET /api/status, `pingjia status`).
#
# The per-keypad verdict (missing/offline/never/stale/journal/error/ok/spare,
# problems first) is statuspage.keypads(), shared with the hall page and
# `pingjia fleet` so all three agree on what a problem is.
from . import statuspage
from .store import rows

KEYPAD_FIELDS = ("window_id", "window_name", "device_id", "state", "state_label", "detail", "problem", "online",
                 "last_seen", "last_seen_ago", "fw_version", "board", "boot", "uptime_s", "journal_depth",
                 "journal_cap", "rssi", "status_flags", "last_error", "rejects", "last_reject", "last_reject_at",
                 "transport")


def status(conn, now, stats=None, hall=""):
    """{hall, now, summary, windows_without_keypad, keypads: [...problems first], bridge: counters}"""
    kp = [{k: r.get(k) for k in KEYPAD_FIELDS} for r in statuspage.keypads(conn, now)]
    for r in kp:
        r["online"] = bool(r["online"])
    problems = [r for r in kp if r["problem"]]
    return {
        "hall": hall,
        "now": now,
        "summary": {
            "windows": sum(1 for r in kp if r["window_id"]),
            "keypads": sum(1 for r in kp if r["device_id"]),
            "online": sum(1 for r in kp if r["device_id"] and r["online"]),
            "problems": len(problems),
        },
        "windows_without_keypad": [r["window_id"] for r in problems if r["window_id"]],
        "keypads": kp,
        "bridge": stats or {},
    }


def cases_last_day(conn, now):
    """{state: count} of the cases opened in the 24 hours before `now` (through the case-id bound of
    statuspage.first_case_since: only those rows are read, however long the hall's history)."""
    since = now - 86400
    return dict(conn.execute("SELECT state, count(*) FROM cases WHERE case_id >= ? AND opened_at >= ? GROUP BY state",
                             (statuspage.first_case_since(conn, since), since)).fetchall())


def devices(conn):
    return rows(conn, """SELECT device_id, window_id, transport, fw_version, board, boot, online, last_seen, uptime_s,
                                journal_depth, journal_cap, status_flags, last_error, rejects, last_reject, last_reject_at,
                                cmd_seq, created_at, retired_at
                         FROM devices ORDER BY retired_at IS NOT NULL, device_id""")


def windows(conn):
    return rows(conn, """SELECT w.window_id, w.name, w.dept_code, w.dept_name, d.device_id,
                                (SELECT count(*) FROM bindings b WHERE b.window_id = w.window_id) AS bindings
                         FROM windows w LEFT JOIN devices d ON d.window_id = w.window_id AND d.retired_at IS NULL
                         ORDER BY w.window_id""")
