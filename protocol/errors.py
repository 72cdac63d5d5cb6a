# pingjia.protocol.errors: one exception type whose `code` names the failed check.


class ProtocolError(ValueError):
    """Bad input on the wire. `code` says which check failed, `detail` says more.

    Codes: 'crc', 'mac', 'truncated', 'oversize', 'version', 'type',
    'malformed', 'device' (unknown device: no key for it).
    """

    def __init__(self, code, detail=""):
        super().__init__(code, detail)
        self.code = code
        self.detail = detail

    def __str__(self):
        if self.detail:
            return "%s: %s" % (self.code, self.detail)
        return self.code


CRC = "crc"
MAC = "mac"
TRUNCATED = "truncated"
OVERSIZE = "oversize"
VERSION = "version"
TYPE = "type"
MALFORMED = "malformed"
DEVICE = "device"
