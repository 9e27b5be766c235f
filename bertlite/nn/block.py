"""One Transformer layer.

Encoder layer: self-attention, then feed-forward.
Decoder layer (cross_attention=True): masked self-attention, cross-attention to the encoder, feed-forward.
Each sub-layer is wrapped in a residual connection and LayerNorm:
    post-LN (the original paper, BERT):  x = LayerNorm(x + Dropout(sublayer(x)))
    pre-LN  (GPT-2, stabler when deep):   x = x + Dropout(sublayer(LayerNorm(x)))
bias=False drops the bias of every linear layer and LayerNorm (ModernBERT). attn_norm=False leaves a pre-LN layer's
attention input unnormalised: ModernBERT's first layer, whose input the embedding LayerNorm has just normalised.
window: the span of local (sliding-window) self-attention (see ``MultiHeadAttention``); None: global.
"""

from __future__ import annotations

from typing import Callable

from torch import Tensor, nn

from bertlite.nn.attention import MultiHeadAttention
from bertlite.nn.feedforward import FeedForward


class TransformerBlock(nn.Module):
    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        activation: str = "gelu",
        norm_first: bool = False,
        layer_norm_eps: float = 1e-12,
        cross_attention: bool = False,
        bias: bool = True,
        alibi: bool = False,
        rope_theta: float | None = None,
        window: int | None = None,
        attn_norm: bool = True,
    ):
        super().__init__()
        if not (attn_norm or norm_first):
            raise ValueError("attn_norm=False needs norm_first=True: a post-LN layer normalises its output")
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, n_heads, attention_dropout, bias, alibi, rope_theta, window)
        # an Identity holds no weights: the layer's state dict has no self_attn_norm, as ModernBERT's layer 0
        self.self_attn_norm = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias) if attn_norm else nn.Identity()
        # cross-attention never rotates nor narrows: its keys are positions of another sequence (the encoder's)
        self.cross_attn = MultiHeadAttention(d_model, n_heads, attention_dropout, bias) if cross_attention else None
        self.cross_attn_norm = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias) if cross_attention else None
        self.feed_forward = FeedForward(d_model, d_ff, activation, dropout=0.0, bias=bias)
        self.feed_forward_norm = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def residual(self, x: Tensor, norm: nn.Module, sublayer: Callable[[Tensor], Tensor]) -> Tensor:
        if self.norm_first:
            return x + self.dropout(sublayer(norm(x)))
        return norm(x + self.dropout(sublayer(x)))

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        causal: bool = False,
        context: Tensor | None = None,
        context_mask: Tensor | None = None,
        cache: dict | None = None,
    ) -> Tensor:
        """x (B, T, C) -> (B, T, C). context (B, S, C): the encoder output a decoder layer attends to."""
        self_cache = None if cache is None else cache.setdefault("self", {})
        x = self.residual(x, self.self_attn_norm,
                          lambda h: self.self_attn(h, mask=mask, causal=causal, cache=self_cache))
        if self.cross_attn is not None:
            cross_cache = None if cache is None else cache.setdefault("cross", {})
            x = self.residual(
                x, self.cross_attn_norm,
                lambda h: self.cross_attn(h, context=context, mask=context_mask, cache=cross_cache)
            )
        return self.residual(x, self.feed_forward_norm, self.feed_forward)
