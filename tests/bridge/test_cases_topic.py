"""The case system's MQTT topic (pj/<hall>/cases) handler and the flash tool's device registration."""
import json
import logging
import time

import pytest

from pingjia.bridge import devices
from pingjia.bridge.service import CaseTopic
from pingjia.protocol import messages as m
from tests.bridge.conftest import q


def _until(pred, timeout=10):
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, "condition not met"
        time.sleep(0.01)


@pytest.mark.expect_warnings
def test_cases_topic_open_finish_cancel(hub, link, kp, caplog):
    hub.submit(kp.hello(), link)
    topic = CaseTopic(hub)
    topic(json.dumps({"action": "open", "project_no": "MQ1", "window_id": "W01", "clerk_name": "李雷"}).encode())
    topic(json.dumps({"action": "finish", "project_no": "MQ1"}).encode())
    _until(lambda: link.decoded(kp, m.PROMPT))
    topic(json.dumps({"action": "cancel", "project_no": "MQ1"}).encode())
    _until(lambda: link.decoded(kp, m.CANCEL))
    assert hub.get_case("MQ1")["state"] == "cancelled"
    topic(b"{not json")
    topic(json.dumps({"action": "reopen"}).encode())
    _until(lambda: len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 2)
    assert all("case message refused" in r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)
    assert q(hub.store, "SELECT actor FROM audit WHERE action='case.open'") == [{"actor": "case-mqtt"}]


def test_register_flashed_adds_then_reflashes(store):
    conn = store.connect()
    devices.register_flashed(conn, "KP-0100", bytes(32), window_id="W02", transport="mqtt", fw_version="1.0.0", board="esp32")
    devices.register_flashed(conn, "KP-0100", bytes(range(32)), window_id="W02", fw_version="1.1.0", board="esp32")
    assert devices.keys(conn)["KP-0100"] == bytes(range(32))
    assert [(h["device_id"], h["window_id"]) for h in devices.history(conn, "KP-0100")] == [("KP-0100", "W02")]
    conn.close()
    d = q(store, "SELECT fw_version, window_id FROM devices WHERE device_id='KP-0100'")[0]
    assert d == {"fw_version": "1.1.0", "window_id": "W02"}
