"""The outbox worker: pending records -> mapping profile -> signed batch POST.

State of an outbox row (table `outbox`, bridge/migrations.py):
  pending      waiting; sent when next_try_at <= now
  sent         the platform accepted it (or acknowledged it as a repeat)
  quarantined  the profile could not map it, or the platform rejected it; the
               reason is in last_error. Never retried by itself, never dropped:
               `repush` (CLI `pingjia re-push`) puts it back to pending.
  skipped      an unrated-case record the profile does not send upstream
               (the SMS gateway still gets its event from bridge/unrated.py)

Failures of a whole request (connection refused, timeout, 5xx, 429, bad
answer) leave the records pending with attempts+1 and next_try_at pushed by
exponential backoff with jitter; a Retry-After answer moves it to at least
that time. After `breaker_failures` consecutive failed requests the circuit
opens and nothing is sent for `breaker_cooldown` seconds; then one probe batch.

A kill at any moment is safe: a record is marked sent only after the platform
answered for it, so a restart re-sends what was in flight under the same
idempotency key and the platform acknowledges the repeat.
"""
import email.utils
import hashlib
import http.client
import json
import logging
import random
import socket
import sqlite3
import threading
import time
import urllib.parse
import weakref
from pathlib import Path

from . import mapping, signing

log = logging.getLogger("pingjia.upstream")

DEFAULTS = {
    "enabled": None,  # default: true when endpoint is set
    "endpoint": "",
    "profile": "zhejiang",
    "sign_alg": "hmac-sha256",
    "sign_key": "",
    "sign_key_file": "",
    "app_id": "",
    "area_code": "",
    "data_source": "",
    "hall": "",
    "batch_size": 200,
    "connect_timeout": 5.0,
    "timeout": 15.0,
    "backoff_base": 2.0,
    "backoff_max": 600.0,
    "breaker_failures": 5,
    "breaker_cooldown": 60.0,
    "max_retry_after": 3600.0,
    "poll_interval": 1.0,
    "verify_tls": True,
    "ca_file": "",
    "followup": {},   # [upstream.followup]: bridge/followup.py
    "unrated": {},    # [upstream.unrated]: bridge/unrated.py
}
SUBTABLES = ("followup", "unrated")

_LIVE = weakref.WeakSet()
_ENC = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False)  # running senders, for status()


def _num(cfg, key, errors, lo, hi, integer=False):
    v = cfg.get(key, DEFAULTS[key])
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not isinstance(v, int)):
        errors.append("[upstream] %s must be %s" % (key, "an integer" if integer else "a number"))
    elif not lo <= v <= hi:
        errors.append("[upstream] %s = %s is outside %s..%s" % (key, v, lo, hi))


def enabled(cfg):
    """Upstream sync is on when [upstream] names an endpoint (or says enabled = true)."""
    return bool(cfg.get("enabled", bool(cfg.get("endpoint"))))


def validate(cfg):
    """Errors in an [upstream] config table (empty list = good). For the core's config loader."""
    errors = []
    if cfg is None:
        return errors
    if not isinstance(cfg, dict):
        return ["[upstream] must be a table"]
    for k in cfg:
        if k not in DEFAULTS:
            errors.append("[upstream] unknown key %r (known: %s)" % (k, ", ".join(sorted(DEFAULTS))))
    from .. import followup, unrated
    for name, mod in (("followup", followup), ("unrated", unrated)):
        sub = cfg.get(name, {})
        errors += [e.replace("[%s]" % name, "[upstream.%s]" % name) for e in mod.validate(sub)]
    if not enabled(cfg):
        return errors
    ep = cfg.get("endpoint", "")
    u = urllib.parse.urlsplit(ep) if isinstance(ep, str) else None
    if not ep:
        errors.append("[upstream] endpoint is required (the platform's URL, e.g. https://platform.example/api/evaluations)")
    elif u is None or u.scheme not in ("http", "https") or not u.hostname:
        errors.append("[upstream] endpoint %r is not an http(s) URL" % (ep,))
    try:
        mapping.load(cfg.get("profile", DEFAULTS["profile"]))
    except mapping.ProfileError as e:
        errors.append("[upstream] profile: %s" % e)
    alg = cfg.get("sign_alg", DEFAULTS["sign_alg"])
    if alg != "none":
        why = signing.available(alg)
        if why:
            errors.append("[upstream] sign_alg: %s" % why)
        if not cfg.get("sign_key") and not cfg.get("sign_key_file"):
            errors.append("[upstream] sign_key or sign_key_file is required with sign_alg = %r" % alg)
        kf = cfg.get("sign_key_file")
        if kf and not Path(kf).is_file():
            errors.append("[upstream] sign_key_file %r does not exist" % kf)
    _num(cfg, "batch_size", errors, 1, 5000, integer=True)
    _num(cfg, "connect_timeout", errors, 0.01, 300)
    _num(cfg, "timeout", errors, 0.01, 600)
    _num(cfg, "backoff_base", errors, 0.001, 3600)
    _num(cfg, "backoff_max", errors, 0.001, 86400)
    _num(cfg, "breaker_failures", errors, 1, 1000, integer=True)
    _num(cfg, "breaker_cooldown", errors, 0, 86400)
    _num(cfg, "max_retry_after", errors, 0, 86400)
    _num(cfg, "poll_interval", errors, 0.001, 3600)
    if cfg.get("ca_file") and not Path(cfg["ca_file"]).is_file():
        errors.append("[upstream] ca_file %r does not exist" % cfg["ca_file"])
    return errors


def connect(db):
    """A sqlite3 connection of our own on the bridge's file (path, or an object with .path / .conn)."""
    if isinstance(db, sqlite3.Connection):
        return db
    for attr in ("path", "db_path"):
        p = getattr(db, attr, None)
        if isinstance(p, (str, Path)):
            db = p
            break
    else:
        conn = getattr(db, "conn", None)
        if isinstance(conn, sqlite3.Connection):
            return conn
    conn = sqlite3.connect(str(db), timeout=30, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def status(db, now=None):
    """Queue depth and sync lag for the status endpoint (JSON-able dict)."""
    conn = connect(db)
    try:
        return _status(conn, now)
    finally:
        if conn is not db and conn is not getattr(db, "conn", None):
            conn.close()


def _status(conn, now=None):
    now = time.time() if now is None else now
    counts = dict(conn.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state").fetchall())
    due, oldest = conn.execute(
        "SELECT SUM(next_try_at <= ?), MIN(created_at) FROM outbox WHERE state = 'pending'", (now,)).fetchone()
    last_sent = conn.execute("SELECT MAX(sent_at) FROM outbox WHERE state = 'sent'").fetchone()[0]
    out = {
        "pending": counts.get("pending", 0),
        "due": due or 0,
        "sent": counts.get("sent", 0),
        "quarantined": counts.get("quarantined", 0),
        "skipped": counts.get("skipped", 0),
        "superseded": counts.get("superseded", 0),
        "oldest_pending_at": oldest,
        "sync_lag_s": round(now - oldest, 3) if oldest is not None else 0.0,
        "last_sent_at": last_sent,
        "quarantine_reasons": [{"reason": r, "count": n} for r, n in conn.execute(
            "SELECT last_error, COUNT(*) FROM outbox WHERE state = 'quarantined' GROUP BY last_error "
            "ORDER BY COUNT(*) DESC, last_error LIMIT 5")],
        "sender": None,
    }
    live = [s for s in list(_LIVE) if s.running]
    if live:
        out["sender"] = live[0].state(now)
    return out


def repush(db, record_ids=(), case_ids=(), since=None, until=None, states=("quarantined", "skipped"),
           actor="cli", now=None):
    """Put records back to pending (due now). Selects by record id, case id, and/or
    created_at in [since, until); only rows in `states`. Returns the number moved."""
    conn = connect(db)
    try:
        return _repush(conn, record_ids, case_ids, since, until, states, actor, now)
    finally:
        if conn is not db and conn is not getattr(db, "conn", None):
            conn.close()


def _repush(conn, record_ids, case_ids, since, until, states, actor, now):
    now = time.time() if now is None else now
    where, params = ["state IN (%s)" % ",".join("?" * len(states))], list(states)
    sel = []
    if record_ids:
        sel.append("id IN (%s)" % ",".join("?" * len(record_ids)))
        params += list(record_ids)
    if case_ids:
        sel.append("case_id IN (%s)" % ",".join("?" * len(case_ids)))
        params += list(case_ids)
    if sel:
        where.append("(" + " OR ".join(sel) + ")")
    if since is not None:
        where.append("created_at >= ?")
        params.append(since)
    if until is not None:
        where.append("created_at < ?")
        params.append(until)
    if not (record_ids or case_ids or since is not None or until is not None):
        raise ValueError("re-push needs a record, a case or a time range")
    with _tx(conn):
        n = conn.execute(
            "UPDATE outbox SET state = 'pending', next_try_at = ?, attempts = 0, "
            "last_error = 're-pushed from ' || state || ': ' || last_error WHERE " + " AND ".join(where),
            [now] + params).rowcount
        conn.execute("INSERT INTO audit (at, actor, action, subject, detail) VALUES (?,?,?,?,?)",
                     (now, actor, "upstream.repush", "", json.dumps(
                         {"records": list(record_ids), "cases": list(case_ids), "since": since, "until": until,
                          "states": list(states), "moved": n}, ensure_ascii=False)))
    return n


class _tx:
    """BEGIN IMMEDIATE ... COMMIT on an autocommit connection (or plain commit otherwise)."""

    def __init__(self, conn):
        self.conn = conn

    def __enter__(self):
        if self.conn.isolation_level is None and not self.conn.in_transaction:
            self.conn.execute("BEGIN IMMEDIATE")
            self.own = True
        else:
            self.own = False
        return self.conn

    def __exit__(self, et, ev, tb):
        if et is None:
            self.conn.commit()
        elif self.conn.in_transaction:
            self.conn.rollback()
        return False


REFUSED_WHOLE = (400, 413, 422)  # the request itself is refused: something in it, not the platform's health


class BatchFailed(Exception):
    def __init__(self, reason, retry_after=None, status=None):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.status = status


def parse_retry_after(value, now):
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError):
        return None


SELECT_DUE = """
SELECT o.id, o.kind, o.case_id, o.assess_number, o.idem_key, o.attempts, o.created_at,
       c.project_no, c.task_code, c.task_name, c.dept_code, c.dept_name, c.clerk_id, c.clerk_name,
       c.user_prop, c.contact_ref, c.window_id, c.finished_at,
       w.name AS window_name, w.dept_code AS window_dept_code, w.dept_name AS window_dept_name,
       r.stars, r.reasons, r.pressed_at, r.device_id, r.seq
FROM outbox o
JOIN cases c ON c.case_id = o.case_id
LEFT JOIN windows w ON w.window_id = c.window_id
LEFT JOIN ratings r ON r.case_id = o.case_id AND r.assess_number = o.assess_number AND o.kind = 'rating'
WHERE o.state = 'pending' AND o.next_try_at <= ?
ORDER BY o.next_try_at, o.id
LIMIT ?
"""


class Sender:
    """One worker over the bridge's SQLite file. `run_once()` sends one batch;
    `run(stop)` loops until `stop` (a threading.Event) is set; `wake()` from any
    thread (the hub's on_rated hook) shortens the wait."""

    def __init__(self, db, cfg, clock=time.time, rng=None):
        errors = validate(cfg)
        if errors:
            raise ValueError("; ".join(errors))
        self.cfg = dict(DEFAULTS, **{k: v for k, v in cfg.items() if k not in SUBTABLES})
        self.conn = connect(db)
        self.clock = clock
        self.rng = rng or random.Random()
        self.profile = mapping.load(self.cfg["profile"])
        self.key = None
        if self.cfg["sign_alg"] != "none":
            k = self.cfg["sign_key"] or Path(self.cfg["sign_key_file"]).read_text().strip()
            self.key = signing.key_bytes(k)
        u = urllib.parse.urlsplit(self.cfg["endpoint"])
        self.url = u
        self.path = (u.path or "/") + ("?" + u.query if u.query else "")
        self.ctx = {"area_code": self.cfg["area_code"], "data_source": self.cfg["data_source"], "hall": self.cfg["hall"]}
        self._http = None
        self._wake = threading.Event()
        self._isolate = set()  # outbox ids to send alone (their batch was refused as a whole)
        self.failures = 0  # consecutive failed requests
        self.open_until = 0.0
        self.last_error = ""
        self.last_ok_at = None
        self.running = False
        self.totals = {"sent": 0, "duplicate": 0, "quarantined": 0, "skipped": 0, "failed_requests": 0, "requests": 0}
        _LIVE.add(self)

    # -- circuit -----------------------------------------------------------------------
    def state(self, now=None):
        now = self.clock() if now is None else now
        circuit = "open" if now < self.open_until else ("half-open" if self.failures >= self.cfg["breaker_failures"] else "closed")
        return {"circuit": circuit, "open_for_s": round(max(0.0, self.open_until - now), 3),
                "consecutive_failures": self.failures, "last_error": self.last_error,
                "last_ok_at": self.last_ok_at, "profile": self.profile.name, "endpoint": self.cfg["endpoint"],
                **self.totals}

    def reload_profile(self):
        self.profile = mapping.load(self.cfg["profile"])

    def wake(self, *args, **kw):
        self._wake.set()

    # -- HTTP -------------------------------------------------------------------------
    def _conn(self):
        if self._http is None:
            u = self.url
            if u.scheme == "https":
                import ssl
                ctx = ssl.create_default_context(cafile=self.cfg["ca_file"] or None)
                if not self.cfg["verify_tls"]:
                    ctx.check_hostname = False
                    ctx.verify_mode = ssl.CERT_NONE
                c = http.client.HTTPSConnection(u.hostname, u.port or 443, timeout=self.cfg["connect_timeout"], context=ctx)
            else:
                c = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=self.cfg["connect_timeout"])
            c.connect()
            c.sock.settimeout(self.cfg["timeout"])
            c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._http = c
        return self._http

    def close(self):
        if self._http is not None:
            self._http.close()
            self._http = None

    def _request(self, body, batch_key):
        """Send one batch's request (the answer is read by _response)."""
        headers = {"Content-Type": "application/json; charset=utf-8", "Idempotency-Key": batch_key}
        if self.key is not None:
            headers.update(signing.sign_headers(self.key, "POST", self.path, body, self.cfg["sign_alg"],
                                                self.cfg["app_id"], now=time.time()))
        try:
            c = self._conn()
            c.request("POST", self.path, body=body, headers=headers)
        except (OSError, http.client.HTTPException) as e:
            self.close()
            raise BatchFailed("%s: %s" % (type(e).__name__, e) if str(e) else type(e).__name__) from None

    def _response(self):
        """Read the answer to the request in flight: the results list, or BatchFailed."""
        now = self.clock()
        try:
            resp = self._http.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException, AttributeError) as e:
            self.close()
            raise BatchFailed("%s: %s" % (type(e).__name__, e) if str(e) else type(e).__name__) from None
        if resp.getheader("Connection", "").lower() == "close":
            self.close()
        if resp.status >= 300:
            ra = parse_retry_after(resp.getheader("Retry-After"), now)
            text = data[:200].decode("utf-8", "replace")
            raise BatchFailed("HTTP %d %s" % (resp.status, text), retry_after=ra, status=resp.status)
        try:
            answer = json.loads(data)
            results = answer["results"]
            if not isinstance(results, list):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise BatchFailed("answer is not {\"results\": [...]}: %r" % data[:200]) from None
        return results

    def post(self, body, batch_key):
        """POST one batch; the parsed results, or BatchFailed."""
        self._request(body, batch_key)
        return self._response()

    # -- one batch ----------------------------------------------------------------------
    def _backoff(self, attempts):
        d = min(self.cfg["backoff_max"], self.cfg["backoff_base"] * (2 ** min(attempts - 1, 40)))
        return d / 2 + self.rng.uniform(0, d / 2)

    def _prepare(self, now, exclude=()):
        """Select and map the next due batch (nothing written yet). None when nothing is due."""
        isolate = sorted(self._isolate - set(exclude))
        if isolate:  # records of a batch the platform refused as a whole: one per request, to find the bad one
            self._isolate.discard(isolate[0])
            cur = self.conn.execute(SELECT_DUE.replace("ORDER BY", "AND o.id = ?\nORDER BY"), (now, isolate[0], 1))
        elif exclude:
            sql = SELECT_DUE.replace("ORDER BY", "AND o.id NOT IN (%s)\nORDER BY" % ",".join("?" * len(exclude)))
            cur = self.conn.execute(sql, (now, *exclude, self.cfg["batch_size"]))
        else:
            cur = self.conn.execute(SELECT_DUE, (now, self.cfg["batch_size"]))
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, r)) for r in cur.fetchall()]
        if not rows:
            return None
        b = {"rows": rows, "ids": {}, "local_q": [], "skipped": [], "body": None}
        ratings, unrated = [], []
        prof = self.profile
        for r in rows:
            try:
                if r["kind"] == "unrated":
                    if not prof.unrated_send:
                        b["skipped"].append(r["id"])
                        continue
                    unrated.append(prof.map_unrated(r, self.ctx))
                else:
                    ratings.append(prof.map_rating(r, self.ctx))
                b["ids"][r["idem_key"]] = r
            except mapping.MappingError as e:
                b["local_q"].append((r, "mapping: %s" % e))
        if b["ids"]:
            b["body"] = _ENC.encode({"profile": prof.name, "records": ratings, "unrated": unrated}).encode()
            # Idempotency-Key header: the record's own key for a batch of one, else one derived from the batch's keys
            b["key"] = next(iter(b["ids"])) if len(b["ids"]) == 1 else \
                hashlib.sha256("\n".join(sorted(b["ids"])).encode()).hexdigest()[:32]
        return b

    def _start(self, b):
        """Send the batch's request; a failure is kept in the batch for _finish."""
        b["failure"] = None
        if b["body"] is not None:
            self.totals["requests"] += 1
            try:
                self._request(b["body"], b["key"])
            except BatchFailed as e:
                b["failure"] = e

    def _finish(self, b):
        """Read the answer and write every record's outcome in one transaction. Returns stats."""
        results, failure = [], b["failure"]
        ids, rows, skipped, local_q = b["ids"], b["rows"], b["skipped"], b["local_q"]
        if b["body"] is not None and failure is None:
            try:
                results = self._response()
            except BatchFailed as e:
                failure = e
        stats = {"batch": len(rows), "sent": 0, "duplicate": 0, "quarantined": 0, "skipped": len(skipped), "retry": 0, "wait": 0.0}
        now = self.clock()
        done, quarantine, retry = [], [], []
        isolate_now = False
        if failure is None:
            seen = set()
            for res in results:
                if not isinstance(res, dict):
                    continue
                k = res.get("idemKey") or res.get("idem_key")
                r = ids.get(k)
                if r is None or k in seen:
                    continue
                seen.add(k)
                st = res.get("status")
                if st in ("accepted", "duplicate"):
                    done.append(r["id"])
                    stats["sent"] += 1
                    if st == "duplicate":
                        stats["duplicate"] += 1
                elif st == "rejected":
                    quarantine.append((r, "platform: %s" % (res.get("reason") or "rejected without a reason")))
                else:
                    retry.append((r, "platform answered %r for this record" % st))
            for k, r in ids.items():
                if k not in seen:
                    retry.append((r, "platform's answer did not mention this record"))
        elif failure.status in REFUSED_WHOLE and len(ids) == 1:
            # the platform refuses this one record outright (400/413/422): a per-record rejection
            quarantine = [(r, "platform: %s" % failure.reason) for r in ids.values()]
            failure = None
        elif failure.status in REFUSED_WHOLE:
            # a batch refused as a whole: send its records one by one (now) to single out the bad one,
            # instead of retrying the same batch forever; not a platform outage, so no backoff, no circuit
            self._isolate.update(r["id"] for r in ids.values())
            retry = [(r, "batch refused (%s); resent one by one" % failure.reason) for r in ids.values()]
            isolate_now = True
            failure = None
        else:
            retry = [(r, failure.reason) for r in ids.values()]
        quarantine += local_q
        retry_after = failure.retry_after if failure is not None else None
        if retry_after is not None:
            retry_after = min(retry_after, self.cfg["max_retry_after"])
        with _tx(self.conn):
            if done:
                self.conn.executemany(
                    "UPDATE outbox SET state = 'sent', sent_at = ?, attempts = attempts + 1, last_error = '' "
                    "WHERE id = ? AND state = 'pending'", [(now, i) for i in done])
            if skipped:
                self.conn.executemany(
                    "UPDATE outbox SET state = 'skipped', last_error = ? WHERE id = ? AND state = 'pending'",
                    [("profile %s does not send unrated records" % self.profile.name, i) for i in skipped])
            if quarantine:
                self.conn.executemany(
                    "UPDATE outbox SET state = 'quarantined', attempts = attempts + 1, last_error = ? "
                    "WHERE id = ? AND state = 'pending'", [(why[:500], r["id"]) for r, why in quarantine])
            if retry:
                upd = []
                for r, why in retry:
                    delay = 0.0 if isolate_now else self._backoff(r["attempts"] + 1)
                    if retry_after is not None:
                        delay = max(delay, retry_after)
                    upd.append((now + delay, why[:500], r["id"]))
                self.conn.executemany(
                    "UPDATE outbox SET attempts = attempts + 1, next_try_at = ?, last_error = ? "
                    "WHERE id = ? AND state = 'pending'", upd)
        if quarantine:  # one line per batch: a platform that refuses everything must not flood the journal
            r, why = quarantine[0]
            log.warning("upstream: %d record(s) quarantined, e.g. outbox %d (%s): %s", len(quarantine), r["id"], r["idem_key"], why)
            for r, why in quarantine[1:]:
                log.info("upstream: outbox record %d (%s) quarantined: %s", r["id"], r["idem_key"], why)
        stats["quarantined"] = len(quarantine)
        stats["retry"] = len(retry)
        for k in ("sent", "duplicate", "quarantined", "skipped"):
            self.totals[k] += stats[k]
        if failure is not None:
            self.totals["failed_requests"] += 1
            self.failures += 1
            self.last_error = failure.reason
            level = logging.WARNING if self.failures == 1 else logging.INFO
            log.log(level, "upstream: batch of %d failed (%d in a row): %s", len(ids), self.failures, failure.reason)
            if retry_after is not None:
                self.open_until = now + retry_after
                log.info("upstream: platform asked to retry after %.1fs", retry_after)
            if self.failures >= self.cfg["breaker_failures"]:
                self.open_until = max(self.open_until, now + self.cfg["breaker_cooldown"])
                if self.failures == self.cfg["breaker_failures"]:
                    log.warning("upstream: circuit open after %d failed requests; next try in %.1fs",
                                self.failures, self.open_until - now)
            stats["wait"] = max(0.0, self.open_until - now)
        elif ids:
            if self.failures >= self.cfg["breaker_failures"]:
                log.info("upstream: platform answers again; circuit closed")
            self.failures = 0
            self.last_ok_at = now
        return stats

    def run_once(self):
        """Send one batch of due records. Returns a dict of what happened
        ('wait' > 0 when nothing was due or the circuit is open)."""
        now = self.clock()
        if now < self.open_until:
            return {"wait": self.open_until - now}
        b = self._prepare(now)
        if b is None:
            return self._idle(now)
        self._start(b)
        return self._finish(b)

    def _idle(self, now):
        nxt = self.conn.execute("SELECT MIN(next_try_at) FROM outbox WHERE state = 'pending'").fetchone()[0]
        return {"wait": self.cfg["poll_interval"] if nxt is None else min(self.cfg["poll_interval"], max(0.0, nxt - now))}

    def pump(self, max_batches=None):
        """Send due batches back to back, pipelined: while the platform works on one
        batch, the next is selected and mapped. Returns summed stats and the wait."""
        total = {"sent": 0, "duplicate": 0, "quarantined": 0, "skipped": 0, "retry": 0, "batches": 0, "wait": 0.0}
        now = self.clock()
        if now < self.open_until:
            total["wait"] = self.open_until - now
            return total
        b = self._prepare(now)
        while b is not None:
            self._start(b)
            nxt = None
            if b["failure"] is None and (max_batches is None or total["batches"] + 1 < max_batches):
                nxt = self._prepare(self.clock(), exclude=[r["id"] for r in b["rows"]])
            s = self._finish(b)
            total["batches"] += 1
            for k in ("sent", "duplicate", "quarantined", "skipped", "retry"):
                total[k] += s[k]
            if s["wait"] or s["retry"]:
                total["wait"] = s["wait"]
                return total  # a failure: the prepared batch is dropped (its rows are untouched, still pending)
            b = nxt
        total["wait"] = self._idle(self.clock())["wait"]
        return total

    def drain(self, max_seconds=None, sleep=time.sleep):
        """Send until nothing is due (or max_seconds pass); returns the summed stats."""
        total = {"sent": 0, "duplicate": 0, "quarantined": 0, "skipped": 0, "retry": 0, "batches": 0}
        t0 = time.monotonic()
        while max_seconds is None or time.monotonic() - t0 < max_seconds:
            s = self.pump(max_batches=20)
            for k in total:
                total[k] += s[k]
            if not s["batches"]:
                break
            if s["retry"] and s["wait"]:
                sleep(min(s["wait"], 1.0))
        return total

    def run(self, stop):
        """Loop until `stop` is set. Exceptions other than the platform's are logged and retried."""
        self.running = True
        try:
            while not stop.is_set():
                try:
                    s = self.pump(max_batches=50)
                except sqlite3.OperationalError as e:  # busy store: try again shortly
                    log.info("upstream: store busy (%s); retrying", e)
                    s = {"wait": 0.5}
                except Exception:
                    log.exception("upstream: sender error; retrying in 5s")
                    s = {"wait": 5.0}
                wait = s.get("wait", 0.0)
                if s.get("batches") and not wait:
                    continue
                self._wake.wait(wait)
                self._wake.clear()
        finally:
            self.running = False
            self.close()
