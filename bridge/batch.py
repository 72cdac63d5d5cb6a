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
from itertools import chain

from ..protocol import messages as m
from . import attach
from .store import select_in

_EVENT_HEAD = attach.INSERT_EVENT.split("VALUES")[0] + "VALUES "
_EVENT_COLS = attach.INSERT_EVENT.count("?")
_RATING, _UNSOLICITED = m.RATING, m.UNSOLICITED
_RATING_KIND, _UNSOLICITED_KIND = m.SCHEMA[m.RATING][0], m.SCHEMA[m.UNSOLICITED][0]
_SQL = {}  # (head, ncols, rows, tail) -> the multi-row statement


def insert_many(conn, head, ncols, rows, tail=""):
    """INSERT `rows` with multi-row VALUES: `head` is 'INSERT INTO t (cols) VALUES ', each row ncols values.
    Statements of 64/16/4/1 rows: a handful of distinct statements for sqlite3's statement cache, one
    sqlite3_step (one GIL release) per statement instead of one per row as executemany() does."""
    i, n = 0, len(rows)
    for size in (64, 16, 4, 1):
        if n - i < size:
            continue
        sql = _SQL.get((head, ncols, size, tail))
        if sql is None:
            sql = _SQL[head, ncols, size, tail] = head + ",".join(["(%s)" % ",".join("?" * ncols)] * size) + tail
        while n - i >= size:
            conn.execute(sql, list(chain.from_iterable(rows[i:i + size])))
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
        # token -> (case_id, project_no, window_id, state, finished_at, prompt_until, prompted device, rated?, its boot)
        self._cases = None  # None: look up at the next rating
        self._orphans = self._used = None
        # the rules the plain ratings are judged by (attach._rating's expressions, term for term)
        self._grace_ms = rules.grace_s * 1000
        self._expire_slack = rules.expire_slack_s
        self._reason_s = rules.reason_deadline_s()
        self._settle_s = rules.settle_s

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
        if self.FAST and not clamped:
            if msg.type == _RATING:
                eff = self._rating(msg, dig, via, received_at, at, now)
                if eff is not None:
                    self.known[key] = dig
                    return "stored", eff
            elif msg.type == _UNSOLICITED:
                self.events.append((msg.device_id, msg.seq, msg.boot, _UNSOLICITED_KIND, msg.stars, None, None, None,
                                    msg.age_ms, None, None, dig, via, received_at, at, None, "unsolicited"))
                self.known[key] = dig
                return "stored", []
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
    # A plain rating needs its case, whether the case has a first rating already, and the boot of the
    # keypad the case prompted (a rating must come from that keypad, pressed in its current boot): one
    # row per token. Reasons that came before their rating (few, in their own partial index): the
    # batch's keypads' ones, filtered here. Two statements per batch; each row fetched is a
    # sqlite3_step that lets the transport's thread run, so fewer statements and rows keep the
    # writer's turn short.
    CASES_SQL = ("SELECT c.token, c.case_id, c.project_no, c.window_id, c.state, c.finished_at, c.prompt_until, "
                 "c.device_id, r.case_id IS NOT NULL, d.boot FROM cases c "
                 "LEFT JOIN ratings r ON r.case_id = c.case_id AND r.assess_number = 1 "
                 "LEFT JOIN devices d ON d.device_id = c.device_id WHERE c.token IN (%s)")
    ORPHANS_SQL = ("SELECT device_id, ref_seq FROM events "
                   "WHERE kind = 'reason' AND disposition = 'orphan' AND device_id IN (%s)")

    def _lookup(self):
        ratings = [x for x in self.msgs if x.type == m.RATING]
        self._used = set()
        self._cases = {r[0]: tuple(r[1:]) for r in select_in(self.conn, self.CASES_SQL, {x.token for x in ratings})}
        self._orphans = {(r[0], r[1]) for r in select_in(self.conn, self.ORPHANS_SQL, {x.device_id for x in ratings})}

    def _rating(self, msg, dig, via, received_at, at, now):
        """Attach a plain RATING. Returns its effects, or None when it is not plain (the caller settles
        and takes the general path)."""
        if self._cases is None:
            self._lookup()
        c = self._cases.get(msg.token)
        if c is None or msg.token in self._used:
            return None  # unknown token (orphan), or this case already changed in the batch
        cid, project_no, window_id, state, finished_at, prompt_until, prompted, rated, boot = c
        if state != "prompted" or finished_at is None or rated or (msg.device_id, msg.seq) in self._orphans:
            return None  # a replacement, a late rating of an unrated case, a closed case, reasons to adopt
        if prompted != msg.device_id or (boot is not None and boot > msg.boot):
            return None  # another keypad's rating; or pressed before a reboot that prompted again (the general path CANCELs)
        self._used.add(msg.token)
        counted = (finished_at - attach.SLACK_S <= at <= (prompt_until or 0) + self._expire_slack + attach.SLACK_S
                   and msg.dt_ms <= self._grace_ms)
        self.events.append((msg.device_id, msg.seq, msg.boot, _RATING_KIND, msg.stars, msg.token, None, None, msg.age_ms,
                            msg.nth, msg.dt_ms, dig, via, received_at, at, cid, "counted" if counted else "audit"))
        if not counted:
            return []
        self._ratings.append((cid, 1, msg.stars, msg.device_id, msg.seq, at, now))
        self._closed.append((cid, now))
        due = max(now, at + self._reason_s + attach.SLACK_S + self._settle_s)
        self._outbox.append(("rating", cid, 1, "rating:%s:1" % project_no, due, now))
        return [("rated", attach.rated_case(cid, project_no, window_id, msg.stars))]

