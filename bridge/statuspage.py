# pingjia.bridge.statuspage: the hall status page (GET /, /static/*, /api/hall) computed in SQL.
#
# Mounted by the bridge's HTTP server: `handle(store, method, path)` returns
# (status, content_type, body_bytes) for the paths it owns and None otherwise.
# `hall(conn, now)` is the page's whole model; `keypads(conn, now)` is the
# fleet view shared with `pingjia fleet` (tools/fleet.py) so both agree on what
# counts as a problem. Internal meaning: stars 1..5 (5 = 非常满意), UNIX seconds.
import json
import mimetypes
import sqlite3
import time
from pathlib import Path

STATIC = Path(__file__).resolve().parent / "static"

LEVELS = {5: "非常满意", 4: "满意", 3: "基本满意", 2: "不满意", 1: "非常不满意"}
SATISFIED_MIN = 3  # 满意率 counts 基本满意 and better; 1-2 stars are 差评

CASE_SPAN_S = 86400  # a rating pressed or changed today is of a case finished at most this long before midnight
STALE_S = 90  # an "online" keypad silent for longer than this has missed its heartbeats
REJECT_ALERT_S = 600  # a message rejected (bad MAC, replay...) this recently is worth an alert
JOURNAL_ALERT = 10  # unacknowledged events on a keypad worth an alert
ST_JOURNAL_FULL = 0x01
ST_CONFIG_ERROR = 0x04

# keypad states, most urgent first; the number is the sort rank ("problems first")
STATES = {
    "missing": (0, "未配置评价器"),
    "offline": (1, "离线"),
    "never": (1, "从未上线"),
    "stale": (2, "心跳超时"),
    "journal": (3, "积压未确认"),
    "error": (4, "故障"),
    "ok": (9, "在线"),
    "spare": (8, "未绑定窗口"),
}


def stars_text(n):
    return "★" * n


def day_start(now):
    """Local midnight before `now` (the hall PC's timezone)."""
    t = time.localtime(now)
    return time.mktime((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0, 0, 0, -1))


def _rows(conn, sql, params=()):
    cur = conn.execute(sql, params)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def _keypad_state(d, now):
    """(state, detail) of one keypad row from the devices table."""
    if d.get("device_id") is None:
        return "missing", "窗口没有在用的评价器"
    flags = d["status_flags"] or 0
    depth = d["journal_depth"] or 0
    if d["last_seen"] is None:
        return "never", "登记后尚未收到设备消息"
    if not d["online"]:
        return "offline", "最后在线 %s" % _ago(now - d["last_seen"])
    if now - d["last_seen"] > STALE_S:
        return "stale", "%s 未收到心跳" % _ago(now - d["last_seen"])
    if flags & ST_JOURNAL_FULL or depth >= JOURNAL_ALERT:
        return "journal", "评价器上 %d 条事件未获确认%s" % (depth, "（存储已满）" if flags & ST_JOURNAL_FULL else "")
    if flags & ST_CONFIG_ERROR or d["last_error"]:
        return "error", d["last_error"] or "配置错误"
    if d["last_reject_at"] and now - d["last_reject_at"] < REJECT_ALERT_S:
        return "error", "%s 拒收了它的消息（%s），累计 %d 条" % (_ago(now - d["last_reject_at"]), d["last_reject"] or "?", d["rejects"])
    return "ok", ""


def _ago(seconds):
    s = max(0, int(seconds))
    if s < 60:
        return "%d 秒前" % s
    if s < 3600:
        return "%d 分钟前" % (s // 60)
    if s < 86400:
        return "%d 小时前" % (s // 3600)
    return "%d 天前" % (s // 86400)


_DEVICE_COLS = """d.device_id, d.transport, d.fw_version, d.board, d.boot, d.online, d.last_seen,
    d.uptime_s, d.journal_depth, d.journal_cap, d.free_heap, d.rssi, d.status_flags,
    d.last_error, d.rejects, d.last_reject, d.last_reject_at"""


def keypads(conn, now):
    """Every window with its keypad (or none), plus in-service keypads bound to no
    window; each row has `state`, `state_label`, `detail`, `problem`; problems first."""
    rows = _rows(
        conn,
        """SELECT w.window_id, w.name AS window_name, w.dept_name, %s
           FROM windows w
           LEFT JOIN devices d ON d.window_id = w.window_id AND d.retired_at IS NULL
           UNION ALL
           SELECT NULL, '', '', %s FROM devices d
           WHERE d.retired_at IS NULL
             AND (d.window_id IS NULL OR d.window_id NOT IN (SELECT window_id FROM windows))"""
        % (_DEVICE_COLS, _DEVICE_COLS),
    )
    for r in rows:
        if r["window_id"] is None:
            state, detail = "spare", "可绑定到窗口"
        else:
            state, detail = _keypad_state(r, now)
        r["state"], r["detail"] = state, detail
        r["state_label"] = STATES[state][1]
        r["problem"] = STATES[state][0] < 8
        r["last_seen_ago"] = _ago(now - r["last_seen"]) if r["last_seen"] else ""
    rows.sort(key=lambda r: (STATES[r["state"]][0], r["window_id"] or "~", r["device_id"] or ""))
    return rows


def first_case_since(conn, since):
    """A lower bound for the case_id of cases opened at or after `since`.

    Case ids grow in the order cases are opened (INTEGER PRIMARY KEY), so a binary
    search over the primary key finds the cases opened today in O(log n) without an
    index on opened_at; the queries below read those by `case_id >= bound` and the
    cases finished today by the index on finished_at: only today's rows.
    """
    lo = conn.execute("SELECT min(case_id) FROM cases").fetchone()[0]  # two statements: each is O(1)
    hi = conn.execute("SELECT max(case_id) FROM cases").fetchone()[0]
    if lo is None:
        return 0
    hi += 1
    while lo < hi:
        mid = (lo + hi) // 2
        r = conn.execute("SELECT case_id, opened_at FROM cases WHERE case_id >= ? ORDER BY case_id LIMIT 1", (mid,)).fetchone()
        if r is None or r[1] >= since:
            hi = mid
        else:
            lo = r[0] + 1
    return lo


# Today's cases: opened today (case ids from `first` on) or finished today (index cases_finished),
# however long ago they were opened. 评价率 and 满意率 count the cases finished today, as the
# report of the day does (bridge/reports.py).
TODAY = "(c.case_id >= :first OR c.finished_at >= :day) AND (c.opened_at >= :day OR c.finished_at >= :day)"


def _today(conn, day, first):
    dist = {s: 0 for s in LEVELS}
    for r in _rows(
        conn,
        """SELECT r.stars, count(*) AS n FROM cases c JOIN ratings r ON r.case_id = c.case_id AND r.assess_number = 1
           WHERE c.finished_at >= ? AND c.state != 'cancelled' GROUP BY r.stars""",
        (day,),
    ):
        dist[r["stars"]] = r["n"]
    c = _rows(
        conn,
        """SELECT count(*) AS opened,
                  sum(c.finished_at >= :day AND c.state != 'cancelled') AS finished,
                  sum(c.state = 'unrated') AS unrated,
                  sum(c.state IN ('open', 'prompted')) AS in_progress
           FROM cases c WHERE """ + TODAY,
        {"first": first, "day": day},
    )[0]
    finished = c["finished"] or 0
    rated = sum(dist.values())
    good = sum(n for s, n in dist.items() if s >= SATISFIED_MIN)
    return {
        "opened": c["opened"] or 0,
        "finished": finished,
        "in_progress": c["in_progress"] or 0,
        "unrated": c["unrated"] or 0,
        "rated": rated,
        "satisfied": good,
        "bad": rated - good,
        "stars": [{"stars": s, "label": LEVELS[s], "count": dist[s]} for s in sorted(LEVELS, reverse=True)],
        "rating_rate": round(100.0 * rated / finished, 1) if finished else None,
        "satisfaction_rate": round(100.0 * good / rated, 1) if rated else None,
    }


def _per_window(conn, day, first):
    out = {}
    for r in _rows(
        conn,
        """SELECT c.window_id,
                  sum(c.finished_at >= :day AND c.state != 'cancelled') AS finished,
                  sum(r.case_id IS NOT NULL AND c.finished_at >= :day AND c.state != 'cancelled') AS rated,
                  sum(r.stars >= :good AND c.finished_at >= :day AND c.state != 'cancelled') AS satisfied,
                  sum(c.state IN ('open', 'prompted')) AS in_progress,
                  sum(c.state = 'prompted') AS prompting
           FROM cases c LEFT JOIN ratings r ON r.case_id = c.case_id AND r.assess_number = 1
           WHERE """ + TODAY + """
           GROUP BY +c.window_id""",  # "+": read today's cases, never walk all cases by window
        {"good": SATISFIED_MIN, "first": first, "day": day},
    ):
        out[r["window_id"]] = r
    for r in _rows(
        conn,
        """SELECT c.window_id, r.stars, max(r.pressed_at) AS at
           FROM cases c CROSS JOIN ratings r ON r.case_id = c.case_id
           WHERE c.finished_at >= ? AND r.pressed_at >= ? GROUP BY +c.window_id""",  # CROSS: cases first, by finished_at
        (day - CASE_SPAN_S, day),
    ):
        out.setdefault(r["window_id"], {})["last_stars"] = r["stars"]
        out[r["window_id"]]["last_at"] = r["at"]
    return out


def _recent_ratings(conn, day, limit=12):
    rows = _rows(
        conn,
        """SELECT r.case_id, r.assess_number, r.stars, r.reasons, r.device_id, r.pressed_at,
                  c.project_no, c.window_id, coalesce(w.name, '') AS window_name,
                  c.task_name, c.clerk_name
           FROM cases c CROSS JOIN ratings r ON r.case_id = c.case_id
           LEFT JOIN windows w ON w.window_id = c.window_id
           WHERE c.finished_at >= ? AND r.updated_at >= ? ORDER BY r.updated_at DESC, r.pressed_at DESC LIMIT ?""",
        (day - CASE_SPAN_S, day, limit),
    )
    for r in rows:
        r["label"] = LEVELS.get(r["stars"], "")
    return rows


def _followups(conn, now, limit=30):
    rows = _rows(
        conn,
        """SELECT f.case_id, f.state, f.opened_at, f.deadline, c.project_no, c.window_id,
                  coalesce(w.name, '') AS window_name, c.task_name, c.clerk_name,
                  (SELECT stars FROM ratings r WHERE r.case_id = f.case_id
                   ORDER BY r.assess_number LIMIT 1) AS stars
           FROM followups f JOIN cases c ON c.case_id = f.case_id
           LEFT JOIN windows w ON w.window_id = c.window_id
           WHERE f.closed_at IS NULL
           ORDER BY f.deadline LIMIT ?""",
        (limit,),
    )
    for r in rows:
        r["overdue"] = r["deadline"] < now
        r["label"] = LEVELS.get(r["stars"], "")
        r["days_left"] = round((r["deadline"] - now) / 86400.0, 1)
    return rows


def _alerts(fleet):
    out = []
    for k in fleet:
        if not k["problem"]:
            continue
        where = k["window_id"] + (" " + k["window_name"] if k["window_name"] else "")
        what = "评价器 %s %s" % (k["device_id"], k["state_label"]) if k["device_id"] else k["state_label"]
        level = "error" if STATES[k["state"]][0] <= 2 else "warn"
        out.append({"level": level, "window_id": k["window_id"], "device_id": k["device_id"],
                    "state": k["state"], "text": "%s：%s" % (where, what), "detail": k["detail"]})
    return out


def hall(conn, now=None):
    """The status page's model: windows with keypads, today's counts, ratings,
    open follow-ups and alerts. JSON-ready."""
    now = time.time() if now is None else now
    day = day_start(now)
    fleet = keypads(conn, now)
    first = first_case_since(conn, day)
    per = _per_window(conn, day, first)
    windows = []
    for k in sorted((k for k in fleet if k["window_id"]), key=lambda k: k["window_id"]):
        w = per.get(k["window_id"], {})
        k = dict(k)
        k["today"] = {
            "finished": w.get("finished") or 0,
            "rated": w.get("rated") or 0,
            "satisfied": w.get("satisfied") or 0,
            "in_progress": w.get("in_progress") or 0,
            "prompting": bool(w.get("prompting")),
            "last_stars": w.get("last_stars"),
            "last_at": w.get("last_at"),
        }
        windows.append(k)
    return {
        "now": now,
        "day_start": day,
        "levels": [{"stars": s, "label": LEVELS[s]} for s in sorted(LEVELS, reverse=True)],
        "today": _today(conn, day, first),
        "windows": windows,
        "spares": [k for k in fleet if not k["window_id"]],
        "alerts": _alerts(fleet),
        "ratings": _recent_ratings(conn, day),
        "followups": _followups(conn, now),
    }


def connect(store):
    """A connection for reading the store; (conn, close_after).

    `store` is a sqlite3.Connection, a path to the SQLite file, or an object with
    a `.conn` / `.db` connection or a `.path` to the file.
    """
    if isinstance(store, sqlite3.Connection):
        return store, False
    for attr in ("conn", "db"):
        inner = getattr(store, attr, None)
        if isinstance(inner, sqlite3.Connection):
            return inner, False
        if isinstance(getattr(inner, "conn", None), sqlite3.Connection):  # sqlite_utils.Database
            return inner.conn, False
    path = getattr(store, "path", store)
    conn = sqlite3.connect("file:%s?mode=ro" % Path(path).resolve(), uri=True, timeout=5, check_same_thread=False)
    return conn, True


def hall_json(store, now=None):
    conn, close = connect(store)
    try:
        return json.dumps(hall(conn, now), ensure_ascii=False).encode()
    finally:
        if close:
            conn.close()


def _static(name):
    if name not in {p.name for p in STATIC.iterdir() if p.is_file()}:
        return None
    ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
    if ctype.startswith("text/") or ctype in ("application/javascript", "application/json"):
        ctype += "; charset=utf-8"
    return 200, ctype, (STATIC / name).read_bytes()


def handle(store, method, path, now=None):
    """Serve the status page. Returns (status, content_type, body) or None when
    `path` is not the page's (the caller serves or 404s it)."""
    path = path.split("?", 1)[0]
    if path in ("/", "/index.html", "/status"):
        found = _static("index.html")
    elif path.startswith("/static/"):
        found = _static(path[len("/static/"):])
        if found is None:
            return 404, "text/plain; charset=utf-8", b"not found\n"
    elif path == "/api/hall":
        found = (200, "application/json; charset=utf-8", None)
    else:
        return None
    if method not in ("GET", "HEAD"):
        return 405, "text/plain; charset=utf-8", b"method not allowed\n"
    if path == "/api/hall":
        return 200, found[1], hall_json(store, now)
    return found
