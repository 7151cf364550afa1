"""Normalising user text: whatever bytes arrive, the pipeline sees clean Unicode."""

from __future__ import annotations

import re
import unicodedata

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\ufeff]")
_SPACES = re.compile(r"[ \t]+")
_BLANK_LINES = re.compile(r"\n{3,}")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
REPLACEMENT = "\ufffd"


def replace_surrogates(text: str) -> str:
    """`text` with lone surrogates (a client cutting a string mid-emoji, JSON's "\\ud800")
    replaced by U+FFFD: they cannot be encoded as UTF-8, so Redis, logs and files would
    refuse the whole message."""
    return _SURROGATE.sub(REPLACEMENT, text)


def normalize_text(raw: str | bytes) -> str:
    """Decode (invalid UTF-8 becomes U+FFFD), drop control characters, NFC, tidy spaces."""
    if isinstance(raw, bytes):
        text = raw.decode("utf-8", errors="replace")
    else:
        # Lone surrogates (broken clients) cannot be encoded later; replace them now.
        text = replace_surrogates(raw)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub(" ", unicodedata.normalize("NFC", text))
    text = _SPACES.sub(" ", text)
    text = "\n".join(line.strip() for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", text).strip()
