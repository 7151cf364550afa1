"""Passages: sized for the embedder, stable ids, near-duplicates across documents."""

from __future__ import annotations

from retrieval.knowledge.document import Document, Section
from retrieval.knowledge.passages import PASSAGE_MAX_WORDS, near_duplicates, passages


def returns(damaged: str, extra: tuple[Section, ...] = ()) -> Document:
    return Document(
        "help/returns.html",
        "Returns policy",
        (
            Section((), "Most items can be returned."),
            Section(("Damaged items",), damaged, "dmg"),
            *extra,
        ),
        url="https://help.example.com/returns",
    )


def test_ids_titles_and_links_follow_the_heading_path() -> None:
    found = passages(returns("Send us a photo within 7 days."))
    assert [(p.id.split("#")[1], p.title) for p in found] == [
        ("intro", "Returns policy"),
        ("damaged-items", "Returns policy › Damaged items"),
    ]
    assert found[1].url == "https://help.example.com/returns#dmg"
    assert all(p.is_passage and p.document == "help/returns.html" for p in found)


def test_editing_one_section_keeps_the_other_ids_and_texts() -> None:
    before = passages(returns("Send us a photo within 7 days."))
    after = passages(
        returns("Send us a photo within 14 days.", (Section(("Refunds",), "Five days."),))
    )
    assert before[0] == after[0]  # unchanged section: same id, same text, same embeddings
    assert before[1].id == after[1].id and before[1].answer != after[1].answer
    assert after[2].id.endswith("#refunds")


def test_long_sections_are_cut_into_passages_the_embedder_reads_whole() -> None:
    sentence = "The warranty covers the pump, the boiler and the heating element for two years. "
    found = passages(returns(sentence * 60))
    parts = [p for p in found if "damaged-items" in p.id]
    assert len(parts) > 1
    assert all(len(p.answer.split()) <= PASSAGE_MAX_WORDS for p in parts)
    assert len({p.id for p in parts}) == len(parts)


def test_near_duplicate_passages_across_documents_are_found() -> None:
    text = (
        "If your item arrived damaged, contact us within 7 days with a photo and we will "
        "send a replacement free of charge, no need to return the broken item."
    )
    first = passages(returns(text))
    copy = Document("help/shipping.html", "Shipping", (Section(("Damage",), text + " Thank you."),))
    other = Document(
        "help/gift.html", "Gift cards", (Section(("Expiry",), "Cards last two years."),)
    )
    pairs = near_duplicates([*first, *passages(copy), *passages(other)])
    assert [(p.first.split("#")[1], p.second.split("#")[1]) for p in pairs] == [
        ("damaged-items", "damage")
    ]
    assert not near_duplicates(first + first[:0])  # within one document: not reported
