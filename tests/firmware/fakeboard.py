# Test board for the firmware scenarios: pure Python, runs on CPython and MicroPython.
# Keys and clock are set by the test; serial is two byte buffers; MQTT is a fake
# umqtt.simple client that records what it was asked to do.


class FakeMqtt:
    """umqtt.simple.MQTTClient look-alike. `broker` is shared state the test controls."""

    def __init__(self, broker, client_id):
        self.broker = broker
        self.client_id = client_id
        self.cb = None
        self.will = None

    def set_callback(self, f):
        self.cb = f

    def set_last_will(self, topic, msg, retain=False, qos=0):
        self.will = (topic, msg, retain, qos)

    def connect(self, clean_session=True, timeout=None):
        self.broker["connects"] += 1
        if not self.broker["up"]:
            raise OSError(111)
        self.broker["client"] = self
        self.broker["wills"].append(self.will)

    def subscribe(self, topic, qos=0):
        self.broker["subs"].append((topic, qos))

    def publish(self, topic, msg, retain=False, qos=0):
        if not self.broker["up"]:
            raise OSError(104)
        self.broker["pubs"].append((topic, bytes(msg), retain, qos))

    def check_msg(self):
        if not self.broker["up"]:
            raise OSError(104)
        q = self.broker["down"]
        if q:
            self.cb(b"down", q.pop(0))
        return None

    def ping(self):
        if not self.broker["up"]:
            raise OSError(104)

    def disconnect(self):
        pass


class FakeBoard:
    name = "fake"

    def __init__(self, root, reason_keys=0):
        self.fs_root = root
        self.reason_keys = reason_keys
        self.raw = 0
        self.led = 0
        self.beeps = []
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.t = 0
        self.feeds = 0
        self.fsync = False
        self.fail_keys = False
        self.broker = {"up": True, "connects": 0, "client": None, "wills": [], "subs": [], "pubs": [], "down": []}

    def keys(self):
        if self.fail_keys:
            raise ValueError("key matrix read failed")
        return self.raw

    def leds(self, mask):
        self.led = mask

    def beep(self, f, ms):
        self.beeps.append(f)

    def now_ms(self):
        return self.t

    def feed_wdt(self):
        self.feeds += 1

    def read(self):
        if not self.inbuf:
            return None
        d = bytes(self.inbuf)
        self.inbuf = bytearray()
        return d

    def write(self, data):
        self.outbuf.extend(data)

    def reset(self):
        pass

    def mqtt_client(self, client_id, host, port, user, password, keepalive):
        return FakeMqtt(self.broker, client_id)
