"""Named, append-only schema migrations for the bridge's one SQLite file.

Each migration is (name, sql). Applied names are recorded in the `migrations`
table; a migration never changes once released: add a new one instead.
Internal meaning everywhere: stars 1..5, 5 = 非常满意; times are UNIX seconds
(REAL, UTC); the edge (upstream mapping, reports) converts.
"""

MIGRATIONS = [
    (
        "0001_core",
        """
CREATE TABLE windows (
    window_id   TEXT PRIMARY KEY,          -- hall's own window code, e.g. 'W03'
    name        TEXT NOT NULL DEFAULT '',  -- 窗口名称 shown on the status page
    dept_code   TEXT NOT NULL DEFAULT '',
    dept_name   TEXT NOT NULL DEFAULT '',
    created_at  REAL NOT NULL
);
CREATE TABLE devices (
    device_id     TEXT PRIMARY KEY,
    key_hex       TEXT NOT NULL,           -- 32-byte device key; never logged
    window_id     TEXT REFERENCES windows(window_id),
    transport     TEXT NOT NULL DEFAULT 'serial',   -- serial | mqtt
    retired_at    REAL,
    created_at    REAL NOT NULL,
    -- last known state, updated from hello/status/link events
    fw_version    TEXT, board TEXT, boot INTEGER,
    online        INTEGER NOT NULL DEFAULT 0,
    last_seen     REAL,
    uptime_s      INTEGER, journal_depth INTEGER, journal_cap INTEGER,
    free_heap     INTEGER, rssi INTEGER, status_flags INTEGER,
    last_error    TEXT,
    cmd_seq       INTEGER NOT NULL DEFAULT 0,    -- bridge -> device command counter
    rejects       INTEGER NOT NULL DEFAULT 0,    -- rejected messages, all reasons
    last_reject   TEXT, last_reject_at REAL
);
CREATE TABLE bindings (                    -- history of which unit served which window
    id          INTEGER PRIMARY KEY,
    device_id   TEXT NOT NULL REFERENCES devices(device_id),
    window_id   TEXT NOT NULL REFERENCES windows(window_id),
    bound_at    REAL NOT NULL,
    unbound_at  REAL,
    note        TEXT NOT NULL DEFAULT ''
);
CREATE TABLE cases (
    case_id     INTEGER PRIMARY KEY,
    project_no  TEXT NOT NULL UNIQUE,      -- 办件编号 from the case system
    window_id   TEXT NOT NULL REFERENCES windows(window_id),
    task_code   TEXT NOT NULL DEFAULT '',  -- 事项编码
    task_name   TEXT NOT NULL DEFAULT '',
    dept_code   TEXT NOT NULL DEFAULT '',
    dept_name   TEXT NOT NULL DEFAULT '',
    clerk_id    TEXT NOT NULL DEFAULT '',  -- 经办人
    clerk_name  TEXT NOT NULL DEFAULT '',
    user_prop   INTEGER NOT NULL DEFAULT 1,   -- 1 person, 2 company
    contact_ref TEXT NOT NULL DEFAULT '',  -- reference for the SMS gateway, never a phone number in clear
    state       TEXT NOT NULL DEFAULT 'open',  -- open | prompted | rated | unrated | cancelled
    token       TEXT UNIQUE,               -- case token sent in the prompt, echoed by the rating
    device_id   TEXT,                      -- keypad that was prompted
    opened_at   REAL NOT NULL,
    finished_at REAL,
    prompt_until REAL,
    closed_at   REAL
);
CREATE INDEX cases_window_state ON cases(window_id, state);
CREATE TABLE events (                      -- every journaled event exactly once: (device_id, seq)
    device_id   TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    boot        INTEGER NOT NULL,
    kind        TEXT NOT NULL,             -- rating | reason | unsolicited
    stars       INTEGER,
    token       TEXT,
    ref_seq     INTEGER,                   -- reason: the rating it belongs to
    codes       TEXT,                      -- reason codes, comma-separated
    age_ms      INTEGER NOT NULL,
    nth         INTEGER, dt_ms INTEGER,
    digest      TEXT NOT NULL,             -- hex of the canonical bytes' SHA-256: replay check
    via         TEXT NOT NULL,             -- serial:<port> | mqtt
    received_at REAL NOT NULL,
    pressed_at  REAL NOT NULL,
    case_id     INTEGER REFERENCES cases(case_id),
    disposition TEXT NOT NULL,             -- counted | replaced | audit | unsolicited | orphan
    PRIMARY KEY (device_id, seq)
);
CREATE INDEX events_case ON events(case_id);
CREATE TABLE ratings (                     -- the counted rating of a case (at most first + follow-up)
    case_id     INTEGER NOT NULL REFERENCES cases(case_id),
    assess_number INTEGER NOT NULL DEFAULT 1,   -- 1 first, 2 follow-up (补充评价)
    stars       INTEGER NOT NULL,
    reasons     TEXT NOT NULL DEFAULT '',  -- reason codes, comma-separated
    device_id   TEXT NOT NULL,
    seq         INTEGER NOT NULL,          -- the event that set it
    pressed_at  REAL NOT NULL,
    updated_at  REAL NOT NULL,
    PRIMARY KEY (case_id, assess_number)
);
CREATE TABLE audit (                       -- who did what, and every rejected or dropped input
    id          INTEGER PRIMARY KEY,
    at          REAL NOT NULL,
    actor       TEXT NOT NULL,             -- device id, 'case-api', 'cli', 'bridge'
    action      TEXT NOT NULL,
    subject     TEXT NOT NULL DEFAULT '',
    detail      TEXT NOT NULL DEFAULT ''
);
CREATE TABLE device_log (                  -- text a keypad printed outside frames, LOG messages
    id          INTEGER PRIMARY KEY,
    device_id   TEXT,                      -- NULL when only the port is known
    port        TEXT NOT NULL DEFAULT '',
    at          REAL NOT NULL,
    line        TEXT NOT NULL
);
CREATE TABLE outbox (                      -- records for the provincial platform
    id          INTEGER PRIMARY KEY,
    kind        TEXT NOT NULL,             -- rating | unrated
    case_id     INTEGER NOT NULL REFERENCES cases(case_id),
    assess_number INTEGER NOT NULL DEFAULT 1,
    idem_key    TEXT NOT NULL UNIQUE,      -- idempotency key sent upstream
    state       TEXT NOT NULL DEFAULT 'pending',  -- pending | sent | quarantined
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_try_at REAL NOT NULL,
    last_error  TEXT NOT NULL DEFAULT '',
    created_at  REAL NOT NULL,
    sent_at     REAL
);
CREATE INDEX outbox_due ON outbox(state, next_try_at);
CREATE TABLE followups (                   -- 差评 follow-up: 待核实 -> 已核实 -> 已整改 -> 已反馈
    case_id     INTEGER PRIMARY KEY REFERENCES cases(case_id),
    state       TEXT NOT NULL DEFAULT '待核实',
    opened_at   REAL NOT NULL,
    deadline    REAL NOT NULL,
    closed_at   REAL
);
CREATE TABLE followup_steps (
    id          INTEGER PRIMARY KEY,
    case_id     INTEGER NOT NULL REFERENCES followups(case_id),
    state       TEXT NOT NULL,
    at          REAL NOT NULL,
    who         TEXT NOT NULL,
    note        TEXT NOT NULL DEFAULT ''
);
""",
    ),
    (
        "0002_unrated_notices",
        """
CREATE TABLE unrated_notices (             -- unrated-case events for the SMS invitation gateway (bridge/unrated.py)
    case_id     INTEGER PRIMARY KEY REFERENCES cases(case_id),
    payload     TEXT NOT NULL,             -- the event JSON, as published
    created_at  REAL NOT NULL,
    mqtt_at     REAL,                      -- published on topics.unrated(hall) (QoS 1 acknowledged)
    webhook_at  REAL,                      -- POSTed to the webhook (2xx)
    withdrawn_at REAL,                     -- the case got a rating before delivery: not sent
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_try_at REAL NOT NULL,
    last_error  TEXT NOT NULL DEFAULT ''
);
CREATE INDEX unrated_notices_due ON unrated_notices(next_try_at);
""",
    ),
    (
        "0003_core_indexes",
        """
-- the bridge core's per-second and per-rating lookups stay O(log n) as the hall's history grows
CREATE INDEX cases_prompted ON cases(prompt_until) WHERE state = 'prompted';
CREATE INDEX events_reason_ref ON events(device_id, ref_seq) WHERE kind = 'reason';
""",
    ),
    (
        "0004_hot_path_indexes",
        """
-- Measured on the rating path (docs/BENCHMARKS.md, Ingest): a rating changes its case's state,
-- and cases_window_state(window_id, state) moved that case's entry in a different index page
-- for every window, about 60 % of the WAL written per rating. Listing a window's cases needs
-- the window and the time, not the state: this index is not touched when a case is rated.
DROP INDEX cases_window_state;
CREATE INDEX cases_window ON cases(window_id, opened_at);
-- Only reasons that arrived before their rating wait to be adopted: index just those, so the
-- batch's look-up for them stays on a handful of rows however many reasons the hall stores
-- (the planner built an automatic index over all events for it: a scan of the table per batch).
DROP INDEX events_reason_ref;
CREATE INDEX events_orphan_reasons ON events(device_id, ref_seq) WHERE kind = 'reason' AND disposition = 'orphan';
-- The upstream workers' catch-up sweep (every minute) looks for 差评 without a follow-up and unrated
-- cases without an SMS-invitation event: it read every rating and every case each time. These hold
-- just the rows it looks for (差评 are 1-2 stars whatever [followup] bad_max_stars says).
CREATE INDEX ratings_bad ON ratings(case_id) WHERE assess_number = 1 AND stars <= 2;
CREATE INDEX cases_unrated ON cases(case_id) WHERE state = 'unrated';
""",
    ),
    (
        "0005_cases_finished",
        """
-- Reports (评价率, 满意率 per day, week, month) and the status page's "today" select cases by the time
-- they were finished: a day's report reads that day's cases, not the hall's whole history, and a case
-- opened days ago and finished today counts today, as it does in the report. Written once per case,
-- when it is finished (a rating does not change finished_at).
CREATE INDEX cases_finished ON cases(finished_at);
-- the status page lists the open 差评 follow-ups by deadline: the few open ones, not every one ever opened
CREATE INDEX followups_open ON followups(deadline) WHERE closed_at IS NULL;
""",
    ),
]
