"""Logging for people and for cron: plain ``level: message`` lines or one JSON object per line.

Everything in ``recall`` logs to the ``recall`` logger. :func:`setup_logging`
(called once by the CLI from its global options) decides what reaches stderr:

========================  ===================  ==========================
mode                      level shown          format
========================  ===================  ==========================
default                   warnings and errors  ``warning: message`` (each text once)
``--quiet``               errors only          as chosen
``--log-format json``     info and up          ``{"ts", "level", "event", "message", "fields"}``
``--debug``               everything           as chosen, with tracebacks
========================  ===================  ==========================

Structured events come from :func:`event`: ``event`` is a stable dotted name
(``step.done``, ``run.published``, ``channel.failed``, ``input.duplicates_dropped``)
and ``fields`` its values, so a log shipper can filter without parsing messages.
A plain ``log.warning(...)`` call gets the event name ``log``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any

LOGGER = "recall"
FORMATS = ("text", "json")


def event(logger: logging.Logger, name: str, message: str, *, level: int = logging.INFO,
          exc_info: bool = False, **fields: Any) -> None:
    """Log ``message`` as the structured event ``name`` carrying ``fields``."""
    logger.log(level, message, extra={"event": name, "fields": fields}, exc_info=exc_info)


class _CurrentStderr(logging.StreamHandler):
    """A handler writing to whatever ``sys.stderr`` is at emit time.

    Test runners and rich's live display swap ``sys.stderr``; a handler bound to
    the stream at setup would write to a closed or hidden one.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it
        pass


class TextFormatter(logging.Formatter):
    """``warning: message`` (the traceback follows only when asked for with --debug)."""

    def __init__(self, tracebacks: bool = False) -> None:
        super().__init__()
        self.tracebacks = tracebacks

    def format(self, record: logging.LogRecord) -> str:
        text = f"{record.levelname.lower()}: {record.getMessage()}"
        if self.tracebacks and record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class _FirstTimeOnly(logging.Filter):
    """Drops a warning whose text was already shown (people read a warning once; an evaluation
    that applies the filters per segment and per quota set would repeat it a dozen times)."""

    def __init__(self) -> None:
        super().__init__()
        self.shown: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING:
            return True
        text = record.getMessage()
        if text in self.shown:
            return False
        self.shown.add(text)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (UTC, ISO 8601), ``level``, ``event``, ``message``, ``fields``."""

    def __init__(self, tracebacks: bool = False) -> None:
        super().__init__()
        self.tracebacks = tracebacks

    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "event": getattr(record, "event", "log"),
            "message": record.getMessage(),
            "fields": getattr(record, "fields", {}),
        }
        if self.tracebacks and record.exc_info:
            payload["traceback"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str, ensure_ascii=False)


def setup_logging(fmt: str = "text", quiet: bool = False, debug: bool = False) -> logging.Logger:
    """Route the ``recall`` logger to stderr in ``fmt`` ("text" or "json") at the level the flags ask for.

    Calling it again replaces the handler it installed (the CLI calls it per
    invocation). Records still propagate, so pytest's ``caplog`` sees them.
    """
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {FORMATS}, not {fmt!r}")
    logger = logging.getLogger(LOGGER)
    for handler in [h for h in logger.handlers if isinstance(h, _CurrentStderr)]:
        logger.removeHandler(handler)
    handler = _CurrentStderr()
    handler.setFormatter(JsonFormatter(debug) if fmt == "json" else TextFormatter(debug))
    if fmt == "text":
        handler.addFilter(_FirstTimeOnly())  # JSON keeps every record: shippers count them
    logger.addHandler(handler)
    if debug:
        level = logging.DEBUG
    elif quiet:
        level = logging.ERROR
    else:
        level = logging.INFO if fmt == "json" else logging.WARNING
    logger.setLevel(level)
    return logger
