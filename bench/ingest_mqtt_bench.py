"""MQTT ingest bench: many simulated keypads -> Mosquitto -> bridge (Hub + SQLite) -> ACK.

    .venv/bin/python bench/ingest_mqtt_bench.py                 # throughput, 500 keypads, 3 rounds of 8 s
    .venv/bin/python bench/ingest_mqtt_bench.py --keypads 500 --seconds 10 --kind rating
    .venv/bin/python bench/ingest_mqtt_bench.py --mode replay   # outage replay, 500 x 200 events
    .venv/bin/python bench/ingest_mqtt_bench.py --mode replay --keypads 50 --events 40   # quick

Parts, each its own process: a real Mosquitto (generated passwd + ACL, the
bridge's limits), the bridge (bridge.hub.Hub over a SQLite file + the MQTT
transport, the same objects the service runs), and load processes that each
drive many keypads. Every keypad is a real MQTT client with its own TCP
connection, client id and credentials (no multiplexing of keypads onto one
connection); the load processes are selector loops over raw sockets speaking
MQTT 3.1.1 with pre-encoded, MAC-signed protocol messages, because 500 paho
clients would eat the CPU the bridge needs on a 2-core machine.

throughput: each keypad publishes one event (QoS 1) and waits for its ACK before
  the next (window 1). `--kind unsolicited` (default): presses made with no prompt,
  stored for audit (the leanest store path). `--kind rating`: every event is the
  rating of its own prompted case (set up beforehand, one case per event), so each
  goes the whole attach path: case by token, rating row, case state, outbox record;
  the store check then also counts one rating per case. Measured: events ACKed per second in a window after a
  warm-up; every ACK comes after the event's COMMIT (the hub's contract). Then
  the run drains and SQLite is checked: each sent (device, seq) stored, 0 lost,
  0 duplicated. Same-run baseline: the same keypads, same payloads, same
  closed loop, with the bridge replaced by an echo responder (a raw MQTT client
  that answers every event with an ACK-shaped message, no verify, no store):
  the broker's own pass-through rate. `--rounds` (default 3) alternates an echo
  phase and a bridge phase, each with fresh seqs (and fresh cases), so each
  round's ratio compares windows seconds apart on this shared machine, whose
  speed drifts by 2x over minutes; the median round is the figure. Per bridge
  phase it also prints CPU and context switches per event by thread and how the
  writer thread spent its time.
replay: the bridge has a session on the broker, then is down while every keypad
  holds `--events` journaled events and sends them as the firmware does (16 in
  flight, retransmit 1 s doubling to 60 s). Then the bridge starts; measured:
  time from starting the bridge process until every event is ACKed, then SQLite
  is checked (0 lost, 0 duplicated).
Bridge RSS (VmRSS / VmHWM) is read from /proc at the end.
"""
import argparse
import json
import multiprocessing as mp
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pingjia.bridge.broker import LocalBroker, device_password  # noqa: E402
from pingjia.protocol import messages, topics  # noqa: E402
from pingjia.protocol.auth import Signer  # noqa: E402

HALL = "bench"


# --- minimal MQTT 3.1.1 codec -------------------------------------------------------------------
def _varlen(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def _s(b):
    if isinstance(b, str):
        b = b.encode()
    return struct.pack("!H", len(b)) + b


def connect_packet(client_id, user, password, clean=True, keepalive=0, will=None):
    flags = (0x02 if clean else 0) | 0x80 | 0x40
    pl = _s(client_id)
    if will:
        wt, wp = will
        flags |= 0x04 | (1 << 3) | 0x20  # QoS 1, retained
        pl += _s(wt) + _s(wp)
    pl += _s(user) + _s(password)
    body = _s(b"MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive) + pl
    return b"\x10" + _varlen(len(body)) + body


def subscribe_packet(pid, topic, qos=1):
    body = struct.pack("!H", pid) + _s(topic) + bytes([qos])
    return b"\x82" + _varlen(len(body)) + body


def publish_packet(topic, payload, pid=0, qos=1, retain=False):
    body = _s(topic) + (struct.pack("!H", pid) if qos else b"") + payload
    return bytes([0x30 | (qos << 1) | (1 if retain else 0)]) + _varlen(len(body)) + body


def puback(pid_bytes):
    return b"\x40\x02" + pid_bytes


def parse(buf, start=0):
    """-> ([(header_byte, body memoryview-able bytes)], consumed)."""
    out = []
    i, n = start, len(buf)
    while n - i >= 2:
        mult, length, j = 1, 0, i + 1
        while True:
            if j >= n:
                return out, i
            b = buf[j]
            length += (b & 127) * mult
            mult *= 128
            j += 1
            if not b & 128:
                break
        if j + length > n:
            break
        out.append((buf[i], buf[j:j + length]))
        i = j + length
    return out, i


def publish_parts(h, body):
    """PUBLISH body -> (topic bytes, pid bytes or b'', payload)."""
    tl = (body[0] << 8) | body[1]
    topic = body[2:2 + tl]
    p = 2 + tl
    if h & 0x06:
        return topic, body[p:p + 2], body[p + 2:]
    return topic, b"", body[p:]


def ack_seqs(payload):
    """Seqs an ACK message covers (upto, seqs), read without the MAC check (bench side)."""
    if len(payload) < 6 or payload[1] != messages.ACK:
        return 0, ()
    pos = 4 + payload[3] + 8
    upto = struct.unpack_from("<I", payload, pos)[0]
    cnt = payload[pos + 4]
    return upto, struct.unpack_from("<%dI" % cnt, payload, pos + 5)


def make_keys(n):
    return {"KP-%04d" % (i + 1): bytes(((i * 131 + j * 7) ^ (i >> 8)) & 0xFF for j in range(32)) for i in range(n)}


def _connect_raw(host, port, pkt):
    s = socket.create_connection((host, port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(pkt)
    return s


def _read_until(s, buf, want_types, timeout=30):
    """Blocking read until packets of the wanted header types arrived (connect phase)."""
    s.settimeout(timeout)
    got = []
    while len(got) < len(want_types):
        data = s.recv(65536)
        if not data:
            raise ConnectionError("broker closed the connection")
        buf += data
        pk, used = parse(buf)
        del buf[:used]
        for h, body in pk:
            if h == 0x20 and body[1] != 0:
                raise ConnectionError("CONNACK refused rc=%d" % body[1])
            got.append(h)
    return buf


# --- load process: many keypads, one selector loop ---------------------------------------------
class RawKeypad:
    __slots__ = ("dev", "sock", "buf", "pkts", "next", "inflight", "acked", "backoff", "rt_due", "lat", "sent_seqs",
                 "last", "retx", "srtt")

    def __init__(self, dev, pkts):
        self.dev = dev
        self.pkts = pkts  # seq-1 -> PUBLISH packet
        self.next = 0
        self.inflight = {}  # seq -> first send time
        self.acked = 0
        self.buf = bytearray()
        self.backoff = 1.0
        self.rt_due = 0.0
        self.last = {}  # seq -> last send time (adaptive retransmit)
        self.retx = set()  # seqs sent more than once (no RTT sample from them: Karn)
        self.srtt = None
        self.lat = []
        self.sent_seqs = 0


def fleet_worker(args, devs, keys, q, go, start_ev=None):
    """Drive `devs` keypads; report results on queue q."""
    try:
        _fleet(args, devs, keys, q, go)
    except Exception as e:  # noqa: BLE001
        import traceback

        q.put({"error": "%r\n%s" % (e, traceback.format_exc())})


def _fleet(args, devs, keys, q, go):
    window, nev, seq0 = args["window"], args["events"], args.get("seq0", 0)
    kps = []
    for d in devs:
        up = topics.up(HALL, d).encode()
        signer = Signer(keys[d])
        pkts = []
        for seq in range(seq0 + 1, seq0 + nev + 1):  # kp.next, inflight, sent: counted from seq0
            if args.get("kind") == "rating":
                msg = messages.Message(messages.RATING, d, 1, seq, stars=rating_stars(d, seq, args["bad_share"]), age_ms=0,
                                       token=case_token(d, seq),
                                       nth=1, dt_ms=0)
            else:
                msg = messages.Message(messages.UNSOLICITED, d, 1, seq, stars=1 + seq % 5, age_ms=0)
            raw = messages.encode(msg, signer)
            pkts.append(publish_packet(up, raw, pid=1 + (seq % 65535)))
        kps.append(RawKeypad(d, pkts))
    sel = selectors.DefaultSelector()
    for kp in kps:
        will = (topics.state(HALL, kp.dev), topics.OFFLINE)
        s = _connect_raw(args["host"], args["port"], connect_packet(kp.dev, kp.dev, device_password(keys[kp.dev]), will=will)
                         + subscribe_packet(1, topics.down(HALL, kp.dev))
                         + publish_packet(topics.state(HALL, kp.dev), topics.ONLINE, pid=2, retain=True))
        kp.sock = s
    for kp in kps:
        kp.buf = _read_until(kp.sock, bytearray(), [0x20, 0x90, 0x40])
        kp.sock.setblocking(False)
        sel.register(kp.sock, selectors.EVENT_READ, kp)
    q.put({"ready": len(kps)})
    go.wait()
    t_start = args["t_start"].value
    while time.time() < t_start:
        time.sleep(0.001)
    m0, m1 = t_start + args["warmup"], t_start + args["warmup"] + args["seconds"]
    c0 = c1 = None
    dry = 0
    acked_total = 0
    stop_new = False
    rt_base, rt_max = args["rt_base"], args["rt_max"]
    now = time.monotonic()

    adaptive = args.get("rto", "adaptive") == "adaptive"
    period = args.get("period")  # paced mode (latency): each keypad sends one event every `period` s

    def fill(kp, now):
        out = []
        if period:
            if not kp.inflight and kp.next < nev and not stop_new and now >= kp.rt_due:
                kp.next += 1
                kp.inflight[kp.next] = now
                kp.rt_due = now + period  # next press time (retransmit not needed on loopback)
                out.append(kp.pkts[kp.next - 1])
            return out
        while len(kp.inflight) < window and kp.next < nev and not stop_new:
            kp.next += 1
            kp.inflight[kp.next] = now
            kp.last[kp.next] = now
            out.append(kp.pkts[kp.next - 1])
            if len(kp.inflight) == 1:
                kp.rt_due = now + kp.backoff
        return out

    def send(kp, data):
        try:
            n = kp.sock.send(data)
        except BlockingIOError:
            n = 0
        if n < len(data):
            kp.sock.setblocking(True)
            kp.sock.sendall(data[n:])
            kp.sock.setblocking(False)

    if period:  # spread the keypads evenly over one period
        for i, kp in enumerate(kps):
            kp.rt_due = now + period * (i + args.get("offset", 0.0)) / len(kps)
    for kp in kps:
        out = fill(kp, now)
        if out:
            send(kp, b"".join(out))
    last_rt = now
    deadline_drain = None
    while True:
        wall = time.time()
        if c0 is None and wall >= m0:
            c0 = acked_total
        if c1 is None and wall >= m1:
            c1 = acked_total
            dry = sum(1 for kp in kps if kp.next >= nev)
            if args["stop_after_window"]:
                stop_new = True
                deadline_drain = time.monotonic() + args["drain_s"]
        if stop_new or not args["stop_after_window"]:
            if all(not kp.inflight and (stop_new or kp.next >= nev) for kp in kps):
                break
        if deadline_drain and time.monotonic() > deadline_drain:
            break
        if args.get("max_s") and wall > t_start + args["max_s"]:
            break
        for key, _ in sel.select(0.0005 if period else 0.05):
            kp = key.data
            try:
                data = kp.sock.recv(262144)
            except BlockingIOError:
                continue
            if not data:
                raise ConnectionError("broker closed %s" % kp.dev)
            buf = kp.buf
            buf += data
            pk, used = parse(buf)
            del buf[:used]
            out = []
            now = time.monotonic()
            for h, body in pk:
                if h & 0xF0 != 0x30:
                    continue  # PUBACK / PINGRESP
                _topic, pid, payload = publish_parts(h, body)
                if pid:
                    out.append(puback(pid))
                upto, seqs = ack_seqs(payload)
                if seq0:
                    upto, seqs = max(0, upto - seq0), [x - seq0 for x in seqs]
                inf = kp.inflight
                hit = 0
                sample = False
                for s in seqs:
                    t = inf.pop(s, None)
                    if t is not None:
                        hit += 1
                        kp.lat.append(now - t)
                        kp.last.pop(s, None)
                        if s in kp.retx:
                            kp.retx.discard(s)
                        else:  # a clean RTT sample: update the estimate, end the backoff (as TCP does)
                            kp.srtt = now - t if kp.srtt is None else 0.875 * kp.srtt + 0.125 * (now - t)
                            sample = True
                if upto:
                    for s in [s for s in inf if s <= upto]:
                        kp.lat.append(now - inf.pop(s))
                        kp.last.pop(s, None)
                        kp.retx.discard(s)
                        hit += 1
                if hit:
                    kp.acked += hit
                    acked_total += hit
                    if adaptive:
                        if sample:
                            kp.backoff = 1.0
                    else:  # the firmware today: any ACK restarts the 1 s timer for the whole window
                        kp.backoff = rt_base
                        kp.rt_due = now + rt_base
            out += fill(kp, now)
            if out:
                send(kp, b"".join(out))
        now = time.monotonic()
        if period:
            for kp in kps:
                if not kp.inflight and now >= kp.rt_due:
                    out = fill(kp, now)
                    if out:
                        send(kp, b"".join(out))
            continue
        if now - last_rt > 0.1:
            last_rt = now
            for kp in kps:
                if adaptive and kp.inflight:
                    # per event: resend only what has waited longer than the RTO since its
                    # last send; RTO = max(base, 2 x smoothed RTT) x backoff (doubling, reset on ACK)
                    rto = max(rt_base, 2 * kp.srtt if kp.srtt else rt_base) * kp.backoff
                    due = [s for s in sorted(kp.inflight) if now - kp.last[s] >= rto]
                    if due:
                        send(kp, b"".join(kp.pkts[s - 1] for s in due))
                        for s in due:
                            kp.last[s] = now
                            kp.retx.add(s)
                        kp.backoff = min(kp.backoff * 2, rt_max / rt_base)
                    continue
                if kp.inflight and now >= kp.rt_due:  # firmware: whole window, backoff doubling
                    send(kp, b"".join(kp.pkts[s - 1] for s in sorted(kp.inflight)))
                    kp.rt_due = now + kp.backoff
                    kp.backoff = min(kp.backoff * 2, rt_max)
    t_end = time.time()
    lat = []
    for kp in kps:
        lat += kp.lat
    res = {"dry": dry, "acked": acked_total, "c0": c0, "c1": c1, "t_end": t_end, "inflight": sum(len(kp.inflight) for kp in kps),
           "sent": {kp.dev: kp.next - len(kp.inflight) for kp in kps}, "unacked": {kp.dev: sorted(kp.inflight) for kp in kps if kp.inflight},
           "lat": lat if args.get("keep_lat") else [], "nlat": len(lat)}
    for kp in kps:
        try:
            kp.sock.sendall(b"\xe0\x00")  # DISCONNECT
            kp.sock.close()
        except OSError:
            pass
    q.put(res)


def run_fleet(host, port, devs, keys, window, events, seconds, warmup, procs, stop_after_window=True, rt_base=1.0,
              rt_max=60.0, drain_s=30.0, keep_lat=False, max_s=None, on_ready=None, period=None, rto="adaptive",
              kind="unsolicited", bad_share=0.05, seq0=0):
    """Drive `devs` from `procs` load processes; returns merged results (each keypad's events are seqs
    seq0+1..; 'sent' counts the ones ACKed from seq0+1 on).

    The processes connect every keypad first, then all start together."""
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    go = ctx.Event()
    t_start = ctx.Value("d", 0.0)
    args = dict(host=host, port=port, window=window, events=events, seconds=seconds, warmup=warmup,
                stop_after_window=stop_after_window, rt_base=rt_base, rt_max=rt_max, drain_s=drain_s,
                keep_lat=keep_lat, max_s=max_s, t_start=t_start, period=period, rto=rto, kind=kind, bad_share=bad_share,
                seq0=seq0)
    parts = [devs[i::procs] for i in range(procs)]
    ps = [ctx.Process(target=fleet_worker, args=(dict(args, offset=i / float(procs)), part, keys, q, go))
          for i, part in enumerate(parts)]
    for p in ps:
        p.start()
    for _ in parts:
        r = q.get(timeout=300)
        if "error" in r:
            raise RuntimeError(r["error"])
    if on_ready:
        on_ready()
    t_start.value = time.time() + 0.1
    go.set()
    results = []
    while len(results) < len(parts):
        r = q.get(timeout=900)
        if "error" in r:
            raise RuntimeError(r["error"])
        results.append(r)
    for p in ps:
        p.join(10)
    merged = {"dry": sum(r.get("dry", 0) for r in results), "acked": sum(r["acked"] for r in results), "t_go": t_start.value, "t_end": max(r["t_end"] for r in results),
              "sent": {}, "unacked": {}, "lat": [], "inflight": sum(r["inflight"] for r in results)}
    if all(r["c0"] is not None and r["c1"] is not None for r in results):
        merged["window_events"] = sum(r["c1"] - r["c0"] for r in results)
    for r in results:
        merged["sent"].update(r["sent"])
        merged["unacked"].update(r["unacked"])
        merged["lat"] += r["lat"]
    return merged


# --- echo responder: the baseline without the bridge --------------------------------------------
def echo_responder(host, port, user, password, ready, stop, ack_qos=1):
    s = _connect_raw(host, port, connect_packet("@echo-" + HALL, user, password) +
                     subscribe_packet(1, "%s/%s/dev/+/up" % (topics.ROOT, HALL)))
    buf = _read_until(s, bytearray(), [0x20, 0x90])
    s.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(s, selectors.EVENT_READ)
    prefix = ("%s/%s/dev/" % (topics.ROOT, HALL)).encode()
    pid = 1
    ready.set()
    while not stop.is_set():
        if not sel.select(0.05):
            continue
        try:
            data = s.recv(262144)
        except BlockingIOError:
            continue
        if not data:
            return
        buf += data
        pk, used = parse(buf)
        del buf[:used]
        out = []
        for h, body in pk:
            if h & 0xF0 != 0x30:
                continue
            topic, p, payload = publish_parts(h, body)
            if p:
                out.append(puback(p))
            dev = bytes(topic[len(prefix):-3])
            dl = payload[3]
            seq = payload[4 + dl + 4:4 + dl + 8]
            ack = bytes([1, messages.ACK, 0, dl]) + dev + b"\x01\x00\x00\x00\x00\x00\x00\x00" + b"\x00\x00\x00\x00\x01" + seq + bytes(16)
            pid = pid % 65535 + 1
            out.append(publish_packet(prefix + dev + b"/down", ack, pid=pid, qos=ack_qos))
        if out:
            data = b"".join(out)
            s.setblocking(True)
            s.sendall(data)
            s.setblocking(False)


# --- the bridge process -------------------------------------------------------------------------
def bridge_main(a):
    import logging
    import threading

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="bridge %(levelname)s %(name)s: %(message)s")
    from pingjia.bridge.hub import Hub
    from pingjia.bridge.mqtt_ingest import MqttLink
    from pingjia.bridge.store import Store

    if a.switch_interval:
        sys.setswitchinterval(a.switch_interval)
    store = Store(a.db)
    hub = (Hub(store, hall=HALL, **({"batch_max": a.batch_max} if a.batch_max else {})).start() if a.hub == "real"
           else NullHub())
    up = None
    if a.hub == "real":  # what bridge/service.py wires on the hub (no [upstream] endpoint: follow-ups, unrated events)
        from pingjia.bridge.upstream import workers

        up = workers.start({"hall": HALL, "upstream": {}}, hub, store)
    links = []
    if a.mqtt_port:
        links.append(MqttLink(hub, HALL, "127.0.0.1", a.mqtt_port, a.user, a.password, ack_qos=a.ack_qos).start(wait=10))
    ser = None
    if a.serial:
        from pingjia.bridge.serial_ingest import SerialIngest

        ser = SerialIngest(hub, [a.serial], idle_s=0.1).start()
    print("READY", flush=True)
    for line in sys.stdin:
        if line.strip() == "stats":
            st = {"hub": hub.stats(), "links": [l.stats for l in links], "threads": thread_usage()}
            print(json.dumps(st), flush=True)
    hub.stop()  # commits and ACKs what it holds while the links are still up
    if up is not None:
        up.stop()
    for l in links:
        l.stop()
    if ser:
        ser.stop()
    st = {"hub": hub.stats(), "links": [l.stats for l in links]}
    print(json.dumps(st), flush=True)
    del threading


def thread_usage():
    """{thread name: [CPU seconds, context switches]} of this process's threads, from /proc."""
    import threading

    out = {}
    tck = os.sysconf("SC_CLK_TCK")
    for t in threading.enumerate():
        task = Path("/proc/self/task/%s" % t.native_id)
        try:
            f = (task / "stat").read_text().rsplit(")", 1)[1].split()
            sw = sum(int(line.split(":")[1]) for line in (task / "status").read_text().splitlines() if "ctxt_switches" in line)
        except OSError:
            continue
        out[t.name] = [(int(f[11]) + int(f[12])) / tck, sw]
    return out


class NullHub:
    """Transport-only bridge (bench diagnostics): ACKs at once with an unsigned ACK-shaped message."""

    def __init__(self):
        self.n = 0

    def submit(self, raw, link):
        self.n += 1
        dl = raw[3]
        dev = bytes(raw[4:4 + dl])
        link.send(dev.decode(), bytes([1, messages.ACK, 0, dl]) + dev + bytes(8) + bytes(4) + b"\x01" + bytes(raw[8 + dl:12 + dl]) + bytes(16))

    def link_state(self, *a):
        pass

    def device_text(self, *a):
        pass

    def stop(self):
        pass

    def stats(self):
        return {"stored": self.n}


class BridgeProc:
    def __init__(self, db, port=None, user=None, password=None, serial=None, hub="real", ack_qos=1):
        cmd = [sys.executable, str(Path(__file__).resolve()), "--role", "bridge", "--db", str(db), "--hub", hub,
               "--ack-qos", str(ack_qos)]  # PJ_SWITCH_INTERVAL, PJ_BATCH_MAX in the environment reach the bridge process
        if port:
            cmd += ["--mqtt-port", str(port), "--user", user, "--password", password]
        if serial:
            cmd += ["--serial", serial]
        self.t_spawn = time.time()
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        line = self.p.stdout.readline()
        if line.strip() != "READY":
            raise RuntimeError("bridge did not start: %r" % line)
        self.t_ready = time.time()

    def rss(self):
        out = {}
        try:
            for line in Path("/proc/%d/status" % self.p.pid).read_text().splitlines():
                if line.startswith(("VmRSS", "VmHWM")):
                    k, v = line.split(":")
                    out[k] = int(v.split()[0]) / 1024.0
        except OSError:
            pass
        return out

    def cpu(self):
        """CPU seconds (user + system) the bridge process used so far."""
        f = Path("/proc/%d/stat" % self.p.pid).read_text().rsplit(")", 1)[1].split()
        tck = os.sysconf("SC_CLK_TCK")
        self.user_sys = (int(f[11]) / tck, int(f[12]) / tck)
        return (int(f[11]) + int(f[12])) / tck

    def switches(self):
        """Context switches (voluntary + involuntary) over all the bridge's threads so far."""
        n = 0
        for task in Path("/proc/%d/task" % self.p.pid).iterdir():
            try:
                for line in (task / "status").read_text().splitlines():
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        n += int(line.split(":")[1])
            except OSError:
                pass
        return n

    def stats(self):
        self.p.stdin.write("stats\n")
        self.p.stdin.flush()
        return json.loads(self.p.stdout.readline())

    def stop(self):
        self.p.stdin.close()
        line = self.p.stdout.readline()
        self.p.wait(60)
        self.p.stdout.close()
        return json.loads(line) if line.strip() else {}


# --- setup helpers ------------------------------------------------------------------------------
def rating_stars(dev, seq, bad_share):
    """Stars of rating `seq` of keypad `dev`: a 差评 (1-2 stars, which opens a follow-up) for a
    `bad_share` of them, in a fixed pattern per keypad (period 1,000 seqs); 3-5 stars otherwise."""
    if (seq * 7919 + sum(dev.encode())) % 1000 < bad_share * 1000:
        return 1 + seq % 2
    return 3 + seq % 3


def case_token(dev, seq):
    """The token of the prompted case that rating `seq` of keypad `dev` rates (--kind rating)."""
    return "%s-%d" % (dev, seq)


def setup(workdir, n, cases_per_keypad=0):
    """Broker (not started) + SQLite store with n keypads; returns (broker, db path, keys, signers).
    cases_per_keypad > 0: each keypad gets a window and that many prompted cases (tokens case_token(dev, 1..)),
    written as the bridge's own finish_case leaves them."""
    from pingjia.bridge import devices
    from pingjia.bridge.store import Store
    from pingjia.protocol.auth import Signer

    keys = make_keys(n)
    broker = LocalBroker(Path(workdir) / "mosquitto", HALL, persistence=True, log_to_file=False)
    broker.set_devices(keys)
    db = Path(workdir) / "bridge.db"
    st = Store(db)
    st.migrate()
    conn = st.connect()
    try:
        conn.execute("BEGIN")
        for d, k in keys.items():
            conn.execute("INSERT INTO devices (device_id, key_hex, transport, created_at) VALUES (?,?,?,?)",
                         (d, k.hex(), "mqtt", time.time()))
        if cases_per_keypad:
            now = time.time()
            for d in keys:
                conn.execute("INSERT INTO windows (window_id, name, created_at) VALUES (?,?,?)", ("W-" + d, d, now))
            # in a hall the case system numbers cases in time order and every window finishes its cases
            # one after another, so the cases rated at any moment are the recent ones of every window:
            # round s holds every keypad's s-th case, case ids and numbers ascending
            conn.executemany(
                "INSERT INTO cases (project_no, window_id, task_code, task_name, state, token, device_id, opened_at, "
                "finished_at, prompt_until) VALUES (?,?,'T1','bench matter','prompted',?,?,?,?,?)",
                [("330100-%09d" % (s * len(keys) + i), "W-" + d, case_token(d, s), d, now - 60, now, now + 86400)
                 for s in range(1, cases_per_keypad + 1) for i, d in enumerate(keys)])
        conn.execute("COMMIT")
    finally:
        conn.close()
    return broker, db, keys, {d: Signer(k) for d, k in keys.items()}


def check_ratings(db):
    """--kind rating: (counted ratings, cases with more than one rating, rating events not counted)."""
    import sqlite3

    conn = sqlite3.connect(str(db))
    try:
        n = conn.execute("SELECT count(*) FROM ratings").fetchone()[0]
        multi = conn.execute("SELECT count(*) FROM (SELECT case_id FROM ratings GROUP BY case_id HAVING count(*) > 1)").fetchone()[0]
        uncounted = conn.execute("SELECT count(*) FROM events WHERE kind = 'rating' AND disposition != 'counted'").fetchone()[0]
    finally:
        conn.close()
    return n, multi, uncounted


def count_followups(db):
    import sqlite3

    conn = sqlite3.connect(str(db))
    try:
        return conn.execute("SELECT count(*) FROM followups").fetchone()[0]
    finally:
        conn.close()


def check_store(db, sent):
    """Against {dev: n} (seqs 1..n ACKed) or {dev: [(first, last), ...]} (ranges ACKed):
    (rows, lost, duplicated, expected)."""
    import sqlite3

    conn = sqlite3.connect(str(db))
    try:
        rows = conn.execute("SELECT device_id, seq FROM events").fetchall()
    finally:
        conn.close()
    have = set(rows)
    ranges = {d: ([(1, v)] if isinstance(v, int) else v) for d, v in sent.items()}
    want = [(d, s) for d, rs in ranges.items() for lo, hi in rs for s in range(lo, hi + 1)]
    lost = sum(1 for k in want if k not in have)
    return len(rows), lost, len(rows) - len(have), len(want)


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


def forget_session(host, port, client_id, user, password):
    """Drop a client's persistent session on the broker (connect clean, disconnect): the echo phase's
    events must not queue for the bridge, which would get them at its next start."""
    s = _connect_raw(host, port, connect_packet(client_id, user, password, clean=True))
    try:
        _read_until(s, bytearray(), [0x20])
        s.sendall(b"\xe0\x00")
    finally:
        s.close()


def throughput(a):
    """Rounds of [echo phase, bridge phase] on the same broker and keypads, each phase with fresh
    seqs (and, for ratings, fresh prompted cases): the ratio of each round compares windows a few
    seconds apart, and the median over rounds is the figure (the shared machine's speed drifts)."""
    with tempfile.TemporaryDirectory(prefix="pj-ingest-") as wd:
        # enough pre-encoded events that no keypad runs dry at up to --max-rate events/s in total
        nev = a.events or int((a.seconds + a.warmup + 2) * a.max_rate / a.keypads) + 10
        broker, db, keys, signers = setup(wd, a.keypads, cases_per_keypad=nev * a.rounds if a.kind == "rating" else 0)
        broker.start()
        devs = sorted(keys)
        user, pw = broker.bridge_credentials()
        acked = {d: [] for d in devs}  # ranges of seqs the bridge ACKed, over all rounds
        rows = []
        try:
            for rnd in range(a.rounds):
                seq0 = rnd * nev
                base_rate = float("nan")
                if not a.skip_baseline:  # the same keypads and payloads, an echo responder instead of the bridge
                    forget_session(broker.host, broker.port, "@bridge-" + HALL, user, pw)
                    ctx = mp.get_context("fork")
                    ready, stop = ctx.Event(), ctx.Event()
                    echo = ctx.Process(target=echo_responder, args=(broker.host, broker.port, user, pw, ready, stop, a.ack_qos))
                    echo.start()
                    ready.wait(30)
                    base = run_fleet(broker.host, broker.port, devs, keys, 1, nev, a.seconds, a.warmup, a.procs, kind=a.kind,
                                     bad_share=a.bad_share, seq0=seq0)
                    stop.set()
                    echo.join(10)
                    base_rate = base["window_events"] / a.seconds
                    print("round %d   baseline: broker pass-through (echo responder, no bridge): %6.0f events/s%s" % (
                        rnd + 1, base_rate, " (%d keypads ran dry)" % base["dry"] if base["dry"] else ""), flush=True)
                rate, res, details = bridge_phase(a, broker, db, devs, keys, user, pw, nev, seq0)
                for d, n in res["sent"].items():
                    if n:
                        acked[d].append((seq0 + 1, seq0 + n))
                rows.append((rate, base_rate))
                print("round %d   bridge:   committed before ACK:                          %6.0f events/s   ratio %.2f" % (
                    rnd + 1, rate, rate / base_rate))
                print("\n".join(details), flush=True)
            total, lost, extra, expected = check_store(db, acked)
            print("store     %d ACKed events, %d rows, %d lost, %d duplicated" % (expected, total, lost, extra))
            if a.kind == "rating":
                nr, multi, uncounted = check_ratings(db)
                print("          ratings: %d counted (one per case), %d cases rated twice, %d rating events not counted; "
                      "差评 share %.2f, follow-ups opened %d" % (nr, multi, uncounted, a.bad_share, count_followups(db)))
            rates = sorted(r for r, _ in rows)
            ratios = sorted(r / b for r, b in rows)
            print("median of %d rounds: bridge %.0f events/s (%s), ratio %.2f (%s) of the broker's pass-through" % (
                len(rows), rates[len(rates) // 2], " / ".join("%.0f" % r for r, _ in rows), ratios[len(ratios) // 2],
                " / ".join("%.2f" % (r / b) for r, b in rows)))
            return {"rate": rates[len(rates) // 2], "ratio": ratios[len(ratios) // 2], "lost": lost, "extra": extra}
        finally:
            broker.stop()


def bridge_phase(a, broker, db, devs, keys, user, pw, nev, seq0):
    """One bridge process over the keypads' events seq0+1..: (events/s in the window, fleet results,
    lines describing the bridge process: CPU, threads, writer, memory)."""
    out = []
    br = BridgeProc(db, broker.port, user, pw, hub=a.hub, ack_qos=a.ack_qos)
    prof = []

    def profile():  # PJ_PYSPY=/path/to/py-spy: sample the bridge during the measured window
        spy = os.environ.get("PJ_PYSPY")
        if spy:
            prof.append(subprocess.Popen([spy, "record", "-p", str(br.p.pid), "-d", str(int(a.seconds)), "-r", "250",
                                          "-f", "raw", "-o", "/tmp/pj-bridge-profile.txt", "--nonblocking", "--gil"],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    st0 = br.stats()
    cpu0, sw0 = br.cpu(), br.switches()
    us0 = br.user_sys
    res = run_fleet(broker.host, broker.port, devs, keys, 1, nev, a.seconds, a.warmup, a.procs, on_ready=profile,
                    kind=a.kind, bad_share=a.bad_share, seq0=seq0)
    cpu1, sw1 = br.cpu(), br.switches()
    us1 = br.user_sys
    for p in prof:
        p.wait()
    rss = br.rss()
    mid = br.stats()
    final = br.stop()
    rate = res["window_events"] / a.seconds
    if res["dry"]:
        out.append("          (%d keypads ran out of pre-encoded events: raise --max-rate)" % res["dry"])
    n = max(1, res["acked"])
    cpu_us = (cpu1 - cpu0) / n * 1e6
    out.append("          bridge CPU: %.0f us per event (%.0f%% system), i.e. %.0f events/s per bridge core; %.2f context switches per event" % (
        cpu_us, 100.0 * (us1[1] - us0[1]) / max(1e-9, cpu1 - cpu0), 1e6 / cpu_us, (sw1 - sw0) / n))
    th0, th1 = st0["threads"], mid["threads"]
    busy = sorted((th1[t][0] - th0[t][0], t) for t in th1 if t in th0 and th1[t][0] - th0[t][0] >= 0.005 * cpu_us * n / 1e6)
    out.append("          by thread, CPU us / context switches per event: %s" % ", ".join(
        "%s %.0f / %.2f" % (t, d / n * 1e6, (th1[t][1] - th0[t][1]) / n) for d, t in reversed(busy)))
    w0, w1 = st0["hub"], mid["hub"]
    if "apply_s" in w1:
        out.append("          writer thread's time per event (wall): applying %.0f us, committing %.0f us, waiting for events %.0f us" % tuple(
            (w1[k] - w0[k]) / n * 1e6 for k in ("apply_s", "commit_s", "idle_s")))
    h = final.get("hub", mid["hub"])
    out.append("          bridge RSS at %d keypads: %.1f MB (peak %.1f MB); hub: stored %d, duplicates %d, batches %d, max batch %d, "
          "rejected %d" % (len(devs), rss.get("VmRSS", 0), rss.get("VmHWM", 0), h.get("stored", 0), h.get("duplicates", 0),
                           h.get("batches", 0), h.get("max_batch", 0), h.get("rejected", 0)))
    return rate, res, out


def replay(a):
    with tempfile.TemporaryDirectory(prefix="pj-replay-") as wd:
        nev = a.events or 200
        broker, db, keys, signers = setup(wd, a.keypads, cases_per_keypad=nev if a.kind == "rating" else 0)
        broker.start()
        devs = sorted(keys)
        user, pw = broker.bridge_credentials()
        try:
            # the bridge has been running (its session exists on the broker), then it goes down
            BridgeProc(db, broker.port, user, pw, ack_qos=a.ack_qos).stop()
            state = {}

            def bridge_returns():
                time.sleep(a.outage)  # keypads publish their windows and back off meanwhile
                state["br"] = br = BridgeProc(db, broker.port, user, pw, ack_qos=a.ack_qos)
                while os.environ.get("PJ_VERBOSE") and br.p.poll() is None and not state.get("done"):
                    time.sleep(2)
                    try:
                        st = br.stats()
                    except Exception:  # noqa: BLE001
                        break
                    print("  t+%.0fs rss %.1f MB hub queue %s stored %s dup %s link %s" % (
                        time.time() - br.t_spawn, br.rss().get("VmRSS", 0), st["hub"].get("queue"), st["hub"].get("stored"),
                        st["hub"].get("duplicates"), st["links"][0]), flush=True)

            import threading

            th = [None]

            def on_ready():
                th[0] = threading.Thread(target=bridge_returns)
                th[0].start()

            res = run_fleet(broker.host, broker.port, devs, keys, 16, nev, 0, 0, a.procs, stop_after_window=False,
                            rt_base=1.0, rt_max=60.0, max_s=a.outage + a.max_replay_s, on_ready=on_ready, rto=a.rto, kind=a.kind,
                            bad_share=a.bad_share)
            state["done"] = True
            th[0].join()
            br = state["br"]
            rss = br.rss()
            final = br.stop()
            t = res["t_end"] - br.t_spawn
            total, lost, extra, expected = check_store(db, res["sent"])
            print("replay    %d keypads x %d journaled events = %d; bridge down %.0f s while keypads publish and back off (retransmit: %s)" % (
                len(devs), nev, len(devs) * nev, a.outage, a.rto))
            print("          all ACKed %.1f s after the bridge process started (%.1f s after it was ready): %.0f events/s" % (
                t, res["t_end"] - br.t_ready, expected / t if t > 0 else 0))
            print("          store check: %d rows, %d lost, %d duplicated; unACKed at end %d" % (total, lost, extra, res["inflight"]))
            if a.kind == "rating":
                nr, multi, uncounted = check_ratings(db)
                print("          ratings: %d counted (one per case), %d cases rated twice, %d rating events not counted" % (nr, multi, uncounted))
            h = final.get("hub", {})
            print("          hub: stored %d, duplicates %d (retransmissions ACKed again), batches %d, max batch %d; bridge RSS %.1f MB (peak %.1f MB)" % (
                h.get("stored", 0), h.get("duplicates", 0), h.get("batches", 0), h.get("max_batch", 0), rss.get("VmRSS", 0), rss.get("VmHWM", 0)))
            return {"t": t, "lost": lost, "extra": extra, "total": total}
        finally:
            broker.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=["throughput", "replay"], default="throughput")
    ap.add_argument("--keypads", type=int, default=500)
    ap.add_argument("--seconds", type=float, default=8.0, help="measured window (throughput)")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--events", type=int, default=0, help="events per keypad (replay: default 200)")
    ap.add_argument("--max-rate", type=float, default=30000, help="throughput: events/s the pre-encoded supply must cover")
    ap.add_argument("--rounds", type=int, default=3, help="throughput: rounds of [echo phase, bridge phase]; the median is reported")
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--kind", choices=["unsolicited", "rating"], default="unsolicited",
                    help="what each event is: an unprompted press (stored for audit) or the rating of "
                         "its own prompted case (the whole attach path)")
    ap.add_argument("--bad-share", type=float, default=0.05,
                    help="--kind rating: share of 差评 (1-2 stars; each opens a follow-up in the rating's transaction)")
    ap.add_argument("--procs", type=int, default=2, help="load processes")
    ap.add_argument("--outage", type=float, default=5.0, help="replay: seconds the bridge stays down")
    ap.add_argument("--role", default="main", help=argparse.SUPPRESS)
    ap.add_argument("--db", help=argparse.SUPPRESS)
    ap.add_argument("--mqtt-port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--user", help=argparse.SUPPRESS)
    ap.add_argument("--password", help=argparse.SUPPRESS)
    ap.add_argument("--serial", help=argparse.SUPPRESS)
    ap.add_argument("--rto", choices=["adaptive", "firmware"], default="adaptive",
                    help="keypad retransmit timer: adaptive (per event, 2 x smoothed RTT, Karn: what firmware/app.py does) or "
                         "firmware (the old whole-window 1 s timer, kept for comparison)")
    ap.add_argument("--max-replay-s", type=float, default=120.0)
    ap.add_argument("--ack-qos", type=int, choices=[0, 1], default=1, help="QoS of the bridge's ACKs (default 1)")
    ap.add_argument("--switch-interval", type=float, default=float(os.environ.get("PJ_SWITCH_INTERVAL", 0) or 0),
                    help="bridge process: sys.setswitchinterval (default: Python's 5 ms)")
    ap.add_argument("--batch-max", type=int, default=int(os.environ.get("PJ_BATCH_MAX", 0) or 0),
                    help="bridge process: the hub's batch_max (default: the Hub's own)")
    ap.add_argument("--hub", choices=["real", "null"], default="real", help="null: transport-only bridge (diagnostics)")
    a = ap.parse_args()
    if a.role == "bridge":
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        return bridge_main(a)
    print("cpus: %d (os.cpu_count), python %s; events: %s" % (os.cpu_count(), sys.version.split()[0],
                                                          a.kind))
    if a.mode == "throughput":
        throughput(a)
    else:
        replay(a)


if __name__ == "__main__":
    main()
