# pingjia.firmware.link: the transport interface, and SerialLink (frames on the board's serial line).
#
# A link has:
#   connected     True while messages can be handed over (serial: always;
#                 MQTT: while the broker session is up)
#   gen           counts (re)connections; the app sends HELLO + STATUS and
#                 resends its unacknowledged events when it changes
#   supervise(now)  the one place that (re)connects, with backoff
#   poll(now)     -> list of raw messages received (bridge commands)
#   send(raw)     -> True when handed to the transport, False when down
#   close()
# Delivery (retransmit until the application ACK) is the app's job, not the
# link's: umqtt.simple neither queues nor retransmits, and a PUBACK only means
# the broker has it.
# MqttLink is in mqtt.py, imported only by keypads configured for MQTT (a
# serial keypad does not spend heap on its code).
try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


from ..protocol import framing

_IDLE_MS = const(200)  # a frame still incomplete after this much quiet is cut


class SerialLink:
    """Frames on the board's serial byte stream (USB CDC or UART).

    A 0x03 byte outside a frame is the flashing tool asking for the REPL
    (Ctrl-C): poll() raises KeyboardInterrupt so the main loop ends cleanly.
    Inside a frame 0x03 is just data (RP2040 boards switch the MicroPython
    keyboard interrupt off with micropython.kbd_intr(-1) for this reason).
    """

    name = "serial"

    def __init__(self, board):
        self.board = board
        self.dec = framing.Decoder()
        self.connected = True
        self.gen = 1
        self.errors = 0  # frames that failed CRC/length checks
        self._heard = 0

    def supervise(self, now):
        pass

    def poll(self, now):
        data = self.board.read()
        out = []
        if data:
            self._heard = now
            items = self.dec.feed(data)
        elif self.dec.pending() and now - self._heard > _IDLE_MS:
            items = self.dec.idle()
        else:
            return out
        for kind, value in items:
            if kind == framing.FRAME:
                out.append(value)
            elif kind == framing.TEXT:
                if value.find(b"\x03") >= 0:
                    raise KeyboardInterrupt
            else:
                self.errors += 1
        # text not yet ended by a newline (mpremote sends "\r\x03\x03")
        if self.dec.pending_text().find(b"\x03") >= 0:
            raise KeyboardInterrupt
        return out

    def send(self, raw):
        self.board.write(framing.encode(raw))
        return True

    def close(self):
        pass
