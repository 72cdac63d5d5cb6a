# pingjia.firmware.mqtt: MqttLink, the MQTT transport (the link interface is described in link.py).
#
# Imported by run.build() only when the config says "transport": "mqtt", so a
# serial keypad keeps this code out of its heap. umqtt.simple-compatible client
# from board.mqtt_client(); QoS 1 both ways; a PUBACK is not an ACK (the app
# retransmits until the bridge's application ACK).
try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


from ..protocol import topics
from ..protocol.auth import hmac_sha256

PASSWORD_LABEL = b"pingjia-mqtt-password-v1"  # bridge/broker.py calls mqtt_password() below: one definition

_BACKOFF_MS = const(1000)
_BACKOFF_MAX_MS = const(60000)
_CONNECT_TIMEOUT_S = const(5)


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
        self.backoff = _BACKOFF_MS
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
                c.connect(timeout=_CONNECT_TIMEOUT_S)  # bounded: the watchdog is 8 s
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
        self.backoff = _BACKOFF_MS
        self._io = now

    def _retry(self, now):
        self.next_try = now + self.backoff
        self.backoff = min(self.backoff * 2, _BACKOFF_MAX_MS)

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
