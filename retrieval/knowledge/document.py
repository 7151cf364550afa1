"""A document read from any format: a title, a location and its sections by heading."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass


class DocumentError(ValueError):
    """A document or web page could not be used; `reason` says why in a few words.

    The message names the document (file path or URL), never its content.
    """

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"{name}: {reason}")


@dataclass(frozen=True, slots=True)
class Section:
    """The text under one heading. `path` is the headings from the top of the document
    down to this one (empty for text before the first heading); `anchor` is the id of the
    heading in the page (HTML `id`, a Markdown heading's slug, `page=N` for a PDF)."""

    path: tuple[str, ...]
    text: str
    anchor: str = ""


@dataclass(frozen=True, slots=True)
class Document:
    """A readable document. `key` identifies it across syncs (a file path relative to the
    folder it was found in, or a URL); `url` is the link answers cite, if it has one;
    `notes` are things worth telling the importer (a PDF page without a text layer)."""

    key: str
    title: str
    sections: tuple[Section, ...]
    url: str | None = None
    notes: tuple[str, ...] = ()


def slug(text: str, limit: int = 60) -> str:
    """A heading as an anchor the way help centers and Markdown renderers make them:
    lower case, accents dropped, words joined by hyphens."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    cleaned = re.sub(r"[^\w\s-]", "", ascii_text.lower())
    return re.sub(r"[\s_-]+", "-", cleaned).strip("-")[:limit].strip("-")


def document_id(key: str) -> str:
    """A short stable id of a document: readable slug of its key plus a hash of the key,
    so two documents with similar names never share ids."""
    digest = hashlib.sha1(key.encode()).hexdigest()[:6]
    stem = key.rsplit("/", 1)[-1].rsplit(".", 1)[0] if "/" in key else key.rsplit(".", 1)[0]
    name = slug(stem, 40) or "doc"
    return f"{name}-{digest}"
