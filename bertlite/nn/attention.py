"""Scaled dot-product attention and multi-head attention (Vaswani et al., 2017, section 3.2).

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V

Two paths compute the same function:
- ``attention_reference``: the formula written out (scores, softmax, weighted sum of values).
  It also returns the attention weights, so it is the path used to look at attention.
- ``attention_fused``: ``torch.nn.functional.scaled_dot_product_attention``, the fused kernel
  (flash / memory-efficient / oneDNN), used for training and inference.
``attention_varlen`` is the fused kernel on a padding-free batch: sentences packed one after another, with
their boundaries (see ``bertlite.nn.packing``).

Masks are boolean and broadcast to (B, n_heads, T_q, T_k): True means "may attend". A bias (ALiBi's
distance penalty) is a float tensor that broadcasts alike and is added to the scores before the softmax.
Rotary positions (``bertlite.nn.rotary``) rotate the queries and keys of self-attention before either path.
Local (sliding-window) self-attention narrows every path to a band of keys (``bertlite.nn.local_attention``).
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bertlite.nn.local_attention import (
    attention_chunked,
    attention_chunked_padded,
    attention_flex,
    attention_flex_packed,
    chunk_for,
    local_packed_path,
    local_path,
    packed_documents,
    padded_block_mask,
    with_window,
)
from bertlite.nn.packing import PackedSequences
from bertlite.nn.positional import alibi_bias, alibi_slopes
from bertlite.nn.rotary import RotaryEmbedding

CPU_UPCAST_DTYPES = (torch.bfloat16, torch.float16)  # attention_fused computes these in fp32 on a CPU


def causal_mask(t_q: int, t_k: int, device: torch.device | None = None) -> Tensor:
    """(T_q, T_k) boolean mask: query i may attend to keys 0 .. i + (T_k - T_q).

    The offset aligns the last query with the last key, so it also holds when the queries are the
    newest positions of a longer sequence whose earlier keys come from a cache.
    """
    return torch.ones(t_q, t_k, dtype=torch.bool, device=device).tril(diagonal=t_k - t_q)


def attention_reference(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, causal: bool = False, dropout_p: float = 0.0,
    bias: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """q (B, h, T_q, d_k), k and v (B, h, T_k, d_k) -> output (B, h, T_q, d_k), weights (B, h, T_q, T_k)."""
    d_k = q.size(-1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(d_k)  # (B, h, T_q, T_k)
    if bias is not None:
        scores = scores + bias
    if causal:
        scores = scores.masked_fill(~causal_mask(q.size(-2), k.size(-2), q.device), float("-inf"))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(dim=-1)  # each query's distribution over the keys
    if dropout_p > 0.0:
        weights = F.dropout(weights, dropout_p)
    return weights @ v, weights  # weighted sum of values: (B, h, T_q, d_k)


def attention_fused(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, causal: bool = False, dropout_p: float = 0.0,
    bias: Tensor | None = None,
) -> Tensor:
    """Same contract as ``attention_reference``, through PyTorch's fused kernel; returns the output only."""
    t_q, t_k = q.size(-2), k.size(-2)
    if causal and (mask is not None or t_q != t_k or bias is not None):
        # SDPA's is_causal aligns the top-left corner and refuses an extra mask: fold both into one mask.
        both = causal_mask(t_q, t_k, q.device)
        mask = both if mask is None else mask & both
        causal = False
    if bias is not None:  # SDPA takes one mask: a float one is added to the scores, -inf where none may attend
        mask = bias if mask is None else bias.masked_fill(~mask, float("-inf"))
    if q.device.type == "cpu" and q.dtype in CPU_UPCAST_DTYPES:
        # PyTorch's CPU flash-attention kernel is slower in bf16 than in fp32 (16 sequences x 4 heads x 128 x 64,
        # forward + backward, one AVX512-BF16 core: 28 ms against 16 ms; equal at 512 tokens): run it in fp32
        with torch.autocast("cpu", enabled=False):
            out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(),
                                                 attn_mask=_as_mask(mask, torch.float32), dropout_p=dropout_p,
                                                 is_causal=causal)
        return out.to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=_as_mask(mask, q.dtype), dropout_p=dropout_p,
                                          is_causal=causal)


def attention_varlen(q: Tensor, k: Tensor, v: Tensor, packed: PackedSequences, dropout_p: float = 0.0) -> Tensor:
    """q, k, v (N, h, d_k): the tokens of B sentences one after another -> (N, h, d_k); each sentence attends
    within itself. Nested (jagged) tensors carry the boundaries to SDPA, which has a variable-length kernel on
    CUDA (flash / memory-efficient attention)."""
    def nest(x: Tensor) -> Tensor:  # (N, h, d_k) -> (B, h, L_i, d_k)
        nested = torch.nested.nested_tensor_from_jagged(x.contiguous(), packed.offsets, max_seqlen=packed.max_len)
        return nested.transpose(1, 2)

    out = F.scaled_dot_product_attention(nest(q), nest(k), nest(v), dropout_p=dropout_p)
    return out.transpose(1, 2).values()  # (B, h, L_i, d_k) -> (N, h, d_k)


def _as_mask(mask: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """SDPA wants a boolean mask, or a float one in the queries' dtype."""
    return mask if mask is None or mask.dtype == torch.bool else mask.to(dtype)


SEPARATE = ("q_proj", "k_proj", "v_proj")  # the projections' names before they were stacked into qkv_proj


def fuse_qkv(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A state dict with separate ``q_proj``/``k_proj``/``v_proj`` weights (checkpoints written before the fused
    projection; Hugging Face's query/key/value) -> the same with one stacked ``qkv_proj`` per attention layer."""
    out = dict(state)
    for name in [n for n in state if n.split(".")[-2:-1] == ["q_proj"]]:
        stem, kind = name.rsplit("q_proj.", 1)
        out[f"{stem}qkv_proj.{kind}"] = torch.cat([out.pop(f"{stem}{p}.{kind}") for p in SEPARATE])
    return out


def split_qkv(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The inverse of ``fuse_qkv``: each ``qkv_proj`` back into ``q_proj``, ``k_proj`` and ``v_proj`` (for export)."""
    out = dict(state)
    for name in [n for n in state if n.split(".")[-2:-1] == ["qkv_proj"]]:
        stem, kind = name.rsplit("qkv_proj.", 1)
        for p, part in zip(SEPARATE, out.pop(name).chunk(3)):
            out[f"{stem}{p}.{kind}"] = part
    return out


class MultiHeadAttention(nn.Module):
    """h heads attend in parallel, each in its own d_k = d_model / h dimensional subspace.

    Queries, keys and values are learned linear projections of the input (self-attention) or,
    for cross-attention, queries come from ``x`` and keys and values from ``context``.
    Set ``record_weights = True`` to run the reference path and keep ``attention_weights``.
    A ``PackedSequences`` in place of the mask means x holds only the real tokens of a padded batch, (N, C).
    alibi=True (self-attention only) adds ALiBi's distance penalty to every head's scores.
    rope_theta (self-attention only) rotates queries and keys by their positions (rotary embeddings with that
    base); None: no rotation. Positions are absolute: a cached prefix of n tokens puts the new ones at n, n+1, ..
    window (self-attention only): local attention, each query sees the keys within w // 2 positions either side,
    or, causal, the w newest up to itself (``bertlite.nn.local_attention``); None: global attention.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0, bias: bool = True, alibi: bool = False,
                 rope_theta: float | None = None, window: int | None = None):
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        if window is not None and window < 1:
            raise ValueError(f"window={window}: a local attention window is a whole number >= 1 (None: global)")
        self.n_heads = n_heads
        self.d_k = d_model // n_heads
        self.d_model = d_model
        # W^Q, W^K and W^V (each d_model x d_model, all heads at once) stacked into one (3 d_model x d_model) matrix:
        # self-attention projects queries, keys and values in one matrix multiply instead of three
        self.qkv_proj = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)  # W^O
        self.dropout = dropout
        self.alibi = alibi
        if alibi:
            self.register_buffer("alibi_slopes", alibi_slopes(n_heads), persistent=False)  # (h,)
        self.rotary = None if rope_theta is None else RotaryEmbedding(self.d_k, rope_theta)
        self.window = window
        self.record_weights = False
        self.attention_weights: Tensor | None = None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints written before the stacked projection hold q_proj, k_proj and v_proj: stack them on load
        if f"{prefix}q_proj.weight" in state_dict:
            own = {k: state_dict.pop(k) for k in list(state_dict) if k.startswith(prefix)
                   and k[len(prefix):].split(".")[0] in SEPARATE}
            state_dict.update(fuse_qkv(own))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _project(self, x: Tensor, rows: slice) -> Tensor:
        """x times some rows of the stacked matrix: [:C] are W^Q, [C:2C] W^K, [2C:] W^V."""
        w, b = self.qkv_proj.weight, self.qkv_proj.bias
        return F.linear(x, w[rows], None if b is None else b[rows])

    def project(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Queries from x; keys and values from x (self-attention, one matrix multiply) or from the context
        (cross-attention). Each (B, T, C)."""
        if context is None:
            return self.qkv_proj(x).split(self.d_model, dim=-1)  # (B, T, 3C) -> 3 x (B, T, C)
        q = self._project(x, slice(0, self.d_model))
        k, v = self._project(context, slice(self.d_model, None)).split(self.d_model, dim=-1)
        return q, k, v

    def split_heads(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.n_heads, self.d_k).transpose(1, 2)  # (B, T, C) -> (B, h, T, d_k)

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        mask: Tensor | PackedSequences | None = None,
        causal: bool = False,
        cache: dict | None = None,
    ) -> Tensor:
        """x (B, T, C) -> (B, T, C).

        cache: a dict this layer owns across decoding steps. Self-attention appends the new keys and
        values to it; cross-attention computes the context's keys and values once and reuses them.
        """
        if isinstance(mask, PackedSequences):
            return self.forward_packed(x, mask)
        b, t, c = x.shape
        if context is not None and cache is not None and "k" in cache:
            q = self.split_heads(self._project(x, slice(0, self.d_model)))  # (B, h, T, d_k)
            k, v = cache["k"], cache["v"]  # cross-attention: the encoder output does not change
        else:
            q, k, v = (self.split_heads(p) for p in self.project(x, context))  # (B, h, T, d_k), (B, h, T_k, d_k) x 2
            if self.rotary is not None and context is None:  # the cache holds keys already rotated
                past = cache["k"].size(2) if cache is not None and "k" in cache else 0
                q, k = self.rotary(q, k, torch.arange(past, past + t, device=x.device))  # positions (T,)
            if cache is not None:
                if context is None and "k" in cache:  # self-attention: extend the cached prefix
                    k, v = torch.cat([cache["k"], k], dim=2), torch.cat([cache["v"], v], dim=2)
                cache["k"], cache["v"] = k, v
        bias = alibi_bias(self.alibi_slopes, t, k.size(2)) if self.alibi else None  # (h, T, T_k)
        out = self.attend(q, k, v, mask, causal, bias)
        out = out.transpose(1, 2).reshape(b, t, c)  # (B, h, T, d_k) -> (B, T, C): concatenate the heads
        return self.out_proj(out)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, causal: bool = False,
               bias: Tensor | None = None) -> Tensor:
        """q (B, h, T, d_k), k and v (B, h, T_k, d_k) -> (B, h, T, d_k), through the reference path when the
        weights are recorded, else the fused kernel. A local layer narrows either to its band, or attends chunk by
        chunk, or through FlexAttention (``local_path`` picks)."""
        dropout_p = self.dropout if self.training else 0.0
        if self.window is not None:
            path = local_path(q, k.size(-2), mask, self.window, causal, dropout_p, bias, self.record_weights)
            if path == "flex":
                return attention_flex(q, k, v, padded_block_mask(mask, q.size(-2), self.window, causal, q.device))
            if path == "chunked":
                return attention_chunked_padded(q, k, v, mask, self.window, causal,
                                                functools.partial(attention_fused, dropout_p=dropout_p),
                                                chunk_for(self.window))
            mask = with_window(mask, q.size(-2), k.size(-2), self.window, causal, q.device)
            causal = False  # the band holds the causal rule too
        if self.record_weights:
            out, self.attention_weights = attention_reference(q, k, v, mask, causal, dropout_p, bias)
            return out
        return attention_fused(q, k, v, mask, causal, dropout_p, bias)

    def packed_path(self, packed: PackedSequences, device: torch.device, dropout_p: float) -> str:
        """How attention runs on a padding-free batch: over the packed tokens ("nested", or for a local layer
        "flex" or "chunked"), or "repad": over the re-padded batch (the reference path, ALiBi, a CPU's global
        attention, short sentences under local attention)."""
        if self.alibi or self.record_weights:
            return "repad"
        if self.window is None:
            return "nested" if packed.nested else "repad"
        path = local_packed_path(packed, self.window, self.d_k, device, dropout_p)
        return "repad" if path == "band" else path

    def forward_packed(self, x: Tensor, packed: PackedSequences) -> Tensor:
        """Self-attention on a padding-free batch: x (N, C), the real tokens of B sentences -> (N, C)."""
        n, c = x.shape
        dropout_p = self.dropout if self.training else 0.0
        path = self.packed_path(packed, x.device, dropout_p)
        if path != "repad":
            q, k, v = (p.view(n, self.n_heads, self.d_k) for p in self.project(x))  # 3 x (N, h, d_k)
            if self.rotary is not None:  # each token at its column of the padded batch: (N,) -> (N, 1), per head
                q, k = self.rotary(q, k, packed.positions()[:, None])
            if path == "flex":
                out = attention_flex_packed(q, k, v, packed, self.window)
            elif path == "chunked":
                out = attention_chunked(q, k, v, packed_documents(packed, x.device), self.window, False,
                                        functools.partial(attention_fused, dropout_p=dropout_p),
                                        chunk_for(self.window))
            else:
                out = attention_varlen(q, k, v, packed, dropout_p)
            return self.out_proj(out.reshape(n, c))  # concatenate the heads
        # back to (B, T, 3C) for attention alone: the projections run on the real tokens only
        qkv = packed.pad(self.qkv_proj(x))
        q, k, v = (self.split_heads(p) for p in qkv.split(self.d_model, dim=-1))  # 3 x (B, h, T, d_k)
        b, _, t, _ = q.shape
        if self.rotary is not None:
            q, k = self.rotary(q, k, torch.arange(t, device=x.device))  # positions (T,), as on the padded path
        bias = alibi_bias(self.alibi_slopes, t, t) if self.alibi else None  # (h, T, T)
        out = self.attend(q, k, v, packed.key_mask, bias=bias).transpose(1, 2).reshape(b, t, c)  # concatenate heads
        return self.out_proj(packed.pack(out))  # (N, C)
