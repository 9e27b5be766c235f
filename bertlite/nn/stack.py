"""A stack of N layers. The encoder and the decoder are the same stack with two flags:
causal (masked self-attention, each position sees only itself and the past) and cross_attention.

Layers may alternate local and global self-attention (ModernBERT): with ``local_attention`` = w > 0, layer i is
global when i % ``global_attn_every_n_layers`` == 0, else it attends within a window of w (w // 2 either side in
an encoder) and rotates with ``rope_theta_local`` where that is set."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from bertlite.nn.block import TransformerBlock


def padding_mask(attention_mask: Tensor | None) -> Tensor | None:
    """attention_mask (B, T), 1 for tokens and 0 for padding -> boolean key mask (B, 1, 1, T), or None."""
    if attention_mask is None:
        return None
    return attention_mask.bool()[:, None, None, :]


def is_local_layer(index: int, local_attention: int, global_attn_every_n_layers: int) -> bool:
    """Whether layer ``index`` (from 0) attends locally: ModernBERT's rule, every n-th layer from the first global."""
    return local_attention > 0 and index % global_attn_every_n_layers != 0


class TransformerStack(nn.Module):
    def __init__(self, n_layers: int, causal: bool = False, cross_attention: bool = False,
                 gradient_checkpointing: bool = False, local_attention: int = 0, global_attn_every_n_layers: int = 1,
                 rope_theta_local: float | None = None, first_layer_attn_norm: bool = True, **block_kwargs):
        """block_kwargs: the ``TransformerBlock`` arguments all layers share. first_layer_attn_norm=False: layer 0
        (pre-LN) feeds its attention the stack's input unnormalised, an input the embeddings have normalised."""
        super().__init__()
        self.causal = causal
        self.gradient_checkpointing = gradient_checkpointing

        def layer(i: int) -> TransformerBlock:
            own = {} if i or first_layer_attn_norm else {"attn_norm": False}
            if is_local_layer(i, local_attention, global_attn_every_n_layers):
                own["window"] = local_attention
                if block_kwargs.get("rope_theta") is not None and rope_theta_local is not None:
                    own["rope_theta"] = rope_theta_local
            return TransformerBlock(cross_attention=cross_attention, **{**block_kwargs, **own})

        self.layers = nn.ModuleList(layer(i) for i in range(n_layers))
        # Pre-LN leaves the residual stream un-normalised: one last LayerNorm closes the stack.
        norm_first = block_kwargs.get("norm_first", False)
        eps = block_kwargs.get("layer_norm_eps", 1e-12)
        bias = block_kwargs.get("bias", True)
        self.final_norm = nn.LayerNorm(block_kwargs["d_model"], eps=eps, bias=bias) if norm_first else None

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        context: Tensor | None = None,
        context_mask: Tensor | None = None,
        cache: list[dict] | None = None,
    ) -> Tensor:
        """x (B, T, C) -> (B, T, C). mask: boolean (B, 1, 1|T, T) key mask; cache: one dict per layer."""
        # Activation checkpointing keeps only each layer's input and runs the layer again in the backward pass.
        # Only worth it when a backward pass follows; a KV cache (generation) is written as a side effect,
        # which a recomputation would repeat. Non-reentrant checkpointing restores the RNG state before it
        # recomputes, so dropout draws the same masks twice and the gradients match the plain model's.
        recompute = self.gradient_checkpointing and self.training and torch.is_grad_enabled() and cache is None
        for i, layer in enumerate(self.layers):
            if recompute:
                x = checkpoint(layer, x, mask, self.causal, context, context_mask, None, use_reentrant=False)
            else:
                x = layer(x, mask, self.causal, context, context_mask, None if cache is None else cache[i])
        return x if self.final_norm is None else self.final_norm(x)


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """BERT / GPT initialisation: N(0, std) for linear and embedding weights, zero biases, unit LayerNorm."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=std)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    # A second pass: a tied output layer shares the embedding's weight and was refilled above.
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Embedding) and m.padding_idx is not None:
                m.weight[m.padding_idx].zero_()
