# The ESP32 and RP2040 board modules against stand-in `machine`, `network` and `umqtt`
# modules (CPython or MicroPython): pins as configured, active-low keys, LED bits,
# buzzer start/stop, watchdog started by the first feed and kept fed after stop(),
# Wi-Fi connect, the umqtt client factory. Prints RESULT lines.
import sys


class Pin:
    IN, OUT, PULL_UP = 0, 1, 2
    all = {}

    def __init__(self, n, mode=None, pull=None, value=None):
        self.n, self.v = n, 1 if mode == Pin.IN else (value or 0)
        Pin.all[n] = self

    def value(self, v=None):
        if v is None:
            return self.v
        self.v = v


class PWM:
    def __init__(self, pin):
        self.pin, self.f, self.d = pin, 0, 0

    def freq(self, f):
        self.f = f

    def duty_u16(self, d):
        self.d = d


class WDT:
    made = []

    def __init__(self, timeout):
        self.timeout, self.feeds = timeout, 0
        WDT.made.append(self)

    def feed(self):
        self.feeds += 1


class Timer:
    made = []

    def __init__(self, n):
        Timer.made.append(self)

    def init(self, period, callback):
        self.period, self.cb = period, callback


class Machine:
    Pin, PWM, WDT, Timer = Pin, PWM, WDT, Timer

    @staticmethod
    def reset():
        raise SystemExit("reset")


class WLAN:
    def __init__(self, mode):
        self.up, self.on, self.joined = False, False, None

    def active(self, on):
        self.on = on

    def isconnected(self):
        return self.up

    def connect(self, ssid, pw):
        self.joined = (ssid, pw)

    def status(self, what):
        return -61


class Network:
    STA_IF = 0
    WLAN = WLAN


class MQTTClient:
    def __init__(self, cid, host, port=0, user=None, password=None, keepalive=0):
        self.args = (cid, host, port, user, password, keepalive)


class Simple:
    MQTTClient = MQTTClient


class Umqtt:
    simple = Simple


class MicroPythonStub:
    intr = []

    @staticmethod
    def kbd_intr(c):
        MicroPythonStub.intr.append(c)

    @staticmethod
    def const(x):
        return x


sys.modules["machine"] = Machine
sys.modules["network"] = Network
sys.modules["umqtt"] = Umqtt
sys.modules["umqtt.simple"] = Simple
if sys.implementation.name != "micropython":
    sys.modules["micropython"] = MicroPythonStub
    import time

    time.ticks_ms = lambda: int(time.monotonic() * 1000)
    time.ticks_add = lambda a, b: a + b
    time.ticks_diff = lambda a, b: a - b

from pingjia.firmware.boards import esp32, rp2  # noqa: E402


def check(mod, pins):
    Pin.all.clear()
    cfg = {"device_id": "KP-1", "transport": "mqtt", "wifi": {"ssid": "hall", "password": "pw"}}
    if pins:
        cfg["pins"] = pins
    b = mod.make(cfg)
    keys = pins["keys"] if pins else mod.DEFAULT_KEYS
    leds = pins["leds"] if pins else mod.DEFAULT_LEDS
    assert b.keys() == 0, "keys idle high = not pressed"
    Pin.all[keys[2]].v = 0  # 3 stars pressed (to ground)
    assert b.keys() == 0b100
    b.leds(0b10100001)
    assert [Pin.all[n].v for n in leds] == [1, 0, 0, 0, 0, 1, 0, 1]
    n = len(WDT.made)
    b.feed_wdt()
    assert len(WDT.made) == n + 1, "watchdog starts at the first feed"
    b.beep(2000, 0)
    assert b._pwm.d and b._pwm.f == 2000
    b.feed_wdt()
    assert b._pwm.d == 0, "the tone stops when its time is up"
    assert not b.net_up()
    b.net_connect()
    assert b._wlan.joined == ("hall", "pw")
    c = b.mqtt_client("KP-1", "broker", 1883, "KP-1", "secret", 60)
    assert c.args == ("KP-1", "broker", 1883, "KP-1", "secret", 60)
    assert b.rssi() == -61
    assert b.reason_keys == len(keys) - 5
    b.stop()
    Timer.made[-1].cb(None)
    assert WDT.made[-1].feeds >= 3, "after stop() a timer keeps the watchdog fed"
    assert b.name in ("esp32", "rp2-pico")


check(esp32, None)
print("RESULT esp32 ok")
check(rp2, {"keys": [10, 11, 12, 13, 14, 15, 16], "leds": [20, 21, 22, 23, 24, 25, 26, 27], "buzzer": 9})
print("RESULT rp2 ok")
