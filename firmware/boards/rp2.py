# pingjia.firmware.boards.rp2: Raspberry Pi Pico / Pico W keypad (USB serial; MQTT on a Pico W); pins in DEFAULT_*.
from .gpio import GpioBoard

DEFAULT_KEYS = (2, 3, 4, 5, 6)  # GP2..GP6 = 1..5 stars; reason keys on GP7.. via cfg "pins"
DEFAULT_LEDS = (12, 13, 14, 15, 16, 17, 18, 19)  # stars 1..5, green, red, blue
DEFAULT_BUZZER = 20


class Rp2(GpioBoard):
    name = "rp2-pico"


def make(cfg):
    return Rp2(cfg, DEFAULT_KEYS, DEFAULT_LEDS, DEFAULT_BUZZER)
