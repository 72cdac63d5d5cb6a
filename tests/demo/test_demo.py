"""The README's first command: `pingjia demo` runs the whole chain and every scripted case lands."""
import re
import sqlite3
import subprocess
import sys

from tests.conftest import ROOT


def test_demo_runs_a_day_and_every_case_lands(tmp_path):
    workdir = tmp_path / "demo"
    p = subprocess.run(
        [sys.executable, "-m", "pingjia.tools.cli", "demo", "--cases", "10", "--no-linger", "--dir", str(workdir), "--http-port", "0"],
        capture_output=True, text=True, timeout=240, cwd=ROOT, stdin=subprocess.DEVNULL,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    out = p.stdout
    assert "did not land" not in out
    landed = re.findall(r"BJ\d{12}", out)
    assert len(set(landed)) == 10, out
    # The store agrees with what was printed: 10 finished cases, each rated or unrated exactly once.
    db = sqlite3.connect(workdir / "bridge.db")
    states = dict(db.execute("SELECT state, COUNT(*) FROM cases GROUP BY state").fetchall())
    assert sum(states.values()) == 10 and set(states) <= {"rated", "unrated"}
    assert db.execute("SELECT COUNT(*) FROM ratings").fetchone()[0] == states.get("rated", 0)
    # and the reference platform holds every record exactly once (nothing quarantined)
    assert db.execute("SELECT COUNT(*) FROM outbox WHERE state = 'quarantined'").fetchone()[0] == 0
    platform = sqlite3.connect(workdir / "platform.db")
    received = {r[0] for r in platform.execute("SELECT idem_key FROM records")}
    sent = {r[0] for r in db.execute("SELECT idem_key FROM outbox WHERE state = 'sent'")}
    assert received == sent and len(sent) == 10, (received, sent)  # each case's rating or unrated notice
    assert "received 10 records" in out, out[-1500:]


def test_demo_help():
    p = subprocess.run([sys.executable, "-m", "pingjia.tools.cli", "demo", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0 and "simulated keypads" in p.stdout
