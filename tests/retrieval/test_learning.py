"""Learning the FAQ: contrastive fine-tune of the embedder on its own phrasings."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import numpy as np

from retrieval.embedder import Embedder
from retrieval.faq import FaqEntry
from retrieval.learning import (
    LEARNED_MARK,
    LearnOptions,
    _batches,
    fine_tune,
    learn,
    learned_name,
    training_pairs,
)

TOY = [
    FaqEntry("ship", "How long does delivery take?", "3-5 days.", ("when will my order come",)),
    FaqEntry("refund", "How do I get a refund?", "Use the form.", ("money back please",)),
    FaqEntry("size", "What size should I buy?", "See the chart.", ("does a medium fit me",)),
    FaqEntry("store", "Where are your shops?", "Oslo and Bergen.", ("any shop near me",)),
    FaqEntry("review-1", "Oslo shop: customer review", "Nice staff. Fast service.", ()),
]
ONE_EPOCH = LearnOptions(epochs=1, batch_size=4, learning_rates=(1e-4,), min_pairs=1)


def test_pairs_come_from_alternates_and_labelled_queries_never_passages() -> None:
    pairs = training_pairs(TOY, labelled=[("parcel late", "ship"), ("x", "unknown-id")])
    assert [(p.text, TOY[p.entry].id) for p in pairs] == [
        ("when will my order come", "ship"),
        ("money back please", "refund"),
        ("does a medium fit me", "size"),
        ("any shop near me", "store"),
        ("parcel late", "ship"),
    ]


def test_a_batch_never_holds_two_phrasings_of_one_entry() -> None:
    entries = [
        FaqEntry(f"e{i}", f"q{i}", "a", tuple(f"alt {i} {j}" for j in range(5))) for i in range(6)
    ]
    pairs = training_pairs(entries)
    batches = _batches(pairs, LearnOptions(batch_size=4), random.Random(0))
    for batch in batches:
        assert len({p.entry for p in batch}) == len(batch)
    assert sum(len(b) for b in batches) >= len(pairs) - 6  # only lone leftovers dropped


def test_the_name_follows_the_data_and_the_options() -> None:
    pairs = training_pairs(TOY)
    name = learned_name("all-MiniLM-L6-v2", TOY, pairs, ONE_EPOCH)
    assert name.startswith("all-MiniLM-L6-v2" + LEARNED_MARK)
    assert name == learned_name("all-MiniLM-L6-v2", TOY, pairs, ONE_EPOCH)
    assert name != learned_name("all-MiniLM-L6-v2", TOY, pairs[:-1], ONE_EPOCH)
    assert name != learned_name("all-MiniLM-L6-v2", TOY, pairs, LearnOptions())


def test_one_epoch_pulls_an_alternate_towards_its_entry(embedder: Embedder, tmp_path: Path) -> None:
    pairs = training_pairs(TOY)
    fine_tune(embedder.location, TOY, pairs, ONE_EPOCH, tmp_path / "model")
    learned = Embedder("toy-learned", location=str(tmp_path / "model"))

    def similarity(model: Embedder) -> float:
        vectors = model.encode(["money back please", "How do I get a refund?"])
        return float(np.dot(vectors[0], vectors[1]))

    assert similarity(learned) > similarity(embedder)


def test_too_few_phrasings_keep_the_base_model(embedder: Embedder, tmp_path: Path) -> None:
    result = learn(embedder, TOY, tmp_path, options=LearnOptions(min_pairs=20))
    assert not result.kept and result.name == embedder.name
    assert "at least 20" in result.reason


def test_each_learning_rate_is_checked_and_the_best_on_held_out_phrasings_kept(
    embedder: Embedder, tmp_path: Path
) -> None:
    entries = [
        FaqEntry(f"e{i}", q, "a", alternates)
        for i, (q, alternates) in enumerate(
            [
                ("How long does delivery take?", ("when will my order come", "parcel ETA")),
                ("How do I get a refund?", ("money back please", "refund my order")),
                ("What size should I buy?", ("does a medium fit me", "size chart")),
                ("Where are your shops?", ("any shop near me", "store locations")),
                ("Can I pay later?", ("buy now pay later", "instalment plans")),
            ]
        )
    ]
    rates = (1e-6, 1e-4)
    options = LearnOptions(epochs=2, batch_size=4, learning_rates=rates, min_pairs=1, min_gain=-1)
    seen: list[tuple[int, int]] = []
    result = learn(embedder, entries, tmp_path, options=options, progress=lambda *a: seen.append(a))
    # Both rates were tried on the same held-out phrasings, and the better one trained
    # the model kept (min_gain -1: kept whatever it gained).
    tried = result.reason.split("tried ", 1)[1]
    parts = [part.split(": MRR ") for part in tried.split(", ")]
    mrr = {float(rate): float(figure[:5]) for rate, figure in parts}
    assert set(mrr) == set(rates)
    assert result.kept and result.learning_rate == max(rates, key=lambda rate: mrr[rate])
    assert f"{result.learned_mrr:.3f}" == f"{max(mrr.values()):.3f}"
    # One bar over three fine-tunes: its total is known from the start (it never grows
    # under the customer's eyes), it only moves forward, and it ends full.
    assert len({total for _, total in seen}) == 1
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    assert seen[-1][0] == seen[-1][1]
    assert not list(tmp_path.glob(".learn-*"))  # no staging left behind
    # No rate gains enough: the base model serves, and the bar still ends full.
    seen.clear()
    strict = dataclasses.replace(options, min_gain=1.0)
    kept_base = learn(
        embedder, entries, tmp_path / "strict", options=strict, progress=lambda *a: seen.append(a)
    )
    assert not kept_base.kept and kept_base.learning_rate == 0.0
    assert "base model kept" in kept_base.reason and seen[-1][0] == seen[-1][1]
