"""Retrieval phrasings from exported conversations: the entry each resolved question meant."""

from __future__ import annotations

from collections import Counter

from retrieval.faq import FaqEntry
from training.retrieval_pairs import phrasings_from_conversations
from training.transcripts import Conversation, Message

ENTRIES = [
    FaqEntry(
        "returns",
        "How do I return an item?",
        "Print the label from your account and drop the parcel at any post office within 30 days.",
    ),
    FaqEntry("shipping", "How long does delivery take?", "Orders arrive in 2-4 working days."),
    FaqEntry("payment", "Which payment methods do you take?", "Cards, PayPal and Klarna."),
]


def user(text: str) -> Message:
    return Message("user", text)


def bot(
    text: str, action: str = "answer", sources: tuple[str, ...] = (), rating: str = ""
) -> Message:
    return Message("assistant", text, action=action, sources=sources, rating=rating)


def test_a_menu_choice_names_the_entry_the_question_meant() -> None:
    menu = bot("Did you mean one of these? 1. ... 2. ...", "clarify", ("shipping", "returns"))
    conversation = Conversation(
        [
            user("my parcel is wrong, can I send it back"),
            menu,
            user("2"),
            bot("Print the label [1]", sources=("returns",)),
        ]
    )
    found, counts = phrasings_from_conversations([conversation], ENTRIES)
    assert [(p.text, p.entry_id) for p in found] == [
        ("my parcel is wrong, can I send it back", "returns")
    ]
    assert counts == Counter(clarify_choice=1)


def test_an_agent_giving_an_entrys_answer_names_it_and_a_free_answer_names_none() -> None:
    conversation = Conversation(
        [
            user("the courier never came, how many days should it take"),
            bot("Let me get a person for you.", "handoff"),
            Message("agent", "Hi! Orders arrive in 2-4 working days, so it should be there soon."),
            user("do you ship to the moon"),
            Message("agent", "Not yet, sorry, but we are working on it!"),
        ]
    )
    found, counts = phrasings_from_conversations([conversation], ENTRIES)
    assert [(p.text, p.entry_id) for p in found] == [
        ("the courier never came, how many days should it take", "shipping")
    ]
    assert counts == Counter(agent_answer=1)


def test_thumbs_up_counts_thumbs_down_and_strays_do_not() -> None:
    conversations = [
        Conversation(
            [user("can I pay with klarna"), bot("Yes [1]", sources=("payment",), rating="up")]
        ),
        Conversation(
            [user("refund please"), bot("Print the label [1]", sources=("returns",), rating="down")]
        ),
        # A number with no menu before it, and an entry the FAQ no longer has.
        Conversation([user("3"), bot("Sorry?", sources=("payment",), rating="up")]),
        Conversation([user("gift cards?"), bot("Yes [1]", sources=("gift-cards",), rating="up")]),
        # The same question twice is one phrasing.
        Conversation(
            [user("Can I pay with Klarna"), bot("Yes [1]", sources=("payment",), rating="up")]
        ),
    ]
    found, counts = phrasings_from_conversations(conversations, ENTRIES)
    assert [(p.text, p.entry_id) for p in found] == [("can I pay with klarna", "payment")]
    assert counts == Counter(rated_up=1)
