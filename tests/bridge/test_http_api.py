"""The case API over a real HTTP server on a free port."""
import json
import urllib.error
import urllib.request

import pytest

from pingjia.bridge.http_api import HttpServer
from pingjia.protocol import messages as m


def call(base, method, path, body=None, token=None, raw=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(base + path, data=data, method=method, headers={"Content-Type": "application/json"})
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture
def api(hub):
    srv = HttpServer(hub, "127.0.0.1", 0, token="s3cret").start()
    yield srv.url
    srv.stop()


def test_case_round_trip_over_http(api, hub, link, kp, clock):
    hub.submit(kp.hello(), link)
    st, c = call(api, "POST", "/api/cases", {"project_no": "BJ/2026 001", "window_id": "W01", "task_code": "11100",
                                             "task_name": "营业执照", "clerk_name": "王芳", "user_prop": 2}, "s3cret")
    assert st == 201 and c["state"] == "open" and c["dept_name"] == "政务服务中心"
    pn = urllib.request.quote("BJ/2026 001", safe="")
    st, c = call(api, "POST", "/api/cases/%s/finish" % pn, {}, "s3cret")
    assert st == 200 and c["state"] == "prompted"
    prompt = link.decoded(kp, m.PROMPT)[0]
    assert prompt.token == c["token"]
    clock.t += 3
    hub.submit(kp.rating(2, c["token"], age_ms=1000), link)
    link.wait(lambda: link.acked(kp))
    st, c = call(api, "GET", "/api/cases/%s" % pn, token="s3cret")
    assert st == 200 and c["state"] == "rated" and c["rating"]["stars"] == 2
    st, lst = call(api, "GET", "/api/cases?state=rated", token="s3cret")
    assert [x["project_no"] for x in lst["cases"]] == ["BJ/2026 001"]


def test_errors_are_clear_json(api, hub):
    assert call(api, "POST", "/api/cases", {"project_no": "X", "window_id": "W01"})[0] == 401
    assert call(api, "POST", "/api/cases", {"project_no": "X", "window_id": "W01"}, "wrong")[0] == 401
    st, e = call(api, "POST", "/api/cases", {"window_id": "W01"}, "s3cret")
    assert (st, e["field"]) == (400, "project_no") and "required" in e["error"]
    st, e = call(api, "POST", "/api/cases", {"project_no": "X", "window_id": "W99"}, "s3cret")
    assert st == 404 and "unknown window W99" in e["error"]
    st, e = call(api, "POST", "/api/cases", {"project_no": "X", "window_id": "W01", "colour": 1}, "s3cret")
    assert (st, e["field"]) == (400, "colour")
    st, e = call(api, "POST", "/api/cases", token="s3cret", raw=b"{not json")
    assert st == 400 and "JSON" in e["error"]
    st, e = call(api, "POST", "/api/cases", {"project_no": "X", "window_id": "W01", "user_prop": 3}, "s3cret")
    assert (st, e["field"]) == (400, "user_prop")
    assert call(api, "POST", "/api/cases/NOPE/finish", {}, "s3cret")[0] == 404
    assert call(api, "GET", "/api/cases/NOPE", token="s3cret")[0] == 404
    call(api, "POST", "/api/cases", {"project_no": "X", "window_id": "W01"}, "s3cret")
    st, e = call(api, "POST", "/api/cases", {"project_no": "X", "window_id": "W02"}, "s3cret")
    assert st == 409
    call(api, "POST", "/api/cases/X/cancel", {}, "s3cret")
    st, e = call(api, "POST", "/api/cases/X/finish", {}, "s3cret")
    assert st == 409 and "cancelled" in e["error"]
    assert call(api, "GET", "/api/nothing")[0] == 404


def test_status_lists_windows_without_working_keypad_first(api, hub, link, store, clock):
    from tests.bridge.conftest import add_keypad

    k1 = add_keypad(store, "KP-0001", "W01")
    add_keypad(store, "KP-0002", "W02")  # registered, never seen
    hub.reload_keys()
    hub.submit(k1.hello(fw="1.3.0"), link)
    hub.submit(k1.status(10, depth=2), link)
    hub.call(lambda conn, now: (None, []))
    st, s = call(api, "GET", "/api/status")  # open: no token needed
    assert st == 200
    assert s["hall"] == "test" and s["summary"]["keypads"] == 2 and s["summary"]["online"] == 1
    order = [(r["window_id"], r["state"]) for r in s["keypads"]]
    assert order[-1] == ("W01", "ok") and set(order[:2]) == {("W03", "missing"), ("W02", "never")}
    assert set(s["windows_without_keypad"]) == {"W02", "W03"}
    ok = s["keypads"][-1]
    assert ok["fw_version"] == "1.3.0" and ok["journal_depth"] == 2 and ok["online"] is True and ok["rejects"] == 0
    assert "queue" in s["bridge"] and "commit_error" in s["bridge"]
    st, d = call(api, "GET", "/api/devices", token="s3cret")
    assert [x["device_id"] for x in d["devices"]] == ["KP-0001", "KP-0002"]
    assert all("key_hex" not in x for x in d["devices"])  # keys never leave the bridge


def test_status_page_is_mounted(api):
    with urllib.request.urlopen(api + "/", timeout=10) as r:
        assert r.status == 200 and b"<html" in r.read().lower()
    st, hall = call(api, "GET", "/api/hall")
    assert st == 200 and "windows" in json.dumps(hall)


def test_identify_and_query_a_keypad(api, hub, link, kp):
    hub.submit(kp.hello(), link)
    hub.call(lambda conn, now: (None, []))
    st, r = call(api, "POST", "/api/devices/KP-0001/identify", {"seconds": 15}, "s3cret")
    assert (st, r["sent"]) == (200, True)
    assert call(api, "POST", "/api/devices/KP-0001/query", {}, "s3cret")[1]["sent"] is True
    got = [(x.type, getattr(x, "seconds", None)) for x in link.decoded(kp) if x.type in (m.IDENTIFY, m.QUERY)]
    assert got == [(m.IDENTIFY, 15), (m.QUERY, None)]
    assert call(api, "POST", "/api/devices/KP-0001/identify", {"seconds": 0}, "s3cret")[0] == 400
    assert call(api, "POST", "/api/devices/KP-9999/identify", {}, "s3cret")[0] == 404
    assert call(api, "POST", "/api/devices/KP-0001/identify", {})[0] == 401



def test_reports_followups_and_upstream_are_served_by_the_bridge(api, hub, link, kp):
    """GET /api/report, /api/followups and /api/upstream come from bridge/reports.py through the bridge's server."""
    hub.submit(kp.hello(), link)
    status, cases = call(api, "POST", "/api/cases", {"project_no": "P-R1", "window_id": "W01"}, token="s3cret")
    assert status == 201
    for path, key in (("/api/report?by=window&period=day", "rows"), ("/api/followups", "followups"), ("/api/upstream", "pending")):
        status, body = call(api, "GET", path)
        assert status == 200 and key in body, (path, body)
    status, body = call(api, "POST", "/api/report", {})
    assert status == 405
