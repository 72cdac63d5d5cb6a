"""Case attach rules through the real hub, a real SQLite file and real signed messages."""
import pytest

from pingjia.protocol import messages as m
from tests.bridge.conftest import T0, q


def _finish(hub, link, kp, pn="BJ001", window="W01", clerk="王芳"):
    hub.submit(kp.hello(), link)
    hub.open_case({"project_no": pn, "window_id": window, "clerk_name": clerk, "task_name": "营业执照"})
    c = hub.finish_case(pn)
    return c


def _press(hub, link, kp, raw):
    """Submit one event and wait for its ACK (sent only after the commit)."""
    seq = m.decode(raw, kp.key).seq
    n = link.acked(kp).count(seq)
    assert hub.submit(raw, link)
    link.wait(lambda: link.acked(kp).count(seq) > n)


def test_open_finish_prompt_rating_ack_after_commit(hub, link, kp, clock, store):
    c = _finish(hub, link, kp)
    assert c["state"] == "prompted" and len(c["token"]) == 8
    prompts = link.decoded(kp, m.PROMPT)
    assert len(prompts) == 1
    p = prompts[0]
    assert (p.token, p.timeout_s, p.reason_required) == (c["token"], 60, 0)
    assert p.text == "1号窗口 王芳" and p.boot == kp.boot
    # after the HELLO the bridge sent TIME and its CONFIG; every command takes the next persisted counter
    sent = link.decoded(kp)
    assert [x.type for x in sent] == [m.TIME, m.CONFIG, m.PROMPT] and [x.seq for x in sent] == [1, 2, 3]
    assert sent[0].unix_s == int(T0) and sent[1].items == (("grace_ms", "3000"), ("reason_ms", "8000"))
    assert q(store, "SELECT cmd_seq FROM devices WHERE device_id='KP-0001'")[0]["cmd_seq"] == 3

    clock.t += 4
    raw = kp.rating(5, c["token"], age_ms=1500)
    # the ACK is sent by the writer after COMMIT: when it arrives, another connection sees the row
    _press(hub, link, kp, raw)
    acks = link.decoded(kp, m.ACK)
    assert [a.seqs for a in acks] == [(1,)]
    got = hub.get_case("BJ001")
    assert got["state"] == "rated" and got["rating"]["stars"] == 5 and got["rating"]["seq"] == 1
    assert got["rating"]["pressed_at"] == pytest.approx(T0 + 4 - 1.5)
    ob = q(store, "SELECT kind, idem_key, state, next_try_at FROM outbox")
    assert ob == [{"kind": "rating", "idem_key": "rating:BJ001:1", "state": "pending",
                   "next_try_at": pytest.approx(T0 + 2.5 + 3 + 8 + 2)}]  # pressed + grace + reason window + slack


def test_ack_only_after_commit_visible_to_other_connection(hub, store, kp, clock):
    """Each ACK the link sees names an event another connection can already read."""
    seen = []

    class CheckingLink:
        name = "check"

        def send(self, device_id, raw):
            msg = m.decode(raw, kp.key)
            if msg.type == m.ACK:
                for s in msg.seqs:
                    seen.append(bool(q(store, "SELECT 1 FROM events WHERE device_id=? AND seq=?", (device_id, s))))

    lk = CheckingLink()
    for i in range(50):
        hub.submit(kp.unsolicited(3), lk)
    hub.stop()
    assert len(seen) == 50 and all(seen)


def test_mispress_within_grace_replaces(hub, link, kp, clock, store):
    c = _finish(hub, link, kp)
    clock.t += 5
    rated = []
    hub.on_rated.append(rated.append)
    _press(hub, link, kp, kp.rating(1, c["token"], nth=1, dt_ms=0, age_ms=2000))
    _press(hub, link, kp, kp.rating(4, c["token"], nth=2, dt_ms=1500, age_ms=500))
    got = hub.get_case("BJ001")
    assert got["rating"]["stars"] == 4 and got["rating"]["seq"] == 2
    assert [(p["seq"], p["disposition"]) for p in got["presses"]] == [(1, "replaced"), (2, "counted")]
    assert [(r["stars"], r["replaced"]) for r in rated] == [(1, False), (4, True)]  # on_rated fires again for the correction
    assert len(q(store, "SELECT * FROM outbox")) == 1


def test_presses_after_grace_are_audit(hub, link, kp, clock):
    c = _finish(hub, link, kp)
    clock.t += 10
    _press(hub, link, kp, kp.rating(5, c["token"], nth=1, dt_ms=0, age_ms=6000))
    _press(hub, link, kp, kp.rating(1, c["token"], nth=2, dt_ms=5000, age_ms=1000))
    _press(hub, link, kp, kp.rating(5, c["token"], nth=3, dt_ms=5500, age_ms=500))
    got = hub.get_case("BJ001")
    assert got["rating"]["stars"] == 5
    assert [p["disposition"] for p in got["presses"]] == ["counted", "audit", "audit"]
    assert sorted(link.acked(kp)) == [1, 2, 3]  # audit presses are stored, so ACKed


def test_reordered_mispress_same_result(hub, link, kp, clock):
    c = _finish(hub, link, kp)
    clock.t += 5
    first, second = kp.rating(1, c["token"], nth=1, dt_ms=0, age_ms=2000), kp.rating(4, c["token"], nth=2, dt_ms=1500, age_ms=500)
    _press(hub, link, kp, second)
    _press(hub, link, kp, first)
    got = hub.get_case("BJ001")
    assert got["rating"]["stars"] == 4
    assert sorted((p["seq"], p["disposition"]) for p in got["presses"]) == [(1, "replaced"), (2, "counted")]


def test_reason_after_low_rating_and_before_it(hub, link, kp, clock):
    c = _finish(hub, link, kp)
    clock.t += 5
    _press(hub, link, kp, kp.rating(2, c["token"], age_ms=3000))
    _press(hub, link, kp, kp.reason(1, [501, 502], age_ms=1000))
    got = hub.get_case("BJ001")
    assert got["rating"]["reasons"] == "501,502"
    assert [p["disposition"] for p in got["presses"]] == ["counted", "counted"]

    # reordered: the reason reaches the bridge before its rating
    hub.open_case({"project_no": "BJ002", "window_id": "W01"})
    c2 = hub.finish_case("BJ002")
    clock.t += 5
    _press(hub, link, kp, kp.reason(4, [503], seq=5, age_ms=1000))
    _press(hub, link, kp, kp.rating(1, c2["token"], seq=4, age_ms=3000))
    got = hub.get_case("BJ002")
    assert got["rating"]["stars"] == 1 and got["rating"]["reasons"] == "503"


def test_unsolicited_stored_never_counted(hub, link, kp, store):
    hub.submit(kp.hello(), link)
    _press(hub, link, kp, kp.unsolicited(5))
    assert q(store, "SELECT kind, disposition, case_id FROM events") == [{"kind": "unsolicited", "disposition": "unsolicited", "case_id": None}]
    assert q(store, "SELECT count(*) AS n FROM ratings")[0]["n"] == 0
    assert q(store, "SELECT count(*) AS n FROM outbox")[0]["n"] == 0
    assert link.acked(kp) == [1]


def test_unknown_token_is_orphan(hub, link, kp, store):
    _press(hub, link, kp, kp.rating(5, "NOSUCHTK"))
    assert q(store, "SELECT disposition FROM events")[0]["disposition"] == "orphan"
    assert q(store, "SELECT action FROM audit WHERE action='rating.orphan'")


def test_expiry_unrated_outbox_and_hook(hub, link, kp, clock, store):
    unrated = []
    hub.on_unrated.append(unrated.append)
    c = _finish(hub, link, kp)
    hub.tick(now=T0 + 60)  # prompt still within its slack
    assert hub.get_case("BJ001")["state"] == "prompted"
    hub.tick(now=T0 + 70)
    got = hub.get_case("BJ001")
    assert got["state"] == "unrated"
    assert [u["project_no"] for u in unrated] == ["BJ001"]
    assert q(store, "SELECT kind, idem_key, state FROM outbox") == [{"kind": "unrated", "idem_key": "unrated:BJ001", "state": "pending"}]
    # a press after the prompt window that arrives now stays audit
    clock.t = T0 + 200
    _press(hub, link, kp, kp.rating(5, c["token"], age_ms=1000))
    assert hub.get_case("BJ001")["state"] == "unrated"


def test_late_rating_after_outage_lands_on_its_case(hub, link, kp, clock, store):
    c = _finish(hub, link, kp)
    hub.tick(now=T0 + 70)
    assert hub.get_case("BJ001")["state"] == "unrated"
    # pressed 20 s after the prompt, delivered an hour later when the keypad's link came back
    clock.t = T0 + 3620
    _press(hub, link, kp, kp.rating(3, c["token"], age_ms=3600 * 1000))
    got = hub.get_case("BJ001")
    assert got["state"] == "rated" and got["rating"]["stars"] == 3
    assert got["rating"]["pressed_at"] == pytest.approx(T0 + 20)
    assert {r["kind"]: r["state"] for r in q(store, "SELECT kind, state FROM outbox")} == {"unrated": "superseded", "rating": "pending"}


def test_cancel_sends_cancel(hub, link, kp):
    c = _finish(hub, link, kp)
    got = hub.cancel_case("BJ001")
    assert got["state"] == "cancelled"
    cancels = link.decoded(kp, m.CANCEL)
    prompt = link.decoded(kp, m.PROMPT)[0]
    assert [x.token for x in cancels] == [c["token"]] and cancels[0].seq == prompt.seq + 1


def test_finish_without_keypad_is_unrated(hub, link, store):
    unrated = []
    hub.on_unrated.append(unrated.append)
    hub.open_case({"project_no": "BJ009", "window_id": "W03"})
    got = hub.finish_case("BJ009")
    assert got["state"] == "unrated" and unrated and link.sent == []


def test_pressed_at_never_before_floor(hub, link, kp, clock, store):
    clock.t = 100.0  # a hall PC whose clock was reset
    _press(hub, link, kp, kp.unsolicited(4, age_ms=50000))
    assert q(store, "SELECT pressed_at FROM events")[0]["pressed_at"] >= 1704067200
    assert q(store, "SELECT 1 FROM audit WHERE action='event.time-clamped'")


def test_rebooted_keypad_gets_its_prompt_again(hub, link, kp, clock):
    c = _finish(hub, link, kp)
    clock.t += 10
    kp.boot = 2
    hub.submit(kp.hello(), link)
    link.wait(lambda: link.decoded(kp, m.PROMPT)[-1].boot == 2)  # TIME and CONFIG go out first, then the PROMPT
    p = link.decoded(kp, m.PROMPT)[-1]
    assert p.token == c["token"] and p.boot == 2 and p.timeout_s == 50


def test_prompt_for_a_silent_mqtt_keypad_goes_to_its_session(hub, link, store):
    from pingjia.bridge import devices

    conn = store.connect()
    key = devices.add(conn, "KP-0020", window_id="W02", transport="mqtt")
    conn.close()
    hub.reload_keys()
    hub.add_link("mqtt", link)  # the service registers its MQTT link: the broker keeps it for the keypad
    hub.open_case({"project_no": "MQ9", "window_id": "W02"})
    c = hub.finish_case("MQ9")
    sent = [m.decode(raw, key) for d, raw in link.sent if d == "KP-0020"]
    assert [(x.type, x.token) for x in sent] == [(m.PROMPT, c["token"])]


def test_reason_for_a_good_rating_is_audit_only(hub, link, kp, clock):
    c = _finish(hub, link, kp)
    clock.t += 5
    _press(hub, link, kp, kp.reason(1, [501], seq=2, age_ms=500))  # arrives before its rating
    _press(hub, link, kp, kp.rating(4, c["token"], seq=1, age_ms=3000))
    _press(hub, link, kp, kp.reason(1, [502], seq=3, age_ms=100))
    got = hub.get_case("BJ001")
    assert got["rating"]["stars"] == 4 and got["rating"]["reasons"] == ""
    assert sorted((p["seq"], p["disposition"]) for p in got["presses"]) == [(1, "counted"), (2, "audit"), (3, "audit")]


def test_timer_expires_prompts_on_its_own(store, clock, rules, link):
    from pingjia.bridge.hub import Hub
    from tests.bridge.conftest import add_keypad

    kp = add_keypad(store, "KP-0001", "W01")
    hub = Hub(store, rules=rules, clock=clock).start()  # with its 1 s timer
    try:
        unrated = []
        hub.on_unrated.append(unrated.append)
        hub.submit(kp.hello(), link)
        hub.open_case({"project_no": "T1", "window_id": "W01"})
        hub.finish_case("T1")
        clock.t += 120  # the bridge clock moves past the prompt and its slack
        import time

        end = time.monotonic() + 15
        while not unrated and time.monotonic() < end:
            time.sleep(0.05)
        assert hub.get_case("T1")["state"] == "unrated"
    finally:
        hub.stop()


def test_finish_says_whether_the_keypad_got_the_prompt(hub, link, kp):
    hub.open_case({"project_no": "N1", "window_id": "W01"})
    assert hub.finish_case("N1")["keypad_notified"] is False  # never heard from: no link to it yet
    hub.submit(kp.hello(), link)
    hub.open_case({"project_no": "N2", "window_id": "W01"})
    assert hub.finish_case("N2")["keypad_notified"] is True
