# pingjia.tools.fleet: the fleet view (every window and its keypad, problems first) as a table or JSON.
import time
import unicodedata

from ..bridge import statuspage


def fleet(conn, now=None):
    """Rows from the status page's own model, so the CLI and the wall screen agree."""
    return statuspage.keypads(conn, time.time() if now is None else now)


def versions(rows):
    """{firmware version: [device ids]} of the keypads in service ('?' before their first hello)."""
    out = {}
    for r in rows:
        if r["device_id"]:
            out.setdefault(r["fw_version"] or "?", []).append(r["device_id"])
    return {v: sorted(ids) for v, ids in sorted(out.items())}


def _width(s):
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in s)


def _pad(s, n):
    return s + " " * max(0, n - _width(s))


def format_table(header, rows):
    """Plain text columns, aligned for CJK (wide) characters."""
    cells = [[str(c) for c in header]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(_width(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(_pad(c, w) for c, w in zip(r, widths)).rstrip() for r in cells)


def table(rows):
    header = ["窗口", "名称", "评价器", "状态", "最后在线", "版本", "积压", "拒收", "说明"]
    body = []
    for r in rows:
        depth = "" if r["journal_depth"] is None else "%d/%d" % (r["journal_depth"], r["journal_cap"] or 0)
        body.append([
            r["window_id"] or "-", r["window_name"], r["device_id"] or "-", r["state_label"],
            r["last_seen_ago"] or "-", r["fw_version"] or "-", depth or "-", r["rejects"] or "",
            r["detail"] if r["state"] != "ok" else (r["last_error"] or ""),
        ])
    return format_table(header, body)


def summary(rows):
    problems = sum(1 for r in rows if r["problem"])
    vers = ", ".join("%s ×%d" % (v, len(ids)) for v, ids in versions(rows).items()) or "-"
    return "%d 个窗口/评价器，%d 个需要处理；固件版本：%s" % (len(rows), problems, vers)
