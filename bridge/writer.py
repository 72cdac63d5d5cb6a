# pingjia.bridge.writer: the hub's single writer thread: group commit, then ACK.
#
# Drains the hub's queue into a batch (up to batch_max items, whatever is
# waiting: no added latency when idle, large batches under load; capped so that
# under a burst part of the keypads' events are on their way back while a
# batch is applied, instead of all of them waiting for it), applies the
# batch in ONE transaction (a SAVEPOINT per item isolates a bad item), COMMITs,
# and only then sends ACKs and commands and runs hooks, on this same thread:
# handing them to a thread of their own cost more than it saved, since every
# Python thread shares one GIL (docs/BENCHMARKS.md, Ingest). When the COMMIT fails
# for a transient reason (database locked, disk or DB full, I/O) nothing is
# ACKed: the batch is kept and retried with backoff, the error logged once,
# recovery logged once. Jobs (case operations, commands) run between batches,
# each in its own transaction, with their result or error handed back.
import concurrent.futures
import logging
import queue
import sqlite3
import threading
import time

from ..protocol import messages as m
from . import cases
from .batch import Batch, insert_many
from .store import audit, is_transient

log = logging.getLogger("pingjia.bridge.hub")

RETRY_MIN_S, RETRY_MAX_S = 0.05, 2.0
CACHE_KB = 16000  # SQLite page cache of the writer's connection (the default is 2 MB)
AUTOCHECKPOINT_PAGES = 10000  # ~40 MB of WAL before a COMMIT checkpoints by itself (default 1,000)
WAL_KEEP_BYTES = 64 * 1024 * 1024  # a WAL file that grew beyond this is truncated when it restarts
_STOP = ("stop",)
_JOURNALED = frozenset(m.JOURNALED)


class Writer:
    def __init__(self, hub, batch_max=200, reject_log_interval_s=300.0):
        self.hub = hub
        self.batch_max = batch_max
        self.reject_log_interval_s = reject_log_interval_s
        self.conn = None
        self._thread = None
        self._beat = time.monotonic()
        self._pending = []  # items of a batch whose commit failed
        self._failing = None  # the error message while commits fail
        self._batch = None  # bridge/batch.py: the open batch's lookups and deferred rows
        self._reject_log = {}  # (device, reason) -> [last logged at, suppressed since]
        self._stopped = threading.Event()
        self._stop_asked = False
        self.counters = {"stored": 0, "duplicates": 0, "replays": 0, "acks": 0, "batches": 0,
                         "commit_failures": 0, "max_batch": 0,
                         "apply_s": 0.0, "commit_s": 0.0, "ack_s": 0.0, "idle_s": 0.0}  # time spent per phase, cumulative

    def start(self):
        self.conn = self.hub.store.connect()
        # the hall's hot pages (recent cases, index leaves of every keypad) stay in the writer's cache
        self.conn.execute("PRAGMA cache_size = -%d" % CACHE_KB)
        # checkpoints are the Checkpointer thread's job (store.py); this only catches it falling behind
        self.conn.execute("PRAGMA wal_autocheckpoint = %d" % AUTOCHECKPOINT_PAGES)
        self.conn.execute("PRAGMA journal_size_limit = %d" % WAL_KEEP_BYTES)
        # a multi-row statement keeps a statement journal (to undo itself alone): in memory, not a temp file
        self.conn.execute("PRAGMA temp_store = MEMORY")
        self._thread = threading.Thread(target=self._run, name="hub-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout):
        if self._thread is None:
            return True
        if not self._thread.is_alive():
            return not self._pending
        self._stop_asked = True  # seen even while a full batch is retried without reading the queue
        self.hub._q.put(_STOP)
        self._thread.join(timeout)
        flushed = not self._thread.is_alive() and not self._pending
        if not flushed:
            log.error("stopped with uncommitted messages pending=%d (keypads keep them and retransmit)", len(self._pending))
        return flushed

    def alive(self, max_age_s):
        return self._thread is not None and self._thread.is_alive() and time.monotonic() - self._beat < max_age_s

    def stats(self):
        s = dict(self.counters)
        s["pending_commit"] = len(self._pending)
        s["commit_error"] = self._failing
        return s

    def job(self, fn, timeout, transaction):
        if threading.current_thread() is self._thread:
            raise RuntimeError("hub.call from the writer thread (a hook?) would wait for itself; hand off to another thread")
        fut = concurrent.futures.Future()
        self.hub._q.put(("job", fn, fut, transaction))
        return fut.result(timeout)

    # -- loop -------------------------------------------------------------------------------------
    def _run(self):
        delay, stopping = RETRY_MIN_S, False
        try:
            while True:
                self._beat = time.monotonic()
                wait = delay if self._pending else 1.0
                batch, job, stopping = self._collect(wait, stopping)
                if batch:
                    try:
                        ok = self._commit(batch)
                    except Exception:  # a bug: drop the batch from memory (not ACKed: keypads resend), keep running
                        log.exception("batch failed unexpectedly items=%d (not ACKed; keypads retransmit)", len(batch))
                        if self.conn.in_transaction:
                            self.conn.execute("ROLLBACK")
                        ok = True
                    if ok:
                        delay = RETRY_MIN_S
                    else:
                        self._pending = batch
                        delay = min(RETRY_MAX_S, delay * 2)
                if job is not None:  # after the batch queued before it: a job sees every earlier message committed
                    self._job(*job[1:])
                if stopping and (self._pending or self.hub._q.empty()):
                    return  # a failing commit at stop: nothing was ACKed, keypads retransmit after restart
        finally:
            self._stopped.set()
            self.conn.close()

    def _collect(self, wait, stopping):
        """(batch, job or None, stopping): messages up to batch_max, stopping at the first job."""
        batch, self._pending = self._pending, []
        q = self.hub._q
        if batch and not stopping:
            time.sleep(wait)  # back off before retrying a failed commit
            if len(batch) >= self.batch_max:  # retried as it is; what is queued behind it waits its turn
                return batch, None, self._stop_asked
        t = time.perf_counter()
        try:
            item = q.get_nowait() if batch or stopping else q.get(timeout=wait)
        except queue.Empty:
            return batch, None, stopping
        finally:
            self.counters["idle_s"] += time.perf_counter() - t
        while True:
            if item is _STOP:
                stopping = True
            elif item[0] == "job":
                return batch, item, stopping
            else:
                batch.append(item)
            if len(batch) >= self.batch_max:
                break
            try:
                item = q.get_nowait()
            except queue.Empty:
                break
        return batch, None, stopping

    def _job(self, fn, fut, transaction):
        if not fut.set_running_or_notify_cancel():
            return
        now = self.hub.clock()
        try:
            if transaction:
                self.conn.execute("BEGIN IMMEDIATE")
            try:
                result, effects = fn(self.conn, now)
                if transaction:
                    self._in_tx_hooks(effects)
                sends = self._prepare(effects)
                if transaction:
                    self.conn.execute("COMMIT")
            except BaseException:
                if transaction and self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
        except Exception as e:
            fut.set_exception(e)
            return
        try:
            ok = self._effects(sends, effects)
        except Exception:
            log.exception("commands/hooks after a committed job failed")
            ok = False
        if isinstance(result, dict) and sends:  # a case change that commands its keypad: say whether it went out
            result["keypad_notified"] = bool(ok)
        fut.set_result(ok if result is None else result)

    def _prepare(self, effects):
        """Inside the transaction: take a persisted command counter for each command to send."""
        out = []
        for eff in effects:
            if eff[0] == "command":
                _, dev, mtype, fields = eff
                r = self.conn.execute("UPDATE devices SET cmd_seq = cmd_seq + 1 WHERE device_id = ? RETURNING cmd_seq, transport",
                                      (dev,)).fetchone()
                out.append((dev, mtype, r[0] if r else 0, fields, r[1] if r else None))
        return out

    def _in_tx_hooks(self, effects):
        """hub.on_rated_tx: callables(conn, cases, now) run inside the transaction that counted or
        replaced the ratings of `cases`, after their rows are written (a 差评's follow-up commits
        with it); one call per transaction. One that fails is rolled back to its savepoint and
        logged; the ratings still commit."""
        hooks = self.hub.on_rated_tx
        rated = [eff[1] for eff in effects if eff[0] == "rated"] if hooks else None
        if not rated:
            return
        now = self.hub.clock()
        for fn in hooks:
            self.conn.execute("SAVEPOINT hook")
            try:
                fn(self.conn, rated, now)
                self.conn.execute("RELEASE hook")
            except Exception as e:
                if is_transient(e):
                    raise
                self.conn.execute("ROLLBACK TO hook")
                self.conn.execute("RELEASE hook")
                log.exception("rated hook failed in the transaction cases=%d", len(rated))

    def _effects(self, sends, effects):
        ok = True
        for dev, mtype, seq, fields, transport in sends:
            ok = self.hub.send_command(dev, mtype, seq, fields, transport) and ok
        for eff in effects:
            if eff[0] in ("rated", "unrated"):
                self.hub.run_hooks(eff[0], eff[1])
        return ok

    # -- one batch --------------------------------------------------------------------------------
    def _commit(self, batch, isolate=False):
        """One transaction for the batch. Fast path without savepoints; when an item fails for a
        non-transient reason (a bug, bad data) the batch is redone with a SAVEPOINT per item,
        so only that item is left out (logged, not ACKed)."""
        acks, effects, seen = {}, [], {}
        t0 = time.perf_counter()
        now = self.hub.clock()  # the bridge's time for every row the batch writes
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            msgs = [it[1] for it in batch if it[0] == "msg" and it[1].type in _JOURNALED]
            self._batch = Batch(self.conn, self.hub.rules, msgs)
            for item in batch:
                if not isolate:
                    try:
                        self._apply(item, acks, effects, seen, now)
                    except Exception as e:
                        if is_transient(e):
                            raise
                        self.conn.execute("ROLLBACK")
                        return self._commit(batch, isolate=True)
                    continue
                self.conn.execute("SAVEPOINT item")
                item_acks, item_effects, item_seen = {}, [], {}  # kept only if the item commits
                try:
                    self._apply(item, item_acks, item_effects, item_seen, now)
                    self._batch.flush()  # the item's rows inside its savepoint
                    self.conn.execute("RELEASE item")
                except Exception as e:
                    if is_transient(e):
                        raise
                    self.conn.execute("ROLLBACK TO item")
                    self.conn.execute("RELEASE item")
                    self._batch = Batch(self.conn, self.hub.rules, msgs)  # what it knew of the item is gone too
                    log.error("message not stored (bug?) item=%s error=%r", item[0], e)
                    continue
                for k, seqs in item_acks.items():
                    acks.setdefault(k, []).extend(seqs)
                effects.extend(item_effects)
                for dev, (at, link) in item_seen.items():
                    seen[dev] = (max(at, seen.get(dev, (0,))[0]), link)
            try:
                self._batch.flush()  # isolated items are written already
            except Exception as e:
                if is_transient(e) or isolate:
                    raise
                self.conn.execute("ROLLBACK")  # a bug in the batch's rows: redo it item by item
                return self._commit(batch, isolate=True)
            self._in_tx_hooks(effects)
            if seen:  # one statement (one sqlite3_step) for every keypad heard in the batch
                insert_many(self.conn, "WITH v(d, at) AS (VALUES ", 2, [(dev, at) for dev, (at, _link) in seen.items()],
                            ") UPDATE devices SET last_seen = max(coalesce(last_seen, 0), v.at), online = 1 "
                            "FROM v WHERE devices.device_id = v.d")
            sends = self._prepare(effects)
            t1 = time.perf_counter()
            self.conn.execute("COMMIT")
            t2 = time.perf_counter()
        except sqlite3.Error as e:
            if self.conn.in_transaction:
                try:
                    self.conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            self.counters["commit_failures"] += 1
            msg = str(e)
            if self._failing is None:
                log.error("commit failed, nothing ACKed, will retry error=%r items=%d db=%s",
                          msg, len(batch), self.hub.store.path)
            self._failing = msg
            if not is_transient(e):
                log.error("non-transient database error error=%r", msg)
            return False
        if self._failing is not None:
            log.info("commit recovered after_error=%r items=%d", self._failing, len(batch))
            self._failing = None
        c = self.counters
        c["batches"] += 1
        c["max_batch"] = max(c["max_batch"], len(batch))
        c["apply_s"] += t1 - t0
        c["commit_s"] += t2 - t1
        self._after_commit(acks, sends, effects)
        return True

    def _after_commit(self, acks, sends, effects):
        """ACKs, commands and hooks of a committed batch, in commit order. Links only queue what they
        send (MQTT: paho's out-queue; serial: the port's buffer), so this is quick."""
        t = time.perf_counter()
        try:
            self.counters["acks"] += self.hub.send_acks(acks)
            self._effects(sends, effects)
        except Exception:  # committed already; a keypad missing an ACK retransmits and is ACKed as a duplicate
            log.exception("sending ACKs/commands after commit failed")
        self.counters["ack_s"] += time.perf_counter() - t

    def _apply(self, item, acks, effects, seen, now):
        kind = item[0]
        if kind == "msg":
            _, msg, raw, link, at = item
            dev = msg.device_id
            seen[dev] = (max(at, seen.get(dev, (0,))[0]), link)
            journaled = msg.type in _JOURNALED
            if not journaled:
                self._batch.settle()  # HELLO, STATUS change what the batch looked up (journaled: Batch.apply decides)
            held = self.hub.take_unprompted(dev)
            if held:  # cases finished while the bridge had no link to this keypad: prompt it now that it spoke
                self._batch.settle()
                for c, remaining in cases.prompted_for(self.conn, dev, now):
                    if c["token"] in held:
                        effects.append(cases._prompt_effect(self.conn, c, self.hub.rules, remaining))
            if journaled:
                outcome, eff = self._batch.apply(msg, raw, getattr(link, "name", "?"), at, now)
                if outcome == "replay":
                    self.counters["replays"] += 1
                    self._reject(dev, "replay", "seq %d seen with other content" % msg.seq, link, at)
                    return
                self.counters["stored" if outcome == "stored" else "duplicates"] += 1
                acks.setdefault((dev, link), []).append(msg.seq)
                effects.extend(eff)
            elif msg.type == m.HELLO:
                self._hello(msg, link, at, effects, now)
            elif msg.type == m.STATUS:
                self.conn.execute(
                    """UPDATE devices SET uptime_s=?, journal_depth=?, journal_cap=?, free_heap=?, rssi=?, status_flags=?,
                       last_error=?, boot=? WHERE device_id=? AND (boot IS NULL OR boot < ? OR (boot = ? AND coalesce(uptime_s, 0) <= ?))""",
                    (msg.uptime_s, msg.journal_depth, msg.journal_cap, msg.free_heap, msg.rssi, msg.flags, msg.last_error,
                     msg.boot, msg.device_id, msg.boot, msg.boot, msg.uptime_s))
            elif msg.type == m.LOG:
                self.conn.execute("INSERT INTO device_log (device_id, port, at, line) VALUES (?,?,?,?)",
                                  (msg.device_id, getattr(link, "name", ""), at, "[%d] %s" % (msg.level, msg.text)))
        elif kind == "text":
            _, dev, port, line, at = item
            self.conn.execute("INSERT INTO device_log (device_id, port, at, line) VALUES (?,?,?,?)", (dev, port, at, line[:1000]))
        elif kind == "link":
            _, dev, online, link, at = item
            self.conn.execute("UPDATE devices SET online = ?, last_seen = CASE WHEN ? THEN ? ELSE last_seen END WHERE device_id = ?",
                              (int(online), int(online), at, dev))
            log.info("keypad %s device=%s link=%s", "online" if online else "offline", dev, getattr(link, "name", ""))
        elif kind == "reject":
            _, dev, code, detail, link, at = item
            self._reject(dev, code, detail, link, at)

    def _hello(self, msg, link, at, effects, now):
        old = self.conn.execute("SELECT boot FROM devices WHERE device_id = ?", (msg.device_id,)).fetchone()
        if old is not None and old[0] is not None and msg.boot < old[0]:
            return  # a stale HELLO from an earlier boot, delivered late
        self.conn.execute("UPDATE devices SET fw_version=?, board=?, boot=?, uptime_s=CASE WHEN boot IS ? THEN uptime_s ELSE 0 END, "
                          "transport=? WHERE device_id=?",
                          (msg.fw, msg.board, msg.boot, msg.boot, "mqtt" if getattr(link, "name", "").startswith("mqtt") else "serial",
                           msg.device_id))
        log.info("keypad hello device=%s fw=%s board=%s boot=%d link=%s", msg.device_id, msg.fw, msg.board, msg.boot,
                 getattr(link, "name", ""))
        effects.append(("command", msg.device_id, m.TIME, {"unix_s": int(now)}))  # for its display only
        effects.append(("command", msg.device_id, m.CONFIG, {"items": self.hub.rules.keypad_config()}))
        if old is None or old[0] != msg.boot:  # rebooted: prompts it had open are gone, send them again
            for c, remaining in cases.prompted_for(self.conn, msg.device_id, now):
                effects.append(cases._prompt_effect(self.conn, c, self.hub.rules, remaining))

    def _reject(self, dev, code, detail, link, at):
        """Count per device, audit and log once per (device, reason) per interval."""
        port = getattr(link, "name", "")
        if dev is not None:
            self.conn.execute("UPDATE devices SET rejects = rejects + 1, last_reject = ?, last_reject_at = ? WHERE device_id = ?",
                              ("%s: %s" % (code, detail), at, dev))
        key = (dev or port, code)
        ent = self._reject_log.get(key)
        if ent is not None and at - ent[0] < self.reject_log_interval_s:
            ent[1] += 1
            return
        more = ent[1] if ent else 0
        if len(self._reject_log) > 10000:
            self._reject_log.clear()
        self._reject_log[key] = [at, 0]
        audit(self.conn, at, dev or port or "?", "reject." + code, dev or "", "%s (link %s; %d more since last report)" % (detail, port, more))
        log.warning("rejected device=%s reason=%s link=%s detail=%r suppressed_since_last=%d (logged once per %ds)",
                    dev or "-", code, port, detail, more, self.reject_log_interval_s)
