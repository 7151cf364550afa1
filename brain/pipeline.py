"""The brain pipeline: one inbound message in, one reply out, state kept in Redis.

normalize -> commands -> handoff check -> retrieve -> policy -> answer/clarify/handoff.
Platform-free: adapters build `Inbound` and render `Reply`.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime

from brain import compute
from brain.answering.backends import AnswerBackend, PartialCallback
from brain.conversations import ConversationStore
from brain.handoff.hours import BusinessHours, describe_reopening
from brain.handoff.machine import Change, Event, Outcome, State
from brain.mood.classifier import unpadded
from brain.mood.reader import MoodReader
from brain.policy import (
    NOT_COVERED,
    WEAK_MATCH,
    PolicyDecision,
    anger_reason,
    decide,
    is_anger_reason,
    small_talk,
)
from brain.text import normalize_text
from brain.types import Feedback, Inbound, Mood, QuickReply, Reply, Source, Turn
from retrieval.embedder import Encoding, Vectors
from retrieval.index import FaqHit, Thresholds
from retrieval.retriever import Retriever

log = logging.getLogger(__name__)

COMMANDS = {
    "/start": "Start a conversation and see what I can do",
    "/help": "How to use this bot",
    "/reset": "Forget this conversation and start over",
    "/human": "Talk to a person from the support team",
    "/bot": "Cancel a request for a person and come back to me",
}
RESOLVE = "/resolve"  # what an agent's resolve action arrives as (never a customer command)
IDLE_TIMEOUT = "/idle-timeout"  # what the staff desk's idle check arrives as (agent side)
BACK_WITH_BOT = (
    "The support team has finished here, so you're back with me, the assistant. "
    "Ask me anything, or /human to reach a person again."
)
RATED = "Thank you for rating us! I'm here if you need anything else."
RATE_QUESTION = "How did our team do? One tap is enough (or reply with 1 to 5)."
RATINGS = {"👍": "up", "👎": "down", **{str(n): str(n) for n in range(1, 6)}}
RATING_BUTTONS = (QuickReply("👍", "👍"), QuickReply("👎", "👎"))
CANCEL_BUTTON = QuickReply("Back to the bot", "/bot")
CANCEL_WORDS = frozenset({"bot", "back to the bot"})  # typed alone while held: as /bot
BACK_AFTER_IDLE = (
    "Nobody from the team has written here for a while, so you're back with me, the "
    "assistant. Ask me anything, or /human to reach a person again."
)
_COMMAND = re.compile(r"^(/[a-z]+)(?:@\w+)?(?:\s|$)", re.IGNORECASE)
_CHOICE = re.compile(r"^#?\s*(\d{1,2})\s*[.)]?$")


def menu_choice(text: str) -> int | None:
    """The number in a message that is only a number ("2", "#2", "2."): how a customer
    picks from a clarifying menu."""
    match = _CHOICE.match(text)
    return int(match[1]) if match else None


CLARIFY_OPTIONS = 3


def chosen_option(text: str, history: Sequence[Turn], retriever: Retriever) -> FaqHit | None:
    """The entry a bare number picks when it answers the bot's last clarifying menu. The
    answer is then written for that entry's question: a model asked "2" cannot know what
    was meant (serving and training both read a pick this way)."""
    number = menu_choice(text)
    if number is None or not history:
        return None
    last = history[-1]
    if last.role != "assistant" or last.action != "clarify":
        return None
    if not 1 <= number <= len(last.sources):
        return None
    entry = retriever.index.entry(last.sources[number - 1])
    if entry is None or not entry.answer:
        return None
    return FaqHit(entry=entry, score=1.0, dense=1.0, keyword=0.0)


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
    turns together (see `Retriever.search`). What the bot's last answer gave counts
    against its entries: a follow-up mostly asks for something the customer does not have
    yet, but the entry can still win a question that asks for it ("do you take PayPal?"
    after the payment methods). Serving and training (`training.dataset.build_examples`)
    both retrieve through here.
    """
    return search_in_conversation_with_vector(retriever, question, history, k)[0]


def search_in_conversation_with_vector(
    retriever: Retriever, question: str, history: Sequence[Turn], k: int
) -> tuple[list[FaqHit], Vectors]:
    """`search_in_conversation`, and the question's sentence vector (read by the mood
    classifier without a second encoder pass)."""
    return retriever.search_with_vector(
        question, k, "hybrid", conversation_context(history), _just_given(history)
    )


def search_in_conversation_with_encoding(
    retriever: Retriever, question: str, history: Sequence[Turn], k: int
) -> tuple[list[FaqHit], Encoding]:
    """`search_in_conversation_with_vector`, the vector as an `Encoding` that also holds
    the question's token states entering the sentence embedder's last layer (read by a
    top_layer mood classifier, again without a second encoder pass)."""
    return retriever.search_with_encoding(
        question, k, "hybrid", conversation_context(history), _just_given(history)
    )


def _just_given(history: Sequence[Turn]) -> set[str]:
    """The entries the bot's last answer (if the last turn is one) cited."""
    last = history[-1] if history else None
    answered = last is not None and last.role == "assistant" and last.action == "answer"
    return set(last.sources) if last is not None and answered else set()


def _duration(seconds: float) -> str:
    """'under a minute', 'about 5 minutes', 'about 2 hours'."""
    minutes = round(seconds / 60)
    if minutes < 1:
        return "under a minute"
    if minutes < 90:
        return f"about {minutes} minute{'s' if minutes != 1 else ''}"
    hours = round(minutes / 60)
    return f"about {hours} hours"


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
        hours: BusinessHours | None = None,
        idle_seconds: float = 0.0,
        mood: MoodReader | None = None,
        staff_reachable: bool = True,
    ) -> None:
        self.hours = hours  # the support team's; None: always open
        # False where no person can see a handoff (the console; no staff channel): the
        # customer is not promised a reply from one.
        self.staff_reachable = staff_reachable
        self.idle_seconds = idle_seconds  # a claimed handoff returns to the bot after it
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

    async def handle(self, inbound: Inbound, on_partial: PartialCallback | None = None) -> Reply:
        """The reply to `inbound`. With `on_partial`, a generated answer's text so far is
        passed to it while the model writes (see `AnswerBackend`); the reply returned is
        the one that counts."""
        # Whatever a channel let through: encodable, and no longer than what is read.
        inbound = inbound.bounded(self.max_message_chars)
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
        full_length = inbound.full_length or (
            len(text) if len(text) > self.max_message_chars else 0
        )
        if full_length:
            notice = (
                f"Your message is {full_length:,} characters long; "
                f"I read the first {self.max_message_chars:,}."
            )
        question = text[: self.max_message_chars]
        # Only what is read is kept (history, transcripts), marked as cut.
        user_turn = Turn(
            "user",
            question,
            inbound.time,
            inbound.message_id,
            inbound.user_id,
            full_length=full_length,
        )

        handoffs = self.store.handoffs
        record = await self.store.handoff_record(inbound.channel, inbound.conversation_id)
        just_resolved = record.state is State.RESOLVED
        if just_resolved:
            # Asked to rate the help once: a rating, or anything else moves on to the bot.
            rating = RATINGS.get(question.strip().strip(".!"))
            event = Event.RATE if rating else Event.MOVE_ON
            change = Change(event, rating=rating or "", expect_version=record.version)
            rated = await handoffs.apply(inbound.channel, inbound.conversation_id, change)
            if rating and rated.applied:
                reply = Reply(RATED, "none")
                await self.store.append(inbound, user_turn, self._bot_turn(reply))
                return reply

        if record.held and question.strip().strip(".!").lower() in CANCEL_WORDS:
            # Where `/bot` cannot be typed (Slack takes it for a slash command).
            return await self._command("/bot", inbound, user_turn)
        command = _COMMAND.match(question)
        if command and command[1].lower() in COMMANDS:
            return await self._command(command[1].lower(), inbound, user_turn)

        if record.held:
            # A person holds the conversation: record (with the mood), stay quiet (the
            # team sees it).
            await handoffs.apply(inbound.channel, inbound.conversation_id, Change(Event.ACTIVITY))
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
        chosen = chosen_option(question, history, self.retriever)
        asked = question
        if chosen is not None:
            hits, asked = [chosen], chosen.entry.question
            action, reason = "answer", "customer picked an offered entry"
            user_turn = replace(user_turn, mood=await self._mood(question))
        else:
            hits, vector, states = await self._retrieve(question, history)
            mood = await compute.run(self.mood.read, question, vector, states)
            user_turn = replace(user_turn, mood=mood)
            earlier = [turn.mood for turn in history if turn.role == "user" and turn.mood]
            strong, sustained = self.mood.thresholds.strong, self.mood.thresholds.sustained
            anger = anger_reason(mood, earlier[-1:], strong, sustained)
            decision = decide(question, hits, self.thresholds, anger)
            if decision.reason in (NOT_COVERED, WEAK_MATCH) and conversation_context(history):
                hits, decision = await self._read_alone(question, hits, decision)
            action, reason = decision.action, decision.reason
            if just_resolved and action == "handoff" and reason != "asked for a person":
                # Right after the team resolved it: no handing back on our own (the loop
                # customers hate); one word reaches them again.
                action, reason = "clarify", "just resolved; offered /human instead"
        log.info("conversation %s: %s (%s)", inbound.conversation_id, action, reason)

        if action == "answer":
            reply = await self._answer(inbound, asked, hits, history, on_partial)
        elif action == "clarify" and not hits:
            reply = Reply(
                "I don't have an answer to that in our help centre. "
                "Type /human if you'd like the support team again.",
                "clarify",
            )
        elif action == "clarify":
            reply = self._clarify(hits)
        else:
            reply = await self._handoff(inbound, reason, hits)
        reply = replace(reply, notice=notice)
        await self.store.append(inbound, user_turn, self._bot_turn(reply))
        return reply

    async def _retrieve(
        self, question: str, history: list[Turn]
    ) -> tuple[list[FaqHit], Vectors, Vectors | None]:
        """Hits, the question's sentence vector and, when the mood reader needs them, its
        unpadded token states entering the last layer: all from the search's pass."""
        if not self.mood.needs_states:
            hits, vector = await compute.run(
                search_in_conversation_with_vector,
                self.retriever,
                question,
                history,
                self.retriever.top_k,
            )
            return hits, vector, None
        hits, encoding = await compute.run(
            search_in_conversation_with_encoding,
            self.retriever,
            question,
            history,
            self.retriever.top_k,
        )
        return hits, encoding.vectors[0], _question_states(encoding)

    async def _read_alone(
        self, question: str, hits: list[FaqHit], decision: PolicyDecision
    ) -> tuple[list[FaqHit], PolicyDecision]:
        """A question that read in the conversation's context would only get a menu or a
        handoff, read alone. On a change of topic ("payment" after a returns answer) the
        context ranks the earlier topic's entries first, with the question's own low
        scores; alone it may match its own topic better. The reading with the higher
        confidence stands.

        Only when the context gives no answer: a follow-up that names no subject reads
        better in context, and on the multi-turn dev dialogues any rule that let a better
        score alone override an answer in context lost recall (recall@5 0.748 -> 0.729
        at the smallest margin that catches "payment")."""
        alone = await compute.run(
            search_in_conversation, self.retriever, question, [], self.retriever.top_k
        )
        if self.thresholds.confidence(alone) <= self.thresholds.confidence(hits):
            return hits, decision
        second = decide(question, alone, self.thresholds)
        if second.action == "handoff":
            return hits, decision
        return alone, PolicyDecision(
            second.action, f"{second.reason}, read without the conversation"
        )

    async def _mood(self, question: str) -> Mood:
        """The mood of a message that was not retrieved for (its vector is computed here)."""
        vector, states = None, None
        if self.mood.needs_states:
            encoding = await compute.run(self.retriever.sentence_encoding, question)
            vector, states = encoding.vectors[0], _question_states(encoding)
        elif self.mood.needs_vector:
            vector = await compute.run(self.retriever.sentence_vector, question)
        return await compute.run(self.mood.read, question, vector, states)

    async def _answer(
        self,
        inbound: Inbound,
        question: str,
        hits: Sequence[FaqHit],
        history: list[Turn],
        on_partial: PartialCallback | None = None,
    ) -> Reply:
        if on_partial is None:  # backends written before streaming need not know of it
            answer = await self.backend.answer(question, hits, history)
        else:
            answer = await self.backend.answer(question, hits, history, on_partial=on_partial)
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
        now = time.time()
        open_now = self.hours is None or self.hours.is_open(datetime.fromtimestamp(now, UTC))
        outcome = await self.store.start_handoff(
            inbound.channel,
            inbound.conversation_id,
            reason,
            user_id=inbound.user_id,
            open_now=open_now,
        )
        confidence = round(hits[0].score, 4) if hits else 0.0
        if not outcome.applied:  # a person holds it already: where they stand
            status = await self._waiting_status(inbound, outcome)
            return Reply(status, "handoff", confidence=confidence, quick_replies=(CANCEL_BUTTON,))
        await self.store.record_event(
            "handoff", inbound, {"reason": reason, "text": inbound.text[:2000]}
        )
        if reason == NOT_COVERED:
            opening = "I don't have an answer to that in our help centre."
        elif is_anger_reason(reason):
            opening = "I'm sorry this has been frustrating."
        else:
            opening = "Of course."
        text = f"{opening} {await self._waiting_status(inbound, outcome)}"
        return Reply(text, "handoff", confidence=confidence, quick_replies=(CANCEL_BUTTON,))

    async def _waiting_status(self, inbound: Inbound, outcome: Outcome) -> str:
        """What happens next, honestly: the place in the queue and a typical wait, or
        when the team is back; or who has the conversation."""
        cancel = "(Type bot to come back to me meanwhile.)"
        state = outcome.after.state
        if state is State.CLAIMED:
            return f"A member of our support team is on it and will reply here. {cancel}"
        if not self.staff_reachable:
            return (
                "No one from our support team is connected to this chat, so no person "
                "will reply here. Type bot to come back to me."
            )
        now = datetime.now(UTC)
        back = self.hours.next_open(now) if self.hours is not None else None
        if state is State.AFTER_HOURS and self.hours is not None and back is not None:
            when = f"back {describe_reopening(back, now)} ({self.hours.zone.key} time)"
            return (
                f"Our support team is away right now; they're {when}. Your conversation "
                "waits for them: they'll answer you right here, no need to ask again. " + cancel
            )
        text = "I'm passing you to a member of our support team; they'll reply here."
        place = await self.store.handoffs.position(inbound.channel, inbound.conversation_id)
        if place is not None:
            text += f" You're number {place[0]} in the queue."
        wait = await self.store.handoffs.typical_wait()
        if wait is not None:
            text += f" A typical wait right now is {_duration(wait)}."
        return f"{text} {cancel}"

    async def _from_agent(self, inbound: Inbound) -> Reply:
        """A support agent's message (from the staff thread): passed on to the customer and
        kept as an `agent` turn (an unclaimed handoff becomes the replying agent's), or
        `RESOLVE`, which gives the conversation back to the bot and asks for a rating, or
        `IDLE_TIMEOUT` from the desk's idle check. Nothing is said once the conversation is
        no longer handed off (resolved, cancelled, reset)."""
        text = inbound.text.strip()
        channel, conversation_id = inbound.channel, inbound.conversation_id
        record = await self.store.handoff_record(channel, conversation_id)
        if not text or not record.held:
            log.info("conversation %s: agent message after the handoff ended", conversation_id)
            return Reply("", "none")
        handoffs = self.store.handoffs
        if text == RESOLVE:
            resolved = await handoffs.apply(
                channel, conversation_id, Change(Event.RESOLVE, agent=inbound.user_id)
            )
            if not resolved.applied:
                return Reply("", "none")
            await self.store.record_event("resolved", inbound, {"agent": inbound.user_id})
            return Reply(
                f"{BACK_WITH_BOT}\n\n{RATE_QUESTION}", "none", quick_replies=RATING_BUTTONS
            )
        if text == IDLE_TIMEOUT:
            # Decided at the time the desk's check saw it idle (its clock): a message
            # written since then makes it not idle.
            change = Change(Event.TIMEOUT, idle_seconds=self.idle_seconds)
            timed_out = await handoffs.apply(channel, conversation_id, change, now=inbound.time)
            return Reply(BACK_AFTER_IDLE, "none") if timed_out.applied else Reply("", "none")
        if record.state is State.CLAIMED:
            await handoffs.apply(channel, conversation_id, Change(Event.ACTIVITY))
        else:  # answering an unclaimed handoff takes it
            await handoffs.apply(
                channel, conversation_id, Change(Event.CLAIM, agent=inbound.user_id)
            )
        turn = Turn("agent", text, inbound.time, inbound.message_id, inbound.user_id)
        await self.store.append(inbound, turn)
        return Reply(text, "none")

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
        elif command == "/bot":
            cancelled = await self.store.handoffs.apply(
                inbound.channel, inbound.conversation_id, Change(Event.CANCEL)
            )
            reply = Reply(
                "Done: I've cancelled your request for a person, so you're back with me, the "
                "assistant. Ask me anything, or /human to reach the team again."
                if cancelled.applied
                else "You're talking to me, the assistant, already. Ask me anything!",
                "none",
            )
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


def _question_states(encoding: Encoding) -> Vectors | None:
    """The first text's token states without padding (None for an empty question)."""
    if not encoding.states:
        return None
    return unpadded(encoding.states[:1], encoding.masks[:1])[0]
