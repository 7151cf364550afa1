"""`deskmate train`: conversations in, a registered LoRA adapter version out.

read conversations -> redact personal data -> pick pairs -> split by conversation ->
ground in FAQ passages (prompt contract + retrieval) -> LoRA fine-tune (HF Trainer) ->
evaluate new vs serving on the held-out split -> report -> register (not active).

Runs on CPU or GPU (bf16 + gradient checkpointing there); on several GPUs start it with
`torchrun --nproc_per_node N -m training.train t.jsonl` (or `accelerate launch`): every
rank trains, rank 0 evaluates, reports and registers. `--resume` continues from the last
checkpoint in `--output-dir`.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import math
import random
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from transformers import HfArgumentParser
from transformers.hf_argparser import DataClassType

from brain.answering.registry import BASE, ModelRegistry, ModelVersion
from brain.settings import Settings
from retrieval.retriever import Retriever
from training.dataset import Example, build_examples, encode_example, pick_pairs, split_pairs
from training.redact import Redactor
from training.report import loss_curves, summary, write_plots, write_report
from training.transcripts import read_conversations

log = logging.getLogger(__name__)

DESCRIPTION = (
    "Pick answers to learn (agent answers, 👍 bot answers, corrections), redact personal data, "
    "ground them in the FAQ, fine-tune, compare with the serving model on held-out "
    "conversations, write a report and register a new (inactive) version."
)


def option(help: str, default: Any) -> Any:
    """A config field with help text (shown by --help)."""
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """Options of `deskmate train`; each field is also a command-line flag."""

    conversations: Path = field(
        metadata={
            "help": "conversations JSONL from `deskmate transcripts export/import`",
            "positional": True,
        }
    )
    base: str = option("base model: hub id or local path (default: DESKMATE_MODEL)", "")
    epochs: float = option("passes over the training examples", 2.0)
    learning_rate: float = option(
        "peak learning rate (cosine schedule after a warm-up over 5 percent of the steps)", 2e-4
    )
    batch_size: int = option("examples per device per step", 4)
    grad_accum: int = option("steps whose gradients add up to one update", 1)
    max_length: int = option("tokens per example; longer ones lose history, then answer tail", 384)
    lora_r: int = option("LoRA rank", 16)
    lora_alpha: int = option("LoRA scaling alpha", 32)
    lora_dropout: float = option("dropout on the LoRA input", 0.05)
    lora_layers: int = option(
        "adapt only the top N transformer layers (0 = all); fewer is faster on CPU", 0
    )
    target_modules: str = option(
        "comma-separated module names to adapt",
        "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
    )
    heldout_fraction: float = option("share of conversations held out for evaluation", 0.2)
    max_heldout: int = option("at most this many held-out examples are generated", 100)
    top_k: int = option(
        "FAQ passages in each prompt (serving gives DESKMATE_ANSWER_PASSAGES, 5; 3 keep "
        "examples within --max-length, and a model trained on 3 cites better given 5)",
        3,
    )
    passage_chars: int = option("each passage is cut to this many characters", 600)
    history_turns: int = option("earlier turns kept in each prompt", 4)
    include_unrated: bool = option("also learn bot answers nobody rated", False)
    min_words: int = option("answers with fewer words are dropped as near-empty", 2)
    phone_region: str = option("default country for phone numbers without a +prefix", "US")
    max_new_tokens: int = option("longest generated answer in the evaluation", 160)
    eval_passage_chars: int = option(
        "passage length in evaluation prompts (0 = as in training); serving is not bound by "
        "the training length",
        0,
    )
    eval_batch_size: int = option(
        "prompts generated together in the evaluation (generate path: GPU, non-Llama)", 8
    )
    eval_int8: bool = option(
        "evaluate with int8 weights on CPU, as the hf backend serves them by default", True
    )
    eval_loss: bool = option("measure held-out loss after each epoch (loss curves)", True)
    compare_with: str = option(
        "version to compare against (default: the active one; `base` = no adapter)", ""
    )
    index_dir: Path | None = option("FAQ index to ground in (default: the served index)", None)
    output_dir: Path | None = option(
        "run directory: checkpoints, examples, report (default: DATA_DIR/training/<time>)", None
    )
    resume: bool = option("continue from the last checkpoint in --output-dir", False)
    save_steps: int = option("save a checkpoint every N optimiser steps", 50)
    logging_steps: int = option("log the training loss every N steps", 5)
    register: bool = option("register the adapter as a new (inactive) version", True)
    seed: int = option("random seed (split, shuffling, LoRA init)", 0)
    quiet: bool = option("no progress bars", False)


class TrainingError(ValueError):
    """Training cannot start: no usable pairs, no FAQ index; the message says what to do."""


@dataclass
class TrainResult:
    """What a run produced."""

    output_dir: Path
    report: dict[str, Any]
    version: ModelVersion | None
    model: Any = None  # the trained peft model, still in memory


class TrainArgumentParser(HfArgumentParser):
    """transformers' dataclass parser with `deskmate train`'s command-line conventions.

    HfArgumentParser turns each field into a typed `--flag` with its help text (and also
    accepts the `--under_scored` spelling). Two kinds of field read better otherwise:
    one marked `positional` is a positional argument (`deskmate train t.jsonl`), and a bool
    is an on/off pair (`--resume` / `--no-resume`) that never takes a value, so
    `--quiet t.jsonl` leaves the file name to the positional.
    """

    @staticmethod
    def _parse_dataclass_field(parser: argparse.ArgumentParser, spec: Any) -> None:
        metadata = dict(spec.metadata)
        if metadata.pop("positional", False):
            parser.add_argument(spec.name, type=spec.type, metavar=spec.name.upper(), **metadata)
        elif spec.type is bool:
            flag = "--" + spec.name.replace("_", "-")
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=spec.default, **metadata
            )
        else:
            HfArgumentParser._parse_dataclass_field(parser, spec)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Each option once, in its `--hyphenated` spelling, with its default where it has one."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        hyphenated = [option for option in action.option_strings if "_" not in option]
        if hyphenated and hyphenated != action.option_strings:
            action = copy.copy(action)
            action.option_strings = hyphenated
        return super()._format_action_invocation(action)

    def _get_help_string(self, action: argparse.Action) -> str:
        shown = action.option_strings and action.default not in (None, "", argparse.SUPPRESS)
        return f"{action.help} (default %(default)s)" if shown else action.help or ""


USAGE = "%(prog)s [options] CONVERSATIONS"


def build_parser(**kwargs: Any) -> TrainArgumentParser:
    """The TrainConfig parser; `kwargs` go to argparse (prog, description, add_help)."""
    return TrainArgumentParser(
        DataClassType(TrainConfig), usage=USAGE, formatter_class=HelpFormatter, **kwargs
    )


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of a parsed `deskmate train` command line."""
    return TrainConfig(**{spec.name: getattr(args, spec.name) for spec in fields(TrainConfig)})


def _lora_config(cfg: TrainConfig, model: Any) -> Any:
    from peft import LoraConfig

    layers = None
    if cfg.lora_layers > 0:
        total = int(model.config.num_hidden_layers)
        layers = list(range(max(total - cfg.lora_layers, 0), total))
    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=[m.strip() for m in cfg.target_modules.split(",") if m.strip()],
        layers_to_transform=layers,
        task_type="CAUSAL_LM",
    )


def _plain_model(model: Any) -> Any:
    """Drop the GGUF loader marks a converted checkpoint may carry: its weights are plain."""
    if getattr(model, "is_quantized", False) and getattr(model, "hf_quantizer", None) is None:
        model.is_quantized = False
    if getattr(model.config, "quantization_config", None) is not None:
        quant = model.config.quantization_config
        method = getattr(quant, "quant_method", None) or (
            quant.get("quant_method") if isinstance(quant, dict) else None
        )
        if str(getattr(method, "value", method)) == "gguf":
            del model.config.quantization_config
            model.is_quantized = False
            model.hf_quantizer = None
    return model


def _checkpointing(enabled: bool) -> dict[str, Any]:
    """Gradient checkpointing on GPU (memory for compute); its argument name moved in v5."""
    from transformers import TrainingArguments

    if not enabled:
        return {}
    names = {spec.name for spec in fields(TrainingArguments)}
    name = (
        "activation_checkpointing"
        if "activation_checkpointing" in names
        else ("gradient_checkpointing")
    )
    return {name: True, f"{name}_kwargs": {"use_reentrant": False}}


def load_examples(
    cfg: TrainConfig, settings: Settings, retriever: Retriever | None = None
) -> tuple[list[Example], list[Example], dict[str, Any]]:
    """Redacted, grounded (train, held-out) examples and a summary of the data."""
    from retrieval.embedder import Embedder
    from retrieval.index import FaqIndex

    conversations = read_conversations(cfg.conversations)
    redactor = Redactor(cfg.phone_region)
    redacted = [redactor.redact_conversation(c) for c in conversations]
    pairs, stats = pick_pairs(redacted, cfg.min_words, cfg.include_unrated)
    train_pairs, held_pairs = split_pairs(pairs, cfg.heldout_fraction, cfg.seed)
    held_pairs = held_pairs[: cfg.max_heldout]
    if retriever is None:
        index = FaqIndex.load(cfg.index_dir or settings.index_dir)
        retriever = Retriever(Embedder(settings.embedding_model), index, top_k=cfg.top_k)
    from tqdm import tqdm

    total = len(train_pairs) + len(held_pairs)
    with tqdm(total=total, desc="Grounding", disable=cfg.quiet, file=sys.stderr) as bar:
        train, held = [
            build_examples(
                part,
                retriever,
                top_k=cfg.top_k,
                history_turns=cfg.history_turns,
                bot_name=settings.bot_name,
                progress=bar.update,
            )
            for part in (train_pairs, held_pairs)
        ]
    data = {
        "conversations": len(conversations),
        "pairs": stats.to_json(),
        "train_examples": len(train),
        "heldout_examples": len(held),
        "redaction": redactor.report.to_json(),
        "redaction_summary": redactor.report.summary(),
        "faq_entries": len(retriever.index),
    }
    return train, held, data


def _write_jsonl(path: Path, examples: Sequence[Example], passage_chars: int) -> None:
    with open(path, "w", encoding="utf-8") as out:
        for example in examples:
            out.write(json.dumps(example.to_json(passage_chars), ensure_ascii=False) + "\n")


@contextlib.contextmanager
def _answering(peft_model: Any, adapter: str | None) -> Iterator[Any]:
    """The model that answers with `adapter` (None = the base model alone).

    On CPU a merged plain copy, which the lean engine runs as it is served; on GPU the
    peft model itself with that adapter switched on (`generate` runs it as it is).
    """
    if next(peft_model.parameters()).device.type == "cpu":
        plain = copy.deepcopy(peft_model)
        if adapter is None:
            yield plain.unload()
        else:
            yield plain.merge_and_unload(adapter_names=[adapter])
        return
    with contextlib.ExitStack() as restore:
        # The serving generator switches the model to eval mode; training mode comes back.
        restore.callback(peft_model.train, peft_model.training)
        if adapter is None:
            restore.enter_context(peft_model.disable_adapter())
        else:
            restore.callback(peft_model.set_adapter, peft_model.active_adapter)
            peft_model.set_adapter(adapter)
        yield peft_model


def evaluate(
    peft_model: Any,
    adapter: str | None,
    tokenizer: Any,
    examples: Sequence[Example],
    cfg: TrainConfig,
    label: str,
) -> tuple[dict[str, Any], list[str]]:
    """Scores of the model with `adapter` (None = base) on held-out examples, and its answers."""
    from tqdm import tqdm

    from training.answers import generate_answers
    from training.scoring import score_answers

    bar = tqdm(total=len(examples), desc=f"Evaluating {label}", disable=cfg.quiet, file=sys.stderr)
    with bar, _answering(peft_model, adapter) as model:
        answers = generate_answers(
            model,
            tokenizer,
            [e.messages(cfg.eval_passage_chars or cfg.passage_chars) for e in examples],
            max_new_tokens=cfg.max_new_tokens,
            batch_size=cfg.eval_batch_size,
            progress=bar.update,
            int8=cfg.eval_int8,
            version=label,
        )
    scores = score_answers(
        answers,
        [e.reference for e in examples],
        [e.passage_ids for e in examples],
        [e.source_id for e in examples],
    )
    return scores.to_json(), answers


def resumed_step(checkpoints: Path) -> int:
    """The optimiser step the last checkpoint under `checkpoints` was saved at (0: none,
    or a checkpoint without its trainer state, which the trainer also resumes from step 0)."""
    from transformers.trainer_utils import get_last_checkpoint

    last = get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None  # type: ignore[no-untyped-call]
    state = Path(last) / "trainer_state.json" if last is not None else None
    if state is None or not state.is_file():
        return 0
    return int(json.loads(state.read_text()).get("global_step", 0))


def main(
    cfg: TrainConfig, settings: Settings | None = None, retriever: Retriever | None = None
) -> TrainResult:
    """Run the whole retraining step; see the module docstring.

    `retriever` defaults to the served FAQ index (or `cfg.index_dir`) with the configured
    embedder.
    """
    import torch
    from peft import get_peft_model
    from transformers import TrainingArguments, set_seed

    from brain.answering.model_loading import load_causal_lm, peft_quietly
    from training.trainer import AnswerBatches, AnswerTrainer

    settings = settings or Settings.load()
    base = cfg.base or settings.model
    output = cfg.output_dir or settings.data_dir / "training" / time.strftime("%Y%m%d-%H%M%S")
    output.mkdir(parents=True, exist_ok=True)
    set_seed(cfg.seed)
    random.seed(cfg.seed)

    train_examples, held_examples, data = load_examples(cfg, settings, retriever)
    eval_chars = cfg.eval_passage_chars or cfg.passage_chars
    if not train_examples:
        raise TrainingError(
            f"{cfg.conversations}: no training pairs left after picking "
            f"(kept/dropped: {data['pairs']}); answers need agent replies, 👍 ratings or "
            "corrections"
        )
    # Only redacted text is ever written.
    _write_jsonl(output / "train.jsonl", train_examples, cfg.passage_chars)
    _write_jsonl(output / "heldout.jsonl", held_examples, eval_chars)

    model, tokenizer = load_causal_lm(base, settings.data_dir)
    model = _plain_model(model)
    encoded = [
        encode_example(tokenizer, e, cfg.max_length, cfg.passage_chars) for e in train_examples
    ]
    train_set = [e for e in encoded if e is not None]
    held_encoded = [
        encode_example(tokenizer, e, cfg.max_length, cfg.passage_chars) for e in held_examples
    ]
    held_set = [e for e in held_encoded if e is not None]
    data["too_long_skipped"] = len(encoded) - len(train_set)

    with peft_quietly():
        peft_model = get_peft_model(model, _lora_config(cfg, model))
    cuda = torch.cuda.is_available()
    bf16 = cuda and torch.cuda.is_bf16_supported()
    steps_per_epoch = math.ceil(len(train_set) / (cfg.batch_size * cfg.grad_accum))
    args = TrainingArguments(
        output_dir=str(output / "checkpoints"),
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=0.05,
        logging_steps=max(1, min(cfg.logging_steps, steps_per_epoch)),
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=2,
        eval_strategy="epoch" if cfg.eval_loss and held_set else "no",
        bf16=bf16,
        report_to=[],
        seed=cfg.seed,
        remove_unused_columns=False,
        disable_tqdm=cfg.quiet,
        dataloader_num_workers=0,
        use_cpu=not cuda,
        **_checkpointing(cuda),
    )
    trainer = AnswerTrainer(
        model=peft_model,
        args=args,
        train_dataset=train_set,  # type: ignore[arg-type]
        eval_dataset=held_set or None,  # type: ignore[arg-type]
        data_collator=AnswerBatches(tokenizer.pad_token_id),
    )
    if cuda:
        peft_model.enable_input_require_grads()  # checkpointing needs a grad path into layers
    resume = cfg.resume and any((output / "checkpoints").glob("checkpoint-*"))
    first_step = resumed_step(output / "checkpoints") if resume else 0
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=True if resume else None)
    seconds = time.perf_counter() - started
    if not trainer.is_world_process_zero():
        return TrainResult(output, {}, None, peft_model)

    adapter_dir = output / "adapter"
    peft_model.save_pretrained(adapter_dir)
    # Tokens trained in this run: a resumed run did only the steps after its checkpoint.
    share = (trainer.state.global_step - first_step) / max(trainer.state.max_steps, 1)
    tokens = sum(len(e["input_ids"]) for e in train_set) * cfg.epochs * share
    report: dict[str, Any] = {
        "base_model": base,
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
        "data": data,
        "training": {
            "seconds": round(seconds, 1),
            "tokens": int(tokens),
            "tokens_per_second": round(tokens / seconds, 1) if seconds else 0.0,
            "final_loss": float(result.training_loss),
            "device": "cuda" if cuda else "cpu",
            "bf16": bf16,
            "resumed": bool(resume),
            "resumed_from_step": first_step,
        },
        "loss": loss_curves(trainer.state.log_history),
    }

    registry = ModelRegistry(settings.registry_dir)
    if held_examples:
        serving_name = cfg.compare_with or registry.active()
        serving = registry.resolve(serving_name)
        # What serves now: a registered version's adapter, or for `base` the adapter the
        # settings give the model being trained (the bundled starter by default);
        # `--compare-with base` = the bare model.
        settings_adapter = settings.adapter if base == settings.model else None
        serving_adapter = (
            serving.adapter_dir
            if serving is not None
            else (None if cfg.compare_with == BASE else settings_adapter)
        )
        evaluation: dict[str, Any] = {}
        samples: dict[str, list[str]] = {}
        if serving_adapter is not None:  # the bare base model too: base, serving, new
            scores, samples["base"] = evaluate(
                peft_model, None, tokenizer, held_examples, cfg, "base"
            )
            evaluation["base"] = {"version": BASE, "scores": scores}
            peft_model.load_adapter(str(serving_adapter), adapter_name="serving")
            scores, samples["serving"] = evaluate(
                peft_model, "serving", tokenizer, held_examples, cfg, "serving"
            )
            peft_model.delete_adapter("serving")
            serving_label = serving_name if serving is not None else f"base+{serving_adapter.name}"
        else:
            scores, samples["serving"] = evaluate(
                peft_model, None, tokenizer, held_examples, cfg, "serving"
            )
            serving_label = serving_name or BASE
        evaluation["serving"] = {"version": serving_label, "scores": scores}
        scores, samples["new"] = evaluate(
            peft_model, "default", tokenizer, held_examples, cfg, "new"
        )
        evaluation["new"] = {"version": "new", "scores": scores}
        report["evaluation"] = evaluation
        report["samples"] = [
            {
                "question": e.question,
                "reference": e.reference,
                **{name: answers[i] for name, answers in samples.items()},
            }
            for i, e in enumerate(held_examples[:20])
        ]

    version = None
    if cfg.register:
        version = registry.register(
            adapter_dir,
            base,
            metrics=report.get("evaluation", {}).get("new", {}).get("scores", {}),
            info={
                "run": str(output),
                "conversations": str(cfg.conversations),
                "compared_with": report.get("evaluation", {}).get("serving", {}),
                "training": report["training"],
            },
        )
        report["version"] = version.name
        if "evaluation" in report:
            report["evaluation"]["new"]["version"] = version.name
    files = [str(p) for p in write_plots(report, output)]
    report["files"] = [str(output / "report.json"), *files]
    write_report(report, output)
    return TrainResult(output, report, version, peft_model)


def cli(argv: Sequence[str] | None = None) -> int:
    """`python -m training.train` (and torchrun/accelerate launch) entry point."""
    parser = build_parser(prog="deskmate train", description=DESCRIPTION)
    result = main(config_from_args(parser.parse_args(argv)))
    if result.report:
        print(summary(result.report))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
