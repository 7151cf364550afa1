"""Shared fixtures: a real embedded Redis server, the real MiniLM embedder, the sample FAQ."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from brain.answering.backends import QuoteBackend
from brain.conversations import ConversationStore
from brain.pipeline import Brain
from brain.redis_server import EmbeddedRedis, client
from brain.settings import SAMPLE_FAQ
from retrieval.embedder import Embedder
from retrieval.faq import load_faq
from retrieval.index import FaqIndex, Thresholds
from retrieval.retriever import Retriever

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The product answers with the hf backend by default; tests of the flow, channels and CLI
# answer by quoting (fast, deterministic). Tests of the model set the backend themselves,
# and test_default_model checks the shipped default end to end.
os.environ.setdefault("DESKMATE_MODEL_BACKEND", "quote")
# Nor do they fine-tune the embedder on the FAQ at import or first run (seconds to
# minutes); tests of learning turn it on.
os.environ.setdefault("DESKMATE_FAQ_LEARN", "false")

# Fixed thresholds for tests, so a change in calibration data cannot flip test outcomes.
TEST_THRESHOLDS = Thresholds(answer=0.55, clarify=0.40, calibrated_from="tests")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """One real redis-server (the embedded one) for the whole test session."""
    with EmbeddedRedis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
async def redis(redis_server: EmbeddedRedis) -> AsyncIterator[aioredis.Redis]:
    connection = client(redis_server.url)
    await connection.flushall()
    yield connection
    await connection.aclose()


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    return Embedder()


@pytest.fixture(scope="session")
def sample_index(embedder: Embedder) -> FaqIndex:
    index = FaqIndex.build(load_faq([SAMPLE_FAQ]), embedder)
    return index.with_thresholds(TEST_THRESHOLDS)


@pytest.fixture
def retriever(embedder: Embedder, sample_index: FaqIndex) -> Retriever:
    return Retriever(embedder, sample_index)


@pytest.fixture
def store(redis: aioredis.Redis) -> ConversationStore:
    return ConversationStore(redis, prefix="dm:", history_turns=6, ttl_seconds=3600)


@pytest.fixture
def brain(retriever: Retriever, store: ConversationStore) -> Brain:
    return Brain(retriever, store, QuoteBackend())


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


TOKENIZER_FIXTURE = Path(__file__).parent / "fixtures" / "smollm2-tokenizer"


@pytest.fixture(scope="session")
def smollm_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real SmolLM2 tokenizer (vocabulary, chat template), unpacked from the fixture."""
    import lzma
    import shutil

    target = tmp_path_factory.mktemp("smollm2-tokenizer")
    for name in ("tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(TOKENIZER_FIXTURE / name, target / name)
    packed = (TOKENIZER_FIXTURE / "tokenizer.json.xz").read_bytes()
    (target / "tokenizer.json").write_bytes(lzma.decompress(packed))
    return target


@pytest.fixture(scope="session")
def smollm_tokenizer(smollm_tokenizer_dir: Path) -> object:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm_tokenizer_dir)
