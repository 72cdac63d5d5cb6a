"""Mapping profiles: one TOML file per province turns the bridge's internal record
into the platform's fields (and tells the reference receiver what to accept).

Internal meaning everywhere in the bridge: stars 1..5, 5 = 非常满意; times UNIX
seconds UTC; reason codes are the keypad's configured codes (firmware config
`reasons`, default 501-505). Only this
module converts, at the edge. A new province is a new TOML file in
bridge/profiles/ (or any path): see docs/UPSTREAM.md for every key.

`load(name_or_path)` -> Profile; `Profile.map_rating(rec, ctx)` /
`Profile.map_unrated(rec, ctx)` -> dict, or MappingError (the sender
quarantines the record with the error text: it is never sent half-mapped).
`Profile.check(record, kind)` -> list of problems (the receiver's validation).
"""
import datetime as _dt
import re
import time as _time
import tomllib
from pathlib import Path
from zoneinfo import ZoneInfo

PROFILES_DIR = Path(__file__).resolve().parent.parent / "profiles"

# Every name a profile's [record] / [unrated.record] may use as a source.
SOURCES = {
    "project_no", "task_code", "task_name", "dept_code", "dept_name", "clerk_id", "clerk_name",
    "window_id", "window_name", "user_prop", "area_code", "data_source", "hall", "contact_ref",
    "satisfaction", "stars", "channel", "eval_detail", "writing", "assess_time", "assess_number",
    "idem_key", "finished_time", "device_id", "seq",
}
DIRECT = {"project_no", "task_code", "task_name", "clerk_id", "clerk_name", "window_id", "contact_ref", "idem_key",
          "device_id", "seq"}  # read straight from the internal record
RATING_ONLY = {"satisfaction", "stars", "eval_detail", "writing", "assess_time", "assess_number", "device_id", "seq"}
LEVEL_NAMES = {5: "非常满意", 4: "满意", 3: "基本满意", 2: "不满意", 1: "非常不满意"}


class MappingError(ValueError):
    """A record this profile cannot (or must not) send; the text says why."""


class ProfileError(ValueError):
    """A profile file that is wrong; the text names the key."""


_JAVA_TOKENS = [("yyyy", "%Y"), ("MM", "%m"), ("dd", "%d"), ("HH", "%H"), ("mm", "%M"), ("ss", "%S")]


def java_to_strftime(fmt):
    """'yyyy-MM-dd HH:mm:ss' (the platforms' notation) -> '%Y-%m-%d %H:%M:%S'."""
    out = fmt
    for java, c in _JAVA_TOKENS:
        out = out.replace(java, c)
    if re.search(r"[A-Za-z]", re.sub(r"%[YmdHMS]", "", out)):
        raise ProfileError("time_format %r: only yyyy MM dd HH mm ss and punctuation are supported" % fmt)
    return out


_GROUPS = {"yyyy": "Y", "MM": "mo", "dd": "d", "HH": "H", "mm": "mi", "ss": "S"}


def _time_regex(fmt):
    pat = re.escape(fmt)
    for java, _ in _JAVA_TOKENS:
        pat = pat.replace(re.escape(java), r"(?P<%s>\d{%d})" % (_GROUPS[java], len(java)))
    return re.compile("^" + pat + "$")


class Profile:
    def __init__(self, data, source="<dict>"):
        self.source = str(source)
        self.data = data
        errors = self._parse(data)
        if errors:
            raise ProfileError("profile %s: %s" % (self.source, "; ".join(errors)))

    # -- parsing -----------------------------------------------------------------
    def _parse(self, d):
        errors = []
        self.name = d.get("name") or Path(self.source).stem
        self.description = d.get("description", "")
        try:
            self.tz = ZoneInfo(d.get("timezone", "Asia/Shanghai"))
        except Exception:
            errors.append("timezone %r is unknown" % d.get("timezone"))
            self.tz = ZoneInfo("Asia/Shanghai")
        self.time_format = d.get("time_format", "yyyy-MM-dd HH:mm:ss")
        try:
            self.strftime = java_to_strftime(self.time_format)
        except ProfileError as e:
            errors.append(str(e))
            self.strftime = "%Y-%m-%d %H:%M:%S"
        self.time_re = _time_regex(self.time_format)
        self._offsets = {}
        if "channel" not in d:
            errors.append("channel (the pf code of a desk keypad) is required")
        self.channel = d.get("channel")
        self.bad_max_stars = int(d.get("bad_max_stars", 2))
        self.bad_requires_reason = bool(d.get("bad_requires_reason", False))
        self.unknown_reason = d.get("unknown_reason", "reject")
        if self.unknown_reason not in ("reject", "pass"):
            errors.append("unknown_reason must be 'reject' or 'pass'")
        self.reason_separator = d.get("reason_separator", ",")
        self.data_source = d.get("data_source", "")
        sat = d.get("satisfaction") or {}
        self.satisfaction = {}
        for k, v in sat.items():
            try:
                self.satisfaction[int(k)] = v
            except ValueError:
                errors.append("satisfaction key %r is not a star count" % k)
        if sorted(self.satisfaction) != [1, 2, 3, 4, 5]:
            errors.append("[satisfaction] must map each of the stars 1..5 to the platform's code")
        codes = list(self.satisfaction.values())
        if len(set(map(str, codes))) != len(codes):
            errors.append("[satisfaction] codes must be distinct")
        self.satisfaction_back = {str(v): k for k, v in self.satisfaction.items()}
        self.direction = "5=非常满意" if str(self.satisfaction.get(5)) == "5" else (
            "1=非常满意" if str(self.satisfaction.get(5)) == "1" else "custom")
        self.reasons = {}
        for k, v in (d.get("reasons") or {}).items():
            try:
                self.reasons[int(k)] = str(v)
            except ValueError:
                errors.append("reasons key %r is not a keypad reason code" % k)
        self.reasons_back = {v: k for k, v in self.reasons.items()}
        self.record = dict(d.get("record") or {})
        self.types = dict(d.get("types") or {})
        unrated = d.get("unrated") or {}
        self.unrated_send = bool(unrated.get("send", False))
        self.unrated_record = dict(unrated.get("record") or {})
        req = d.get("required") or {}
        self.required_rating = list(req.get("rating", []))
        self.required_unrated = list(req.get("unrated", []))
        if not self.record:
            errors.append("[record] (output field = source) is empty")
        for table, fields in (("record", self.record), ("unrated.record", self.unrated_record)):
            for out, src in fields.items():
                if not isinstance(src, str):
                    errors.append("[%s] %s: value must be a source name or '=literal'" % (table, out))
                elif not src.startswith("=") and src not in SOURCES:
                    errors.append("[%s] %s: unknown source %r (known: %s)" % (table, out, src, ", ".join(sorted(SOURCES))))
                elif table == "unrated.record" and src in RATING_ONLY:
                    errors.append("[unrated.record] %s: %r would make an unrated case look rated" % (out, src))
        for out, t in self.types.items():
            if t not in ("int", "str"):
                errors.append("[types] %s: %r is not int or str" % (out, t))
        self.idem_field = self._field_for(self.record, "idem_key")
        if self.record and not self.idem_field:
            errors.append("[record] needs a field whose source is idem_key")
        if self.unrated_send:
            self.unrated_idem_field = self._field_for(self.unrated_record, "idem_key")
            if not self.unrated_idem_field:
                errors.append("[unrated.record] needs a field whose source is idem_key")
        else:
            self.unrated_idem_field = None
        self._uses_finished_rating = "finished_time" in self.record.values()
        self._uses_finished_unrated = "finished_time" in self.unrated_record.values()
        self.sat_field = self._field_for(self.record, "satisfaction")
        self.reason_field = self._field_for(self.record, "eval_detail")
        self.writing_field = self._field_for(self.record, "writing")
        self.time_field = self._field_for(self.record, "assess_time")
        self.number_field = self._field_for(self.record, "assess_number")
        self.channel_field = self._field_for(self.record, "channel")
        self.project_field = self._field_for(self.record, "project_no")
        if self.bad_requires_reason and not (self.reason_field or self.writing_field):
            errors.append("bad_requires_reason needs an eval_detail or writing field in [record]")
        return errors

    @staticmethod
    def _field_for(table, source):
        for out, src in table.items():
            if src == source:
                return out
        return None

    # -- internal -> platform -------------------------------------------------------
    def fmt_time(self, ts):
        # the zone's UTC offset, looked up once per hour of time (hot path: one per record)
        h = int(ts // 3600)
        off = self._offsets.get(h)
        if off is None:
            off = self._offsets[h] = _dt.datetime.fromtimestamp(ts, self.tz).utcoffset().total_seconds()
        return _time.strftime(self.strftime, _time.gmtime(ts + off))

    def parse_time(self, text):
        m = self.time_re.match(text) if isinstance(text, str) else None
        if m is None:
            raise ValueError("not %s" % self.time_format)
        g = m.groupdict()
        # datetime() checks the ranges (month 13, Feb 30, hour 24 raise ValueError)
        return _dt.datetime(int(g["Y"]), int(g.get("mo") or 1), int(g.get("d") or 1), int(g.get("H") or 0),
                            int(g.get("mi") or 0), int(g.get("S") or 0), tzinfo=self.tz).timestamp()

    def _cast(self, out, value):
        t = self.types.get(out)
        if t == "int":
            return int(value)
        if t == "str":
            return "" if value is None else str(value)
        return value

    def _plan(self, table):
        """[(out, source or None, literal, cast or None)]: the table compiled once (hot path)."""
        key = id(table)
        plan = self._plans.get(key) if hasattr(self, "_plans") else None
        if plan is None:
            plan = []
            for out, src in table.items():
                t = self.types.get(out)
                cast = int if t == "int" else (str if t == "str" else None)
                if src.startswith("="):
                    plan.append((out, None, cast(src[1:]) if cast else src[1:], None, False))
                else:
                    plan.append((out, src, None, cast, src in DIRECT))
            self._plans = getattr(self, "_plans", {})
            self._plans[key] = plan
        return plan

    def _emit(self, table, rec, values):
        out_rec = {}
        for out, src, lit, cast, direct in self._plan(table):
            if src is None:
                out_rec[out] = lit
                continue
            v = rec.get(src) if direct else values.get(src)
            if v is None:
                v = ""
            out_rec[out] = cast(v) if cast is not None else v
        return out_rec

    def _common(self, rec, ctx, table):
        uses_finished = self._uses_finished_rating if table is self.record else self._uses_finished_unrated
        return {
            "finished_time": self.fmt_time(rec["finished_at"]) if uses_finished and rec.get("finished_at") else "",
            "dept_code": rec.get("dept_code") or rec.get("window_dept_code") or "",
            "dept_name": rec.get("dept_name") or rec.get("window_dept_name") or "",
            "window_name": rec.get("window_name") or "",
            "user_prop": rec.get("user_prop") or 1,
            "area_code": ctx.get("area_code", ""),
            "data_source": ctx.get("data_source") or self.data_source,
            "hall": ctx.get("hall", ""),
            "channel": self.channel,
        }

    def map_rating(self, rec, ctx=None):
        """Internal rating record (outbox joined with case, window, rating) -> platform dict."""
        ctx = ctx or {}
        stars = rec.get("stars")
        if stars not in self.satisfaction:
            raise MappingError("no rating stored for case %s assessNumber %s" % (rec.get("case_id"), rec.get("assess_number")))
        internal = [c for c in str(rec.get("reasons") or "").replace(" ", "").split(",") if c]
        codes = []
        for c in internal:
            try:
                n = int(c)
            except ValueError:
                n = None
            if n in self.reasons:
                codes.append(self.reasons[n])
            elif self.unknown_reason == "pass":
                codes.append(c)
            else:
                raise MappingError("reason code %s has no evalDetail code in profile %s" % (c, self.name))
        writing = rec.get("writing") or ""
        if stars <= self.bad_max_stars and self.bad_requires_reason and not codes and not writing:
            raise MappingError("差评 (%d★) without a reason: profile %s requires evalDetail or writingEvaluation" % (stars, self.name))
        values = self._common(rec, ctx, self.record)
        values.update({
            "satisfaction": self.satisfaction[stars],
            "stars": stars,
            "eval_detail": self.reason_separator.join(codes),
            "writing": writing,
            "assess_time": self.fmt_time(rec["pressed_at"]),
            "assess_number": int(rec.get("assess_number") or 1),
        })
        try:
            return self._emit(self.record, rec, values)
        except ValueError as e:  # a [types] int on a field that is not a number
            raise MappingError("profile %s: %s" % (self.name, e)) from None

    def map_unrated(self, rec, ctx=None):
        """Internal unrated-case record -> platform dict (never carries a satisfaction)."""
        if not self.unrated_send:
            raise MappingError("profile %s does not send unrated records" % self.name)
        try:
            return self._emit(self.unrated_record, rec, self._common(rec, ctx or {}, self.unrated_record))
        except ValueError as e:
            raise MappingError("profile %s: %s" % (self.name, e)) from None

    # -- platform -> check (the reference receiver) -----------------------------------
    def _check_plan(self, kind):
        plan = self._plans.get(("check", kind)) if hasattr(self, "_plans") else None
        if plan is None:
            table = self.record if kind == "rating" else self.unrated_record
            required = self.required_rating if kind == "rating" else self.required_unrated
            lits = [(out, src[1:]) for out, src in table.items() if src.startswith("=")]
            chans = [out for out, src in table.items() if src == "channel"]
            fins = [out for out, src in table.items() if src == "finished_time"]
            plan = (list(table), required, lits, chans, fins)
            self._plans = getattr(self, "_plans", {})
            self._plans[("check", kind)] = plan
        return plan

    def check(self, r, kind="rating"):
        """Problems with one received record (empty list = valid)."""
        if not isinstance(r, dict):
            return ["record is not an object"]
        if kind == "unrated" and not self.unrated_send:
            return ["this profile takes no unrated records"]
        problems = []
        fields, required, lits, chans, fins = self._check_plan(kind)
        for out in fields:
            if out not in r:
                problems.append("%s missing" % out)
        for out in required:
            v = r.get(out)
            if out in r and (v is None or v == "" or (isinstance(v, str) and not v.strip())):
                problems.append("%s empty" % out)
        for out, lit in lits:
            if out in r and str(r[out]) != lit:
                problems.append("%s must be %r" % (out, lit))
        for out in chans:
            if out in r and str(r[out]) != str(self.channel):
                problems.append("%s %r is not this platform's desk-keypad channel %r" % (out, r[out], self.channel))
        for out in fins:
            if r.get(out):
                try:
                    self.parse_time(r[out])
                except ValueError:
                    problems.append("%s %r is not %s" % (out, r[out], self.time_format))
        if kind == "unrated":
            return problems
        stars = None
        if self.sat_field and self.sat_field in r:
            stars = self.satisfaction_back.get(str(r[self.sat_field]))
            if stars is None:
                problems.append("%s %r is not a level code" % (self.sat_field, r[self.sat_field]))
        if self.time_field and self.time_field in r:
            try:
                self.parse_time(r[self.time_field])
            except ValueError:
                problems.append("%s %r is not %s" % (self.time_field, r[self.time_field], self.time_format))
        if self.number_field and self.number_field in r and str(r[self.number_field]) not in ("1", "2"):
            problems.append("%s must be 1 or 2" % self.number_field)
        codes = []
        if self.reason_field and r.get(self.reason_field):
            codes = [c for c in str(r[self.reason_field]).split(self.reason_separator) if c]
            bad = [c for c in codes if c not in self.reasons_back]
            if bad and self.unknown_reason == "reject":
                problems.append("%s code(s) %s unknown" % (self.reason_field, ",".join(bad)))
        writing = r.get(self.writing_field) if self.writing_field else ""
        if stars is not None and stars <= self.bad_max_stars and self.bad_requires_reason and not codes and not writing:
            problems.append("差评必须勾选详情或填写文字评价 (%s/%s empty)" % (self.reason_field, self.writing_field))
        return problems

    def stars_of(self, r):
        """The internal stars of a received record (None when not a rating)."""
        if not self.sat_field:
            return None
        return self.satisfaction_back.get(str(r.get(self.sat_field)))


def names():
    return sorted(p.stem for p in PROFILES_DIR.glob("*.toml"))


def load(name_or_path):
    """A shipped profile by name ('zhejiang') or any TOML file by path."""
    p = Path(str(name_or_path))
    if not p.suffix and not p.exists():
        p = PROFILES_DIR / (str(name_or_path) + ".toml")
    if not p.exists():
        raise ProfileError("profile %r not found (shipped: %s)" % (str(name_or_path), ", ".join(names())))
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ProfileError("profile %s: %s" % (p, e)) from None
    return Profile(data, p)
