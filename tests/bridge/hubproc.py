"""A bridge hub in its own process, for crash tests: serial frames in on stdin, framed ACKs out on stdout.

    python -m tests.bridge.hubproc <db>
The same Store/Hub the service runs; the pipe stands in for a serial port.
"""
import os
import sys
import threading

from pingjia.bridge.hub import Hub
from pingjia.bridge.store import Store
from pingjia.protocol import framing


class PipeLink:
    name = "pipe"

    def __init__(self, out):
        self.out = out
        self.lock = threading.Lock()

    def send(self, device_id, raw):
        with self.lock:
            self.out.write(framing.encode(raw))
            self.out.flush()


def main(db):
    store = Store(db)
    store.migrate()
    hub = Hub(store).start(timer=False)
    link = PipeLink(sys.stdout.buffer)
    dec = framing.Decoder()
    while True:
        data = os.read(0, 65536)
        if not data:
            break
        for kind, value in dec.feed(data):
            if kind == framing.FRAME:
                hub.submit(value, link)
    hub.stop()


if __name__ == "__main__":
    main(sys.argv[1])
