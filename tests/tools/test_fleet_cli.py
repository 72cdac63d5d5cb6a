"""`pingjia fleet`: every window and its keypad, problems first, as a table and as JSON; clear errors."""
import json

from click.testing import CliRunner

from pingjia.tools.cli import main
from tests.web import hallseed


def _db(tmp_path):
    path = tmp_path / "bridge.db"
    conn = hallseed.seed(str(path))
    conn.execute("UPDATE devices SET online = 0 WHERE device_id = 'KP-0002'")
    conn.execute("UPDATE devices SET fw_version = '1.1.0', journal_depth = 40 WHERE device_id = 'KP-0004'")
    conn.commit()
    conn.close()
    return str(path)


def test_table_problems_first(tmp_path):
    r = CliRunner().invoke(main, ["fleet", "--db", _db(tmp_path)])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].split()[:4] == ["窗口", "名称", "评价器", "状态"]
    order = [ln.split()[0] for ln in lines[1:7]]
    assert order[:3] == ["W06", "W02", "W04"]  # no keypad, offline, journal backlog
    assert "离线" in lines[2] and "积压未确认" in lines[3]
    assert "3 个需要处理" in lines[-1]


def test_json_and_check(tmp_path):
    db = _db(tmp_path)
    r = CliRunner().invoke(main, ["fleet", "--db", db, "--json", "--problems", "--check"])
    assert r.exit_code == 1
    rows = json.loads(r.output)
    assert [(x["window_id"], x["state"]) for x in rows] == [("W06", "missing"), ("W02", "offline"), ("W04", "journal")]
    assert all("key_hex" not in x for x in rows)


def test_versions(tmp_path):
    r = CliRunner().invoke(main, ["fleet", "--db", _db(tmp_path), "--versions", "--json"])
    assert r.exit_code == 0
    assert json.loads(r.output) == {"1.0.0": ["KP-0001", "KP-0002", "KP-0003", "KP-0005"], "1.1.0": ["KP-0004"]}


def test_missing_or_bad_db(tmp_path):
    r = CliRunner().invoke(main, ["fleet", "--db", str(tmp_path / "none.db")])
    assert r.exit_code == 1 and "does not exist" in r.output
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not a database" * 100)
    r = CliRunner().invoke(main, ["fleet", "--db", str(bad)])
    assert r.exit_code == 1 and "error:" in r.output
