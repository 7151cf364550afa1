"""`evaluate_answers`: each query in its own conversation, started from its history."""

from __future__ import annotations

from brain.answering.backends import QuoteBackend
from brain.answering.grounded import GenerativeBackend
from brain.answering.openai_generator import OpenAIGenerator, OpenAIOptions
from brain.conversations import ConversationStore
from brain.evaluation.answers import evaluate_answers
from brain.pipeline import Brain
from retrieval.evaluation import LabelledQuery
from retrieval.index import Thresholds
from retrieval.retriever import Retriever
from tests.fakes.openai import FakeOpenAI, fake_openai_server

# The sample FAQ's calibrated thresholds (as in tests/brain/answering/test_grounded.py).
CALIBRATED = Thresholds(answer=0.37, clarify=0.30)
HISTORY = (
    ("user", "how do I return an item?"),
    ("assistant", "Start a return from My orders and print the label."),
)


async def test_each_query_starts_from_its_history_in_the_conversation_store(
    retriever: Retriever, store: ConversationStore
) -> None:
    brain = Brain(retriever, store, QuoteBackend(), thresholds=CALIBRATED)
    follow_up = LabelledQuery("is it free?", ("returns-cost",), None, HISTORY)
    alone = LabelledQuery("is it free?", ("returns-cost",))
    with_history = await evaluate_answers(brain, [follow_up])
    without = await evaluate_answers(brain, [alone])
    assert with_history.citation_accuracy == 1.0
    assert without.citation_accuracy == 0.0  # alone, "free" is about shipping
    # The conversation holds the history first, then the question and the reply.
    keys = [key async for key in store.redis.scan_iter(match="*conv:console:eval:*")]
    turns = [await store.redis.lrange(key, 0, -1) for key in keys]
    assert sorted(len(t) for t in turns) == [2, 4]


async def test_the_report_says_what_wrote_the_answers(
    retriever: Retriever, store: ConversationStore
) -> None:
    """The model's answers and the long answers quoted whole, told apart: returns-window
    is 42 words (written by the model at a 50-word limit), shipping-lost-parcel 64
    (quoted)."""
    async with fake_openai_server(FakeOpenAI(lambda m: "Here is how it works [1].")) as fake:
        generator = OpenAIGenerator(
            OpenAIOptions(url=fake.url, model="org/tiny", api_key="", timeout_s=5, attempts=1)
        )
        backend = GenerativeBackend(generator, quote_over_words=50)
        brain = Brain(retriever, store, backend, thresholds=CALIBRATED)
        report = await evaluate_answers(
            brain,
            [
                LabelledQuery("how many days do I have to send an item back?", ("returns-window",)),
                LabelledQuery("my parcel never arrived", ("shipping-lost-parcel",)),
            ],
        )
        await backend.aclose()
    assert report.answered == 1.0 and report.citation_accuracy == 1.0
    assert report.answered_by == {
        "openai:tiny": 0.5,
        "quote (fallback from openai:tiny: long_answer)": 0.5,
    }
    assert report.to_json()["answered_by"] == report.answered_by
