# pingjia.protocol: the wire contract shared by the keypad and the hall bridge.
#
# Pure Python that runs unchanged on CPython 3.11 and MicroPython 1.2x:
# no dataclasses, no typing at runtime, no CPython-only modules. Modules:
#   errors   - ProtocolError and its codes (which check failed)
#   crc      - CRC-32/ISO-HDLC used by the serial framing
#   auth     - HMAC-SHA256 (truncated to 16 bytes) and constant-time compare
#   messages - the message model: envelope, every message type, encode/decode
#   framing  - serial framing: magic, length, CRC, resync, text outside frames
#   topics   - MQTT topic layout
# The spec a third party implements from is docs/PROTOCOL.md.
