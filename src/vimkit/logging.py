"""Log set-up: plain lines by default, one JSON object per line with ``log_json``."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from vimkit.config import Settings


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            from vimkit.api.middleware import request_id_var

            record.request_id = request_id_var.get()
        return True


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "requestId": getattr(record, "request_id", "-"),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(settings: Settings) -> None:
    root = logging.getLogger("vimkit")
    root.setLevel(settings.log_level.upper())
    for handler in list(root.handlers):
        if getattr(handler, "_vimkit", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler._vimkit = True  # type: ignore[attr-defined]
    handler.addFilter(_RequestIdFilter())
    if settings.log_json:
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"))
    root.addHandler(handler)
    root.propagate = False
