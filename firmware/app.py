# pingjia.firmware.app: the keypad core; App.step(now_ms) does one main-loop pass.
#
# One step: link supervision -> bridge commands -> keys -> timers -> delivery
# (send / retransmit journaled events) -> heartbeat -> LEDs. Every part runs
# inside its own try/except: an exception is counted, kept as last_error,
# reported (LOG message, STATUS) and the loop goes on. KeyboardInterrupt (the
# flashing tool's Ctrl-C) is not an Exception and ends the loop.
#
# States (see docs/FIRMWARE.md):
#   idle      a star press is sent as UNSOLICITED (audit only); LEDs say "not now"
#   prompted  PROMPT(token, timeout) opens the case's rating; LEDs invite
#   rated     every press while the prompt is open is a RATING with the token,
#             nth (1 = first press) and dt_ms since the first press: the bridge
#             decides mis-press grace and audit. The prompt closes after_ms after
#             the first press (or at its timeout, or on CANCEL).
#   reason    after 1-2 stars: reason keys (bits 5..) send REASON(ref_seq, code)
#             for reason_ms; on keypads without reason keys the star keys pick
#             reasons[0..4] once the mis-press grace (grace_ms) has passed.
# Every event is appended to the journal before it is sent.
import gc
import random

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


from ..protocol import messages as M
from ..protocol.auth import Signer
from ..protocol.errors import ProtocolError
from . import ui
from .keys import Keys, STARS
from .version import VERSION

_WINDOW = const(16)  # events in flight before their ACK
_RT_BASE_MS = const(1000)  # retransmit timeout: max(1 s, 2 x smoothed ACK round trip),
# doubling per timeout to 60 s, +0..25 % jitter; only events whose own timer ran out are resent
_RT_MAX_MS = const(60000)
_MAINT_MS = const(10000)
_LOG_GAP_MS = const(1000)  # at most one LOG for errors per second


class App:
    def __init__(self, board, cfg, link, journal=None, err=None, now=0):
        self.board = board
        self.cfg = cfg
        self.link = link
        self.journal = journal
        self.err = err  # (blink code, text) when the config is unusable
        self.dev = cfg.get("device_id") or "?"
        key = cfg.get("key")
        # config.validate() turns the key into bytes only once device_id passed
        self.signer = Signer(key) if isinstance(key, bytes) and len(key) == 32 else None
        self.boot = journal.boot if journal else 0
        self.board_name = getattr(board, "name", None) or _platform()
        nreason = getattr(board, "reason_keys", 0)
        self.reason_keys = nreason
        via = cfg.get("reason_via_stars")
        self.reason_stars_cfg = (not nreason) if via is None else bool(via)
        self.keys = Keys(cfg.get("lock_ms", 40), cfg.get("combo_ms", 5000))
        self.t0 = now
        # prompt / rating state
        self.token = ""
        self.prompt_end = 0
        self.reason_required = 0
        self.nth = 0
        self.first_ms = 0
        self.last_stars = 0
        self.thanks_until = 0
        self.reason_from = self.reason_until = 0
        self.reason_ref = 0
        self.reason_stars = False
        # signals
        self.signal = 0
        self.signal_until = 0
        self.signal_stars = 0
        self.identify_until = 0
        self.maint_until = 0
        self._leds = -1
        # commands
        self.cmd_seq = 0
        self.rejected = 0  # commands that failed MAC/decoding
        self.stale = 0  # commands for another boot or replayed
        # delivery
        self.inflight = {}  # seq -> [when last sent, times sent]
        self.srtt = 0  # smoothed ACK round trip (ms) of events sent once; 0 = no sample yet
        self.backoff = _RT_BASE_MS
        self.rt_due = 0
        self.progress_t = now
        self.online = False
        self._gen = 0
        self.next_status = 0
        self._full_told = False
        self.clock_offset = None  # unix_s - uptime_s, from TIME (display only)
        # errors
        self.errors = 0
        self.last_error = err[1] if err else ""
        self._log_t = -_LOG_GAP_MS
        self.sent = 0

    # ---------------------------------------------------------------- loop
    def step(self, now):
        """One main-loop pass at time `now` (ms)."""
        if self.err:
            self._step_error(now)
            return
        self._guard(self._link_step, now, "link")
        self._guard(self._keys_step, now, "keys")
        self._guard(self._timers, now, "timers")
        self._guard(self._deliver, now, "deliver")
        self._guard(self._heartbeat, now, "status")
        self._guard(self._show, now, "leds")

    def _guard(self, fn, now, where):
        try:
            fn(now)
        except Exception as e:
            self.fault(now, where, e)

    def fault(self, now, where, e):
        """Count an exception, keep it as last_error, report it (rate-limited)."""
        self.errors += 1
        self.last_error = ("%s: %s %s" % (where, e.__class__.__name__, e))[:80]
        if now - self._log_t >= _LOG_GAP_MS:
            self._log_t = now
            try:
                self.log(3, self.last_error)
            except Exception:
                pass

    def _step_error(self, now):
        # Config unusable: show the blink code, say why on the console every 10 s,
        # keep reading the serial line (Ctrl-C from the flashing tool) and, when
        # the id and key are usable, send a signed STATUS with ST_CONFIG_ERROR.
        if self.link is not None:
            self.link.poll(now)
        if now >= self.next_status:
            self.next_status = now + 10000
            print("pingjia: config error %d: %s" % self.err)
            if self.signer is not None and self.link is not None:
                self._send(self._status(now))
        self._show(now)

    # ---------------------------------------------------------------- link + commands
    def _link_step(self, now):
        self.link.supervise(now)
        for raw in self.link.poll(now):
            self.command(raw, now)

    def command(self, raw, now):
        """Handle one raw message from the bridge."""
        try:
            msg = M.decode(raw, self.signer)
        except ProtocolError:
            self.rejected += 1
            return
        if msg.device_id != self.dev or not M.is_command(msg.type):
            self.rejected += 1
            return
        t = msg.type
        if t == M.ACK:  # accepted whatever its boot/seq: it only names committed events
            if self.journal.ack(now, msg.upto, msg.seqs):
                clean = False
                for s in list(self.inflight):
                    if s not in self.journal.live:
                        sent, tries = self.inflight.pop(s)
                        if tries == 1:  # Karn: a resent event's ACK can't tell which send it answers
                            rtt = now - sent
                            self.srtt = rtt if not self.srtt else (7 * self.srtt + rtt) // 8
                            clean = True
                if clean:  # else keep the backed-off timeout until a clean sample comes
                    self.backoff = self.rto()
                self.rt_due = now + self.backoff
                self.progress_t = now
            return
        if msg.boot != self.boot or msg.seq <= self.cmd_seq:
            self.stale += 1  # for another boot, or replayed
            return
        self.cmd_seq = msg.seq
        if t == M.PROMPT:
            self.token = msg.token
            self.prompt_end = now + (msg.timeout_s or 60) * 1000
            self.reason_required = msg.reason_required
            self.nth = 0
            self.thanks_until = self.reason_until = self.signal_until = 0
            self.board.beep(1500, 50)
        elif t == M.CANCEL:
            if not msg.token or msg.token == self.token:
                self.token = ""
                self.reason_until = self.thanks_until = 0
        elif t == M.IDENTIFY:
            self.identify_until = now + msg.seconds * 1000
        elif t == M.TIME:
            self.clock_offset = msg.unix_s - (now - self.t0) // 1000
        elif t == M.CONFIG:
            self._config(msg.items)
        elif t == M.QUERY:
            self.hello(now)

    def _config(self, items):
        from . import config  # only here: the module is not kept in RAM after boot

        for k, v in items:
            try:
                self.cfg[k] = config.check_int(k, v)
            except ValueError as e:
                self.log(3, "config %s" % e)
        self.keys.lock_ms = self.cfg["lock_ms"]
        self.keys.combo_ms = self.cfg["combo_ms"]
        self.next_status = 0  # report the new state now

    # ---------------------------------------------------------------- keys
    def _keys_step(self, now):
        new, combo = self.keys.poll(now, self.board.keys())
        if combo:
            self._maintenance(now)
        if new & STARS:
            self.press(now, _lowest(new & STARS) + 1)
        if new >> 5:
            self.reason_key(now, _lowest(new >> 5))

    def press(self, now, stars):
        """A star key went down (stars 1..5)."""
        j = self.journal
        if self.reason_stars and self.reason_from <= now < self.reason_until:
            self._reason(now, self.cfg["reasons"][(stars - 1) % len(self.cfg["reasons"])])
            return
        if not self.token:
            seq = j.add(now, M.UNSOLICITED, stars=stars)
            if seq:
                self._flash(now, ui.NOT_NOW, 1000, 1 << (stars - 1))
                self.board.beep(400, 150)
                self._send_event(seq, now)
            else:
                self._full(now)
            return
        nth = self.nth + 1
        first = self.first_ms if self.nth else now
        seq = j.add(now, M.RATING, stars=stars, nth=nth, dt_ms=now - first, token=self.token)
        if not seq:
            self._full(now)
            return
        if nth == 1:
            self.first_ms = now
            self.prompt_end = min(self.prompt_end, now + self.cfg["after_ms"])
        self.nth = nth
        self.last_stars = stars
        self.thanks_until = now + self.cfg["thanks_ms"]
        self.signal_until = 0
        self.board.beep(2000, 80)
        if stars <= 2 and (self.reason_keys or self.reason_stars_cfg):
            self.reason_ref = seq
            self.reason_stars = not self.reason_keys
            self.reason_from = now + (self.cfg["grace_ms"] if self.reason_stars else 0)
            self.reason_until = self.reason_from + self.cfg["reason_ms"] * (2 if self.reason_required else 1)
        else:
            self.reason_until = 0
        self._send_event(seq, now)

    def reason_key(self, now, index):
        """Reason key `index` (bit 5 + index) went down."""
        if self.reason_ref and not self.reason_stars and now < self.reason_until and index < len(self.cfg["reasons"]):
            self._reason(now, self.cfg["reasons"][index])

    def _reason(self, now, code):
        seq = self.journal.add(now, M.REASON, ref_seq=self.reason_ref, codes=(code,))
        if not seq:
            self._full(now)
            return
        if self.reason_stars:
            self.reason_until = 0  # one choice with the star keys
        self.thanks_until = now + self.cfg["thanks_ms"]
        self.board.beep(2000, 80)
        self._send_event(seq, now)

    def _full(self, now):
        self._flash(now, ui.FULL, 2000, 0)
        self.board.beep(300, 400)
        self.next_status = 0  # tell the bridge now

    def _flash(self, now, kind, ms, stars):
        self.signal = kind
        self.signal_until = now + ms
        self.signal_stars = stars

    def _maintenance(self, now):
        self.maint_until = now + _MAINT_MS
        self.identify_until = 0
        text = "pingjia %s fw %s board %s boot %d link %s %s journal %d/%d" % (
            self.dev, VERSION, self.board_name, self.boot, self.link.name,
            "up" if self.online else "down", self.journal.depth(), self.journal.cap)
        print(text)
        self.log(1, text)
        self.board.beep(1000, 300)

    # ---------------------------------------------------------------- timers
    def _timers(self, now):
        if self.token and now >= self.prompt_end:
            self.token = ""  # expired or done; the bridge knows the case's fate
        if self.reason_until and now >= self.reason_until:
            self.reason_until = 0
            self.reason_ref = 0

    # ---------------------------------------------------------------- delivery
    def _deliver(self, now):
        link = self.link
        fresh = self._gen != link.gen and link.connected
        if fresh:  # (re)connected: resend everything from the start
            self._gen = link.gen
            self.inflight = {}
            self.backoff = self.rto()
            self.progress_t = now
        online = link.connected and (not self.inflight or now - self.progress_t < self.cfg["offline_ms"])
        back = online and not self.online
        self.online = online
        if fresh or back:
            self.hello(now)  # introduce ourselves: HELLO + STATUS
        if not link.connected:
            return
        j = self.journal
        if self.inflight and now >= self.rt_due:
            for s in list(self.inflight):
                if now - self.inflight[s][0] < self.backoff:
                    continue  # sent recently (after an ACK moved the window): its own timer runs on
                if s in j.live and self._send_event(s, now, False):
                    continue
                del self.inflight[s]
            self.backoff = min(self.backoff * 2, _RT_MAX_MS)
            self.rt_due = now + self.backoff + random.getrandbits(8) * self.backoff // 1024
        if len(self.inflight) < _WINDOW and j.depth() > len(self.inflight):
            for s in j.pending():
                if len(self.inflight) >= _WINDOW:
                    break
                if s not in self.inflight:
                    self._send_event(s, now)

    def _send_event(self, seq, now, new=True):
        """Send journaled event `seq` with its current age; True when handed over."""
        if not self.link.connected:
            return False
        if new:
            if len(self.inflight) >= _WINDOW:
                return False  # the window fills again as ACKs arrive
            if not self.inflight:
                self.rt_due = now + self.backoff
                self.progress_t = now
        e = self.inflight.get(seq)
        self.inflight[seq] = [now, e[1] + 1 if e else 1]
        return self._send(self.event_message(seq, now))

    def rto(self):
        """Retransmit timeout: twice the smoothed ACK round trip, at least 1 s, at most 60 s.
        A bridge that is busy (a hall-wide replay after an outage) answers slowly but
        surely; resending sooner would only add duplicates to its queue."""
        r = 2 * self.srtt
        return _RT_BASE_MS if r < _RT_BASE_MS else (_RT_MAX_MS if r > _RT_MAX_MS else r)

    def event_message(self, seq, now):
        """The Message for journaled event `seq`, age_ms computed at `now`."""
        t_local, seq, boot, _t, mtype, stars, nth, dt, ref, token, codes = self.journal.event(seq)
        age = now - t_local if now > t_local else 0
        if mtype == M.RATING:
            return M.Message(mtype, self.dev, boot, seq, stars=stars, age_ms=age, token=token, nth=nth, dt_ms=dt)
        if mtype == M.REASON:
            return M.Message(mtype, self.dev, boot, seq, ref_seq=ref, age_ms=age, codes=codes)
        return M.Message(mtype, self.dev, boot, seq, stars=stars, age_ms=age)

    def _send(self, msg):
        ok = self.link.send(M.encode(msg, self.signer))
        if ok:
            self.sent += 1
        return ok

    # ---------------------------------------------------------------- status
    def hello(self, now):
        caps = 1 if (self.reason_keys or self.reason_stars_cfg) else 0
        self._send(M.Message(M.HELLO, self.dev, self.boot, 0, fw=VERSION, board=self.board_name, caps=caps))
        self._send(self._status(now))
        self.next_status = now + self.cfg.get("heartbeat_s", 30) * 1000

    def _heartbeat(self, now):
        if self.journal.full != self._full_told:
            self._full_told = self.journal.full
            self.next_status = 0  # journal filled up or has room again: tell the bridge now
        if now >= self.next_status and self.link.connected:
            self.next_status = now + self.cfg["heartbeat_s"] * 1000
            self._send(self._status(now))

    def flags(self):
        f = 0
        if self.journal is not None and self.journal.full:
            f |= M.ST_JOURNAL_FULL
        if not self.online:
            f |= M.ST_OFFLINE
        if self.err:
            f |= M.ST_CONFIG_ERROR
        return f

    def _status(self, now):
        j = self.journal
        rssi = getattr(self.board, "rssi", None)
        rssi = rssi() if rssi else None
        if rssi is None or not -128 <= rssi <= 126:
            rssi = M.RSSI_NONE
        err = self.last_error or (getattr(self.link, "last_error", "") if self.link else "")
        return M.Message(
            M.STATUS, self.dev, self.boot, 0,
            uptime_s=max(0, now - self.t0) // 1000,
            journal_depth=min(j.depth(), 0xFFFF) if j else 0,
            journal_cap=min(j.cap, 0xFFFF) if j else 0,
            free_heap=_mem_free(self.board),
            rssi=rssi, flags=self.flags(), last_error=err[:80])

    def log(self, level, text):
        if self.signer is not None and self.link is not None and self.link.connected:
            self._send(M.Message(M.LOG, self.dev, self.boot, 0, level=level, text=text[:200]))

    # ---------------------------------------------------------------- LEDs
    def _show(self, now):
        m = ui.leds(self, now)
        if m != self._leds:
            self._leds = m
            self.board.leds(m)

    def stop(self):
        """The loop is ending (Ctrl-C): LEDs off, journal closed, link closed."""
        try:
            self.board.leds(0)
        finally:
            if self.journal is not None:
                self.journal.close()
            if self.link is not None:
                self.link.close()


def _lowest(mask):
    i = 0
    while not mask & 1:
        mask >>= 1
        i += 1
    return i


def _mem_free(board):
    f = getattr(board, "mem_free", None) or getattr(gc, "mem_free", None)
    try:
        return min(int(f()), 0xFFFFFFFF) if f else 0
    except Exception:
        return 0


def _platform():
    import sys

    return sys.platform
