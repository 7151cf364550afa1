"""The hybrid index: search quality signals, persistence, incremental rebuilds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from brain.settings import SAMPLE_FAQ
from retrieval.confidence import (
    FEATURES,
    NEIGHBOUR_FEATURES,
    ConfidenceModel,
    LabelledExamples,
)
from retrieval.embedder import Embedder
from retrieval.faq import FaqEntry, load_faq
from retrieval.index import (
    CONTEXT_CONFIDENCE,
    PASSAGE_SENTENCE_PENALTY,
    FaqIndex,
    IndexLoadError,
    Thresholds,
    rebuild,
)
from retrieval.retriever import Retriever

ENTRIES = [
    FaqEntry("ship", "How long does shipping take?", "3-5 working days.", ("delivery time",)),
    FaqEntry("care", "What is the NW-CARE plan?", "Two extra years of cover.", ("warranty plan",)),
    FaqEntry("pay", "Which payment methods do you accept?", "Cards and PayPal.", ()),
]


class CountingEmbedder(Embedder):
    """The real embedder, counting the texts it is asked to embed."""

    def __init__(self, inner: Embedder) -> None:
        self.__dict__.update(inner.__dict__)
        self.embedded: list[str] = []

    def encode(self, texts, batch_size=64, progress=None):  # type: ignore[no-untyped-def]
        self.embedded.extend(texts)
        return super().encode(texts, batch_size, progress)


def test_alternate_phrasings_count_as_their_entry(embedder: Embedder) -> None:
    retriever = Retriever(embedder, FaqIndex.build(ENTRIES, embedder))
    assert retriever.search("what is the delivery time")[0].id == "ship"


def test_keyword_signal_finds_product_codes(embedder: Embedder) -> None:
    retriever = Retriever(embedder, FaqIndex.build(ENTRIES, embedder))
    hit = retriever.search("NW-CARE")[0]
    assert hit.id == "care"
    assert hit.keyword > 0
    dense_only = retriever.search("NW-CARE", mode="dense")[0]
    assert dense_only.keyword == 0.0 and dense_only.score == dense_only.dense


def test_empty_query_returns_nothing(embedder: Embedder) -> None:
    assert Retriever(embedder, FaqIndex.build(ENTRIES, embedder)).search("   ") == []


def test_save_and_load_round_trip_keeps_results_and_thresholds(
    tmp_path: Path, embedder: Embedder
) -> None:
    index = FaqIndex.build(ENTRIES, embedder).with_thresholds(Thresholds(0.7, 0.5, "q.jsonl"))
    index.save(tmp_path / "index")
    loaded = FaqIndex.load(tmp_path / "index")
    assert loaded.content_hash == index.content_hash
    assert loaded.thresholds == Thresholds(0.7, 0.5, "q.jsonl")
    query = "how fast is delivery"
    vector = embedder.encode_query(query)
    assert [h.id for h in loaded.search(query, vector)] == [
        h.id for h in index.search(query, vector)
    ]


def test_rebuild_embeds_only_changed_entries(tmp_path: Path, embedder: Embedder) -> None:
    counting = CountingEmbedder(embedder)
    directory = tmp_path / "index"
    _, built = rebuild(directory, ENTRIES, counting)
    assert built and len(counting.embedded) == 5
    counting.embedded.clear()
    _, built = rebuild(directory, ENTRIES, counting)
    assert not built and counting.embedded == []  # unchanged: nothing embedded or written
    changed = [
        *ENTRIES[:2],
        FaqEntry("pay", "Which payment methods do you accept?", "Cards.", ("pay by card",)),
    ]
    index, built = rebuild(directory, changed, counting)
    assert built and counting.embedded == ["pay by card"]
    # Reused vectors are the same vectors.
    fresh = FaqIndex.build(changed, embedder)
    assert np.allclose(index.vectors, fresh.vectors, atol=1e-5)


def test_rebuild_keeps_calibrated_thresholds(tmp_path: Path, embedder: Embedder) -> None:
    directory = tmp_path / "index"
    index, _ = rebuild(directory, ENTRIES, embedder)
    index.with_thresholds(Thresholds(0.6, 0.4, "q")).save(directory)
    index, _ = rebuild(directory, ENTRIES[:2], embedder)
    assert index.thresholds == Thresholds(0.6, 0.4, "q")


def test_missing_or_corrupt_index_says_how_to_fix(tmp_path: Path, embedder: Embedder) -> None:
    with pytest.raises(IndexLoadError, match="deskmate faq import"):
        FaqIndex.load(tmp_path / "nothing")
    FaqIndex.build(ENTRIES, embedder).save(tmp_path / "index")
    (tmp_path / "index" / "vectors.npy").write_bytes(b"garbage")
    with pytest.raises(IndexLoadError, match="unreadable"):
        FaqIndex.load(tmp_path / "index")


def test_large_index_switches_to_hnsw_and_still_finds_entries(embedder: Embedder) -> None:
    rng = np.random.default_rng(0)
    entries = [FaqEntry(f"e{i}", f"question {i}", "answer") for i in range(30)]
    vectors = rng.normal(size=(30, embedder.dimension)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    import retrieval.index as module

    original = module.HNSW_ABOVE
    module.HNSW_ABOVE = 10
    try:
        index = FaqIndex(entries, np.arange(30), [str(i) for i in range(30)], vectors, "m")
    finally:
        module.HNSW_ABOVE = original
    assert "HNSW" in type(index._faiss).__name__
    assert index.search("question", vectors[7], k=1, mode="dense")[0].id == "e7"


def test_sample_faq_answers_its_own_questions(embedder: Embedder) -> None:
    from brain.settings import SAMPLE_FAQ

    entries = load_faq([SAMPLE_FAQ])
    retriever = Retriever(embedder, FaqIndex.build(entries, embedder))
    correct = sum(retriever.search(e.question, k=1)[0].id == e.id for e in entries)
    assert correct == len(entries)


# Two places with the same kinds of knowledge: which one a question is about is only
# said earlier in the conversation.
PLACES = [
    FaqEntry("harbour-parking", "Harbour Inn: Is there parking?", "Yes, 20 free spaces.", ()),
    FaqEntry("maple-parking", "Maple Lodge: Is there parking?", "Street parking only.", ()),
    FaqEntry(
        "harbour-review",
        "Harbour Inn: guest review",
        "We came for a weekend by the sea. The staff upgraded our room without asking. "
        "Breakfast was a feast of fresh pastries and local cheese. Checkout was quick.",
    ),
    FaqEntry(
        "maple-review",
        "Maple Lodge: guest review",
        "A calm place under the trees. The garden is lovely in the morning. "
        "Breakfast was a feast of fresh pastries and local cheese. We slept very well.",
    ),
]


def test_a_passage_is_searched_sentence_by_sentence() -> None:
    review, faq = PLACES[2], PLACES[0]
    assert review.is_passage and not faq.is_passage
    assert faq.search_texts == faq.phrasings
    assert "The staff upgraded our room without asking." in review.search_texts
    assert "Checkout was quick." in review.search_texts


def test_a_detail_in_the_middle_of_a_passage_is_found(embedder: Embedder) -> None:
    retriever = Retriever(embedder, FaqIndex.build(PLACES, embedder))
    hit = retriever.search("is checkout fast?")[0]
    assert hit.id == "harbour-review"
    assert hit.dense > 0.6  # the sentence matched, not the review about many things


@pytest.mark.parametrize(
    ("history", "expected"),
    [
        (
            [("user", "I'm looking for a guesthouse"), ("agent", "How about Maple Lodge?")],
            "maple",
        ),
        (
            [("user", "I'm looking for a guesthouse"), ("agent", "How about Harbour Inn?")],
            "harbour",
        ),
        (
            [
                ("user", "Is the Maple Lodge quiet?"),
                ("assistant", "Very quiet, it is under the trees."),
                ("user", "ok"),
            ],
            "maple",
        ),
    ],
)
def test_a_follow_up_is_read_in_the_context_of_the_conversation(
    embedder: Embedder, history: list[tuple[str, str]], expected: str
) -> None:
    retriever = Retriever(embedder, FaqIndex.build(PLACES, embedder))
    for question, kind in (
        ("can I park my car there?", "parking"),
        ("how is breakfast?", "review"),
    ):
        hits = retriever.search(question, history=history)
        assert hits[0].id == f"{expected}-{kind}", (question, [h.id for h in hits])
        other = [hit for hit in hits if not hit.id.startswith(expected)]
        assert hits[0].context > max(hit.context for hit in other)
        # The confidence stays the question's own fused score: context only nudges it.
        best, weight = hits[0], retriever.index.keyword_weight
        own = (1 - weight) * best.dense + weight * best.keyword
        assert best.score == pytest.approx(own + CONTEXT_CONFIDENCE * best.context)


@pytest.fixture(scope="module")
def shop(embedder: Embedder) -> Retriever:
    return Retriever(embedder, FaqIndex.build(load_faq([SAMPLE_FAQ]), embedder))


@pytest.mark.parametrize(
    ("asked", "answered", "follow_up", "expected"),
    [
        ("how do I return something?", "returns-how-to", "when do I get my money back?",
         "returns-refund-timing"),
        ("which payment methods?", "payment-methods", "my payment was declined",
         "payment-declined"),
        ("what warranty do you give?", "warranty-standard", "what about NW-CARE?",
         "warranty-nw-care"),
        ("is there express shipping?", "shipping-express", "how do I track my parcel?",
         "shipping-tracking"),
        # What the reply said still answers a follow-up about it.
        ("which payment methods?", "payment-methods", "do you take PayPal?", "payment-methods"),
        ("do you ship to Norway?", "shipping-countries", "and to Switzerland?",
         "shipping-countries"),
    ],
)  # fmt: skip
def test_a_follow_up_is_not_answered_with_what_the_bot_just_said(
    shop: Retriever, asked: str, answered: str, follow_up: str, expected: str
) -> None:
    # The bot's reply quoted one entry: that entry fits the conversation best of all, and
    # before ANSWERED_PENALTY it came back as the answer to whatever was asked next.
    reply = shop.index.entry(answered)
    assert reply is not None
    history = [("user", asked), ("assistant", reply.answer)]
    hits = shop.search(follow_up, history=history)
    assert hits[0].id == expected, [hit.id for hit in hits]


def test_the_share_of_an_answer_a_reply_said_is_counted_per_entry(embedder: Embedder) -> None:
    index = FaqIndex.build(ENTRIES, embedder)
    said = index._answer_words.held_by("Cards are fine, and we also take cash.")
    # "Cards and PayPal." -> card, paypal: one of two words said; the others none.
    assert said.tolist() == pytest.approx([0.0, 0.0, 0.5])
    assert index._answer_words.held_by("").tolist() == [0.0, 0.0, 0.0]
    # An entry with no answer (an intent known by its phrasings) was never said.
    bare = FaqIndex.build(
        [*ENTRIES, FaqEntry("intent", "card lost", "", ("lost my card",))], embedder
    )
    assert bare._answer_words.held_by("card lost, card stolen").tolist()[-1] == 0.0


def test_one_shot_questions_are_searched_as_before(embedder: Embedder) -> None:
    retriever = Retriever(embedder, FaqIndex.build(PLACES, embedder))
    assert retriever.search("is there parking?", k=4) == retriever.search(
        "is there parking?", k=4, history=[("user", ""), ("agent", "  ")]
    )


def test_an_index_built_with_other_search_texts_is_rebuilt(
    embedder: Embedder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("retrieval.index.SEARCH_TEXTS", "phrasings only")
    old, _ = rebuild(tmp_path / "index", PLACES, embedder)
    monkeypatch.undo()
    index, rebuilt = rebuild(tmp_path / "index", PLACES, embedder)
    assert rebuilt and index.content_hash != old.content_hash


def test_alone_a_sentence_counts_less_the_longer_its_passage(embedder: Embedder) -> None:
    index = FaqIndex.build(PLACES, embedder)
    review = PLACES[2]
    question = "is checkout fast?"
    sentences = review.search_texts[len(review.phrasings) :]
    vectors = embedder.encode([question, *sentences])
    best_sentence = float((vectors[1:] @ vectors[0]).max())
    alone = Retriever(embedder, index).search(question)[0]
    penalty = PASSAGE_SENTENCE_PENALTY * np.log(len(sentences))
    assert alone.id == review.id
    assert alone.dense == pytest.approx(best_sentence - penalty, abs=1e-4)
    # In a conversation the subject narrows the candidates: the sentence counts fully.
    in_context = Retriever(embedder, index).search(
        question, history=[("user", "Harbour Inn please")]
    )[0]
    assert in_context.dense == pytest.approx(best_sentence, abs=1e-4)


def test_labelled_questions_kept_with_the_thresholds_are_read_by_every_search(
    tmp_path: Path, embedder: Embedder
) -> None:
    texts = ("will it rain tomorrow?", "tell me a joke", "how long is delivery?")
    flags = np.array([True, True, False])
    examples = LabelledExamples(texts, flags, embedder.encode(list(texts)), embedder.name)
    width = len(FEATURES) + len(NEIGHBOUR_FEATURES)
    model = ConfidenceModel(
        (0.0,) * len(FEATURES) + (-1.0, 1.0, -1.0),
        0.0,
        (0.0,) * width,
        (1.0,) * width,
        (*FEATURES, *NEIGHBOUR_FEATURES),
    )
    thresholds = Thresholds(0.5, 0.4, "q.jsonl", model=model, examples=examples)
    index = FaqIndex.build(ENTRIES, embedder).with_thresholds(thresholds)
    query = "what's the weather going to be tomorrow"
    vector = embedder.encode_query(query)
    hits = index.search(query, vector)
    assert hits and all(hit.neighbours == hits[0].neighbours for hit in hits)
    nearest_out, nearest_in, share = hits[0].neighbours or (0.0, 0.0, 0.0)
    assert nearest_out > nearest_in and share == pytest.approx(2 / 3)
    assert index.thresholds.confidence(hits) < 0.5  # near the weather question: not answered
    covered = index.search(
        "how long does delivery take", embedder.encode_query("how long does delivery take")
    )
    assert index.thresholds.confidence(covered) > index.thresholds.confidence(hits)

    index.save(tmp_path / "index")
    loaded = FaqIndex.load(tmp_path / "index")
    assert loaded.thresholds.examples is not None
    assert loaded.thresholds.examples.texts == texts
    assert loaded.search(query, vector)[0].neighbours == pytest.approx(hits[0].neighbours)

    # Another retrieval model: the labelled questions are embedded again, in its space.
    other = CountingEmbedder(embedder)
    other.name = "another-model"
    rebuilt = FaqIndex.build(ENTRIES, other, previous=loaded)
    assert rebuilt.thresholds.examples is not None
    assert rebuilt.thresholds.examples.model == "another-model"
    assert set(texts) <= set(other.embedded)
    assert rebuilt.search(query, vector)[0].neighbours is not None


def _unit(*values: float) -> np.ndarray:
    vector = np.asarray(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def _hand_made_index(entries: list[FaqEntry], vectors: list[np.ndarray]) -> FaqIndex:
    owners = [number for number, entry in enumerate(entries) for _ in entry.search_texts]
    return FaqIndex(
        entries,
        np.asarray(owners, dtype=np.int64),
        [f"key{row}" for row in range(len(owners))],
        np.stack(vectors),
        "hand-made",
    )


def test_an_entry_is_ranked_by_its_two_best_phrasings_and_scored_by_its_best() -> None:
    # "lucky" has one phrasing very close to the question and two far from it; "meant"
    # has two phrasings both close. The best single phrasing is lucky's; the entry whose
    # phrasings agree ranks first. Scores stay each entry's best phrasing's, the scale the
    # policy thresholds are set on.
    lucky = FaqEntry("lucky", "lucky question", "a", ("far one", "far two"))
    meant = FaqEntry("meant", "meant question", "b", ("meant again",))
    single = FaqEntry("single", "single question", "c", ())
    question = _unit(1, 0, 0)
    index = _hand_made_index(
        [lucky, meant, single],
        [
            _unit(0.95, 0.31, 0),  # lucky question: cos 0.95
            _unit(0.1, 0, 1),  # far one
            _unit(0.1, 1, 0),  # far two
            _unit(0.9, 0.44, 0),  # meant question: cos 0.90
            _unit(0.85, 0, 0.53),  # meant again: cos 0.85
            _unit(0.7, 0.71, 0),  # single: cos 0.70
        ],
    )
    sims = index.vectors @ question
    hits = index.search("question", question, k=3, mode="dense")
    assert [hit.id for hit in hits] == ["meant", "single", "lucky"]
    assert [hit.dense for hit in hits] == pytest.approx([sims[3], sims[5], sims[0]], abs=1e-6)
    assert [hit.score for hit in hits] == [hit.dense for hit in hits]
    # Read in a conversation, the same rule: (best, agreed) for every entry.
    best, agreed = index._dense_scores(question)
    assert best == pytest.approx([sims[0], sims[3], sims[5]], abs=1e-6)
    assert agreed == pytest.approx(
        [(sims[0] + max(sims[1], sims[2])) / 2, (sims[3] + sims[4]) / 2, sims[5]], abs=1e-6
    )


def test_two_phrasings_alike_count_as_the_best_twice() -> None:
    twins = FaqEntry("twins", "same words", "a", ("same words again", "other"))
    index = _hand_made_index([twins], [_unit(1, 0), _unit(1, 0), _unit(0, 1)])
    question = _unit(1, 0)
    assert index._entry_similarity(0, question) == pytest.approx((1.0, 1.0), abs=1e-6)
    assert [float(a[0]) for a in index._dense_scores(question)] == pytest.approx([1.0, 1.0])


def test_both_readings_agree_on_a_real_faq(embedder: Embedder) -> None:
    entries = load_faq([Path(__file__).resolve().parents[2] / "bots" / "sample" / "faq.jsonl"])
    index = FaqIndex.build(entries, embedder)
    question = embedder.encode(["can I pay in instalments?"])[0]
    best, agreed = index._dense_scores(question)
    for number in range(len(entries)):
        alone = index._entry_similarity(number, question)
        assert alone == pytest.approx((best[number], agreed[number]), abs=1e-5)
