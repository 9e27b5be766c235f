"""Local (sliding-window) self-attention: each query attends only to the keys near it.

The band rule (``band_allows``), the one rule every path applies:
- bidirectional (an encoder), window w: query i sees key j iff |i - j| <= w // 2. This is ModernBERT's
  convention: ``local_attention=128`` is 64 keys on either side, transformers' ``sliding_window = w // 2`` with
  its inclusive ``abs(q_idx - kv_idx) <= sliding_window``.
- causal (a decoder), window w: i - w < j <= i, the w newest keys, the query's own included (transformers'
  ``sliding_window_overlay`` and Mistral's convention).
Positions are absolute: the T_q queries of a cached decoding step are positions T_k - T_q .. T_k - 1.

A padding query is never left without keys: on the band and FlexAttention paths it keeps every real key, as under
global attention; on the chunked path it sees its whole slab (padded batch) or the last sentence's keys in its slab
(the queries that fill up the last chunk of a padding-free batch). Nothing reads its output, but a query with no key at
all gives NaN on the reference path, and NaN values at a padding position spread to every query of the next layer
(zero weight times NaN is NaN).

Three ways to apply the rule (``local_path`` picks one):
- ``with_window``: a boolean (T_q, T_k) band combined with the key mask, for ``attention_reference`` and
  ``attention_fused``: the reference path, ALiBi's bias, a cached decoding step (few queries), short sequences.
- ``attention_chunked`` / ``attention_chunked_padded``: chunks of queries, each against the slab of keys it
  reaches, in one call of the fused kernel (``attend_rows``). No (T, T) mask and less work than global attention
  once T is over twice the slab; runs anywhere, also with attention dropout. The CPU's path. It is written for a
  CPU shared with other work, where each large operation waits for its threads: the slabs are views of one
  padded copy of the keys (and one of the values), the queries are not copied at all, and a batch without
  padding takes a kept additive mask (``row_bias``). At 512 tokens, window 128, 8 sequences of 4 heads of 64, one
  thread: 16 ms against 31 ms for global attention and 35 ms for the band mask (at 2048 tokens: 95 against
  510 ms). Below twice the slab (320 tokens at window 128) the band mask is the faster one and is taken.
- ``attention_flex`` with a ``BlockMask`` (CUDA): ``torch.nn.attention.flex_attention`` skips the 128 x 128 blocks
  that lie outside the band, and no (T_q, T_k) mask is built: the block mask holds one entry per block pair, made
  by a compiled kernel that evaluates the rule block by block. On the padding-free path the document (sentence)
  ids of the packed tokens keep each sentence to itself. FlexAttention has no dropout on the attention weights, so
  a layer that trains with attention dropout > 0 takes the chunked path (or, for a short sequence, the band).
"""

from __future__ import annotations

import functools
from typing import Callable

import torch
from torch import Tensor
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention

from bertlite.nn.packing import PackedSequences

# Devices on which local attention goes through FlexAttention. FlexAttention also runs on a CPU, but only unfused
# there (it builds the whole score matrix): tests add "cpu" to compare it with the other paths.
FLEX_DEVICES = ("cuda",)


def band_allows(q_pos: Tensor, k_pos: Tensor, window: int, causal: bool) -> Tensor:
    """Whether the query at absolute position q_pos may see the key at k_pos (broadcasting integer tensors)."""
    distance = q_pos - k_pos
    if causal:
        return (distance >= 0) & (distance < window)
    return distance.abs() <= window // 2


def keep_padding_queries(band: Tensor, key_real: Tensor, query_real: Tensor) -> Tensor:
    """The band and the key mask, except that a padding query sees every real key (see the module docstring)."""
    return key_real & (band | ~query_real)


def local_window_mask(t_q: int, t_k: int, window: int, causal: bool, device: torch.device | None = None) -> Tensor:
    """(T_q, T_k) boolean band: True where query i (at position i + T_k - T_q) may see key j."""
    q_pos = torch.arange(t_k - t_q, t_k, device=device)[:, None]  # (T_q, 1)
    return band_allows(q_pos, torch.arange(t_k, device=device), window, causal)


def with_window(mask: Tensor | None, t_q: int, t_k: int, window: int, causal: bool,
                device: torch.device | None = None) -> Tensor:
    """A boolean mask (None, or broadcasting to (B, h, T_q, T_k)) narrowed to the band: (T_q, T_k) without a
    mask, else (B, 1, T_q, T_k). A key mask (B, 1, 1, T_k) also marks the queries, the last T_q keys, as padding."""
    band = local_window_mask(t_q, t_k, window, causal, device)
    if mask is None:
        return band
    if mask.size(-2) == 1 and mask.size(-1) == t_k:
        query_real = mask[..., t_k - t_q:].transpose(-1, -2)  # (B, 1, T_q, 1)
        return keep_padding_queries(band, mask, query_real)
    return mask & band


def reach(window: int, causal: bool) -> tuple[int, int]:
    """How many positions before and after its own a query's band reaches."""
    return (window - 1, 0) if causal else (window // 2, window // 2)


def chunking_pays(t: int, window: int, causal: bool, chunk: int) -> bool:
    """Whether chunked attention does less work than one full (T, T) attention: each chunk of ``chunk`` queries
    against chunk + reach keys, against T keys for every query."""
    before, after = reach(window, causal)
    return 2 * (chunk + before + after) <= t


def flat_rows(x: Tensor, t_pad: int, front: int = 0, back: int = 0) -> Tensor:
    """x (B, T, ...) -> (front + B * t_pad + back, ...): the rows one after another, each filled up with zeros to
    t_pad, and zeros before and after them. One copy at most (none where x already lies so), since on a shared CPU
    every large operation costs a wait for its threads; the zeros at the ends are too few to be split."""
    b, t = x.shape[:2]
    if t_pad == t and front == back == 0:
        return x.flatten(0, 1)  # a view where the rows lie one after another
    out = x.new_empty(front + b * t_pad + back, *x.shape[2:])
    out[:front].zero_()
    out[front + b * t_pad:].zero_()
    rows = out[front:front + b * t_pad].unflatten(0, (b, t_pad))
    rows[:, t:].zero_()
    rows[:, :t].copy_(x)
    return out


def slab_views(x: Tensor, chunk: int, slab: int) -> Tensor:
    """x (before + n_chunks * chunk + after, h, d), contiguous -> (n_chunks, h, slab, d): chunk c's slab is rows
    c * chunk .. c * chunk + slab - 1, overlapping views of x that the fused kernel reads as they are."""
    rows, h, d = x.shape
    n_chunks = (rows - slab) // chunk + 1
    return x.as_strided((n_chunks, h, slab, d), (chunk * h * d, d, h * d, 1))


def row_band(t: int, window: int, causal: bool, chunk: int, device: torch.device) -> Tensor:
    """(chunks, chunk, slab) boolean: which keys of its slab each query of a row of T tokens, filled up to whole
    chunks, sees: the band, inside the row. A query past T (filling) sees its whole slab (module docstring)."""
    before, after = reach(window, causal)
    start = torch.arange(0, t, chunk, device=device)[:, None, None]  # (chunks, 1, 1): each chunk's first query
    q_pos = start + torch.arange(chunk, device=device)[:, None]  # (chunks, chunk, 1)
    k_pos = start + torch.arange(chunk + before + after, device=device) - before  # (chunks, 1, slab)
    inside = (k_pos >= 0) & (k_pos < t)
    return (band_allows(q_pos, k_pos, window, causal) & inside) | (q_pos >= t)


@functools.lru_cache(maxsize=4)
def _cached_row_bias(b: int, t: int, window: int, causal: bool, chunk: int, device: torch.device,
                     dtype: torch.dtype) -> Tensor:
    with torch.inference_mode(False):  # a tensor made under inference mode could not be saved for a backward pass
        allowed = row_band(t, window, causal, chunk, device).repeat(b, 1, 1)[:, None]
        return torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill_(~allowed, float("-inf"))


def row_bias(b: int, t: int, window: int, causal: bool, chunk: int, device: torch.device,
             dtype: torch.dtype) -> Tensor:
    """(B * chunks, 1, chunk, slab): ``row_band`` for B full rows as an additive mask (0 or -inf), the kernel's own
    form. The same for every layer and batch of this shape: kept (the last few shapes), so that a batch without
    padding builds no mask at all."""
    if torch.compiler.is_compiling():
        allowed = row_band(t, window, causal, chunk, device).repeat(b, 1, 1)[:, None]
        return torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(~allowed, float("-inf"))
    return _cached_row_bias(b, t, window, causal, chunk, device, dtype)


def attend_rows(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, window: int, causal: bool,
                attend: Callable[..., Tensor], chunk: int) -> Tensor:
    """q, k, v (B, T, h, d_k) -> (B, T, h, d_k): each chunk of ``chunk`` queries of a row against the slab of keys
    its band reaches, chunk + window keys, in one call of ``attend(q, k, v, mask)`` on (B * chunks, h, chunk, slab)
    with mask (B * chunks, 1 or h, chunk, slab) over the rows one after another. A slab runs past its row into the
    next row's keys (or zeros at the ends), which the mask leaves out."""
    b, t, h, d = q.shape
    before, after = reach(window, causal)
    t_pad = -(-t // chunk) * chunk
    slab = chunk + before + after
    queries = flat_rows(q, t_pad).unflatten(0, (-1, chunk)).transpose(1, 2)  # (B * chunks, h, chunk, d_k)
    keys, values = (slab_views(flat_rows(x, t_pad, before, after), chunk, slab) for x in (k, v))
    out = attend(queries, keys, values, mask)  # (B * chunks, h, chunk, d_k)
    return out.transpose(1, 2).reshape(b, t_pad, h, d)[:, :t]


def attention_chunked(q: Tensor, k: Tensor, v: Tensor, document: Tensor, window: int, causal: bool,
                      attend: Callable[..., Tensor], chunk: int) -> Tensor:
    """q, k, v (N, h, d_k), the tokens of one or more documents one after another -> (N, h, d_k); document (N,)
    each token's document, which a slab may run past. T / (chunk + window) times less work than global attention
    over a document of T tokens, and no (T, T) mask. A query past N (filling the last chunk) sees the last
    document's keys in its slab, among them token N - 1, so that it has some."""
    n = q.size(0)
    before, after = reach(window, causal)
    t_pad = -(-n // chunk) * chunk
    query_document = flat_rows(document[None], t_pad)  # (N_pad,): the filling is document 0 ...
    query_document[n:] = document[-1]  # ... made the last one
    key_document = flat_rows(document[None] + 1, t_pad, before, after) - 1  # -1 at the ends: no document's
    same = (query_document.view(-1, chunk)[:, :, None]
            == key_document.as_strided((t_pad // chunk, 1, chunk + before + after), (chunk, 0, 1)))
    allowed = row_band(n, window, causal, chunk, q.device) & same  # (chunks, chunk, slab)
    return attend_rows(q[None], k[None], v[None], allowed[:, None], window, causal, attend, chunk)[0]


def has_padding(key_mask: Tensor | None) -> bool:
    """Whether a key mask may leave keys out. Looked at only on a CPU outside torch.compile, where reading it
    costs nothing: elsewhere a mask counts as padding."""
    if key_mask is None:
        return False
    return key_mask.device.type != "cpu" or torch.compiler.is_compiling() or not bool(key_mask.all())


def attention_chunked_padded(q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None, window: int, causal: bool,
                             attend: Callable[..., Tensor], chunk: int) -> Tensor:
    """``attend_rows`` on a padded batch: q, k, v (B, h, T, d_k), key_mask (B, 1, 1, T) or None -> (B, h, T, d_k).
    Without padding (no key mask, or on a CPU one that is all True) the mask is ``row_bias``, built once; with
    padding a padding key is left out and a padding query sees its whole slab."""
    b, h, t, d = q.shape
    mask_dtype = torch.float32 if q.device.type == "cpu" else q.dtype  # the CPU kernel computes in fp32
    bias = row_bias(b, t, window, causal, chunk, q.device, mask_dtype)
    if has_padding(key_mask):
        before, after = reach(window, causal)
        t_pad = -(-t // chunk) * chunk
        real = key_mask[:, 0, 0, :]  # (B, T)
        key_real = slab_views(flat_rows(real[..., None, None], t_pad, before, after), chunk, bias.size(-1))
        query_real = flat_rows(real, t_pad).view(-1, 1, chunk, 1)  # (B * chunks, 1, chunk, 1)
        allowed = key_real.view(-1, 1, 1, bias.size(-1)) | ~query_real  # (B * chunks, 1, chunk, slab)
        bias = torch.where(allowed, bias, float("-inf"))
    out = attend_rows(*(x.transpose(1, 2) for x in (q, k, v)), bias, window, causal, attend, chunk)
    return out.transpose(1, 2)  # (B, T, h, d_k) -> (B, h, T, d_k)


def packed_documents(packed: PackedSequences, device: torch.device) -> Tensor:
    """(N,) the sentence of each packed token, found without a host sync."""
    rows = torch.arange(packed.index.numel(), device=device)
    return torch.searchsorted(packed.offsets[1:], rows, right=True)


def is_key_mask(mask: Tensor) -> bool:
    """A (B, 1, 1, T_k) mask: one row of keys for every query and head."""
    return mask.dim() == 4 and mask.size(1) == 1 and mask.size(2) == 1


def chunk_for(window: int) -> int:
    """Queries per chunk of ``attend_rows``: window // 4, from 16 to 64. Small chunks waste the least work on keys
    outside the band, large ones make fewer, larger kernel calls: at 512 tokens, window 128 (8 sequences, 4 heads of
    64, one CPU thread), chunks of 16, 32, 64, 128 took 16, 16, 18, 22 ms against 30 ms for global attention."""
    return min(64, max(16, window // 4))


def flex_suits(device: torch.device, d_k: int, dropout_p: float) -> bool:
    """Whether FlexAttention takes this attention: on FLEX_DEVICES, heads of 16 or more (its CUDA kernel's least),
    and no attention dropout, which it does not have."""
    return device.type in FLEX_DEVICES and d_k >= 16 and dropout_p == 0.0


def local_path(q: Tensor, t_k: int, mask: Tensor | None, window: int, causal: bool, dropout_p: float,
               bias: Tensor | None, record_weights: bool) -> str:
    """How a padded batch's local attention runs: "flex" (FlexAttention, where ``flex_suits``), "chunked" (where
    chunks do less work than the whole sequence), else "band" (the band mask: the reference path, ALiBi's bias, a
    cached decoding step with its few queries, a short sequence)."""
    plain = q.size(-2) == t_k and (mask is None or is_key_mask(mask)) and bias is None and not record_weights
    if plain and flex_suits(q.device, q.size(-1), dropout_p):
        return "flex"
    if plain and chunking_pays(t_k, window, causal, chunk_for(window)):
        return "chunked"
    return "band"


def local_packed_path(packed: PackedSequences, window: int, d_k: int, device: torch.device,
                      dropout_p: float) -> str:
    """How a padding-free batch's local attention runs: "flex", "chunked" (over the packed tokens, where chunks do
    less work than the longest sentence) or "band" (over the re-padded batch)."""
    if flex_suits(device, d_k, dropout_p):
        return "flex"
    if chunking_pays(packed.max_len, window, False, chunk_for(window)):
        return "chunked"
    return "band"


def padded_block_mask(key_mask: Tensor | None, t: int, window: int, causal: bool,
                      device: torch.device) -> BlockMask:
    """The band over a padded batch of T positions; key_mask (B, 1, 1, T) True at real tokens, or None. Built at
    every call: a key mask is a plain tensor, with nowhere to keep it for the other layers (a padding-free batch
    keeps its own, see ``attention_flex_packed``)."""
    if key_mask is None:
        def mask_mod(b, h, q_idx, kv_idx):
            return band_allows(q_idx, kv_idx, window, causal)
        return create_block_mask(mask_mod, None, None, t, t, device=device, _compile=device.type == "cuda")
    real = key_mask[:, 0, 0, :]  # (B, T)

    def padded_mask_mod(b, h, q_idx, kv_idx):
        return keep_padding_queries(band_allows(q_idx, kv_idx, window, causal), real[b, kv_idx], real[b, q_idx])
    return create_block_mask(padded_mask_mod, real.size(0), None, t, t, device=device,
                             _compile=device.type == "cuda")


def packed_block_mask(packed: PackedSequences, window: int, device: torch.device) -> BlockMask:
    """The band over the N packed tokens of a padding-free batch, each sentence kept to itself (bidirectional).
    Within a sentence the packed rows are consecutive, so the distance of two rows is that of their positions."""
    n = packed.index.numel()
    document = packed_documents(packed, device)  # (N,)

    def mask_mod(b, h, q_idx, kv_idx):
        return (document[q_idx] == document[kv_idx]) & band_allows(q_idx, kv_idx, window, False)
    return create_block_mask(mask_mod, None, None, n, n, device=device, _compile=device.type == "cuda")


@functools.cache
def _compiled_flex_attention():
    # compiled once per process; FlexAttention only fuses (and skips masked blocks) when compiled
    return torch.compile(flex_attention)


def attention_flex(q: Tensor, k: Tensor, v: Tensor, block_mask: BlockMask) -> Tensor:
    """q, k, v (B, h, T, d_k) -> (B, h, T, d_k): softmax(q k^T / sqrt(d_k)) v over the block mask's pairs."""
    run = _compiled_flex_attention() if q.is_cuda else flex_attention
    return run(q, k, v, block_mask=block_mask)


def attention_flex_packed(q: Tensor, k: Tensor, v: Tensor, packed: PackedSequences, window: int) -> Tensor:
    """q, k, v (N, h, d_k), the packed tokens -> (N, h, d_k). The block mask is built once per batch and window,
    and kept on ``packed`` for the batch's other local layers."""
    key = ("local", window)
    if key not in packed.block_masks:
        packed.block_masks[key] = packed_block_mask(packed, window, q.device)
    out = attention_flex(*(x.transpose(0, 1)[None] for x in (q, k, v)), packed.block_masks[key])  # (1, h, N, d_k)
    return out[0].transpose(0, 1)  # (N, h, d_k)
