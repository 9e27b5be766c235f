"""GPT: a decoder-only Transformer. The same layer stack as BERT's encoder, with a causal mask:
position t attends to positions <= t only, so it can be trained to predict token t + 1."""

from __future__ import annotations

from torch import Tensor, nn

from bertlite.models.config import GPTConfig
from bertlite.models.generation import generate
from bertlite.models.heads import ClassificationHead, pool
from bertlite.nn import TransformerEmbeddings, TransformerStack, init_weights, padding_mask
from bertlite.nn.loss import cross_entropy


class GPTModel(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.embeddings = TransformerEmbeddings(config.vocab_size, config.d_model, config.max_seq_len,
                                                position=config.position, norm=False, dropout=config.dropout,
                                                pad_token_id=config.pad_token_id)
        self.decoder = TransformerStack(config.n_layers, causal=True, **config.stack_kwargs())

    def new_cache(self) -> list[dict]:
        """One dict per layer; attention layers keep their keys and values in it while generating."""
        return [{} for _ in self.decoder.layers]

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, cache: list[dict] | None = None,
                start: int = 0) -> Tensor:
        """input_ids (B, T) -> hidden (B, T, C). With a cache, input_ids are the tokens after the first ``start``."""
        x = self.embeddings(input_ids, start=start)
        return self.decoder(x, mask=padding_mask(attention_mask), cache=cache)


class GPTForCausalLM(nn.Module):
    """Next-token prediction with an output layer tied to the input embedding."""

    backbone = "gpt"

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.gpt = GPTModel(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.lm_head.weight = self.gpt.embeddings.token.weight
        init_weights(self, config.init_std)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, cache: list[dict] | None = None,
                start: int = 0) -> Tensor:
        """-> logits (B, T, V): at position t, the distribution of token t + 1."""
        return self.lm_head(self.gpt(input_ids, attention_mask, cache, start))

    def generate(self, prompt: Tensor, max_new_tokens: int, max_len: int | None = None, **kwargs) -> Tensor:
        """prompt (B, T0) -> (B, T0 + n), T0 + n <= max_len (default: max_seq_len): continue the prompt
        (see bertlite.models.generation.generate)."""
        def next_logits(tokens: Tensor, cache: list[dict] | None, start: int) -> Tensor:
            return self(tokens, cache=cache, start=start)[:, -1]

        return generate(next_logits, prompt, max_new_tokens, self.gpt.new_cache, max_len or self.config.max_seq_len,
                        **kwargs)

    def loss(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Mean next-token cross-entropy over the block, and the logits it came from."""
        logits = self(input_ids, attention_mask)
        # position t predicts token t + 1; the last position has nothing to predict. Shifting the targets
        # rather than the logits keeps the (B, T, V) logits a view: no copy of them is made.
        targets = input_ids.roll(-1, dims=1)
        targets[:, -1] = -100
        if attention_mask is not None:
            targets = targets.masked_fill(attention_mask.roll(-1, dims=1) == 0, -100)
        loss = cross_entropy(logits.flatten(0, 1), targets.flatten())  # (B*T, V) against (B*T,)
        return loss, logits


class GPTForSequenceClassification(nn.Module):
    """A causal decoder sees the whole text only at its last token: pool there, then classify."""

    backbone = "gpt"

    def __init__(self, config: GPTConfig, num_labels: int, pooling: str = "last", classifier_dropout: float = 0.1):
        super().__init__()
        self.config = config
        self.num_labels = num_labels
        self.pooling = pooling
        self.gpt = GPTModel(config)
        self.head = ClassificationHead(config.d_model, num_labels, classifier_dropout)
        init_weights(self, config.init_std)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None) -> Tensor:
        hidden = self.gpt(input_ids, attention_mask)  # (B, T, C); right padding keeps real tokens first
        return self.head(pool(hidden, attention_mask, self.pooling))
