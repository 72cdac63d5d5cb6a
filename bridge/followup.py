"""差评 follow-up: every 1-2 star first rating opens one, with a deadline in working
days, and walks 待核实 -> 已核实 -> 已整改 -> 已反馈, each step with who / when / note
(table followups + followup_steps). Overdue = still open after the deadline, or
closed (已反馈) after it; 整改率 counts the ones closed in time (bridge/reports.py).

A re-rating after rectification (assessNumber 2, 补充评价) attaches to the same
case: `rerate()` stores ratings(case_id, 2), queues its outbox record
'rating:<project_no>:2' and notes it as a step.

Config [followup] (all optional):
  deadline_working_days = 7        # 15 in Sichuan, 5 in 德州 ...
  holidays = ["2026-10-01", ...]   # the hall's non-working days (法定节假日)
  workdays = ["2026-09-27", ...]   # weekend days that are working days (调休)
  timezone = "Asia/Shanghai"
  bad_max_stars = 2
The deadline is the end (24:00 local) of the N-th working day after the day the
差评 was given; the opening day itself does not count.
"""
import datetime as _dt
import json
import logging
import time
from zoneinfo import ZoneInfo

from .batch import insert_many
from .store import select_in

log = logging.getLogger("pingjia.followup")

STATES = ("待核实", "已核实", "已整改", "已反馈")
DEFAULTS = {"deadline_working_days": 7, "holidays": [], "workdays": [], "timezone": "Asia/Shanghai", "bad_max_stars": 2}


class FollowupError(ValueError):
    pass


def validate(cfg):
    """Errors in a [followup] config table (empty list = good)."""
    errors = []
    if not cfg:
        return errors
    if not isinstance(cfg, dict):
        return ["[followup] must be a table"]
    for k in cfg:
        if k not in DEFAULTS:
            errors.append("[followup] unknown key %r (known: %s)" % (k, ", ".join(sorted(DEFAULTS))))
    n = cfg.get("deadline_working_days", 7)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 365:
        errors.append("[followup] deadline_working_days must be an integer 1..365")
    for key in ("holidays", "workdays"):
        v = cfg.get(key, [])
        if not isinstance(v, list):
            errors.append("[followup] %s must be a list of dates" % key)
            continue
        for d in v:
            try:
                _dt.date.fromisoformat(str(d))
            except ValueError:
                errors.append("[followup] %s: %r is not a date YYYY-MM-DD" % (key, d))
    try:
        ZoneInfo(cfg.get("timezone", "Asia/Shanghai"))
    except Exception:
        errors.append("[followup] timezone %r is unknown" % cfg.get("timezone"))
    b = cfg.get("bad_max_stars", 2)
    if b not in (1, 2):
        errors.append("[followup] bad_max_stars must be 1 or 2")
    return errors


class Calendar:
    """Working days: Monday-Friday minus holidays, plus make-up workdays."""

    def __init__(self, holidays=(), workdays=(), timezone="Asia/Shanghai"):
        self.holidays = {_dt.date.fromisoformat(str(d)) for d in holidays}
        self.workdays = {_dt.date.fromisoformat(str(d)) for d in workdays}
        self.tz = ZoneInfo(timezone)
        self._memo = {}  # (15-minute slot of opened_at, working_days) -> deadline

    @classmethod
    def from_cfg(cls, cfg):
        c = dict(DEFAULTS, **(cfg or {}))
        return cls(c["holidays"], c["workdays"], c["timezone"])

    def is_working(self, d):
        if d in self.workdays:
            return True
        if d in self.holidays:
            return False
        return d.weekday() < 5

    def deadline(self, opened_at, working_days):
        """UNIX time of the end of the N-th working day after opened_at's local day. Remembered per
        15 minutes of opened_at (every zone's UTC offset is a multiple of 15 minutes, so a local day
        starts on such a boundary): a burst of 差评 computes it once."""
        key = (int(opened_at // 900), working_days)
        got = self._memo.get(key)
        if got is None:
            if len(self._memo) > 4096:
                self._memo.clear()
            got = self._memo[key] = self._deadline(opened_at, working_days)
        return got

    def _deadline(self, opened_at, working_days):
        d = _dt.datetime.fromtimestamp(opened_at, self.tz).date()
        n = 0
        while n < working_days:
            d += _dt.timedelta(days=1)
            if self.is_working(d):
                n += 1
        end = _dt.datetime.combine(d + _dt.timedelta(days=1), _dt.time(0, 0), tzinfo=self.tz)
        return end.timestamp()


def _row(conn, sql, params=()):
    cur = conn.execute(sql, params)
    r = cur.fetchone()
    return None if r is None else dict(zip([d[0] for d in cur.description], r))


def _rows(conn, sql, params=()):
    cur = conn.execute(sql, params)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


class _tx:
    def __init__(self, conn):
        self.conn = conn

    def __enter__(self):
        self.own = not self.conn.in_transaction
        if self.own:
            self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, et, ev, tb):
        if self.own:
            self.conn.execute("COMMIT" if et is None else "ROLLBACK")
        return False


def _audit(conn, now, actor, action, subject, detail):
    conn.execute("INSERT INTO audit (at, actor, action, subject, detail) VALUES (?,?,?,?,?)",
                 (now, actor, action, subject, detail))


def sync_case(conn, case_id, now, cfg=None):
    """Bring one case's follow-up in line with its first rating: open one for a
    差评; withdraw an untouched one when the 差评 was replaced within the grace
    (mis-press). Returns 'opened', 'withdrawn' or None. Idempotent."""
    return sync_cases(conn, [case_id], now, cfg).get(case_id)


_calendars = {}


def _calendar(c):
    """The Calendar of a follow-up config, built once per config (its deadline memo lives on)."""
    key = (tuple(map(str, c["holidays"])), tuple(map(str, c["workdays"])), c["timezone"])
    cal = _calendars.get(key)
    if cal is None:
        if len(_calendars) > 64:
            _calendars.clear()
        cal = _calendars[key] = Calendar(c["holidays"], c["workdays"], c["timezone"])
    return cal


def sync_cases(conn, case_ids, now, cfg=None):
    """sync_case for many cases in a few statements (the hub's writer calls it once per batch).
    Returns {case_id: 'opened' | 'withdrawn' | None}."""
    c = dict(DEFAULTS, **(cfg or {}))
    ids = sorted(set(case_ids))
    out = dict.fromkeys(ids)
    if not ids:
        return out
    with _tx(conn):
        ratings = {r[0]: tuple(r[1:]) for r in select_in(
            conn, "SELECT case_id, stars, reasons, pressed_at FROM ratings WHERE assess_number = 1 AND case_id IN (%s)", ids)}
        states = {r[0]: r[1] for r in select_in(conn, "SELECT case_id, state FROM followups WHERE case_id IN (%s)", ids)}
        cal, opened, steps = _calendar(c), [], []
        for cid in ids:
            r, f = ratings.get(cid), states.get(cid)
            if r is not None and r[0] <= c["bad_max_stars"] and f is None:
                opened.append((cid, STATES[0], now, cal.deadline(r[2], c["deadline_working_days"])))
                steps.append((cid, STATES[0], now, "bridge", "%d★ 差评%s" % (r[0], ", 原因 " + r[1] if r[1] else "")))
                out[cid] = "opened"
            elif f is not None and (r is None or r[0] > c["bad_max_stars"]) and f == STATES[0]:
                n = conn.execute("SELECT COUNT(*) FROM followup_steps WHERE case_id = ?", (cid,)).fetchone()[0]
                if n <= 1:
                    conn.execute("DELETE FROM followup_steps WHERE case_id = ?", (cid,))
                    conn.execute("DELETE FROM followups WHERE case_id = ?", (cid,))
                    _audit(conn, now, "bridge", "followup.withdrawn", str(cid), "差评 replaced within the grace by %s★" % (r and r[0]))
                    out[cid] = "withdrawn"
        if opened:
            insert_many(conn, "INSERT INTO followups (case_id, state, opened_at, deadline) VALUES ", 4, opened)
            insert_many(conn, "INSERT INTO followup_steps (case_id, state, at, who, note) VALUES ", 5, steps)
    return out


def sync_missing(conn, now, cfg=None):
    """Open follow-ups for every 差评 that has none (catch-up after a restart or without hooks)."""
    c = dict(DEFAULTS, **(cfg or {}))
    ids = [r[0] for r in conn.execute(
        "SELECT r.case_id FROM ratings r LEFT JOIN followups f ON f.case_id = r.case_id "
        "WHERE r.assess_number = 1 AND r.stars <= 2 AND r.stars <= ? AND f.case_id IS NULL",  # <= 2: index ratings_bad
        (c["bad_max_stars"],))]
    return sum(sync_case(conn, i, now, c) == "opened" for i in ids)


def _case_id(conn, ref):
    """A case by case_id (int) or project_no (str)."""
    r = conn.execute("SELECT case_id FROM cases WHERE project_no = ?", (str(ref),)).fetchone()
    if r is None and str(ref).isdigit():
        r = conn.execute("SELECT case_id FROM cases WHERE case_id = ?", (int(ref),)).fetchone()
    if r is None:
        raise FollowupError("no case %s" % ref)
    return r[0]


def advance(conn, ref, who, note="", to_state=None, now=None):
    """Move a follow-up one step on (to `to_state`, which must be the next one). Returns the new state."""
    now = time.time() if now is None else now
    if not who or not str(who).strip():
        raise FollowupError("who did it is required")
    cid = _case_id(conn, ref)
    with _tx(conn):
        f = _row(conn, "SELECT state FROM followups WHERE case_id = ?", (cid,))
        if f is None:
            raise FollowupError("case %s has no 差评 follow-up" % ref)
        i = STATES.index(f["state"])
        if i == len(STATES) - 1:
            raise FollowupError("follow-up of case %s is already %s" % (ref, f["state"]))
        nxt = STATES[i + 1]
        if to_state and to_state != nxt:
            raise FollowupError("case %s is %s: the next state is %s, not %s" % (ref, f["state"], nxt, to_state))
        closed = now if nxt == STATES[-1] else None
        conn.execute("UPDATE followups SET state = ?, closed_at = COALESCE(?, closed_at) WHERE case_id = ?", (nxt, closed, cid))
        conn.execute("INSERT INTO followup_steps (case_id, state, at, who, note) VALUES (?,?,?,?,?)", (cid, nxt, now, who, note or ""))
        _audit(conn, now, "cli:%s" % who, "followup.advance", str(cid), "%s -> %s %s" % (f["state"], nxt, note or ""))
    return nxt


def rerate(conn, ref, stars, who, reasons="", device_id="followup", seq=0, now=None):
    """Record the citizen's re-rating after rectification as assessNumber 2 of the same case."""
    now = time.time() if now is None else now
    if stars not in (1, 2, 3, 4, 5):
        raise FollowupError("stars must be 1..5")
    cid = _case_id(conn, ref)
    with _tx(conn):
        f = _row(conn, "SELECT state FROM followups WHERE case_id = ?", (cid,))
        if f is None:
            raise FollowupError("case %s has no 差评 follow-up" % ref)
        if STATES.index(f["state"]) < STATES.index("已整改"):
            raise FollowupError("case %s is %s: a re-rating comes after rectification (已整改)" % (ref, f["state"]))
        if conn.execute("SELECT 1 FROM ratings WHERE case_id = ? AND assess_number = 2", (cid,)).fetchone():
            raise FollowupError("case %s already has its follow-up rating (assessNumber 2)" % ref)
        pno = conn.execute("SELECT project_no FROM cases WHERE case_id = ?", (cid,)).fetchone()[0]
        conn.execute("INSERT INTO ratings (case_id, assess_number, stars, reasons, device_id, seq, pressed_at, updated_at) "
                     "VALUES (?,2,?,?,?,?,?,?)", (cid, stars, reasons, device_id, seq, now, now))
        conn.execute("INSERT INTO outbox (kind, case_id, assess_number, idem_key, next_try_at, created_at) VALUES "
                     "('rating', ?, 2, ?, ?, ?) ON CONFLICT(idem_key) DO NOTHING", (cid, "rating:%s:2" % pno, now, now))
        conn.execute("INSERT INTO followup_steps (case_id, state, at, who, note) VALUES (?,?,?,?,?)",
                     (cid, f["state"], now, who, "补充评价 %d★ (assessNumber 2)" % stars))
        _audit(conn, now, "cli:%s" % who, "rating.followup", pno, "assessNumber 2: %d stars" % stars)
    return cid


LIST_SQL = """
SELECT c.case_id, c.project_no, c.window_id, c.clerk_name, c.task_name, c.dept_name,
       r1.stars, r1.reasons, r2.stars AS rerated_stars,
       f.state, f.opened_at, f.deadline, f.closed_at,
       CASE WHEN (f.closed_at IS NULL AND f.deadline < :now) OR f.closed_at > f.deadline THEN 1 ELSE 0 END AS overdue,
       (SELECT who || ' ' || note FROM followup_steps s WHERE s.case_id = f.case_id ORDER BY s.at DESC, s.id DESC LIMIT 1) AS last_step
FROM followups f
JOIN cases c ON c.case_id = f.case_id
LEFT JOIN ratings r1 ON r1.case_id = f.case_id AND r1.assess_number = 1
LEFT JOIN ratings r2 ON r2.case_id = f.case_id AND r2.assess_number = 2
WHERE (:state IS NULL OR f.state = :state)
  AND (:overdue IS NULL OR (CASE WHEN (f.closed_at IS NULL AND f.deadline < :now) OR f.closed_at > f.deadline THEN 1 ELSE 0 END) = :overdue)
  AND (:open IS NULL OR (f.closed_at IS NULL) = :open)
ORDER BY overdue DESC, f.deadline, f.case_id
"""


def listing(conn, now=None, state=None, overdue=None, open_only=None):
    now = time.time() if now is None else now
    return _rows(conn, LIST_SQL, {"now": now, "state": state, "overdue": None if overdue is None else int(overdue),
                                  "open": None if open_only is None else int(open_only)})


def show(conn, ref, now=None):
    cid = _case_id(conn, ref)
    rows = [r for r in listing(conn, now) if r["case_id"] == cid]
    if not rows:
        raise FollowupError("case %s has no 差评 follow-up" % ref)
    out = rows[0]
    out["steps"] = _rows(conn, "SELECT state, at, who, note FROM followup_steps WHERE case_id = ? ORDER BY at, id", (cid,))
    return out


def wire(hub, cfg=None):
    """Register on hub.on_rated_tx: open (or withdraw) follow-ups in the same transaction that
    counted (or replaced) the ratings, so a 差评 never commits without its follow-up."""
    bad_max = dict(DEFAULTS, **(cfg or {}))["bad_max_stars"]

    def on_rated(conn, cases, now):
        # a case's first rating, and a good one, has no follow-up to open or withdraw
        ids = [c["case_id"] for c in cases if c.get("stars", 0) <= bad_max or c.get("replaced")]
        done = [r for r in sync_cases(conn, ids, now, cfg).values() if r]
        if done:
            log.info("followups opened=%d withdrawn=%d", done.count("opened"), done.count("withdrawn"))
    hub.on_rated_tx.append(on_rated)
    return on_rated


def dumps(obj):
    return json.dumps(obj, ensure_ascii=False, indent=2)
