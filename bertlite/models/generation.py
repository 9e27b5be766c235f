"""Autoregressive generation: greedy or sampled (temperature, top-k, top-p), with or without a key/value cache.

Without a cache every step re-runs the whole sequence; with one, each attention layer keeps the keys and
values of the tokens it has seen, and a step feeds only the newest token. Both paths give the same tokens.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from bertlite.errors import ConfigError

# next_logits(tokens (B, T), cache or None, start) -> logits (B, V) for the token after the last one
NextLogits = Callable[[Tensor, "list[dict] | None", int], Tensor]


def check_sampling(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """Refuse settings that would silently sample otherwise than asked (top_p=0 once turned nucleus sampling off)."""
    if temperature < 0:
        raise ConfigError(f"temperature={temperature}: use a value >= 0 (0 is greedy decoding)")
    if top_k is not None and top_k < 1:
        raise ConfigError(f"top_k={top_k}: use a whole number >= 1, or null for no top-k filter")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ConfigError(f"top_p={top_p}: use a value in (0, 1] (1 keeps every token), or null for no nucleus filter")


def filter_logits(logits: Tensor, top_k: int | None = None, top_p: float | None = None) -> Tensor:
    """Keep the top_k most likely tokens and/or the smallest set whose probability reaches top_p."""
    if top_k is not None and 0 < top_k < logits.size(-1):
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and 0.0 < top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        beyond = cumulative - sorted_logits.softmax(-1) >= top_p  # sorted tokens entirely past the nucleus
        remove = torch.zeros_like(beyond).scatter(-1, order, beyond)  # back to vocabulary order
        logits = logits.masked_fill(remove, float("-inf"))
    return logits


@torch.inference_mode()
def generate(next_logits: NextLogits, prompt: Tensor, max_new_tokens: int, new_cache: Callable[[], list[dict]],
             max_len: int, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
             greedy: bool = False, use_cache: bool = True, eos_id: int | None = None,
             generator: torch.Generator | None = None) -> Tensor:
    """prompt (B, T0) -> (B, T0 + n) token ids, n <= max_new_tokens (fewer at max_len or when all hit eos_id)."""
    check_sampling(temperature, top_k, top_p)
    tokens = prompt
    cache = new_cache() if use_cache else None
    fed = 0  # how many tokens the cache already holds
    finished = torch.zeros(prompt.size(0), dtype=torch.bool, device=prompt.device)
    for _ in range(max_new_tokens):
        if tokens.size(1) >= max_len:
            break
        if cache is None:
            logits = next_logits(tokens, None, 0)
        else:
            logits = next_logits(tokens[:, fed:], cache, fed)
            fed = tokens.size(1)
        if greedy or temperature == 0.0:
            next_token = logits.argmax(-1)
        else:
            probs = filter_logits(logits.float() / temperature, top_k, top_p).softmax(-1)
            next_token = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        if eos_id is not None:
            next_token = next_token.masked_fill(finished, eos_id)
            finished |= next_token == eos_id
        tokens = torch.cat([tokens, next_token[:, None]], dim=1)
        if eos_id is not None and finished.all():
            break
    return tokens
