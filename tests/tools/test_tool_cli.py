"""Hall-IT command error cases (clear message, non-zero exit), the simulator front end, the batch progress display."""
import io
import json
import sqlite3

from click.testing import CliRunner

from pingjia.tools import flash as fl
from pingjia.tools.cli import main


def _run(*args):
    return CliRunner().invoke(main, list(args))


def test_flash_errors(bridge_db, tmp_path):
    r = _run("flash", "/dev/nonexistent-board", "--window", "W01", "--db", bridge_db)
    assert r.exit_code == 1 and "cannot open /dev/nonexistent-board: no such port" in r.output and "0 done, 1 failed" in r.output
    r = _run("flash", "/dev/x", "--db", str(tmp_path / "none.db"))
    assert r.exit_code == 1 and "does not exist" in r.output
    r = _run("flash", "/dev/x", "--broker", "host:notaport", "--db", bridge_db)
    assert r.exit_code == 1 and "--broker wants host[:port]" in r.output
    r = _run("flash", "/dev/x", "--set", "heartbeat_s", "--db", bridge_db)
    assert r.exit_code == 1 and "--set wants name=value" in r.output
    r = _run("flash", "/dev/x", "--transport", "lora", "--db", bridge_db)
    assert r.exit_code == 2 and "Invalid value for '--transport'" in r.output
    r = _run("flash", "--db", bridge_db)
    assert r.exit_code == 2 and "Missing argument 'PORT'" in r.output
    bad = tmp_path / "bad.toml"
    bad.write_text("[bridge]\nnope = 1\n")
    r = _run("flash", "/dev/x", "--config", str(bad))
    assert r.exit_code == 2 and "nope" in r.output


def test_device_id_taken(bridge_db):
    from pingjia.bridge import devices
    from pingjia.bridge.store import Store

    conn = Store(bridge_db).connect()
    devices.add(conn, "KP-0005", window_id="W01")
    conn.close()
    r = _run("flash", "/dev/x", "--device-id", "KP-0005", "--db", bridge_db)
    assert r.exit_code == 1 and "device KP-0005 is already registered" in r.output
    assert fl.next_device_ids(bridge_db, 2) == ["KP-0001", "KP-0002"]


def test_batch_and_update_without_boards(bridge_db, monkeypatch):
    monkeypatch.setattr(fl, "discover", lambda: [])
    for cmd in ("flash-all", "update"):
        r = _run(cmd, "--db", bridge_db)
        assert r.exit_code == 1 and "no boards found" in r.output


def test_simulate_serial_keypads(bridge_db):
    r = _run("simulate", "-n", "2", "--transport", "serial", "--seconds", "0.5", "--rate", "4", "--register",
             "--db", bridge_db)
    assert r.exit_code == 0, r.output
    lines = r.output.strip().splitlines()
    assert [ln.split()[0] for ln in lines[:2]] == ["SIM-0001", "SIM-0002"]
    assert json.loads(lines[-1])["keypads"] == 2
    conn = sqlite3.connect(bridge_db)
    assert {r[0] for r in conn.execute("SELECT device_id FROM devices")} == {"SIM-0001", "SIM-0002"}
    conn.close()
    r = _run("simulate", "-n", "1", "--seed", "other", "--register", "--seconds", "0", "--db", bridge_db)
    assert r.exit_code == 1 and "SIM-0001 is registered with another key" in r.output
    r = _run("simulate", "--mix", "7:1", "--db", bridge_db)
    assert r.exit_code == 1 and "stars 1..5" in r.output


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_progress_lines():
    plain = io.StringIO()
    p = fl.Progress(["/dev/a", "/dev/b"], stream=plain)
    p.for_port("/dev/a")("copy", 1, 10)
    p.for_port("/dev/a")("copy", 2, 10)
    p.for_port("/dev/b")("failed")
    assert plain.getvalue() == "/dev/a: copy\n/dev/b: failed\n"  # stage changes only when not a terminal
    tty = _Tty()
    p = fl.Progress(["/dev/a", "/dev/b"], stream=tty)
    p.for_port("/dev/a")("copy", 5, 10)
    p.for_port("/dev/a")("copy", 10, 10)
    out = tty.getvalue()
    assert "[##########..........] 5/10" in out and "[####################] 10/10" in out
    assert "\x1b[2A" in out  # redrawn in place


def test_summary_table():
    ok = fl.Result("/dev/a", ok=True, device_id="KP-0001", window_id="W01", version="1.0.0", written=3, skipped=22)
    bad = fl.Result("/dev/b", reason="no MicroPython raw REPL on /dev/b")
    lines = fl.summary_table([ok, bad]).splitlines()
    assert lines[0].split() == ["port", "result", "device", "window", "firmware", "written", "time", "reason"]
    assert lines[1].split()[:6] == ["/dev/a", "done", "KP-0001", "W01", "1.0.0", "3/25"]
    assert lines[2].split()[:2] == ["/dev/b", "FAILED"] and lines[2].endswith("no MicroPython raw REPL on /dev/b")


def test_port_in_use(bridge_db, image):
    import os

    import serial

    master, slave = os.openpty()
    port = os.ttyname(slave)
    with serial.Serial(port, exclusive=True):  # e.g. the bridge reading it
        r = fl.flash_board(port, bridge_db, image, "KP-0001", "W01")
    os.close(master)
    os.close(slave)
    assert not r.ok and r.reason == "cannot open %s: in use (by the bridge or another program?) or no permission" % port
