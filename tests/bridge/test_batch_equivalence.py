"""The batch fast path (bridge/batch.py) stores exactly what the general path (attach.apply, one
event at a time) stores: random mixes of ratings, reasons, unprompted presses, duplicates, replays,
reboots and unknown tokens, cut into random batches, give the same rows in every table, the same
ACKs and the same hook calls as the same messages through the general path alone."""

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pingjia.bridge import cases, devices, followup
from pingjia.bridge.batch import Batch
from pingjia.bridge.hub import Hub
from pingjia.bridge.store import Store
from pingjia.protocol import messages as m

from .conftest import T0, Clock, Keypad

KEYPADS = ("KP-A", "KP-B", "KP-C")
# per keypad: (token suffix, state, finished_at offset, prompt_until offset) of its cases
CASES = (("p1", "prompted", 0, 60), ("p2", "prompted", 0, 60), ("short", "prompted", 0, 4),
         ("late", "unrated", -40, -30), ("done", "cancelled", -40, -30))
TOKENS = [k + "-" + c[0] for k in KEYPADS for c in CASES] + ["NO-SUCH-TOKEN"]

step = st.one_of(
    # a rating: keypad, token, stars, nth, dt_ms, age_ms, pressed in the boot before the keypad's last reboot
    st.tuples(st.just("rating"), st.sampled_from(KEYPADS), st.sampled_from(TOKENS), st.integers(1, 5),
              st.integers(1, 3), st.sampled_from([0, 1500, 9000]), st.sampled_from([0, 500, 20000]), st.booleans()),
    # a reason naming an earlier event, or the keypad's next one (it arrives before its rating)
    st.tuples(st.just("reason"), st.sampled_from(KEYPADS), st.sampled_from([-2, -1, 1, 1, 1]), st.lists(st.integers(1, 4), min_size=1, max_size=2)),
    st.tuples(st.just("unsolicited"), st.sampled_from(KEYPADS), st.integers(1, 5)),
    st.tuples(st.just("dup"), st.integers(0, 40)),
    st.tuples(st.just("replay"), st.sampled_from(KEYPADS), st.integers(1, 5)),
    st.tuples(st.just("reboot"), st.sampled_from(KEYPADS)),
    st.tuples(st.just("status"), st.sampled_from(KEYPADS)),
)


class Sink:
    name = "mqtt"


def _setup(path):
    store = Store(path)
    store.migrate()
    conn = store.connect()
    keys = {}
    for i, k in enumerate(KEYPADS):
        w = "W%02d" % (i + 1)
        devices.add_window(conn, w, name=w, now=T0 - 86400)
        keys[k] = devices.add(conn, k, window_id=w, now=T0 - 3600)
        conn.execute("UPDATE devices SET boot = 1 WHERE device_id = ?", (k,))
        for suffix, state, fin, until in CASES:
            conn.execute("INSERT INTO cases (project_no, window_id, state, token, device_id, opened_at, finished_at, prompt_until) "
                         "VALUES (?,?,?,?,?,?,?,?)", ("P-%s-%s" % (k, suffix), w, state, "%s-%s" % (k, suffix), k, T0 - 100,
                                                      T0 + fin, T0 + until))
    conn.close()
    return store, keys


def _messages(steps, keys):
    """The raw messages the steps make, in order: [(raw, received_at)]."""
    kps = {k: Keypad(k, key) for k, key in keys.items()}
    out = []
    for i, s in enumerate(steps):
        at = T0 + 1 + i * 0.25
        kind = s[0]
        if kind == "rating":
            _, k, token, stars, nth, dt, age, old = s
            kp = kps[k]
            boot, kp.boot = kp.boot, (kp.boot - 1 if old and kp.boot > 1 else kp.boot)  # journaled, delivered late
            raw = kp.rating(stars, token, nth=nth, dt_ms=dt, age_ms=age)
            kp.boot = boot
        elif kind == "reason":
            kp = kps[s[1]]
            raw = kp.reason(max(1, kp.seq + 1 + s[2]), s[3])  # seq + 1 is the reason's own seq
        elif kind == "unsolicited":
            raw = kps[s[1]].unsolicited(s[2])
        elif kind == "dup":
            if not out:
                continue
            raw = out[s[1] % len(out)][0]
        elif kind == "replay":
            kp = kps[s[1]]
            if kp.seq == 0:
                continue
            raw = kp.unsolicited(s[2], age_ms=7, seq=max(1, kp.seq - s[2] % kp.seq))
        elif kind == "reboot":
            kp = kps[s[1]]
            kp.boot += 1
            raw = kp.hello()
        else:
            raw = kps[s[1]].status(uptime_s=i)
        out.append((raw, at))
    return out


def _run(path, steps, cuts, fast):
    """Feed the messages to a hub's writer in the given batches; return what a user could see."""
    store, keys = _setup(path)
    clock = Clock(T0 + 2)  # early: a rating's upstream due time (pressed + grace + reasons) is later than now
    hub = Hub(store, rules=cases.Rules(prompt_timeout_s=60, grace_s=3, reason_window_s=8), hall="t", clock=clock)
    hub.reload_keys()
    followup.wire(hub)
    rated = []
    hub.on_rated.append(rated.append)
    w = hub.writer
    w.conn = store.connect()  # the writer's loop without its thread: batches fed directly
    sent = []
    w._after_commit = lambda acks, cmds, effects: sent.append((acks, cmds, effects))  # what it would send and run
    link = Sink()
    items = []
    for raw, at in _messages(steps, keys):
        msg = m.decode(raw, lambda d: hub.signer(d))
        items.append(("msg", msg, raw, link, at))
    acks, hooks, sends = [], [], []
    Batch.FAST = fast
    try:
        bounds = sorted({0, len(items)} | {c % (len(items) + 1) for c in cuts})
        for a, b in zip(bounds, bounds[1:]):
            assert w._commit(items[a:b])
            a, cmds, effects = sent.pop()
            sends += cmds
            acks.append(sorted((dev, sorted(seqs)) for (dev, _l), seqs in a.items()))
            hooks += [e for e in effects if e[0] == "rated"]
    finally:
        Batch.FAST = True
    conn = w.conn

    def table(sql):
        return sorted(tuple(r) for r in conn.execute(sql))

    seen = {
        "events": table("SELECT * FROM events"),
        "ratings": table("SELECT * FROM ratings"),
        "cases": table("SELECT * FROM cases"),
        "outbox": table("SELECT kind, case_id, assess_number, idem_key, state, next_try_at, last_error, created_at FROM outbox"),
        "audit": table("SELECT at, actor, action, subject, detail FROM audit"),
        "followups": table("SELECT * FROM followups"),
        "devices": table("SELECT device_id, boot, uptime_s, rejects, last_reject, last_seen, online, cmd_seq FROM devices"),
        "acks": acks, "hooks": hooks, "commands": sends,
    }
    conn.close()
    return seen


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(step, min_size=1, max_size=40), cuts=st.lists(st.integers(0, 40), max_size=4))
@example(steps=[("reason", "KP-A", 1, [2]), ("rating", "KP-A", "KP-A-p1", 1, 1, 0, 0, False)], cuts=[])  # reason first
@example(steps=[("reboot", "KP-B"), ("rating", "KP-B", "KP-B-p1", 4, 1, 0, 0, True)], cuts=[])  # pressed before a reboot
@example(steps=[("rating", "KP-C", "KP-C-p2", 1, 1, 0, 0, False), ("rating", "KP-C", "KP-C-p2", 5, 2, 1500, 0, False)],
         cuts=[])  # a mis-press corrected within the grace, both in one batch
def test_fast_path_stores_what_the_general_path_stores(tmp_path_factory, steps, cuts):
    fast = _run(tmp_path_factory.mktemp("fast") / "b.db", steps, cuts, fast=True)
    ref = _run(tmp_path_factory.mktemp("ref") / "b.db", steps, cuts, fast=False)
    for k in ref:
        assert fast[k] == ref[k], k


def test_plain_ratings_in_one_batch_take_the_fast_path(tmp_path):
    """The common case under load: many first ratings in one batch are decided without the general path."""
    steps = [("rating", k, k + "-p1", 5, 1, 0, 0, False) for k in KEYPADS] + [("rating", k, k + "-p2", 1, 1, 0, 0, False) for k in KEYPADS]
    calls = []
    from pingjia.bridge import attach

    real = attach.apply
    attach.apply = lambda *a, **kw: calls.append(a) or real(*a, **kw)
    try:
        seen = _run(tmp_path / "b.db", steps, [], fast=True)
    finally:
        attach.apply = real
    assert calls == []
    assert [r[2] for r in seen["ratings"]] == [5, 1, 5, 1, 5, 1]  # stars, by case
    assert len(seen["followups"]) == 3  # the three 1-star ratings opened a follow-up in the same transaction
    assert len(seen["outbox"]) == 6 and {h[1]["stars"] for h in seen["hooks"]} == {1, 5}
