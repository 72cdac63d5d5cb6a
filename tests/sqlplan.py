"""What SQLite's planner does with the statements a piece of code runs.

Tests use it to keep the hall's growing tables (cases, events, ratings, follow-ups) read by index,
so a query costs the same in a hall with years of history as in a new one."""
import re


def statements_of(conn, fn):
    """Run fn() and return every statement `conn` executed meanwhile."""
    statements = []
    conn.set_trace_callback(statements.append)
    try:
        fn()
    finally:
        conn.set_trace_callback(None)
    return statements


def full_reads(conn, statements, small=()):
    """(statement, plan line) for each read of a whole table in the plans of `statements`: a SCAN, or
    an AUTOMATIC index (SQLite reads the whole table to build it). Not counted: a scan of a partial
    index (it holds only the rows looked for) and any name in `small`, the tables, aliases and CTEs
    that stay small (windows, keypads, a statement's own list of keys). Plans name a table by its
    alias when it has one, so `small` takes aliases too."""
    partial = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND sql LIKE '% WHERE %'")}
    found = []
    for sql in statements:
        if not re.match(r"\s*(SELECT|WITH|UPDATE|INSERT|DELETE)", sql, re.I):
            continue
        for line in (r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql)):
            words = line.split()
            if words[0] not in ("SCAN", "SEARCH") or words[1] in small or "CONSTANT ROW" in line:  # VALUES
                continue
            if words[0] == "SCAN" and not (" USING " in line and words[-1] in partial):
                found.append((" ".join(sql.split())[:200], line))
            elif "AUTOMATIC" in line:
                found.append((" ".join(sql.split())[:200], line))
    return found
