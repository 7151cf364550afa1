"""The whole retraining loop on a tiny random model: train, register, promote, hot-swap."""

from __future__ import annotations

import asyncio
import json
from dataclasses import fields
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import torch

from bots.cli import build_parser as cli_parser
from bots.cli import main as cli
from brain.answering import grounded
from brain.answering.batching import Generator
from brain.answering.grounded import GenerativeBackend
from brain.answering.hf_generator import HFGenerator, HFOptions
from brain.answering.model_loading import peft_quietly
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
from training.report import summary
from training.train import TrainConfig, build_parser, config_from_args, main, resumed_step

REJECTED = "Rated-down answer that must never be learned."

# `deskmate train`'s options are a public interface (README, scripts): every flag and
# default as released. A flag lost, renamed or given a new default fails here.
DEFAULTS = {
    "base": "",
    "epochs": 2.0,
    "learning_rate": 2e-4,
    "batch_size": 4,
    "grad_accum": 1,
    "max_length": 384,
    "lora_r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.05,
    "lora_layers": 0,
    "target_modules": "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
    "heldout_fraction": 0.2,
    "max_heldout": 100,
    "top_k": 3,
    "passage_chars": 600,
    "history_turns": 4,
    "include_unrated": False,
    "min_words": 2,
    "phone_region": "US",
    "max_new_tokens": 160,
    "eval_passage_chars": 0,
    "eval_batch_size": 8,
    "eval_int8": True,
    "eval_loss": True,
    "compare_with": "",
    "index_dir": None,
    "output_dir": None,
    "resume": False,
    "save_steps": 50,
    "logging_steps": 5,
    "register": True,
    "seed": 0,
    "quiet": False,
}
VALUE_FLAGS = [
    ("--base", "org/model", "base", "org/model"),
    ("--epochs", "1.5", "epochs", 1.5),
    ("--learning-rate", "1e-3", "learning_rate", 1e-3),
    ("--batch-size", "2", "batch_size", 2),
    ("--grad-accum", "3", "grad_accum", 3),
    ("--max-length", "128", "max_length", 128),
    ("--lora-r", "8", "lora_r", 8),
    ("--lora-alpha", "4", "lora_alpha", 4),
    ("--lora-dropout", "0.1", "lora_dropout", 0.1),
    ("--lora-layers", "2", "lora_layers", 2),
    ("--target-modules", "q_proj,v_proj", "target_modules", "q_proj,v_proj"),
    ("--heldout-fraction", "0.5", "heldout_fraction", 0.5),
    ("--max-heldout", "7", "max_heldout", 7),
    ("--top-k", "2", "top_k", 2),
    ("--passage-chars", "300", "passage_chars", 300),
    ("--history-turns", "1", "history_turns", 1),
    ("--min-words", "5", "min_words", 5),
    ("--phone-region", "DE", "phone_region", "DE"),
    ("--max-new-tokens", "32", "max_new_tokens", 32),
    ("--eval-passage-chars", "800", "eval_passage_chars", 800),
    ("--eval-batch-size", "1", "eval_batch_size", 1),
    ("--compare-with", "base", "compare_with", "base"),
    ("--index-dir", "idx", "index_dir", Path("idx")),
    ("--output-dir", "run", "output_dir", Path("run")),
    ("--save-steps", "10", "save_steps", 10),
    ("--logging-steps", "1", "logging_steps", 1),
    ("--seed", "3", "seed", 3),
]
SWITCHES = ["include_unrated", "eval_int8", "eval_loss", "resume", "register", "quiet"]


def parse_train(*argv: str) -> TrainConfig:
    """`deskmate train ARGV` as the real `deskmate` command line parses it."""
    return config_from_args(cli_parser().parse_args(["train", *argv]))


def test_train_keeps_every_default() -> None:
    cfg = parse_train("t.jsonl")
    assert cfg == TrainConfig(conversations=Path("t.jsonl"))
    assert {name: getattr(cfg, name) for name in DEFAULTS} == DEFAULTS
    assert set(DEFAULTS) | {"conversations"} == {spec.name for spec in fields(TrainConfig)}


@pytest.mark.parametrize(("flag", "value", "name", "expected"), VALUE_FLAGS)
def test_train_flag_sets_its_option(flag: str, value: str, name: str, expected: object) -> None:
    assert getattr(parse_train("t.jsonl", flag, value), name) == expected
    # Before the file too, and in the --under_scored spelling of HF scripts.
    assert getattr(parse_train(flag, value, "t.jsonl"), name) == expected
    assert getattr(parse_train("--" + name, value, "t.jsonl"), name) == expected


@pytest.mark.parametrize("name", SWITCHES)
def test_train_switch_turns_on_and_off(name: str) -> None:
    flag = "--" + name.replace("_", "-")
    # A switch takes no value: the file name after it is still the conversations file.
    on = parse_train(flag, "t.jsonl")
    off = parse_train("--no-" + flag[2:], "t.jsonl")
    assert (getattr(on, name), getattr(off, name)) == (True, False)
    assert on.conversations == off.conversations == Path("t.jsonl")


def test_train_help_teaches_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli_parser().parse_args(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert out.startswith("usage: deskmate train [options] CONVERSATIONS")
    for spec in fields(TrainConfig):
        assert " ".join(spec.metadata["help"].split()) in out, spec.name
    for flag, *_ in VALUE_FLAGS:
        assert flag in out
    assert "--epochs EPOCHS passes over the training examples (default 2.0)" in out
    assert "--eval-int8, --no-eval-int8" in out and "--eval_int8" not in out


def test_python_m_training_train_parses_the_same_options() -> None:
    """`torchrun -m training.train` reads its command line into the same TrainConfig."""
    argv = ["t.jsonl", "--epochs", "1", "--no-eval-int8", "--output-dir", "run"]
    cfg = config_from_args(build_parser().parse_args(argv))
    assert cfg == parse_train(*argv)
    # It is an HfArgumentParser: straight into the dataclass too.
    assert build_parser().parse_args_into_dataclasses(argv, look_for_args_file=False) == (cfg,)
    assert (cfg.epochs, cfg.eval_int8, cfg.output_dir) == (1.0, False, Path("run"))


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


async def test_the_report_compares_base_serving_adapter_and_new(
    tmp_path: Path, tiny_model_dir: Path, retriever: Retriever
) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    # The adapter the settings serve on the base version (like the bundled starter).
    serving = tmp_path / "serving-adapter"
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with peft_quietly():
        get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj"])).save_pretrained(serving)
    conversations = tmp_path / "t.jsonl"
    write_conversations(conversations)
    settings = Settings.load(
        {
            "DESKMATE_DATA_DIR": str(tmp_path / "data"),
            "DESKMATE_MODEL": str(tiny_model_dir),
            "DESKMATE_MODEL_ADAPTER": str(serving),
        }
    )
    cfg = TrainConfig(
        conversations=conversations,
        epochs=1,
        heldout_fraction=0.2,
        passage_chars=200,
        max_new_tokens=4,
        eval_loss=False,
        register=False,
        quiet=True,
    )
    result = await asyncio.to_thread(main, cfg, settings, retriever)
    evaluation = result.report["evaluation"]
    assert list(evaluation) == ["base", "serving", "new"]
    assert evaluation["base"]["version"] == BASE
    assert evaluation["serving"]["version"] == "base+serving-adapter"
    assert set(result.report["samples"][0]) == {"question", "reference", "base", "serving", "new"}
    assert "base+serving-adapter" in summary(result.report)


def test_the_starter_bundle_serves_like_the_trained_adapter_at_half_the_size(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from training.starter import bundle

    run = tmp_path / "run"
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    with peft_quietly():
        get_peft_model(model, lora).save_pretrained(run / "adapter")
    report = {
        "base_model": "tiny",
        "config": {"conversations": "grounded.jsonl", "epochs": 1.0, "lora_r": 4},
        "data": {"conversations": 12, "train_examples": 10, "heldout_examples": 2},
        "training": {"seconds": 5.0, "tokens": 900, "tokens_per_second": 180.0},
        "evaluation": {"new": {"version": "new", "scores": {"token_f1": 0.25, "rouge_l": 0.2}}},
    }
    (run / "report.json").write_text(json.dumps(report))
    target = bundle(run, tmp_path / "starter")

    weights = load_file(target / "adapter_model.safetensors")
    assert weights and all(t.dtype == torch.float16 for t in weights.values())
    card = (target / "README.md").read_text()
    assert "| new (new) | 0.250 | 0.200 |" in card and "10 training examples" in card
    options = HFOptions(device="cpu", engine="generate", int8=False)
    trained = HFGenerator.load(str(tiny_model_dir), tmp_path, options, run / "adapter")
    bundled = HFGenerator.load(str(tiny_model_dir), tmp_path, options, target)
    bare = HFGenerator.load(str(tiny_model_dir), tmp_path, options)
    served = logits(bundled.model)  # type: ignore[attr-defined]
    assert torch.allclose(served, logits(trained.model), atol=1e-2)  # type: ignore[attr-defined]
    assert not torch.allclose(served, logits(bare.model), atol=1e-2)  # type: ignore[attr-defined]
    with pytest.raises(FileNotFoundError, match="no adapter"):
        bundle(tmp_path / "empty-run", tmp_path / "nowhere")


def test_a_resumed_run_counts_only_the_steps_it_trained_from_its_last_checkpoint(
    tmp_path: Path,
) -> None:
    checkpoints = tmp_path / "checkpoints"
    assert resumed_step(checkpoints) == 0  # nothing to resume from
    for step in (50, 376):
        (checkpoints / f"checkpoint-{step}").mkdir(parents=True)
        (checkpoints / f"checkpoint-{step}" / "trainer_state.json").write_text(
            json.dumps({"global_step": step})
        )
    assert resumed_step(checkpoints) == 376
    # A checkpoint saved without its trainer state (cut short): the trainer starts its
    # count from 0 there, and so does the report.
    (checkpoints / "checkpoint-400").mkdir()
    assert resumed_step(checkpoints) == 0
    from training.starter import model_card

    card = model_card({"training": {"seconds": 2879.3, "resumed": True, "resumed_from_step": 376}})
    assert "resumed from step 376 of an earlier run" in card
    assert "resumed" not in model_card({"training": {"seconds": 10.0}})
