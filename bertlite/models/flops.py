"""Floating-point operations of a training step, from the model's shape (for throughput and MFU).

A matrix multiply of an (m, k) by a (k, n) matrix is 2 m k n FLOPs; backward costs twice forward, so a
weight matrix of P parameters applied to one token costs 6 P FLOPs per training step (Kaplan et al., 2020).
Attention adds two (T, T)-sized products per head, Q K^T and weights @ V: 4 T^2 d_model FLOPs per layer and
sequence forward, 12 T^2 d_model with backward (PaLM, Chowdhery et al., 2022, appendix B). Counted:

    6 * (matrix weights of the layers) * tokens       every position goes through every layer
  + 12 * layers * d_model * T * K * sequences         attention scores and weighted values (causal: full square),
                                                      K keys per query: T, or a local layer's window
  + 6 * (head matrices) * predicted positions         MLM / LM head, only where logits are computed

A gated feed-forward (GLU) has three d_model x d_ff matrices, not two. A local layer (sliding window w) scores
each query against min(T, w + 1) keys: its attention work grows with T w, not T^2.

Embedding look-ups, LayerNorm, softmax, biases and the optimizer are left out (they are not matrix
multiplies). With dynamic padding the padded shape is counted: it is the work the hardware does.
"""

from __future__ import annotations

from bertlite.nn.feedforward import GATED
from bertlite.nn.stack import is_local_layer


def layer_weights(d_model: int, d_ff: int, cross_attention: bool = False, gated: bool = False) -> int:
    """Matrix parameters of one Transformer layer: Q, K, V, O (4 d^2), the feed-forward (2 d d_ff; gated: 3 d d_ff),
    and for a decoder layer of the encoder-decoder, cross-attention's four more."""
    attention = 4 * d_model * d_model
    return attention * (2 if cross_attention else 1) + (3 if gated else 2) * d_model * d_ff


def stack_flops(n_layers: int, d_model: int, d_ff: int, tokens: int, seq_len: int, sequences: int,
                cross_len: int = 0, gated: bool = False, local_layers: int = 0, window: int = 0) -> float:
    """Forward + backward FLOPs of ``n_layers`` layers on ``sequences`` sequences of ``seq_len`` positions
    (``tokens`` = sequences * seq_len); ``cross_len`` > 0 adds cross-attention to a context of that length.
    ``local_layers`` of the layers attend within a sliding ``window``; the others attend to every position."""
    matmul = 6 * layer_weights(d_model, d_ff, cross_len > 0, gated) * tokens
    keys = [seq_len] * (n_layers - local_layers) + [min(seq_len, window + 1)] * local_layers  # keys per query
    attention = sum(12 * d_model * seq_len * (k + cross_len) * sequences for k in keys)
    return float(n_layers * matmul + attention)


def _stack_shape(config) -> dict:
    """The ``stack_flops`` arguments that the feed-forward's kind and the local layers add."""
    local_layers = sum(is_local_layer(i, config.local_attention, config.global_attn_every_n_layers)
                       for i in range(config.n_layers))
    return dict(gated=config.activation in GATED, local_layers=local_layers, window=config.local_attention)


def training_flops(config, batch_size: int, seq_len: int, predicted: int | None = None,
                   target_len: int | None = None) -> float:
    """FLOPs of one training step of a bertlite model (config: a ModelConfig) on a (batch_size, seq_len) batch.

    predicted: positions whose vocabulary logits are computed (MLM: the masked positions; None: every
    position, as a causal LM or a full-logits MLM). target_len: the decoder's length (encoder-decoder).
    Pass predicted=0 for classification (its head is negligible).
    """
    d, ff, vocab = config.d_model, config.d_ff, config.vocab_size
    if config.arch == "transformer":
        t = target_len if target_len is not None else seq_len
        flops = stack_flops(config.n_layers, d, ff, batch_size * seq_len, seq_len, batch_size, **_stack_shape(config))
        flops += stack_flops(config.n_decoder_layers, d, ff, batch_size * t, t, batch_size, cross_len=seq_len,
                             **_stack_shape(config))
        head_positions = batch_size * t if predicted is None else predicted
        return flops + 6.0 * d * vocab * head_positions
    flops = stack_flops(config.n_layers, d, ff, batch_size * seq_len, seq_len, batch_size, **_stack_shape(config))
    head_positions = batch_size * seq_len if predicted is None else predicted
    head = d * vocab + (d * d if config.arch == "bert" else 0)  # BERT's MLM head transforms first (dense d x d)
    return flops + 6.0 * head * head_positions
