"""Commands for upstream sync, 差评 follow-up and reports:

  pingjia sync run|status|profiles|preview   the outbox to the provincial platform
  pingjia quarantine list                     records the platform (or the mapping) refused
  pingjia re-push                             back to pending: by record, case or time range
  pingjia followup list|show|advance|rerate|sync
  pingjia report                              评价率 / 满意率 / 差评 / 整改率 (table, CSV, JSON)
  pingjia receiver                            the reference upstream receiver (tests, demos)

Every command takes --config (the bridge TOML, env PINGJIA_CONFIG: db, hall and
[upstream] come from it) and/or --db (env PINGJIA_DB). Times are local
(Asia/Shanghai): 'YYYY-MM-DD', 'YYYY-MM-DD HH:MM[:SS]', or UNIX seconds.
"""
import datetime as _dt
import functools
import json
import sqlite3
import sys
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import click

TZ = ZoneInfo("Asia/Shanghai")


class Ctx:
    def __init__(self, config, db):
        self.cfg = None
        if config:
            from . import config as cfgmod
            try:
                self.cfg = cfgmod.load(config)
            except cfgmod.ConfigError as e:
                click.echo(str(e), err=True)
                sys.exit(2)
        self.db = db or (self.cfg.bridge["db"] if self.cfg else "var/pingjia.db")
        self.hall = self.cfg.bridge["hall"] if self.cfg else ""
        self.upstream = dict(self.cfg.upstream) if self.cfg else {}
        self.upstream.setdefault("hall", self.hall)

    def connect(self):
        if not Path(self.db).exists():
            click.echo("no database at %s (give --db or --config)" % self.db, err=True)
            sys.exit(2)
        try:
            from .store import Store
            Store(self.db).migrate()  # our tables (e.g. unrated_notices) exist before we query
        except ImportError:
            pass
        conn = sqlite3.connect(self.db, isolation_level=None, timeout=30)
        conn.execute("PRAGMA busy_timeout=30000")
        return conn


def common(fn):
    @click.option("--config", "config", envvar="PINGJIA_CONFIG", type=click.Path(dir_okay=False),
                  help="Bridge config TOML (db, hall, [upstream]); env PINGJIA_CONFIG.")
    @click.option("--db", "db", envvar="PINGJIA_DB", type=click.Path(dir_okay=False),
                  help="Bridge SQLite file (default: from --config, else var/pingjia.db); env PINGJIA_DB.")
    @functools.wraps(fn)
    def wrapper(config, db, **kw):
        return fn(Ctx(config, db), **kw)
    return wrapper


def parse_time(text):
    """Local time text or UNIX seconds -> UNIX seconds."""
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            return _dt.datetime.strptime(text, fmt).replace(tzinfo=TZ).timestamp()
        except ValueError:
            continue
    raise click.BadParameter("%r: use YYYY-MM-DD, 'YYYY-MM-DD HH:MM[:SS]' or UNIX seconds" % text)


def fmt_time(ts):
    if ts is None:
        return "-"
    return _dt.datetime.fromtimestamp(ts, TZ).strftime("%Y-%m-%d %H:%M:%S")


def _table(rows, cols):
    def width(s):
        return sum(2 if ord(ch) > 0x2E80 else 1 for ch in s)
    cells = [[str(r.get(c, "")) if r.get(c) is not None else "-" for c in cols] for r in rows]
    ws = [max([width(c)] + [width(x[i]) for x in cells]) for i, c in enumerate(cols)]
    line = lambda xs: "  ".join(x + " " * (ws[i] - width(x)) for i, x in enumerate(xs)).rstrip()  # noqa: E731
    return "\n".join([line(cols)] + [line(x) for x in cells])


def _need_sender(ctx):
    from .upstream import sender
    if not sender.enabled(ctx.upstream):
        click.echo("upstream sync is not configured: [upstream] endpoint is missing in %s" %
                   (ctx.cfg.path if ctx.cfg else "(no --config given)"), err=True)
        sys.exit(2)
    errors = sender.validate(ctx.upstream)
    if errors:
        click.echo("invalid [upstream]:\n" + "\n".join("  - " + e for e in errors), err=True)
        sys.exit(2)
    return sender.Sender(ctx.db, ctx.upstream)


def register(group):
    # ---------------------------------------------------------------- sync
    @group.group("sync")
    def sync():
        """Upstream sync of ratings and unrated-case records to the provincial platform."""

    @sync.command("run")
    @common
    @click.option("--loop", is_flag=True, help="Keep running (Ctrl-C stops) instead of one pass.")
    @click.option("--max-seconds", type=float, default=None, help="Stop a pass after this long.")
    def sync_run(ctx, loop, max_seconds):
        """Send every due outbox record once (batches, signed); --loop keeps going.

        Records the platform refuses go to quarantine with its reason; failures
        stay pending with backoff. Exit 0 when nothing due is left, 1 otherwise."""
        s = _need_sender(ctx)
        if loop:
            import threading
            stop = threading.Event()
            try:
                s.run(stop)
            except KeyboardInterrupt:
                stop.set()
            return
        total = s.drain(max_seconds=max_seconds)
        st = __import__("pingjia.bridge.upstream.sender", fromlist=["status"]).status(ctx.db)
        click.echo("sent %(sent)d (repeats acknowledged %(duplicate)d), quarantined %(quarantined)d, "
                   "skipped %(skipped)d, retry later %(retry)d in %(batches)d batch(es)" % total)
        click.echo("queue: %d pending (%d due), %d quarantined; sync lag %.0fs" % (
            st["pending"], st["due"], st["quarantined"], st["sync_lag_s"]))
        sys.exit(0 if st["due"] == 0 else 1)

    @sync.command("status")
    @common
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    def sync_status(ctx, as_json):
        """Queue depth, sync lag, quarantined and last sent record."""
        from .upstream import sender
        conn = ctx.connect()
        st = sender.status(conn)
        if as_json:
            click.echo(json.dumps(st, ensure_ascii=False, indent=2))
            return
        click.echo("pending %d (due now %d), sent %d, quarantined %d, skipped %d" % (
            st["pending"], st["due"], st["sent"], st["quarantined"], st["skipped"]))
        click.echo("sync lag %.0fs (oldest pending %s), last sent %s" % (
            st["sync_lag_s"], fmt_time(st["oldest_pending_at"]), fmt_time(st["last_sent_at"])))
        for q in st["quarantine_reasons"]:
            click.echo("  quarantined %5d  %s" % (q["count"], q["reason"]))

    @sync.command("profiles")
    @click.option("--show", "show", default=None, help="Print one profile's file.")
    def sync_profiles(show):
        """List the shipped mapping profiles (bridge/profiles/*.toml) or print one."""
        from .upstream import mapping
        if show:
            p = mapping.load(show)
            click.echo(Path(p.source).read_text(encoding="utf-8"))
            return
        for n in mapping.names():
            p = mapping.load(n)
            click.echo("%-10s satisfaction %s, pf %s, 差评原因%s, assessTime %s, unrated %s  %s" % (
                n, p.direction, p.channel, "必填" if p.bad_requires_reason else "可选", p.time_format,
                "sent" if p.unrated_send else "not sent", p.description))

    @sync.command("preview")
    @common
    @click.argument("case_ref")
    @click.option("--profile", default=None, help="Profile name or TOML path (default: [upstream] profile).")
    def sync_preview(ctx, case_ref, profile):
        """Show the platform record(s) a case maps to, without sending."""
        from .upstream import mapping, sender
        conn = ctx.connect()
        prof = mapping.load(profile or ctx.upstream.get("profile", "zhejiang"))
        sql = sender.SELECT_DUE.replace("WHERE o.state = 'pending' AND o.next_try_at <= ?",
                                        "WHERE (c.project_no = ? OR c.case_id = ?)").replace("LIMIT ?", "")
        cur = conn.execute(sql, (case_ref, case_ref))
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, r)) for r in cur.fetchall()]
        if not rows:
            click.echo("no outbox record for case %s" % case_ref, err=True)
            sys.exit(1)
        ctxd = {"area_code": ctx.upstream.get("area_code", ""), "data_source": ctx.upstream.get("data_source", ""), "hall": ctx.hall}
        for r in rows:
            try:
                out = prof.map_unrated(r, ctxd) if r["kind"] == "unrated" else prof.map_rating(r, ctxd)
            except mapping.MappingError as e:
                out = {"error": str(e)}
            click.echo(json.dumps({"outbox_id": r["id"], "kind": r["kind"], "record": out}, ensure_ascii=False, indent=2))

    # ---------------------------------------------------------------- quarantine / re-push
    @group.group("quarantine")
    def quarantine():
        """Records the platform or the mapping refused (never retried by themselves)."""

    @quarantine.command("list")
    @common
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    @click.option("--limit", default=200, show_default=True, help="At most this many.")
    def quarantine_list(ctx, as_json, limit):
        """Quarantined outbox records with the reason (fix the cause, then `pingjia re-push`)."""
        conn = ctx.connect()
        cur = conn.execute(
            "SELECT o.id, o.kind, c.project_no, o.assess_number, o.idem_key, o.attempts, o.created_at, o.last_error AS reason "
            "FROM outbox o JOIN cases c ON c.case_id = o.case_id WHERE o.state = 'quarantined' ORDER BY o.id LIMIT ?", (limit,))
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, r)) for r in cur.fetchall()]
        if as_json:
            click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
            return
        if not rows:
            click.echo("no quarantined records")
            return
        for r in rows:
            r["created_at"] = fmt_time(r["created_at"])
        click.echo(_table(rows, ["id", "kind", "project_no", "assess_number", "attempts", "created_at", "reason"]))

    @group.command("re-push")
    @common
    @click.option("--record", "records", multiple=True, type=int, help="Outbox record id (repeatable).")
    @click.option("--case", "cases", multiple=True, help="Case project_no or case_id (repeatable).")
    @click.option("--since", default=None, help="Records created at or after this time.")
    @click.option("--until", default=None, help="Records created before this time.")
    @click.option("--state", "states", multiple=True, type=click.Choice(["quarantined", "skipped", "sent", "superseded"]),
                  help="Which records may move (default: quarantined and skipped; 'sent' re-sends, the platform "
                       "acknowledges repeats by idempotency key).")
    def repush(ctx, records, cases, since, until, states):
        """Put records back to pending, due now: by record, case, and/or time range."""
        from .upstream import sender
        conn = ctx.connect()
        case_ids = []
        for ref in cases:
            r = conn.execute("SELECT case_id FROM cases WHERE project_no = ? OR case_id = ?", (ref, ref)).fetchone()
            if r is None:
                raise click.BadParameter("no case %s" % ref, param_hint="--case")
            case_ids.append(r[0])
        if not (records or case_ids or since or until):
            raise click.UsageError("give --record, --case, --since or --until")
        n = sender.repush(conn, records, case_ids, parse_time(since), parse_time(until),
                          states=tuple(states) or ("quarantined", "skipped"))
        click.echo("%d record(s) back to pending" % n)

    # ---------------------------------------------------------------- follow-up
    @group.group("followup")
    def followup_grp():
        """差评 follow-up: 待核实 -> 已核实 -> 已整改 -> 已反馈, deadlines in working days."""

    def _fcfg(ctx):
        return ctx.upstream.get("followup") or {}

    @followup_grp.command("list")
    @common
    @click.option("--state", type=click.Choice(["待核实", "已核实", "已整改", "已反馈"]), help="Only this state.")
    @click.option("--overdue", is_flag=True, help="Only overdue ones (open past the deadline, or closed late).")
    @click.option("--open", "open_only", is_flag=True, help="Only those not yet 已反馈.")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    def f_list(ctx, state, overdue, open_only, as_json):
        """Every 差评 follow-up, overdue first."""
        from . import followup
        conn = ctx.connect()
        followup.sync_missing(conn, time.time(), _fcfg(ctx))
        rows = followup.listing(conn, state=state, overdue=True if overdue else None, open_only=True if open_only else None)
        if as_json:
            click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
            return
        if not rows:
            click.echo("no follow-ups")
            return
        for r in rows:
            r["overdue"] = "超期" if r["overdue"] else ""
            r["deadline"] = fmt_time(r["deadline"] - 1)  # the last second of the last working day
            r["stars"] = "%s★" % r["stars"] if r["stars"] else "-"
            r["reasons"] = r["reasons"] or "-"
        click.echo(_table(rows, ["project_no", "window_id", "clerk_name", "stars", "reasons", "state", "deadline", "overdue",
                                 "rerated_stars", "last_step"]))

    @followup_grp.command("show")
    @common
    @click.argument("case_ref")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    def f_show(ctx, case_ref, as_json):
        """One follow-up with every step (who, when, note)."""
        from . import followup
        conn = ctx.connect()
        try:
            f = followup.show(conn, case_ref)
        except followup.FollowupError as e:
            raise click.ClickException(str(e))
        if as_json:
            click.echo(json.dumps(f, ensure_ascii=False, indent=2))
            return
        click.echo("%s  window %s  %s★  %s  deadline %s%s" % (
            f["project_no"], f["window_id"], f["stars"], f["state"], fmt_time(f["deadline"] - 1), "  超期" if f["overdue"] else ""))
        if f["rerated_stars"]:
            click.echo("补充评价 (assessNumber 2): %s★" % f["rerated_stars"])
        for s in f["steps"]:
            click.echo("  %s  %s  %s  %s" % (fmt_time(s["at"]), s["state"], s["who"], s["note"]))

    @followup_grp.command("advance")
    @common
    @click.argument("case_ref")
    @click.option("--who", required=True, help="Who did this step (name or staff id).")
    @click.option("--note", default="", help="What was found / done / answered.")
    @click.option("--to", "to_state", type=click.Choice(["已核实", "已整改", "已反馈"]),
                  help="Expected next state (refused if it is not the next one).")
    def f_advance(ctx, case_ref, who, note, to_state):
        """Move a follow-up to its next state (待核实 -> 已核实 -> 已整改 -> 已反馈)."""
        from . import followup
        conn = ctx.connect()
        try:
            new = followup.advance(conn, case_ref, who, note, to_state)
        except followup.FollowupError as e:
            raise click.ClickException(str(e))
        click.echo("%s: %s" % (case_ref, new))

    @followup_grp.command("rerate")
    @common
    @click.argument("case_ref")
    @click.argument("stars", type=click.IntRange(1, 5))
    @click.option("--who", required=True, help="Who recorded the re-rating.")
    @click.option("--reasons", default="", help="Reason codes (comma-separated) for a 1-2 star re-rating.")
    def f_rerate(ctx, case_ref, stars, who, reasons):
        """Record the citizen's re-rating after rectification (assessNumber 2, same case; queued upstream)."""
        from . import followup
        conn = ctx.connect()
        try:
            followup.rerate(conn, case_ref, stars, who, reasons)
        except followup.FollowupError as e:
            raise click.ClickException(str(e))
        click.echo("%s: 补充评价 %d★ recorded (assessNumber 2)" % (case_ref, stars))

    @followup_grp.command("sync")
    @common
    def f_sync(ctx):
        """Open follow-ups for 差评 that have none and queue events for unrated cases (catch-up)."""
        from . import followup, unrated
        conn = ctx.connect()
        n = followup.sync_missing(conn, time.time(), _fcfg(ctx))
        m = unrated.sync_missing(conn, ctx.hall, time.time(), ctx.upstream.get("unrated"))
        click.echo("%d follow-up(s) opened, %d unrated event(s) queued" % (n, m))

    # ---------------------------------------------------------------- report
    @group.command("report")
    @common
    @click.option("--by", type=click.Choice(["hall", "window", "clerk", "dept", "matter"]), default="window", show_default=True,
                  help="Group rows by.")
    @click.option("--period", type=click.Choice(["day", "week", "month", "all"]), default="day", show_default=True,
                  help="One row per this period (weeks start on Monday).")
    @click.option("--since", default=None, help="From this local date (default: the first finished case).")
    @click.option("--until", default=None, help="Up to (excluding) this local date (default: tomorrow).")
    @click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True,
                  help="Aligned table, CSV (all columns) or JSON.")
    def report(ctx, by, period, since, until, fmt):
        """评价率, 满意率, 差评 count and 整改率 (computed in SQL) per window/clerk/dept/matter and day/week/month."""
        from . import reports
        conn = ctx.connect()
        try:
            rows = reports.report(conn, by, period, parse_time(since), parse_time(until))
        except ValueError as e:
            raise click.UsageError(str(e))
        click.echo(reports.render(rows, fmt), nl=False)

    # ---------------------------------------------------------------- receiver
    @group.command("receiver")
    @click.option("--profile", default="zhejiang", show_default=True, help="Profile the records are validated against.")
    @click.option("--db", "db", default="var/receiver.db", show_default=True, help="Receiver's own SQLite file.")
    @click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
    @click.option("--port", default=8090, show_default=True, type=int, help="Port to listen on.")
    @click.option("--sign-alg", type=click.Choice(["hmac-sha256", "hmac-sm3", "none"]), default="hmac-sha256",
                  show_default=True, help="Signature the receiver insists on.")
    @click.option("--key", "sign_key", default="", envvar="PINGJIA_UPSTREAM_KEY",
                  help="Signing key ('hex:...' or text; env PINGJIA_UPSTREAM_KEY).")
    @click.option("--fail-rate", type=float, default=0.0, help="Share of batches answered with --fail-status.")
    @click.option("--fail-status", type=int, default=503, show_default=True, help="HTTP status of injected failures.")
    @click.option("--retry-after", type=float, default=None, help="Retry-After seconds on 429/503.")
    @click.option("--delay", type=float, default=0.0, help="Sleep this long before every answer.")
    @click.option("--reject-project", "reject_projects", multiple=True, help="Reject records of this projectNo.")
    @click.option("--tls-cert", default=None, type=click.Path(exists=True, dir_okay=False),
                  help="Serve HTTPS with this certificate (PEM).")
    @click.option("--tls-key", default=None, type=click.Path(exists=True, dir_okay=False),
                  help="Private key of --tls-cert (PEM; omit when inside the cert file).")
    def receiver(profile, db, host, port, sign_alg, sign_key, fail_rate, fail_status, retry_after, delay, reject_projects,
                 tls_cert, tls_key):
        """Run the reference upstream receiver: validates signed batches against a profile,
        stores each record once by idempotency key, fails on demand (also via POST /admin/faults)."""
        from .upstream import receiver as rcv
        if sign_alg != "none" and not sign_key:
            raise click.UsageError("--key is required unless --sign-alg none")
        Path(db).parent.mkdir(parents=True, exist_ok=True)
        rcv.main(profile, db, host, port, sign_alg, sign_key, tls_cert=tls_cert, tls_key=tls_key,
                 fail_rate=fail_rate, fail_status=fail_status,
                 retry_after=retry_after, delay=delay, reject_projects=list(reject_projects))
