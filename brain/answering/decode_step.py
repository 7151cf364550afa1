"""The lean engine's int8 decode step through its layers, compiled once with TorchScript.

A decode step of SmolLM2-135M runs about 35 small ops in each of 30 layers. Run from
Python, the interpreter's work between them cost about 4 ms of a 14 ms step (one
conversation, ~560-token context; the ops themselves took about 10 ms). The same ops as
one TorchScript function run without it: 14.1 -> 9.6 ms a step, the same tokens
(README, *Dialogue model*). `torch.compile` was measured slower here: it breaks its graph
at every int8 call and pays its guards on every call.

The function is the math of `LlamaEngine.decode`'s layer loop, op for op, for engines
whose projections are dynamic int8 (the default). `compile_layers` returns None where
TorchScript is missing or fails (it is deprecated in favour of `torch.compile`); the
engine then runs its Python loop, which gives the same tokens.
"""

import logging
import warnings
from typing import Any, Optional

import torch

log = logging.getLogger(__name__)


def _layers(
    x: torch.Tensor,
    qkv: list[torch.classes.quantized.LinearPackedParamsBase],  # type: ignore[name-defined]
    o: list[torch.classes.quantized.LinearPackedParamsBase],  # type: ignore[name-defined]
    gate_up: list[torch.classes.quantized.LinearPackedParamsBase],  # type: ignore[name-defined]
    down: list[torch.classes.quantized.LinearPackedParamsBase],  # type: ignore[name-defined]
    attention_scales: list[torch.Tensor],
    mlp_scales: list[torch.Tensor],
    caches: list[torch.Tensor],
    rotary: torch.Tensor,
    mask: Optional[torch.Tensor],  # noqa: UP045 (TorchScript reads Optional, not "| None")
    rows: torch.Tensor,
    positions: torch.Tensor,
    span: int,
    shape: list[int],
    eps: float,
    scale: float,
    reduce_range: bool,
) -> torch.Tensor:
    """`x` (batch, hidden) through every layer; see `LlamaEngine.decode`. `shape` is
    [heads, kv_heads, head_dim, hidden]; `mask` None means one row at `span - 1`;
    the scale lists are empty when the engine is not smoothed."""
    heads, kv_heads, head_dim, hidden = shape[0], shape[1], shape[2], shape[3]
    batch = x.shape[0]
    groups, split = heads // kv_heads, heads + kv_heads
    smoothed = len(attention_scales) > 0
    for layer in range(len(qkv)):
        inverse = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
        normed = x * inverse.square_().div_(hidden).add_(eps).rsqrt_()
        if smoothed:
            normed = normed.mul_(attention_scales[layer])
        projected = torch.ops.quantized.linear_dynamic(normed, qkv[layer], reduce_range)
        projected = projected.view(batch, heads + 2 * kv_heads, head_dim)
        rotated = projected[:, :split]
        torch.view_as_complex(rotated.reshape(batch, split, head_dim // 2, 2)).mul_(rotary)
        cache = caches[layer]
        new = projected[:, heads:].view(batch, 2, kv_heads, head_dim)
        if mask is None:
            cache[0, :, :, span - 1] = new[0].transpose(0, 1)
        else:
            cache[rows, :, :, positions] = new.transpose(1, 2)
        keys = cache[:batch, :, 0, :span].reshape(batch * kv_heads, span, head_dim)
        values = cache[:batch, :, 1, :span].reshape(batch * kv_heads, span, head_dim)
        q = projected[:, :heads].reshape(batch * kv_heads, groups, head_dim)
        if mask is None:
            scores = torch.bmm(q, keys.transpose(1, 2)).mul_(scale)
        else:
            scores = torch.baddbmm(mask, q, keys.transpose(1, 2), alpha=scale)
        attended = torch.bmm(scores.softmax(dim=-1), values).view(batch, -1)
        x = x + torch.ops.quantized.linear_dynamic(attended, o[layer], reduce_range)
        inverse = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
        normed = x * inverse.square_().div_(hidden).add_(eps).rsqrt_()
        if smoothed:
            normed = normed.mul_(mlp_scales[layer])
        gate, up = torch.ops.quantized.linear_dynamic(normed, gate_up[layer], reduce_range).chunk(
            2, dim=-1
        )
        activated = torch.nn.functional.silu(gate).mul_(up)
        x = x.add_(torch.ops.quantized.linear_dynamic(activated, down[layer], reduce_range))
    return x


def compile_layers() -> Any | None:
    """`_layers` compiled with TorchScript, or None (logged) where that fails."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit: see above
            return torch.jit.script(_layers)
    except Exception as exc:  # no TorchScript in this torch, or it cannot read the source
        log.warning("decode steps run op by op from Python (TorchScript failed: %s)", exc)
        return None
