# pingjia.bridge.logfmt: structured key=value lines on stderr (journald adds time and unit).
#
#   level=INFO logger=pingjia.bridge.hub msg="keypad hello" device=KP-0001 fw=1.0.0
# Messages are written as "<words> key=value ..."; the formatter quotes the
# leading words as msg= so every line parses as logfmt.
import logging
import sys


class LogfmtFormatter(logging.Formatter):
    def __init__(self, with_time=False):
        super().__init__()
        self.with_time = with_time

    def format(self, record):
        text = record.getMessage()
        words, rest = [], text.split(" ")
        while rest and "=" not in rest[0]:
            words.append(rest.pop(0))
        head = "level=%s logger=%s" % (record.levelname, record.name)
        if self.with_time:
            head = "time=%s %s" % (self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), head)
        line = '%s msg="%s"' % (head, " ".join(words).replace('"', "'"))
        if rest:
            line += " " + " ".join(rest)
        if record.exc_info:
            line += " exc=%r" % self.formatException(record.exc_info)
        return line


def setup(level="INFO", stream=None):
    """Root logging to stderr as logfmt; timestamps only when not under journald."""
    import os

    h = logging.StreamHandler(stream or sys.stderr)
    h.setFormatter(LogfmtFormatter(with_time=not os.environ.get("JOURNAL_STREAM")))
    root = logging.getLogger()
    root.handlers[:] = [h]
    root.setLevel(getattr(logging, str(level).upper(), logging.INFO))
