"""BERT: a bidirectional Transformer encoder, and its masked-language-model head."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from bertlite.models.config import BertConfig
from bertlite.models.heads import (ClassificationHead, Pooler, TokenClassificationHead, TransformClassificationHead,
                                   pool)
from bertlite.nn import TransformerEmbeddings, TransformerStack, init_weights, padding_mask
from bertlite.nn.feedforward import ACTIVATIONS
from bertlite.nn.packing import PackedSequences
from bertlite.nn.loss import cross_entropy


class BertModel(nn.Module):
    """Embeddings, then an encoder stack in which every position attends to every other (no causal mask)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.embeddings = TransformerEmbeddings(
            config.vocab_size,
            config.d_model,
            config.max_seq_len,
            position=config.position,
            type_vocab_size=config.type_vocab_size,
            norm=True,
            layer_norm_eps=config.layer_norm_eps,
            dropout=config.dropout,
            pad_token_id=config.pad_token_id,
            position_offset=config.position_offset,
            norm_bias=config.bias,
        )
        self.encoder = TransformerStack(config.n_layers, causal=False, **config.stack_kwargs())

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None
    ) -> Tensor:
        """input_ids (B, T); attention_mask (B, T), 1 = token, 0 = padding -> hidden states (B, T, C).

        With ``config.unpad`` and padding in the batch, the layers run on the real tokens alone, (N, C), and
        the hidden states at padding positions are zeros (the padded path leaves numbers there that nothing reads).
        Under torch.compile the padded path runs: N changes with every batch and finding it breaks the graph.
        """
        x = self.embeddings(input_ids, token_type_ids)  # (B, T, C)
        if self.config.unpad and attention_mask is not None and not torch.compiler.is_compiling():
            packed = PackedSequences.from_mask(attention_mask)
            if 0 < packed.index.numel() < attention_mask.numel():  # some padding, and not a batch of padding only
                return packed.pad(self.encoder(packed.pack(x), mask=packed))  # (N, C) through the layers
        return self.encoder(x, mask=padding_mask(attention_mask))


class BertEncoder(nn.Module):
    """The encoder alone: what an HF ``BertModel`` folder holds (``bert.*`` weight names), with its pooler when
    the folder has one (``pooler=True``), so that the pooler's weights survive an import and an export."""

    backbone = "bert"

    def __init__(self, config: BertConfig, pooler: bool = False):
        super().__init__()
        self.config = config
        self.bert = BertModel(config)
        self.pooler = Pooler(config.d_model) if pooler else None
        init_weights(self, config.init_std)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None) -> Tensor:
        return self.bert(input_ids, attention_mask, token_type_ids)  # (B, T, C)


class MaskedLMHead(nn.Module):
    """transform (dense, the encoder's activation or head_activation, LayerNorm), then a decoder to the vocabulary
    whose weight is the input embedding."""

    def __init__(self, config: BertConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.dense = nn.Linear(config.d_model, config.d_model, bias=config.bias)
        self.act = ACTIVATIONS[config.transform_activation()]
        self.norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps, bias=config.bias)
        self.decoder = nn.Linear(config.d_model, config.vocab_size, bias=config.decoder_bias)
        self.decoder.weight = word_embeddings.weight  # tied: the same (V, C) matrix reads and writes tokens

    def forward(self, hidden: Tensor) -> Tensor:
        return self.decoder(self.norm(self.act(self.dense(hidden))))  # (..., C) -> (..., V)


@dataclass
class MaskedLMOutput:
    logits: Tensor  # (N, V) at the N selected positions, or (B, T, V) when none are selected
    loss: Tensor | None = None


class BertForMaskedLM(nn.Module):
    backbone = "bert"

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config)
        self.mlm_head = MaskedLMHead(config, self.bert.embeddings.token)
        init_weights(self, config.init_std)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        mlm_positions: Tensor | None = None,
        mlm_labels: Tensor | None = None,
    ) -> MaskedLMOutput:
        """mlm_positions (N,): flat indices into the B*T positions that were masked; mlm_labels (N,): their ids.

        With positions given, the vocabulary projection runs on those N rows only: the (B, T, V) logits
        are never built, which saves most of the head's time and memory (15% of positions are masked).
        """
        hidden = self.bert(input_ids, attention_mask, token_type_ids)  # (B, T, C)
        if mlm_positions is not None:
            hidden = hidden.flatten(0, 1).index_select(0, mlm_positions)  # (B*T, C) -> (N, C)
        logits = self.mlm_head(hidden)
        loss = None if mlm_labels is None else cross_entropy(logits, mlm_labels)
        return MaskedLMOutput(logits, loss)


def classifier_head(config: BertConfig, num_labels: int, dropout: float, per_token: bool = False) -> nn.Module:
    """The head ``config.classifier_head`` names: BERT's ("pooler": dense + tanh on the pooled vector; dropout
    alone per token) or ModernBERT's ("transform": dense, activation, LayerNorm, for both)."""
    if config.classifier_head == "transform":
        return TransformClassificationHead(config.d_model, num_labels, config.transform_activation(),
                                           config.layer_norm_eps, config.bias, dropout)
    if per_token:
        return TokenClassificationHead(config.d_model, num_labels, dropout)
    return ClassificationHead(config.d_model, num_labels, dropout, bias=config.bias)


class BertForSequenceClassification(nn.Module):
    """The encoder, a pooled representation of the sequence ([CLS] by default), and a classification head."""

    backbone = "bert"

    def __init__(self, config: BertConfig, num_labels: int, pooling: str = "cls", classifier_dropout: float = 0.1):
        super().__init__()
        self.config = config
        self.num_labels = num_labels
        self.pooling = pooling
        self.bert = BertModel(config)
        self.head = classifier_head(config, num_labels, classifier_dropout)
        init_weights(self, config.init_std)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None) -> Tensor:
        """-> logits (B, num_labels)."""
        hidden = self.bert(input_ids, attention_mask, token_type_ids)  # (B, T, C)
        return self.head(pool(hidden, attention_mask, self.pooling))


class BertForTokenClassification(nn.Module):
    """The encoder and a per-position head: one score per tag for every token (named-entity recognition)."""

    backbone = "bert"

    def __init__(self, config: BertConfig, num_labels: int, classifier_dropout: float = 0.1):
        super().__init__()
        self.config = config
        self.num_labels = num_labels
        self.bert = BertModel(config)
        self.head = classifier_head(config, num_labels, classifier_dropout, per_token=True)
        init_weights(self, config.init_std)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None) -> Tensor:
        """-> logits (B, T, num_labels)."""
        return self.head(self.bert(input_ids, attention_mask, token_type_ids))
