"""From conversations to training examples: pick pairs, ground them, tokenize them.

Pairs: a customer's question and the answer to learn. Learned answers are agent answers,
staff corrections (an agent answering right after the bot in the same exchange, or a
`correction` written on a bot message in the export) and bot answers rated 👍. Bot answers
rated 👎 are never learned, nor unrated ones unless asked, nor the bot's canned texts
(handoff, clarify, greetings). Near-empty answers and repeated (question, answer) pairs are
dropped.

Examples use the prompt contract (brain.prompt.build_messages) with passages retrieved
over the current FAQ, exactly as at serve time (the question read in the context of the
conversation before it: brain.pipeline.search_in_conversation). An answer is taught to
cite, as [n], every passage it draws on (brain.answering.attribution, the judgement
serving applies to the model's answers too). The loss covers the assistant's answer only.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast, get_args

from brain.answering.attribution import FLOOR_SIMILARITY, drawn_on
from brain.evaluation.metrics import answer_tokens
from brain.pipeline import chosen_option, search_in_conversation
from brain.prompt import Passage, PromptFormatError, build_messages, cited_numbers, render_prompt
from brain.types import Action, Role, Turn
from retrieval.retriever import Retriever
from training.transcripts import Conversation, Message

ACTIONS = frozenset(get_args(Action))  # the bot's actions a transcript records

IGNORE = -100  # label of tokens without loss (the prompt, padding)


@dataclass(frozen=True, slots=True)
class Pair:
    """A question, the conversation before it, and the answer to learn."""

    conversation_id: str
    question: str
    history: tuple[Turn, ...]
    answer: str
    kind: str  # "agent" | "correction" | "rated_up" | "unrated"


@dataclass
class PickStats:
    """What pair picking kept and dropped, by reason."""

    kept: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)

    def to_json(self) -> dict[str, dict[str, int]]:
        return {"kept": dict(self.kept), "dropped": dict(self.dropped)}


def _blocks(messages: Sequence[Message]) -> list[tuple[str, list[Message]]]:
    """Consecutive messages grouped by side: ("user", [...]) / ("answer", [...])."""
    blocks: list[tuple[str, list[Message]]] = []
    for message in messages:
        side = "user" if message.role == "user" else "answer"
        if blocks and blocks[-1][0] == side:
            blocks[-1][1].append(message)
        else:
            blocks.append((side, [message]))
    return blocks


def _target(block: list[Message], include_unrated: bool) -> tuple[str, str]:
    """(answer, kind) to learn from one answer block, or ("", reason dropped)."""
    agent = [m.content for m in block if m.role == "agent" and m.content.strip()]
    if agent:
        bot_first = block[0].role == "assistant"
        return "\n".join(agent), "correction" if bot_first else "agent"
    bot = block[-1]
    if bot.correction.strip():
        return bot.correction, "correction"
    if bot.action not in ("", "answer"):
        return "", "not_an_answer"
    if bot.rating == "down":
        return "", "rated_down"
    if bot.rating == "up":
        return bot.content, "rated_up"
    return (bot.content, "unrated") if include_unrated else ("", "unrated")


def pick_pairs(
    conversations: Sequence[Conversation], min_words: int = 2, include_unrated: bool = False
) -> tuple[list[Pair], PickStats]:
    """Training pairs from conversations (already redacted), with counts of what was dropped."""
    stats = PickStats()
    pairs: list[Pair] = []
    seen: set[tuple[str, ...]] = set()
    for conversation in conversations:
        history: list[Turn] = []
        question = ""
        for side, block in _blocks(conversation.messages):
            if side == "user":
                question = "\n".join(m.content for m in block if m.content.strip())
                continue
            answer, kind = _target(block, include_unrated)
            if not answer:
                stats.dropped[kind] += 1
            elif not question.strip():
                stats.dropped["no_question"] += 1
            elif len(answer.split()) < min_words:
                stats.dropped["near_empty"] += 1
            else:
                key = (*answer_tokens(question), "\x00", *answer_tokens(answer))
                if key in seen:
                    stats.dropped["duplicate"] += 1
                else:
                    seen.add(key)
                    stats.kept[kind] += 1
                    pairs.append(
                        Pair(
                            str(conversation.meta.get("id", "")),
                            question,
                            tuple(history),
                            answer,
                            kind,
                        )
                    )
            if question:
                history.append(Turn("user", question))
                question = ""
            for message in block:
                role: Role = "agent" if message.role == "agent" else "assistant"
                # What the bot did (a clarifying menu and what it offered): a number
                # that follows picks from it (brain.pipeline.chosen_option).
                action = cast("Action", message.action) if message.action in ACTIONS else None
                history.append(Turn(role, message.content, action=action, sources=message.sources))
    return pairs, stats


def split_pairs(
    pairs: Sequence[Pair], fraction: float, seed: int = 0
) -> tuple[list[Pair], list[Pair]]:
    """(train, held-out), split by conversation so no conversation is in both."""
    ids = sorted({p.conversation_id for p in pairs})
    random.Random(seed).shuffle(ids)
    held = set(ids[: round(len(ids) * fraction)]) if fraction > 0 else set()
    return [p for p in pairs if p.conversation_id not in held], [
        p for p in pairs if p.conversation_id in held
    ]


@dataclass(frozen=True, slots=True)
class Example:
    """One question with its passages and history, and the answer to learn."""

    question: str
    passages: tuple[Passage, ...]
    history: tuple[Turn, ...]
    answer: str  # the target, with a citation added when grounded
    reference: str  # the answer as written
    passage_ids: list[str]
    source_id: str | None  # the passage the reference is grounded in
    conversation_id: str = ""
    kind: str = ""
    bot_name: str = "deskmate"

    def messages(self, passage_chars: int = 0, history: bool = True) -> list[dict[str, str]]:
        """The prompt per the contract; passages cut to `passage_chars` (0 = whole)."""
        passages = [Passage(p.title, _clip(p.text, passage_chars)) for p in self.passages]
        turns = self.history if history else ()
        return build_messages(self.question, passages, turns, self.bot_name)

    def to_json(self, passage_chars: int = 0) -> dict[str, Any]:
        return {
            "messages": self.messages(passage_chars),
            "answer": self.answer,
            "reference": self.reference,
            "passage_ids": self.passage_ids,
            "source_id": self.source_id,
            "conversation_id": self.conversation_id,
            "kind": self.kind,
        }


def _clip(text: str, limit: int) -> str:
    if limit <= 0 or len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0] + " ..."


def add_citation(answer: str, first: int, *more: int) -> str:
    """`answer` citing passage `first` up front and any `more` at its end:
    "[2] Use ~~tildes~~.", "[1] Clean rooms, friendly staff. [3]".

    The main passage first, not last: an answer cut off by the generation limit still
    cites, and choosing it is the model's first decision, learnt on every example (after
    a first sentence, a 1-epoch LoRA on StackFAQ cited 8 % of held-out answers). Further
    passages go at the end: taught as a run up front ("[1] [2] [3] ..."), a 1-epoch LoRA
    on grounded dialogues kept counting "[4] [5] ..." to the token limit.
    """
    text = f"[{first}] {answer.strip()}"
    return " ".join([text, *(f"[{number}]" for number in more)])


def build_examples(
    pairs: Sequence[Pair],
    retriever: Retriever,
    *,
    top_k: int = 3,
    history_turns: int = 4,
    bot_name: str = "deskmate",
    progress: Callable[[int], object] | None = None,
) -> list[Example]:
    """Ground each pair in the FAQ passages retrieved for its question in its context."""
    examples = []
    for pair in pairs:
        if progress is not None:
            progress(1)
        # A menu pick ("2") is answered for the picked entry, as serving does.
        chosen = chosen_option(pair.question, pair.history, retriever)
        question = pair.question if chosen is None else chosen.entry.question
        hits = (
            [chosen]
            if chosen is not None
            else search_in_conversation(retriever, pair.question, pair.history, top_k)
        )
        passages = [Passage(hit.title, hit.entry.answer) for hit in hits]
        source_id = None
        answer = pair.answer
        if cited_numbers(answer):
            numbers = [n for n in cited_numbers(answer) if 1 <= n <= len(hits)]
            source_id = hits[numbers[0] - 1].id if numbers else None
        elif hits:
            used = drawn_on(retriever.embedder, pair.answer, hits, floor=FLOOR_SIMILARITY)
            if used:
                source_id = hits[used[0] - 1].id
                answer = add_citation(answer, *used)
        history = pair.history[-history_turns:] if history_turns > 0 else ()
        examples.append(
            Example(
                question,
                tuple(passages),
                history,
                answer,
                pair.answer,
                [hit.id for hit in hits],
                source_id,
                pair.conversation_id,
                pair.kind,
                bot_name,
            )
        )
    return examples


def encode_example(
    tokenizer: Any, example: Example, max_length: int, passage_chars: int = 0
) -> dict[str, list[int]] | None:
    """Token ids and labels (prompt masked out); None if even a short answer cannot fit.

    Passages are cut to `passage_chars` (0 = whole). Too-long examples lose their history
    first, then passages are cut shorter (down to 120 characters), then the answer's tail.
    """
    longest = max((len(p.text) for p in example.passages), default=0)
    limit = min(passage_chars, longest) if passage_chars > 0 else longest
    attempts = [(limit, True), (limit, False)]
    while limit > 120:
        limit = max(int(limit * 0.7), 120)
        attempts.append((limit, False))
    for passage_chars, history in attempts:
        messages = example.messages(passage_chars, history)
        prompt_ids, target_ids = _encode(tokenizer, messages, example.answer)
        if len(prompt_ids) + len(target_ids) <= max_length:
            break
    room = max_length - len(prompt_ids)
    if room < min(16, len(target_ids)):
        return None
    target_ids = target_ids[:room]
    return {
        "input_ids": prompt_ids + target_ids,
        "labels": [IGNORE] * len(prompt_ids) + target_ids,
    }


def _encode(
    tokenizer: Any, messages: list[dict[str, str]], answer: str
) -> tuple[list[int], list[int]]:
    prompt = render_prompt(tokenizer, messages)
    full: str = tokenizer.apply_chat_template(
        [*messages, {"role": "assistant", "content": answer}], tokenize=False
    )
    if not full.startswith(prompt):
        raise PromptFormatError("the chat template renders the answer turn unexpectedly")
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    # The answer and the end-of-turn token; generation stops at that token.
    target_ids = tokenizer(full[len(prompt) :].rstrip("\n"), add_special_tokens=False)["input_ids"]
    return list(prompt_ids), list(target_ids)
