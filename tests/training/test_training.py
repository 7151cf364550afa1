"""The whole retraining loop on a tiny random model: train, register, promote, hot-swap."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import torch

from bots.cli import main as cli
from brain.answering import grounded
from brain.answering.batching import Generator
from brain.answering.grounded import GenerativeBackend
from brain.answering.hf_generator import HFGenerator, HFOptions
from brain.answering.registry import (
    BASE,
    ActiveModelWatcher,
    ModelRegistry,
    ModelVersion,
    backend_hook,
)
from brain.redis_server import EmbeddedRedis
from brain.settings import SAMPLE_FAQ, Settings
from retrieval.retriever import Retriever
from training.train import TrainConfig, main

REJECTED = "Rated-down answer that must never be learned."


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, smollm_tokenizer: object) -> Path:
    """A randomly initialised 2-layer Llama with the real SmolLM2 tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(smollm_tokenizer),  # type: ignore[arg-type]
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        tie_word_embeddings=True,
    )
    path = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(path)
    smollm_tokenizer.save_pretrained(path)  # type: ignore[attr-defined]
    return path


def write_conversations(path: Path) -> None:
    entries = [json.loads(line) for line in SAMPLE_FAQ.read_text().splitlines()][:10]
    with open(path, "w") as out:
        for n, entry in enumerate(entries):
            messages = [
                {"role": "user", "content": f"{entry['question']} (I'm at ann{n}@example.com)"},
                {"role": "agent", "content": entry["answer"]},
                {"role": "user", "content": "And one more thing?"},
                {"role": "assistant", "content": REJECTED, "action": "answer", "rating": "down"},
            ]
            out.write(json.dumps({"messages": messages, "meta": {"id": f"c{n}"}}) + "\n")


def logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor([[1, 400, 500, 600]])).logits  # type: ignore[no-any-return]


async def test_train_register_promote_and_hot_swap(
    tmp_path: Path,
    tiny_model_dir: Path,
    retriever: Retriever,
    redis: aioredis.Redis,
    redis_server: EmbeddedRedis,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from safetensors.torch import load_file

    data_dir = tmp_path / "data"
    conversations = tmp_path / "t.jsonl"
    write_conversations(conversations)
    settings = Settings.load({"DESKMATE_DATA_DIR": str(data_dir)})
    cfg = TrainConfig(
        conversations=conversations,
        base=str(tiny_model_dir),
        epochs=2,
        batch_size=4,
        learning_rate=1e-2,
        heldout_fraction=0.2,
        passage_chars=200,
        max_new_tokens=6,
        quiet=True,
    )
    result = await asyncio.to_thread(main, cfg, settings, retriever)

    # LoRA weights moved; every base weight is exactly as it was on disk.
    original = load_file(tiny_model_dir / "model.safetensors")
    trained = {k: v for k, v in result.model.state_dict().items()}
    lora_b = [v for k, v in trained.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)  # lora_B starts at zero
    base = {k.replace("base_model.model.", "").replace(".base_layer", ""): v
            for k, v in trained.items() if "lora_" not in k}  # fmt: skip
    for name, tensor in original.items():
        assert torch.equal(base[name], tensor), name

    # Registered, not active; report, plots and only redacted examples written.
    registry = ModelRegistry(settings.registry_dir)
    (version,) = registry.versions()
    assert version.name == "v1" and registry.active() == BASE
    assert version.metrics["n"] == 2
    report = json.loads((result.output_dir / "report.json").read_text())
    assert report["data"]["pairs"]["kept"] == {"agent": 10}
    assert report["data"]["pairs"]["dropped"] == {"rated_down": 10}
    assert report["data"]["redaction"]["EMAIL"] == 10
    assert set(report["evaluation"]) == {"serving", "new"}
    assert report["loss"]["train"] and report["loss"]["heldout"]
    assert (result.output_dir / "loss.png").stat().st_size > 1000
    assert (result.output_dir / "metrics.png").stat().st_size > 1000
    written = (result.output_dir / "train.jsonl").read_text()
    assert "@example.com" not in written and "<EMAIL>" in written and REJECTED not in written

    # A running process follows `model promote` / `rollback` without a restart. The
    # generate engine keeps the transformers model, whose logits show which weights serve.
    options = HFOptions(device="cpu", engine="generate", int8=False)

    async def load(version: ModelVersion | None) -> Generator:
        adapter = version.adapter_dir if version is not None else None
        name = version.name if version is not None else None
        return HFGenerator.load(str(tiny_model_dir), data_dir, options, adapter, name)

    backend = GenerativeBackend(await load(None), reload=load)
    before = logits(backend.generator.model)  # type: ignore[attr-defined]
    monkeypatch.setenv("DESKMATE_REDIS_URL", redis_server.url)
    monkeypatch.setenv("DESKMATE_DATA_DIR", str(data_dir))
    monkeypatch.setattr(grounded, "SWAP_GRACE_SECONDS", 0.0)
    hook = backend_hook(backend)
    async with ActiveModelWatcher(redis, "dm:", registry, hook, interval=0.05) as watcher:
        watcher.changed.clear()
        assert await asyncio.to_thread(cli, ["model", "promote", "v1"]) == 0
        await asyncio.wait_for(watcher.changed.wait(), timeout=5)
        assert backend.version.endswith("@v1")  # recorded with every reply from now on
        after = logits(backend.generator.model)  # type: ignore[attr-defined]
        expected = result.model.eval()
        assert not torch.allclose(after, before)
        assert torch.allclose(after, logits(expected), atol=1e-4)

        assert await asyncio.to_thread(cli, ["model", "list"]) == 0
        listing = capsys.readouterr().out
        assert "* v1" in listing and "Active: v1" in listing

        watcher.changed.clear()
        assert await asyncio.to_thread(cli, ["model", "rollback"]) == 0
        await asyncio.wait_for(watcher.changed.wait(), timeout=5)
        assert backend.version.endswith("@base")
        assert torch.allclose(logits(backend.generator.model), before)  # type: ignore[attr-defined]
    assert await asyncio.to_thread(cli, ["model", "promote", "v3"]) == 2
