"""Documents and web pages kept in sync: only changed passages are embedded again, a
failed sync keeps the served index, and every process follows an edited page within a
sync interval (real Redis, real MiniLM, a local help-center server)."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from bots.cli import main
from bots.faq_sync import FaqWatcher, SourceSync, SyncError, sync_sources
from bots.indexing import import_knowledge
from bots.staff import StaffCommands
from brain.redis_server import EmbeddedRedis
from retrieval.embedder import Embedder, Vectors
from retrieval.index import FaqIndex
from retrieval.knowledge.sources import IngestOptions
from retrieval.retriever import Retriever
from tests.fakes.help_center import serve_help_center

HELP = Path(__file__).resolve().parents[1] / "fixtures" / "help_center"
FAST = IngestOptions(web_delay=0.0)


class CountingEmbedder(Embedder):
    """The real embedder, remembering every text it was asked to embed."""

    def __init__(self, real: Embedder) -> None:
        self._real = real
        self.name = real.name
        self.dimension = real.dimension
        self.encoded: list[str] = []

    def encode(
        self,
        texts: Sequence[str],
        batch_size: int = 64,
        progress: Callable[[int], None] | None = None,
    ) -> Vectors:
        self.encoded.extend(texts)
        return self._real.encode(texts, batch_size, progress)


def copy_help_center(tmp_path: Path) -> Path:
    folder = tmp_path / "help-center"
    shutil.copytree(HELP, folder)
    return folder


def test_a_resync_embeds_only_the_changed_section(tmp_path: Path, embedder: Embedder) -> None:
    folder = copy_help_center(tmp_path)
    counting = CountingEmbedder(embedder)
    first, _, report = import_knowledge(tmp_path / "index", [folder], counting, show_progress=False)
    assert report.documents == 12 and counting.encoded
    page = folder / "gift-cards.md"
    page.write_text(page.read_text().replace("two years", "three years"))
    counting.encoded.clear()
    second, rebuilt, _ = import_knowledge(
        tmp_path / "index", [folder], counting, show_progress=False
    )
    assert rebuilt
    assert counting.encoded == [
        "Brightwave gift cards are valid for three years from the date of purchase."
    ]
    assert [e.id for e in second.entries] == [e.id for e in first.entries]
    expiry = next(e for e in second.entries if e.title == "Gift cards › Gift card expiry")
    assert expiry.url == "https://help.brightwave.example/gift-cards#gift-card-expiry"


async def test_a_failed_sync_keeps_the_served_index_and_deleted_documents_go(
    tmp_path: Path, embedder: Embedder, redis: aioredis.Redis
) -> None:
    folder = copy_help_center(tmp_path)
    index, _, _ = import_knowledge(tmp_path / "index", [folder], embedder, show_progress=False)
    retriever = Retriever(embedder, index)
    (folder / "orders.md").unlink()
    outcome = await sync_sources(retriever, redis, "dm:", tmp_path / "index")
    assert not any(e.title.startswith("Orders") for e in retriever.index.entries)
    assert outcome.rebuilt and outcome.published
    for file in folder.iterdir():
        file.write_bytes(b"\xff\xfe broken")  # every document unreadable
    served = retriever.index
    with pytest.raises(SyncError, match="nothing to import"):
        await sync_sources(retriever, redis, "dm:", tmp_path / "index")
    assert retriever.index is served
    assert FaqIndex.load(tmp_path / "index").content_hash == served.content_hash


async def test_an_edited_page_is_served_by_two_processes_within_a_sync_interval(
    tmp_path: Path, embedder: Embedder, redis: aioredis.Redis
) -> None:
    shared = tmp_path / "shared-index"
    with serve_help_center() as site:
        sitemap = site.sitemap(site.add_folder(HELP))
        index, _, _ = await asyncio.to_thread(
            import_knowledge, shared, [sitemap], embedder, show_progress=False, options=FAST
        )
        processes = [Retriever(embedder, FaqIndex.load(shared)) for _ in range(2)]
        body, kind = site.pages["/help/descaling.html"]
        site.pages["/help/descaling.html"] = (
            body.replace(b"every two months or after 50 litres", b"every six weeks or 30 litres"),
            kind,
        )
        followers = [FaqWatcher(redis, "dm:", r, shared, interval=0.05) for r in processes]
        syncs = [
            SourceSync(redis, "dm:", r, shared, interval=0.5, owner=f"p{n}", options=FAST)
            for n, r in enumerate(processes)
        ]
        async with followers[0], followers[1], syncs[0], syncs[1]:
            for retriever in processes:
                for _ in range(200):
                    if retriever.index.content_hash != index.content_hash:
                        break
                    await asyncio.sleep(0.05)
        assert sum(sync.synced.is_set() for sync in syncs) >= 1
        for retriever in processes:
            best = retriever.search("how often do I replace the water filter", k=1)[0]
            assert "every six weeks" in best.entry.answer
            assert best.entry.url == site.base_url + "/help/descaling.html#water-filter"


async def test_staff_faq_sync_reports_documents_and_skips(
    tmp_path: Path, embedder: Embedder, redis: aioredis.Redis
) -> None:
    folder = copy_help_center(tmp_path)
    index, _, _ = import_knowledge(tmp_path / "index", [folder], embedder, show_progress=False)
    (folder / "scan.pdf").write_bytes(b"not a pdf")
    staff = StaffCommands(
        Retriever(embedder, index),
        redis,
        prefix="dm:",
        index_dir=tmp_path / "index",
        backend_version="quote",
    )
    reply = await staff.run("faq sync")
    assert "Read 12 documents" in reply
    assert "scan.pdf: not a readable PDF" in reply


def test_cli_imports_a_folder_and_syncs_it(
    tmp_path: Path,
    redis_server: EmbeddedRedis,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DESKMATE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DESKMATE_REDIS_URL", redis_server.url)
    folder = copy_help_center(tmp_path)
    assert main(["faq", "import", str(folder)]) == 0
    assert "Read 12 documents (49 passages)" in capsys.readouterr().out
    (folder / "privacy.md").unlink()
    assert main(["faq", "sync"]) == 0
    out = capsys.readouterr().out
    assert "Updated index of 46 entries" in out and "Published" in out
