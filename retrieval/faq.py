"""FAQ entries and the loaders for JSONL, CSV and Markdown FAQ files.

Every loader reads the whole file before returning, so a malformed line stops the
import before anything is built: nothing is imported half-way.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAX_FIELD_CHARS = 20_000
PASSAGE_SENTENCE_MIN_WORDS = 3  # shorter fragments ("Great!") say too little to search by
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+")


class FaqFormatError(ValueError):
    """A FAQ file could not be read; the message names the file and line."""

    def __init__(self, path: Path | str, line: int | None, message: str) -> None:
        self.path = str(path)
        self.line = line
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True, slots=True)
class FaqEntry:
    """One FAQ entry: a canonical question, its answer and other phrasings of it."""

    id: str
    question: str
    answer: str
    alternates: tuple[str, ...] = ()
    url: str | None = None
    # The document (file path or URL) a passage was split from; None for FAQ entries.
    document: str | None = None
    source: str = field(default="", compare=False)

    @property
    def title(self) -> str:
        return self.question

    @property
    def phrasings(self) -> tuple[str, ...]:
        """The ways a customer may ask for this entry: the question first, then alternates."""
        return (self.question, *self.alternates)

    @property
    def is_passage(self) -> bool:
        """Knowledge that is not a question and its answer: a review, a note, an article
        section. Its title is a label ("Parking: guest review"), not a question, so what
        it is found by is what its text says. A document's section is a passage whatever
        its heading ("Returns › Can I return sale items?")."""
        if self.document:
            return bool(self.answer)
        return bool(self.answer) and not self.question.rstrip().endswith("?")

    @property
    def search_texts(self) -> tuple[str, ...]:
        """The texts embedded for this entry: its phrasings and, for a passage, each of its
        sentences (a question about one detail matches the sentence that mentions it; the
        passage as a whole is about many things)."""
        if not self.is_passage:
            return self.phrasings
        return (*self.phrasings, *sentences(self.answer))

    def content_hash(self) -> str:
        fields: list[object] = [self.id, self.question, self.answer, list(self.alternates)]
        fields.append(self.url)
        if self.document:  # FAQ entries hash as before, so their indexes are not rebuilt
            fields.append(self.document)
        payload = json.dumps(fields, ensure_ascii=False)
        return hashlib.sha256(payload.encode()).hexdigest()

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {
            "id": self.id,
            "question": self.question,
            "answer": self.answer,
            "alternates": list(self.alternates),
        }
        if self.url:
            data["url"] = self.url
        if self.document:
            data["document"] = self.document
        return data


def sentences(text: str) -> tuple[str, ...]:
    """The distinct sentences of `text` that say something (PASSAGE_SENTENCE_MIN_WORDS+)."""
    found = (
        sentence.strip()
        for sentence in _SENTENCE_BREAK.split(text)
        if len(sentence.split()) >= PASSAGE_SENTENCE_MIN_WORDS
    )
    return tuple(dict.fromkeys(found))


def stable_id(question: str) -> str:
    """An id derived from the question text, for sources that carry none."""
    slug = re.sub(r"[^a-z0-9]+", "-", question.lower()).strip("-")[:40].strip("-")
    digest = hashlib.sha1(question.strip().lower().encode()).hexdigest()[:6]
    return f"{slug}-{digest}" if slug else digest


def _text(value: object, path: Path, line: int, name: str, *, required: bool) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise FaqFormatError(path, line, f"field {name!r} is missing or empty")
        return ""
    if not isinstance(value, str | int):
        raise FaqFormatError(path, line, f"field {name!r} must be text, got {type(value).__name__}")
    text = str(value).strip()
    _check_encodable(text, path, line, name)
    if len(text) > MAX_FIELD_CHARS:
        raise FaqFormatError(
            path, line, f"field {name!r} is {len(text)} characters (limit {MAX_FIELD_CHARS})"
        )
    return text


def _alternates(value: object, path: Path, line: int) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        items: Iterable[object] = value.split("|")
    elif isinstance(value, list):
        items = value
    else:
        raise FaqFormatError(path, line, "field 'alternates' must be a list of strings")
    out = []
    for item in items:
        if not isinstance(item, str):
            raise FaqFormatError(path, line, "field 'alternates' must be a list of strings")
        if item.strip():
            _check_encodable(item, path, line, "alternates")
            out.append(item.strip())
    return tuple(out)


def _check_encodable(text: str, path: Path, line: int, name: str) -> None:
    """JSON may escape half of a character ("\\ud83d" alone): such text cannot be saved
    or shown, so the line is reported rather than the index failing later."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise FaqFormatError(
            path, line, f"field {name!r} holds half a character (a lone \\ud800-\\udfff escape)"
        ) from None


def _entry(record: dict[str, object], path: Path, line: int) -> FaqEntry:
    question = _text(record.get("question"), path, line, "question", required=True)
    # An entry without an answer is still retrievable (an intent); the brain hands off on it.
    answer = _text(record.get("answer"), path, line, "answer", required=False)
    raw_id = _text(record.get("id"), path, line, "id", required=False)
    url = _text(record.get("url"), path, line, "url", required=False) or None
    return FaqEntry(
        id=raw_id or stable_id(question),
        question=question,
        answer=answer,
        alternates=_alternates(record.get("alternates"), path, line),
        url=url,
        source=f"{path.name}:{line}",
    )


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise FaqFormatError(path, None, f"cannot read file ({exc.strerror})") from exc
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise FaqFormatError(path, line, "not valid UTF-8 text (is this a binary file?)") from exc


def read_json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSONL file; errors name file:line."""
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise FaqFormatError(path, number, f"invalid JSON ({exc.msg})") from exc
        except RecursionError:
            raise FaqFormatError(path, number, "invalid JSON (nested too deeply)") from None
        if not isinstance(record, dict):
            raise FaqFormatError(path, number, "each line must be a JSON object")
        yield number, record


def load_jsonl(path: Path) -> list[FaqEntry]:
    return [_entry(record, path, number) for number, record in read_json_lines(path)]


def load_csv(path: Path) -> list[FaqEntry]:
    reader = csv.DictReader(io.StringIO(_read_text(path)))
    try:
        names = reader.fieldnames
    except csv.Error as exc:
        raise FaqFormatError(path, 1, f"not valid CSV ({exc})") from None
    header = [name.strip().lower() for name in names or []]
    missing = {"question", "answer"} - set(header)
    if missing:
        raise FaqFormatError(
            path, 1, f"header must name columns question and answer (missing: {sorted(missing)})"
        )
    reader.fieldnames = header
    entries = []
    try:
        for record in reader:
            line = reader.line_num
            if None in record:
                raise FaqFormatError(path, line, "more cells than header columns")
            entries.append(_entry(dict(record), path, line))
    except csv.Error as exc:  # a cell over the csv module's size limit, say
        raise FaqFormatError(path, reader.line_num, f"not valid CSV ({exc})") from None
    return entries


_HEADING = re.compile(r"^##\s+(?P<question>.+?)(?:\s+\{#(?P<id>[\w.-]+)\})?\s*$")
_ALSO = re.compile(r"^also:\s*(?P<text>.+)$", re.IGNORECASE)


def load_markdown(path: Path) -> list[FaqEntry]:
    """One entry per `## Question` heading; `Also: ...` lines right under it are alternates.

    An explicit id may follow the heading as `{#some-id}`.
    """
    records: list[tuple[int, dict[str, object]]] = []
    current: dict[str, object] | None = None
    body: list[str] = []

    def close() -> None:
        if current is not None:
            current["answer"] = "\n".join(body).strip()

    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        match = _HEADING.match(line)
        if match:
            close()
            current = {"question": match["question"], "id": match["id"], "alternates": []}
            body = []
            records.append((number, current))
            continue
        if current is None:
            continue  # preamble before the first question
        also = _ALSO.match(line.strip())
        if also and not "".join(body).strip():
            alternates = current["alternates"]
            assert isinstance(alternates, list)
            alternates.append(also["text"])
            continue
        body.append(line)
    close()
    return [_entry(record, path, number) for number, record in records]


LOADERS = {".jsonl": load_jsonl, ".csv": load_csv, ".md": load_markdown, ".markdown": load_markdown}


def load_faq_file(path: Path | str) -> list[FaqEntry]:
    path = Path(path)
    loader = LOADERS.get(path.suffix.lower())
    if loader is None:
        raise FaqFormatError(
            path, None, f"unknown FAQ format {path.suffix!r} (use .jsonl, .csv or .md)"
        )
    return loader(path)


def load_faq(paths: Sequence[Path | str]) -> list[FaqEntry]:
    """Load and validate every file; ids must be unique across all of them."""
    entries: list[FaqEntry] = []
    seen: dict[str, FaqEntry] = {}
    for path in paths:
        for entry in load_faq_file(path):
            if entry.id in seen:
                first = seen[entry.id].source
                file, _, line = entry.source.rpartition(":")
                raise FaqFormatError(
                    Path(path).parent / file,
                    int(line),
                    f"duplicate FAQ id {entry.id!r} (first defined at {first})",
                )
            seen[entry.id] = entry
            entries.append(entry)
    if not entries:
        raise FaqFormatError(", ".join(str(p) for p in paths), None, "no FAQ entries found")
    return entries
