"""Input embeddings: token + position (+ token type / segment), then LayerNorm and dropout as in BERT.
With ALiBi or rotary positions there is no position term: attention sees positions itself."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from bertlite.nn.positional import positional_encoding


class TransformerEmbeddings(nn.Module):
    """input_ids (B, T) -> (B, T, d_model).

    type_vocab_size > 0 adds segment embeddings (sentence A / B); norm=True adds BERT's LayerNorm;
    scale=True multiplies token embeddings by sqrt(d_model), as the original Transformer does.
    norm_bias=False: a LayerNorm without bias (bias-free models, as ModernBERT).
    position_offset > 0 shifts learned positions: token i reads row i + offset of a table of max_len + offset rows
    (RoBERTa counts positions from padding_idx + 1, so its table has 514 rows for 512 tokens).
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        max_len: int,
        position: str = "learned",
        type_vocab_size: int = 0,
        norm: bool = True,
        scale: bool = False,
        layer_norm_eps: float = 1e-12,
        dropout: float = 0.0,
        pad_token_id: int = 0,
        position_offset: int = 0,
        norm_bias: bool = True,
    ):
        super().__init__()
        self.token = nn.Embedding(vocab_size, d_model, padding_idx=pad_token_id)
        self.position = positional_encoding(position, max_len + position_offset, d_model)
        self.token_type = nn.Embedding(type_vocab_size, d_model) if type_vocab_size > 0 else None
        self.norm = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=norm_bias) if norm else None
        self.dropout = nn.Dropout(dropout)
        self.scale = math.sqrt(d_model) if scale else 1.0
        self.max_len = max_len
        self.position_offset = position_offset

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None = None, start: int = 0) -> Tensor:
        """start: position of the first token, > 0 when earlier tokens sit in a key/value cache."""
        t = input_ids.size(1)
        if self.position is not None and start + t > self.max_len:  # rotary and ALiBi have no table to run out of
            raise ValueError(f"sequence of {start + t} tokens is longer than max_seq_len={self.max_len}")
        positions = torch.arange(start, start + t, device=input_ids.device) + self.position_offset  # (T,)
        x = self.token(input_ids) * self.scale  # (B, T, C)
        if self.position is not None:  # ALiBi and RoPE have no position vectors: attention sees positions instead
            x = x + self.position(positions)  # (B, T, C) + (T, C)
        if self.token_type is not None:
            if token_type_ids is None:
                x = x + self.token_type.weight[0]
            else:
                x = x + self.token_type(token_type_ids)
        if self.norm is not None:
            x = self.norm(x)
        return self.dropout(x)
