# pingjia.firmware.boards.host: a simulated keypad board on CPython (keys/LEDs in memory, pty or buffer serial, paho MQTT).
#
# Used by the host simulator (tools/simkeypads.py) and the tests. Keys are set
# with press()/release(); LEDs and beeps are recorded. Serial is either an
# in-memory pair of buffers (serial=None: tests push bytes with feed() and read
# what the keypad wrote with take()) or a real pseudo-terminal (serial="pty":
# the bridge opens `port`). MQTT goes through paho-mqtt 2.x wrapped in the
# umqtt.simple interface the firmware's MqttLink uses. Time comes from
# `clock` (a callable returning ms) so tests can drive it.
import errno
import os
import time


class PahoClient:
    """paho-mqtt 2.x behind the umqtt.simple.MQTTClient interface (no threads:
    every call runs paho's loop for an instant)."""

    def __init__(self, client_id, server, port=1883, user=None, password=None, keepalive=60):
        import paho.mqtt.client as mqtt

        self._mqtt = mqtt
        self.server, self.port, self.keepalive = server, port, keepalive
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
        if user:
            self.c.username_pw_set(user, password or None)
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = self._on_disconnect
        self.c.on_message = self._on_message
        self._cb = None
        self._rc = None  # CONNACK reason code
        self.up = False

    def _on_connect(self, c, userdata, flags, rc, props=None):
        self._rc = rc
        self.up = not rc.is_failure

    def _on_disconnect(self, c, userdata, flags, rc, props=None):
        self.up = False

    def _on_message(self, c, userdata, m):
        if self._cb:
            self._cb(m.topic.encode(), m.payload)

    def set_callback(self, f):
        self._cb = f

    def set_last_will(self, topic, msg, retain=False, qos=0):
        self.c.will_set(topic, msg, qos, retain)

    def connect(self, clean_session=True, timeout=5.0):
        self.c.connect(self.server, self.port, self.keepalive)
        end = time.monotonic() + timeout
        while self._rc is None and time.monotonic() < end:
            self.c.loop(timeout=0.01)
        if not self.up:
            self.c.disconnect()
            raise OSError(errno.ECONNREFUSED, "MQTT connect refused: %s" % (self._rc,))
        return 0

    def _io(self):
        rc = self.c.loop(timeout=0)
        if rc != self._mqtt.MQTT_ERR_SUCCESS or not self.up:
            self.up = False
            raise OSError(errno.ECONNRESET, "MQTT connection lost")

    def subscribe(self, topic, qos=0):
        self.c.subscribe(topic, qos)
        self._io()

    def publish(self, topic, msg, retain=False, qos=0):
        if not self.up:
            raise OSError(errno.ENOTCONN, "MQTT not connected")
        self.c.publish(topic, msg, qos, retain)
        self._io()

    def check_msg(self):
        self._io()
        return None

    def ping(self):
        self._io()  # paho sends its own PINGREQ from loop()

    def disconnect(self):
        try:
            self.c.disconnect()
            self.c.loop(timeout=0)
        finally:
            self.up = False


class HostBoard:
    name = "host"

    def __init__(self, fs_root, clock=None, serial=None, reason_keys=0, fsync=False):
        self.fs_root = fs_root if fs_root.endswith("/") else fs_root + "/"
        os.makedirs(self.fs_root, exist_ok=True)
        self.clock = clock or (lambda: time.monotonic_ns() // 1000000)
        self.reason_keys = reason_keys
        self.fsync = fsync
        self.raw = 0  # key mask the keypad sees
        self.led = 0
        self.led_changes = 0
        self.beeps = []  # (freq, ms), last few
        self.wdt_feeds = 0
        self.resets = 0
        self.stopped = False
        self._in = bytearray()  # serial bytes to the keypad (buffer mode)
        self._out = bytearray()  # serial bytes from the keypad (buffer mode)
        self.master = None
        self.port = None
        self.dropped = 0  # bytes the pty could not take (nobody reading)
        if serial == "pty":
            import tty

            self.master, self._slave = os.openpty()
            tty.setraw(self._slave)
            os.set_blocking(self.master, False)
            self.port = os.ttyname(self._slave)

    # -- the board contract
    def keys(self):
        return self.raw

    def leds(self, mask):
        self.led = mask
        self.led_changes += 1

    def beep(self, freq_hz, ms):
        self.beeps.append((freq_hz, ms))
        del self.beeps[:-8]

    def now_ms(self):
        return self.clock()

    def feed_wdt(self):
        self.wdt_feeds += 1

    def read(self):
        if self.master is not None:
            try:
                return os.read(self.master, 4096) or None
            except (BlockingIOError, OSError):
                return None
        if not self._in:
            return None
        data, self._in = bytes(self._in), bytearray()
        return data

    def write(self, data):
        if self.master is not None:
            try:
                n = os.write(self.master, data)
                self.dropped += len(data) - n
            except (BlockingIOError, OSError):
                self.dropped += len(data)
            return
        self._out.extend(data)

    def reset(self):
        self.resets += 1

    def mqtt_client(self, client_id, host, port, user, password, keepalive):
        return PahoClient(client_id, host, port, user, password, keepalive)

    def stop(self):
        self.stopped = True

    # -- test and simulator side
    def press(self, stars):
        """Hold star key `stars` (1..5) down."""
        self.raw |= 1 << (stars - 1)

    def release(self, mask=None):
        self.raw = 0 if mask is None else self.raw & ~mask

    def feed(self, data):
        """Bytes arriving on the keypad's serial line (buffer mode)."""
        self._in.extend(data)

    def take(self):
        """Everything the keypad wrote on its serial line since the last take()."""
        data, self._out = bytes(self._out), bytearray()
        return data

    def close(self):
        if self.master is not None:
            os.close(self.master)
            os.close(self._slave)
            self.master = None


def make(cfg, fs_root=None, **kw):
    """Board contract entry: a HostBoard with its files in `fs_root` (default ./pj_host/<device>)."""
    return HostBoard(fs_root or "pj_host/%s/" % cfg.get("device_id", "unknown"), **kw)
