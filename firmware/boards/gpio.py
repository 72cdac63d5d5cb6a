# pingjia.firmware.boards.gpio: the shared part of the real boards: keys, LEDs, buzzer, watchdog, USB serial, Wi-Fi, umqtt.
#
# Keys are buttons to ground (Pin.PULL_UP, pressed = 0); LEDs are active high;
# the buzzer is a passive piezo on PWM. Pins come from the board module's
# defaults or from "pins": {"keys": [...], "leds": [...], "buzzer": n} in the
# config. Serial transport uses the USB REPL port itself (sys.stdin/stdout,
# select.poll) with micropython.kbd_intr(-1) so binary frames pass; the app
# watches for 0x03 itself. The watchdog cannot be stopped once started, so
# stop() hands its feeding to a timer: the REPL stays usable for the
# flashing tool while a hung app (loop not feeding) still resets the board.
import sys
import time

import micropython
from machine import PWM, WDT, Pin, Timer, reset


class GpioBoard:
    name = "gpio"
    fs_root = "/"
    fsync = False  # littlefs commits on flush

    def __init__(self, cfg, keys, leds, buzzer, wdt_ms=8000):
        pins = cfg.get("pins") or {}
        self._keys = [Pin(n, Pin.IN, Pin.PULL_UP) for n in pins.get("keys", keys)]
        self._leds = [Pin(n, Pin.OUT, value=0) for n in pins.get("leds", leds)]
        self._pwm = PWM(Pin(pins.get("buzzer", buzzer)))
        self._pwm.duty_u16(0)
        self._beep_end = None
        self.reason_keys = max(0, len(self._keys) - 5)
        self._wdt = None  # started by the first feed: a slow boot is not reset
        self._wdt_ms = wdt_ms
        self._wifi = cfg.get("wifi") or {}
        self._wlan = None
        self._serial = cfg.get("transport") == "serial"
        if self._serial:
            import select

            micropython.kbd_intr(-1)  # 0x03 inside a frame is data
            self._poll = select.poll()
            self._poll.register(sys.stdin, select.POLLIN)

    # -- board contract
    def keys(self):
        m = 0
        for i, p in enumerate(self._keys):
            if not p.value():
                m |= 1 << i
        return m

    def leds(self, mask):
        for i, p in enumerate(self._leds):
            p.value((mask >> i) & 1)

    def beep(self, freq_hz, ms):
        if freq_hz:
            self._pwm.freq(freq_hz)
            self._pwm.duty_u16(32768)
            self._beep_end = time.ticks_add(time.ticks_ms(), ms)
        else:
            self._pwm.duty_u16(0)

    def now_ms(self):
        return time.ticks_ms()

    def feed_wdt(self):
        if self._wdt is None:
            self._wdt = WDT(timeout=self._wdt_ms)
        self._wdt.feed()
        if self._beep_end is not None and time.ticks_diff(time.ticks_ms(), self._beep_end) >= 0:
            self._pwm.duty_u16(0)  # the tone's time is up
            self._beep_end = None

    def read(self):
        if not self._serial:
            return None
        out = None
        n = 0
        while n < 512 and self._poll.poll(0):
            b = sys.stdin.buffer.read(1)
            out = b if out is None else out + b
            n += 1
        return out

    def write(self, data):
        if self._serial:
            sys.stdout.buffer.write(data)

    def reset(self):
        reset()

    # -- Wi-Fi and MQTT
    def _w(self):
        if self._wlan is None:
            import network

            self._wlan = network.WLAN(network.STA_IF)
            self._wlan.active(True)
        return self._wlan

    def net_up(self):
        return self._w().isconnected()

    def net_connect(self):
        w = self._w()
        if not w.isconnected() and self._wifi.get("ssid"):
            try:
                w.connect(self._wifi["ssid"], self._wifi.get("password", ""))
            except OSError:
                pass  # already connecting; the link retries with backoff

    def rssi(self):
        try:
            return self._w().status("rssi") if self._wlan is not None else None
        except Exception:
            return None

    def mqtt_client(self, client_id, host, port, user, password, keepalive):
        from umqtt.simple import MQTTClient

        return MQTTClient(client_id, host, port=port, user=user or None, password=password or None, keepalive=keepalive)

    def stop(self):
        self.leds(0)
        self._pwm.duty_u16(0)
        if self._serial:
            micropython.kbd_intr(3)
        wdt = self._wdt
        if wdt is None:
            return
        self._timer = Timer(-1 if sys.platform == "rp2" else 0)
        self._timer.init(period=1000, callback=lambda t: wdt.feed())
