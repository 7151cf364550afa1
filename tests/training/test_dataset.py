"""Picking training pairs, grounding them in the FAQ, and encoding with the answer-only loss."""

from __future__ import annotations

from brain.prompt import cited_numbers
from retrieval.retriever import Retriever
from training.dataset import (
    IGNORE,
    Example,
    add_citation,
    build_examples,
    pick_pairs,
    split_pairs,
)
from training.transcripts import Conversation, Message


def conversation(ident: str, *messages: Message) -> Conversation:
    return Conversation(list(messages), {"id": ident})


def test_pairs_learn_agents_thumbs_up_and_corrections_never_thumbs_down() -> None:
    conversations = [
        conversation(
            "a",
            Message("user", "How long do refunds take?"),
            Message("assistant", "About a week [1]", action="answer", rating="up"),
            Message("user", "And for PayPal?"),
            Message("assistant", "PayPal is instant [2]", action="answer", rating="down"),
            Message("agent", "PayPal refunds take 2 working days."),  # a staff correction
            Message("user", "Can I pay with cash?"),
            Message("assistant", "We take cash on delivery", action="answer", rating="down"),
            Message("user", "Where is my parcel?"),
            Message("assistant", "Let me pass you to a person.", action="handoff"),
            Message("user", "Do you ship abroad?"),
            Message("assistant", "Only in the EU.", action="answer"),  # unrated
            Message("user", "Do you sell gift cards?"),
            Message(
                "assistant",
                "No.",
                action="answer",
                rating="down",
                correction="Yes, from 10 to 200 euros, in the shop and online.",
            ),
            Message("user", "thanks"),
            Message("agent", "ok"),  # near-empty
        ),
        conversation(
            "b",
            Message("user", "how long do refunds take?"),
            Message("assistant", "About a week [1]", action="answer", rating="up"),  # duplicate
        ),
    ]
    pairs, stats = pick_pairs(conversations)
    assert [(p.question, p.answer, p.kind) for p in pairs] == [
        ("How long do refunds take?", "About a week [1]", "rated_up"),
        ("And for PayPal?", "PayPal refunds take 2 working days.", "correction"),
        (
            "Do you sell gift cards?",
            "Yes, from 10 to 200 euros, in the shop and online.",
            "correction",
        ),
    ]
    assert stats.dropped == {
        "rated_down": 1,
        "not_an_answer": 1,
        "unrated": 1,
        "near_empty": 1,
        "duplicate": 1,
    }
    # History holds what was said before, agent turns included.
    assert [t.role for t in pairs[1].history] == ["user", "assistant"]
    assert [t.text for t in pairs[2].history][-2:] == ["Do you ship abroad?", "Only in the EU."]

    with_unrated, _ = pick_pairs(conversations, include_unrated=True)
    assert ("Only in the EU.", "unrated") in [(p.answer, p.kind) for p in with_unrated]


def test_split_keeps_conversations_whole() -> None:
    conversations = [
        conversation(
            f"c{n}",
            Message("user", f"question {n}"),
            Message("agent", f"answer number {n}"),
            Message("user", f"more {n}"),
            Message("agent", f"second answer {n}"),
        )
        for n in range(10)
    ]
    pairs, _ = pick_pairs(conversations)
    train, held = split_pairs(pairs, 0.3, seed=1)
    assert len(held) == 6 and len(train) == 14
    assert not {p.conversation_id for p in train} & {p.conversation_id for p in held}


def test_examples_cite_the_matching_passage_and_mask_the_prompt(
    retriever: Retriever, smollm_tokenizer: object
) -> None:
    from training.dataset import encode_example

    entry = retriever.index.entry("returns-refund-timing")
    assert entry is not None
    answer = entry.answer
    pairs, _ = pick_pairs(
        [
            conversation(
                "r", Message("user", "when do I get my money back"), Message("agent", answer)
            )
        ]
    )
    (example,) = build_examples(pairs, retriever, top_k=3)
    number = example.passage_ids.index("returns-refund-timing") + 1
    assert example.source_id == "returns-refund-timing"
    assert example.answer == f"[{number}] {answer}"
    messages = example.messages()
    assert messages[0]["role"] == "system" and "[1]" in messages[-1]["content"]

    encoded = encode_example(smollm_tokenizer, example, max_length=384, passage_chars=200)
    assert encoded is not None and len(encoded["input_ids"]) <= 384
    labelled = [t for t in encoded["labels"] if t != IGNORE]
    assert encoded["labels"][: len(encoded["labels"]) - len(labelled)] == [IGNORE] * (
        len(encoded["labels"]) - len(labelled)
    )
    text = smollm_tokenizer.decode(labelled)  # type: ignore[attr-defined]
    assert text.endswith("<|im_end|>") and text.startswith(f"[{number}] {answer[:40]}")
    assert isinstance(example, Example)


def test_the_citation_comes_first() -> None:
    assert add_citation("  Use ~~tildes~~. Then save.\n", 2) == "[2] Use ~~tildes~~. Then save."


def test_a_follow_up_is_grounded_in_the_passages_its_conversation_points_to(
    retriever: Retriever,
) -> None:
    """Training retrieves as serving does: the question read in its conversation."""
    follow_up = conversation(
        "f",
        Message("user", "how do I return an item?"),
        Message("agent", "Start a return from My orders and print the label we email you."),
        Message("user", "is it free?"),
        Message("agent", "Returns are free in the EU and UK; in the US a fee comes off refunds."),
    )
    pairs, _ = pick_pairs([follow_up])
    example = build_examples(pairs, retriever, top_k=3)[-1]
    assert example.question == "is it free?"
    assert example.passage_ids[0] == "returns-cost"
    assert example.source_id == "returns-cost"
    assert example.answer.startswith("[1] ")  # a paraphrase still learns to cite


def test_a_menu_pick_is_learnt_as_the_picked_entry_s_question(retriever: Retriever) -> None:
    """As serving does: "2" after a clarifying menu asks the second entry's question,
    grounded in that entry alone."""
    entry = retriever.index.entry("payment-instalments")
    assert entry is not None
    picked = conversation(
        "m",
        Message("user", "payment"),
        Message(
            "assistant",
            "I'm not sure I understood. Did you mean one of these?\n1. ...\n2. ...",
            action="clarify",
            sources=("payment-methods", "payment-instalments", "payment-declined"),
        ),
        Message("user", "2"),
        Message("agent", "Yes: Klarna splits orders from 50 into interest-free instalments."),
    )
    pairs, _ = pick_pairs([picked])
    (example,) = build_examples(pairs, retriever, top_k=3)
    assert example.question == entry.question
    assert example.passage_ids == ["payment-instalments"]
    assert example.answer.startswith("[1] ")


def test_a_reply_drawing_on_two_passages_cites_both(retriever: Retriever) -> None:
    reply = (
        "Returns are free in the EU and UK with our prepaid label; we refund within "
        "5 working days of the parcel arriving and email you when it is done."
    )
    pairs, _ = pick_pairs(
        [
            conversation(
                "t",
                Message("user", "are returns free and when is my refund?"),
                Message("agent", reply),
            )
        ]
    )
    (example,) = build_examples(pairs, retriever, top_k=3)
    cited = {example.passage_ids[n - 1] for n in cited_numbers(example.answer)}
    assert cited == {"returns-cost", "returns-refund-timing"}, example.answer
    assert example.answer.startswith(f"[{example.passage_ids.index('returns-cost') + 1}] ")


def test_the_main_passage_is_cited_first_and_the_others_at_the_end() -> None:
    assert add_citation("Clean rooms.", 2) == "[2] Clean rooms."
    assert add_citation(" Clean rooms, kind staff. ", 1, 3) == "[1] Clean rooms, kind staff. [3]"
