"""The encoder-decoder Transformer of "Attention Is All You Need".

The encoder is a bidirectional stack over the source; the decoder is a causal stack whose layers add
cross-attention to the encoder's output. Both are ``TransformerStack``; one embedding matrix serves the
source, the target and the output layer.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bertlite.models.config import TransformerConfig
from bertlite.models.generation import generate
from bertlite.models.heads import ClassificationHead, pool
from bertlite.nn import TransformerEmbeddings, TransformerStack, init_weights, padding_mask
from bertlite.nn.loss import cross_entropy


class TransformerModel(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = config
        self.embeddings = TransformerEmbeddings(config.vocab_size, config.d_model, config.max_seq_len,
                                                position=config.position, norm=False, scale=True,
                                                dropout=config.dropout, pad_token_id=config.pad_token_id)
        self.encoder = TransformerStack(config.n_layers, causal=False, **config.stack_kwargs())
        self.decoder = TransformerStack(config.n_decoder_layers, causal=True, cross_attention=True,
                                        **config.stack_kwargs())

    def new_cache(self) -> list[dict]:
        return [{} for _ in self.decoder.layers]

    def encode(self, src_ids: Tensor, src_mask: Tensor | None = None) -> Tensor:
        """src_ids (B, S) -> memory (B, S, C)."""
        return self.encoder(self.embeddings(src_ids), mask=padding_mask(src_mask))

    def decode(self, tgt_ids: Tensor, memory: Tensor, src_mask: Tensor | None = None,
               tgt_mask: Tensor | None = None, cache: list[dict] | None = None, start: int = 0) -> Tensor:
        """tgt_ids (B, T), memory (B, S, C) -> hidden (B, T, C)."""
        x = self.embeddings(tgt_ids, start=start)
        return self.decoder(x, mask=padding_mask(tgt_mask), context=memory, context_mask=padding_mask(src_mask),
                            cache=cache)


class TransformerForSeq2Seq(nn.Module):
    """Maps a source sequence to a target sequence; trained here by text infilling (BART)."""

    backbone = "transformer"

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = config
        self.transformer = TransformerModel(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.embeddings.token.weight
        init_weights(self, config.init_std)

    def forward(self, src_ids: Tensor, tgt_ids: Tensor, src_mask: Tensor | None = None,
                tgt_mask: Tensor | None = None) -> Tensor:
        """-> logits (B, T, V): at target position t, the distribution of target token t + 1."""
        memory = self.transformer.encode(src_ids, src_mask)
        return self.lm_head(self.transformer.decode(tgt_ids, memory, src_mask, tgt_mask))

    @torch.inference_mode()
    def generate(self, src_ids: Tensor, bos_id: int, max_new_tokens: int, src_mask: Tensor | None = None,
                 max_len: int | None = None, **kwargs) -> Tensor:
        """src_ids (B, S) -> target ids (B, 1 + n), starting with bos_id. The encoder runs once; the decoder's
        cache keeps its self-attention keys/values and the keys/values of the encoder output."""
        memory = self.transformer.encode(src_ids, src_mask)

        def next_logits(tokens: Tensor, cache: list[dict] | None, start: int) -> Tensor:
            hidden = self.transformer.decode(tokens, memory, src_mask, cache=cache, start=start)
            return self.lm_head(hidden[:, -1])

        start_tokens = torch.full((src_ids.size(0), 1), bos_id, dtype=torch.long, device=src_ids.device)
        return generate(next_logits, start_tokens, max_new_tokens, self.transformer.new_cache,
                        max_len or self.config.max_seq_len, **kwargs)

    def loss(self, src_ids: Tensor, tgt_ids: Tensor, labels: Tensor, src_mask: Tensor | None = None,
             tgt_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """labels (B, T): the target shifted by one, -100 where nothing is predicted."""
        logits = self(src_ids, tgt_ids, src_mask, tgt_mask)
        return cross_entropy(logits.flatten(0, 1), labels.flatten()), logits


class TransformerForSequenceClassification(nn.Module):
    """As BART: the text goes into the encoder and the decoder alike; the decoder's last real token,
    which has seen the whole text through self- and cross-attention, is classified."""

    backbone = "transformer"

    def __init__(self, config: TransformerConfig, num_labels: int, pooling: str = "last",
                 classifier_dropout: float = 0.1):
        super().__init__()
        self.config = config
        self.num_labels = num_labels
        self.pooling = pooling
        self.transformer = TransformerModel(config)
        self.head = ClassificationHead(config.d_model, num_labels, classifier_dropout)
        init_weights(self, config.init_std)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None) -> Tensor:
        memory = self.transformer.encode(input_ids, attention_mask)
        hidden = self.transformer.decode(input_ids, memory, attention_mask, attention_mask)
        return self.head(pool(hidden, attention_mask, self.pooling))
