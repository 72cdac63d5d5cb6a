"""End to end over serial with the real keypad firmware on the virtual board (issue 4):
open case -> finish -> PROMPT on the keypad -> key press -> rating attached -> ACK -> journal trimmed.

The board is flashed with `pingjia.tools.flash` (which registers it in the bridge's SQLite file, bound to W01),
the bridge runs as `pingjia run` on the board's port (serial only, HTTP on a free port), cases go through the
HTTP case API. Faults: the bridge killed while a prompted keypad is pressed (twice: a mis-press corrected within
the grace), a case finished right after a bridge restart (before the keypad spoke again), and the keypad unplugged
or its power cut with a journaled press not yet delivered. Each time the press lands on its case exactly once and
the keypad's journal (read from the board's flash) holds no unacknowledged event afterwards.
Warnings of the bridge process are asserted from its log (logfmt on stderr), not caplog.
"""
import time

import pytest

from tests.e2e.conftest import BLUE, DEVICE, GREEN, STARS, WINDOW, journal_pending, until


def _open_and_finish(bridge, project_no, **fields):
    bridge.post("/api/cases", {"project_no": project_no, "window_id": WINDOW, "task_name": "营业执照变更登记",
                               "clerk_name": "张三", **fields})
    case = bridge.post("/api/cases/%s/finish" % project_no)
    assert case["state"] == "prompted" and case["token"], case
    return case


def _online(bridge):
    """The bridge has heard the keypad on its port (a STATUS or an event), so it can send it a PROMPT."""
    return until(lambda: (k := bridge.keypad())["online"] and k, 20, "the keypad online in /api/status")


def test_case_prompt_press_rating_ack_trim(rig):
    bridge, vb = rig.bridge, rig.vb
    bridge.start()
    kp = _online(bridge)
    assert kp["window_id"] == WINDOW and kp["fw_version"] == "1.0.0" and kp["board"] == "virtual"
    assert vb.state()["leds"] & (STARS | GREEN) == 0  # idle: dark but for the link LED

    case = _open_and_finish(bridge, "E2E-0001")
    rig.wait_prompted()
    rig.press(4)

    got = until(lambda: (c := bridge.case("E2E-0001"))["state"] == "rated" and c, 20, "the rating on the case")
    (seq, kind, stars, nth, token), = bridge.events()  # stored exactly once
    assert (kind, stars, nth, token) == ("rating", 4, 1, case["token"])
    assert (got["rating"]["stars"], got["rating"]["device_id"], got["rating"]["seq"]) == (4, DEVICE, seq)
    assert [(p["seq"], p["disposition"]) for p in got["presses"]] == [(seq, "counted")]

    recs = rig.trimmed()  # the ACK came after the commit and the keypad recorded it on flash
    t_trim = time.time()
    assert any(k == 2 for k, _ in recs)
    assert rig.status_after(t_trim)["journal_depth"] == 0
    assert vb.state()["leds"] & BLUE  # the link LED: the keypad knows the bridge is there
    bridge.stop()
    assert bridge.problems() == []


def test_bridge_killed_press_while_down_lands_once_after_restart(rig):
    """The PROMPT reached the keypad, then the bridge died (kill -9). The citizen presses 4, corrects to 5 within
    the grace; both presses wait in the keypad's journal and arrive after the restart with the case's token, so
    they land on that case although the window has finished its next case meanwhile."""
    bridge = rig.bridge
    bridge.start()
    _online(bridge)
    case = _open_and_finish(bridge, "E2E-0002")
    rig.wait_prompted()
    bridge.kill()

    rig.press(4)
    rig.press(5)  # a mis-press corrected at once: dt_ms well inside grace_s (3 s)
    pending = until(lambda: len(p := journal_pending(rig.flash_dir)) == 2 and p, 10, "two journaled presses")
    assert [(e["type"], e["stars"], e["nth"], e["token"]) for e in pending.values()] == [
        ("RATING", 4, 1, case["token"]), ("RATING", 5, 2, case["token"])]

    bridge.start()  # same database; the keypad retransmits on its own backoff
    nxt = _open_and_finish(bridge, "E2E-0002b")  # the window goes on with the next citizen
    rig.trimmed(60)
    t_trim = time.time()
    got = bridge.case("E2E-0002")
    assert got["state"] == "rated" and (got["rating"]["stars"], got["rating"]["seq"]) == (5, max(pending)), got
    assert [(p["stars"], p["disposition"]) for p in got["presses"]] == [(4, "replaced"), (5, "counted")], got
    assert [(k, s, n, t) for _seq, k, s, n, t in bridge.events()] == [
        ("rating", 4, 1, case["token"]), ("rating", 5, 2, case["token"])]  # each stored once
    other = bridge.case("E2E-0002b")
    assert other["state"] == "prompted" and other["token"] == nxt["token"] and not other["ratings"], other
    assert rig.status_after(t_trim)["journal_depth"] == 0
    bridge.stop()
    assert bridge.problems() == []


def test_case_finished_before_a_restarted_bridge_heard_the_keypad(rig):
    """After a bridge restart a serial keypad is silent until its next heartbeat, so the bridge has no link to it
    yet. A case finished in that gap must still reach the keypad once it speaks (the citizen is asked)."""
    bridge = rig.bridge
    bridge.start()
    _online(bridge)  # just heard its heartbeat: the next one is seconds away
    bridge.stop()
    bridge.start()
    t_ms = rig.vb.state()["uptime_ms"]
    case = _open_and_finish(bridge, "E2E-0004")
    assert "type=prompt reason=no link yet" in bridge.log(), "the keypad spoke before the case was finished"
    rig.wait_prompted(since_ms=t_ms)
    rig.press(3)
    got = until(lambda: (c := bridge.case("E2E-0004"))["state"] == "rated" and c, 20, "the rating on the case")
    assert got["rating"]["stars"] == 3
    assert [(k, s, t) for _seq, k, s, _n, t in bridge.events()] == [("rating", 3, case["token"])]
    rig.trimmed()
    bridge.stop()
    assert bridge.problems() == []


@pytest.mark.parametrize("cut", ["unplug", "power_cut"])
def test_cut_with_an_undelivered_event_delivered_once_after(rig, cut):
    """A press is on the keypad's flash but not yet ACKed (the bridge stalls: SIGSTOP) when
    - unplug: the USB cable is pulled (the pty closes under the bridge's open port). Plugged in again (new pty,
      same by-id name) the keypad boots, and the journaled press reaches the bridge, whose serial reader has
      reopened the port, exactly once;
    - power_cut: the keypad loses power while its frame waits in the port (the pty stays). The bridge resumes,
      stores the press and ACKs into the void; the rebooted keypad sends it again: a duplicate, ACKed, stored once."""
    bridge = rig.bridge
    bridge.start()
    _online(bridge)
    case = _open_and_finish(bridge, "E2E-0003")
    rig.wait_prompted()

    bridge.pause()
    rig.press(2)
    pending = until(lambda: journal_pending(rig.flash_dir), 10, "the press journaled")
    assert [(e["stars"], e["token"]) for e in pending.values()] == [(2, case["token"])]
    if cut == "unplug":
        rig.unplug()
        bridge.resume()
        until(lambda: "port lost" in bridge.log(), 20, "the bridge's reader noticing the unplug")
        until(lambda: not bridge.keypad()["online"], 10, "the keypad offline in /api/status")
        rig.power_on()  # plugged in again: boots, replays its journal
    else:
        rig.vb.power_cut()
        bridge.resume()
        until(bridge.events, 10, "the press stored from the frame the keypad wrote before the cut")
        until(lambda: bridge.get("/api/status")["bridge"]["acks"] >= 1, 10, "its ACK written to the dead port")
        assert journal_pending(rig.flash_dir) == pending  # its ACK went nowhere
        rig.vb.start()  # power back: boots, replays its journal

    rig.trimmed(60)
    t_trim = time.time()
    got = bridge.case("E2E-0003")
    assert got["state"] == "rated" and got["rating"]["stars"] == 2, got
    assert [(k, s, t) for _seq, k, s, _n, t in bridge.events()] == [("rating", 2, case["token"])]
    # a rebooted keypad whose HELLO the bridge hears while the case is still open is prompted for it again; the
    # rating pressed before the reboot then closes that prompt (CANCEL): nobody is asked to rate a rated case
    until(lambda: rig.vb.state()["leds"] & STARS == 0, 10, "the keypad no longer asking for the rated case")
    assert rig.status_after(t_trim)["journal_depth"] == 0
    if cut == "power_cut":
        assert bridge.get("/api/status")["bridge"]["duplicates"] >= 1
    bridge.stop()
    problems = bridge.problems()
    if cut == "unplug":
        assert problems and all("port lost" in p for p in problems), problems
    else:
        assert problems == []
