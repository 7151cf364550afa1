"""A lean batched decoder for Llama-architecture models on CPU.

transformers' `generate` spends most of a decode step on per-op overhead for a model as
small as SmolLM2-135M: seven separate linear layers per block, a KV cache that is
re-concatenated every step, and padding that keeps finished rows computing until the
longest answer ends. This engine runs the same weights with

- fused projections (q|k|v and gate|up) with the RMSNorm weights folded into them,
  int8-quantised per output channel (activations dynamic int8; the down projection's
  few outlier input channels stay fp32 while reading a prompt: `SplitInt8`);
- a preallocated KV cache of `slots` rows; each row keeps its own length and rotary
  positions, so rows of different lengths decode together without padding;
- one call per step for all active rows (`decode`), one call per prompt (`prefill`);
- few small ops per layer: rotary embedding as one complex multiply (q and k rows stored
  in pairs), RMSNorm through `vector_norm`, int8 layers called without the module
  wrapper, and one row (one conversation) decoded without a mask or indexed writes;
- the start every prompt shares (system prompt, chat template) cached once and copied
  into each new row instead of recomputed;
- int8 decode steps run their layers as one TorchScript function (`decode_step`), without
  Python between the ops.

`generation.ContinuousBatcher` schedules requests onto the rows (continuous batching:
new prompts join between steps, finished rows leave at once). The math is the Llama
block as transformers implements it; `supports` says which configs that covers, and
anything else keeps using `generate`.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from math import inf
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from brain.answering.decode_step import compile_layers
from brain.answering.model_loading import quantize_int8

log = logging.getLogger(__name__)

SUPPORTED_ROPE = ("default", "linear", "llama3")
MIN_SHARED_PREFIX = 16  # tokens; shorter shared starts are recomputed


def _common_length(a: list[int], b: list[int]) -> int:
    """Length of the common prefix of two token lists."""
    length = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        length += 1
    return length


def supports(model: Any) -> str | None:
    """None if `model` can run on this engine, else the reason it cannot."""
    config = model.config
    if getattr(config, "model_type", None) != "llama":
        return f"model type {getattr(config, 'model_type', None)!r} is not llama"
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"activation {config.hidden_act!r} is not silu"
    rotary = getattr(getattr(model, "model", None), "rotary_emb", None)
    if rotary is None or getattr(rotary, "rope_type", "default") not in SUPPORTED_ROPE:
        return "rotary embedding type is not position-only"
    if any(not isinstance(m, nn.Linear) for m in _projections(model)):
        return "projections are not plain linear layers (already quantised or wrapped)"
    return None


def _projections(model: Any) -> list[Any]:
    layers = model.model.layers
    names = ("q_proj", "k_proj", "v_proj", "o_proj")
    mlp = ("gate_proj", "up_proj", "down_proj")
    found = [getattr(layer.self_attn, n) for layer in layers for n in names]
    found += [getattr(layer.mlp, n) for layer in layers for n in mlp]
    return [*found, model.lm_head]


def _fuse(*linears: nn.Linear, norm: torch.Tensor) -> nn.Linear:
    """One linear layer computing the concatenated outputs of `linears` on inputs scaled
    by `norm` (the RMSNorm weight before them: W(w * x) = (W diag(w)) x)."""
    has_bias = any(linear.bias is not None for linear in linears)
    fused = nn.Linear(linears[0].in_features, sum(x.out_features for x in linears), has_bias)
    with torch.no_grad():
        fused.weight.copy_(torch.cat([x.weight for x in linears]) * norm)
        if fused.bias is not None:
            fused.bias.copy_(
                torch.cat(
                    [x.bias if x.bias is not None else torch.zeros(x.out_features) for x in linears]
                )
            )
    return fused


def _copy_linear(linear: nn.Linear) -> nn.Linear:
    copy = nn.Linear(linear.in_features, linear.out_features, linear.bias is not None)
    with torch.no_grad():
        copy.weight.copy_(linear.weight)
        if linear.bias is not None and copy.bias is not None:
            copy.bias.copy_(linear.bias)
    return copy


def _pair_rotary_rows(qkv: nn.Linear, attention: Any) -> None:
    """Reorder the q and k rows of each head from rotate_half's halves (x_i, x_{i+d/2})
    to adjacent pairs, so rotary embedding is one in-place complex multiply (`_rotate_`).
    q.k is unchanged: q and k are reordered alike, v is not touched."""
    heads = attention.config.num_attention_heads
    kv_heads = attention.config.num_key_value_heads
    head_dim = attention.head_dim
    half = head_dim // 2
    pairs = torch.stack((torch.arange(half), torch.arange(half, head_dim)), dim=1).flatten()
    rotated = heads + kv_heads
    order = (torch.arange(rotated).unsqueeze(1) * head_dim + pairs).flatten()
    with torch.no_grad():
        qkv.weight[: order.numel()] = qkv.weight[order]
        if qkv.bias is not None:
            qkv.bias[: order.numel()] = qkv.bias[order]


def _apply(linear: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`linear(x)`; a dynamic int8 layer without the module call's overhead (a few µs,
    121 calls a decode step). Mirrors `torch.ao.nn.quantized.dynamic.Linear.forward`."""
    packed: Any = linear._modules.get("_packed_params")
    if packed is None:
        output: torch.Tensor = linear(x)
        return output
    version: Any = linear.version
    reduce_range = version is not None and version >= 4
    quantized: torch.Tensor = torch.ops.quantized.linear_dynamic(
        x, packed._packed_params, reduce_range
    )
    return quantized


OUTLIER_CHANNELS = 32  # down-projection inputs kept out of int8 (of 1,536 in SmolLM2-135M)


class SplitInt8(nn.Module):
    """The MLP's down projection: dynamic int8 in decode steps (`forward`); in prompts
    (`prompt`) the same, except for its few outlier input channels, which are multiplied
    in fp32 (LLM.int8()-style decomposition).

    Its input, silu(gate) * up, has a few channels far larger than the rest (peaks of
    ~490 against a median of ~6 in SmolLM2-135M's last layer), and dynamic int8 gives the
    whole input one scale: in a prompt, a few tokens' huge channels crush every token's
    others (mean |logit - fp32 logit| on the calibration prompts 4.2). The channels are
    the same for every input, so the calibration prompts find them once (`channels`, the
    largest peaks); taken out before quantising and multiplied by their fp32 weight
    columns, they leave an error of 0.86 (0.69 with the whole layer fp32 in prompts, which
    read prompts 15 % slower). Accuracy pays in the prompt: the passages' keys and values
    are what every answer token attends to. A decode step quantises one token per row,
    and splitting there cost 4 % of the speed. Without `channels`, plain dynamic int8.
    """

    def __init__(self, linear: nn.Linear, channels: torch.Tensor | None = None) -> None:
        super().__init__()
        self.dynamic = quantize_int8(nn.ModuleList([linear]))[0]
        self.channels = channels
        self.rest = self.dynamic
        self.outlier_weight = torch.empty(0)
        if channels is not None:
            weight = linear.weight.detach()
            self.outlier_weight = weight[:, channels].t().contiguous()  # (channels, out)
            rest = _copy_linear(linear)
            with torch.no_grad():
                rest.weight[:, channels] = 0
            self.rest = quantize_int8(nn.ModuleList([rest]))[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _apply(self.dynamic, x)

    def prompt(self, x: torch.Tensor) -> torch.Tensor:
        """x @ W.T with the outlier channels in fp32; `x` is overwritten (its outlier
        channels zeroed): pass a temporary."""
        if self.channels is None:
            return _apply(self.dynamic, x)
        outliers = x.index_select(-1, self.channels)
        output = _apply(self.rest, x.index_fill_(-1, self.channels, 0))
        return output.add_(outliers @ self.outlier_weight)


def _quantize_blocks(
    blocks: Sequence[Any], down_peaks: Sequence[torch.Tensor] | None = None
) -> list[Any]:
    """Copies of `blocks` with dynamic int8 projections; the down projection's largest
    input channels (by `down_peaks`, each layer's peak |input| per channel) stay fp32
    (`SplitInt8`)."""
    quantized = list(quantize_int8(nn.ModuleList(blocks)))
    for layer, (copy, block) in enumerate(zip(quantized, blocks, strict=True)):
        channels = None
        if down_peaks is not None:
            count = min(OUTLIER_CHANNELS, block.down.in_features)
            channels = down_peaks[layer].topk(count).indices.sort().values
        copy.down = SplitInt8(block.down, channels)
    return quantized


class _Block(nn.Module):
    def __init__(self, layer: Any) -> None:
        super().__init__()
        attention, mlp = layer.self_attn, layer.mlp
        attention_norm = layer.input_layernorm.weight.detach()
        self.qkv = _fuse(attention.q_proj, attention.k_proj, attention.v_proj, norm=attention_norm)
        _pair_rotary_rows(self.qkv, layer.self_attn)
        self.o = _copy_linear(attention.o_proj)
        mlp_norm = layer.post_attention_layernorm.weight.detach()
        self.gate_up = _fuse(mlp.gate_proj, mlp.up_proj, norm=mlp_norm)
        self.down = _copy_linear(mlp.down_proj)
        # Per-channel divisors of the normalised inputs of qkv and gate_up (SmoothQuant;
        # None = not smoothed). See `LlamaEngine._smooth`.
        self.attention_scale: torch.Tensor | None = None
        self.mlp_scale: torch.Tensor | None = None


class LlamaEngine:
    """Prefill and batched decode over `slots` KV-cache rows (greedy, CPU, inference only)."""

    def __init__(
        self,
        model: Any,
        slots: int,
        max_tokens: int,
        int8: bool = True,
        calibration: Sequence[list[int]] = (),
    ) -> None:
        """`calibration`: typical prompts (token ids) that smooth activation outliers into
        the weights before int8 quantisation (`_smooth`); without them, plain int8."""
        reason = supports(model)
        if reason is not None:
            raise ValueError(f"the lean engine cannot run this model: {reason}")
        config = model.config
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.hidden = config.hidden_size
        self.eps = config.rms_norm_eps
        self.slots = slots
        self.max_tokens = max_tokens
        self.embed = model.model.embed_tokens.weight.detach().clone()
        blocks = nn.ModuleList(_Block(layer) for layer in model.model.layers)
        head = nn.ModuleList([_fuse(model.lm_head, norm=model.model.norm.weight.detach())])
        self.blocks: list[Any] = list(blocks)
        self.lm_head: Any = head[0]
        # Rotary tables for every position, from the model's own rotary module.
        positions = torch.arange(max_tokens).unsqueeze(0)
        probe = torch.zeros(1, 1, self.head_dim, dtype=torch.float32)
        with torch.no_grad():
            cos, sin = model.model.rotary_emb(probe, positions)
        cos, sin = cos[0].float(), sin[0].float()  # (max_tokens, head_dim)
        half = self.head_dim // 2
        # cos + i sin of each pair's angle, per position (see `_rotate_`).
        self.rotary = torch.complex(cos[:, :half].contiguous(), sin[:, :half].contiguous())
        self.scale = self.head_dim**-0.5
        self.capacity = 0
        self.cache: list[torch.Tensor] = []
        self.lengths = [0] * slots
        self._ensure_capacity(min(512, max_tokens))
        self._previous_ids: list[int] = []
        self._prefix_ids: list[int] = []
        self._prefix_cache: list[torch.Tensor] = []
        self.reused_tokens = 0  # prompt tokens copied from the prefix cache
        # Which int8 scheme serves ("plain" / "smoothed"; "fp32" without int8) and each
        # scheme's mean |logit - fp32 logit| over the calibration prompts.
        self.int8_scheme = "fp32"
        self.int8_errors: dict[str, float] = {}
        if int8:
            self._quantize(head, calibration)
        elif calibration:
            self._smooth(self._calibrate(calibration)[0])  # exact in fp32
        # The int8 layers' decode step without Python between its ops (None: op by op).
        self._scripted: Any | None = None
        self._scripted_inputs: tuple[Any, ...] = ()
        self._scripted_reduce_range = False
        if int8:
            self._script_decode()

    @property
    def decode_step(self) -> str:
        """How decode steps run: "scripted" (TorchScript) or "python" (op by op)."""
        return "scripted" if self._scripted is not None else "python"

    def _script_decode(self) -> None:
        """Hand the int8 layers' packed weights to the TorchScript step (`decode_step`)."""
        layers = compile_layers()
        if layers is None:
            return
        blocks = self.blocks

        def packed(layer: Any) -> Any:
            return layer._packed_params._packed_params

        version: Any = blocks[0].qkv.version
        smoothed = self.int8_scheme == "smoothed"
        self._scripted_inputs = (
            [packed(block.qkv) for block in blocks],
            [packed(block.o) for block in blocks],
            [packed(block.gate_up) for block in blocks],
            [packed(block.down.dynamic) for block in blocks],
            [block.attention_scale for block in blocks] if smoothed else [],
            [block.mlp_scale for block in blocks] if smoothed else [],
        )
        self._scripted_reduce_range = version is not None and version >= 4
        self._scripted = layers

    SMOOTHING = 0.5  # SmoothQuant's alpha: how much of an outlier moves into the weights

    def _quantize(self, head: nn.ModuleList, calibration: Sequence[list[int]]) -> None:
        """Quantise to int8, smoothed or plain: whichever is closer to fp32 on this CPU.

        Dynamic int8 quantises each token's activations with one scale, so a few large
        channels in the normalised inputs of qkv and gate_up crush the rest. Smoothing
        (SmoothQuant) flattens them, but how much that helps depends on the int8 kernels
        the CPU runs (on one AVX-512 VNNI/AMX machine it helped on some prompts and hurt
        on others), so both are measured on the calibration prompts against fp32 logits
        at every position, and the closer one serves. Without calibration: plain.
        """
        fp32_head, fp32_blocks = head[0], self.blocks
        self.lm_head = quantize_int8(head)[0]
        self.int8_scheme = "plain"
        if not calibration:
            self.blocks = _quantize_blocks(fp32_blocks)
            return
        peaks, states = self._calibrate(calibration)
        down_peaks = [peaks[(layer, "down")] for layer in range(len(fp32_blocks))]
        plain = self.blocks = _quantize_blocks(fp32_blocks, down_peaks)  # a copy
        self.int8_errors["plain"] = self._logit_error(calibration, states, fp32_head)
        self.blocks = fp32_blocks
        self._smooth(peaks)
        self.blocks = _quantize_blocks(fp32_blocks, down_peaks)
        self.int8_errors["smoothed"] = self._logit_error(calibration, states, fp32_head)
        if self.int8_errors["plain"] <= self.int8_errors["smoothed"]:
            self.blocks = plain
        else:
            self.int8_scheme = "smoothed"

    def _prompts(self, calibration: Sequence[list[int]]) -> list[list[int]]:
        return [list(token_ids)[: self.max_tokens - 1] for token_ids in calibration]

    @torch.inference_mode()
    def _calibrate(
        self, calibration: Sequence[list[int]]
    ) -> tuple[dict[tuple[int, str], torch.Tensor], list[torch.Tensor]]:
        """Run the calibration prompts: the peak |input| of each channel of every qkv,
        gate_up and down layer, and each prompt's final hidden states (the reference
        logits)."""
        peaks: dict[tuple[int, str], torch.Tensor] = {}

        def record(key: tuple[int, str]) -> Any:
            def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: Any) -> None:
                peak = inputs[0].abs().reshape(-1, inputs[0].shape[-1]).amax(dim=0)
                peaks[key] = torch.maximum(peaks[key], peak) if key in peaks else peak

            return hook

        hooks = [
            getattr(block, name).register_forward_hook(record((layer, name)))
            for layer, block in enumerate(self.blocks)
            for name in ("qkv", "gate_up", "down")
        ]
        try:
            states = [self._fresh(token_ids) for token_ids in self._prompts(calibration)]
        finally:
            for handle in hooks:
                handle.remove()
        self._forget()
        return peaks, states

    @torch.inference_mode()
    def _logit_error(
        self, calibration: Sequence[list[int]], states: list[torch.Tensor], fp32_head: nn.Module
    ) -> float:
        """Mean |logit - fp32 logit| over every position of the calibration prompts."""
        total, count = 0.0, 0
        for token_ids, state in zip(self._prompts(calibration), states, strict=True):
            exact = fp32_head(self._norm(state))
            total += float((self.prompt_logits(token_ids) - exact).abs().sum())
            count += exact.numel()
        self._forget()
        return total / max(count, 1)

    @torch.inference_mode()
    def _smooth(self, peaks: dict[tuple[int, str], torch.Tensor]) -> None:
        """Move activation outliers into the weights (SmoothQuant), exactly in fp32: with
        per-channel s = sqrt(max|x_j| / max|W_:j|), x/s and W*s give the same product
        with flatter activations."""
        for layer, block in enumerate(self.blocks):
            for name, scale in (("qkv", "attention_scale"), ("gate_up", "mlp_scale")):
                linear = getattr(block, name)
                weight_peak = linear.weight.abs().amax(dim=0).clamp(min=1e-5)
                factor = (peaks[(layer, name)].clamp(min=1e-5) / weight_peak) ** self.SMOOTHING
                linear.weight.mul_(factor)
                setattr(block, scale, 1 / factor)

    @torch.inference_mode()
    def prompt_logits(self, token_ids: list[int]) -> torch.Tensor:
        """Logits at every position of a prompt run alone in row 0 (for measuring; the
        row is left in use, so call it before serving, or on an engine of its own)."""
        return self._logits(self._fresh(token_ids))

    def _fresh(self, token_ids: list[int]) -> torch.Tensor:
        """Final hidden states of every position of a prompt run alone in row 0."""
        self._forget()
        self._ensure_capacity(len(token_ids) + 1)
        return self._hidden(0, token_ids, 0, len(token_ids))[0]

    def _forget(self) -> None:
        """Leave no trace of calibration runs in row 0 or the prefix cache."""
        self.lengths[0] = 0
        self._previous_ids, self._prefix_ids = [], []
        self._prefix_cache = []
        self.reused_tokens = 0

    @torch.inference_mode()
    def _ensure_capacity(self, tokens: int) -> None:
        """Grow every row's cache to hold `tokens` positions (doubling, up to max_tokens).

        One tensor per layer holds keys and values, (slots, kv_heads, 2, capacity,
        head_dim): a step writes a row's new key and value in one indexed copy, and the
        keys (or values) of rows 0..n-1 are one strided view that batched matmuls read
        in place.
        """
        if tokens <= self.capacity:
            return
        if tokens > self.max_tokens:
            raise ValueError(f"{tokens} tokens exceed the engine's window of {self.max_tokens}")
        capacity = min(self.max_tokens, max(tokens, 2 * self.capacity))
        shape = (self.slots, self.kv_heads, 2, capacity, self.head_dim)
        caches = []
        for layer in range(len(self.blocks)):
            cache = torch.zeros(shape)
            if self.capacity:
                cache[:, :, :, : self.capacity] = self.cache[layer]
            caches.append(cache)
        self.cache, self.capacity = caches, capacity

    def keys(self, layer: int) -> torch.Tensor:
        """Layer `layer`'s keys, (slots, kv_heads, capacity, head_dim)."""
        return self.cache[layer][:, :, 0]

    def values(self, layer: int) -> torch.Tensor:
        """Layer `layer`'s values, (slots, kv_heads, capacity, head_dim)."""
        return self.cache[layer][:, :, 1]

    def _project(self, block: Any, x: torch.Tensor) -> torch.Tensor:
        """The block's q, k and v heads for `x` (..., hidden) as (..., heads, head_dim),
        ordered q | k | v (not rotated yet). The smoothing divisors ride on the norm."""
        qkv = _apply(block.qkv, self._norm(x, block.attention_scale))
        return qkv.view(*qkv.shape[:-1], self.heads + 2 * self.kv_heads, self.head_dim)

    def _rotate_(self, qk: torch.Tensor, rotary: torch.Tensor) -> None:
        """Rotary embedding in place. The q and k rows are stored as adjacent pairs
        (x_i, x_{i+d/2}) (`_pair_rotary_rows`), and rotate_half's x cos +
        rotate_half(x) sin is then each pair times cos + i sin: one complex multiply."""
        torch.view_as_complex(qk.view(*qk.shape[:-1], -1, 2)).mul_(rotary)

    def _mlp(self, block: Any, x: torch.Tensor, prompt: bool = False) -> torch.Tensor:
        gate, up = _apply(block.gate_up, self._norm(x, block.mlp_scale)).chunk(2, dim=-1)
        hidden = F.silu(gate).mul_(up)
        down = block.down
        if isinstance(down, SplitInt8):
            return x.add_(down.prompt(hidden) if prompt else _apply(down.dynamic, hidden))
        return x.add_(_apply(down, hidden))

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return _apply(self.lm_head, self._norm(x))

    def _norm(self, x: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        """RMSNorm without its weight (folded into the next projection), divided by the
        smoothing divisors `scale` when given. Through `vector_norm`: a third of
        `F.rms_norm`'s time on one row."""
        inverse = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
        inverse = inverse.square_().div_(self.hidden).add_(self.eps).rsqrt_()
        normed: torch.Tensor = x * inverse
        return normed.mul_(scale) if scale is not None else normed

    @torch.inference_mode()
    def prefill(self, slot: int, token_ids: list[int]) -> int:
        """Run a whole prompt into row `slot` (replacing what it held); the greedy next token."""
        done, token = 0, None
        while token is None:
            done, token = self.prefill_chunk(slot, token_ids, done, len(token_ids))
        return token

    @torch.inference_mode()
    def prefill_chunk(
        self, slot: int, token_ids: list[int], done: int, chunk: int
    ) -> tuple[int, int | None]:
        """Run up to `chunk` more positions of a prompt into row `slot`, which holds its
        first `done` (0: a new prompt replaces what the row held). Returns the positions
        now in the row and, once the whole prompt is in, the greedy next token.

        Chunks let decode steps of other rows run between parts of a long prompt. A new
        prompt starts from the remembered prefix (the system prompt and template every
        prompt starts with) as far as it shares it, copied instead of recomputed.
        """
        total = len(token_ids)
        if done == 0:
            self._ensure_capacity(total + 1)
            done = self._reuse_prefix(slot, token_ids)
        end = min(total, done + max(1, chunk))
        x = self._hidden(slot, token_ids, done, end)
        if end < total:
            return end, None
        self._remember_prefix(slot, token_ids)
        return end, int(self._logits(x[:, -1])[0].argmax())

    def _hidden(self, slot: int, token_ids: list[int], start: int, end: int) -> torch.Tensor:
        """Compute positions start..end of a prompt in row `slot` (which holds positions
        0..start); the final hidden states of those positions."""
        tokens = end - start
        x: torch.Tensor = self.embed[torch.tensor([token_ids[start:end]])]
        rotary = self.rotary[start:end]
        # New token i (position start + i) sees positions 0..start + i.
        mask = torch.arange(end).unsqueeze(0) <= torch.arange(start, end).unsqueeze(1)
        split = self.heads + self.kv_heads
        for layer, block in enumerate(self.blocks):
            heads = self._project(block, x).transpose(1, 2)  # (1, heads, tokens, d)
            self._rotate_(heads[:, :split], rotary)
            cache = self.cache[layer]
            new = heads[0, self.heads :].view(2, self.kv_heads, tokens, self.head_dim)
            cache[slot, :, :, start:end] = new.transpose(0, 1)
            q = heads[:, : self.heads]
            if start:
                keys = cache[slot : slot + 1, :, 0, :end]
                values = cache[slot : slot + 1, :, 1, :end]
                attended = F.scaled_dot_product_attention(
                    q, keys, values, attn_mask=mask, enable_gqa=True
                )
            else:
                k, v = heads[:, self.heads : split], heads[:, split:]
                attended = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            x = x + _apply(block.o, attended.transpose(1, 2).reshape(1, tokens, -1))
            x = self._mlp(block, x, prompt=True)
        self.lengths[slot] = end
        return x

    def _reuse_prefix(self, slot: int, token_ids: list[int]) -> int:
        """Copy the remembered prefix's cache into `slot` as far as `token_ids` share it."""
        shared = min(_common_length(token_ids, self._prefix_ids), len(token_ids) - 1)
        if shared < MIN_SHARED_PREFIX:
            return 0
        for cache, prefix in zip(self.cache, self._prefix_cache, strict=True):
            cache[slot, :, :, :shared] = prefix[:, :, :shared]
        self.reused_tokens += shared
        return shared

    def _remember_prefix(self, slot: int, token_ids: list[int]) -> None:
        """Remember the start this prompt shares with the previous one, if it is longer
        than the prefix remembered: prompts built from one template share their start."""
        shared = min(_common_length(token_ids, self._previous_ids), len(token_ids))
        self._previous_ids = token_ids
        if shared < MIN_SHARED_PREFIX or shared <= _common_length(token_ids, self._prefix_ids):
            return
        self._prefix_ids = token_ids[:shared]
        self._prefix_cache = [cache[slot, :, :, :shared].clone() for cache in self.cache]

    @torch.inference_mode()
    def decode(self, tokens: list[int], banned: Sequence[Collection[int]] = ()) -> list[int]:
        """Feed one token to each of rows 0..len(tokens)-1; their greedy next tokens,
        never one of `banned[row]`.

        Small batched matmuls over the cache in place instead of scaled_dot_product_attention,
        which for one query per row spends more time setting up than computing. One row
        (one conversation, the common case) needs no mask and writes its cache by slicing.
        An int8 engine runs the layers as one TorchScript function (`decode_step`).
        """
        batch = len(tokens)
        lengths = self.lengths[:batch]
        self._ensure_capacity(max(lengths) + 1)
        span = max(lengths) + 1
        x = self.embed[tokens]  # (batch, hidden)
        positions = torch.tensor(lengths)
        rows = torch.arange(batch)
        mask: torch.Tensor | None = None
        if batch == 1:
            rotary = self.rotary[lengths[0]]
        else:
            rotary = self.rotary[positions].unsqueeze(1)  # (batch, 1, d/2): one per conversation
            # Row r sees its own positions 0..lengths[r] (the rest of the span is other rows').
            hidden = torch.arange(span).unsqueeze(0) > positions.unsqueeze(1)
            mask = torch.zeros(batch, self.kv_heads, 1, span)
            mask.masked_fill_(hidden.view(batch, 1, 1, span), -inf)
            mask = mask.view(batch * self.kv_heads, 1, span)
        hidden_states = None
        if self._scripted is not None:
            shape = [self.heads, self.kv_heads, self.head_dim, self.hidden]
            try:
                hidden_states = self._scripted(
                    x, *self._scripted_inputs, self.cache, rotary, mask, rows, positions,
                    span, shape, self.eps, self.scale, self._scripted_reduce_range,
                )  # fmt: skip
            except RuntimeError as exc:
                # Each layer rewrites this step's cache position from `x` again: the
                # Python loop can redo the whole step.
                log.warning("scripted decode step failed (%s); decoding op by op from now", exc)
                self._scripted = None
        if hidden_states is None:
            hidden_states = self._decode_layers(x, rotary, mask, rows, positions, span)
        x = hidden_states
        for row in range(batch):
            self.lengths[row] += 1
        logits = self._logits(x)
        for row, tokens_out in enumerate(banned):
            if tokens_out:
                logits[row, list(tokens_out)] = -inf
        return [int(token) for token in logits.argmax(dim=-1)]

    def _decode_layers(
        self,
        x: torch.Tensor,
        rotary: torch.Tensor,
        mask: torch.Tensor | None,
        rows: torch.Tensor,
        positions: torch.Tensor,
        span: int,
    ) -> torch.Tensor:
        """`decode`'s layers op by op from Python (fp32 engines, or no TorchScript); the
        same math as `decode_step._layers`. `mask` None: one row, at position span - 1."""
        batch = x.shape[0]
        groups, split = self.heads // self.kv_heads, self.heads + self.kv_heads
        grouped = (batch * self.kv_heads, span, self.head_dim)
        for layer, block in enumerate(self.blocks):
            heads = self._project(block, x)  # (batch, heads, head_dim)
            self._rotate_(heads[:, :split], rotary)
            cache = self.cache[layer]
            new = heads[:, self.heads :].view(batch, 2, self.kv_heads, self.head_dim)
            if mask is None:
                cache[0, :, :, span - 1] = new[0].transpose(0, 1)
            else:
                cache[rows, :, :, positions] = new.transpose(1, 2)
            keys = cache[:batch, :, 0, :span].reshape(grouped)  # views, no copy
            values = cache[:batch, :, 1, :span].reshape(grouped)
            q = heads[:, : self.heads].reshape(batch * self.kv_heads, groups, self.head_dim)
            if mask is None:
                scores = torch.bmm(q, keys.transpose(1, 2)).mul_(self.scale)
            else:
                scores = torch.baddbmm(mask, q, keys.transpose(1, 2), alpha=self.scale)
            attended = torch.bmm(scores.softmax(dim=-1), values).view(batch, -1)
            x = x + _apply(block.o, attended)
            x = self._mlp(block, x)
        return x

    @torch.inference_mode()
    def move(self, source: int, target: int) -> None:
        """Copy row `source`'s cache into row `target` (keeps active rows contiguous)."""
        length = self.lengths[source]
        for cache in self.cache:
            cache[target, :, :, :length] = cache[source, :, :, :length]
        self.lengths[target] = length
