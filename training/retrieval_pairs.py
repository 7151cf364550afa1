"""Phrasings for the retrieval model from exported conversations: what customers asked,
and the FAQ entry that turned out to answer it.

`deskmate faq learn --transcripts FILE` adds them to the FAQ's alternates. Three signals,
each naming the entry without anyone labelling anything:

- a clarifying menu answered with its number: the question that led to the menu -> the
  entry picked (the customer told us which entry they meant);
- an agent's reply in a handoff that gives an entry's answer (token-F1 against the entry's
  answer at least `AGENT_MATCH`, agents often paste or adapt it): the customer's question
  -> that entry (exactly the questions retrieval missed);
- a bot answer the customer rated 👍: the question -> the first entry it cited.

Rated-down answers, corrections and agent replies that match no entry name no entry, so
they teach retrieval nothing (the dialogue model learns from them instead).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from brain.evaluation.metrics import answer_tokens, counts_f1
from brain.pipeline import menu_choice
from retrieval.faq import FaqEntry
from training.transcripts import Conversation

AGENT_MATCH = 0.6  # token-F1 of an agent's reply against an entry's answer to count as it


@dataclass(frozen=True, slots=True)
class Phrasing:
    text: str  # what the customer asked
    entry_id: str  # the entry that answers it
    signal: str  # "clarify_choice" | "agent_answer" | "rated_up"


def phrasings_from_conversations(
    conversations: Sequence[Conversation], entries: Sequence[FaqEntry]
) -> tuple[list[Phrasing], Counter[str]]:
    """Phrasings of entries in `entries` found in `conversations`, de-duplicated, and how
    many each signal gave."""
    answers = {entry.id: Counter(answer_tokens(entry.answer)) for entry in entries if entry.answer}
    found: list[Phrasing] = []
    seen: set[tuple[str, str]] = set()

    def add(text: str, entry_id: str, signal: str) -> None:
        key = (" ".join(text.lower().split()), entry_id)
        if text.strip() and entry_id in answers and key not in seen:
            seen.add(key)
            found.append(Phrasing(text.strip(), entry_id, signal))

    for conversation in conversations:
        question = ""  # the customer's last question (not a menu choice)
        menu: tuple[str, tuple[str, ...]] | None = None  # (question, entries offered)
        for message in conversation.messages:
            if message.role == "user":
                number = menu_choice(message.content.strip())
                if number is not None and menu is not None:
                    if 1 <= number <= len(menu[1]):
                        add(menu[0], menu[1][number - 1], "clarify_choice")
                elif number is None:
                    question = message.content
                menu = None
            elif message.role == "agent" and question:
                entry_id = _answered_entry(message.content, answers)
                if entry_id is not None:
                    add(question, entry_id, "agent_answer")
            elif message.action == "clarify" and question:
                menu = (question, message.sources)
            elif message.rating == "up" and message.action in ("", "answer") and message.sources:
                add(question, message.sources[0], "rated_up")
    return found, Counter(phrasing.signal for phrasing in found)


def _answered_entry(reply: str, answers: dict[str, Counter[str]]) -> str | None:
    """The entry whose answer `reply` gives (token-F1 >= AGENT_MATCH, the best), if any."""
    tokens = Counter(answer_tokens(reply))
    best, best_f1 = None, AGENT_MATCH
    for entry_id, answer in answers.items():
        f1 = counts_f1(tokens, answer)
        if f1 >= best_f1:
            best, best_f1 = entry_id, f1
    return best
