"""The real hub and store with the upstream workers: a keypad's 差评 and an unrated case reach the
reference receiver, the 差评 opens a follow-up, the unrated case publishes an event (hooks wired)."""
import time

from pingjia.bridge import cases, devices, followup
from pingjia.bridge.hub import Hub
from pingjia.bridge.store import Store
from pingjia.bridge.upstream import status, workers
from pingjia.protocol import messages as m

from .conftest import Clock, sender_cfg


class Link:
    name = "test"

    def __init__(self):
        self.sent = []

    def send(self, device_id, raw):
        self.sent.append((device_id, raw))


def wait_for(pred, timeout=20):
    t0 = time.monotonic()
    while not pred():
        assert time.monotonic() - t0 < timeout, "timed out"
        time.sleep(0.02)


def test_hub_to_receiver_with_followup_and_unrated_event(tmp_path, receiver):
    store = Store(tmp_path / "bridge.db")
    store.migrate()
    conn = store.connect()
    clock = Clock(time.time())
    devices.add_window(conn, "W01", name="1号窗口", dept_code="ZWFW", dept_name="政务服务中心", now=clock.t)
    devices.add_window(conn, "W02", name="2号窗口", dept_code="ZWFW", now=clock.t)  # no keypad at W02
    key = devices.add(conn, "KP-0001", window_id="W01", now=clock.t)
    rules = cases.Rules(prompt_timeout_s=60, grace_s=1, reason_window_s=2)
    hub = Hub(store, rules=rules, hall="h1", clock=clock).start(timer=False)
    rc = receiver()
    published = []
    up = workers.start({"hall": "h1", "upstream": sender_cfg(rc.url, followup={"deadline_working_days": 5})}, hub, store,
                       mqtt_publish=lambda topic, payload: published.append((topic, payload)) or True, clock=clock)
    try:
        link = Link()
        hub.open_case({"project_no": "E1", "window_id": "W01", "task_code": "T9", "clerk_name": "王五"})
        hub.finish_case("E1")
        token = hub.get_case("E1")["token"]
        ev = m.encode(m.Message(m.RATING, "KP-0001", 1, 1, stars=1, token=token, nth=1, dt_ms=0, age_ms=40), key)
        reason = m.encode(m.Message(m.REASON, "KP-0001", 1, 2, ref_seq=1, codes=(502,), age_ms=20), key)
        assert hub.submit(ev, link) and hub.submit(reason, link)
        wait_for(lambda: followup.listing(conn, clock()) != [])  # hub.on_rated -> follow-up
        (f,) = followup.listing(conn, clock())
        assert f["project_no"] == "E1" and f["state"] == "待核实" and f["stars"] == 1
        hub.open_case({"project_no": "E2", "window_id": "W02", "contact_ref": "sms:ab12"})
        hub.finish_case("E2")  # no keypad: unrated at once -> hub.on_unrated
        wait_for(lambda: published)
        assert published[0][0] == "pj/h1/unrated" and b'"project_no": "E2"' in published[0][1]
        clock.advance(10)  # the rating's record is due after grace + reason window
        up.sender.wake()
        wait_for(lambda: rc.state()["stored"] == 2)
        recs = {r["idem_key"]: r for r in rc.records()}
        assert recs["rating:E1:1"]["body"]["satisfaction"] == "1" and recs["rating:E1:1"]["body"]["evalDetail"] == "502"
        assert recs["rating:E1:1"]["body"]["winName"] == "1号窗口" and recs["unrated:E2"]["kind"] == "unrated"
        wait_for(lambda: status(store)["sent"] == 2)
        assert status(store)["pending"] == 0
    finally:
        up.stop()
        hub.stop()
        conn.close()
