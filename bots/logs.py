"""deskmate's logging: one handler on stderr that masks secrets and lets no library write
a customer's message or a token into the log, whatever DESKMATE_LOG_LEVEL says.

deskmate's own modules log ids, actions and reasons, never message text. The client
libraries do not hold back below WARNING: slack_bolt logs the whole body of a request
with a bad signature at INFO, slack_sdk and python-telegram-bot log API calls with their
parameters at DEBUG, httpx/httpcore/urllib3/aiohttp log requests, and bolt gives its
loggers the root's level itself, so raising their loggers' levels is not enough. The
handler drops their records below WARNING (`LibraryFloor`) instead.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Final, TextIO

from brain.privacy import SecretFilter
from brain.settings import Settings

# Loggers that may carry request or response bodies below WARNING. "deskmate" is
# slack_bolt's per-request logger, named after the Bolt app.
BODY_LOGGING_LIBRARIES: Final = (
    "slack_bolt",
    "slack_sdk",
    "deskmate",
    "telegram",
    "httpx",
    "httpcore",
    "urllib3",
    "aiohttp",
    "openai",
    "hpack",
    "websockets",
    "websocket",
)
FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class LibraryFloor(logging.Filter):
    """Drops records below `level` from the loggers named (and their children: `a.b`,
    and bolt's `app:Class` loggers), whatever level those loggers were given."""

    def __init__(self, names: Iterable[str], level: int = logging.WARNING) -> None:
        super().__init__()
        self.names = tuple(names)
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= self.level:
            return True
        name = record.name
        return not any(
            name == quiet or name.startswith((quiet + ".", quiet + ":")) for quiet in self.names
        )


def setup_logging(settings: Settings, stream: TextIO | None = None) -> logging.Handler:
    """Log to `stream` (stderr) at DESKMATE_LOG_LEVEL: secrets masked, body-logging
    libraries held to WARNING. Returns the handler."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(LibraryFloor(BODY_LOGGING_LIBRARIES))
    handler.addFilter(SecretFilter(settings.secrets()))
    logging.basicConfig(level=settings.log_level, handlers=[handler], force=True)
    logging.getLogger("bm25s").setLevel(max(logging.WARNING, logging.getLogger().level))
    for name in BODY_LOGGING_LIBRARIES:
        logger = logging.getLogger(name)
        logger.setLevel(max(logging.WARNING, logger.level))  # and not even formatted
    return handler
