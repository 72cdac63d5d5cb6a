"""Hall status page in real headless Chromium: loads, then shows an offline keypad, a new rating and a growing journal without reload."""
import json
import time

from pingjia.bridge import statuspage
from tests.web import hallseed


def test_page_updates_live_without_reload(page_server, hall_db, browser, shot):
    _, conn = hall_db
    page = browser.new_page(viewport={"width": 1600, "height": 900})
    page.goto(page_server + "/")
    page.wait_for_selector('#windows .win[data-window="W01"][data-state="ok"]')
    assert page.text_content("#k-rated") == "12"
    assert page.text_content("#k-rate") == "92.3%"
    assert "非常满意" in page.text_content("#dist") and "★★★★★" in page.text_content("#dist")
    assert "W06" in page.text_content("#alerts")  # no keypad at W06
    shot(page, "statuspage-1-loaded")
    page.evaluate("window.__noReload = 'still-here'")

    conn.execute("UPDATE devices SET online = 0, last_seen = ? WHERE device_id = 'KP-0003'", (time.time() - 200,))
    conn.commit()
    page.wait_for_selector('#windows .win[data-window="W03"][data-state="offline"]')
    page.wait_for_selector('#alerts .alert[data-window="W03"][data-state="offline"]')
    assert "离线" in page.text_content('#windows .win[data-window="W03"] .pill')
    shot(page, "statuspage-2-offline")

    project = hallseed.add_rating(conn, "W01", "KP-0001", 2)
    page.wait_for_selector('#ratings tr[data-project="%s"]' % project)
    page.wait_for_function("document.querySelector('#k-rated').textContent === '13'")
    assert "不满意" in page.text_content('#ratings tr[data-project="%s"]' % project)

    conn.execute("INSERT INTO cases (project_no, window_id, state, opened_at) VALUES ('OPEN-1', 'W05', 'open', ?)",
                 (time.time(),))
    conn.commit()
    page.wait_for_selector('#windows .win[data-window="W05"] .busy')  # a case in progress at W05
    conn.execute("UPDATE devices SET journal_depth = 57 WHERE device_id = 'KP-0004'")
    conn.commit()
    page.wait_for_selector('#alerts .alert[data-window="W04"][data-state="journal"]')
    assert page.evaluate("window.__noReload") == "still-here"
    shot(page, "statuspage-3-rating-and-journal")
    page.close()


def test_page_shows_lost_link(page_server, browser, hall_db):
    page = browser.new_page()
    page.goto(page_server + "/")
    page.wait_for_selector('#windows .win[data-window="W01"]')
    assert page.is_hidden("#link")
    page.route("**/api/hall", lambda route: route.abort())
    page.wait_for_selector("#link", state="visible")
    page.close()


def test_handle_contract(hall_db):
    path = str(hall_db[0])
    assert statuspage.handle(path, "GET", "/cases") is None
    status, ctype, body = statuspage.handle(path, "GET", "/")
    assert status == 200 and ctype.startswith("text/html") and "好差评".encode() in body
    assert statuspage.handle(path, "GET", "/static/app.js")[1].split(";")[0] in ("text/javascript", "application/javascript")
    assert statuspage.handle(path, "GET", "/static/../statuspage.py")[0] == 404
    assert statuspage.handle(path, "POST", "/api/hall")[0] == 405
    status, ctype, body = statuspage.handle(path, "GET", "/api/hall?x=1")
    h = json.loads(body)
    assert status == 200 and ctype.startswith("application/json")
    assert [s["label"] for s in h["levels"]] == ["非常满意", "满意", "基本满意", "不满意", "非常不满意"]
    assert h["today"]["finished"] == 13 and h["today"]["rated"] == 12 and h["today"]["bad"] == 2
    assert h["today"]["satisfaction_rate"] == round(100 * 10 / 12, 1)
    assert [f["stars"] for f in h["followups"]] == [1, 2]


def test_keypad_states_problems_first(hall_db):
    _, conn = hall_db
    now = time.time()
    conn.execute("UPDATE devices SET last_seen = NULL WHERE device_id = 'KP-0005'")
    conn.execute("UPDATE devices SET last_seen = ? WHERE device_id = 'KP-0002'", (now - 600,))
    conn.execute("UPDATE devices SET status_flags = 1, journal_depth = 2000 WHERE device_id = 'KP-0003'")
    conn.execute("UPDATE devices SET last_error = 'flash write failed' WHERE device_id = 'KP-0004'")
    conn.execute("UPDATE devices SET rejects = 3, last_reject = 'mac', last_reject_at = ? WHERE device_id = 'KP-0001'",
                 (now - 30,))
    conn.execute("INSERT INTO devices (device_id, key_hex, created_at) VALUES ('KP-0099', '', ?)", (now,))
    conn.execute("INSERT INTO devices (device_id, key_hex, window_id, created_at, retired_at) VALUES ('KP-0098', '', 'W06', ?, ?)", (now, now))
    conn.commit()
    rows = statuspage.keypads(conn, now)
    assert [(r["window_id"], r["state"]) for r in rows] == [
        ("W06", "missing"), ("W05", "never"), ("W02", "stale"), ("W03", "journal"),
        ("W01", "error"), ("W04", "error"), (None, "spare"),
    ]
    assert rows[5]["detail"] == "flash write failed" and "拒收了它的消息（mac），累计 3 条" in rows[4]["detail"]
    assert all(r["problem"] for r in rows[:6]) and not rows[6]["problem"]


def test_big_hall_fits_a_wall_screen(page_server, hall_db, browser, shot):
    """36 windows: compact cards; problem windows still carry their device line and reason."""
    _, conn = hall_db
    now = time.time()
    for i in range(7, 37):
        conn.execute("INSERT INTO windows (window_id, name, dept_name, created_at) VALUES (?,?,?,?)",
                     ("W%02d" % i, "窗口%d" % i, "部门", now))
        conn.execute("""INSERT INTO devices (device_id, key_hex, window_id, created_at, fw_version, online, last_seen,
                        journal_depth, journal_cap) VALUES (?,?,?,?,?,?,?,?,?)""",
                     ("KP-%04d" % i, "", "W%02d" % i, now, "1.0.0", 0 if i == 20 else 1, now - 5, 0, 500))
    conn.commit()
    for i in range(7, 37):
        hallseed.add_rating(conn, "W%02d" % i, "KP-%04d" % i, 5 if i % 7 else 2)
    page = browser.new_page(viewport={"width": 1920, "height": 1080})
    page.goto(page_server + "/")
    page.wait_for_selector('#windows.compact .win[data-window="W36"]')
    assert page.is_hidden('#windows .win[data-window="W19"] .dev')
    assert page.is_visible('#windows .win[data-window="W20"] .dev')  # offline: which unit, last seen
    shot(page, "statuspage-4-big-hall")
    page.close()


def test_first_case_since_reads_only_recent_cases(tmp_path):
    conn = hallseed.create(str(tmp_path / "b.db"))
    assert statuspage.first_case_since(conn, 100.0) == 0  # no cases at all
    conn.execute("INSERT INTO windows (window_id, created_at) VALUES ('W01', 0)")
    for cid, opened in [(1, 10.0), (2, 20.0), (5, 30.0), (9, 40.0), (10, 50.0)]:  # ids with gaps, opened in order
        conn.execute("INSERT INTO cases (case_id, project_no, window_id, opened_at) VALUES (?,?,?,?)",
                     (cid, "P%d" % cid, "W01", opened))
    got = {since: statuspage.first_case_since(conn, since) for since in (0.0, 10.0, 25.0, 30.0, 41.0, 50.0, 60.0)}
    assert got == {0.0: 1, 10.0: 1, 25.0: 3, 30.0: 3, 41.0: 10, 50.0: 10, 60.0: 11}
    for since, first in got.items():  # the bound keeps exactly the cases opened since then
        kept = [r[0] for r in conn.execute("SELECT case_id FROM cases WHERE case_id >= ?", (first,))]
        assert kept == [r[0] for r in conn.execute("SELECT case_id FROM cases WHERE opened_at >= ?", (since,))]


def test_today_counts_a_case_finished_today_however_long_ago_it_was_opened(hall_db):
    """A matter opened three days ago and finished (and rated) this morning is one of today's: in the
    hall's counts, its window's card and the latest ratings, and the page agrees with the day's report."""
    from pingjia.bridge import reports

    _, conn = hall_db
    now = time.time()
    day = statuspage.day_start(now)
    before = statuspage.hall(conn, now)
    done = max(day + 1, now - 30)
    # opened before every case of the morning, so its id is below theirs (ids are given at opening)
    conn.execute("""INSERT INTO cases (case_id, project_no, window_id, task_name, state, device_id, opened_at, finished_at,
                    closed_at) VALUES (0, 'OLD-1', 'W02', '承诺件', 'rated', 'KP-0002', ?, ?, ?)""", (day - 3 * 86400, done, done))
    conn.execute("INSERT INTO ratings (case_id, stars, device_id, seq, pressed_at, updated_at) "
                 "VALUES (0, 4, 'KP-0002', 900, ?, ?)", (done, done))
    conn.commit()
    h = statuspage.hall(conn, now)
    assert (h["today"]["finished"], h["today"]["rated"]) == (before["today"]["finished"] + 1, before["today"]["rated"] + 1)
    card = lambda model: next(w for w in model["windows"] if w["window_id"] == "W02")["today"]  # noqa: E731
    assert (card(h)["finished"], card(h)["rated"]) == (card(before)["finished"] + 1, card(before)["rated"] + 1)
    assert "OLD-1" in [r["project_no"] for r in h["ratings"]]
    (rep,) = reports.report(conn, by="hall", period="all", since=day, until=day + 86400, now=now)
    assert (rep["finished"], rep["rated"], rep["satisfied"]) == (h["today"]["finished"], h["today"]["rated"],
                                                                  h["today"]["satisfied"])


def test_page_reads_only_todays_cases(hall_db):
    """Every statement behind the page reads the growing tables (cases, ratings, follow-ups) by index:
    refreshed every few seconds, it costs the same in a hall with years of cases as on its first day."""
    from tests.sqlplan import full_reads, statements_of

    _, conn = hall_db
    statements = statements_of(conn, lambda: statuspage.hall(conn))
    assert any("FROM cases" in sql for sql in statements) and any("FROM followups" in sql for sql in statements)
    assert full_reads(conn, statements, small=("w", "d")) == []  # windows and their keypads: one row per window
