"""Structured logs: one JSON object per line, extras bounded by ``labels.log_fields``."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from router.observability.labels import log_fields


class JsonFormatter(logging.Formatter):
    """One JSON object per line; only the bounded extras of ``log_fields`` are copied."""

    def format(self, record: logging.LogRecord) -> str:
        """Render a record as JSON."""
        data: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        data.update(log_fields(record.__dict__))
        if record.exc_info and record.exc_info[0] is not None:
            data["exception"] = record.exc_info[0].__name__
        return json.dumps(data, default=str)


def configure_logging(level: str) -> None:
    """JSON logs on stderr at the given level."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
