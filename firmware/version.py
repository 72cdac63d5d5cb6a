# pingjia.firmware.version: the firmware version sent in HELLO (the flashing tool reads it too).
VERSION = "1.0.0"
