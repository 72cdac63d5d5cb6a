"""差评 follow-up: working-day deadlines with holidays, states walked from the CLI, overdue, re-rating (assessNumber 2)."""
import datetime as dt
import json
import time
from zoneinfo import ZoneInfo

from click.testing import CliRunner

from pingjia.bridge import followup
from pingjia.tools.cli import main

from .conftest import T0, add_case, outbox

TZ = ZoneInfo("Asia/Shanghai")


def local(y, m, d, hh=0, mm=0):
    return dt.datetime(y, m, d, hh, mm, tzinfo=TZ).timestamp()


def test_deadline_in_working_days_with_holidays_and_makeup_days():
    plain = followup.Calendar()
    opened = local(2026, 9, 30, 10)  # Wednesday
    assert plain.deadline(opened, 5) == local(2026, 10, 8)  # Thu 1, Fri 2, Mon 5, Tue 6, Wed 7 -> end of 10-07
    national_day = [str(dt.date(2026, 10, 1) + dt.timedelta(days=i)) for i in range(8)]  # 10-01 .. 10-08
    cal = followup.Calendar(holidays=national_day, workdays=["2026-10-10"])  # Saturday 10-10 is a 调休 working day
    assert cal.deadline(opened, 5) == local(2026, 10, 15)  # Fri 10-09, Sat 10-10, Mon 12, Tue 13, Wed 14
    assert cal.deadline(local(2026, 9, 30, 23, 59), 1) == local(2026, 10, 10)  # late on 9-30 is still 9-30
    assert followup.Calendar(timezone="Asia/Shanghai").deadline(local(2026, 11, 20, 9), 15) == local(2026, 12, 12)
    assert followup.validate({"deadline_working_days": 0, "holidays": ["10-01"], "bogus": 1}) == [
        "[followup] unknown key 'bogus' (known: bad_max_stars, deadline_working_days, holidays, timezone, workdays)",
        "[followup] deadline_working_days must be an integer 1..365",
        "[followup] holidays: '10-01' is not a date YYYY-MM-DD"]


def write_cfg(tmp_path, dbpath):
    p = tmp_path / "bridge.toml"
    p.write_text(f"""
[bridge]
db = "{dbpath}"
hall = "h1"

[upstream.followup]
deadline_working_days = 5
holidays = ["2026-10-01", "2026-10-02", "2026-10-05", "2026-10-06", "2026-10-07", "2026-10-08"]
workdays = ["2026-10-10"]
""", encoding="utf-8")
    return str(p)


def run(*args):
    r = CliRunner().invoke(main, list(args))
    return r


def test_walk_through_states_from_cli(db, tmp_path):
    dbpath = db.execute("PRAGMA database_list").fetchone()[2]
    cfg = write_cfg(tmp_path, dbpath)
    now = time.time()
    add_case(db, "BAD1", "W01", finished_at=local(2026, 9, 30, 10), stars=1, reasons="501,502")  # long past its deadline
    add_case(db, "BAD2", "W02", finished_at=now - 60, stars=2, reasons="503")
    add_case(db, "GOOD", "W02", finished_at=now - 60, stars=5)
    r = run("followup", "list", "--config", cfg, "--json")
    assert r.exit_code == 0, r.output
    rows = {x["project_no"]: x for x in json.loads(r.output)}
    assert set(rows) == {"BAD1", "BAD2"}  # 5★ opens nothing
    assert rows["BAD1"]["state"] == "待核实" and rows["BAD1"]["overdue"] == 1 and rows["BAD2"]["overdue"] == 0
    # deadline from the [upstream.followup] calendar: 5 working days after 2026-09-30 -> end of 10-14
    assert rows["BAD1"]["deadline"] == local(2026, 10, 15)
    assert [x["project_no"] for x in json.loads(run("followup", "list", "--config", cfg, "--overdue", "--json").output)] == ["BAD1"]

    r = run("followup", "advance", "BAD2", "--config", cfg)
    assert r.exit_code != 0 and "--who" in r.output
    r = run("followup", "advance", "BAD2", "--config", cfg, "--who", "督查科 陈", "--to", "已整改")
    assert r.exit_code != 0 and "the next state is 已核实, not 已整改" in r.output
    r = run("followup", "rerate", "BAD2", "4", "--config", cfg, "--who", "陈")
    assert r.exit_code != 0 and "comes after rectification" in r.output
    steps = [("已核实", "督查科 陈", "查看录像，窗口等候40分钟属实"), ("已整改", "窗口负责人 刘", "增开一个窗口"),
             ("已反馈", "督查科 陈", "电话回访，群众认可")]
    for state, who, note in steps:
        r = run("followup", "advance", "BAD2", "--config", cfg, "--who", who, "--note", note, "--to", state)
        assert r.exit_code == 0, r.output
        assert r.output.strip() == "BAD2: %s" % state
    r = run("followup", "advance", "BAD2", "--config", cfg, "--who", "x")
    assert r.exit_code != 0 and "already 已反馈" in r.output

    r = run("followup", "rerate", "BAD2", "4", "--config", cfg, "--who", "督查科 陈")
    assert r.exit_code == 0, r.output
    r = run("followup", "rerate", "BAD2", "5", "--config", cfg, "--who", "督查科 陈")
    assert r.exit_code != 0 and "already has its follow-up rating" in r.output
    # the re-rating is assessNumber 2 of the same case, queued upstream
    cid = db.execute("SELECT case_id FROM cases WHERE project_no = 'BAD2'").fetchone()[0]
    assert db.execute("SELECT assess_number, stars FROM ratings WHERE case_id = ? ORDER BY assess_number", (cid,)).fetchall() == [(1, 2), (2, 4)]
    assert [o["idem_key"] for o in outbox(db) if o["case_id"] == cid] == ["rating:BAD2:1", "rating:BAD2:2"]

    f = json.loads(run("followup", "show", "BAD2", "--config", cfg, "--json").output)
    assert f["state"] == "已反馈" and f["closed_at"] is not None and f["overdue"] == 0 and f["rerated_stars"] == 4
    assert [(s["state"], s["who"], s["note"]) for s in f["steps"]] == [("待核实", "bridge", "2★ 差评, 原因 503")] + steps + [
        ("已反馈", "督查科 陈", "补充评价 4★ (assessNumber 2)")]
    text = run("followup", "show", "BAD2", "--config", cfg).output
    assert "补充评价 (assessNumber 2): 4★" in text and "电话回访，群众认可" in text
    table = run("followup", "list", "--config", cfg).output
    assert table.splitlines()[1].split()[0] == "BAD1" and "超期" in table.splitlines()[1]  # overdue first
    assert json.loads(run("followup", "list", "--config", cfg, "--open", "--json").output)[0]["project_no"] == "BAD1"
    assert db.execute("SELECT COUNT(*) FROM audit WHERE action = 'followup.advance'").fetchone()[0] == 3


def test_closed_after_the_deadline_is_flagged(db):
    add_case(db, "LATE", "W01", finished_at=T0, stars=1)
    followup.sync_missing(db, T0 + 10)
    f = followup.listing(db, T0 + 20)[0]
    for _ in range(3):
        followup.advance(db, "LATE", "x", now=f["deadline"] + 3600)
    (f,) = followup.listing(db, f["deadline"] + 7200)
    assert f["state"] == "已反馈" and f["overdue"] == 1


def test_misspress_replaced_within_grace_withdraws_untouched_followup(db):
    cid = add_case(db, "MIS", "W01", finished_at=T0, stars=1)
    assert followup.sync_case(db, cid, T0 + 6) == "opened"
    assert followup.sync_case(db, cid, T0 + 6) is None  # idempotent
    db.execute("UPDATE ratings SET stars = 5 WHERE case_id = ?", (cid,))  # the keypad's mis-press correction
    assert followup.sync_case(db, cid, T0 + 7) == "withdrawn"
    assert followup.listing(db, T0 + 8) == []


def test_hub_hook_opens_followup(db):
    class HubHooks:  # the hub's hook contract: callables(conn, cases, now) run inside the ratings' transaction
        on_rated_tx = []
    hub = HubHooks()
    fn = followup.wire(hub, {"deadline_working_days": 15})
    assert hub.on_rated_tx == [fn]
    good = add_case(db, "GOOD", "W01", finished_at=T0, stars=5)
    cid = add_case(db, "HOOK", "W01", finished_at=T0, stars=2)
    fn(db, [{"case_id": good, "project_no": "GOOD", "stars": 5, "replaced": False},
            {"case_id": cid, "project_no": "HOOK", "stars": 2, "replaced": False}], T0 + 6)
    (f,) = followup.listing(db, T0)
    assert f["project_no"] == "HOOK" and f["deadline"] == followup.Calendar().deadline(T0 + 5, 15)


def test_deadline_memo_matches_the_computation():
    """Calendar.deadline remembers per 15 minutes of opened_at: same answers as computing each one,
    across local midnights, in a zone with a 45-minute offset too, and with holidays."""
    import random

    rnd = random.Random(7)
    for tz in ("Asia/Shanghai", "Asia/Kathmandu"):
        cal = followup.Calendar(holidays=["2026-10-01", "2026-10-02"], workdays=["2026-09-27"], timezone=tz)
        fresh = followup.Calendar(holidays=["2026-10-01", "2026-10-02"], workdays=["2026-09-27"], timezone=tz)
        start = 1790000000  # 2026-09-21
        for _ in range(3000):
            t = start + rnd.randrange(0, 30 * 86400) + rnd.random()
            for n in (1, 7):
                assert cal.deadline(t, n) == fresh._deadline(t, n)
