"""Keeping secrets out of logs: a logging filter that masks tokens before anything is written."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

# Shapes of platform credentials, masked even when deskmate was not told the value.
_TOKEN_SHAPES = re.compile(
    r"\d{6,12}:[A-Za-z0-9_-]{30,}"  # Telegram bot token (in URLs it follows "bot")
    r"|xox[abposr]-[A-Za-z0-9-]{10,}"  # Slack bot/user tokens
    r"|xapp-[A-Za-z0-9-]{10,}"  # Slack app-level token
    r"|\bsk-[A-Za-z0-9_-]{16,}"  # OpenAI-style API keys
)
MASK = "***"


def redact_secrets(text: str, secrets: Iterable[str] = ()) -> str:
    for secret in secrets:
        if secret and len(secret) >= 6:
            text = text.replace(secret, MASK)
    return _TOKEN_SHAPES.sub(MASK, text)


class SecretFilter(logging.Filter):
    """Rewrites each record's message with secrets masked; attach it to log handlers."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact_secrets(message, self.secrets)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True
