# pingjia.bridge.batch: one group commit's deferred writes, and the fast path for plain ratings.
#
# Why: under load nearly every event is either an unprompted press or the one
# rating of a prompted case. Done one by one (attach.py's general path) a rating
# costs about ten SQL statements, and Python's sqlite3 releases the GIL around
# every sqlite3_step, so each statement is also a hand-over to the transport's
# thread and back. Here the batch looks up what its ratings need in four
# queries (cases by token, existing ratings, waiting reasons, keypad boots),
# decides each plain rating in Python, and writes the rows of the whole batch
# with a few multi-row statements just before COMMIT.
#
# The fast path only ever takes the plain case: a first rating of a prompted
# case, no reason waiting for it, its keypad not rebooted since, its token not
# already used in this stretch of the batch. Everything else returns None and
# the caller runs attach.py's general path, after `settle()`: that writes every
# deferred row first (so the general path sees the same database it would see
# one event at a time) and forgets the looked-up state (so later ratings look
# again and see what the general path changed). Same final rows either way: a
# property test runs random batches both ways and compares the tables.
from ..protocol import messages as m
from . import attach
from .store import select_in

_EVENT_HEAD = attach.INSERT_EVENT.split("VALUES")[0] + "VALUES "
_EVENT_COLS = attach.INSERT_EVENT.count("?")


def insert_many(conn, head, ncols, rows, tail=""):
    """INSERT `rows` with multi-row VALUES: `head` is 'INSERT INTO t (cols) VALUES ', each row ncols values.
    Statements of 64/16/4/1 rows: a handful of distinct statements for sqlite3's statement cache, one
    sqlite3_step (one GIL release) per statement instead of one per row as executemany() does."""
    one = "(%s)" % ",".join("?" * ncols)
    i, n = 0, len(rows)
    for size in (64, 16, 4, 1):
        if n - i < size:
            continue
        sql = head + ",".join([one] * size) + tail
        while n - i >= size:
            conn.execute(sql, [v for r in rows[i:i + size] for v in r])
            i += size


class Batch:
    """State of one batch transaction (bridge/writer.py makes one per batch, inside BEGIN).

    msgs     the batch's journaled messages: their (device_id, seq) are looked up once for the
             dedup/replay check, their ratings' cases when the first rating comes
    known    {(device_id, seq): digest} of stored events, kept current as events are stored"""

    FAST = True  # False: every event through attach.apply (the reference the equivalence test compares with)

    def __init__(self, conn, rules, msgs):
        self.conn = conn
        self.rules = rules
        self.msgs = msgs
        self.known = attach.known_digests(conn, {(x.device_id, x.seq) for x in msgs})
        self.events = []  # event rows (attach.INSERT_EVENT's values) written at the next flush
        self._ratings, self._closed, self._outbox = [], [], []
        self._cases = None  # token -> (case_id, project_no, window_id, state, finished_at, prompt_until); None: look up
        self._rated = self._orphans = self._boots = self._used = None

    def apply(self, msg, raw, via, received_at, now):
        """attach.apply for one journaled event in this batch: (outcome, effects). Unprompted presses
        and plain ratings are decided here and written at the next flush; anything else settles the
        batch and goes through attach.apply."""
        dig = attach.digest(msg, raw)
        key = (msg.device_id, msg.seq)
        old = self.known.get(key)
        if old is not None:
            return ("duplicate" if old == dig else "replay"), []
        at, clamped = attach.pressed_at(received_at, msg.age_ms)
        if self.FAST and not clamped and msg.type in (m.UNSOLICITED, m.RATING):
            row = (msg.device_id, msg.seq, msg.boot, m.SCHEMA[msg.type][0], msg.stars,
                   getattr(msg, "token", None), None, None, msg.age_ms, getattr(msg, "nth", None), getattr(msg, "dt_ms", None),
                   dig, via, received_at, at)
            if msg.type == m.UNSOLICITED:
                self.events.append(row + (None, "unsolicited"))
                self.known[key] = dig
                return "stored", []
            eff = self._rating(msg, row, at, now)
            if eff is not None:
                self.known[key] = dig
                return "stored", eff
        self.settle()
        return attach.apply(self.conn, msg, raw, via, received_at, self.rules, now, self.known)

    # -- writes -----------------------------------------------------------------------------------
    def flush(self):
        """Write every deferred row (before COMMIT, and before anything reads the tables)."""
        conn = self.conn
        if self.events:
            insert_many(conn, _EVENT_HEAD, _EVENT_COLS, self.events)
            self.events = []
        if self._ratings:
            insert_many(conn, "INSERT INTO ratings (case_id, assess_number, stars, device_id, seq, pressed_at, updated_at) VALUES ",
                        7, self._ratings)
            self._ratings = []
        if self._closed:
            insert_many(conn, "WITH v(id, at) AS (VALUES ", 2, self._closed,
                        ") UPDATE cases SET state = 'rated', closed_at = v.at FROM v WHERE cases.case_id = v.id")
            self._closed = []
        if self._outbox:
            insert_many(conn, "INSERT INTO outbox (kind, case_id, assess_number, idem_key, next_try_at, created_at) VALUES ", 6,
                        self._outbox, " ON CONFLICT(idem_key) DO NOTHING")
            self._outbox = []

    def settle(self):
        """Before the general path handles an item: flush, and look everything up again for later ratings."""
        self.flush()
        self._cases = None

    # -- the fast path ----------------------------------------------------------------------------
    def _lookup(self):
        conn = self.conn
        ratings = [x for x in self.msgs if x.type == m.RATING]
        self._cases, self._rated, self._orphans, self._boots, self._used = {}, set(), set(), {}, set()
        for r in select_in(conn, "SELECT token, case_id, project_no, window_id, state, finished_at, prompt_until "
                                 "FROM cases WHERE token IN (%s)", {x.token for x in ratings}):
            self._cases[r[0]] = tuple(r[1:])
        self._rated.update(r[0] for r in select_in(conn, "SELECT case_id FROM ratings WHERE assess_number = 1 AND case_id IN (%s)",
                                                   {c[0] for c in self._cases.values()}))
        self._orphans.update((r[0], r[1]) for r in select_in(  # reasons that came before their rating
            conn, "WITH v(d, s) AS (VALUES %s) SELECT e.device_id, e.ref_seq FROM v JOIN events e ON e.device_id = v.d "
                  "AND e.ref_seq = v.s AND e.kind = 'reason' AND e.disposition = 'orphan'", {(x.device_id, x.seq) for x in ratings}))
        self._boots.update((r[0], r[1]) for r in select_in(conn, "SELECT device_id, boot FROM devices WHERE device_id IN (%s)",
                                                           {x.device_id for x in ratings}))

    def _rating(self, msg, row, at, now):
        """Attach a plain RATING (`row`: its event row without case_id and disposition). Returns its
        effects, or None when it is not plain (the caller settles and takes the general path)."""
        if self._cases is None:
            self._lookup()
        c = self._cases.get(msg.token)
        if c is None or msg.token in self._used:
            return None  # unknown token (orphan), or this case already changed in the batch
        cid, project_no, window_id, state, finished_at, prompt_until = c
        if state != "prompted" or finished_at is None or cid in self._rated or (msg.device_id, msg.seq) in self._orphans:
            return None  # a replacement, a late rating of an unrated case, a closed case, reasons to adopt
        boot = self._boots.get(msg.device_id)
        if boot is not None and boot > msg.boot:
            return None  # pressed before a reboot that prompted again: the general path also CANCELs
        rules = self.rules
        self._used.add(msg.token)
        if not (finished_at - attach.SLACK_S <= at <= (prompt_until or 0) + rules.expire_slack_s + attach.SLACK_S
                and msg.dt_ms <= rules.grace_s * 1000):
            self.events.append(row + (cid, "audit"))
            return []
        self.events.append(row + (cid, "counted"))
        self._ratings.append((cid, 1, msg.stars, msg.device_id, msg.seq, at, now))
        self._closed.append((cid, now))
        due = max(now, at + rules.reason_deadline_s() + attach.SLACK_S + rules.settle_s)
        self._outbox.append(("rating", cid, 1, "rating:%s:1" % project_no, due, now))
        return [("rated", attach.rated_case(cid, project_no, window_id, msg.stars))]

