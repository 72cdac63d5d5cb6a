# pingjia.bridge.hub: verify, dedup, attach, group-commit, then ACK.
#
# Transports call `submit(raw, link)` from any thread. The caller's thread
# peeks, finds the key, checks the MAC and decodes; everything that touches the
# database goes through one queue to the writer thread (bridge/writer.py),
# which commits in batches and sends ACKs only after its COMMIT succeeded.
# Case operations (`open_case`, `finish_case`, ...) and `command` run as jobs
# on the same thread, so all writes are serialised and a prompt is sent only
# after the case change is committed. Contract: docs/ARCHITECTURE.md.
import logging
import queue
import struct
import threading
import time

from ..protocol import messages as m
from ..protocol.errors import ProtocolError
from . import cases, devices
from .fastdecode import HostSigner
from .fastdecode import decode_event as _fast_decode
from .store import Checkpointer
from .writer import Writer

log = logging.getLogger("pingjia.bridge.hub")

KEY_RELOAD_S = 5.0  # rotate-key/retire done by the CLI reach a running hub within this
TICK_S = 1.0
PRUNE_S = 3600.0


def ack_capacity(device_id):
    """Seqs that fit in one ACK: 512 bytes less envelope (28 + id), upto (4) and the count byte."""
    return min(255, (m.MAX_MESSAGE - 28 - len(device_id) - 5) // 4)


def ack_bytes(device_id, boot, cmd_seq, seqs, signer):
    """The ACK message, built directly (the hot path: one per keypad per batch). Same bytes as
    messages.encode(Message(ACK, device_id, boot, cmd_seq, upto=0, seqs=seqs)) (checked by a test)."""
    dev = device_id.encode()
    return _ack(struct.pack("<BBBB", m.VERSION_1, m.ACK, 0, len(dev)) + dev, boot, cmd_seq, seqs, signer)


_ACK_FIXED = struct.Struct("<IIIB")  # boot, cmd_seq, upto, count
_ACK_ONE = struct.Struct("<IIIBI")  # ... and one seq: the usual ACK (a keypad waits for each event's ACK)


def _ack(head, boot, cmd_seq, seqs, signer):
    if len(seqs) == 1:
        body = head + _ACK_ONE.pack(boot & 0xFFFFFFFF, cmd_seq & 0xFFFFFFFF, 0, 1, seqs[0])
    else:
        body = head + _ACK_FIXED.pack(boot & 0xFFFFFFFF, cmd_seq & 0xFFFFFFFF, 0, len(seqs)) + struct.pack(
            "<%dI" % len(seqs), *seqs)
    return body + signer.mac(body)


class Hub:
    def __init__(self, store, rules=None, hall="", clock=time.time, batch_max=200,
                 reject_log_interval_s=300.0, max_queue=100000, device_log_days=90, checkpoint_s=1.0):
        self.store = store
        self.rules = rules or cases.Rules()
        self.hall = hall
        self.clock = clock
        # 'rated' hooks get attach.rated_case(): case_id, project_no, window_id, stars, replaced
        self.on_rated = []  # callables(case): after the commit that counted or replaced a rating
        self.on_rated_tx = []  # callables(conn, cases, now): inside that transaction, before its COMMIT
        self.on_unrated = []  # callables(case_dict): after a case was committed as unrated (SMS invitation)
        self.max_queue = max_queue
        self.device_log_days = device_log_days
        # SimpleQueue (C): put/get without Queue's Condition; there is one put per event and nothing joins it
        self._q = queue.SimpleQueue()
        self._signers = {}
        self._ack_head = {}  # device_id -> (ACK header bytes with the id, seqs per ACK)
        self._boot = {}  # device_id -> latest boot seen (commands carry it)
        self._links = {}  # device_id -> link it last spoke on
        self._fallback = {}  # transport -> link for keypads not heard from yet (add_link)
        self._unprompted = {}  # device_id -> tokens of PROMPTs that found no link (a serial keypad silent since start)
        self._unprompted_lock = threading.Lock()
        self._keys_loaded = 0.0
        self._keys_lock = threading.Lock()
        self._stopping = False
        self._overload_logged = 0.0
        self._stop_timer = threading.Event()
        self._timer = None
        self.checkpoint_s = checkpoint_s
        self._checkpointer = None
        self.writer = Writer(self, batch_max=batch_max, reject_log_interval_s=reject_log_interval_s)
        self.counters = {"received": 0, "rejected": 0, "overload": 0, "stopping": 0}

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self, timer=True):
        self.reload_keys()
        self.writer.start()
        self._checkpointer = Checkpointer(self.store, self.checkpoint_s).start()
        if timer:
            self._timer = threading.Thread(target=self._tick_loop, name="hub-timer", daemon=True)
            self._timer.start()
        return self

    def stop_intake(self):
        """Refuse new messages (counted as 'stopping'; keypads keep them and retransmit)."""
        self._stopping = True

    def stop(self, timeout=10.0):
        """Stop intake, commit and ACK what is queued, stop the writer. True when all was flushed."""
        self.stop_intake()
        self._stop_timer.set()
        if self._timer:
            self._timer.join(timeout=2)
        flushed = self.writer.stop(timeout)
        if self._checkpointer is not None:
            self._checkpointer.stop()
        return flushed

    def healthy(self, max_age_s=10.0):
        """For the systemd watchdog: the writer thread is alive and looping."""
        return self.writer.alive(max_age_s)

    def _tick_loop(self):
        last_keys, last_prune, failing = time.monotonic(), 0.0, None
        while not self._stop_timer.wait(TICK_S):
            try:
                self.tick()
                if time.monotonic() - last_prune > PRUNE_S:
                    self.prune()
                    last_prune = time.monotonic()
                if time.monotonic() - last_keys > KEY_RELOAD_S:
                    self.reload_keys()
                    last_keys = time.monotonic()
                if failing is not None:
                    log.info("prompt expiry recovered after_error=%r", failing)
                    failing = None
            except Exception as e:  # keep ticking: logged once, the next tick retries
                if failing is None:
                    log.error("prompt expiry failed, retrying every %ss error=%r", TICK_S, str(e))
                failing = str(e)

    # -- keys -------------------------------------------------------------------------------------
    def reload_keys(self):
        conn = self.store.connect()
        try:
            keys = devices.keys(conn)
            boots = dict(conn.execute("SELECT device_id, boot FROM devices WHERE boot IS NOT NULL").fetchall())
        finally:
            conn.close()
        with self._keys_lock:
            old = self._signers
            self._signers = {d: (old[d] if d in old and old[d]._key == k else HostSigner(k)) for d, k in keys.items()}
            for d, b in boots.items():
                if b is not None and b > self._boot.get(d, -1):
                    self._boot[d] = b
            self._keys_loaded = time.monotonic()

    def _signer(self, device_id):
        s = self._signers.get(device_id)
        if s is None and time.monotonic() - self._keys_loaded > 1.0:  # maybe added since: look once a second at most
            try:
                self.reload_keys()
            except Exception as e:
                log.debug("key reload failed error=%r", e)
            s = self._signers.get(device_id)
        return s

    def signer(self, device_id):
        return self._signers.get(device_id)

    # -- transport side ---------------------------------------------------------------------------
    def submit(self, raw, link):
        """Verify one raw message from `link` and queue it. Returns False when it was rejected or refused."""
        now = self.clock()
        self.counters["received"] += 1
        if self._stopping:
            self.counters["stopping"] += 1
            return False
        if self._q.qsize() >= self.max_queue:  # the writer is far behind (a failing disk): refuse, counted
            self.counters["overload"] += 1
            if time.monotonic() - self._overload_logged > 60:
                self._overload_logged = time.monotonic()
                log.error("intake refused: queue full max_queue=%d refused_total=%d (keypads keep and retransmit)",
                          self.max_queue, self.counters["overload"])
            return False
        # nearly all traffic is well-formed journaled events: the host-only fast path (fastdecode.py)
        # accepts those; anything else (or anything wrong) goes through the protocol decoder, which
        # gives the same Message or raises the ProtocolError that is counted and logged
        msg = _fast_decode(raw, self._signer)[1]
        if msg is None:
            seen = []

            def key_of(dev):
                seen.append(dev)
                return self._signer(dev)

            try:
                msg = m.decode(raw, key_of)  # peeks once, looks the key up, checks the MAC, decodes
                if m.is_command(msg.type):
                    raise ProtocolError("type", "a keypad sent a bridge command (0x%02x)" % msg.type)
            except ProtocolError as e:
                self.counters["rejected"] += 1
                detail = e.detail if e.code != "device" else "unknown or retired device"
                self._put(("reject", seen[0] if seen else None, e.code, detail, link, now))
                return False
        dev = msg.device_id
        if msg.boot > self._boot.get(dev, -1):
            self._boot[dev] = msg.boot
        self._links[dev] = link
        self._put(("msg", msg, raw, link, now))
        return True

    def reject(self, device_id, code, detail, link):
        """A transport-level rejection (a bad frame: crc, oversize, truncated): counted and logged like the hub's own."""
        self.counters["rejected"] += 1
        self._put(("reject", device_id, code, detail, link, self.clock()))

    def device_text(self, link, device_id, line):
        """Text a keypad printed outside frames (a traceback): kept as device log, never parsed."""
        if isinstance(line, (bytes, bytearray)):
            line = bytes(line).decode("utf-8", "replace")
        self._put(("text", device_id, getattr(link, "name", str(link)), line, self.clock()))

    def link_state(self, device_id, online, link):
        """A transport learnt that a keypad went online/offline (MQTT retained state, port gone)."""
        if online and link is not None:
            self._links[device_id] = link
        self._put(("link", device_id, bool(online), link, self.clock()))

    def _put(self, item):
        self._q.put(item)

    def backlog(self):
        """Items queued for the writer and not yet taken into a batch (transports pause reading above a limit)."""
        return self._q.qsize()

    # -- commands and jobs ------------------------------------------------------------------------
    def call(self, fn, timeout=30.0, transaction=True):
        """Run fn(conn, now) -> (result, effects) on the writer thread in one transaction; effects
        (commands, hooks) are done after COMMIT. Returns result or raises fn's/SQLite's error."""
        return self.writer.job(fn, timeout, transaction)

    def command(self, device_id, mtype, **fields):
        """Sign and send a command (PROMPT, CANCEL, IDENTIFY, ...) on the link the keypad last spoke on.
        The per-device command counter is persisted first. Returns True when handed to a link."""
        sent = self.call(lambda conn, now: (None, [("command", device_id, mtype, fields)]))
        return sent

    def add_link(self, transport, link):
        """The link to use for a keypad of `transport` ('mqtt') that has not spoken yet since start:
        MQTT delivers a command to the keypad's session even while it is away."""
        self._fallback[transport] = link

    def send_command(self, device_id, mtype, seq, fields, transport=None):
        """Encode and send (writer thread, after commit). False when the keypad has no link or key."""
        signer = self._signers.get(device_id)
        link = self._links.get(device_id) or self._fallback.get(transport)
        if signer is None or link is None:
            log.info("command not sent device=%s type=%s reason=%s", device_id, m.SCHEMA[mtype][0],
                     "no key" if signer is None else "no link yet")
            if signer is not None and mtype == m.PROMPT:  # sent when the keypad first speaks (writer._apply)
                with self._unprompted_lock:
                    self._unprompted.setdefault(device_id, set()).add(fields.get("token"))
            return False
        raw = m.encode(m.Message(mtype, device_id, self._boot.get(device_id, 0), seq, **fields), signer)
        return self._send(link, device_id, raw)

    def take_unprompted(self, device_id):
        """Tokens of PROMPTs to `device_id` that were not sent for want of a link (writer thread, once it speaks)."""
        if not self._unprompted:
            return ()
        with self._unprompted_lock:
            return self._unprompted.pop(device_id, ())

    def ack_messages(self, device_id, seqs, cmd_seq=0):
        """Signed ACK messages naming `seqs` (split to fit 512 bytes); [] when the key is gone."""
        signer = self._signers.get(device_id)
        if signer is None:
            return []
        boot = self._boot.get(device_id, 0)
        head = self._ack_head.get(device_id)
        if head is None:  # header + device id, and how many seqs fit: built once per keypad
            dev = device_id.encode()
            head = self._ack_head[device_id] = (struct.pack("<BBBB", m.VERSION_1, m.ACK, 0, len(dev)) + dev,
                                                ack_capacity(device_id))
        head, per = head
        if len(seqs) == 1:
            return [_ack(head, boot, cmd_seq, seqs, signer)]
        seqs = sorted(set(seqs))
        return [_ack(head, boot, cmd_seq, seqs[i:i + per], signer) for i in range(0, len(seqs), per)]

    def send_acks(self, acks):
        """acks: {(device_id, link): [seq, ...]}. A link with `send_many([(device_id, raw), ...])`
        gets one call per batch (one wake-up of its I/O thread); others get send() per message."""
        by_link = {}
        for (dev, link), seqs in acks.items():
            by_link.setdefault(link, []).extend((dev, raw) for raw in self.ack_messages(dev, seqs))
        n = 0
        for link, msgs in by_link.items():
            many = getattr(link, "send_many", None)
            if many is not None:
                try:
                    many(msgs)
                    n += len(msgs)
                except Exception as e:
                    log.info("send failed link=%s messages=%d error=%r", getattr(link, "name", "?"), len(msgs), e)
                continue
            n += sum(1 for dev, raw in msgs if self._send(link, dev, raw))
        return n

    def _send(self, link, device_id, raw):
        try:
            link.send(device_id, raw)
            return True
        except Exception as e:  # a link may be down; the keypad retransmits / the case can be finished again
            log.info("send failed device=%s link=%s error=%r", device_id, getattr(link, "name", "?"), e)
            return False

    # -- cases ------------------------------------------------------------------------------------
    def open_case(self, data, actor="case-api"):
        return self.call(lambda conn, now: cases.open_case(conn, data, now, actor))

    def finish_case(self, project_no, actor="case-api"):
        return self.call(lambda conn, now: cases.finish(conn, project_no, self.rules, now, actor))

    def cancel_case(self, project_no, actor="case-api"):
        return self.call(lambda conn, now: cases.cancel(conn, project_no, now, actor))

    def get_case(self, project_no):
        conn = self.store.connect()
        try:
            return cases.get(conn, project_no)
        finally:
            conn.close()

    def tick(self, now=None):
        """Expire prompts whose time is up (bridge clock). Tests pass `now`."""
        return self.call(lambda conn, t: (None, cases.expire(conn, self.rules, t if now is None else now)))

    def prune(self, now=None):
        """Drop device log lines older than device_log_days (text keypads print; the audit table is kept)."""
        def job(conn, t):
            cut = (t if now is None else now) - self.device_log_days * 86400
            return conn.execute("DELETE FROM device_log WHERE at < ?", (cut,)).rowcount, []
        return self.call(job)

    def stats(self):
        s = dict(self.counters)
        s.update(self.writer.stats())
        s["queue"] = self.backlog()
        return s

    def run_hooks(self, kind, case):
        for fn in list(self.on_rated if kind == "rated" else self.on_unrated):
            try:
                fn(case)
            except Exception:
                log.exception("hook failed kind=%s case=%s", kind, case.get("project_no"))
