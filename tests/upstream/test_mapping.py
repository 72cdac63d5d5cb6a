"""Each profile's output, field by field, for the same ratings; both level directions; profile checks."""
import pytest

from pingjia.bridge.upstream import mapping
from pingjia.bridge.upstream.mapping import MappingError, ProfileError

from .conftest import T0

CTX = {"area_code": "330102", "data_source": "", "hall": "h1"}


def rec(stars, reasons="", assess_number=1, kind="rating"):
    return {
        "id": 1, "kind": kind, "case_id": 7, "assess_number": assess_number,
        "idem_key": "rating:BJ001:%d" % assess_number if kind == "rating" else "unrated:BJ001",
        "project_no": "BJ001", "task_code": "330000-001", "task_name": "不动产登记", "dept_code": "ZRZY",
        "dept_name": "自然资源局", "clerk_id": "C07", "clerk_name": "李四", "user_prop": 2, "contact_ref": "sms:9f3a",
        "window_id": "W03", "finished_at": T0, "window_name": "不动产窗口", "window_dept_code": "", "window_dept_name": "",
        "stars": stars if kind == "rating" else None, "reasons": reasons,
        "pressed_at": T0 + 5.7 if kind == "rating" else None, "device_id": "KP-0003", "seq": 42,
    }


# T0 = 2025-11-21 10:00:00 Asia/Shanghai; pressed 5.7 s later
ZHEJIANG_5 = {
    "projectNo": "BJ001", "taskCode": "330000-001", "taskName": "不动产登记", "deptCode": "ZRZY", "proDepart": "自然资源局",
    "proManager": "李四", "areaCode": "330102", "winNo": "W03", "winName": "不动产窗口", "pf": "4", "satisfaction": "5",
    "evalDetail": "", "writingEvaluation": "", "assessTime": "2025-11-21 10:00:05", "assessNumber": "1", "userProp": "2",
    "dataSource": "pingjia", "idemKey": "rating:BJ001:1",
}
SHANDONG_5 = {
    "projectNo": "BJ001", "taskCode": "330000-001", "taskName": "不动产登记", "deptCode": "ZRZY", "proManager": "C07",
    "areaCode": "330102", "winNo": "W03", "winName": "不动产窗口", "pf": 5, "satisfaction": 5, "evalDetail": "",
    "writingEvaluation": "", "assessTime": "2025-11-21 10:00:05", "assessNumber": 1, "userProp": 2, "dataSource": "2",
    "idemKey": "rating:BJ001:1",
}
GBT_5 = {
    "projectNo": "BJ001", "taskCode": "330000-001", "taskName": "不动产登记", "deptCode": "ZRZY", "proManager": "李四",
    "areaCode": "330102", "winNo": "W03", "winName": "不动产窗口", "pf": "5", "satisfaction": "1", "evalDetail": "",
    "writingEvaluation": "", "assessTime": "20251121100005", "assessNumber": 1, "userProp": 2, "dataSource": "pingjia",
    "idemKey": "rating:BJ001:1",
}


def test_zhejiang_field_by_field():
    p = mapping.load("zhejiang")
    out = p.map_rating(rec(5), CTX)
    assert out == ZHEJIANG_5
    assert list(out) == list(ZHEJIANG_5)  # field order as the profile lists them


def test_shandong_field_by_field():
    out = mapping.load("shandong").map_rating(rec(5), CTX)
    assert out == SHANDONG_5
    assert type(out["satisfaction"]) is int and type(out["pf"]) is int  # this platform takes numbers


def test_gbt39046_field_by_field():
    assert mapping.load("gbt39046").map_rating(rec(5), CTX) == GBT_5


@pytest.mark.parametrize("stars,provincial,national", [(5, "5", "1"), (4, "4", "2"), (3, "3", "3"), (2, "2", "4"), (1, "1", "5")])
def test_level_direction_both_ways(stars, provincial, national):
    zj, gb = mapping.load("zhejiang"), mapping.load("gbt39046")
    r = rec(stars, reasons="502" if stars <= 2 else "")
    a, b = zj.map_rating(r, CTX), gb.map_rating(r, CTX)
    assert a["satisfaction"] == provincial and b["satisfaction"] == national
    # and back: the receiver decodes each to the same internal stars
    assert zj.stars_of(a) == stars and gb.stars_of(b) == stars
    assert zj.check(a) == [] and gb.check(b) == []


def test_bad_rating_reason_codes_and_required_reason():
    zj, sd, gb = (mapping.load(n) for n in ("zhejiang", "shandong", "gbt39046"))
    r = rec(1, reasons="501,503")
    assert zj.map_rating(r, CTX)["evalDetail"] == "501,503"
    assert sd.map_rating(r, CTX)["evalDetail"] == "1001,1003"
    assert gb.map_rating(r, CTX)["evalDetail"] == "501,503"
    bare = rec(2)
    assert zj.map_rating(bare, CTX)["evalDetail"] == ""  # optional in this province
    for p in (sd, gb):
        with pytest.raises(MappingError, match="差评 .*without a reason"):
            p.map_rating(bare, CTX)
    with pytest.raises(MappingError, match="reason code 509 has no evalDetail code"):
        zj.map_rating(rec(2, reasons="509"), CTX)


def test_follow_up_rating_is_assess_number_2():
    out = mapping.load("zhejiang").map_rating(rec(4, assess_number=2), CTX)
    assert out["assessNumber"] == "2" and out["idemKey"] == "rating:BJ001:2"


def test_unrated_record_is_never_a_rating():
    zj = mapping.load("zhejiang")
    out = zj.map_unrated(rec(None, kind="unrated"), CTX)
    assert out == {"projectNo": "BJ001", "taskCode": "330000-001", "deptCode": "ZRZY", "areaCode": "330102", "winNo": "W03",
                   "pf": "4", "evaluateState": "0", "finishTime": "2025-11-21 10:00:00", "dataSource": "pingjia",
                   "idemKey": "unrated:BJ001"}
    assert "satisfaction" not in out and zj.check(out, "unrated") == []
    assert zj.check(out, "rating")  # not acceptable as a rating
    with pytest.raises(MappingError, match="does not send unrated"):
        mapping.load("shandong").map_unrated(rec(None, kind="unrated"), CTX)


def test_receiver_side_checks_catch_each_trap():
    zj = mapping.load("zhejiang")
    good = zj.map_rating(rec(1, reasons="501"), CTX)
    assert zj.check(good) == []
    assert any("pf" in p for p in zj.check(dict(good, pf="5")))
    assert any("assessTime" in p for p in zj.check(dict(good, assessTime="2025/11/21 10:00")))
    assert any("satisfaction" in p for p in zj.check(dict(good, satisfaction="0")))
    assert any("evalDetail" in p for p in zj.check(dict(good, evalDetail="999")))
    assert any("areaCode empty" in p for p in zj.check(dict(good, areaCode="")))
    sd = mapping.load("shandong")
    bad = sd.map_rating(rec(2, reasons="501"), CTX)
    assert any("差评必须" in p for p in sd.check(dict(bad, evalDetail="")))


def test_a_new_province_is_a_toml_file(tmp_path):
    src = (mapping.PROFILES_DIR / "zhejiang.toml").read_text(encoding="utf-8")
    f = tmp_path / "anhui.toml"
    f.write_text(src.replace('name = "zhejiang"', 'name = "anhui"').replace('channel = "4"', 'channel = "5"')
                 .replace('assessTime = "assess_time"', 'evaluateTime = "assess_time"'), encoding="utf-8")
    p = mapping.load(str(f))
    out = p.map_rating(rec(3), CTX)
    assert p.name == "anhui" and out["pf"] == "5" and out["evaluateTime"] == "2025-11-21 10:00:05" and "assessTime" not in out


def test_profile_errors_name_the_key(tmp_path):
    src = (mapping.PROFILES_DIR / "zhejiang.toml").read_text(encoding="utf-8")
    bad = tmp_path / "bad.toml"
    bad.write_text(src.replace('winNo = "window_id"\nwinName', 'winNo = "window_no"\nwinName', 1)
                   .replace('evaluateState = "=0"', 'evaluateState = "satisfaction"'), encoding="utf-8")
    with pytest.raises(ProfileError) as e:
        mapping.load(str(bad))
    assert "unknown source 'window_no'" in str(e.value) and "would make an unrated case look rated" in str(e.value)
    with pytest.raises(ProfileError, match="not found"):
        mapping.load("atlantis")


from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(["zhejiang", "shandong", "gbt39046"]), stars=st.integers(1, 5),
       reasons=st.lists(st.integers(501, 505), max_size=4, unique=True), number=st.sampled_from([1, 2]),
       t=st.floats(1704067200, 4102444800, allow_nan=False))
def test_property_every_mapped_rating_passes_the_receiver_and_decodes_back(name, stars, reasons, number, t):
    p = mapping.load(name)
    r = rec(stars, reasons=",".join(map(str, reasons)), assess_number=number)
    r["pressed_at"] = t
    if stars <= 2 and not reasons and p.bad_requires_reason:
        with pytest.raises(MappingError):
            p.map_rating(r, CTX)
        return
    out = p.map_rating(r, CTX)
    assert p.check(out) == []
    assert p.stars_of(out) == stars
    assert p.parse_time(out[p.time_field]) == float(int(t))  # whole seconds, Asia/Shanghai both ways
    assert out[p.number_field] in (number, str(number))
