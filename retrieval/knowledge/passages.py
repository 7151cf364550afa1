"""Splitting documents into passages, and finding passages that repeat across documents.

A passage is one section of a document, or a part of a long one, as an `FaqEntry` the
index serves like any other: title "Document › Section", text at most PASSAGE_MAX_WORDS
words (MiniLM reads 256 word-pieces, about 180 English words; the prompt gets a few
passages), and an id made of the document and its heading path, so a passage keeps its
id, its embeddings and its citations for as long as its section exists.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from retrieval.faq import FaqEntry
from retrieval.knowledge.document import Document, document_id, slug

PASSAGE_MAX_WORDS = 150
TITLE_SEPARATOR = " › "
NEAR_DUPLICATE_JACCARD = 0.8
_SHINGLE_WORDS = 4
_SKETCH = 8  # smallest shingle hashes kept per passage to find candidate pairs
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def _chunks(text: str, limit: int = PASSAGE_MAX_WORDS) -> list[str]:
    """Paragraphs packed into chunks of at most `limit` words; a longer paragraph is cut
    between sentences, a longer sentence between words."""
    pieces: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text):
        paragraph = paragraph.strip()
        if not paragraph:
            continue
        if len(paragraph.split()) <= limit:
            pieces.append(paragraph)
            continue
        for sentence in _SENTENCE.split(paragraph):
            words = sentence.split()
            pieces.extend(" ".join(words[i : i + limit]) for i in range(0, len(words), limit))
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for piece in pieces:
        words = len(piece.split())
        if current and size + words > limit:
            chunks.append("\n\n".join(current))
            current, size = [], 0
        current.append(piece)
        size += words
    if current:
        chunks.append("\n\n".join(current))
    return chunks


def passages(document: Document) -> list[FaqEntry]:
    """The document's passages, in reading order, with stable ids and section links."""
    base = document_id(document.key)
    taken: set[str] = set()
    out: list[FaqEntry] = []
    for section in document.sections:
        heading_path = "/".join(slug(name, 40) or "section" for name in section.path) or "intro"
        title = TITLE_SEPARATOR.join([document.title, *section.path])
        url = document.url
        if url and section.anchor:
            url = f"{url.split('#')[0]}#{section.anchor}"
        for part, text in enumerate(_chunks(section.text), start=1):
            ident = f"{base}#{heading_path}" + (f"~{part}" if part > 1 else "")
            while ident in taken:  # the same heading twice in one document
                ident += "+"
            taken.add(ident)
            out.append(
                FaqEntry(
                    id=ident,
                    question=title,
                    answer=text,
                    url=url,
                    document=document.key,
                    source=document.key,
                )
            )
    return out


@dataclass(frozen=True, slots=True)
class NearDuplicate:
    """Two passages of different documents that say nearly the same thing."""

    first: str
    second: str
    similarity: float  # Jaccard similarity of their 4-word shingles


def _shingles(text: str) -> set[int]:
    words = re.findall(r"\w+", text.lower())
    if len(words) < _SHINGLE_WORDS:
        return {hash(" ".join(words))} if words else set()
    return {
        int.from_bytes(
            hashlib.blake2b(
                " ".join(words[i : i + _SHINGLE_WORDS]).encode(), digest_size=8
            ).digest()
        )
        for i in range(len(words) - _SHINGLE_WORDS + 1)
    }


def near_duplicates(
    entries: Iterable[FaqEntry], threshold: float = NEAR_DUPLICATE_JACCARD
) -> list[NearDuplicate]:
    """Pairs of passages from different documents whose texts overlap by `threshold` or
    more. Candidates share one of their few smallest shingle hashes (a bottom-k sketch),
    so the cost grows with the number of passages, not its square."""
    items = [e for e in entries if e.document]
    shingles: list[set[int]] = [_shingles(e.answer) for e in items]
    buckets: dict[int, list[int]] = defaultdict(list)
    for number, found in enumerate(shingles):
        for value in sorted(found)[:_SKETCH]:
            buckets[value].append(number)
    checked: set[tuple[int, int]] = set()
    pairs: list[NearDuplicate] = []
    for members in buckets.values():
        if len(members) > 200:  # boilerplate every page repeats; pairs would explode
            continue
        for i, a in enumerate(members):
            for b in members[i + 1 :]:
                if (a, b) in checked or items[a].document == items[b].document:
                    continue
                checked.add((a, b))
                union = len(shingles[a] | shingles[b])
                similarity = len(shingles[a] & shingles[b]) / union if union else 0.0
                if similarity >= threshold:
                    pairs.append(NearDuplicate(items[a].id, items[b].id, round(similarity, 3)))
    return pairs


def unique_ids(entries: Sequence[FaqEntry]) -> list[FaqEntry]:
    """Entries whose ids collide with an earlier one get a suffix (two sources naming the
    same document); FAQ ids, validated before, are never changed."""
    from dataclasses import replace

    seen: set[str] = set()
    out = []
    for entry in entries:
        ident = entry.id
        while ident in seen:
            ident += "+"
        seen.add(ident)
        out.append(entry if ident == entry.id else replace(entry, id=ident))
    return out
