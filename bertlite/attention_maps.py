"""Look at attention: the weights softmax(QK^T / sqrt(d_k)) of every layer and head, from the reference path."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from bertlite.nn.attention import MultiHeadAttention


@torch.inference_mode()
def attention_maps(model: nn.Module, run: "callable") -> list[tuple[str, Tensor]]:
    """Run ``run()`` (a forward pass of ``model``) with every attention layer on the reference path;
    -> [(layer name, weights (h, T_q, T_k))] for the first example, in module order."""
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, MultiHeadAttention)]
    for _, m in layers:
        m.record_weights = True
        m.attention_weights = None
    try:
        run()
    finally:
        for _, m in layers:
            m.record_weights = False
    return [(name, m.attention_weights[0].float().cpu()) for name, m in layers if m.attention_weights is not None]


def plot_attention(maps: list[tuple[str, Tensor]], query_tokens: list[str], key_tokens: list[str],
                   path: str | Path, title: str = "") -> Path:
    """A grid: one row per attention layer, one column per head; each cell a (query x key) heatmap."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        from bertlite.errors import ConfigError

        raise ConfigError("plotting needs matplotlib: pip install 'bertlite[plot]'") from exc
    rows, cols = len(maps), max(w.size(0) for _, w in maps)
    cell = 0.18 * max(len(key_tokens), 8)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * cell + 1, rows * cell + 1), squeeze=False)
    for r, (name, weights) in enumerate(maps):
        for c in range(cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= weights.size(0):
                ax.axis("off")
                continue
            w = weights[c]
            ax.imshow(w.numpy(), cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
            if r == rows - 1:
                ax.set_xticks(range(w.size(1)), key_tokens[: w.size(1)], rotation=90, fontsize=6)
            if c == 0:
                ax.set_yticks(range(w.size(0)), query_tokens[: w.size(0)], fontsize=6)
                ax.set_ylabel(name.replace(".self_attn", "\nself").replace(".cross_attn", "\ncross"), fontsize=7)
            if r == 0:
                ax.set_title(f"head {c}", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
