"""Reports computed in SQL vs numbers worked out by hand (windows with no ratings, a day with no cases)."""
import json

import pytest
from click.testing import CliRunner

from pingjia.bridge import followup, reports
from pingjia.tools.cli import main

from .conftest import T0, add_case, add_window

DAY = 86400
SINCE = reports.parse_day("2025-11-21")
UNTIL = reports.parse_day("2025-11-24")


@pytest.fixture
def hall(db):
    """2025-11-21 (Fri): W01 A5 B4 C1 D-, W02 E3 F2 G(cancelled), W04 H-; 11-22: nothing; 11-23: W01 I2, W02 J5, W04 K-.
    W03 has no cases at all. 差评 C closed in time, F closed late, I open."""
    for w in ("W01", "W02", "W03", "W04"):
        add_window(db, w)
    d1, d3 = T0, T0 + 2 * DAY
    spec = [("A", "W01", d1, 5, "C01", "T1"), ("B", "W01", d1 + 60, 4, "C01", "T2"), ("C", "W01", d1 + 120, 1, "C01", "T2"),
            ("D", "W01", d1 + 180, None, "C01", "T2"), ("E", "W02", d1, 3, "C02", "T1"), ("F", "W02", d1 + 60, 2, "C02", "T2"),
            ("H", "W04", d1, None, "C02", "T1"), ("I", "W01", d3, 2, "C01", "T2"), ("J", "W02", d3, 5, "C02", "T2"),
            ("K", "W04", d3 - 9.5 * 3600, None, "C02", "T2")]  # K: 00:30 local on 11-23 (still 11-22 in UTC)
    for pno, w, at, stars, clerk, task in spec:
        add_case(db, pno, w, finished_at=at, stars=stars, reasons="1" if stars and stars <= 2 else "", clerk_id=clerk,
                 clerk_name={"C01": "王一", "C02": "赵二"}[clerk], task_code=task, task_name="事项" + task,
                 dept_code="D1" if w == "W01" else "D2")
    add_case(db, "G", "W02", finished_at=d1 + 90, state="cancelled", outbox=False)
    assert followup.sync_missing(db, d1 + 300) == 3
    cid = lambda p: db.execute("SELECT case_id FROM cases WHERE project_no = ?", (p,)).fetchone()[0]  # noqa: E731
    db.execute("UPDATE followups SET closed_at = deadline - 10, state = '已反馈' WHERE case_id = ?", (cid("C"),))
    db.execute("UPDATE followups SET closed_at = deadline + 10, state = '已反馈' WHERE case_id = ?", (cid("F"),))
    # a follow-up rating (assessNumber 2) does not change the case's counted first rating
    db.execute("INSERT INTO ratings (case_id, assess_number, stars, device_id, seq, pressed_at, updated_at) VALUES (?,2,5,'x',0,?,?)",
               (cid("C"), d1 + 7 * DAY, d1 + 7 * DAY))
    return db


def pick(rows, **kw):
    out = [r for r in rows if all(r[k] == v for k, v in kw.items())]
    assert len(out) == 1, (kw, out)
    return out[0]


def test_per_window_per_day(hall):
    rows = reports.report(hall, "window", "day", SINCE, UNTIL)
    assert len(rows) == 3 * 4  # every day x every window, even empty ones
    exp = {  # (day, window): finished, rated, 评价率, 满意率, 差评, 整改率
        ("2025-11-21", "W01"): (4, 3, 0.75, 0.6667, 1, 1.0),
        ("2025-11-21", "W02"): (2, 2, 1.0, 0.5, 1, 0.0),
        ("2025-11-21", "W03"): (0, 0, None, None, 0, None),
        ("2025-11-21", "W04"): (1, 0, 0.0, None, 0, None),
        ("2025-11-22", "W01"): (0, 0, None, None, 0, None),
        ("2025-11-22", "W02"): (0, 0, None, None, 0, None),
        ("2025-11-22", "W03"): (0, 0, None, None, 0, None),
        ("2025-11-22", "W04"): (0, 0, None, None, 0, None),
        ("2025-11-23", "W01"): (1, 1, 1.0, 0.0, 1, 0.0),
        ("2025-11-23", "W02"): (1, 1, 1.0, 1.0, 0, None),
        ("2025-11-23", "W03"): (0, 0, None, None, 0, None),
        ("2025-11-23", "W04"): (1, 0, 0.0, None, 0, None),
    }
    for (day, w), (fin, rated, rr, sr, bad, rect) in exp.items():
        r = pick(rows, period=day, key=w)
        assert (r["finished"], r["rated"], r["rating_rate"], r["satisfaction_rate"], r["bad"], r["rectify_rate"]) == \
            (fin, rated, rr, sr, bad, rect), (day, w, r)
    r = pick(rows, period="2025-11-21", key="W01")
    assert (r["stars_5"], r["stars_4"], r["stars_3"], r["stars_2"], r["stars_1"], r["unrated"]) == (1, 1, 0, 0, 1, 1)


def test_hall_totals_week_month(hall):
    (tot,) = reports.report(hall, "hall", "all", SINCE, UNTIL)
    assert (tot["finished"], tot["rated"], tot["rating_rate"], tot["satisfied"], tot["satisfaction_rate"], tot["bad"],
            tot["bad_closed_in_time"], tot["rectify_rate"]) == (10, 7, 0.7, 4, 0.5714, 3, 1, 0.3333)
    week = reports.report(hall, "hall", "week", SINCE, UNTIL)
    assert [(r["period"], r["finished"], r["rated"]) for r in week] == [("2025-11-17", 10, 7)]  # Fri and Sun: one week from Monday
    month = reports.report(hall, "window", "month", SINCE, UNTIL)
    assert [(r["key"], r["finished"], r["rated"], r["satisfaction_rate"]) for r in month] == [
        ("W01", 5, 4, 0.5), ("W02", 3, 3, 0.6667), ("W03", 0, 0, None), ("W04", 2, 0, None)]
    days = reports.report(hall, "hall", "day", SINCE, UNTIL)
    assert [(r["period"], r["finished"]) for r in days] == [("2025-11-21", 7), ("2025-11-22", 0), ("2025-11-23", 3)]


def test_clerk_dept_matter(hall):
    clerk = reports.report(hall, "clerk", "all", SINCE, UNTIL)
    c1, c2 = pick(clerk, key="C01"), pick(clerk, key="C02")
    assert c1["name"] == "王一" and (c1["finished"], c1["rated"], c1["rating_rate"], c1["satisfaction_rate"], c1["bad"], c1["rectify_rate"]) == (5, 4, 0.8, 0.5, 2, 0.5)
    assert (c2["finished"], c2["rated"], c2["rating_rate"], c2["satisfaction_rate"], c2["bad"], c2["rectify_rate"]) == (5, 3, 0.6, 0.6667, 1, 0.0)
    dept = reports.report(hall, "dept", "all", SINCE, UNTIL)
    assert [(r["key"], r["finished"], r["rated"]) for r in dept] == [("D1", 5, 4), ("D2", 5, 3)]
    matter = reports.report(hall, "matter", "all", SINCE, UNTIL)
    t1, t2 = pick(matter, key="T1"), pick(matter, key="T2")
    assert (t1["finished"], t1["rated"], t1["rating_rate"], t1["satisfaction_rate"], t1["bad"], t1["rectify_rate"]) == (3, 2, 0.6667, 1.0, 0, None)
    assert (t2["finished"], t2["rated"], t2["rating_rate"], t2["satisfaction_rate"], t2["bad"], t2["rectify_rate"]) == (7, 5, 0.7143, 0.4, 3, 0.3333)


def test_report_cli_table_csv_json(hall):
    dbpath = hall.execute("PRAGMA database_list").fetchone()[2]
    base = ["report", "--db", dbpath, "--since", "2025-11-21", "--until", "2025-11-24"]
    r = CliRunner().invoke(main, base + ["--by", "hall", "--period", "all"])
    assert r.exit_code == 0, r.output
    head, line = r.output.splitlines()
    assert "评价率" in head and "满意率" in head and "整改率" in head
    assert line.split()[:8] == ["all", "全厅", "10", "7", "70.0%", "57.1%", "3", "33.3%"]
    r = CliRunner().invoke(main, base + ["--format", "csv"])
    lines = r.output.splitlines()
    assert lines[0].startswith("period,key,name,finished,rated,unrated,rating_rate") and len(lines) == 13
    assert "2025-11-22,W03,窗口W03,0,0,0,,0,,0,0,," in r.output
    r = CliRunner().invoke(main, base + ["--by", "clerk", "--period", "all", "--format", "json"])
    assert {x["key"]: x["rating_rate"] for x in json.loads(r.output)} == {"C01": 0.8, "C02": 0.6}


def test_json_endpoint_handler(hall):
    st, body = reports.handle(hall, {"by": ["window"], "period": ["all"], "since": ["2025-11-21"], "until": ["2025-11-24"]})
    assert st == 200 and [r["rated"] for r in body["rows"]] == [4, 3, 0, 0]
    st, body = reports.handle(hall, {"by": "teller"})
    assert st == 400 and "by must be one of" in body["error"]


def test_http_route_for_the_bridge_server(hall):
    dbpath = hall.execute("PRAGMA database_list").fetchone()[2]
    from pingjia.bridge.store import Store
    store = Store(dbpath)
    st, ctype, body = reports.route(store, "GET", "/api/report?by=hall&period=all&since=2025-11-21&until=2025-11-24")
    assert st == 200 and ctype.startswith("application/json") and json.loads(body)["rows"][0]["rated"] == 7
    st, _, body = reports.route(store, "GET", "/api/followups?overdue=1", now=T0 + 60 * DAY)
    assert st == 200 and {f["project_no"] for f in json.loads(body)["followups"]} == {"F", "I"}  # closed late, still open
    st, _, body = reports.route(dbpath, "GET", "/api/upstream")
    assert st == 200 and json.loads(body)["pending"] == 10  # 7 ratings + 3 unrated cases in the outbox, none sent
    assert reports.route(store, "GET", "/api/hall") is None
    assert reports.route(store, "POST", "/api/report")[0] == 405


def test_a_days_report_reads_that_days_cases_only(hall):
    """The report of a day (or a week, a month) finds its cases through the index on finished_at, so
    asking for yesterday does not read the hall's whole history."""
    from tests.sqlplan import full_reads, statements_of

    statements = statements_of(hall, lambda: reports.report(hall, by="window", period="day", since=SINCE, until=SINCE + DAY))
    assert full_reads(hall, statements, small=("windows", "days", "base", "keys", "p", "k", "a")) == []  # CTEs, windows
    assert any("cases_finished" in line for sql in statements for line in
               (r[3] for r in hall.execute("EXPLAIN QUERY PLAN " + sql)))
