"""The hall's measures, computed in SQL (DOMAIN.md "Measures").

  评价率   rating_rate       = rated cases / finished cases
  满意率   satisfaction_rate = (5★ + 4★ + 3★) / rated cases
  差评     bad               = cases whose first rating is 1-2★
  整改率   rectify_rate      = 差评 whose follow-up reached 已反馈 by its deadline / all 差评

Per window, clerk, department, matter (事项) or the whole hall, and per day,
week (labelled by its Monday), month or the whole range. A case counts in the
period of its finished_at (local time, `utc_offset_hours`, China: +8), with its
first rating (assessNumber 1); cancelled cases do not count. Every window of
the `windows` table and every period in [since, until) gets a row, so a window
with no ratings and a day with no cases show 0 (and no rate, NULL) instead of
vanishing. Rates are NULL where the denominator is 0.

`report(conn, by, period, since, until)` -> list of dicts;
`render(rows, fmt)` -> text (table | csv | json);
`handle(conn, query)` -> (status, dict) for a JSON endpoint
(GET /api/report?by=window&period=day&since=2026-11-01&until=2026-11-22).
"""
import csv
import datetime as _dt
import io
import json
import time

DIMENSIONS = {
    # by: (key expression, name expression)
    "hall": ("''", "'全厅'"),
    "window": ("c.window_id", "w.name"),
    "clerk": ("COALESCE(NULLIF(c.clerk_id, ''), c.clerk_name)", "c.clerk_name"),
    "dept": ("COALESCE(NULLIF(c.dept_code, ''), NULLIF(w.dept_code, ''), NULLIF(c.dept_name, ''), w.dept_name)",
             "COALESCE(NULLIF(c.dept_name, ''), w.dept_name)"),
    "matter": ("COALESCE(NULLIF(c.task_code, ''), c.task_name)", "c.task_name"),
}
PERIODS = {  # label of the period holding local date X
    "day": "X",
    "week": "date(X, 'weekday 0', '-6 days')",
    "month": "strftime('%Y-%m', X)",
    "all": "'all'",
}
COLUMNS = ["period", "key", "name", "finished", "rated", "unrated", "rating_rate", "satisfied", "satisfaction_rate",
           "bad", "bad_closed_in_time", "rectify_rate", "stars_5", "stars_4", "stars_3", "stars_2", "stars_1"]
HEADERS_ZH = {"finished": "办结", "rated": "已评", "rating_rate": "评价率", "satisfaction_rate": "满意率",
              "bad": "差评", "rectify_rate": "整改率"}

SQL = """
WITH RECURSIVE
days(d) AS (
    SELECT date(:since, 'unixepoch', :off)
    UNION ALL
    SELECT date(d, '+1 day') FROM days WHERE d < date(:until - 0.001, 'unixepoch', :off)
),
periods AS (SELECT DISTINCT {period} AS period FROM days),
base AS (
    SELECT {dim_key} AS key, {dim_name} AS name,
           {period_of_case} AS period,
           r.stars AS stars, f.closed_at AS closed_at, f.deadline AS deadline
    FROM cases c
    LEFT JOIN windows w ON w.window_id = c.window_id
    LEFT JOIN ratings r ON r.case_id = c.case_id AND r.assess_number = 1
    LEFT JOIN followups f ON f.case_id = c.case_id
    WHERE c.finished_at IS NOT NULL AND c.state != 'cancelled'
      AND c.finished_at >= :since AND c.finished_at < :until
),
keys AS (
    {all_keys}
    SELECT key, MAX(name) AS name FROM base GROUP BY key
),
dims AS (SELECT key, MAX(name) AS name FROM keys GROUP BY key),
agg AS (
    SELECT key, period,
           COUNT(*) AS finished,
           COUNT(stars) AS rated,
           COALESCE(SUM(stars >= 3), 0) AS satisfied,
           COALESCE(SUM(stars <= :bad_max), 0) AS bad,
           COALESCE(SUM(stars <= :bad_max AND closed_at IS NOT NULL AND closed_at <= deadline), 0) AS bad_closed_in_time,
           COALESCE(SUM(stars = 5), 0) AS s5, COALESCE(SUM(stars = 4), 0) AS s4, COALESCE(SUM(stars = 3), 0) AS s3,
           COALESCE(SUM(stars = 2), 0) AS s2, COALESCE(SUM(stars = 1), 0) AS s1
    FROM base GROUP BY key, period
)
SELECT p.period, k.key, COALESCE(k.name, '') AS name,
       COALESCE(a.finished, 0) AS finished,
       COALESCE(a.rated, 0) AS rated,
       COALESCE(a.finished, 0) - COALESCE(a.rated, 0) AS unrated,
       ROUND(1.0 * a.rated / NULLIF(a.finished, 0), 4) AS rating_rate,
       COALESCE(a.satisfied, 0) AS satisfied,
       ROUND(1.0 * a.satisfied / NULLIF(a.rated, 0), 4) AS satisfaction_rate,
       COALESCE(a.bad, 0) AS bad,
       COALESCE(a.bad_closed_in_time, 0) AS bad_closed_in_time,
       ROUND(1.0 * a.bad_closed_in_time / NULLIF(a.bad, 0), 4) AS rectify_rate,
       COALESCE(a.s5, 0) AS stars_5, COALESCE(a.s4, 0) AS stars_4, COALESCE(a.s3, 0) AS stars_3,
       COALESCE(a.s2, 0) AS stars_2, COALESCE(a.s1, 0) AS stars_1
FROM periods p CROSS JOIN dims k
LEFT JOIN agg a ON a.key = k.key AND a.period = p.period
ORDER BY p.period, k.key
"""


def local_midnight(ts, utc_offset_hours=8):
    off = utc_offset_hours * 3600
    return (int(ts + off) // 86400) * 86400 - off


def parse_day(text, utc_offset_hours=8):
    """'2026-11-21' -> UNIX time of that local midnight."""
    d = _dt.date.fromisoformat(text)
    return (d - _dt.date(1970, 1, 1)).days * 86400 - utc_offset_hours * 3600


def report(conn, by="window", period="day", since=None, until=None, utc_offset_hours=8, bad_max_stars=2, now=None):
    if by not in DIMENSIONS:
        raise ValueError("by must be one of %s" % ", ".join(DIMENSIONS))
    if period not in PERIODS:
        raise ValueError("period must be one of %s" % ", ".join(PERIODS))
    now = time.time() if now is None else now
    if since is None:
        first = conn.execute("SELECT MIN(finished_at) FROM cases WHERE finished_at IS NOT NULL").fetchone()[0]
        since = local_midnight(first if first is not None else now, utc_offset_hours)
    if until is None:
        until = local_midnight(now, utc_offset_hours) + 86400
    if until <= since:
        raise ValueError("until must be after since")
    key, name = DIMENSIONS[by]
    all_keys = "SELECT window_id AS key, name FROM windows UNION ALL" if by == "window" else (
        "SELECT '' AS key, '全厅' AS name UNION ALL" if by == "hall" else "")
    sql = SQL.format(period=PERIODS[period].replace("X", "d"), dim_key=key, dim_name=name, all_keys=all_keys,
                     period_of_case=PERIODS[period].replace("X", "date(c.finished_at, 'unixepoch', :off)"))
    params = {"since": since, "until": until, "off": "%+d hours" % utc_offset_hours, "bad_max": bad_max_stars}
    cur = conn.execute(sql, params)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def _pct(v):
    return "-" if v is None else "%.1f%%" % (v * 100)


def render(rows, fmt="table"):
    if fmt == "json":
        return json.dumps(rows, ensure_ascii=False, indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k) for k in COLUMNS})
        return buf.getvalue()
    cols = ["period", "key", "name", "finished", "rated", "rating_rate", "satisfaction_rate", "bad", "rectify_rate",
            "stars_5", "stars_4", "stars_3", "stars_2", "stars_1"]
    heads = [HEADERS_ZH.get(c, c) for c in cols]
    table = [[_pct(r[c]) if c.endswith("_rate") else str(r[c]) for c in cols] for r in rows]

    def width(s):
        return sum(2 if ord(ch) > 0x2E80 else 1 for ch in s)

    ws = [max([width(h)] + [width(t[i]) for t in table]) for i, h in enumerate(heads)]

    def line(cells):
        return "  ".join(c + " " * (ws[i] - width(c)) for i, c in enumerate(cells)).rstrip()
    return "\n".join([line(heads)] + [line(t) for t in table]) + "\n"


def handle(conn, query, utc_offset_hours=8, now=None):
    """JSON endpoint: query dict (by, period, since, until as YYYY-MM-DD) -> (status, body dict)."""
    q = {k: (v[0] if isinstance(v, list) else v) for k, v in (query or {}).items()}
    try:
        since = parse_day(q["since"], utc_offset_hours) if q.get("since") else None
        until = parse_day(q["until"], utc_offset_hours) if q.get("until") else None
        rows = report(conn, q.get("by", "window"), q.get("period", "day"), since, until, utc_offset_hours, now=now)
    except ValueError as e:
        return 400, {"error": str(e)}
    return 200, {"by": q.get("by", "window"), "period": q.get("period", "day"), "rows": rows}


def route(store, method, path, now=None):
    """For the bridge's HTTP server, like statuspage.handle: (status, content_type, body bytes)
    for the paths owned here, None for any other.

      GET /api/report?by=&period=&since=YYYY-MM-DD&until=YYYY-MM-DD   the measures (JSON)
      GET /api/followups?state=&overdue=1&open=1                      差评 follow-ups (JSON)
      GET /api/upstream                                               queue depth, sync lag, sender
    `store`: the bridge Store (its .connect()) or a path to the SQLite file."""
    import sqlite3
    import urllib.parse

    u = urllib.parse.urlsplit(path)
    if u.path not in ("/api/report", "/api/followups", "/api/upstream"):
        return None
    if method != "GET":
        return 405, "application/json", b'{"error": "GET only"}'
    q = urllib.parse.parse_qs(u.query)
    conn = store.connect() if hasattr(store, "connect") else sqlite3.connect(str(store))
    try:
        if u.path == "/api/report":
            st, body = handle(conn, q, now=now)
        elif u.path == "/api/followups":
            from . import followup
            one = lambda k: (q.get(k) or [None])[0]  # noqa: E731
            st, body = 200, {"followups": followup.listing(
                conn, now, state=one("state"), overdue=True if one("overdue") in ("1", "true") else None,
                open_only=True if one("open") in ("1", "true") else None)}
        else:
            from .upstream import sender
            st, body = 200, sender.status(conn, now)
    finally:
        conn.close()
    return st, "application/json; charset=utf-8", json.dumps(body, ensure_ascii=False).encode()
