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
