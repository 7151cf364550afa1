"""The `hf` generator: a transformers causal LM in-process, CPU or GPU.

Prompts are rendered with the model's chat template and decoded greedily (answers should
be the same every time they are asked). Two engines:

- `lean` (CPU, Llama-architecture models such as the embedded SmolLM2): the weights run
  on `lean_engine.LlamaEngine` under continuous batching, int8 by default. About 2x the
  tokens/s of `generate` at one conversation, 3-4x at sixteen (bench/generation.py).
- `generate` (GPU, or any other architecture): transformers' `generate` over left-padded
  batches merged by `DynamicBatcher`; int8 dynamic quantisation on CPU, bf16 on GPU.

`auto` picks `lean` where it can run. A LoRA adapter (from the model registry) is merged
into the weights at load time, before either engine sees them.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from brain.answering.batching import (
    BatchingOptions,
    ContinuousBatcher,
    DynamicBatcher,
    GenerationError,
    repeating_tokens,
)
from brain.answering.lean_engine import LlamaEngine, supports
from brain.answering.model_loading import (
    ModelLoadError,
    load_causal_lm,
    peft_quietly,
    quantize_int8,
)
from brain.prompt import Messages, render_prompt
from brain.settings import NO_REPEAT_NGRAM

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class HFOptions:
    """How the model is loaded and run."""

    device: str = "auto"  # auto | cpu | cuda
    engine: str = "auto"  # auto | lean | generate (see the module docstring)
    int8: bool = True  # dynamic int8 quantisation of linear layers on CPU
    threads: int = 0  # torch CPU threads; 0 = torch's default
    max_new_tokens: int = 96
    no_repeat_ngram: int = NO_REPEAT_NGRAM  # an answer never repeats an n-gram of its own; 0 = off
    context_tokens: int = 2048  # prompt budget (capped by the model's window)
    batching: BatchingOptions = field(default_factory=BatchingOptions)


def model_name(model: str) -> str:
    """A short name for a hub id or path: "HuggingFaceTB/SmolLM2-135M-Instruct" -> "SmolLM2-..."."""
    return model.rstrip("/").rsplit("/", 1)[-1]


ENGINES = ("auto", "lean", "generate")
CALIBRATION_PROMPTS = 3  # of PASSAGES entries each: ~1,700 prompt positions


def stop_ids(model: Any, tokenizer: Any) -> set[int]:
    """Token ids that end an answer: the model's generation config and the tokenizer's."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = configured if isinstance(configured, list) else [configured]
    return {int(i) for i in [*ids, tokenizer.eos_token_id] if i is not None}


def calibration_prompts(tokenizer: Any) -> list[list[int]]:
    """Token ids of prompts shaped like served ones (system prompt, `PASSAGES` FAQ
    passages, a question), from the bundled sample FAQ: what int8 is calibrated on."""
    from brain.prompt import PASSAGES, Passage, build_messages
    from brain.settings import SAMPLE_FAQ
    from retrieval.faq import load_faq

    entries = load_faq([SAMPLE_FAQ])
    prompts = []
    for start in range(0, PASSAGES * CALIBRATION_PROMPTS, PASSAGES):
        chosen = entries[start : start + PASSAGES]
        passages = [Passage(entry.question, entry.answer) for entry in chosen]
        text = render_prompt(tokenizer, build_messages(chosen[0].question, passages))
        prompts.append(list(tokenizer(text, add_special_tokens=False)["input_ids"]))
    return prompts


def lean_engine_fits(model: Any, options: HFOptions) -> bool:
    """Whether `model` runs on the lean engine under `options` (raises if `lean` can't)."""
    if options.engine not in ENGINES:
        raise ModelLoadError(
            f"DESKMATE_MODEL_ENGINE={options.engine!r} is not one of {', '.join(ENGINES)}"
        )
    if options.engine == "generate":
        return False
    on_cpu = next(model.parameters(), torch.empty(0)).device.type == "cpu"
    reason = supports(model) if on_cpu else "the lean engine runs on CPU only"
    if reason is not None and options.engine == "lean":
        raise ModelLoadError(f"DESKMATE_MODEL_ENGINE=lean: {reason}")
    return reason is None


def apply_adapter(model: Any, adapter: Path) -> Any:
    """Merge the LoRA adapter saved at `adapter` (peft format) into `model`."""
    try:
        from peft import PeftModel
    except ImportError as exc:  # pragma: no cover - peft is a dependency
        raise ModelLoadError("LoRA adapters need the peft package") from exc
    try:
        with peft_quietly():
            return PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot apply the LoRA adapter in {adapter}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class NoRepeatInAnswer:
    """The lean engine's n-gram ban as a `generate` logits processor: counted over the
    answer only, from `prompt_width` on (transformers' own also counts the prompt, which
    would forbid taking over a phrase of the knowledge). `n` 0 bans nothing."""

    prompt_width: int
    n: int

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.n:
            for row, ids in enumerate(input_ids[:, self.prompt_width :].tolist()):
                banned = repeating_tokens(ids, self.n)
                if banned:
                    scores[row, sorted(banned)] = -float("inf")
        return scores


class HFGenerator:
    """A transformers model behind the `Generator` interface, with dynamic batching."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        version: str,
        options: HFOptions = HFOptions(),
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        # The batch runs in a worker thread; counting prompts happens on the event loop.
        # A Rust tokenizer must not be used from two threads at once, so counting gets
        # its own copy.
        self._counting_tokenizer = copy.deepcopy(tokenizer)
        self.version = version
        self.options = options
        window = getattr(model.config, "max_position_embeddings", None) or options.context_tokens
        self.context_tokens = max(64, min(options.context_tokens, window - options.max_new_tokens))
        self.device = next(model.parameters(), torch.empty(0)).device
        # Both engines end an answer on the same tokens.
        self.stop_ids = stop_ids(model, tokenizer)
        self._batcher: DynamicBatcher[Messages] = DynamicBatcher(
            self.generate_batch, options.batching
        )
        self.generate_calls = 0
        self.continuous: ContinuousBatcher | None = None
        self.lean: LlamaEngine | None = None
        if lean_engine_fits(model, options):
            engine = LlamaEngine(
                model,
                slots=options.batching.max_batch,
                max_tokens=self.context_tokens + options.max_new_tokens,
                int8=options.int8,
                calibration=calibration_prompts(tokenizer) if options.int8 else (),
            )
            self.continuous = ContinuousBatcher(
                engine,
                self.stop_ids,
                options.max_new_tokens,
                no_repeat_ngram=options.no_repeat_ngram,
            )
            self.lean = engine
            self.model = None  # the engine holds its own (fused, quantised) copy

    @property
    def engine(self) -> str:
        return "lean" if self.continuous is not None else "generate"

    @classmethod
    def load(
        cls,
        model: str,
        cache_dir: Path,
        options: HFOptions = HFOptions(),
        adapter: Path | None = None,
        adapter_version: str | None = None,
    ) -> HFGenerator:
        """Load `model` (hub id, path or the embedded default) ready to serve.

        Raises `ModelLoadError` with a message naming the setting to fix.
        """
        device = options.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda" and not torch.cuda.is_available():
            raise ModelLoadError("DESKMATE_MODEL_DEVICE=cuda but no CUDA GPU is available")
        if options.threads and device == "cpu":
            torch.set_num_threads(options.threads)
        started = time.perf_counter()
        dtype = torch.bfloat16 if device == "cuda" else torch.float32
        loaded, tokenizer = load_causal_lm(model, cache_dir, dtype=dtype)
        if adapter is not None:
            loaded = apply_adapter(loaded, adapter)
        if device == "cuda":
            loaded = loaded.to(device)
        version = f"{model_name(model)}@{adapter_version or (adapter.name if adapter else 'base')}"
        generator = cls.from_model(loaded, tokenizer, version, options)
        log.info(
            "dialogue model %s on %s%s, %s engine, loaded in %.1f s",
            version,
            device,
            " (int8)" if device == "cpu" and options.int8 else "",
            generator.engine,
            time.perf_counter() - started,
        )
        if generator.lean is not None and generator.lean.int8_errors:
            log.info(
                "int8 on this CPU: %s (mean |logit error| vs fp32: %s); decode steps %s",
                generator.lean.int8_scheme,
                ", ".join(f"{k} {v:.3f}" for k, v in generator.lean.int8_errors.items()),
                generator.lean.decode_step,
            )
        return generator

    @classmethod
    def from_model(
        cls, model: Any, tokenizer: Any, version: str, options: HFOptions = HFOptions()
    ) -> HFGenerator:
        """Serve a model already in memory, on the device it is on: what `load` does after
        loading, and how training answers its held-out prompts as serving would.

        On CPU where the lean engine does not run, `options.int8` quantises a copy of the
        weights. The caller's tokenizer is left as it is (a copy is set up for serving).
        """
        on_cpu = next(model.parameters(), torch.empty(0)).device.type == "cpu"
        if on_cpu and options.int8 and not lean_engine_fits(model, options):
            model = quantize_int8(model)
        return cls(model, copy.deepcopy(tokenizer), version, options)

    def count_tokens(self, messages: Messages) -> int:
        """Prompt length in tokens, with the chat template applied."""
        text = render_prompt(self._counting_tokenizer, messages)
        return len(self._counting_tokenizer(text, add_special_tokens=False)["input_ids"])

    async def generate(self, prompts: Sequence[Messages]) -> list[str]:
        """Generate for each prompt; concurrent calls are merged into shared batches."""
        import asyncio

        if self.continuous is None:
            return list(await asyncio.gather(*(self._batcher.submit(p) for p in prompts)))
        tokenizer = self._counting_tokenizer  # the event loop's copy
        encoded = [
            tokenizer(render_prompt(tokenizer, messages), add_special_tokens=False)["input_ids"]
            for messages in prompts
        ]
        outputs = await asyncio.gather(*(self.continuous.generate(ids) for ids in encoded))
        return [tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in outputs]

    async def stream(self, messages: Messages) -> AsyncIterator[str]:
        """The answer to one prompt in pieces, as it is generated: the lean engine yields
        text as its tokens are decoded (joined, the pieces are `generate`'s answer);
        `generate` yields the whole answer at once."""
        if self.continuous is None:
            yield (await self.generate([messages]))[0]
            return
        tokenizer = self._counting_tokenizer  # the event loop's copy
        ids = tokenizer(render_prompt(tokenizer, messages), add_special_tokens=False)["input_ids"]
        generated: list[int] = []
        sent = ""
        async for token in self.continuous.stream(ids):
            generated.append(token)
            text = tokenizer.decode(generated, skip_special_tokens=True).strip()
            # Hold back a character split across tokens, and anything decoding revised.
            if text.endswith("\ufffd") or not text.startswith(sent) or text == sent:
                continue
            yield text[len(sent) :]
            sent = text

    def generate_batch(self, prompts: list[Messages]) -> list[str]:
        """One batched greedy `generate` over `prompts` (blocking; left padding)."""
        self.generate_calls += 1
        texts = [render_prompt(self.tokenizer, messages) for messages in prompts]
        encoded = self.tokenizer(
            texts, return_tensors="pt", padding=True, add_special_tokens=False
        ).to(self.device)
        width = encoded["input_ids"].shape[1]  # left-padded: every answer starts here
        try:
            with torch.inference_mode():
                output = self.model.generate(
                    **encoded,
                    max_new_tokens=self.options.max_new_tokens,
                    do_sample=False,
                    pad_token_id=self.tokenizer.pad_token_id,
                    eos_token_id=sorted(self.stop_ids) or None,
                    logits_processor=[NoRepeatInAnswer(width, self.options.no_repeat_ngram)],
                )
        except (RuntimeError, ValueError) as exc:
            raise GenerationError(f"{self.version} failed to generate: {exc}") from exc
        new_tokens = output[:, width:]
        decoded = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        return [text.strip() for text in decoded]

    async def aclose(self) -> None:
        if self.continuous is not None:
            self.continuous.close()
        await self._batcher.aclose()
