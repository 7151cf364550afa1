"""An answer from a document passage cites "Document › Section" with the section's link,
in Telegram and Slack (real brain, real index of the fixture help center)."""

from __future__ import annotations

import json
from pathlib import Path

from bots.slack.render import render_reply as slack_reply
from bots.telegram.render import render_reply as telegram_reply
from brain.answering.backends import QuoteBackend
from brain.conversations import ConversationStore
from brain.pipeline import Brain
from brain.types import Inbound
from retrieval.embedder import Embedder
from retrieval.index import FaqIndex, Thresholds
from retrieval.knowledge.sources import collect
from retrieval.retriever import Retriever

HELP = Path(__file__).resolve().parents[1] / "fixtures" / "help_center"
LINK = "https://help.brightwave.example/returns#damaged-items"
TITLE = "Returns and refunds › Damaged or broken items"


async def test_a_passage_answer_links_its_section_in_every_channel(
    embedder: Embedder, store: ConversationStore
) -> None:
    entries, _ = collect([HELP])
    index = FaqIndex.build(entries, embedder).with_thresholds(Thresholds(0.3, 0.2, "tests"))
    brain = Brain(Retriever(embedder, index), store, QuoteBackend())
    reply = await brain.handle(
        Inbound("telegram", "42", "7", "1", "my new grinder arrived broken, what now?")
    )
    assert reply.action == "answer"
    assert (reply.sources[0].title, reply.sources[0].url) == (TITLE, LINK)
    assert "replacement at no cost" in reply.text
    html = telegram_reply(reply)[-1].html
    assert f'<a href="{LINK}">' in html and "Damaged or broken items" in html
    _, blocks = slack_reply(reply)
    assert f"<{LINK}|{TITLE}>" in json.dumps(blocks, ensure_ascii=False)
