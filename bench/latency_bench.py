"""Press -> ACK latency at a steady 50 events/s, over MQTT loopback and over a pty.

    .venv/bin/python bench/latency_bench.py                  # 20 s each, 50 keypads on MQTT
    .venv/bin/python bench/latency_bench.py --seconds 60 --rate 50

MQTT: 50 keypads (real connections, own credentials), each pressing once a
  second, spread evenly: 50 events/s into the bridge (bridge.hub.Hub + SQLite +
  MQTT transport in its own process, as in ingest_mqtt_bench.py). Latency =
  publish of the event -> its ACK arriving on the keypad's down topic, so it
  includes the COMMIT (fsync) before the ACK. Same-run baseline: the same
  keypads against an echo responder (broker round trip without the bridge).
pty: the bridge's serial transport reads a pseudo-terminal; this process plays
  the keypad on the master side and writes one frame every 1/rate s, paced at
  115200 baud 8N1 (the frame's bytes leave over its wire time, ~5 ms for a
  rating). Latency = first byte of the event written -> whole ACK frame read,
  plus the ACK's own wire time at 115200 baud (the pty delivers it at once, a
  UART would not). Baseline: the wire time of event + ACK alone.
"""
import argparse
import os
import select
import sys
import tempfile
import time
import tty
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ingest_mqtt_bench as ib  # noqa: E402

from pingjia.protocol import framing, messages  # noqa: E402

BAUD_BYTES_S = 115200 / 10.0  # 8N1: 10 bit times per byte


def stats(lat_s):
    ms = [x * 1000 for x in lat_s]
    return ib.pct(ms, 50), ib.pct(ms, 99), max(ms) if ms else float("nan"), len(ms)


def mqtt_latency(a):
    n = a.keypads
    period = n / a.rate
    with tempfile.TemporaryDirectory(prefix="pj-lat-") as wd:
        broker, db, keys, _ = ib.setup(wd, n)
        broker.start()
        devs = sorted(keys)
        user, pw = broker.bridge_credentials()
        nev = int(a.seconds / period) + 5
        try:
            import multiprocessing as mp

            ctx = mp.get_context("fork")
            ready, stop = ctx.Event(), ctx.Event()
            echo = ctx.Process(target=ib.echo_responder, args=(broker.host, broker.port, user, pw, ready, stop))
            echo.start()
            ready.wait(30)
            base = ib.run_fleet(broker.host, broker.port, devs, keys, 1, nev, a.seconds, 0, 1, keep_lat=True, period=period)
            stop.set()
            echo.join(10)
            br = ib.BridgeProc(db, broker.port, user, pw)
            res = ib.run_fleet(broker.host, broker.port, devs, keys, 1, nev, a.seconds, 0, 1, keep_lat=True, period=period)
            br.stop()
            total, lost, extra, expected = ib.check_store(db, res["sent"])
        finally:
            broker.stop()
    b50, b99, bmax, bn = stats(base["lat"])
    p50, p99, pmax, pn = stats(res["lat"])
    print("mqtt      %d keypads, %.0f events/s for %.0f s" % (n, a.rate, a.seconds))
    print("baseline  broker round trip (echo, no bridge): p50 %.2f ms  p99 %.2f ms  max %.2f ms  (%d events)" % (b50, b99, bmax, bn))
    print("bridge    press -> ACK after COMMIT:            p50 %.2f ms  p99 %.2f ms  max %.2f ms  (%d events; store: %d rows, %d lost, %d dup)" % (
        p50, p99, pmax, pn, total, lost, extra))
    return p99


def pty_latency(a):
    from pingjia.protocol.auth import Signer

    with tempfile.TemporaryDirectory(prefix="pj-latpty-") as wd:
        _broker, db, keys, _ = ib.setup(wd, 1)
        dev = sorted(keys)[0]
        signer = Signer(keys[dev])
        m, s = os.openpty()
        tty.setraw(s)
        name = os.ttyname(s)
        os.close(s)
        link = os.path.join(wd, "usb-pingjia_keypad-if00")
        os.symlink(name, link)
        br = ib.BridgeProc(db, serial=link)
        try:
            time.sleep(1.0)  # the reader opens the port
            n = int(a.seconds * a.rate)
            period = 1.0 / a.rate
            dec = framing.Decoder()
            lat = []
            chunk = 8
            ack_wire = []
            t_next = time.monotonic()
            for seq in range(1, n + 1):
                frame = framing.encode(messages.encode(messages.Message(messages.RATING, dev, 1, seq, stars=5, age_ms=0, token="K7Q2M4ZP", nth=1), signer))
                while time.monotonic() < t_next:
                    time.sleep(0.0002)
                t0 = time.monotonic()
                for i in range(0, len(frame), chunk):  # a UART's pace
                    os.write(m, frame[i:i + chunk])
                    tgt = t0 + (i + chunk) * 1.0 / BAUD_BYTES_S
                    d = tgt - time.monotonic()
                    if d > 0:
                        time.sleep(d)
                got = False
                end = t0 + 2.0
                while not got and time.monotonic() < end:
                    r, _, _ = select.select([m], [], [], 0.5)
                    if not r:
                        continue
                    for kind, v in dec.feed(os.read(m, 4096)):
                        if kind == framing.FRAME and seq in messages.decode(v, signer).seqs:
                            wire = (len(v) + framing.OVERHEAD) / BAUD_BYTES_S
                            ack_wire.append(wire)
                            lat.append(time.monotonic() - t0 + wire)
                            got = True
                t_next += period
        finally:
            final = br.stop()
            os.close(m)
        total, lost, extra, expected = ib.check_store(db, {dev: n})
    frame_len = len(frame)
    p50, p99, pmax, pn = stats(lat)
    base = (frame_len / BAUD_BYTES_S + (sum(ack_wire) / len(ack_wire) if ack_wire else 0)) * 1000
    print("pty       %.0f events/s for %.0f s, frames paced at 115200 baud" % (a.rate, a.seconds))
    print("baseline  wire time of event (%d B) + ACK at 115200 baud: %.2f ms" % (frame_len, base))
    print("bridge    press -> ACK after COMMIT (incl. wire time):   p50 %.2f ms  p99 %.2f ms  max %.2f ms  (%d events; store: %d rows, %d lost, %d dup)" % (
        p50, p99, pmax, pn, total, lost, extra))
    del final
    return p99


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--rate", type=float, default=50.0, help="events/s")
    ap.add_argument("--keypads", type=int, default=50, help="MQTT keypads sharing the rate")
    ap.add_argument("--only", choices=["mqtt", "pty"])
    a = ap.parse_args()
    print("cpus: %d, python %s" % (os.cpu_count(), sys.version.split()[0]))
    if a.only != "pty":
        mqtt_latency(a)
    if a.only != "mqtt":
        pty_latency(a)


if __name__ == "__main__":
    main()
