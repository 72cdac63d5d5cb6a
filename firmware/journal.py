# pingjia.firmware.journal: power-loss-safe event journal, boot counter and never-repeating seq.
#
# Files in the board's fs_root (the flashing tool never touches them):
#   pj_journal.bin   append-only records, one per event or ACK (see below)
#   pj_state.0/.1    two slots of: gen u32 | boot u32 | seq_hw u32 | crc32 u32
#
# Record  = 0xA5 | kind u8 | len u16 | body (len bytes) | crc32 u32
#           (CRC-32 over kind, len and body; integers little-endian)
# EVENT body (kind 1) = seq u32 | boot u32 | t_ms u32 | type u8 | stars u8 | nth u8 |
#                       dt_ms u32 | ref_seq u32 | token str8 | codes (u8 n + n x u16)
# ACK body   (kind 2) = boot u32 | t_ms u32 | upto u32 | n u8 | n x seq u32
# MARK body  (kind 3) = boot u32 | seq_hw u32   (first record after a compaction)
#
# Power loss at any byte: recovery reads records in order and checks each CRC.
# A torn or damaged record is skipped by scanning for the next 0xA5 that starts
# a record with a good CRC, so a torn last record is dropped and every earlier
# (and later intact) record is kept; the file is then rewritten (compaction).
#
# seq never repeats: seq_hw in the state file is a reservation, "every seq
# below it may have been used". A seq is used only when it is below the
# persisted seq_hw; reaching it persists seq_hw + _BLOCK first. At boot the next
# seq is max(seq_hw, highest seq in the journal + 1), so after a power cut the
# unused rest of a block is skipped (gaps, never repeats). The state is written
# alternately to two slot files with a generation number and CRC, so a cut
# while writing one slot leaves the other intact (no rename needed). Every
# compacted journal starts with a MARK record holding boot and seq_hw too, so
# even losing both state slots cannot make a seq (or boot) come round again.
#
# Trimming: an ACK appends an ACK record; acknowledged events are dead space.
# Compaction writes the live (unacknowledged) events to pj_journal.new, closes
# it and renames it over pj_journal.bin. Recovery after a cut in between: if
# .bin exists it is complete and .new is deleted; if only .new exists the cut
# fell after .bin was removed (FAT rename) and .new is complete.
#
# Full policy: at most `cap` unacknowledged events and `max_bytes` of file.
# When the file would grow past max_bytes, acknowledged space is reclaimed
# first (compaction). If the events still don't fit, or `cap` events are
# unacknowledged, add() refuses the event (returns 0): nothing already in the
# journal is ever dropped. `full` is then True until an ACK frees room; the app
# reports it (STATUS flag ST_JOURNAL_FULL, red LED) and signals refused presses.
import struct

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


from ..protocol.crc import builtin_module, crc32

# the C os module: on the WebAssembly port `import os` would load the Python
# os/ package frozen over it (1.4 KB of heap) for nothing the journal uses
os = builtin_module("os")

_MAGIC = const(0xA5)
EVENT = const(1)
ACKREC = const(2)
MARK = const(3)
_BLOCK = const(64)  # seqs reserved per state write
_EV = "<IIIBBBII"  # fixed part of an EVENT body (23 bytes)
_EVLEN = const(23)
_MASK = const(0xFFFFFFFF)
JOURNAL = "pj_journal.bin"
NEW = "pj_journal.new"
STATE = "pj_state."


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def _record(kind, body):
    head = struct.pack("<BBH", _MAGIC, kind, len(body))
    c = crc32(head[1:])
    c = crc32(body, c)
    return head + body + struct.pack("<I", c)


def pack_event(seq, boot, t_ms, mtype, stars=0, nth=0, dt_ms=0, ref_seq=0, token="", codes=()):
    """The EVENT body for one journaled event."""
    tok = token.encode() if isinstance(token, str) else token
    out = bytearray(struct.pack(_EV, seq, boot, t_ms & _MASK, mtype, stars, nth, dt_ms & _MASK, ref_seq))
    out.append(len(tok))
    out.extend(tok)
    out.append(len(codes))
    for c in codes:
        out.extend(struct.pack("<H", c))
    return bytes(out)


def unpack_event(body):
    """EVENT body -> (seq, boot, t_ms, type, stars, nth, dt_ms, ref_seq, token, codes)."""
    seq, boot, t, mtype, stars, nth, dt, ref = struct.unpack_from(_EV, body, 0)
    n = body[_EVLEN]
    p = _EVLEN + 1
    token = bytes(body[p : p + n]).decode()
    p += n
    k = body[p]
    codes = struct.unpack_from("<%dH" % k, body, p + 1) if k else ()
    return seq, boot, t, mtype, stars, nth, dt, ref, token, tuple(codes)


def scan(data):
    """Yield (kind, body, end_offset) for every intact record of `data`; skip damage.

    Also sets scan.damaged to the number of damaged stretches skipped.
    """
    n = len(data)
    pos = 0
    bad = 0
    out = []
    mv = memoryview(data)
    while pos < n:
        if data[pos] != _MAGIC or pos + 8 > n:
            pos = _resync(data, pos + 1, n)
            bad += 1
            continue
        ln = data[pos + 2] | (data[pos + 3] << 8)
        end = pos + 4 + ln + 4
        if end > n or crc32(mv[pos + 1 : pos + 4 + ln]) != struct.unpack_from("<I", data, pos + 4 + ln)[0]:
            pos = _resync(data, pos + 1, n)
            bad += 1
            continue
        out.append((data[pos + 1], bytes(mv[pos + 4 : pos + 4 + ln]), end))
        pos = end
    return out, bad


def _resync(data, pos, n):
    # next candidate record start (0xA5), or the end
    i = data.find(b"\xa5", pos)
    return n if i < 0 else i


class Journal:
    """The keypad's event journal. Time (`now`, ms) is always passed in.

    live: {seq: (t_local_ms, body)}: unacknowledged events, t_local on this
    boot's clock (events from earlier boots get a time that keeps the age they
    had when last seen, plus the time since this boot started).
    """

    def __init__(self, root, now=0, cap=500, max_bytes=0, block=_BLOCK, sync=None):
        self.root = root
        self.cap = cap
        self.max_bytes = max_bytes or cap * 96
        self.block = block
        self._sync = sync if sync is not None else hasattr(os, "fsync")
        self.live = {}
        self.full = False
        self.damaged = 0  # damaged stretches skipped at recovery
        self.refused = 0  # events refused because the journal was full
        self._f = None
        self._recover(now)

    # -- paths and state slots
    def _p(self, name):
        return self.root + name

    def _read_state(self):
        best = None
        for i in (0, 1):
            try:
                with open(self._p(STATE + str(i)), "rb") as f:
                    b = f.read()
            except OSError:
                continue
            if len(b) != 16 or crc32(b[:12]) != struct.unpack_from("<I", b, 12)[0]:
                continue
            st = struct.unpack_from("<III", b, 0)
            if best is None or st[0] > best[0]:
                best = st
        return best

    def _write_state(self):
        self._gen += 1
        b = struct.pack("<III", self._gen, self.boot, self._hw)
        with open(self._p(STATE + str(self._gen & 1)), "wb") as f:
            f.write(b + struct.pack("<I", crc32(b)))
            self._flush(f)

    def _flush(self, f):
        f.flush()
        if self._sync:
            os.fsync(f.fileno())

    # -- recovery
    def _recover(self, now):
        jp, np = self._p(JOURNAL), self._p(NEW)
        if _exists(np):
            if _exists(jp):
                _remove(np)  # compaction cut before its rename: .bin is whole
            else:
                os.rename(np, jp)  # cut between remove and rename: .new is whole
        try:
            with open(jp, "rb") as f:
                data = f.read()
        except OSError:
            data = b""
        recs, bad = scan(data)
        self.damaged = bad
        events = {}
        acked = set()
        upto = 0
        last = {}  # boot -> latest t_ms seen in its records
        top = 0
        mark_boot = mark_hw = 0
        for kind, body, _end in recs:
            if kind == MARK and len(body) == 8:
                b, h = struct.unpack_from("<II", body, 0)
                mark_boot, mark_hw = max(mark_boot, b), max(mark_hw, h)
                continue
            if kind == EVENT and len(body) > _EVLEN:
                seq, boot, t = struct.unpack_from("<III", body, 0)
                events[seq] = (boot, t, body)
                if seq > top:
                    top = seq
            elif kind == ACKREC and len(body) >= 13:
                boot, t, u, k = struct.unpack_from("<IIIB", body, 0)
                if u > upto:
                    upto = u
                for i in range(k):
                    acked.add(struct.unpack_from("<I", body, 13 + 4 * i)[0])
            else:
                continue
            if t > last.get(boot, -1):
                last[boot] = t
        st = self._read_state()
        self._gen, boot, hw = st if st else (0, 0, 0)
        boot, hw = max(boot, mark_boot), max(hw, mark_hw)
        # the boot counter also moves past every boot seen in the journal
        for b in last:
            if b > boot:
                boot = b
        self.boot = (boot + 1) & _MASK or 1
        self.next = max(hw, top + 1, 1)
        self._hw = self.next + self.block
        self._write_state()  # reserve before any use, and count this boot
        for seq in sorted(events):
            if seq <= upto or seq in acked:
                continue
            boot, t, body = events[seq]
            # age when last seen = last[boot] - t; keep it, and count from now
            self.live[seq] = (now - (last[boot] - t), body)
        self.size = len(data)
        if bad or self.size > len(self.live) * 64 + 512:
            self.compact()  # drop the damage and the acknowledged space now
        self.full = len(self.live) >= self.cap

    # -- writing
    def _append(self, rec):
        if self._f is None:
            self._f = open(self._p(JOURNAL), "ab")
        self._f.write(rec)
        self._flush(self._f)
        self.size += len(rec)

    def compact(self):
        """Rewrite the journal with only the unacknowledged events (atomic rename)."""
        self.close()
        jp, np = self._p(JOURNAL), self._p(NEW)
        mark = _record(MARK, struct.pack("<II", self.boot, self._hw))
        size = len(mark)
        with open(np, "wb") as f:
            f.write(mark)  # the high-water mark survives even if both state slots are lost
            for seq in sorted(self.live):
                rec = _record(EVENT, self.live[seq][1])
                f.write(rec)
                size += len(rec)
            self._flush(f)
        try:
            os.rename(np, jp)
        except OSError:  # a filesystem whose rename won't replace (FAT)
            _remove(jp)
            os.rename(np, jp)
        self.size = size

    def add(self, now, mtype, stars=0, nth=0, dt_ms=0, ref_seq=0, token="", codes=()):
        """Journal a new event; returns its seq, or 0 when the journal is full (refused)."""
        if len(self.live) >= self.cap:
            return self._refuse()
        seq = self.next
        if seq >= self._hw:
            self._hw = seq + self.block
            self._write_state()
        body = pack_event(seq, self.boot, now, mtype, stars, nth, dt_ms, ref_seq, token, codes)
        rec = _record(EVENT, body)
        if self.size + len(rec) > self.max_bytes:
            self.compact()  # reuse acknowledged space first
            if self.size + len(rec) > self.max_bytes:
                return self._refuse()
        self._append(rec)  # on flash before anything is sent
        self.next = seq + 1
        self.live[seq] = (now, body)
        self.full = len(self.live) >= self.cap
        return seq

    def _refuse(self):
        self.full = True
        self.refused += 1
        return 0

    def ack(self, now, upto=0, seqs=()):
        """Drop acknowledged events; returns how many were live. Stale ACKs write nothing."""
        gone = [s for s in self.live if s <= upto] if upto else []
        for s in seqs:
            if s in self.live and s not in gone:
                gone.append(s)
        if not gone:
            return 0
        body = bytearray(struct.pack("<IIIB", self.boot, now & _MASK, 0, len(gone) if len(gone) < 256 else 0))
        if len(gone) >= 256:  # too many to list: they are all <= max, name them by upto
            body = bytearray(struct.pack("<IIIB", self.boot, now & _MASK, upto, 0))
        else:
            for s in gone:
                body.extend(struct.pack("<I", s))
        self._append(_record(ACKREC, bytes(body)))
        for s in gone:
            del self.live[s]
        self.full = len(self.live) >= self.cap
        return len(gone)

    # -- reading
    def depth(self):
        return len(self.live)

    def pending(self):
        """Unacknowledged seqs, oldest first."""
        return sorted(self.live)

    def event(self, seq):
        """(t_local_ms, seq, boot, t_ms, type, stars, nth, dt_ms, ref_seq, token, codes) or None."""
        e = self.live.get(seq)
        if e is None:
            return None
        return (e[0],) + unpack_event(e[1])

    def close(self):
        if self._f is not None:
            self._f.close()
            self._f = None
