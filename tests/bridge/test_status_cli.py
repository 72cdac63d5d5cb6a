"""`pingjia status`: the hall at a glance, problems named, upstream queue shown."""
from click.testing import CliRunner

from pingjia.bridge import devices
from pingjia.bridge.store import Store
from pingjia.tools.cli import main


def test_status_names_the_window_without_a_keypad_and_the_upstream_queue(tmp_path):
    store = Store(str(tmp_path / "b.db"))
    store.migrate()
    conn = store.connect()
    devices.add_window(conn, "W01", "综合受理")
    devices.add_window(conn, "W02", "社保")
    devices.add(conn, "KP-0002", window_id="W02")
    conn.close()
    r = CliRunner().invoke(main, ["status", "--db", str(tmp_path / "b.db")])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].startswith("keypads   2 windows, 1 keypads, 0 online, 2 with problems")
    assert any(line.split()[:1] == ["W01"] for line in lines[1:3])  # no keypad at W01: listed
    assert any("upstream  0 pending" in line for line in lines)
    assert "pingjia fleet" in r.output


def test_db_option_works_on_windows_add_like_everywhere(tmp_path):
    db = str(tmp_path / "w.db")
    r = CliRunner().invoke(main, ["windows", "add", "W07", "--name", "七号窗口", "--db", db])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["windows", "--db", db])
    assert "W07" in r.output and "七号窗口" in r.output


def test_status_counts_the_last_days_cases_reading_only_those(tmp_path):
    """`pingjia status` counts the cases opened in the last 24 hours by state, without reading the
    hall's older cases (a status check costs the same in the fifth year as on the first day)."""
    import time

    from pingjia.bridge import status
    from tests.sqlplan import full_reads, statements_of

    store = Store(str(tmp_path / "b.db"))
    store.migrate()
    conn = store.connect()
    devices.add_window(conn, "W01")
    now = time.time()
    for i, (age_h, state) in enumerate([(50, "rated"), (30, "open"), (20, "rated"), (3, "open"), (1, "rated"), (0.5, "unrated")]):
        conn.execute("INSERT INTO cases (project_no, window_id, state, opened_at) VALUES (?, 'W01', ?, ?)",
                     ("P%d" % i, state, now - age_h * 3600))
    counted = {}
    statements = statements_of(conn, lambda: counted.update(status.cases_last_day(conn, now)))
    assert counted == {"rated": 2, "open": 1, "unrated": 1}
    assert full_reads(conn, statements) == []
    conn.close()
    r = CliRunner().invoke(main, ["status", "--db", str(tmp_path / "b.db")])
    assert "cases     last 24 h: open 1, rated 2, unrated 1" in r.output
