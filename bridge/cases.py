# pingjia.bridge.cases: a case's life at a window: open -> prompted -> rated | unrated | cancelled.
#
# Functions run inside a transaction the caller holds (the hub's writer thread,
# or a CLI/test connection through `store.transaction`). They take `now` and
# return (result, effects); effects are done by the caller after COMMIT:
#   ("command", device_id, msg_type, fields)   sign and send to the keypad
#   ("rated", attach.rated_case(...))           hub.on_rated_tx hooks (before COMMIT), hub.on_rated
#   ("unrated", case_dict)                      hub.on_unrated hooks (SMS invitation)
# Outbox idempotency keys: "rating:<project_no>:<assess_number>" and
# "unrated:<project_no>" (a case's number is unique in the hall and stable
# across mis-press replacement; see docs/ARCHITECTURE.md).
import base64
import dataclasses
import secrets

from ..protocol import messages as m
from . import devices
from .store import audit, row, rows

STATES = ("open", "prompted", "rated", "unrated", "cancelled")
TEXT_MAX = 48  # PROMPT.text, bytes


@dataclasses.dataclass(frozen=True)
class Rules:
    prompt_timeout_s: int = 60
    grace_s: float = 3.0
    reason_required: bool = False
    reason_window_s: float = 8.0  # reason keys are offered this long (twice as long when required), after the grace
    expire_slack_s: float = 5.0  # wait this long after the prompt ends before calling a case unrated
    settle_s: float = 0.0  # extra delay before a rating record is due upstream (after grace + reasons)

    def reason_deadline_s(self):
        """Seconds after a rating press in which its reason may be pressed (the keypad's own rule)."""
        return self.grace_s + self.reason_window_s * (2 if self.reason_required else 1)

    def keypad_config(self):
        """The CONFIG items the bridge owns on every keypad: sent after each HELLO."""
        return (("grace_ms", str(int(self.grace_s * 1000))), ("reason_ms", str(int(self.reason_window_s * 1000))))


class CaseError(ValueError):
    """Bad request on a case. `status` is the HTTP status that fits."""

    def __init__(self, msg, status=400, field=None):
        super().__init__(msg)
        self.status = status
        self.field = field


FIELDS = {  # API name -> (column, type, max length)
    "project_no": ("project_no", str, 64),
    "window_id": ("window_id", str, 32),
    "task_code": ("task_code", str, 64),
    "task_name": ("task_name", str, 200),
    "dept_code": ("dept_code", str, 64),
    "dept_name": ("dept_name", str, 200),
    "clerk_id": ("clerk_id", str, 64),
    "clerk_name": ("clerk_name", str, 64),
    "user_prop": ("user_prop", int, None),
    "contact_ref": ("contact_ref", str, 128),
}


def new_token():
    """8 characters of base32 (40 random bits): short for the wire, unguessable in a prompt's lifetime."""
    return base64.b32encode(secrets.token_bytes(5)).decode()


def validate(data):
    """Check a case-open request; returns clean column values or raises CaseError naming the field."""
    if not isinstance(data, dict):
        raise CaseError("body must be a JSON object")
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise CaseError("unknown field %s" % unknown[0], field=unknown[0])
    out = {}
    for name, (col, typ, maxlen) in FIELDS.items():
        if name not in data or data[name] is None:
            continue
        v = data[name]
        if typ is int:
            if isinstance(v, bool) or not isinstance(v, int):
                raise CaseError("%s must be an integer" % name, field=name)
        elif not isinstance(v, str):
            raise CaseError("%s must be a string" % name, field=name)
        elif len(v) > maxlen:
            raise CaseError("%s is longer than %d characters" % (name, maxlen), field=name)
        out[col] = v.strip() if isinstance(v, str) else v
    for req in ("project_no", "window_id"):
        if not out.get(req):
            raise CaseError("%s is required" % req, field=req)
    if out.get("user_prop", 1) not in (1, 2):
        raise CaseError("user_prop must be 1 (person) or 2 (company)", field="user_prop")
    return out


def get(conn, project_no):
    """The case with its rating(s) and events, or None."""
    c = row(conn, "SELECT * FROM cases WHERE project_no = ?", (project_no,))
    if c is None:
        return None
    c["ratings"] = rows(conn, "SELECT assess_number, stars, reasons, device_id, seq, pressed_at, updated_at "
                              "FROM ratings WHERE case_id = ? ORDER BY assess_number", (c["case_id"],))
    c["rating"] = c["ratings"][0] if c["ratings"] else None
    c["presses"] = rows(conn, "SELECT device_id, seq, kind, stars, codes, nth, dt_ms, pressed_at, disposition "
                              "FROM events WHERE case_id = ? ORDER BY pressed_at, seq", (c["case_id"],))
    return c


def listing(conn, state=None, window_id=None, limit=100):
    sql, params = "SELECT c.*, r.stars, r.reasons FROM cases c LEFT JOIN ratings r ON r.case_id = c.case_id AND r.assess_number = 1 WHERE 1=1", []
    if state:
        sql += " AND c.state = ?"
        params.append(state)
    if window_id:
        sql += " AND c.window_id = ?"
        params.append(window_id)
    return rows(conn, sql + " ORDER BY c.opened_at DESC, c.case_id DESC LIMIT ?", params + [int(limit)])


def open_case(conn, data, now, actor="case-api"):
    """Open a case at a window. Re-opening the same project_no at the same window returns it (idempotent)."""
    vals = validate(data)
    w = row(conn, "SELECT window_id, dept_code, dept_name FROM windows WHERE window_id = ?", (vals["window_id"],))
    if w is None:
        raise CaseError("unknown window %s" % vals["window_id"], status=404, field="window_id")
    old = row(conn, "SELECT window_id FROM cases WHERE project_no = ?", (vals["project_no"],))
    if old is not None:
        if old["window_id"] != vals["window_id"]:
            raise CaseError("case %s is already open at window %s" % (vals["project_no"], old["window_id"]), status=409)
        return get(conn, vals["project_no"]), []
    vals.setdefault("dept_code", w["dept_code"])
    vals.setdefault("dept_name", w["dept_name"])
    cols = sorted(vals)
    conn.execute("INSERT INTO cases (%s, opened_at) VALUES (%s, ?)" % (", ".join(cols), ", ".join("?" * len(cols))),
                 [vals[c] for c in cols] + [now])
    audit(conn, now, actor, "case.open", vals["project_no"], vals["window_id"])
    return get(conn, vals["project_no"]), []


def _prompt_effect(conn, case, rules, remaining_s):
    w = row(conn, "SELECT name FROM windows WHERE window_id = ?", (case["window_id"],))
    text = " ".join(x for x in ((w or {}).get("name", "") or case["window_id"], case["clerk_name"]) if x)
    raw = text.encode()[:TEXT_MAX]
    text = raw.decode("utf-8", "ignore")
    return ("command", case["device_id"], m.PROMPT,
            dict(token=case["token"], timeout_s=max(1, min(0xFFFF, int(remaining_s))),
                 reason_required=1 if rules.reason_required else 0, text=text))


def finish(conn, project_no, rules, now, actor="case-api"):
    """The clerk finished: prompt the window's keypad. Finishing a prompted case prompts again
    with the same token. A window without a keypad makes the case unrated at once."""
    c = _must(conn, project_no)
    if c["state"] == "prompted":
        return get(conn, project_no), [_prompt_effect(conn, c, rules, c["prompt_until"] - now)]
    if c["state"] != "open":
        raise CaseError("case %s is %s, not open" % (project_no, c["state"]), status=409)
    dev = devices.window_device(conn, c["window_id"])
    if dev is None:
        conn.execute("UPDATE cases SET state='unrated', finished_at=?, closed_at=? WHERE case_id=?", (now, now, c["case_id"]))
        _outbox(conn, "unrated", c, 1, "unrated:%s" % project_no, now, now)
        audit(conn, now, actor, "case.unrated", project_no, "window %s has no keypad" % c["window_id"])
        done = get(conn, project_no)
        return done, [("unrated", done)]
    token = new_token()
    while conn.execute("SELECT 1 FROM cases WHERE token = ?", (token,)).fetchone():
        token = new_token()
    until = now + rules.prompt_timeout_s
    conn.execute("UPDATE cases SET state='prompted', token=?, device_id=?, finished_at=?, prompt_until=? WHERE case_id=?",
                 (token, dev, now, until, c["case_id"]))
    audit(conn, now, actor, "case.finish", project_no, "prompt %s" % dev)
    c = get(conn, project_no)
    return c, [_prompt_effect(conn, c, rules, rules.prompt_timeout_s)]


def cancel(conn, project_no, now, actor="case-api"):
    c = _must(conn, project_no)
    if c["state"] not in ("open", "prompted"):
        raise CaseError("case %s is %s and cannot be cancelled" % (project_no, c["state"]), status=409)
    conn.execute("UPDATE cases SET state='cancelled', closed_at=? WHERE case_id=?", (now, c["case_id"]))
    audit(conn, now, actor, "case.cancel", project_no)
    effects = []
    if c["state"] == "prompted" and c["device_id"]:
        effects.append(("command", c["device_id"], m.CANCEL, dict(token=c["token"])))
    return get(conn, project_no), effects


def expire(conn, rules, now):
    """Prompted cases whose prompt ended (plus slack) become unrated, with an outbox record each."""
    effects = []
    for c in rows(conn, "SELECT * FROM cases WHERE state = 'prompted' AND prompt_until < ?", (now - rules.expire_slack_s,)):
        conn.execute("UPDATE cases SET state='unrated', closed_at=? WHERE case_id=?", (now, c["case_id"]))
        _outbox(conn, "unrated", c, 1, "unrated:%s" % c["project_no"], now, now)
        audit(conn, now, "bridge", "case.unrated", c["project_no"], "prompt timed out")
        effects.append(("unrated", get(conn, c["project_no"])))
    return effects


def prompted_for(conn, device_id, now):
    """Open prompts of a keypad that just (re)booted: (case, remaining seconds) to prompt again."""
    return [(c, c["prompt_until"] - now) for c in
            rows(conn, "SELECT * FROM cases WHERE state='prompted' AND device_id=? AND prompt_until > ?", (device_id, now + 1))]


def _must(conn, project_no):
    c = row(conn, "SELECT * FROM cases WHERE project_no = ?", (project_no,))
    if c is None:
        raise CaseError("unknown case %s" % project_no, status=404)
    return c


def _outbox(conn, kind, case, assess_number, idem_key, now, due):
    conn.execute("""INSERT INTO outbox (kind, case_id, assess_number, idem_key, next_try_at, created_at)
                    VALUES (?,?,?,?,?,?) ON CONFLICT(idem_key) DO NOTHING""",
                 (kind, case["case_id"], assess_number, idem_key, due, now))
