"""The sender process killed (SIGKILL) mid-batch and restarted: every record reaches the receiver exactly once."""
import os
import signal
import subprocess
import sys
import time

from .conftest import KEY, make_db, outbox, seed_ratings, states
from .test_sync import assert_receiver_matches

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def write_config(path, db, url):
    path.write_text(f"""
[bridge]
db = "{db}"
hall = "h1"

[upstream]
endpoint = "{url}"
profile = "zhejiang"
sign_alg = "hmac-sm3"
sign_key = "{KEY}"
area_code = "330102"
batch_size = 25
timeout = 30.0
backoff_base = 0.05
backoff_max = 0.2
poll_interval = 0.05

[upstream.followup]
deadline_working_days = 5
holidays = ["2026-01-01"]
""", encoding="utf-8")


def cli(*args):
    return [sys.executable, "-c", "from pingjia.tools.cli import main; main()", *args]


def wait_for(pred, timeout=30):
    t0 = time.monotonic()
    while not pred():
        assert time.monotonic() - t0 < timeout, "timed out"
        time.sleep(0.02)


def test_sender_killed_mid_batch_and_restarted(tmp_path, receiver):
    dbpath = str(tmp_path / "bridge.db")
    conn = make_db(dbpath)
    seed_ratings(conn, 500)
    rc = receiver(sign_alg="hmac-sm3", delay=0.02)
    cfg = tmp_path / "bridge.toml"
    write_config(cfg, dbpath, rc.url)
    p = subprocess.Popen(cli("sync", "run", "--loop", "--config", str(cfg)), cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: rc.state()["counters"]["batches"] >= 3)
        rc.set_faults(hang_next=1, hang_s=60)  # the next batch is stored, its answer never comes
        wait_for(lambda: rc.state()["counters"]["hung"] >= 1)
        os.kill(p.pid, signal.SIGKILL)
        p.wait(10)
    finally:
        if p.poll() is None:
            p.kill()
    before = states(conn)
    stored_before = rc.state()["stored"]
    assert before.get("pending", 0) > 0 and stored_before > before.get("sent", 0)  # in flight: stored there, pending here
    rc.set_faults(delay=0.0)
    r = subprocess.run(cli("sync", "run", "--config", str(cfg)), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "queue: 0 pending" in r.stdout
    assert states(conn) == {"sent": 500}
    st = rc.state()
    assert st["stored"] == 500 and st["repeats"] >= 25  # the batch in flight at the kill came again, acknowledged once
    assert_receiver_matches(conn, rc)
    assert len({o["idem_key"] for o in outbox(conn)}) == 500
