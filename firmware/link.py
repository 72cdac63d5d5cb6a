# pingjia.firmware.link: the two transports, serial frames and MQTT, behind one small interface.
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
try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


from ..protocol import framing, topics
from ..protocol.auth import hmac_sha256

PASSWORD_LABEL = b"pingjia-mqtt-password-v1"  # same derivation as bridge/broker.py

IDLE_MS = const(200)  # a frame still incomplete after this much quiet is cut
BACKOFF_MS = const(1000)
BACKOFF_MAX_MS = const(60000)
CONNECT_TIMEOUT_S = const(5)


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
        elif self.dec.pending() and now - self._heard > IDLE_MS:
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


def mqtt_password(key):
    """The keypad's broker password when the config has none: HMAC-SHA256(key, label), 32 hex digits."""
    return "".join("%02x" % x for x in hmac_sha256(key, PASSWORD_LABEL)[:16])


class MqttLink:
    """MQTT through an umqtt.simple-compatible client made by board.mqtt_client().

    QoS 1 both ways; retained "online" on the state topic with the last will
    "offline"; reconnect with backoff (1 s doubling to 60 s); keepalive pings.
    """

    name = "mqtt"

    def __init__(self, board, cfg):
        self.board = board
        b = cfg["broker"]
        self.host, self.port = b["host"], int(b["port"])
        self.user, self.password = b["user"], b["password"] or mqtt_password(cfg["key"])
        self.keepalive = int(b.get("keepalive", 60))
        dev, hall = cfg["device_id"], cfg["hall"]
        self.t_up = topics.up(hall, dev)
        self.t_down = topics.down(hall, dev)
        self.t_state = topics.state(hall, dev)
        self.client_id = dev
        self.connected = False
        self.gen = 0
        self.backoff = BACKOFF_MS
        self.next_try = 0
        self.last_error = ""
        self._c = None
        self._inbox = []
        self._io = 0
        self._now = 0

    def _on_msg(self, topic, msg):
        self._inbox.append(bytes(msg))

    def supervise(self, now):
        if self.connected:
            if now - self._io >= self.keepalive * 500:
                try:
                    self._c.ping()
                    self._io = now
                except Exception as e:
                    self._down(now, e)
            return
        if now < self.next_try:
            return
        net_up = getattr(self.board, "net_up", None)
        if net_up is not None and not net_up():
            getattr(self.board, "net_connect", lambda: None)()
            self._retry(now)
            return
        try:
            c = self.board.mqtt_client(self.client_id, self.host, self.port, self.user, self.password, self.keepalive)
            c.set_callback(self._on_msg)
            c.set_last_will(self.t_state, topics.OFFLINE, retain=True, qos=1)
            try:
                c.connect(timeout=CONNECT_TIMEOUT_S)  # bounded: the watchdog is 8 s
            except TypeError:  # an older umqtt.simple without the timeout argument
                c.connect()
            c.subscribe(self.t_down, qos=1)
            c.publish(self.t_state, topics.ONLINE, retain=True, qos=1)
        except Exception as e:
            self.last_error = "mqtt connect: %s" % (e.__class__.__name__,)
            self._retry(now)
            return
        self._c = c
        self.connected = True
        self.gen += 1
        self.backoff = BACKOFF_MS
        self._io = now

    def _retry(self, now):
        self.next_try = now + self.backoff
        self.backoff = min(self.backoff * 2, BACKOFF_MAX_MS)

    def _down(self, now, e):
        self.last_error = "mqtt: %s" % (e.__class__.__name__,)
        self.connected = False
        try:
            self._c.disconnect()
        except Exception:
            pass
        self._c = None
        self._retry(now)

    def poll(self, now):
        self._now = now
        if self.connected:
            try:
                for _ in range(8):  # umqtt handles one packet per call
                    n = len(self._inbox)
                    if self._c.check_msg() is None and len(self._inbox) == n:
                        break
            except Exception as e:
                self._down(now, e)
        out, self._inbox = self._inbox, []
        return out

    def send(self, raw):
        if not self.connected:
            return False
        try:
            self._c.publish(self.t_up, raw, qos=1)
            return True
        except Exception as e:
            self._down(self._now, e)
            return False

    def close(self):
        if self.connected:
            try:
                self._c.publish(self.t_state, topics.OFFLINE, retain=True, qos=1)
                self._c.disconnect()
            except Exception:
                pass
            self.connected = False
