# pingjia.firmware.boards.esp32: ESP32 keypad (Wi-Fi + MQTT, or serial on the USB-UART); pins in DEFAULT_*.
from .gpio import GpioBoard

DEFAULT_KEYS = (32, 33, 25, 26, 27)  # 1..5 stars; add up to 5 reason keys in cfg "pins"
DEFAULT_LEDS = (16, 17, 18, 19, 21, 22, 23, 2)  # stars 1..5, green, red, blue
DEFAULT_BUZZER = 4


class Esp32(GpioBoard):
    name = "esp32"


def make(cfg):
    return Esp32(cfg, DEFAULT_KEYS, DEFAULT_LEDS, DEFAULT_BUZZER)
