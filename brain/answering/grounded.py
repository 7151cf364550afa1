"""Generative answers: the prompt contract, a `Generator`, and the citation policy.

The citation policy decides what reaches the customer after the model has written:

| the model's answer                         | what the customer gets                 |
|--------------------------------------------|----------------------------------------|
| cites only passages it was given           | the answer, citations renumbered       |
| cites a passage number it was not given    | the best entry quoted (fallback)       |
| cites nothing, but draws on passages       | the answer, citing those passages      |
| cites nothing, draws on none, but answers  | the best entry quoted (fallback)       |
| states a number found nowhere it was given | the best entry quoted (fallback)       |
| cites nothing and says it doesn't know     | handoff to a person                    |
| fails (model error, server down, timeout)  | the best entry quoted (fallback)       |

Before the model is asked: when the best entry is the company's own written answer (a FAQ
answer or a document section) longer than `quote_over_words` words
(DESKMATE_QUOTE_OVER_WORDS, 30), it is quoted whole (fallback reason `long_answer`). The
company wrote it for exactly this question, conditions and exceptions included; a one- or
two-sentence rewording by a small model drops them or turns them round (on the sample
shop's 40-80-word answers the starter model said "Yes, the card number is saved on your
account" from an entry saying "We never store your full card number"). Passages people
wrote about a subject (reviews, notes: FAQ-file entries whose title is not a question) and
short answers are still written from, and combined, by the model.

A number (a price, a phone number, a count of days) the answer states must appear in a
passage it was given, the question or the conversation, and a duration ("2 weeks") with
its unit: a small model that makes up a hotline number or a refund period is worse than
a quote.

Quoting is always grounded, and retrieval was already confident (the pipeline only asks
for an answer then), so an ungrounded generation costs wording, never correctness. Every
fallback is logged and counted in `deskmate_generation_fallbacks_total{reason}`.

With an `Attribution` (serving has one), the sources of an answer name every passage it
draws on (brain.answering.attribution, the judgement training labels are made with), the
model's own citations first: a reply that combines two reviews but marks one cites both.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from prometheus_client import Counter

from brain import compute
from brain.answering.backends import Answer, PartialCallback, quote
from brain.answering.batching import GenerationError, Generator
from brain.answering.registry import ModelVersion
from brain.policy import NOT_COVERED
from brain.prompt import (
    PASSAGES,
    Passage,
    cited_numbers,
    fit_prompt,
    renumber_citations,
    says_it_does_not_know,
    strip_citations,
)
from brain.types import Turn
from retrieval.faq import FaqEntry
from retrieval.index import FaqHit

log = logging.getLogger(__name__)

FALLBACKS = Counter(
    "deskmate_generation_fallbacks_total",
    "Answers not taken from the dialogue model as written, by reason",
    ["reason"],
)

Verdict = Literal["grounded", "bad_citation", "uncited", "abstained", "unsupported_number"]

# The starter model's replies run to about 20 words: an answer longer than a short reply
# can carry is quoted (DESKMATE_QUOTE_OVER_WORDS; 0 = never).
QUOTE_OVER_WORDS = 30

_DIGITS = re.compile(r"\d+")
# A number with a unit of time: "30 days", "2-year", "5 working days", "48 hours".
_DURATION = re.compile(
    r"\b(\d+)[\s-]?(?:(?:working|business|calendar)[\s-])?"
    r"(second|minute|hour|day|week|month|year)s?\b",
    re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"[.!?](?:\s*\[\d{1,2}\])*(?=\s|$)")


@dataclass(frozen=True, slots=True)
class CitationCheck:
    """What an answer cites, judged against the passages it was given."""

    verdict: Verdict
    cited: tuple[int, ...]  # valid passage numbers, in order of first citation


def check_citations(text: str, passage_count: int) -> CitationCheck:
    """Judge `text` against `passage_count` numbered passages (see the module table)."""
    numbers = cited_numbers(text)
    if any(not 1 <= number <= passage_count for number in numbers):
        return CitationCheck("bad_citation", ())
    if numbers:
        return CitationCheck("grounded", tuple(numbers))
    if says_it_does_not_know(text):
        return CitationCheck("abstained", ())
    return CitationCheck("uncited", ())


def _durations(text: str) -> set[tuple[str, str]]:
    return {(n.lstrip("0"), unit.lower()) for n, unit in _DURATION.findall(text)}


def unsupported_numbers(answer: str, sources: Sequence[str]) -> list[str]:
    """Numbers of `answer` (citations aside) that none of `sources` states: digit runs
    found nowhere, and durations ("2 weeks") whose number and unit go together nowhere
    (a "2-year guarantee" does not support "up to 2 weeks")."""
    text = strip_citations(answer)
    known = {run.lstrip("0") for source in sources for run in _DIGITS.findall(source)}
    missing = [run for run in _DIGITS.findall(text) if run.lstrip("0") not in known]
    stated = set().union(*(_durations(source) for source in sources))
    missing += [f"{n} {unit}" for n, unit in sorted(_durations(text)) if (n, unit) not in stated]
    return missing


def quoted_whole(entry: FaqEntry, over_words: int) -> bool:
    """Whether `entry`, as the best entry, is quoted rather than reworded: the company's
    own written answer (a FAQ answer or a document section, not a review or note) longer
    than `over_words` words (0: never)."""
    written = entry.document is not None or not entry.is_passage
    return over_words > 0 and written and len(entry.answer.split()) > over_words


def tidy(text: str) -> str:
    """Drop an unfinished last sentence (the token limit can cut one off)."""
    text = text.strip()
    if not text or text[-1] in ".!?]":
        return text
    ends = list(_SENTENCE_END.finditer(text))
    return text[: ends[-1].end()] if ends else text


_UNFINISHED_TAIL = re.compile(r"\S*$")  # a word (or number, or "[1") still being written
PARTIAL_INTERVAL_SECONDS = 0.5


class PartialAnswer:
    """Passes an answer's text so far to `on_partial` while it is generated: the first
    words at once, then at most every `interval` seconds, whole words only, without
    citation markers. Once the text so far fails a guard (a passage number not given, a
    number stated nowhere, "I don't know") nothing more is shown: the final reply (a
    quote, a handoff) replaces what was. Best effort: a failing callback (Redis down)
    ends the showing, never the answer."""

    def __init__(
        self,
        on_partial: PartialCallback,
        passage_count: int,
        sources: Sequence[str],
        interval: float = PARTIAL_INTERVAL_SECONDS,
    ) -> None:
        self.on_partial = on_partial
        self.passage_count = passage_count
        self.sources = sources
        self.interval = interval
        self.stopped = False
        self.shown = ""
        self._next = 0.0

    async def offer(self, text: str) -> None:
        """`text` is the whole answer so far (the generation's pieces joined)."""
        if self.stopped or time.monotonic() < self._next:
            return
        complete = _UNFINISHED_TAIL.sub("", text)
        if not complete.strip():
            return
        numbers = cited_numbers(complete)
        if (
            any(not 1 <= number <= self.passage_count for number in numbers)
            or says_it_does_not_know(complete)
            or unsupported_numbers(complete, self.sources)
        ):
            self.stopped = True
            return
        words = strip_citations(complete)
        if words == self.shown:
            return
        try:
            await self.on_partial(words)
        except Exception as exc:  # partials are best effort; the answer goes on
            log.warning("partial answer not passed on; showing no more of it: %s", exc)
            self.stopped = True
            return
        self.shown = words
        self._next = time.monotonic() + self.interval


GeneratorLoader = Callable[[ModelVersion | None], Awaitable[Generator]]
# (answer text, the passages it was given) -> 1-based numbers of the passages it draws on
Attribution = Callable[[str, Sequence[FaqHit]], Sequence[int]]
SWAP_GRACE_SECONDS = 30.0  # longer than any one batch runs


class GenerativeBackend:
    """An `AnswerBackend` that has a `Generator` write the answer from the FAQ passages."""

    def __init__(
        self,
        generator: Generator,
        bot_name: str = "deskmate",
        max_passages: int = PASSAGES,
        reload: GeneratorLoader | None = None,
        attribution: Attribution | None = None,
        quote_over_words: int = 0,
    ) -> None:
        self.generator = generator
        self.attribution = attribution
        self.quote_over_words = quote_over_words
        self.version = generator.version
        self.bot_name = bot_name
        self.max_passages = max_passages
        self._reload = reload

    async def use_version(self, version: ModelVersion | None) -> None:
        """Serve a registered version (None: the base model) without a restart.

        The new generator loads beside the old one; requests already handed to the old
        one finish there, later ones go to the new one, then the old one is closed.
        Called by the model watcher when `deskmate model promote/rollback` changes
        `model:active`.
        """
        if self._reload is None:
            log.info("this model backend cannot switch versions; keeping %s", self.version)
            return
        fresh = await self._reload(version)
        old, self.generator = self.generator, fresh
        self.version = fresh.version
        log.warning("now serving %s (was %s)", fresh.version, old.version)
        await asyncio.sleep(SWAP_GRACE_SECONDS)  # let batches in flight on `old` finish
        await old.aclose()

    async def answer(
        self,
        question: str,
        hits: Sequence[FaqHit],
        history: Sequence[Turn],
        *,
        on_partial: PartialCallback | None = None,
    ) -> Answer:
        hits = list(hits[: self.max_passages])
        if hits and quoted_whole(hits[0].entry, self.quote_over_words):
            return self._fallback(hits, "long_answer")
        fitted = fit_prompt(
            question,
            [Passage.from_hit(hit) for hit in hits],
            history,
            self.generator.count_tokens,
            self.generator.context_tokens,
            self.bot_name,
        )
        if fitted.history_dropped or fitted.passages_dropped:
            log.info(
                "prompt fitted to %d tokens: dropped %d history turns, %d passages",
                self.generator.context_tokens,
                fitted.history_dropped,
                fitted.passages_dropped,
            )
        given = hits[: len(fitted.passages)]
        sources = [
            question,
            *(f"{p.title} {p.text}" for p in fitted.passages),
            *(t.text for t in history),
        ]
        stream = getattr(self.generator, "stream", None)
        try:
            if on_partial is None or stream is None:
                [text] = await self.generator.generate([fitted.messages])
            else:
                partial = PartialAnswer(on_partial, len(given), sources)
                pieces: list[str] = []
                async for piece in stream(fitted.messages):
                    pieces.append(piece)
                    await partial.offer("".join(pieces))
                text = "".join(pieces).strip()
        except GenerationError as exc:
            log.warning("generation failed, quoting the best FAQ entry instead: %s", exc)
            return self._fallback(hits, "error")
        text = tidy(text)
        check = check_citations(text, len(given))
        if check.verdict != "abstained" and unsupported_numbers(text, sources):
            check = CitationCheck("unsupported_number", ())
        if check.verdict in ("grounded", "uncited") and self.attribution is not None:
            used = await compute.run(self.attribution, strip_citations(text), given)
            extra = [number for number in used if number not in check.cited]
            if extra and check.verdict == "uncited":
                text = " ".join([text, *(f"[{number}]" for number in extra)])
            if extra:
                check = CitationCheck("grounded", (*check.cited, *extra))
        if check.verdict == "grounded":
            mapping = {number: rank for rank, number in enumerate(check.cited, start=1)}
            return Answer(
                renumber_citations(text, mapping),
                tuple(given[number - 1] for number in check.cited),
                model_version=self.version,
            )
        if check.verdict == "abstained":
            FALLBACKS.labels("abstained").inc()
            log.info("the model found no answer in the passages; handing off")
            return Answer(
                text,
                (),
                action="handoff",
                reason=NOT_COVERED,
                model_version=self.version,
            )
        # Not the text: a model's answer can repeat what the customer wrote.
        log.info("model answer %s; quoting the best FAQ entry instead", check.verdict)
        return self._fallback(hits, check.verdict)

    def _fallback(self, hits: Sequence[FaqHit], reason: str) -> Answer:
        FALLBACKS.labels(reason).inc()
        return quote(hits, model_version=f"quote (fallback from {self.version}: {reason})")

    async def aclose(self) -> None:
        await self.generator.aclose()


class UnavailableModelBackend:
    """Quotes the best entry because the configured model could not be loaded or reached.

    Built at start when loading fails, so the bot keeps answering; every answer is
    counted as a fallback with reason "unavailable" and logged once at start.
    """

    def __init__(self, intended: str, error: str) -> None:
        self.version = f"quote (fallback from {intended}: unavailable)"
        self.error = error
        log.error("dialogue model %s unavailable, answering by quoting: %s", intended, error)

    async def answer(
        self,
        question: str,
        hits: Sequence[FaqHit],
        history: Sequence[Turn],
        *,
        on_partial: PartialCallback | None = None,
    ) -> Answer:
        FALLBACKS.labels("unavailable").inc()
        return quote(hits, model_version=self.version)

    async def aclose(self) -> None:
        pass
