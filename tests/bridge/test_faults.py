"""Database locked by another connection, database full: clear error, no ACK, nothing lost, recovery."""
import logging
import time

import pytest

from pingjia.bridge.hub import Hub
from pingjia.bridge.store import Store
from tests.bridge.conftest import add_keypad, q


def _until(pred, timeout=20):
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError("condition not met in %ss" % timeout)
        time.sleep(0.01)


@pytest.mark.expect_warnings
def test_database_locked_no_ack_then_recovers(store, link, clock, rules, caplog):
    kp = add_keypad(store, "KP-0001", "W01")
    hub = Hub(Store(store.path, busy_timeout_ms=100), rules=rules, clock=clock).start(timer=False)
    try:
        other = store.connect()
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        for _ in range(20):
            hub.submit(kp.unsolicited(4), link)
        _until(lambda: hub.stats()["commit_error"] is not None)
        _until(lambda: hub.stats()["commit_failures"] >= 3)
        assert link.sent == []  # nothing ACKed while the commit fails
        assert "locked" in hub.stats()["commit_error"]
        other.execute("ROLLBACK")
        other.close()
        _until(lambda: len(link.acked(kp)) == 20)
        assert sorted(link.acked(kp)) == list(range(1, 21))
        assert q(store, "SELECT count(*) AS n FROM events")[0]["n"] == 20
        assert hub.stats()["commit_error"] is None
    finally:
        hub.stop()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "commit failed, nothing ACKed" in errors[0] and "locked" in errors[0]
    assert any("commit recovered" in r.getMessage() for r in caplog.records)


@pytest.mark.expect_warnings
def test_database_full_no_ack_nothing_lost_recovers(hub, store, link, kp, caplog):
    pages = hub.call(lambda conn, now: (conn.execute("PRAGMA page_count").fetchone()[0], []))
    hub.call(lambda conn, now: (conn.execute("PRAGMA max_page_count = %d" % pages).fetchone(), []), transaction=False)
    n = hub.writer.batch_max - 20  # one batch, more than fits in the pages left
    for i in range(n):
        hub.submit(kp.unsolicited(1 + i % 5), link)
    _until(lambda: hub.stats()["commit_error"] is not None)
    _until(lambda: hub.stats()["commit_failures"] >= 3)
    assert "full" in hub.stats()["commit_error"]
    # what fitted was committed and ACKed; nothing else was ACKed
    stored = {r["seq"] for r in q(store, "SELECT seq FROM events")}
    assert set(link.acked(kp)) == stored and len(stored) < n
    # space returns (an operator freed disk; here a job the writer runs after the failing batch's next try):
    # the queued batch commits, every event is ACKed once stored
    hub.call(lambda conn, now: (conn.execute("PRAGMA max_page_count = 1073741823").fetchone(), []), transaction=False)
    _until(lambda: len(set(link.acked(kp))) == n)
    assert q(store, "SELECT count(*) AS n FROM events")[0]["n"] == n
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "database or disk is full" in errors[0]


@pytest.mark.expect_warnings
def test_failing_batch_retried_as_it_is_and_stop_does_not_wait_for_it(store, link, clock, rules, caplog):
    """A batch whose commit keeps failing (another process holds the write lock) is retried as it is,
    not grown by one queued event per try; a stop meanwhile returns within a few seconds, and what
    it held was never ACKed (the keypads retransmit to the next bridge), so nothing is lost."""
    kp = add_keypad(store, "KP-0001", "W01")
    hub = Hub(Store(store.path, busy_timeout_ms=50), rules=rules, clock=clock, batch_max=10).start(timer=False)
    other = store.connect()
    other.execute("BEGIN IMMEDIATE")
    raws = [kp.unsolicited(1 + i % 5) for i in range(30)]
    for raw in raws:
        hub.submit(raw, link)
    _until(lambda: hub.stats()["commit_failures"] >= 4)
    assert hub.stats()["queue"] == 20  # the rest waits its turn in the queue
    t = time.monotonic()
    assert hub.stop(timeout=10) is False  # not flushed: said so, logged
    assert time.monotonic() - t < 5
    assert link.sent == []
    other.execute("ROLLBACK")
    other.close()
    again = Hub(store, rules=rules, clock=clock).start(timer=False)  # the next bridge; the keypad retransmits
    try:
        for raw in raws:
            again.submit(raw, link)
        _until(lambda: len(link.acked(kp)) == 30)
    finally:
        again.stop()
    assert q(store, "SELECT count(*) AS n FROM events")[0]["n"] == 30
    assert any("stopped with uncommitted messages pending=10" in r.getMessage() for r in caplog.records)


@pytest.mark.expect_warnings
def test_case_api_reports_full_database(hub, kp, caplog):
    pages = hub.call(lambda conn, now: (conn.execute("PRAGMA page_count").fetchone()[0], []))
    hub.call(lambda conn, now: (conn.execute("PRAGMA max_page_count = %d" % pages).fetchone(), []), transaction=False)
    import sqlite3

    with pytest.raises(sqlite3.OperationalError, match="full"):
        for i in range(2000):
            hub.open_case({"project_no": "P%05d" % i, "window_id": "W01", "task_name": "x" * 150})
    hub.call(lambda conn, now: (conn.execute("PRAGMA max_page_count = 1073741823").fetchone(), []), transaction=False)
    assert hub.open_case({"project_no": "AFTER", "window_id": "W01"})["state"] == "open"


@pytest.mark.expect_warnings
def test_queue_full_refuses_counted_logged_once(store, link, clock, rules, caplog):
    kp = add_keypad(store, "KP-0001", "W01")
    hub = Hub(store, rules=rules, clock=clock, max_queue=5)
    hub.reload_keys()  # writer not started yet: the queue only fills
    results = [hub.submit(kp.unsolicited(3), link) for _ in range(10)]
    assert results == [True] * 5 + [False] * 5
    assert hub.stats()["overload"] == 5
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "queue full" in errors[0]
    hub.start(timer=False)
    try:
        _until(lambda: len(link.acked(kp)) == 5)
        assert q(store, "SELECT count(*) AS n FROM events")[0]["n"] == 5
    finally:
        hub.stop()
