# Firmware behaviour scenarios that run unchanged under CPython and real MicroPython.
#
# Each t_* function drives the keypad core (App on a FakeBoard) with a fake
# clock and raises AssertionError when the keypad does something a user or
# the bridge would notice as wrong. main() runs the named ones and prints
#   PASS <name>   or   FAIL <name>: <reason>
# test_scenarios.py runs them in-process on CPython and through
# firmware/virtual/mprun.mjs on MicroPython 1.29, and asserts every PASS.
import os
import struct
import sys

try:
    import fakeboard
except ImportError:  # CPython: tests/firmware is not on sys.path
    from tests.firmware import fakeboard

from pingjia.firmware import config, journal as J, run, ui
from pingjia.firmware.keys import Keys
from pingjia.protocol import framing, messages as M

MP = sys.implementation.name == "micropython"
KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
DEV = "KP-0001"
STAR_LEDS = 0x1F
_count = [0]
TMP = ["/tmp/"]


def fresh():
    """A new empty folder for one keypad's files."""
    _count[0] += 1
    p = "%spjt%d" % (TMP[0], _count[0])
    try:
        os.mkdir(p)
    except OSError:
        pass
    for name in os.listdir(p):
        os.remove(p + "/" + name)
    return p + "/"


def size(path):
    try:
        return os.stat(path)[6]
    except OSError:
        return -1


def read(path):
    with open(path, "rb") as f:
        return f.read()


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)


class Rig:
    """One keypad: App + FakeBoard + a bridge-side view of its serial line or MQTT."""

    def __init__(self, root=None, reason_keys=0, transport="serial", **cfg):
        self.root = root or fresh()
        c = {"device_id": DEV, "key": KEY_HEX, "transport": transport}
        if transport == "mqtt":
            c["hall"] = "h1"
            c["broker"] = {"host": "broker.local"}
        c.update(cfg)
        self.cfg, err = config.validate(c)
        assert err is None, err
        self.b = fakeboard.FakeBoard(self.root, reason_keys)
        self.app = run.build(self.b, self.cfg, None, 0)
        self.dec = framing.Decoder()
        self.cseq = 0
        self.seen = set()
        self.step(0)

    def step(self, dt=10):
        self.b.t += dt
        self.app.step(self.b.t)

    def run(self, ms, dt=10):
        for _ in range(ms // dt):
            self.step(dt)

    def down(self, stars):
        self.b.raw |= 1 << (stars - 1)
        self.step()

    def up(self):
        self.b.raw = 0
        self.run(100)

    def press(self, stars):
        self.down(stars)
        self.up()

    def sent(self):
        """Messages the keypad sent since the last call, decoded with the host protocol code."""
        out = []
        if self.app.link.name == "mqtt":
            pubs = self.b.broker["pubs"]
            for topic, raw, _r, _q in pubs:
                if topic.endswith("/up"):
                    out.append(M.decode(raw, KEY))
            del pubs[:]
            return out
        for kind, v in self.dec.feed(bytes(self.b.outbuf)):
            assert kind == framing.FRAME, "keypad wrote something that is not a good frame"
            out.append(M.decode(v, KEY))
        self.b.outbuf = bytearray()
        return out

    def events(self):
        """Journaled events sent for the first time since the last call (retransmits left out)."""
        out = []
        for m in self.sent():
            if m.type in M.JOURNALED and m.seq not in self.seen:
                self.seen.add(m.seq)
                out.append(m)
        return out

    def cmd(self, mtype, key=KEY, boot=None, seq=None, dev=DEV, **f):
        self.cseq += 1
        raw = M.encode(M.Message(mtype, dev, self.app.boot if boot is None else boot, seq or self.cseq, **f), key)
        if self.app.link.name == "mqtt":
            self.b.broker["down"].append(raw)
        else:
            self.b.inbuf.extend(framing.encode(raw))
        self.step()
        return raw

    def ack(self, upto=0, seqs=(), boot=None):
        return self.cmd(M.ACK, boot=boot, seq=0, upto=upto, seqs=list(seqs))

    def prompt(self, token="C7K2M9QX", timeout_s=60, reason_required=0):
        return self.cmd(M.PROMPT, token=token, timeout_s=timeout_s, reason_required=reason_required)


KEY_HEX = "".join("%02x" % b for b in KEY)


# ------------------------------------------------------------------ keys
def t_debounce_leading_edge():
    k = Keys(lock_ms=40)
    new, _ = k.poll(100000, 0b100)  # first press after a long idle
    assert new == 0b100, "first press after idle must count at once"
    for t, raw in ((100005, 0), (100010, 0b100), (100020, 0), (100030, 0b100)):  # bounce
        new, _ = k.poll(t, raw)
        assert new == 0, "contact bounce inside lock_ms must not make a second press"
    k.poll(100100, 0)  # released after the lock
    new, _ = k.poll(100200, 0b100)
    assert new == 0b100, "a real second press counts"
    new, _ = k.poll(100210, 0b110)
    assert new == 0, "a second star key while one is held is a chord, not a rating"


def t_maintenance_combo():
    r = Rig()
    r.sent()
    r.b.raw = 0x01
    r.step()
    r.b.raw = 0x11
    r.run(4900)
    assert r.app.maint_until == 0, "maintenance must need the full 5 s hold"
    r.run(200)
    assert r.b.t < r.app.maint_until, "holding 1+5 for 5 s enters maintenance"
    assert r.b.led & ui.GREEN and r.b.led & 0x0F == 1, "maintenance shows the id's last digit (1) and green"
    logs = [m for m in r.sent() if m.type == M.LOG]
    assert logs and DEV in logs[0].text and "link" in logs[0].text, "maintenance reports id and link state"
    ev = r.events()
    assert len(ev) == 0, "the combination's second key is no rating"


# ------------------------------------------------------------------ state machine
def t_idle_press_is_unsolicited():
    r = Rig()
    r.sent()
    before = r.b.led
    r.down(4)
    assert r.b.led != before, "LEDs change in the same loop pass as the press"
    assert r.b.led & ui.RED and r.b.led & 0x08, "not now: red + the pressed star"
    ev = r.events()
    assert len(ev) == 1 and ev[0].type == M.UNSOLICITED and ev[0].stars == 4, ev
    r.up()
    r.run(1200)
    assert not r.b.led & ui.RED, "not-now signal ends"


def t_prompt_rating_flow():
    r = Rig(after_ms=10000)
    r.prompt("C7K2M9QX", timeout_s=60)
    r.run(300)
    seen = set()
    for _ in range(10):
        r.step(50)
        seen.add(r.b.led & STAR_LEDS)
    assert len(seen) >= 3, "prompted: a light runs along the stars"
    r.sent()
    r.down(5)
    assert r.b.led & STAR_LEDS == 0x1F and r.b.led & ui.GREEN, "thank you: five stars + green at once"
    r.up()
    r.run(1400)
    r.press(4)  # a different key: the bridge decides grace vs audit
    ev = r.events()
    assert [e.type for e in ev] == [M.RATING, M.RATING], ev
    a, b = ev
    assert (a.stars, a.token, a.nth, a.dt_ms) == (5, "C7K2M9QX", 1, 0), a
    assert (b.stars, b.nth) == (4, 2) and 1400 <= b.dt_ms <= 1700, b
    assert b.seq == a.seq + 1
    r.run(10000)  # after_ms after the first press the prompt closes
    assert not r.app.token
    r.press(3)
    ev = r.events()
    assert ev[0].type == M.UNSOLICITED, "after the prompt closed a press is unsolicited"


def t_prompt_timeout_and_cancel():
    r = Rig()
    r.prompt("T1", timeout_s=5)
    r.run(5100)
    assert not r.app.token, "prompt ends at its timeout"
    assert r.b.led & STAR_LEDS == 0
    r.prompt("T2", timeout_s=60)
    r.cmd(M.CANCEL, token="OTHER")
    assert r.app.token == "T2", "CANCEL for another case leaves the prompt"
    r.cmd(M.CANCEL, token="T2")
    assert not r.app.token, "CANCEL ends the prompt"
    r.sent()
    r.press(5)
    assert r.events()[0].type == M.UNSOLICITED


def t_reason_with_star_keys():
    r = Rig(grace_ms=3000, reason_ms=8000)
    r.prompt("C1")
    r.sent()
    r.press(1)
    r.press(2)  # within grace: a correction, still a rating
    r.run(3000)
    assert r.b.led & ui.RED, "after the grace: reason choice shows red"
    r.press(3)  # now key 3 = reasons[2]
    ev = r.events()
    assert [e.type for e in ev] == [M.RATING, M.RATING, M.REASON], ev
    assert ev[2].codes == (503,) and ev[2].ref_seq == ev[1].seq, ev[2]
    r.run(3000)
    r.press(4)
    ev = r.events()
    assert ev[0].type == M.RATING and ev[0].nth == 3, "after the reason, star keys rate again (audit)"


def t_reason_keys_board():
    r = Rig(reason_keys=5)
    hello = [m for m in r.sent() if m.type == M.HELLO][0]
    assert hello.caps & 1
    r.prompt("C1")
    r.press(2)
    r.b.raw = 1 << 6  # reason key 2
    r.step()
    r.b.raw = 0
    r.run(100)
    r.b.raw = 1 << 5  # reason key 1
    r.step()
    r.b.raw = 0
    r.run(100)
    ev = r.events()
    assert [e.type for e in ev] == [M.RATING, M.REASON, M.REASON], ev
    assert ev[1].codes == (502,) and ev[2].codes == (501,) and ev[1].ref_seq == ev[0].seq
    r.press(5)
    r.b.raw = 1 << 5
    r.step()
    r.b.raw = 0
    r.run(100)
    ev = r.events()
    assert [e.type for e in ev] == [M.RATING], "no reason after a good rating"


def t_identify_time_config_query():
    r = Rig()
    r.cmd(M.IDENTIFY, seconds=2)
    seen = set()
    for _ in range(20):
        r.step(50)
        seen.add(r.b.led)
    assert 0 in seen and 0xFF in seen, "identify blinks everything"
    r.run(2000)
    assert r.b.led != 0xFF
    r.cmd(M.TIME, unix_s=1795305600)
    assert r.app.clock_offset is not None
    r.cmd(M.CONFIG, items=[("heartbeat_s", "5"), ("nonsense", "1")])
    assert r.app.cfg["heartbeat_s"] == 5
    r.sent()
    r.run(5010)
    st = [m for m in r.sent() if m.type == M.STATUS]
    assert st, "the new heartbeat period is used"
    r.cmd(M.QUERY)
    got = [m.type for m in r.sent()]
    assert got[:2] == [M.HELLO, M.STATUS], got


def _blue_share(r, ms=4000):
    """Fraction of loop passes with the blue (link) LED on over `ms`."""
    on = n = 0
    for _ in range(ms // 50):
        r.step(50)
        n += 1
        if r.b.led & ui.BLUE:
            on += 1
    return on / n


def t_hello_and_status_fields():
    r = Rig()
    assert _blue_share(r) == 1.0, "online: blue steady"
    got = r.sent()
    assert got[0].type == M.HELLO and got[0].fw and got[0].boot == r.app.boot, got
    st = got[1]
    assert st.type == M.STATUS and st.journal_cap == 500 and st.flags == 0, st
    r.press(3)
    r.run(12000)  # unacknowledged for > offline_ms: offline
    assert not r.app.online
    assert _blue_share(r) < 0.2, "offline: blue only blinks briefly"
    r.run(30000)
    st = [m for m in r.sent() if m.type == M.STATUS][-1]
    assert st.flags & M.ST_OFFLINE and st.journal_depth == 1 and st.uptime_s >= 30, st
    if MP:
        assert st.free_heap > 0


# ------------------------------------------------------------------ delivery
def t_event_on_flash_before_it_is_sent():
    r = Rig()
    r.sent()
    seen = []
    write = r.b.write

    def checking_write(data):
        # at the moment a frame goes out, its event must already be in the journal file
        on_disk = [struct.unpack_from("<I", b, 0)[0] for k, b, _e in J.scan(read(r.root + J.JOURNAL))[0] if k == J.EVENT]
        for kind, v in framing.Decoder().feed(data):
            m = M.decode(v, KEY)
            if m.type in M.JOURNALED:
                seen.append(m.seq)
                assert m.seq in on_disk, "seq %d sent before it was journaled" % m.seq
        write(data)

    r.b.write = checking_write
    r.press(3)
    r.prompt("C1")
    r.press(1)
    r.run(3100)
    r.press(2)
    assert len(seen) >= 3


def t_retransmit_until_ack_with_backoff():
    r = Rig()
    r.sent()
    r.down(5)
    times = [r.b.t]
    assert len(r.events()) == 1
    r.up()
    for _ in range(60000 // 50):
        r.step(50)
        for m in r.sent():
            if m.type in M.JOURNALED:
                times.append(r.b.t)
    assert len(times) >= 4, "unacknowledged events are sent again"
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert all(g2 > g1 for g1, g2 in zip(gaps, gaps[1:])), "backoff grows: %s" % gaps
    assert gaps[0] >= 1000
    seq = r.app.journal.pending()[0]
    r.ack(seqs=[seq])
    assert r.app.journal.depth() == 0
    r.run(120000, 100)
    assert not [m for m in r.sent() if m.type in M.JOURNALED], "no sends after the ACK"


def t_slow_bridge_gets_no_retransmit_storm():
    """A bridge that ACKs every event 3 s after it arrives (a hall-wide replay after an
    outage) is busy, not gone: the keypad learns the round trip and does not resend
    its whole window every second (that would only queue duplicates at the bridge)."""
    r = Rig(journal_cap=200)
    r.b.broker["up"] = False
    for i in range(64):
        r.app.journal.add(r.b.t, M.UNSOLICITED, stars=1 + i % 5)
    r.sent()
    arrived, sends = [], 0  # (time the bridge got it, seq)
    for _ in range(120000 // 50):
        r.step(50)
        for m in r.sent():
            if m.type in M.JOURNALED:
                sends += 1
                arrived.append((r.b.t, m.seq))
        due = [seq for t, seq in arrived if r.b.t - t >= 3000]
        if due:
            arrived = [(t, seq) for t, seq in arrived if r.b.t - t < 3000]
            r.ack(seqs=sorted(set(due))[:255])
        if not r.app.journal.depth():
            break
    assert r.app.journal.depth() == 0, "everything delivered"
    assert sends <= 64 * 3 // 2, "%d sends for 64 events: a retransmit storm" % sends


def t_window_drains_backlog():
    r = Rig(journal_cap=200)
    r.b.broker["up"] = False
    for i in range(60):
        r.app.journal.add(r.b.t, M.UNSOLICITED, stars=1 + i % 5)
    r.sent()
    r.step()
    first = r.events()
    assert len(first) == 16, "at most 16 events in flight"
    acked = 0
    while r.app.journal.depth():
        r.ack(upto=max(e.seq for e in first))
        first = r.events()
        acked += 1
        assert acked < 20
    assert r.app.journal.depth() == 0


def t_duplicate_and_stale_acks():
    r = Rig()
    r.press(3)
    r.press(4)
    seqs = r.app.journal.pending()
    r.ack(seqs=[seqs[0]])
    jsize = size(r.root + J.JOURNAL)
    r.ack(seqs=[seqs[0]])  # duplicate
    r.ack(upto=seqs[0])  # stale cumulative
    r.ack(seqs=[9999])  # unknown
    r.ack(seqs=[seqs[0]], boot=r.app.boot + 7)  # another boot: ACKs still harmless
    assert size(r.root + J.JOURNAL) == jsize, "stale ACKs write nothing"
    assert r.app.journal.pending() == seqs[1:], "the unacknowledged event stays"
    assert r.app.errors == 0
    r.ack(upto=seqs[1])
    assert r.app.journal.depth() == 0


def t_forged_and_replayed_commands_ignored():
    r = Rig()
    r.cmd(M.PROMPT, key=OTHER_KEY, token="FORGED", timeout_s=60)
    assert not r.app.token and r.app.rejected == 1, "bad MAC ignored"
    r.cmd(M.PROMPT, boot=r.app.boot + 1, token="OLDBOOT", timeout_s=60)
    assert not r.app.token, "another boot's command ignored"
    raw = r.prompt("GOOD")
    r.cmd(M.CANCEL, token="GOOD")
    r.b.inbuf.extend(framing.encode(raw))  # replay the captured PROMPT
    r.step()
    assert not r.app.token, "a replayed PROMPT is ignored"
    r.cmd(M.PROMPT, seq=1, token="LOWSEQ", timeout_s=60)
    assert not r.app.token, "a command seq not above the last is ignored"
    r.cmd(M.PROMPT, dev="KP-0002", token="OTHERDEV", timeout_s=60)
    assert not r.app.token
    r.b.inbuf.extend(b"\xf5garbage\x00\x01")
    r.run(500)
    r.prompt("NEXT")
    assert r.app.token == "NEXT", "a fresh command after garbage still works"
    ack = M.encode(M.Message(M.ACK, DEV, r.app.boot, 1, upto=0xFFFFFFFF), OTHER_KEY)
    r.press(2)
    r.b.inbuf.extend(framing.encode(ack))
    r.step()
    assert r.app.journal.depth() == 1, "a forged ACK trims nothing"


# ------------------------------------------------------------------ journal
def _build_journal(root, n=6):
    j = J.Journal(root, 0, sync=False)
    seqs = []
    for i in range(n):
        seqs.append(j.add(100 * i, M.RATING, stars=1 + i % 5, nth=1, token="TOK%d" % i))
    j.ack(700, seqs=[seqs[0]])
    seqs.append(j.add(800, M.REASON, ref_seq=seqs[1], codes=(501, 502)))
    j.close()
    return seqs


def t_journal_cut_at_every_byte():
    src = fresh()
    seqs = _build_journal(src)
    data = read(src + J.JOURNAL)
    state = [read(src + J.STATE + s) for s in "01" if size(src + J.STATE + s) > 0]
    recs, bad = J.scan(data)
    assert bad == 0 and len(recs) == len(seqs) + 1
    ends = [0] + [e for _k, _b, e in recs]
    ack_at = [k for k, _b, _e in recs].index(J.ACKREC)
    start = ends[-4]  # the last three records, cut at every byte
    d = fresh()
    for cut in range(start, len(data) + 1):
        for name in os.listdir(d):
            os.remove(d + name)
        write(d + J.JOURNAL, data[:cut])
        for i, s in enumerate(state):
            write(d + J.STATE + str(i), s)
        j = J.Journal(d, 0, sync=False)
        whole = [i for i in range(len(recs)) if ends[i + 1] <= cut]
        expect = []
        for i in whole:
            kind, body, _e = recs[i]
            if kind == J.EVENT:
                expect.append(struct.unpack_from("<I", body, 0)[0])
        if ack_at in whole:  # the ACK record is whole: seqs[0] acknowledged
            expect = [s for s in expect if s != seqs[0]]
        assert j.pending() == sorted(expect), "cut at %d: %s != %s" % (cut, j.pending(), expect)
        for s in j.pending():
            ev = j.event(s)
            assert ev[1] == s and (ev[4] != M.RATING or ev[9].startswith("TOK")), ev
        new = j.add(5, M.UNSOLICITED, stars=3)
        assert new > max(seqs), "cut at %d: seq %d reused" % (cut, new)
        j.close()
        j2 = J.Journal(d, 0, sync=False)  # the torn tail is gone: the new event survives
        assert new in j2.pending(), "cut at %d: event after recovery lost" % cut
        j2.close()


def t_journal_damage_in_the_middle():
    d = fresh()
    seqs = _build_journal(d)
    data = bytearray(read(d + J.JOURNAL))
    recs, _ = J.scan(bytes(data))
    e0 = recs[2][2]  # flip a byte inside the 4th record
    data[e0 + 6] ^= 0xFF
    write(d + J.JOURNAL, bytes(data))
    j = J.Journal(d, 0, sync=False)
    assert j.damaged == 1
    assert seqs[3] not in j.pending(), "the damaged record is dropped"
    assert seqs[2] in j.pending() and seqs[4] in j.pending() and seqs[-1] in j.pending(), "records before and after it are kept"


def t_seq_never_repeats_across_power_cuts():
    d = fresh()
    used = set()
    boots = []
    rnd = 12345
    for cycle in range(40):
        j = J.Journal(d, 0, block=8, sync=False)
        boots.append(j.boot)
        rnd = (rnd * 1103515245 + 12345) & 0x7FFFFFFF
        for i in range(rnd % 23):
            s = j.add(i, M.UNSOLICITED, stars=1)
            assert s not in used, "seq %d repeated in cycle %d" % (s, cycle)
            used.add(s)
            if i % 3 == 0:
                j.ack(i, upto=s)
        j._f and j._f.flush()  # power cut: no close
        data = read(d + J.JOURNAL)
        cut = rnd % 7
        if cut and len(data) > cut:
            write(d + J.JOURNAL, data[: len(data) - cut])  # torn tail
        if cycle % 5 == 4:  # cut while writing a state slot
            slot = d + J.STATE + str((j._gen + 1) & 1)
            write(slot, read(slot)[:5] if size(slot) > 0 else b"\x01")
        if cycle % 7 == 6:
            write(d + J.NEW, b"\xa5\x01partial")  # cut during compaction
    assert all(b2 > b1 for b1, b2 in zip(boots, boots[1:])), "boot counter always grows: %s" % boots
    assert len(used) > 100


def t_seq_survives_losing_both_state_slots():
    d = fresh()
    j = J.Journal(d, 0, sync=False)
    seqs = [j.add(i, M.UNSOLICITED, stars=1) for i in range(5)]
    j.ack(10, upto=seqs[-1])
    j.compact()  # all acknowledged: the journal holds only its MARK
    boot = j.boot
    j.close()
    for s in "01":
        if size(d + J.STATE + s) >= 0:
            os.remove(d + J.STATE + s)
    j = J.Journal(d, 0, sync=False)
    assert j.depth() == 0
    assert j.boot > boot, "boot counter survives via the journal's MARK"
    assert j.add(0, M.UNSOLICITED, stars=2) > max(seqs), "seq survives via the journal's MARK"


def t_age_survives_reboot():
    d = fresh()
    j = J.Journal(d, 0, sync=False)
    s = j.add(1000, M.UNSOLICITED, stars=2)
    j.add(61000, M.UNSOLICITED, stars=3)  # last seen at t=61 s on that boot
    j.close()
    j = J.Journal(d, 500, sync=False)  # reboot; 500 ms into the new boot
    t_local = j.event(s)[0]
    assert 2000 - t_local >= 60000 + 1500, "an event keeps the age it had (60 s) plus the new uptime"


def t_full_journal_policy():
    r = Rig(journal_cap=10)
    r.sent()
    for i in range(10):
        r.press(1 + i % 5)
    assert r.app.journal.depth() == 10 and r.app.journal.full
    r.run(1500)
    assert r.b.led & ui.RED, "idle with a full journal: red"
    r.down(5)
    assert r.app.journal.depth() == 10, "the 11th press is refused, nothing old is dropped"
    assert r.app.signal == ui.FULL and 300 in r.b.beeps, "the refused press is signalled"
    r.up()
    st = [m for m in r.sent() if m.type == M.STATUS]
    assert st and st[-1].flags & M.ST_JOURNAL_FULL, "STATUS says journal full"
    first = r.app.journal.pending()
    r.ack(upto=first[2])
    assert not r.app.journal.full
    r.press(5)
    assert r.app.journal.depth() == 8


def t_full_by_bytes_reuses_acked_space():
    d = fresh()
    j = J.Journal(d, 0, cap=100, max_bytes=600, sync=False)
    n = 0
    for i in range(200):  # acknowledged as we go: the file never fills
        s = j.add(i, M.RATING, stars=5, nth=1, token="ABCDEFGH")
        assert s, "space of acknowledged events must be reused (at %d)" % i
        j.ack(i, seqs=[s])
        n += 1
    assert size(d + J.JOURNAL) <= 600
    k = 0
    while j.add(0, M.RATING, stars=1, nth=1, token="ABCDEFGH"):
        k += 1
    assert 5 <= k < 100 and j.full, "unacknowledged events fill the bytes bound, then refused"
    live = j.pending()
    j.close()
    assert J.Journal(d, 0, sync=False).pending() == live, "all accepted events survive"


# ------------------------------------------------------------------ robustness
def t_exception_in_step_is_reported():
    r = Rig()
    r.sent()
    r.b.fail_keys = True
    r.run(100)
    assert r.app.errors >= 1 and "ValueError" in r.app.last_error
    logs = [m for m in r.sent() if m.type == M.LOG]
    assert len(logs) == 1 and logs[0].level == 3, "one LOG per second at most"
    r.b.fail_keys = False
    r.prompt("AFTER")
    r.press(5)
    assert [e.type for e in r.events()] == [M.RATING], "the loop recovered"
    r.run(30000, 100)
    st = [m for m in r.sent() if m.type == M.STATUS]
    assert "ValueError" in st[-1].last_error


def t_ctrl_c_outside_frame_only():
    r = Rig()
    # a PROMPT whose bytes contain 0x03 inside the frame is data, not Ctrl-C
    raw = M.encode(M.Message(M.PROMPT, DEV, r.app.boot, 3, token="\x03\x03", timeout_s=3), KEY)
    fr = framing.encode(raw)
    assert b"\x03" in fr
    r.b.inbuf.extend(fr)
    r.step()
    assert r.app.token == "\x03\x03"
    r.b.inbuf.extend(b"\r\x03\x03")
    try:
        r.step()
    except KeyboardInterrupt:
        return
    raise AssertionError("0x03 outside a frame must stop the app")


def t_config_errors():
    cases = [
        (None, config.E_MISSING),
        ("not json", config.E_JSON),
        ('{"device_id": "bad id!", "key": "%s", "transport": "serial"}' % KEY_HEX, config.E_DEVICE),
        ('{"device_id": "KP-1", "key": "abcd", "transport": "serial"}', config.E_KEY),
        ('{"device_id": "KP-1", "key": "%s", "transport": "lora"}' % KEY_HEX, config.E_TRANSPORT),
        ('{"device_id": "KP-1", "key": "%s", "transport": "mqtt"}' % KEY_HEX, config.E_NETWORK),
        ('{"device_id": "KP-1", "key": "%s", "transport": "serial", "heartbeat_s": 0}' % KEY_HEX, config.E_VALUE),
    ]
    for text, code in cases:
        d = fresh()
        if text is not None:
            write(d + config.PATH, text.encode())
        cfg, err = config.load(d)
        assert err and err[0] == code, (text, err)
        b = fakeboard.FakeBoard(d)
        app = run.build(b, cfg, err, 0)
        blinks = 0
        last = 0
        for t in range(0, 10000, 20):
            b.t = t
            app.step(t)
            if b.led & ui.RED and not last:
                blinks += 1
            last = b.led & ui.RED
        assert blinks >= code * 2, "error %d: red blinks its code (%d)" % (code, blinks)
        assert not b.led & ~ui.RED
        if code >= config.E_TRANSPORT:  # id and key usable: a signed STATUS says why
            dec = framing.Decoder()
            msgs = [M.decode(v, KEY) for k, v in dec.feed(bytes(b.outbuf)) if k == framing.FRAME]
            assert msgs and msgs[0].type == M.STATUS and msgs[0].flags & M.ST_CONFIG_ERROR and msgs[0].last_error, msgs


# ------------------------------------------------------------------ MQTT
def t_mqtt_session_and_reconnect():
    r = Rig(transport="mqtt")
    br = r.b.broker
    assert br["wills"][0][0] == "pj/h1/dev/KP-0001/state" and br["wills"][0][1] == b"offline" and br["wills"][0][2]
    assert ("pj/h1/dev/KP-0001/down", 1) in br["subs"]
    online = [p for p in br["pubs"] if p[0].endswith("/state")]
    assert online and online[0][1] == b"online" and online[0][2], "retained online"
    assert [m.type for m in r.sent()][:2] == [M.HELLO, M.STATUS]
    br["up"] = False  # broker goes away
    r.press(5)
    assert r.app.journal.depth() == 1, "offline presses are journaled"
    r.run(20000, 50)
    assert not r.app.link.connected and not r.app.online
    assert _blue_share(r) < 0.2, "offline: blue only blinks briefly"
    tries = br["connects"]
    assert 3 <= tries <= 8, "reconnect with backoff, not a storm (%d)" % tries
    br["up"] = True
    r.run(40000, 50)
    got = r.sent()
    assert [m.type for m in got][:3] == [M.HELLO, M.STATUS, M.UNSOLICITED], got
    assert got[2].age_ms >= 20000, "age counts the time offline"
    r.ack(upto=got[2].seq)
    assert r.app.journal.depth() == 0 and r.app.online


def t_frames_hex():
    # frames for the host side to decode with CPython's protocol code
    r = Rig(reason_keys=0)
    r.prompt("C7K2M9QX")
    r.press(1)
    r.run(3000)
    r.press(2)
    r.press(3)
    for line in _hex_frames(r):
        print(line)


def _hex_frames(r):
    data = bytes(r.b.outbuf)
    r.b.outbuf = bytearray()
    return ["FRAME " + "".join("%02x" % x for x in data)]


def main(names=None):
    g = globals()
    names = names or sorted(n for n in g if n.startswith("t_"))
    for n in names:
        try:
            g[n]()
            print("PASS", n)
        except Exception as e:  # report and go on
            print("FAIL %s: %s %s" % (n, e.__class__.__name__, e))
            if not MP:
                raise


if __name__ == "__main__" and MP:
    try:
        import mprun_args

        main(mprun_args.ARGV[1:])
    except ImportError:
        main()
