"""Duplicates, replays, forged MACs, unknown devices: stored once, rejected, counted, logged once."""
import logging

import pytest

from pingjia.protocol import messages as m
from tests.bridge.conftest import Keypad, add_keypad, q
from tests.sqlplan import full_reads, statements_of


def _drain(hub):
    hub.call(lambda conn, now: (None, []))  # a job runs after everything queued before it


def test_duplicate_stored_once_acked_twice(hub, link, kp, store):
    raw = kp.unsolicited(3)
    hub.submit(raw, link)
    _drain(hub)
    hub.submit(raw, link)
    _drain(hub)
    # a retransmission recomputes age_ms: different bytes, same event
    hub.submit(kp.unsolicited(3, age_ms=4000, seq=1), link)
    _drain(hub)
    assert q(store, "SELECT count(*) AS n FROM events")[0]["n"] == 1
    assert link.acked(kp) == [1, 1, 1]
    assert hub.stats()["duplicates"] == 2


@pytest.mark.expect_warnings
def test_replay_with_other_content_rejected_counted_logged_once(hub, link, kp, store, caplog):
    hub.submit(kp.unsolicited(3), link)
    _drain(hub)
    for stars in (1, 2, 5):
        hub.submit(kp.unsolicited(stars, seq=1), link)  # same seq, other content, valid MAC
    _drain(hub)
    assert q(store, "SELECT stars FROM events") == [{"stars": 3}]
    assert link.acked(kp) == [1]  # no ACK for the replays
    d = q(store, "SELECT rejects, last_reject FROM devices WHERE device_id='KP-0001'")[0]
    assert d["rejects"] == 3 and d["last_reject"].startswith("replay")
    warns = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warns) == 1 and "reason=replay" in warns[0] and "device=KP-0001" in warns[0]
    assert len(q(store, "SELECT * FROM audit WHERE action='reject.replay'")) == 1


@pytest.mark.expect_warnings
def test_forged_mac_and_unknown_device_rejected(hub, link, kp, store, caplog):
    forger = Keypad("KP-0001", bytes(32))  # right id, wrong key
    stranger = Keypad("KP-9999", bytes(range(32)))
    for _ in range(3):
        assert not hub.submit(forger.unsolicited(5), link)
        assert not hub.submit(stranger.unsolicited(5), link)
    tampered = bytearray(kp.unsolicited(4))
    tampered[-20] ^= 1  # inside the payload: MAC no longer matches
    assert not hub.submit(bytes(tampered), link)
    assert not hub.submit(b"\x01\x02garbage", link)
    _drain(hub)
    assert q(store, "SELECT count(*) AS n FROM events")[0]["n"] == 0
    assert link.sent == []
    d = q(store, "SELECT rejects, last_reject FROM devices WHERE device_id='KP-0001'")[0]
    assert d["rejects"] == 4 and d["last_reject"].startswith("mac")
    warns = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len([w for w in warns if "device=KP-0001 reason=mac" in w]) == 1
    assert len([w for w in warns if "device=KP-9999 reason=device" in w]) == 1
    assert any("reason=truncated" in w for w in warns)
    assert hub.stats()["rejected"] == 8
    st = q(store, "SELECT actor, action FROM audit WHERE action LIKE 'reject.%' ORDER BY id")
    assert {(r["actor"], r["action"]) for r in st} == {("KP-0001", "reject.mac"), ("KP-9999", "reject.device"), ("test", "reject.truncated")}


@pytest.mark.expect_warnings
def test_retired_and_rotated_keys(hub, link, kp, store, caplog):
    from pingjia.bridge import devices

    conn = store.connect()
    new = devices.rotate_key(conn, "KP-0001")
    hub.reload_keys()
    assert not hub.submit(kp.unsolicited(2), link)  # old key
    kp2 = Keypad("KP-0001", new)
    assert hub.submit(kp2.unsolicited(2, seq=7), link)
    devices.retire(conn, "KP-0001")
    conn.close()
    hub.reload_keys()
    assert not hub.submit(kp2.unsolicited(2, seq=8), link)
    _drain(hub)
    assert [r["seq"] for r in q(store, "SELECT seq FROM events")] == [7]
    assert any("reason=device" in r.getMessage() for r in caplog.records)


def test_status_hello_log_text_and_link_state(hub, link, kp, store, clock):
    hub.submit(kp.hello(fw="1.2.0", board="rp2-pico"), link)
    hub.submit(kp.status(100, depth=3), link)
    hub.submit(kp.status(50, depth=9), link)  # stale: lower uptime, same boot
    hub.submit(m.encode(m.Message(m.LOG, "KP-0001", 1, 0, level=3, text="按键 5 卡住"), kp.key), link)
    hub.device_text(link, "KP-0001", b"Traceback (most recent call last):")
    _drain(hub)
    d = q(store, "SELECT fw_version, board, boot, uptime_s, journal_depth, online, last_seen FROM devices")[0]
    assert d == {"fw_version": "1.2.0", "board": "rp2-pico", "boot": 1, "uptime_s": 100, "journal_depth": 3,
                 "online": 1, "last_seen": clock.t}
    assert [r["line"] for r in q(store, "SELECT line FROM device_log ORDER BY id")] == ["[3] 按键 5 卡住", "Traceback (most recent call last):"]
    hub.link_state("KP-0001", False, link)
    _drain(hub)
    assert q(store, "SELECT online FROM devices")[0]["online"] == 0


def test_many_keypads_one_batch(hub, link, store):
    pads = [add_keypad(store, "KP-%04d" % i) for i in range(1, 41)]
    hub.reload_keys()
    hub.call(lambda conn, now: (None, []))
    for p in pads:
        for _ in range(5):
            hub.submit(p.unsolicited(4), link)
    _drain(hub)
    assert q(store, "SELECT count(*) AS n FROM events")[0]["n"] == 200
    assert all(sorted(link.acked(p)) == [1, 2, 3, 4, 5] for p in pads)
    assert hub.stats()["max_batch"] > 1  # grouped: fewer commits than events


def test_fast_ack_matches_protocol_encoder():
    from pingjia.bridge.hub import ack_bytes, ack_capacity
    from pingjia.protocol.auth import Signer

    key = bytes(range(32))
    for dev, seqs in (("KP-0001", [42]), ("KP-0001", [42, 43]), ("x" * 32, list(range(1, ack_capacity("x" * 32) + 1)))):
        want = m.encode(m.Message(m.ACK, dev, 7, 1001, upto=0, seqs=tuple(seqs)), key)
        assert ack_bytes(dev, 7, 1001, seqs, Signer(key)) == want


@pytest.mark.expect_warnings
def test_bad_item_left_out_rest_of_batch_committed(hub, link, kp, store, caplog, monkeypatch):
    from pingjia.bridge.batch import Batch

    real = Batch.apply

    def flaky(self, msg, *a):  # a bug met while storing one event of the batch
        if msg.seq == 3:
            raise ValueError("boom")
        return real(self, msg, *a)

    monkeypatch.setattr(Batch, "apply", flaky)
    for _ in range(5):
        hub.submit(kp.unsolicited(2), link)
    _drain(hub)
    assert [r["seq"] for r in q(store, "SELECT seq FROM events ORDER BY seq")] == [1, 2, 4, 5]
    assert sorted(link.acked(kp)) == [1, 2, 4, 5]
    assert any("message not stored" in r.getMessage() and "boom" in r.getMessage() for r in caplog.records)


def test_link_with_send_many_gets_acks_in_bulk(hub, kp, store):
    class BulkLink:
        name = "bulk"

        def __init__(self):
            self.calls = []

        def send(self, device_id, raw):
            raise AssertionError("send_many should be used for ACKs")

        def send_many(self, msgs):
            self.calls.append(list(msgs))

    lk = BulkLink()
    for _ in range(10):
        hub.submit(kp.unsolicited(5), lk)
    _drain(hub)
    seqs = sorted(s for call in lk.calls for d, raw in call for s in m.decode(raw, kp.key).seqs)
    assert seqs == list(range(1, 11)) and len(lk.calls) <= 10


def test_batch_digest_lookup_uses_the_primary_key(store):
    conn = store.connect()
    from pingjia.bridge import attach

    sql = ("EXPLAIN QUERY PLAN WITH v(d, s) AS (VALUES (?,?),(?,?)) SELECT e.device_id, e.seq, e.digest FROM v "
           "JOIN events e ON e.device_id = v.d AND e.seq = v.s")
    plan = " ".join(r[3] for r in conn.execute(sql, ("a", 1, "b", 2)))
    assert "SEARCH e USING INDEX" in plan and "SCAN events" not in plan
    assert attach.known_digests(conn, [("a", 1)]) == {}
    conn.close()


def test_per_second_and_per_rating_lookups_use_indexes(store):
    conn = store.connect()
    plans = {
        "expire": "SELECT * FROM cases WHERE state = 'prompted' AND prompt_until < 1",
        "reprompt": "SELECT * FROM cases WHERE state='prompted' AND device_id='x' AND prompt_until > 1",
        "token": "SELECT * FROM cases WHERE token = 'x'",
        "orphan reasons": "SELECT seq, codes FROM events WHERE device_id = 'x' AND kind = 'reason' AND ref_seq = 1 AND disposition = 'orphan'",
    }
    for name, sql in plans.items():
        plan = " ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql))
        assert "USING" in plan and not plan.startswith("SCAN"), (name, plan)
    conn.close()


def test_catch_up_sweep_reads_only_what_it_looks_for(store, clock):
    """The upstream workers' sweep (every minute) finds 差评 without a follow-up and unrated cases without
    an SMS-invitation event through partial indexes of just those rows, not by reading every rating and
    every case of the hall's history."""
    from pingjia.bridge import followup, unrated

    conn = store.connect()
    statements = statements_of(conn, lambda: (followup.sync_missing(conn, clock.t), unrated.sync_missing(conn, "test", clock.t)))
    assert len(statements) >= 2 and full_reads(conn, statements) == []
    conn.close()


def test_a_full_batch_of_ratings_uses_indexes_only(store, rules, clock, link):
    """Every statement the writer runs for one batch of 300 ratings (a replay after an outage, or a
    busy hall) searches by index: no scan of a table and no automatic index, so a batch costs the same
    in a hall with years of events as in a new one. (The query for reasons waiting for their rating
    once had the planner build an automatic index over all events, once per batch.)"""
    import threading

    from pingjia.bridge import cases, devices
    from pingjia.bridge.hub import Hub
    from pingjia.bridge.store import transaction

    n = 300
    conn = store.connect()
    conn.execute("PRAGMA synchronous = OFF")  # set-up only: 600 small transactions
    keypads = []
    for i in range(n):
        devices.add_window(conn, "B%03d" % i, now=clock.t - 7200)
        keypads.append(Keypad("KP-B%03d" % i, devices.add(conn, "KP-B%03d" % i, window_id="B%03d" % i, now=clock.t - 3600)))
    with transaction(conn):
        for i in range(n):
            cases.open_case(conn, {"project_no": "P%03d" % i, "window_id": "B%03d" % i}, clock.t - 60)
            cases.finish(conn, "P%03d" % i, rules, clock.t - 5)
    tokens = {r[0]: r[1] for r in conn.execute("SELECT device_id, token FROM cases")}
    hub = Hub(store, rules=rules, hall="test", clock=clock, batch_max=n).start(timer=False)
    try:
        hold, held = threading.Event(), threading.Event()

        def block(conn, now):  # keeps the writer busy until all 300 ratings are queued: they make one batch
            held.set()
            hold.wait(10)
            return None, []

        blocker = threading.Thread(target=hub.call, args=(block,))
        blocker.start()
        assert held.wait(10)
        statements = []
        hub.writer.conn.set_trace_callback(statements.append)
        for i, k in enumerate(keypads):
            assert hub.submit(k.rating(1 + i % 5, tokens[k.device_id]), link)
        hold.set()
        blocker.join(10)
        _drain(hub)
        hub.writer.conn.set_trace_callback(None)
    finally:
        hub.stop()
    assert hub.stats()["batches"] == 1 and q(store, "SELECT count(*) AS n FROM ratings")[0]["n"] == n
    # the look-ups, the batch's rows, its cases (a WITH ... UPDATE), the keypads' last-seen
    assert {"SELECT", "WITH", "INSERT"} <= {sql.split()[0].upper() for sql in statements}
    assert any("UPDATE cases" in sql for sql in statements)
    assert full_reads(conn, statements, small=("v",)) == []  # v: the batch's own list of keys
    conn.close()


def test_device_log_pruned_after_its_retention(hub, link, kp, store, clock):
    hub.device_text(link, "KP-0001", "old line")
    _drain(hub)
    clock.t += 91 * 86400
    hub.device_text(link, "KP-0001", "new line")
    _drain(hub)
    assert hub.prune() == 1
    assert [r["line"] for r in q(store, "SELECT line FROM device_log")] == ["new line"]


def test_root_cli_leaves_side_files_to_the_database_owner(tmp_path):
    import os

    from pingjia.bridge.store import Store

    if os.geteuid() != 0:
        return  # only root can create files owned by someone else
    path = tmp_path / "b.db"
    s = Store(path)
    s.migrate()
    os.chown(path, 12345, 12345)  # the service user's file
    conn = s.connect()
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO audit (at, actor, action) VALUES (1, 'cli', 'x')")
    conn.execute("COMMIT")
    s.connect().close()
    for side in ("-wal", "-shm"):
        assert os.stat(str(path) + side).st_uid == 12345
    conn.close()


def test_checkpointer_copies_the_wal_into_the_database_file(store, clock, link, tmp_path):
    """The writer's COMMITs leave checkpoints to the hub's checkpoint thread: the events end up in the
    database file itself (a copy of it without its -wal holds them) though the writer never crossed
    its own automatic-checkpoint limit."""
    import shutil
    import sqlite3
    import time

    from pingjia.bridge.hub import Hub

    from .conftest import add_keypad

    hub = Hub(store, hall="test", clock=clock, checkpoint_s=0.05).start(timer=False)
    try:
        kp = add_keypad(store, "KP-0009", "W02")
        hub.reload_keys()
        for _ in range(300):
            hub.submit(kp.unsolicited(4), link)
        _drain(hub)

        def in_file():
            copy = tmp_path / "copy.db"
            shutil.copyfile(store.path, copy)  # the main file only: no -wal, no -shm
            conn = sqlite3.connect(str(copy))
            try:
                return conn.execute("SELECT count(*) FROM events WHERE device_id = 'KP-0009'").fetchone()[0]
            finally:
                conn.close()

        end = time.monotonic() + 10
        while in_file() < 300 and time.monotonic() < end:
            time.sleep(0.05)
        assert in_file() == 300
        assert hub._checkpointer.checkpoints > 0
    finally:
        hub.stop()


@pytest.mark.expect_warnings
def test_checkpointer_failure_logged_once_then_recovery(store, caplog):
    """A checkpoint that cannot run (the file cannot be opened: a full disk, a permission change)
    is logged once however often it is retried, and its recovery once."""
    import sqlite3
    import time

    from pingjia.bridge.store import Checkpointer

    class Flaky:
        fails = 5

        def connect(self):
            if self.fails:
                self.fails -= 1
                raise sqlite3.OperationalError("unable to open database file")
            return store.connect()

    ck = Checkpointer(Flaky(), interval_s=0.01).start()
    try:
        end = time.monotonic() + 10
        while ck.checkpoints == 0 and time.monotonic() < end:
            time.sleep(0.01)
    finally:
        ck.stop()
    assert ck.checkpoints > 0
    msgs = [r.getMessage() for r in caplog.records if r.name == "pingjia.bridge.store"]
    assert sum("checkpoint failed" in x for x in msgs) == 1
    assert sum("checkpoint recovered" in x for x in msgs) == 1


@pytest.mark.expect_warnings
def test_event_left_out_by_a_bug_is_not_acked_as_a_duplicate_later_in_the_batch(store, clock, monkeypatch):
    """A batch redone item by item after a bug: an event whose rows were rolled back, and that comes
    again in the same batch (a retransmission), is stored then, not taken for a stored duplicate
    and ACKed without a row."""
    from pingjia.bridge.batch import Batch
    from pingjia.bridge.hub import Hub
    from pingjia.protocol import messages as m

    from .conftest import Link, add_keypad

    kp = add_keypad(store, "KP-0007", "W03")
    hub = Hub(store, hall="test", clock=clock)
    hub.reload_keys()
    w = hub.writer
    w.conn = store.connect()  # the writer's loop without its thread: one batch, fed directly
    real_apply, real_flush = Batch.apply, Batch.flush
    n = {"apply": 0, "flush": 0}

    def apply(self, *a):  # the first try of the batch meets a bug: the batch is redone item by item
        n["apply"] += 1
        if n["apply"] == 1:
            raise ValueError("boom")
        return real_apply(self, *a)

    def flush(self):  # ... where writing the first item's row fails once: that item is rolled back
        if self.events:
            n["flush"] += 1
            if n["flush"] == 1:
                raise ValueError("boom again")
        return real_flush(self)

    monkeypatch.setattr(Batch, "apply", apply)
    monkeypatch.setattr(Batch, "flush", flush)
    raw = kp.unsolicited(2)
    msg = m.decode(raw, kp.key)
    link = Link()
    assert w._commit([("msg", msg, raw, link, clock()), ("msg", msg, raw, link, clock())])
    stored = [r["seq"] for r in q(store, "SELECT seq FROM events WHERE device_id = 'KP-0007'")]
    assert stored == [msg.seq]
    assert link.acked(kp) == [msg.seq]  # ACKed once it is stored, by the second copy
    w.conn.close()


@pytest.mark.expect_warnings
def test_bad_row_at_the_batch_write_left_out_rest_committed(hub, link, kp, store, monkeypatch):
    """A bug met only when the batch's deferred rows are written: the batch is redone item by item,
    only the bad event is left out (not stored, not ACKed; the keypad keeps it)."""
    from pingjia.bridge.batch import Batch

    real = Batch.flush

    def flaky(self):
        if any(r[1] == 3 for r in self.events):
            raise ValueError("boom")
        return real(self)

    monkeypatch.setattr(Batch, "flush", flaky)
    for _ in range(5):
        hub.submit(kp.unsolicited(2), link)
    _drain(hub)
    assert [r["seq"] for r in q(store, "SELECT seq FROM events ORDER BY seq")] == [1, 2, 4, 5]
    assert sorted(link.acked(kp)) == [1, 2, 4, 5]


def test_select_in_reads_every_key_across_chunks():
    """store.select_in: keys split over several statements (scalars and tuples) still all match."""
    import sqlite3

    from pingjia.bridge.store import select_in

    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (a TEXT, b INTEGER, PRIMARY KEY (a, b))")
    conn.executemany("INSERT INTO t VALUES (?, ?)", [("k%d" % i, i) for i in range(1000)])
    assert sorted(r[1] for r in select_in(conn, "SELECT a, b FROM t WHERE b IN (%s)", range(0, 1000, 1), chunk=300)) == list(range(1000))
    pairs = [("k%d" % i, i) for i in range(0, 1000, 3)] + [("k1", 2)]  # the last one matches nothing
    got = list(select_in(conn, "WITH v(x, y) AS (VALUES %s) SELECT t.a, t.b FROM v JOIN t ON t.a = v.x AND t.b = v.y", pairs, chunk=100))
    assert sorted(got) == sorted(pairs[:-1])
    assert list(select_in(conn, "SELECT a FROM t WHERE b IN (%s)", [])) == []
    conn.close()
