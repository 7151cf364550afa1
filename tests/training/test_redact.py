"""PII redaction: a table of positive and negative cases, names, counts and conversations."""

from __future__ import annotations

import pytest

from training.redact import Redactor
from training.transcripts import Conversation, Message

CASES = [
    # (text, expected, kind counted or None)
    ("mail me at jane.doe@example.com please", "mail me at <EMAIL> please", "EMAIL"),
    (
        "https://shop.example.com/unsubscribe?email=jane.doe%40example.com&x=1",
        "https://shop.example.com/unsubscribe?email=<EMAIL>&x=1",
        "EMAIL",
    ),
    ("see https://x.example/u?e=bob@corp.io", "see https://x.example/u?e=<EMAIL>", "EMAIL"),
    ("card 4111 1111 1111 1111 ok", "card <CARD> ok", "CARD"),
    ("card 4111-1111-1111-1111", "card <CARD>", "CARD"),
    ("card 4111 1111 1111 1112 fails Luhn", "card 4111 1111 1111 1112 fails Luhn", None),
    ("order 1234567890123 here", "order 1234567890123 here", None),
    ("IBAN DE89 3704 0044 0532 0130 00 thanks", "IBAN <IBAN> thanks", "IBAN"),
    ("iban GB82WEST12345698765432.", "iban <IBAN>.", "IBAN"),
    ("bad DE89 3704 0044 0532 0130 01", "bad DE89 3704 0044 0532 0130 01", None),
    ("server 192.168.1.20 is down", "server <IP> is down", "IP"),
    ("ipv6 2001:db8::1 here", "ipv6 <IP> here", "IP"),
    ("ip 300.1.1.1 is not one", "ip 300.1.1.1 is not one", None),
    ("at 12:30:45 today", "at 12:30:45 today", None),
    ("call me at (415) 555-2671", "call me at <PHONE>", "PHONE"),
    ("my mobile: +44 20 7946 0958", "my mobile: <PHONE>", "PHONE"),
    ("call 4155552671", "call <PHONE>", "PHONE"),
    ("order #4155552671 arrived", "order #4155552671 arrived", None),
    ("it costs 49.99 for 2 items", "it costs 49.99 for 2 items", None),
    ("I live at 221B Baker Street, London", "I live at <ADDRESS>, London", "ADDRESS"),
    ("send it to 1600 Pennsylvania Avenue NW", "send it to <ADDRESS> NW", "ADDRESS"),
    ("Hauptstraße 5 in Berlin", "<ADDRESS> in Berlin", "ADDRESS"),
    ("I bought 3 Red Shirts", "I bought 3 Red Shirts", None),
    ("My name is John Smith and I need help", "My name is <NAME> and I need help", "NAME"),
    ("Hi Anna, your order shipped", "Hi <NAME>, your order shipped", "NAME"),
    ("Thanks,\nMaria", "Thanks,\n<NAME>", "NAME"),
    ("Dr. Watson here", "Dr. <NAME> here", "NAME"),
    ("Hi there, where is my order?", "Hi there, where is my order?", None),
    ("Hello Support, my parcel is late", "Hello Support, my parcel is late", None),
]


@pytest.mark.parametrize(("text", "expected", "kind"), CASES)
def test_redaction_table(text: str, expected: str, kind: str | None) -> None:
    redactor = Redactor()
    assert redactor.redact(text) == expected
    if kind is None:
        assert redactor.report.total() == 0
    else:
        assert redactor.report.counts[kind] >= 1


def test_known_and_introduced_names_are_removed_wherever_they_recur() -> None:
    conversation = Conversation(
        [
            Message("user", "My name is Priya Natarajan, order 55 is late"),
            Message("agent", "Sorry Priya, it ships today. Omar from support"),
            Message("user", "thanks, Natarajan family says hi"),
        ],
        {"id": "c1", "names": ["Omar Haddad"]},
    )
    redactor = Redactor()
    clean = redactor.redact_conversation(conversation)
    texts = [m.content for m in clean.messages]
    assert texts == [
        "My name is <NAME>, order 55 is late",
        "Sorry <NAME>, it ships today. <NAME> from support",
        "thanks, <NAME> family says hi",
    ]
    assert "names" not in clean.meta  # names never reach the written examples
    assert conversation.messages[0].content.startswith("My name is Priya")  # input untouched
    assert redactor.report.to_json()["NAME"] == 4


def test_report_counts_every_kind() -> None:
    redactor = Redactor()
    redactor.redact("a@b.example and c@d.example, card 4111111111111111, from 10.0.0.1")
    assert redactor.report.to_json() == {
        "EMAIL": 2, "IBAN": 0, "CARD": 1, "IP": 1, "PHONE": 0, "ADDRESS": 0, "NAME": 0
    }  # fmt: skip
    assert redactor.report.summary() == "redacted 4 items: email 2, card 1, ip 1"
