"""bertlite-attention: draw the attention weights of every layer and head for one text."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from bertlite.cli.common import CONFIG_DIR, exit_on_user_error, quote_free_text

log = logging.getLogger("bertlite.attention")


def draw(cfg: DictConfig):
    import torch
    from hydra.core.hydra_config import HydraConfig

    from bertlite.attention_maps import attention_maps, plot_attention
    from bertlite.inference import load

    predictor = load(cfg.checkpoint, device=cfg.device, trust=cfg.trust_checkpoint)
    model, tokenizer, arch = predictor.model, predictor.tokenizer, predictor.config.arch
    encoding = tokenizer.encode(cfg.text)
    ids = torch.tensor([encoding.ids[: predictor.max_positions]], device=predictor.device)
    tokens = tokenizer.encode(cfg.text).tokens[: ids.size(1)]
    if arch == "transformer" and predictor.meta["task"] == "seq2seq":
        run = lambda: model(ids, ids)  # noqa: E731  the decoder reads the same text (teacher forcing)
    else:
        run = lambda: model(ids)  # noqa: E731
    maps = attention_maps(model, run)
    title = f"{arch} ({predictor.meta['task']}): {cfg.text[:80]}"
    output = cfg.output or Path(HydraConfig.get().runtime.output_dir) / "attention.png"
    path = plot_attention(maps, tokens, tokens, output, title)
    log.info("Wrote %s: %d attention layers x %d heads", path, len(maps), maps[0][1].size(0))
    return path


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="attention")
@exit_on_user_error
def _main(cfg: DictConfig) -> None:
    draw(cfg)


def main() -> None:
    sys.argv = [sys.argv[0], *quote_free_text(sys.argv[1:], ("text",))]
    _main()


if __name__ == "__main__":
    main()
