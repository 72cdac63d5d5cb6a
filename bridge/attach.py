# pingjia.bridge.attach: store one verified journaled event exactly once and attach it to its case.
#
# Runs in the hub's writer thread inside the batch transaction. Rules (DESIGN.md
# "Case attach"), independent of arrival order:
# - RATING with a case token: the counted press of a prompt is the latest press
#   (highest `nth`) among those within the grace (dt_ms <= grace), whatever order
#   they arrive in; an earlier one becomes 'replaced', presses after the grace
#   are 'audit'. A press must fall in
#   the prompt window (finished_at .. prompt_until + slack, by pressed_at): a case
#   already marked unrated still takes a rating pressed in time that arrived late
#   (keypad offline); the pending 'unrated' outbox record is then 'superseded'.
# - REASON attaches its codes to the counted 1-2 star rating it names (ref_seq); one that
#   arrives before its rating waits as 'orphan' and is attached when it lands.
# - UNSOLICITED: stored for audit, never counted. Unknown token: 'orphan'.
# Replay check: the digest covers the canonical bytes except boot and age_ms
# (the keypad recomputes the age on every retransmission): same (device_id,
# seq) + same digest = duplicate, else replay.
import hashlib

from ..protocol import messages as m
from .cases import _outbox
from .store import audit, row, select_in

TIME_FLOOR = 1704067200.0  # 2024-01-01 UTC: no pressed_at before this (a keypad's age can't go back further)
SLACK_S = 2.0
BAD_MAX = 2  # 1-2 stars are 差评: only they take reason codes  # tolerance on prompt-window edges for age rounding and link delay


def _age_offsets():
    """Payload offset of age_ms per journaled type (the fields before it are fixed-size ints)."""
    size = {"B": 1, "b": 1, "H": 2, "I": 4}
    out = {}
    for t in m.JOURNALED:
        off = 0
        for name, kind in m.SCHEMA[t][1]:
            if name == "age_ms":
                out[t] = off
                break
            off += size[kind]
    return out


AGE_AT = _age_offsets()


def digest(msg, raw):
    """SHA-256 of the canonical bytes without boot and age_ms (and without the MAC)."""
    n = 4 + len(msg.device_id)  # header + id; boot follows (4), then seq (4), then the payload
    a = n + 8 + AGE_AT[msg.type]
    return hashlib.sha256(b"".join((raw[:n], raw[n + 4:a], raw[a + 4:len(raw) - 16]))).hexdigest()


def pressed_at(received_at, age_ms):
    """(pressed_at, clamped?)"""
    t = received_at - age_ms / 1000.0
    if t < TIME_FLOOR:
        return TIME_FLOOR, True
    return t, False


INSERT_EVENT = """INSERT INTO events (device_id, seq, boot, kind, stars, token, ref_seq, codes, age_ms, nth, dt_ms,
    digest, via, received_at, pressed_at, case_id, disposition) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"""


def known_digests(conn, keys):
    """{(device_id, seq): digest} of the events among `keys` already stored: one query per batch."""
    sql = ("WITH v(d, s) AS (VALUES %s) SELECT e.device_id, e.seq, e.digest FROM v "
           "JOIN events e ON e.device_id = v.d AND e.seq = v.s")  # uses the PK index
    return {(d, sq): dig for d, sq, dig in select_in(conn, sql, keys)}


def apply(conn, msg, raw, via, received_at, rules, now, known=None):
    """Store a journaled event. Returns (outcome, effects); outcome is
    'stored', 'duplicate' or 'replay' (the caller rejects a replay, stores nothing).
    `known`: known_digests() of the writer's batch, kept up to date here (bridge/batch.py,
    which takes the plain cases itself and calls this for the rest)."""
    dig = digest(msg, raw)
    key = (msg.device_id, msg.seq)
    if known is None:
        old = conn.execute("SELECT digest FROM events WHERE device_id = ? AND seq = ?", key).fetchone()
        old = old[0] if old else None
    else:
        old = known.get(key)
    if old is not None:
        return ("duplicate" if old == dig else "replay"), []
    at, clamped = pressed_at(received_at, msg.age_ms)
    if clamped:
        audit(conn, now, msg.device_id, "event.time-clamped", "seq %d" % msg.seq,
              "received_at %.3f age_ms %d gave a time before the floor" % (received_at, msg.age_ms))
    effects = []
    if msg.type == m.RATING:
        case_id, disp, effects = _rating(conn, msg, at, rules, now)
    elif msg.type == m.REASON:
        case_id, disp = _reason(conn, msg, at, rules, now)
    else:
        case_id, disp = None, "unsolicited"
    row = (msg.device_id, msg.seq, msg.boot, m.SCHEMA[msg.type][0], getattr(msg, "stars", None), getattr(msg, "token", None),
           getattr(msg, "ref_seq", None), ",".join(str(c) for c in getattr(msg, "codes", ())) or None,
           msg.age_ms, getattr(msg, "nth", None), getattr(msg, "dt_ms", None), dig, via, received_at, at, case_id, disp)
    conn.execute(INSERT_EVENT, row)
    if known is not None:
        known[key] = dig
    return "stored", effects


def _rating(conn, msg, at, rules, now):
    c = row(conn, "SELECT * FROM cases WHERE token = ?", (msg.token,))
    if c is None:
        audit(conn, now, msg.device_id, "rating.orphan", "seq %d" % msg.seq, "unknown token %s" % msg.token)
        return None, "orphan", []
    cid = c["case_id"]
    if c["state"] not in ("prompted", "rated", "unrated") or c["finished_at"] is None:
        return cid, "audit", []
    in_window = c["finished_at"] - SLACK_S <= at <= (c["prompt_until"] or 0) + rules.expire_slack_s + SLACK_S
    within_grace = msg.dt_ms <= rules.grace_s * 1000
    r = row(conn, "SELECT * FROM ratings WHERE case_id = ? AND assess_number = 1", (cid,))
    if r is None:
        if not (in_window and within_grace):
            return cid, "audit", []
        conn.execute("""INSERT INTO ratings (case_id, assess_number, stars, device_id, seq, pressed_at, updated_at)
                        VALUES (?,1,?,?,?,?,?)""", (cid, msg.stars, msg.device_id, msg.seq, at, now))
        was = c["state"]
        conn.execute("UPDATE cases SET state = 'rated', closed_at = ? WHERE case_id = ?", (now, cid))
        if was == "unrated":
            conn.execute("UPDATE outbox SET state = 'superseded', last_error = 'rating arrived late' "
                         "WHERE idem_key = ? AND state = 'pending'", ("unrated:%s" % c["project_no"],))
            audit(conn, now, msg.device_id, "case.rated-late", c["project_no"], "seq %d pressed in time, arrived late" % msg.seq)
        due = max(now, at + rules.reason_deadline_s() + SLACK_S + rules.settle_s)
        _outbox(conn, "rating", c, 1, "rating:%s:1" % c["project_no"], now, due)
        _adopt_reasons(conn, msg.device_id, msg.seq, cid, now, msg.stars)
        return cid, "counted", [("rated", rated_case(cid, c["project_no"], c["window_id"], msg.stars))] + _cancel_reprompt(conn, msg)
    if not within_grace:
        return cid, "audit", []
    cur = conn.execute("SELECT nth FROM events WHERE device_id = ? AND seq = ?", (r["device_id"], r["seq"])).fetchone()
    if r["device_id"] != msg.device_id or cur is None or msg.nth <= (cur[0] or 0):
        return cid, "replaced", []  # an earlier press of the same prompt that arrived after its correction
    conn.execute("UPDATE events SET disposition = 'replaced' WHERE device_id = ? AND seq = ?", (r["device_id"], r["seq"]))
    conn.execute("UPDATE ratings SET stars = ?, seq = ?, pressed_at = ?, updated_at = ?, reasons = '' "
                 "WHERE case_id = ? AND assess_number = 1", (msg.stars, msg.seq, at, now, cid))
    audit(conn, now, msg.device_id, "rating.replaced", c["project_no"], "%d -> %d stars within grace" % (r["stars"], msg.stars))
    _adopt_reasons(conn, msg.device_id, msg.seq, cid, now, msg.stars)
    return cid, "counted", ([("rated", rated_case(cid, c["project_no"], c["window_id"], msg.stars, replaced=True))]
                            if msg.stars != r["stars"] else [])


def rated_case(case_id, project_no, window_id, stars, replaced=False):
    """What the 'rated' hooks get (hub.on_rated after COMMIT, hub.on_rated_tx inside the transaction): the
    case and its counted stars now; replaced: an earlier counted press of the prompt was replaced (a mis-press)."""
    return {"case_id": case_id, "project_no": project_no, "window_id": window_id, "state": "rated", "stars": stars,
            "replaced": replaced}


def _cancel_reprompt(conn, msg):
    """A rating pressed in an earlier boot of its keypad (journaled, delivered after a reboot): the HELLO of the new
    boot made the bridge prompt the keypad again for this still-open case (writer._hello), so without a CANCEL
    the keypad would ask the next citizen to rate a case that now has its rating."""
    cur = conn.execute("SELECT boot FROM devices WHERE device_id = ?", (msg.device_id,)).fetchone()
    if cur is not None and cur[0] is not None and cur[0] > msg.boot:
        return [("command", msg.device_id, m.CANCEL, {"token": msg.token})]
    return []


def _reason(conn, msg, at, rules, now):
    ev = row(conn, "SELECT case_id, pressed_at FROM events WHERE device_id = ? AND seq = ?", (msg.device_id, msg.ref_seq))
    if ev is None:
        return None, "orphan"  # its rating has not arrived yet; _adopt_reasons picks it up
    r = row(conn, "SELECT case_id, reasons, stars FROM ratings WHERE case_id = ? AND assess_number = 1 AND device_id = ? AND seq = ?",
            (ev["case_id"], msg.device_id, msg.ref_seq))
    if r is None or r["stars"] > BAD_MAX or at - ev["pressed_at"] > rules.reason_deadline_s() + SLACK_S:
        return ev["case_id"], "audit"
    _add_codes(conn, r["case_id"], r["reasons"], msg.codes, now)
    return r["case_id"], "counted"


def _add_codes(conn, case_id, have, codes, now):
    merged = [c for c in have.split(",") if c] if have else []
    for c in codes:
        if str(c) not in merged:
            merged.append(str(c))
    conn.execute("UPDATE ratings SET reasons = ?, updated_at = ? WHERE case_id = ? AND assess_number = 1",
                 (",".join(merged), now, case_id))


def _adopt_reasons(conn, device_id, seq, case_id, now, stars):
    """Reasons that arrived before their rating: attached now (to a 差评), else kept for audit."""
    for ev_seq, codes in conn.execute("SELECT seq, codes FROM events WHERE device_id = ? AND kind = 'reason' AND ref_seq = ? "
                                      "AND disposition = 'orphan'", (device_id, seq)).fetchall():
        if stars <= BAD_MAX:
            have = conn.execute("SELECT reasons FROM ratings WHERE case_id = ? AND assess_number = 1", (case_id,)).fetchone()[0]
            _add_codes(conn, case_id, have, [int(c) for c in (codes or "").split(",") if c], now)
        conn.execute("UPDATE events SET case_id = ?, disposition = ? WHERE device_id = ? AND seq = ?",
                     (case_id, "counted" if stars <= BAD_MAX else "audit", device_id, ev_seq))
