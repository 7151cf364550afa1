"""The brain pipeline end to end on the sample FAQ, the real embedder and real Redis."""

from __future__ import annotations

import json

import redis.asyncio as aioredis

from brain.answering.backends import QuoteBackend
from brain.conversations import ConversationStore
from brain.mood.classifier import DEFAULT_DIR, MoodClassifier, MoodThresholds, unpadded
from brain.mood.reader import MoodReader
from brain.pipeline import Brain, search_in_conversation
from brain.types import Feedback, Inbound, Turn
from retrieval.index import Thresholds
from retrieval.retriever import Retriever

_counter = iter(range(1, 1_000_000))


def message(text: str | bytes, conversation: str = "c1") -> Inbound:
    return Inbound(
        channel="console",
        conversation_id=conversation,
        user_id="u1",
        message_id=str(next(_counter)),
        text=text,  # type: ignore[arg-type]  # bytes arrive from broken clients too
    )


async def test_confident_question_is_answered_by_quoting_and_citing_the_entry(brain: Brain) -> None:
    reply = await brain.handle(message("how many days do I have to send an item back?"))
    assert reply.action == "answer"
    assert reply.sources[0].id == "returns-window"
    assert "30 days" in reply.text and reply.text.endswith("[1]")
    assert reply.model_version == "quote"
    assert reply.confidence >= brain.thresholds.answer


async def test_out_of_scope_question_is_handed_off(brain: Brain, store: ConversationStore) -> None:
    reply = await brain.handle(message("what's the best recipe for banana bread?"))
    assert reply.action == "handoff"
    assert await store.handoff("console", "c1") is not None
    # While a human holds the conversation the bot stays quiet, but records the message.
    quiet = await brain.handle(message("hello? anyone?"))
    assert quiet.action == "none" and quiet.text == ""
    history = await store.history("console", "c1")
    assert history[-1].text == "hello? anyone?"


async def test_weak_match_offers_entries_and_a_number_picks_one(
    retriever: Retriever, store: ConversationStore
) -> None:
    # Put the question's score inside the clarify band, whatever the embedder says.
    score = retriever.search("issue with delivery")[0].score
    band = Thresholds(answer=score + 0.01, clarify=score - 0.1)
    brain = Brain(retriever, store, QuoteBackend(), thresholds=band)
    reply = await brain.handle(message("issue with delivery"))
    assert reply.action == "clarify", reply
    assert len(reply.sources) >= 2
    assert "1." in reply.text and "2." in reply.text
    picked = await brain.handle(message("2"))
    assert picked.action == "answer"
    assert picked.sources[0].id == reply.sources[1].id


class RecordingBackend(QuoteBackend):
    """Quotes, and keeps the questions it was asked to answer."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[str] = []

    async def answer(self, question, hits, history, *, on_partial=None):  # type: ignore[no-untyped-def]
        self.asked.append(question)
        return await super().answer(question, hits, history, on_partial=on_partial)


async def test_a_picked_option_is_answered_as_the_entry_s_question(
    retriever: Retriever, store: ConversationStore
) -> None:
    score = retriever.search("issue with delivery")[0].score
    backend = RecordingBackend()
    band = Thresholds(answer=score + 0.01, clarify=score - 0.1)
    brain = Brain(retriever, store, backend, thresholds=band)
    menu = await brain.handle(message("issue with delivery"))
    assert menu.action == "clarify" and not backend.asked
    await brain.handle(message("2"))
    # The model is asked what the customer picked, not "2"; the transcript keeps "2".
    assert backend.asked == [menu.sources[1].title]
    assert (await store.history("console", "c1"))[-2].text == "2"


async def test_a_change_of_topic_is_read_without_the_conversation_before_a_handoff(
    brain: Brain,
) -> None:
    """In the context of a returns answer, "payment" ranks returns entries first with
    its own low scores (a handoff); read alone it matches the payment entries."""
    first = await brain.handle(message("how long do I have to return something?"))
    assert first.action == "answer" and first.sources[0].id == "returns-window"
    switched = await brain.handle(message("payment"))
    assert switched.action in ("answer", "clarify"), switched
    assert switched.sources and all(s.id.startswith("payment-") for s in switched.sources)
    # Nothing the FAQ covers, alone or in context: still a person.
    assert (await brain.handle(message("what's the best recipe for banana bread?"))).action == (
        "handoff"
    )


async def test_a_follow_up_gets_a_new_answer_unless_it_asks_about_the_last_one(
    brain: Brain,
) -> None:
    first = await brain.handle(message("which payment methods do you accept?", "pay"))
    assert first.action == "answer" and first.sources[0].id == "payment-methods"
    # Asked about what the answer said: the same entry answers again (it used to be
    # moved after every other entry, whatever the question).
    again = await brain.handle(message("do you take PayPal?", "pay"))
    assert again.action == "answer" and again.sources[0].id == "payment-methods", again
    # Asked something new: the entry that fits the conversation best is not repeated.
    declined = await brain.handle(message("my payment was declined", "pay"))
    assert declined.action == "answer" and declined.sources[0].id == "payment-declined"


def test_the_entries_the_bot_s_own_answer_gave_count_as_said_whatever_its_words(
    retriever: Retriever,
) -> None:
    # A generated answer shares few words with its entry; its sources say what it gave.
    history = [
        Turn("user", "what warranty do you give?"),
        Turn(
            "assistant",
            "Everything we sell is covered for two years. [1]",
            action="answer",
            sources=("warranty-standard",),
        ),
    ]
    hits = search_in_conversation(retriever, "what about NW-CARE?", history, 3)
    assert hits[0].id == "warranty-nw-care", [hit.id for hit in hits]
    # The same words without sources: only the words the answer shares count against it.
    unsaid = [history[0], Turn("assistant", history[1].text, action="answer")]

    def rank(turns: list[Turn]) -> int:
        ids = [hit.id for hit in search_in_conversation(retriever, "is it free?", turns, 10)]
        return ids.index("warranty-standard") if "warranty-standard" in ids else len(ids)

    assert rank(history) > rank(unsaid)


async def test_commands(brain: Brain, store: ConversationStore) -> None:
    start = await brain.handle(message("/start"))
    assert "deskmate" in start.text and "/human" in start.text
    help_reply = await brain.handle(message("/help@northwind_bot"))
    assert "/reset" in help_reply.text
    human = await brain.handle(message("/human"))
    assert human.action == "handoff"
    assert await store.handoff("console", "c1") is not None
    reset = await brain.handle(message("/reset"))
    assert "cleared" in reset.text
    assert await store.handoff("console", "c1") is None
    assert await store.history("console", "c1") == []


async def test_asking_for_a_person_or_being_angry_hands_off(brain: Brain) -> None:
    assert (await brain.handle(message("can I talk to a real person", "a"))).action == "handoff"
    angry = await brain.handle(message("THIS IS RIDICULOUS, WHERE IS MY ORDER!!!", "b"))
    assert angry.action == "handoff"


async def test_empty_and_control_character_messages_get_a_clear_prompt(brain: Brain) -> None:
    for text in ["", "   \n\t ", "\x00\x01\x02", "\u200b"]:
        reply = await brain.handle(message(text))
        assert reply.action == "clarify"
        assert "question" in reply.text


async def test_invalid_utf8_is_answered_not_crashed(brain: Brain) -> None:
    reply = await brain.handle(message(b"how do I reset my password \xff\xfe"))
    assert reply.action == "answer"
    assert reply.sources[0].id == "account-reset-password"


async def test_history_is_trimmed_and_expires(brain: Brain, redis: aioredis.Redis) -> None:
    for _ in range(5):
        await brain.handle(message("how do I track my parcel?"))
    assert await redis.llen("dm:conv:console:c1") == 6  # history_turns in the fixture
    ttl = await redis.ttl("dm:conv:console:c1")
    assert 0 < ttl <= 3600


async def test_every_turn_and_feedback_goes_to_the_transcripts_stream(
    brain: Brain, redis: aioredis.Redis
) -> None:
    await brain.handle(message("how do I track my parcel?"))
    await brain.feedback(Feedback("console", "c1", "u1", "42", "up"))
    events = await redis.xrange("dm:transcripts")
    kinds = [(e["type"], json.loads(e["data"]).get("turn", {}).get("role")) for _, e in events]
    assert kinds == [("turn", "user"), ("turn", "assistant"), ("feedback", None)]
    bot_turn = json.loads(events[1][1]["data"])["turn"]
    assert bot_turn["model_version"] == "quote"
    assert bot_turn["sources"] == ["shipping-tracking"]
    assert json.loads(events[2][1]["data"]) == {"message_id": "42", "rating": "up"}


async def test_greetings_and_thanks_are_not_handed_off(brain: Brain) -> None:
    assert (await brain.handle(message("hi there!"))).action == "none"
    assert (await brain.handle(message("ok thanks"))).action == "none"


def mood_brain(
    retriever: Retriever, store: ConversationStore, thresholds: MoodThresholds | None = None
) -> Brain:
    """A brain reading mood with the classifier shipped in the package."""
    classifier = MoodClassifier.load(DEFAULT_DIR)
    if thresholds is not None:
        classifier = classifier.with_thresholds(thresholds)
    reader = MoodReader(classifier, retriever.embedder.name, retriever.embedder.dimension)
    return Brain(retriever, store, QuoteBackend(), mood=reader)


async def user_moods(redis: aioredis.Redis) -> list[dict[str, object]]:
    events = await redis.xrange("dm:transcripts")
    turns = [json.loads(e["data"]).get("turn", {}) for _, e in events if e["type"] == "turn"]
    return [turn["mood"] for turn in turns if turn["role"] == "user"]


async def test_every_customer_message_carries_its_mood_in_the_transcripts(
    retriever: Retriever, store: ConversationStore, redis: aioredis.Redis
) -> None:
    brain = mood_brain(retriever, store)
    reply = await brain.handle(message("how do I track my parcel?"))
    assert reply.action == "answer"
    await brain.handle(message("thanks!"))
    moods = await user_moods(redis)
    assert len(moods) == 2
    labels = MoodClassifier.load(DEFAULT_DIR).labels
    for mood in moods:
        assert set(mood["scores"]) == set(labels)  # type: ignore[arg-type]
        assert mood["source"] == "base"
        assert -1 <= mood["sentiment"] <= 1  # type: ignore[operator]
    history = await store.history("console", "c1")
    assert history[0].mood is not None and history[0].mood.anger < 0.5


async def test_strong_anger_hands_off_and_staff_see_why(
    retriever: Retriever, store: ConversationStore, redis: aioredis.Redis
) -> None:
    brain = mood_brain(retriever, store)
    text = "This is the third time my order is late and nobody answers. I am furious!"
    reply = await brain.handle(message(text))
    assert reply.action == "handoff"
    assert reply.text.startswith("I'm sorry this has been frustrating")
    handoff = await store.handoff("console", "c1")
    assert handoff is not None
    assert handoff["reason"].startswith("angry customer: anger 0.")
    assert "strong" in handoff["reason"]
    assert (await user_moods(redis))[0]["label"] == "anger"


async def test_sustained_anger_hands_off_on_the_second_angry_message(
    retriever: Retriever, store: ConversationStore
) -> None:
    first = "how do I track my parcel? it is late again and I'm annoyed"
    second = "how do I track my parcel? still late, this is getting annoying"
    encoding = retriever.embedder.encode_with_states([first, second])
    states = unpadded(encoding.states, encoding.masks)
    classifier = MoodClassifier.load(DEFAULT_DIR)
    angers = [
        classifier.read(vector, state).anger
        for vector, state in zip(encoding.vectors, states, strict=True)
    ]
    # Between the two thresholds: neither message is strong anger alone.
    between = MoodThresholds(strong=max(angers) + 0.01, sustained=min(angers) - 0.01)
    brain = mood_brain(retriever, store, between)
    assert (await brain.handle(message(first))).action == "answer"
    reply = await brain.handle(message(second))
    assert reply.action == "handoff"
    handoff = await store.handoff("console", "c1")
    assert handoff is not None and "sustained" in handoff["reason"]


async def test_a_huge_message_is_kept_only_as_far_as_it_is_read(
    brain: Brain, store: ConversationStore, redis: aioredis.Redis
) -> None:
    huge = "how do I track my parcel? " + "x" * 1_000_000
    reply = await brain.handle(Inbound("http", "http:big", "u1", "m1", huge))
    assert reply.notice == "Your message is 1,000,026 characters long; I read the first 4,000."
    [question, _] = await store.history("http", "http:big")
    assert len(question.text) == 4000 and question.full_length == 1_000_026
    [entry, _] = await redis.xrange("dm:transcripts")
    turn = json.loads(entry[1]["data"])["turn"]
    assert len(turn["text"]) == 4000 and turn["full_length"] == 1_000_026
    assert await redis.memory_usage("dm:transcripts") < 50_000  # not the megabyte


async def test_a_message_cut_at_the_edge_says_how_long_it_was(brain: Brain) -> None:
    sent = Inbound("http", "http:cut", "u1", "m1", "how do I track my parcel? " + "y" * 9000)
    cut = sent.bounded(4000)
    assert len(cut.text) == 4000 and cut.full_length == 9026
    assert cut.bounded(4000) == cut  # cutting again changes nothing
    reply = await brain.handle(cut)
    assert "9,026 characters long" in reply.notice
    agent = Inbound("slack", "D1", "agent", "m2", "z" * 9000, agent=True)
    assert agent.bounded(4000).text == agent.text  # what an agent writes is passed on whole


def test_a_new_question_after_a_clarifying_question_finds_its_own_entry(
    retriever: Retriever,
) -> None:
    # The offered options stay in the context, but a question on another topic must not
    # be pulled to them.
    history = [
        Turn("user", "how long do returns take?"),
        Turn(
            "assistant",
            "The returns are usually returned within 30 days of the order. [1] [2] [3]",
            action="answer",
            sources=("returns-refund-timing", "returns-window", "returns-how-to"),
        ),
        Turn("user", "and is it free?"),
        Turn(
            "assistant",
            "I'm not sure I understood. Did you mean one of these?\n1. Are returns free?\n"
            "2. How long does delivery take?\n3. What warranty do your products have?",
            action="clarify",
        ),
    ]
    hits = search_in_conversation(retriever, "how do I track my parcel?", history, 3)
    assert hits[0].id == "shipping-tracking", [hit.id for hit in hits]
