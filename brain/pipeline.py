"""The brain pipeline: one inbound message in, one reply out, state kept in Redis.

normalize -> commands -> handoff check -> retrieve -> policy -> answer/clarify/handoff.
Platform-free: adapters build `Inbound` and render `Reply`.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from dataclasses import replace

from brain.answering.backends import AnswerBackend
from brain.conversations import ConversationStore
from brain.mood.reader import MoodReader
from brain.policy import anger_reason, decide, is_anger_reason, small_talk
from brain.text import normalize_text
from brain.types import Feedback, Inbound, Mood, Reply, Source, Turn
from retrieval.embedder import Vectors
from retrieval.index import FaqHit, Thresholds
from retrieval.retriever import Retriever

log = logging.getLogger(__name__)

COMMANDS = {
    "/start": "Start a conversation and see what I can do",
    "/help": "How to use this bot",
    "/reset": "Forget this conversation and start over",
    "/human": "Talk to a person from the support team",
}
RESOLVE = "/resolve"  # what an agent's resolve action arrives as (never a customer command)
BACK_WITH_BOT = (
    "The support team has finished here, so you're back with me, the assistant. "
    "Ask me anything, or /human to reach a person again."
)
_COMMAND = re.compile(r"^(/[a-z]+)(?:@\w+)?(?:\s|$)", re.IGNORECASE)
_CHOICE = re.compile(r"^#?\s*(\d{1,2})\s*[.)]?$")
CLARIFY_OPTIONS = 3


def conversation_context(history: Sequence[Turn]) -> list[tuple[str, str]]:
    """The turns a question is read with: what the customer, the bot and agents said
    about the subject. Commands and the bot's canned lines (greetings, help, handoff
    notices) carry no subject and are left out."""
    return [
        (turn.role, turn.text)
        for turn in history
        if turn.text
        and not (turn.role == "user" and turn.text.startswith("/"))
        and not (turn.role == "assistant" and turn.action not in (None, "answer", "clarify"))
    ]


def search_in_conversation(
    retriever: Retriever, question: str, history: Sequence[Turn], k: int
) -> list[FaqHit]:
    """The best `k` entries for `question`, read in the context of the conversation.

    A follow-up ("does it have a patio?", "and how long does that take?") often names no
    subject of its own: the retriever ranks entries by the question and by the recent
    turns together (see `Retriever.search`). Entries the bot has just answered with go
    after the others: a follow-up asks for something the customer does not have yet. Serving and
    training (`training.dataset.build_examples`) both retrieve through here.
    """
    return search_in_conversation_with_vector(retriever, question, history, k)[0]


def search_in_conversation_with_vector(
    retriever: Retriever, question: str, history: Sequence[Turn], k: int
) -> tuple[list[FaqHit], Vectors]:
    """`search_in_conversation`, and the question's sentence vector (read by the mood
    classifier without a second encoder pass)."""
    last = history[-1] if history else None
    answered = last is not None and last.role == "assistant" and last.action == "answer"
    given = set(last.sources) if last is not None and answered else set()
    hits, vector = retriever.search_with_vector(
        question, k + len(given), "hybrid", conversation_context(history)
    )
    hits.sort(key=lambda hit: hit.id in given)  # stable: the ranking otherwise stands
    return hits[:k], vector


class Brain:
    """Answers inbound messages. One instance serves every channel."""

    def __init__(
        self,
        retriever: Retriever,
        store: ConversationStore,
        backend: AnswerBackend,
        *,
        max_message_chars: int = 4000,
        bot_name: str = "deskmate",
        thresholds: Thresholds | None = None,
        mood: MoodReader | None = None,
    ) -> None:
        self.retriever = retriever
        self.mood = mood or MoodReader.regex_only()
        self.store = store
        self.backend = backend
        self.max_message_chars = max_message_chars
        self.bot_name = bot_name
        self._thresholds = thresholds

    @property
    def thresholds(self) -> Thresholds:
        """Thresholds from settings if given, else those stored with the index."""
        return self._thresholds or self.retriever.index.thresholds

    async def handle(self, inbound: Inbound) -> Reply:
        if inbound.agent:
            return await self._from_agent(inbound)
        text = normalize_text(inbound.text)
        if not text and inbound.attachment:
            # Stickers, photos, voice notes, files: say so politely and keep a record.
            await self.store.record_event(
                "unsupported", inbound, {"attachment": inbound.attachment}
            )
            return Reply(
                f"Sorry, I can only read text, so I can't open that {inbound.attachment}. "
                "Please type your question, or /human to reach a person.",
                "clarify",
            )
        if not text:
            return Reply(
                "I didn't catch any text there. Type your question, or /help to see what I can do.",
                "clarify",
            )
        notice = ""
        if len(text) > self.max_message_chars:
            notice = (
                f"Your message is {len(text):,} characters long; "
                f"I read the first {self.max_message_chars:,}."
            )
        question = text[: self.max_message_chars]
        user_turn = Turn("user", text, inbound.time, inbound.message_id, inbound.user_id)

        command = _COMMAND.match(question)
        if command and command[1].lower() in COMMANDS:
            return await self._command(command[1].lower(), inbound, user_turn)

        if await self.store.handoff(inbound.channel, inbound.conversation_id) is not None:
            # A human agent holds the conversation: record (with the mood), stay quiet.
            user_turn = replace(user_turn, mood=await self._mood(question))
            await self.store.append(inbound, user_turn)
            return Reply("", "none", notice=notice)

        kind = small_talk(question)
        if kind is not None:
            user_turn = replace(user_turn, mood=await self._mood(question))
            reply = Reply(
                "Hi! What can I help you with today?"
                if kind == "greeting"
                else "You're welcome! Anything else I can help with?",
                "none",
            )
            await self.store.append(inbound, user_turn, self._bot_turn(reply))
            return reply

        history = await self.store.history(inbound.channel, inbound.conversation_id)
        chosen = self._chosen_option(question, history)
        if chosen is not None:
            hits = [chosen]
            action, reason = "answer", "customer picked an offered entry"
            user_turn = replace(user_turn, mood=await self._mood(question))
        else:
            hits, vector = await self._retrieve(question, history)
            mood = self.mood.read(question, vector)
            user_turn = replace(user_turn, mood=mood)
            earlier = [turn.mood for turn in history if turn.role == "user" and turn.mood]
            strong, sustained = self.mood.thresholds.strong, self.mood.thresholds.sustained
            anger = anger_reason(mood, earlier[-1:], strong, sustained)
            decision = decide(question, hits, self.thresholds, anger)
            action, reason = decision.action, decision.reason
        log.info("conversation %s: %s (%s)", inbound.conversation_id, action, reason)

        if action == "answer":
            reply = await self._answer(inbound, question, hits, history)
        elif action == "clarify":
            reply = self._clarify(hits)
        else:
            reply = await self._handoff(inbound, reason, hits)
        reply = replace(reply, notice=notice)
        await self.store.append(inbound, user_turn, self._bot_turn(reply))
        return reply

    async def _retrieve(self, question: str, history: list[Turn]) -> tuple[list[FaqHit], Vectors]:
        return await asyncio.to_thread(
            search_in_conversation_with_vector,
            self.retriever,
            question,
            history,
            self.retriever.top_k,
        )

    async def _mood(self, question: str) -> Mood:
        """The mood of a message that was not retrieved for (its vector is computed here)."""
        vector = None
        if self.mood.needs_vector:
            vector = await asyncio.to_thread(self.retriever.embedder.encode_query, question)
        return self.mood.read(question, vector)

    async def _answer(
        self, inbound: Inbound, question: str, hits: Sequence[FaqHit], history: list[Turn]
    ) -> Reply:
        answer = await self.backend.answer(question, hits, history)
        if answer.action == "handoff":
            reply = await self._handoff(inbound, answer.reason or "no answer in the FAQ", hits)
            return replace(reply, model_version=answer.model_version or self.backend.version)
        return Reply(
            answer.text,
            "answer",
            sources=tuple(Source.from_hit(hit) for hit in answer.cited),
            confidence=round(hits[0].score, 4),
            model_version=answer.model_version or self.backend.version,
        )

    def _clarify(self, hits: Sequence[FaqHit]) -> Reply:
        options = hits[:CLARIFY_OPTIONS]
        lines = [f"{n}. {hit.title}" for n, hit in enumerate(options, start=1)]
        text = "\n".join(
            [
                "I'm not sure I understood. Did you mean one of these?",
                *lines,
                "Reply with the number, or rephrase your question. /human reaches a person.",
            ]
        )
        return Reply(
            text,
            "clarify",
            sources=tuple(Source.from_hit(hit) for hit in options),
            confidence=round(hits[0].score, 4),
        )

    async def _handoff(self, inbound: Inbound, reason: str, hits: Sequence[FaqHit]) -> Reply:
        await self.store.start_handoff(
            inbound.channel, inbound.conversation_id, reason, user_id=inbound.user_id
        )
        await self.store.record_event(
            "handoff", inbound, {"reason": reason, "text": inbound.text[:2000]}
        )
        if reason == "not covered by the FAQ":
            opening = "I don't have an answer to that in our help centre."
        elif is_anger_reason(reason):
            opening = "I'm sorry this has been frustrating."
        else:
            opening = "Of course."
        text = (
            f"{opening} I'm passing you to a member of our support team; "
            "they'll reply here as soon as they can. (/reset returns you to me.)"
        )
        confidence = round(hits[0].score, 4) if hits else 0.0
        return Reply(text, "handoff", confidence=confidence)

    async def _from_agent(self, inbound: Inbound) -> Reply:
        """A support agent's message (from the staff thread): passed on to the customer and
        kept as an `agent` turn, or `RESOLVE`, which gives the conversation back to the bot.
        Nothing is said once the conversation is no longer handed off (resolved, reset)."""
        text = inbound.text.strip()
        if not text or await self.store.handoff(inbound.channel, inbound.conversation_id) is None:
            log.info(
                "conversation %s: agent message after the handoff ended", inbound.conversation_id
            )
            return Reply("", "none")
        if text == RESOLVE:
            await self.store.end_handoff(inbound.channel, inbound.conversation_id)
            await self.store.record_event("resolved", inbound, {"agent": inbound.user_id})
            return Reply(BACK_WITH_BOT, "none")
        turn = Turn("agent", text, inbound.time, inbound.message_id, inbound.user_id)
        await self.store.append(inbound, turn)
        return Reply(text, "none")

    def _chosen_option(self, text: str, history: list[Turn]) -> FaqHit | None:
        """A bare number answering our last clarifying question picks that entry."""
        match = _CHOICE.match(text)
        if not match or not history:
            return None
        last = history[-1]
        if last.role != "assistant" or last.action != "clarify":
            return None
        number = int(match[1])
        if not 1 <= number <= len(last.sources):
            return None
        entry = self.retriever.index.entry(last.sources[number - 1])
        if entry is None or not entry.answer:
            return None
        return FaqHit(entry=entry, score=1.0, dense=1.0, keyword=0.0)

    @staticmethod
    def _bot_turn(reply: Reply) -> Turn:
        return Turn(
            "assistant",
            reply.text,
            action=reply.action,
            sources=tuple(source.id for source in reply.sources),
            model_version=reply.model_version,
        )

    async def _command(self, command: str, inbound: Inbound, user_turn: Turn) -> Reply:
        if command == "/reset":
            await self.store.reset(inbound.channel, inbound.conversation_id)
            await self.store.record_event("reset", inbound, {})
            return Reply("Done: I've cleared our conversation. What can I help you with?", "none")
        if command == "/human":
            reply = await self._handoff(inbound, "asked for a person", [])
        elif command == "/start":
            reply = Reply(
                f"Hi! I'm {self.bot_name}, the support assistant. Ask me anything about orders, "
                "shipping, returns, billing or your account. Type /human at any time to reach "
                "a person, or /help for more.",
                "none",
            )
        else:
            reply = Reply(self.help_text(), "none")
        await self.store.append(inbound, user_turn, self._bot_turn(reply))
        return reply

    async def feedback(self, feedback: Feedback) -> None:
        """Record a 👍/👎 on a bot message in the transcripts stream (training reads it)."""
        await self.store.record_feedback(feedback)

    def help_text(self) -> str:
        lines = [
            "Ask a question in your own words and I'll answer from our help centre, "
            "citing the article I used.",
            "If I'm unsure I'll offer the closest articles: reply with a number to pick one.",
            "",
        ]
        lines += [f"{name} - {what}" for name, what in COMMANDS.items()]
        return "\n".join(lines)
