"""How the long-running processes log: readable lines, or one JSON object a line.

``--log-format json`` gives each record as ``{"ts", "level", "logger", "message"}`` plus the
ids a record carries as fields (``extra={"job_id": ...}`` at the call site: ``job_id``,
``contributor_id``, ``node_id``), and ``exception`` when there is one: a log shipper parses
lines, never sentences. The agent's ``--events json`` (typed events on stdout, for the
desktop app) is separate and unchanged: logs go to stderr either way.
"""

from __future__ import annotations

import json
import logging
import sys

from compound.agent.closed_output import LogHandler

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(message)s"
ID_FIELDS = ("job_id", "contributor_id", "node_id")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in ID_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def configure(level: str, log_format: str) -> None:
    """The root logger's one handler (stderr), in ``log_format`` ("text" or "json"); once
    stderr's reader is gone, logs are dropped (see agent.closed_output)."""
    handler = LogHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
