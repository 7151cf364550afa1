"""The staff dashboard over plain HTTP: nothing without a login, CSRF on every POST, and
an approved draft joining the served FAQ (recorded, undoable)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from bots.dashboard.approvals import Approvals
from bots.dashboard.auth import Sessions, check_password, hash_password
from bots.dashboard.pages import Dashboard, make_dashboard
from bots.indexing import import_knowledge
from bots.web import make_web_app, serve_web
from brain.insights.aggregates import Insights
from brain.keys import RedisKeys
from brain.settings import SAMPLE_FAQ
from retrieval.embedder import Embedder
from retrieval.knowledge.sources import as_source
from retrieval.retriever import Retriever
from tests.brain.insights.transcripts import DAY_ONE, events, write

PASSWORD = "correct horse"


@dataclass
class Served:
    base: str
    retriever: Retriever
    redis: aioredis.Redis


@pytest.fixture
async def served(
    redis: aioredis.Redis, embedder: Embedder, tmp_path: Path
) -> AsyncIterator[Served]:
    index, _, _ = import_knowledge(
        tmp_path / "index", [as_source(str(SAMPLE_FAQ))], embedder, show_progress=False
    )
    retriever = Retriever(embedder, index)
    # recent conversations, so the overview's last 30 days show them
    import time

    await write(redis, events(time.time() - 2 * 86400))
    dashboard = Dashboard(
        redis,
        "dm:",
        hash_password(PASSWORD),
        Sessions("test-secret", 3600),
        Insights(redis, "dm:"),
        Approvals(redis, "dm:", retriever, tmp_path / "index", tmp_path),
    )
    app = make_web_app(redis=redis, dashboard=make_dashboard(dashboard))
    async with serve_web(app, "127.0.0.1:0") as port:
        yield Served(f"http://127.0.0.1:{port}", retriever, redis)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html[:500]
    return found.group(1)


async def log_in(session: aiohttp.ClientSession, base: str, password: str = PASSWORD) -> str:
    async with session.get(f"{base}/dashboard/login") as page:
        token = csrf_of(await page.text())
    form = {"csrf": token, "user": "ana", "password": password}
    async with session.post(f"{base}/dashboard/login", data=form) as response:
        return await response.text()


def test_password_hash_round_trip() -> None:
    stored = hash_password("pw")
    assert stored.startswith("scrypt$") and "pw" not in stored.split("$", 2)[2]
    assert check_password("pw", stored) and not check_password("pW", stored)
    assert not check_password("pw", "garbage")


async def test_nothing_is_readable_without_a_login(served: Served) -> None:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        pages = (
            "/dashboard/",
            "/dashboard/gaps",
            "/dashboard/conversations",
            "/dashboard/handoffs",
        )
        for path in pages:
            async with session.get(served.base + path, allow_redirects=False) as response:
                assert response.status == 303
                assert response.headers["Location"] == "/dashboard/login"
        for path in (
            "/dashboard/gaps/approve",
            "/dashboard/faq/undo",
            "/dashboard/conversations/mood",
        ):
            async with session.post(served.base + path, data={"question": "x"}) as response:
                assert response.status == 401
        forged = {"deskmate_session": Sessions("other-secret", 3600).issue("eve")}
        async with (
            aiohttp.ClientSession(cookies=forged) as forger,
            forger.get(served.base + "/dashboard/", allow_redirects=False) as forged_page,
        ):
            assert forged_page.status == 303
        assert "Wrong password" in await log_in(session, served.base, "guess")


async def test_overview_approve_and_undo(served: Served) -> None:
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as session:
        overview = await log_in(session, served.base)
        assert '<b id="conversations">6</b>' in overview
        assert '<svg id="chart"' in overview
        async with session.get(served.base + "/dashboard/gaps") as page:
            gaps = await page.text()
        assert "can I buy bitcoin with my card" in gaps
        assert "No, we do not sell crypto." in gaps  # the agent's answer drafted
        token = csrf_of(gaps)
        draft = {
            "question": "Can I buy bitcoin with my card?",
            "alternates": "can I buy crypto\nbitcoin purchase",
            "answer": "No, we do not sell crypto.",
        }
        async with session.post(served.base + "/dashboard/gaps/approve", data=draft) as r:
            assert r.status == 403  # no CSRF token
        async with session.post(
            served.base + "/dashboard/gaps/approve", data={**draft, "csrf": token}
        ) as response:
            assert response.status == 200
            approved = await response.text()
        assert 'id="approved"' in approved
        entry_id = re.search(r"Added <b>([^<]+)</b>", approved).group(1)  # type: ignore[union-attr]
        hits = served.retriever.search("can I buy bitcoin with my card", 1)
        assert hits[0].id == entry_id
        version = await served.redis.get(RedisKeys("dm:").faq_version)
        assert version == served.retriever.index.content_hash  # every process follows
        history = await served.redis.lrange(RedisKeys("dm:").faq_approvals, 0, -1)
        assert len(history) == 1 and '"who": "ana"' in history[0]

        async with session.post(
            served.base + "/dashboard/faq/undo", data={"id": entry_id, "csrf": token}
        ) as response:
            assert response.status == 200
        assert served.retriever.index.entry(entry_id) is None
        assert len(await served.redis.lrange(RedisKeys("dm:").faq_approvals, 0, -1)) == 2


async def test_conversation_viewer_redacts_personal_data(served: Served) -> None:
    await write(
        served.redis,
        [
            (
                "turn",
                "telegram",
                "pii",
                {"turn": {"role": "user", "text": "mail me at ana@example.com", "time": DAY_ONE}},
                DAY_ONE,
            )
        ],
    )
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        await log_in(session, served.base)
        async with session.get(served.base + "/dashboard/conversations?c=telegram:pii") as r:
            html = await r.text()
    assert "ana@example.com" not in html and "mail me at" in html


def _browser() -> object:
    """Headless Debian Chromium through its chromedriver, or skip saying why."""
    import shutil

    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install selenium)")
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("no browser: apt-get install chromium chromium-driver (make install tries)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)


async def test_in_a_browser_log_in_read_and_approve(served: Served) -> None:
    import asyncio

    from selenium.webdriver.common.by import By

    browser = _browser()

    def session() -> str:
        b = browser  # type: ignore[assignment]
        b.set_page_load_timeout(30)  # type: ignore[attr-defined]
        # Elements of the next page are waited for (a loaded CPU renders it late).
        b.implicitly_wait(15)  # type: ignore[attr-defined]
        b.get(served.base + "/dashboard/")  # type: ignore[attr-defined]
        b.find_element(By.ID, "password").send_keys(PASSWORD)  # type: ignore[attr-defined]
        b.find_element(By.ID, "login").click()  # type: ignore[attr-defined]
        assert b.find_element(By.ID, "conversations").text == "6"  # type: ignore[attr-defined]
        assert b.find_element(By.ID, "chart")  # type: ignore[attr-defined]
        b.get(served.base + "/dashboard/gaps")  # type: ignore[attr-defined]
        gap = next(
            g
            for g in b.find_elements(By.CLASS_NAME, "gap")  # type: ignore[attr-defined]
            if "bitcoin" in g.text
        )
        answer = gap.find_element(By.NAME, "answer")
        answer.clear()
        answer.send_keys("We do not sell crypto, sorry.")
        gap.find_element(By.CLASS_NAME, "approve").click()
        text: str = b.find_element(By.ID, "approved").text  # type: ignore[attr-defined]
        return text

    try:
        approved = await asyncio.to_thread(session)
    finally:
        await asyncio.to_thread(browser.quit)  # type: ignore[attr-defined]
    entry_id = approved.split("Added ", 1)[1].split(" ", 1)[0]
    assert served.retriever.search("can I buy bitcoin with my card", 1)[0].id == entry_id
    assert entry_id in approved.split("now:", 1)[1]  # the gap's question now finds it


async def test_handoffs_page_shows_the_queue_and_outcomes(served: Served) -> None:
    from brain.conversations import ConversationStore

    store = ConversationStore(served.redis, "dm:")
    await store.start_handoff("telegram", "waits-1", "not covered by the FAQ")
    await store.start_handoff("telegram", "waits-2", "angry customer: anger 0.93 (strong: 0.80)")
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        await log_in(session, served.base)
        async with session.get(served.base + "/dashboard/handoffs") as r:
            html = await r.text()
        async with session.get(served.base + "/dashboard/") as r:
            overview = await r.text()
    queue = html.split('id="queue"', 1)[1].split("</table>", 1)[0]
    assert queue.index("telegram:waits-1") < queue.index("telegram:waits-2")
    assert "<td>1</td>" in queue and "<td>2</td>" in queue  # places in the queue
    assert "angry customer: anger 0.93" in queue
    # Outcomes of the hand-made transcripts: c was handed off as not covered, claimed, CSAT 5.
    assert '<svg id="reasons"' in html and "not covered: 1" in html
    assert '<svg id="csat"' in html and "5: 1" in html
    assert 'id="mood"' in overview


async def test_staff_label_a_customer_message_mood(served: Served, tmp_path: Path) -> None:
    from bots.cli import main
    from training.transcripts import conversations_from_events, read_events

    mood = {"label": "anger", "anger": 0.2, "sentiment": -0.1, "scores": {"anger": 0.5, "joy": 0.5}}
    user = {"role": "user", "text": "well that took ages", "time": DAY_ONE, "message_id": "m7"}
    await write(
        served.redis, [("turn", "telegram", "moody", {"turn": {**user, "mood": mood}}, DAY_ONE)]
    )
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        await log_in(session, served.base)
        async with session.get(served.base + "/dashboard/conversations?c=telegram:moody") as r:
            page = await r.text()
        assert "anger (anger 0.20)" in page and "<option>joy</option>" in page
        form = {"csrf": csrf_of(page), "c": "telegram:moody", "message_id": "m7", "label": "joy"}
        async with session.post(served.base + "/dashboard/conversations/mood", data=form) as r:
            assert r.status == 200 and "staff: joy" in await r.text()
        form["label"] = "neutral"  # staff change their mind: the latest label wins
        async with session.post(served.base + "/dashboard/conversations/mood", data=form) as r:
            assert "staff: neutral" in await r.text()
    events = await read_events(served.redis, "dm:")
    moody = [c for c in conversations_from_events(events) if c.meta["id"] == "telegram:moody"]
    assert moody[0].messages[0].mood_label == "neutral"
    # Export, then `classifier examples` puts it with the gate's neutral examples.
    from training.transcripts import write_conversations

    write_conversations(tmp_path / "export.jsonl", moody)
    out, neutral = tmp_path / "ours.jsonl", tmp_path / "neutral.jsonl"
    argv = ["classifier", "examples", str(tmp_path / "export.jsonl"), "--out", str(out)]
    assert main([*argv, "--label", "anger", "--neutral-out", str(neutral)]) == 0
    assert out.read_text() == ""
    assert '"text": "well that took ages", "label": "neutral"' in neutral.read_text()
