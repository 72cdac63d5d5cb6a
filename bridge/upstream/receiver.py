"""Reference upstream receiver: what a provincial platform does with our batches,
for tests and demos. A real HTTP server (stdlib ThreadingHTTPServer).

POST <any path but /admin...>  body {"records": [...], "unrated": [...]} signed as
    in signing.py. Answers 200 {"results": [{"idemKey", "status", "reason"}]},
    status accepted | duplicate | rejected, one per record, in order.
    401 for a bad or missing signature, 400 for a body that is not such JSON.
GET  /admin/state            counts, faults, requests seen
POST /admin/faults           JSON: any of the fault options below (replaces those given)
GET  /admin/records          every stored record (JSON list)
GET  /health                 200 "ok"

Faults (constructor keywords and /admin/faults keys):
  down: bool            answer 503 to every batch
  fail_next: int        the next N batches get `fail_status`
  fail_rate: float      a share of batches get `fail_status` (seeded random)
  fail_status: int      status for the two above (default 503)
  retry_after: number   sent as Retry-After with 429/503 answers (None: no header)
  delay: float          sleep this long before answering every batch (slow platform)
  hang_next: int        the next N batches: store the records, then sleep `hang_s`
                        before answering (the client times out mid-batch)
  hang_s: float         (default 30)
  reject_keys: list     idempotency keys to reject ("rejected by test")
  reject_projects: list projectNo values to reject
  poison_projects: list a batch holding one of these projectNo values is refused
                        as a whole with 400 (the platform's "bad request")

Records are kept in SQLite keyed by idempotency key: a repeat is acknowledged
as "duplicate" and not stored again; a different key for a (projectNo,
assessNumber) already stored is rejected as a conflicting second rating.
"""
import json
import logging
import random
import socket
import sqlite3
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import mapping, signing

log = logging.getLogger("pingjia.upstream.receiver")

_ENC = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False)

FAULT_KEYS = {"down", "fail_next", "fail_rate", "fail_status", "retry_after", "delay", "hang_next", "hang_s",
              "reject_keys", "reject_projects", "poison_projects"}

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    idem_key     TEXT PRIMARY KEY,
    kind         TEXT NOT NULL,          -- rating | unrated
    project_no   TEXT NOT NULL,
    assess_number INTEGER,
    stars        INTEGER,                -- internal meaning, decoded with the profile
    body         TEXT NOT NULL,          -- the record as received (JSON)
    received_at  REAL NOT NULL,
    repeats      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS records_business ON records(project_no, assess_number, kind);
CREATE TABLE IF NOT EXISTS rejects (
    id INTEGER PRIMARY KEY, idem_key TEXT, reason TEXT NOT NULL, body TEXT NOT NULL, at REAL NOT NULL
);
"""


class Receiver:
    def __init__(self, profile="zhejiang", db=":memory:", host="127.0.0.1", port=0, sign_alg="hmac-sha256",
                 sign_key="", skew=300, seed=None, tls_cert=None, tls_key=None, **faults):
        self.profile = profile if isinstance(profile, mapping.Profile) else mapping.load(profile)
        self.sign_alg = sign_alg
        self.sign_key = signing.key_bytes(sign_key) if sign_alg != "none" else None
        self.skew = skew
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.db = sqlite3.connect(db, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        self.faults = {"down": False, "fail_next": 0, "fail_rate": 0.0, "fail_status": 503, "retry_after": None,
                       "delay": 0.0, "hang_next": 0, "hang_s": 30.0, "reject_keys": [], "reject_projects": [],
                       "poison_projects": []}
        self.set_faults(**faults)
        self.last_idempotency_key = None
        self._nonces = {}  # nonce -> time seen; a signed request replayed within the skew is refused
        self.counters = {"requests": 0, "batches": 0, "bad_signature": 0, "failed": 0, "hung": 0,
                         "accepted": 0, "duplicate": 0, "rejected": 0}
        self.httpd = ThreadingHTTPServer((host, port), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        self.httpd.receiver = self
        self.host, self.port = self.httpd.server_address[:2]
        self.scheme = "http"
        if tls_cert:  # HTTPS: the platform's real transport
            import ssl
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(tls_cert, tls_key)
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
            self.scheme = "https"
        self._thread = None

    @property
    def url(self):
        return "%s://%s:%d/api/evaluations" % (self.scheme, self.host, self.port)

    def set_faults(self, **faults):
        bad = set(faults) - FAULT_KEYS
        if bad:
            raise ValueError("unknown fault option(s): %s" % ", ".join(sorted(bad)))
        with self.lock:
            for k, v in faults.items():
                self.faults[k] = list(v) if k in ("reject_keys", "reject_projects", "poison_projects") else v

    # -- lifecycle ------------------------------------------------------------------------
    def start(self):
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="receiver", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread:
            self._thread.join(5)

    def serve_forever(self):
        self.httpd.serve_forever()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def seen_nonce(self, nonce, now):
        """None for a fresh nonce (remembered for `skew` seconds), else the reason to refuse."""
        with self.lock:
            if len(self._nonces) > 10000:
                self._nonces = {n: t for n, t in self._nonces.items() if now - t <= self.skew}
            t = self._nonces.get(nonce)
            if t is not None and now - t <= self.skew:
                return "replayed request (X-Nonce seen %.0fs ago)" % (now - t)
            self._nonces[nonce] = now
        return None

    # -- queries ------------------------------------------------------------------------------
    def records(self):
        with self.lock:
            cur = self.db.execute("SELECT idem_key, kind, project_no, assess_number, stars, body, repeats FROM records ORDER BY rowid")
            return [dict(idem_key=r[0], kind=r[1], project_no=r[2], assess_number=r[3], stars=r[4],
                         body=json.loads(r[5]), repeats=r[6]) for r in cur.fetchall()]

    def state(self):
        with self.lock:
            n = self.db.execute("SELECT COUNT(*), COALESCE(SUM(repeats), 0) FROM records").fetchone()
            nrej = self.db.execute("SELECT COUNT(*) FROM rejects").fetchone()[0]
            return {"stored": n[0], "repeats": n[1], "rejects": nrej, "profile": self.profile.name,
                    "faults": dict(self.faults), "counters": dict(self.counters)}

    # -- the batch ----------------------------------------------------------------------------
    def _decide_failure(self):
        """(status, retry_after) when this batch must fail, else None; and hang seconds."""
        with self.lock:
            f = self.faults
            if f["down"]:
                return (503, f["retry_after"]), 0
            if f["fail_next"] > 0:
                f["fail_next"] -= 1
                return (f["fail_status"], f["retry_after"]), 0
            if f["fail_rate"] and self.rng.random() < f["fail_rate"]:
                return (f["fail_status"], f["retry_after"]), 0
            if f["hang_next"] > 0:
                f["hang_next"] -= 1
                return None, f["hang_s"]
        return None, 0

    def handle_batch(self, doc, now):
        results, rows, rejects = [], [], []
        with self.lock:
            reject_keys = set(self.faults["reject_keys"])
            reject_projects = set(self.faults["reject_projects"])
        for kind, field in (("rating", self.profile.idem_field), ("unrated", self.profile.unrated_idem_field)):
            items = doc.get("records" if kind == "rating" else "unrated") or []
            if not isinstance(items, list):
                raise ValueError("%s is not a list" % kind)
            for r in items:
                key = r.get(field) if isinstance(r, dict) and field else None
                problems = self.profile.check(r, kind)
                if not key:
                    problems.insert(0, "no idempotency key")
                elif key in reject_keys:
                    problems.append("rejected by test (reject_keys)")
                if isinstance(r, dict) and self.profile.project_field and r.get(self.profile.project_field) in reject_projects:
                    problems.append("rejected by test (reject_projects)")
                if problems:
                    rejects.append((key, "; ".join(problems), json.dumps(r, ensure_ascii=False), now))
                    results.append({"idemKey": key, "status": "rejected", "reason": "; ".join(problems)})
                    continue
                if kind == "rating":
                    num = int(r[self.profile.number_field]) if self.profile.number_field else 1
                    stars = self.profile.stars_of(r)
                else:
                    num, stars = None, None
                proj = r.get(self.profile.project_field, "") if self.profile.project_field else ""
                rows.append((key, kind, proj, num, stars, _ENC.encode(r), now))
                results.append({"idemKey": key, "status": None})
        # store: one transaction for the batch, set-wise (a platform takes thousands per second)
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                status = {}
                keys = [row[0] for row in rows]
                have = set()
                for i in range(0, len(keys), 500):
                    chunk = keys[i:i + 500]
                    have.update(k for (k,) in self.db.execute(
                        "SELECT idem_key FROM records WHERE idem_key IN (%s)" % ",".join("?" * len(chunk)), chunk))
                projs = sorted({row[2] for row in rows if row[1] == "rating" and row[0] not in have})
                taken = {}
                for i in range(0, len(projs), 500):
                    chunk = projs[i:i + 500]
                    for k, pno, num in self.db.execute(
                            "SELECT idem_key, project_no, assess_number FROM records WHERE kind = 'rating' AND project_no IN (%s)"
                            % ",".join("?" * len(chunk)), chunk):
                        taken[(pno, num)] = k
                new, repeats, conflicts = [], [], []
                for row in rows:
                    key, kind, proj, num = row[0], row[1], row[2], row[3]
                    if key in have or key in status:
                        status[key] = ("duplicate", None)
                        repeats.append((key,))
                        continue
                    if kind == "rating":
                        other = taken.get((proj, num))
                        if other:
                            why = "conflict: projectNo %s assessNumber %s already rated (key %s)" % (proj, num, other)
                            status[key] = ("rejected", why)
                            conflicts.append((key, why, row[5], now))
                            continue
                        taken[(proj, num)] = key
                    new.append(row)
                    status[key] = ("accepted", None)
                self.db.executemany("INSERT INTO records (idem_key, kind, project_no, assess_number, stars, body, received_at) "
                                    "VALUES (?,?,?,?,?,?,?)", new)
                self.db.executemany("UPDATE records SET repeats = repeats + 1 WHERE idem_key = ?", repeats)
                self.db.executemany("INSERT INTO rejects (idem_key, reason, body, at) VALUES (?,?,?,?)", rejects + conflicts)
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            for res in results:
                if res["status"] is None:
                    st, why = status[res["idemKey"]]
                    res["status"] = st
                    if why:
                        res["reason"] = why
                self.counters[res["status"]] += 1
        return results


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "pingjia-receiver/1"

    def setup(self):
        super().setup()
        # one response = headers + body written separately: without NODELAY, Nagle and the
        # client's delayed ACK add ~40 ms to every answer
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, fmt, *args):  # quiet: the counters tell the story
        log.debug("%s " + fmt, self.address_string(), *args)

    def _send(self, status, obj, headers=()):
        body = obj if isinstance(obj, bytes) else json.dumps(obj, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def do_GET(self):
        rc = self.server.receiver
        if self.path == "/health":
            return self._send(200, b"ok")
        if self.path == "/admin/state":
            return self._send(200, rc.state())
        if self.path == "/admin/records":
            return self._send(200, rc.records())
        self._send(404, {"error": "not found"})

    def do_POST(self):
        rc = self.server.receiver
        body = self._body()
        if self.path == "/admin/faults":
            try:
                rc.set_faults(**json.loads(body or b"{}"))
            except (ValueError, TypeError) as e:
                return self._send(400, {"error": str(e)})
            return self._send(200, rc.state())
        with rc.lock:
            rc.counters["requests"] += 1
            rc.last_idempotency_key = self.headers.get("Idempotency-Key")
        if rc.sign_key is not None:
            why = signing.verify(rc.sign_key, "POST", self.path, body, self.headers, alg=rc.sign_alg, skew=rc.skew)
            if not why:
                why = rc.seen_nonce(self.headers.get("X-Nonce"), time.time())
            if why:
                with rc.lock:
                    rc.counters["bad_signature"] += 1
                log.info("receiver: 401 %s", why)
                return self._send(401, {"error": why})
        fail, hang = rc._decide_failure()
        delay = rc.faults["delay"]
        if delay:
            time.sleep(delay)
        if fail:
            status, ra = fail
            with rc.lock:
                rc.counters["failed"] += 1
            headers = [("Retry-After", str(ra))] if ra is not None and status in (429, 503) else []
            return self._send(status, {"error": "fault injected"}, headers)
        try:
            doc = json.loads(body)
            if not isinstance(doc, dict):
                raise ValueError("body is not an object")
            poison = set(rc.faults["poison_projects"])
            if poison and rc.profile.project_field:
                bad = [r.get(rc.profile.project_field) for r in doc.get("records") or [] if isinstance(r, dict)]
                bad = [p for p in bad if p in poison]
                if bad:
                    raise ValueError("record %s is malformed (poison_projects)" % bad[0])
            results = rc.handle_batch(doc, time.time())
        except (ValueError, TypeError, AttributeError) as e:
            return self._send(400, {"error": "bad batch: %s" % e})
        with rc.lock:
            rc.counters["batches"] += 1
        if hang:
            with rc.lock:
                rc.counters["hung"] += 1
            time.sleep(hang)
            self.close_connection = True
            return
        self._send(200, {"results": results})


def main(profile, db, host, port, sign_alg, sign_key, tls_cert=None, tls_key=None, **faults):
    rc = Receiver(profile=profile, db=db, host=host, port=port, sign_alg=sign_alg, sign_key=sign_key,
                  tls_cert=tls_cert, tls_key=tls_key, **faults)
    print("receiver: profile %s, %s, listening on %s" % (rc.profile.name, sign_alg, rc.url), flush=True)
    try:
        rc.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        rc.httpd.server_close()
