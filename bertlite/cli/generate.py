"""bertlite-generate: sample or greedily decode text from a GPT or encoder-decoder checkpoint."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from bertlite.cli.common import CONFIG_DIR, exit_on_user_error, quote_free_text


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="generate")
@exit_on_user_error
def _main(cfg: DictConfig) -> None:
    from bertlite.inference import TextGenerator

    generator = TextGenerator(cfg.checkpoint, device=cfg.device, trust=cfg.trust_checkpoint)
    print(generator.generate(cfg.prompt, cfg.max_new_tokens, cfg.temperature, cfg.top_k, cfg.top_p, cfg.greedy,
                             cfg.use_cache, cfg.seed, cfg.stop_at_sep))


def main() -> None:
    sys.argv = [sys.argv[0], *quote_free_text(sys.argv[1:], ("prompt",))]
    _main()


if __name__ == "__main__":
    main()
