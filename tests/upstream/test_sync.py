"""Outbox sync against the real reference receiver (HTTP on a free port, SQLite files on both sides)."""
import json
import logging
import urllib.request

import pytest

from pingjia.bridge.upstream import sender as snd
from pingjia.bridge.upstream.receiver import Receiver
from pingjia.bridge.upstream.sender import Sender

from .conftest import KEY, Clock, add_case, free_port, outbox, sender_cfg, states, seed_ratings, sync_until


def assert_receiver_matches(conn, rc):
    """Every bridge record is stored exactly once at the receiver, with the same meaning."""
    ob = outbox(conn)
    got = {r["idem_key"]: r for r in rc.records()}
    assert len(got) == len(rc.records())  # keyed: no record twice
    sent = [o for o in ob if o["state"] == "sent"]
    assert {o["idem_key"] for o in sent} == set(got)
    stars = dict(((r[0], r[1]), r[2]) for r in conn.execute(
        "SELECT c.project_no, r.assess_number, r.stars FROM ratings r JOIN cases c USING (case_id)"))
    for o in sent:
        g = got[o["idem_key"]]
        assert g["project_no"] == o["project_no"] and g["kind"] == o["kind"]
        if o["kind"] == "rating":
            assert g["stars"] == stars[(o["project_no"], o["assess_number"])]
            assert g["assess_number"] == o["assess_number"]


def test_happy_path_batches_ratings_and_unrated(db, receiver):
    seed_ratings(db, 230)
    add_case(db, "U1", "W01")  # an unrated case
    rc = receiver()
    s = Sender(db, sender_cfg(rc.url, batch_size=100))
    total = s.drain(max_seconds=20)
    assert total["sent"] == 231 and total["batches"] == 3
    assert states(db) == {"sent": 231}
    assert_receiver_matches(db, rc)
    unrated = [r for r in rc.records() if r["kind"] == "unrated"]
    assert len(unrated) == 1 and unrated[0]["stars"] is None and "satisfaction" not in unrated[0]["body"]
    st = snd.status(db)
    assert st["pending"] == 0 and st["sent"] == 231 and st["sync_lag_s"] == 0.0


def test_status_shows_queue_depth_and_lag(db):
    seed_ratings(db, 4)
    st = snd.status(db, now=1763690400.0 + 100)
    assert st["pending"] == 4 and st["due"] == 4 and st["sync_lag_s"] == pytest.approx(95.0)


@pytest.mark.parametrize("alg", ["hmac-sha256", "hmac-sm3"])
def test_signatures_verified_by_receiver(db, receiver, alg):
    seed_ratings(db, 10)
    rc = receiver(sign_alg=alg)
    s = Sender(db, sender_cfg(rc.url, sign_alg=alg))
    assert s.drain(max_seconds=10)["sent"] == 10
    assert rc.state()["counters"]["bad_signature"] == 0 and rc.state()["stored"] == 10


@pytest.mark.expect_warnings
def test_bad_signature_is_rejected_and_nothing_is_lost(db, receiver, caplog):
    seed_ratings(db, 5)
    rc = receiver(sign_alg="hmac-sm3")
    s = Sender(db, sender_cfg(rc.url, sign_alg="hmac-sm3", sign_key="hex:" + "22" * 32))
    r = s.run_once()
    assert r["retry"] == 5 and r["sent"] == 0
    assert rc.state()["counters"]["bad_signature"] == 1 and rc.state()["stored"] == 0
    assert states(db) == {"pending": 5}  # a signature problem is ours: kept, retried, never quarantined
    assert "HTTP 401" in outbox(db)[0]["last_error"] and "bad signature" in outbox(db)[0]["last_error"]
    # the wrong algorithm is refused too
    s2 = Sender(db, sender_cfg(rc.url, sign_alg="hmac-sha256"))
    s2.conn.execute("UPDATE outbox SET next_try_at = 0")
    assert s2.run_once()["retry"] == 5 and rc.state()["counters"]["bad_signature"] == 2
    assert any("batch of 5 failed" in m.getMessage() for m in caplog.records if m.levelno == logging.WARNING)
    # with the right key everything goes
    s3 = Sender(db, sender_cfg(rc.url, sign_alg="hmac-sm3"))
    s3.conn.execute("UPDATE outbox SET next_try_at = 0")
    assert s3.drain(max_seconds=10)["sent"] == 5


def test_sm3_is_openssl_sm3():
    import hashlib
    from pingjia.bridge.upstream import signing
    assert signing.available("hmac-sm3") is None  # this Python's OpenSSL provides SM3
    # GB/T 32905-2016 example 1
    assert hashlib.new("sm3", b"abc").hexdigest() == "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
    assert "unknown signing algorithm" in signing.available("hmac-md5")


@pytest.mark.expect_warnings
def test_platform_down_for_a_while_then_back(db, tmp_path, caplog):
    seed_ratings(db, 120)
    port = free_port()
    url = "http://127.0.0.1:%d/api/evaluations" % port
    s = Sender(db, sender_cfg(url, breaker_failures=3, breaker_cooldown=0.2))
    for _ in range(5):  # nobody listening
        r = s.run_once()
    assert states(db) == {"pending": 120}
    assert s.failures >= 3 and s.state()["circuit"] in ("open", "half-open")
    assert "Connection refused" in s.last_error or "ConnectionRefused" in s.last_error
    rc = Receiver(profile="zhejiang", db=str(tmp_path / "r.db"), port=port, sign_key=KEY).start()
    try:
        sync_until(s, lambda: states(db) == {"sent": 120})
        assert_receiver_matches(db, rc)
        assert s.failures == 0 and s.state()["circuit"] == "closed"
    finally:
        rc.stop()
    warn = [m.getMessage() for m in caplog.records if m.levelno == logging.WARNING]
    assert any("circuit open" in w for w in warn)


@pytest.mark.expect_warnings
def test_5xx_bursts_and_timeouts_mid_batch(db, receiver, caplog):
    seed_ratings(db, 300)
    rc = receiver(fail_rate=0.3, fail_status=502)
    s = Sender(db, sender_cfg(rc.url, batch_size=40, timeout=0.3, breaker_failures=50))
    sync_until(s, lambda: rc.state()["counters"]["failed"] >= 2 and states(db).get("sent", 0) >= 80)
    rc.set_faults(fail_rate=0.0, hang_next=2, hang_s=2.0)  # stored, then no answer before the client's timeout
    sync_until(s, lambda: states(db) == {"sent": 300}, timeout=60)
    st = rc.state()
    assert st["counters"]["hung"] == 2 and st["repeats"] >= 40  # the hung batches came again and were acknowledged
    assert st["stored"] == 300
    assert_receiver_matches(db, rc)
    warn = [m.getMessage() for m in caplog.records if m.levelno >= logging.WARNING]
    assert warn and all("upstream: batch of 40 failed" in w for w in warn)
    assert any("HTTP 502" in w for w in warn)  # the first failure in a row warns, the rest are INFO
    assert any("failed" in m.getMessage() and "timed out" in m.getMessage() for m in caplog.records)


def test_retry_after_is_honoured(db, receiver):
    seed_ratings(db, 10)
    clock = Clock()
    rc = receiver(fail_next=1, fail_status=429, retry_after=120)
    s = Sender(db, sender_cfg(rc.url, breaker_failures=10), clock=clock)
    assert s.run_once()["retry"] == 10
    assert min(o["next_try_at"] for o in outbox(db)) >= clock.t + 120
    clock.advance(60)
    assert s.run_once()["wait"] == pytest.approx(60)  # nothing sent during Retry-After
    assert rc.state()["counters"]["requests"] == 1
    clock.advance(61)
    assert s.run_once()["sent"] == 10


def test_backoff_is_exponential_with_jitter(db):
    s = Sender(db, sender_cfg("http://127.0.0.1:9/x", backoff_base=1.0, backoff_max=60.0))
    for attempts, lo, hi in [(1, 0.5, 1.0), (2, 1.0, 2.0), (3, 2.0, 4.0), (5, 8.0, 16.0), (12, 30.0, 60.0)]:
        ds = [s._backoff(attempts) for _ in range(200)]
        assert lo <= min(ds) and max(ds) <= hi and len(set(ds)) > 100


@pytest.mark.expect_warnings
def test_circuit_breaker_stops_hammering(db, receiver, caplog):
    seed_ratings(db, 20)
    clock = Clock()
    rc = receiver(down=True)
    s = Sender(db, sender_cfg(rc.url, batch_size=5, breaker_failures=3, breaker_cooldown=30, backoff_base=0.001,
                              backoff_max=0.001), clock=clock)
    for _ in range(3):
        s.run_once()
        clock.advance(0.01)
    assert rc.state()["counters"]["requests"] == 3 and s.state()["circuit"] == "open"
    for _ in range(50):  # during the cool-down: no request at all
        assert "wait" in s.run_once() and "batch" not in s.run_once()
        clock.advance(0.5)
    assert rc.state()["counters"]["requests"] == 3
    clock.advance(10)
    s.run_once()  # one probe after the cool-down
    assert rc.state()["counters"]["requests"] == 4
    rc.set_faults(down=False)
    clock.advance(31)
    sync_until(s, lambda: states(db) == {"sent": 20})
    assert s.state()["circuit"] == "closed"
    assert sum("circuit open" in m.getMessage() for m in caplog.records) == 1


@pytest.mark.expect_warnings
def test_rejections_quarantine_then_repush_after_mapping_fix(db, receiver, tmp_path, caplog):
    seed_ratings(db, 25)
    rc = receiver(reject_projects=["P00003"])  # the platform refuses one record outright
    prof = tmp_path / "ours.toml"
    from pingjia.bridge.upstream import mapping
    src = (mapping.PROFILES_DIR / "zhejiang.toml").read_text(encoding="utf-8")
    prof.write_text(src.replace('channel = "4"', 'channel = "9"'), encoding="utf-8")  # a wrong pf code in our profile
    s = Sender(db, sender_cfg(rc.url, profile=str(prof)))
    s.drain(max_seconds=10)
    assert states(db) == {"quarantined": 25}
    q = {o["project_no"]: o["last_error"] for o in outbox(db)}
    assert "platform:" in q["P00001"] and "pf '9' is not this platform's desk-keypad channel '4'" in q["P00001"]
    assert "rejected by test" in q["P00003"]
    assert rc.state()["stored"] == 0 and rc.state()["rejects"] == 25
    # quarantined records stay put: never retried blindly
    s.conn.execute("UPDATE outbox SET next_try_at = 0")
    assert "batch" not in s.run_once()
    # fix the mapping, re-push from the CLI (a time range), send
    prof.write_text(src, encoding="utf-8")
    s.reload_profile()
    from click.testing import CliRunner
    from pingjia.tools.cli import main
    dbpath = db.execute("PRAGMA database_list").fetchone()[2]
    res = CliRunner().invoke(main, ["re-push", "--db", dbpath, "--since", "2025-11-21", "--until", "2025-11-22"])
    assert res.exit_code == 0, res.output
    assert "25 record(s) back to pending" in res.output
    s.drain(max_seconds=10)
    assert states(db) == {"sent": 24, "quarantined": 1}
    # the platform still refuses P00003: the quarantine list says why
    res = CliRunner().invoke(main, ["quarantine", "list", "--db", dbpath, "--json"])
    rows = json.loads(res.output)
    assert [r["project_no"] for r in rows] == ["P00003"] and "rejected by test" in rows[0]["reason"]
    rc.set_faults(reject_projects=[])
    res = CliRunner().invoke(main, ["re-push", "--db", dbpath, "--case", "P00003"])
    assert "1 record(s)" in res.output
    s.drain(max_seconds=10)
    assert states(db) == {"sent": 25}
    assert_receiver_matches(db, rc)
    assert sum("quarantined" in m.getMessage() for m in caplog.records if m.levelno == logging.WARNING) == 2  # one line per batch
    assert db.execute("SELECT COUNT(*) FROM audit WHERE action = 'upstream.repush'").fetchone()[0] == 2


@pytest.mark.expect_warnings
def test_missing_required_reason_is_quarantined_locally(db, receiver, caplog):
    add_case(db, "S1", "W01", stars=1, reasons="")  # 差评 without a reason
    add_case(db, "S2", "W01", stars=2, reasons="502")
    add_case(db, "S3", "W01")  # unrated: this platform takes none
    rc = receiver(profile="shandong")
    s = Sender(db, sender_cfg(rc.url, profile="shandong"))
    s.drain(max_seconds=10)
    ob = {o["project_no"]: o for o in outbox(db)}
    assert ob["S1"]["state"] == "quarantined" and "mapping: 差评 (1★) without a reason" in ob["S1"]["last_error"]
    assert ob["S2"]["state"] == "sent" and ob["S3"]["state"] == "skipped"
    assert rc.state()["counters"]["requests"] == 1 and rc.state()["stored"] == 1
    assert [m.getMessage() for m in caplog.records if m.levelno >= logging.WARNING] == [
        "upstream: 1 record(s) quarantined, e.g. outbox 1 (rating:S1:1): mapping: 差评 (1★) without a reason: "
        "profile shandong requires evalDetail or writingEvaluation"]


def test_receiver_admin_endpoint_and_idempotent_answers(receiver):
    rc = receiver(sign_alg="none", key="")
    req = urllib.request.Request(rc.url.replace("/api/evaluations", "/admin/faults"), method="POST",
                                 data=json.dumps({"fail_next": 1, "retry_after": 7}).encode())
    assert json.load(urllib.request.urlopen(req))["faults"]["fail_next"] == 1
    from pingjia.bridge.upstream import mapping
    from .test_mapping import CTX, rec
    body = json.dumps({"records": [mapping.load("zhejiang").map_rating(rec(4), CTX)]}).encode()
    post = lambda: urllib.request.urlopen(urllib.request.Request(rc.url, data=body, method="POST"))  # noqa: E731
    with pytest.raises(urllib.error.HTTPError) as e:
        post()
    assert e.value.code == 503 and e.value.headers["Retry-After"] == "7"
    assert json.load(post())["results"][0]["status"] == "accepted"
    assert json.load(post())["results"][0]["status"] == "duplicate"
    assert rc.state()["stored"] == 1 and rc.state()["repeats"] == 1
    recs = json.load(urllib.request.urlopen(rc.url.replace("/api/evaluations", "/admin/records")))
    assert recs[0]["stars"] == 4


def test_config_validation_messages():
    assert snd.validate({}) == []  # no endpoint: sync off
    errs = snd.validate({"endpoint": "ftp://x", "profile": "atlantis", "sign_alg": "hmac-md5", "batch_size": 0,
                         "timeout": "10", "typo": 1})
    text = "\n".join(errs)
    for frag in ("unknown key 'typo'", "not an http(s) URL", "profile 'atlantis' not found", "unknown signing algorithm",
                 "batch_size = 0 is outside", "timeout must be a number"):
        assert frag in text, frag
    assert snd.validate({"enabled": True}) and "endpoint is required" in snd.validate({"enabled": True})[0]
    assert "sign_key or sign_key_file is required" in "\n".join(snd.validate({"endpoint": "https://p.example/api"}))


@pytest.mark.expect_warnings
def test_https_with_a_private_ca(db, receiver, tmp_path, caplog):
    import subprocess
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=platform.test", "-days", "1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    seed_ratings(db, 30)
    rc = receiver(sign_alg="hmac-sm3", tls_cert=str(cert), tls_key=str(key))
    assert rc.url.startswith("https://127.0.0.1:")
    untrusted = Sender(db, sender_cfg(rc.url, sign_alg="hmac-sm3"))
    assert untrusted.run_once()["retry"] == 30  # certificate not trusted: nothing sent, nothing lost
    assert "CERTIFICATE_VERIFY_FAILED" in outbox(db)[0]["last_error"]
    db.execute("UPDATE outbox SET next_try_at = 0")
    s = Sender(db, sender_cfg(rc.url, sign_alg="hmac-sm3", ca_file=str(cert)))
    assert s.drain(max_seconds=10)["sent"] == 30
    assert_receiver_matches(db, rc)
    warn = [m.getMessage() for m in caplog.records if m.levelno >= logging.WARNING]
    assert len(warn) == 1 and "CERTIFICATE_VERIFY_FAILED" in warn[0]


def test_idempotency_key_header(db, receiver):
    seed_ratings(db, 3)
    rc = receiver()
    s = Sender(db, sender_cfg(rc.url, batch_size=1))
    s.run_once()
    assert rc.last_idempotency_key == "rating:P00000:1"  # one record: its own key
    s2 = Sender(db, sender_cfg(rc.url, batch_size=10))
    s2.run_once()
    import hashlib
    assert rc.last_idempotency_key == hashlib.sha256(b"rating:P00001:1\nrating:P00002:1").hexdigest()[:32]
    assert rc.records()[0]["body"]["idemKey"] == "rating:P00000:1"  # and in every record


@pytest.mark.expect_warnings
def test_batch_refused_as_a_whole_is_split_to_find_the_bad_record(db, receiver, caplog):
    seed_ratings(db, 40)
    rc = receiver(poison_projects=["P00017"])  # the platform answers 400 to any batch holding this record
    s = Sender(db, sender_cfg(rc.url, batch_size=20))
    s.drain(max_seconds=20)
    ob = {o["project_no"]: o for o in outbox(db)}
    assert states(db) == {"sent": 39, "quarantined": 1}
    assert "platform: HTTP 400" in ob["P00017"]["last_error"] and "poison_projects" in ob["P00017"]["last_error"]
    assert rc.state()["stored"] == 39 and s.failures == 0  # not an outage: no circuit, no backoff
    assert rc.state()["counters"]["requests"] == 2 + 20  # two batches, then the refused one record by record
    assert_receiver_matches(db, rc)
    warn = [m.getMessage() for m in caplog.records if m.levelno >= logging.WARNING]
    assert len(warn) == 1 and "1 record(s) quarantined" in warn[0] and "rating:P00017:1" in warn[0]


def test_receiver_refuses_a_replayed_signed_request(receiver):
    rc = receiver()
    from pingjia.bridge.upstream import signing
    body = b'{"records":[],"unrated":[]}'
    h = signing.sign_headers(signing.key_bytes(KEY), "POST", "/api/evaluations", body, "hmac-sha256")
    post = lambda: urllib.request.urlopen(urllib.request.Request(rc.url, data=body, headers=h, method="POST"))  # noqa: E731
    assert json.load(post()) == {"results": []}
    with pytest.raises(urllib.error.HTTPError) as e:
        post()  # the same bytes again: a captured request replayed
    assert e.value.code == 401 and "replayed" in json.load(e.value)["error"]
    stale = signing.sign_headers(signing.key_bytes(KEY), "POST", "/api/evaluations", body, "hmac-sha256", now=0)
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(urllib.request.Request(rc.url, data=body, headers=stale, method="POST"))
    assert e.value.code == 401 and "away from the receiver's clock" in json.load(e.value)["error"]
