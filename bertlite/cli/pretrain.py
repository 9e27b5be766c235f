"""bertlite-pretrain: pretrain a Transformer on a text corpus.

    bertlite-pretrain                                   # offline default: bert-tiny on Python's documentation
    bertlite-pretrain model=bert-mini data=gutenberg
    bertlite-pretrain tokenizer.kind=bpe                # a RoBERTa-style byte-level BPE tokenizer
    bertlite-pretrain experiment=gutenberg_mini         # the 15-minute CPU recipe
    bertlite-pretrain model=gpt-mini task=clm data=gutenberg
    bertlite-pretrain model=transformer-mini task=seq2seq data=gutenberg
    bertlite-pretrain data=imdb_text init_from=<run>/checkpoints/last.ckpt   # continue on another corpus
    python -m bertlite.pretrain trainer=ddp trainer.devices=4
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from omegaconf import DictConfig, OmegaConf

from bertlite.cli.common import (CONFIG_DIR, apply_global_batch_size, best_checkpoint, build_task,
                                 check_vocabulary, close_trackers, exit_on_user_error, fit, instantiate_group,
                                 is_rank_zero, overridden, prepare_tokenizer, register_model_presets,
                                 resolve_ckpt_path, save_resolved_config)
from bertlite.errors import ConfigError
from bertlite.memory import retain_freed_memory
from bertlite.positions import SequenceLengths, sequence_lengths

if TYPE_CHECKING:
    from bertlite.models.config import ModelConfig

log = logging.getLogger("bertlite.pretrain")


def pretrain(cfg: DictConfig) -> dict[str, float]:
    """Build tokenizer, data, model and trainer from the composed config, train, and return the final metrics."""
    # Heavy imports here, so that a bad command line is answered at once.
    import lightning as L
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import instantiate

    from bertlite.data.special_tokens import special_tokens
    from bertlite.sources import read_checkpoint

    retain_freed_memory()  # no page faults for every step's large tensors (bertlite/memory.py)
    L.seed_everything(cfg.seed, workers=True)
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    ckpt_path = resolve_ckpt_path(cfg.ckpt_path, output_dir)  # ckpt_path=last: this run directory's last.ckpt
    if is_rank_zero():
        save_resolved_config(cfg, output_dir)

    task_cls = check_task_and_sources(cfg, ckpt_path)
    init_from = cfg.get("init_from")
    if cfg.data.get("streaming"):
        check_streaming(cfg)
    datamodule = instantiate(cfg.data, objective=task_cls.task_name)
    # a resumed or continued run keeps its vocabulary: the tokenizer comes from the checkpoint
    source = ckpt_path or init_from
    checkpoint = read_checkpoint(source, task_cls.task_name, cfg.trust_checkpoint) if source else None
    datamodule.set_tokenizer(prepare_tokenizer(cfg.tokenizer, output_dir / "tokenizer.json", datamodule.train_texts,
                                               checkpoint=checkpoint))
    if checkpoint is not None:
        check_vocabulary(datamodule.tokenizer, checkpoint, source)
    tokenizer = datamodule.tokenizer

    model_config, lengths = pretrain_model_config(cfg, checkpoint if init_from else None, tokenizer)
    task = build_task(cfg.task, model=model_config)  # the model config as data: Hydra never sees it
    if ckpt_path:  # a resume trains the checkpoint's model: a changed config is one error line, before Lightning
        task.check_resume(checkpoint, ckpt_path)
    task.tokenizer_json = tokenizer.to_str()
    task.special_tokens = special_tokens(tokenizer).to_dict()  # the roles, saved beside the tokenizer
    task.trained_seq_len = lengths.trained  # recorded in every checkpoint
    if init_from:
        task.load_state_dict(extend_positions(checkpoint["state_dict"], task.state_dict(),
                                              getattr(model_config, "position_offset", 0)))
    del checkpoint
    n_params = sum(p.numel() for p in task.model.parameters())
    log.info("Model %s: %.2fM parameters (embeddings included)", model_config.arch, n_params / 1e6)

    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=instantiate_group(cfg.get("callbacks")),
                                     logger=instantiate_group(cfg.get("logger")) or False)
    apply_global_batch_size(trainer, datamodule, cfg.get("global_batch_size"))
    fit(trainer, task, datamodule, ckpt_path, cfg.trust_checkpoint)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if trainer.is_global_zero:
        log.info("Best checkpoint: %s", best_checkpoint(trainer))
    log.info("Run directory: %s", output_dir)
    close_trackers(trainer)
    return metrics


def check_task_and_sources(cfg: DictConfig, ckpt_path: str | None) -> type:
    """The task class, once it is known to train the model's architecture; a run resumes or starts from
    a checkpoint's weights, not both."""
    from hydra.utils import get_class

    from bertlite.tasks import PRETRAINING_TASKS

    task_cls = get_class(cfg.task._target_)
    init_from = cfg.get("init_from")
    # with init_from the model is the checkpoint's, and read_checkpoint checks that its task is this one
    if not init_from and cfg.model.arch != task_cls.arch:
        fits = next((n for n, t in PRETRAINING_TASKS.items() if t.arch == cfg.model.arch), "?")
        raise ConfigError(f"task={task_cls.task_name} trains {task_cls.arch} models but the model is a "
                          f"{cfg.model.arch}; use task={fits} (or a {task_cls.arch}-* model)")
    if init_from and ckpt_path:
        raise ConfigError("give either ckpt_path (resume a run: its optimizer, schedule and step count) or "
                          "init_from (start a new run from a checkpoint's weights), not both")
    return task_cls


def pretrain_model_config(cfg: DictConfig, init_from: dict | None, tokenizer) -> tuple[ModelConfig, SequenceLengths]:
    """The checked model config, the ``init_from`` checkpoint's (its positions extended to a longer
    data.max_seq_len) or model= with the tokenizer's vocabulary, and the run's sequence lengths."""
    from bertlite.data.special_tokens import special_id
    from bertlite.models.config import config_from_dict

    if init_from is not None:  # the architecture is the checkpoint's (read_checkpoint checked its values)
        config = config_from_dict(init_from["bertlite"]["model_config"])
        log.info("Starting from the weights of %s (model= is ignored: the architecture is the checkpoint's)",
                 cfg.init_from)
        trained_len = init_from["bertlite"].get("trained_seq_len")
    else:
        values = OmegaConf.to_container(cfg.model, resolve=True)
        pad_id = special_id(tokenizer, "pad", "the model's padding embedding (model.pad_token_id)")
        config = config_from_dict({**values, "vocab_size": tokenizer.get_vocab_size(), "pad_token_id": pad_id})
        trained_len = None
    lengths = sequence_lengths("pretrain", config, cfg.data.max_seq_len, trained_len=trained_len,
                               source=cfg.init_from if init_from is not None else None,
                               explicit_model_len=overridden("model.max_seq_len"))
    return dataclasses.replace(config, max_seq_len=lengths.model), lengths


def extend_positions(weights: dict, target: dict, offset: int = 0) -> dict:
    """A checkpoint's learned position tables, extended to the (longer) ones of ``target``. ``offset``: the rows
    before the first position (RoBERTa's 2), kept as they are."""
    from bertlite.nn.positional import extend_learned_positions

    return {name: extend_learned_positions(w, target[name].size(0), offset)
            if name.endswith("position.weight") and name in target and target[name].shape != w.shape else w
            for name, w in weights.items()}


def check_streaming(cfg: DictConfig) -> None:
    """A stream has no length: the run is counted in steps, and validation comes every N steps."""
    if cfg.trainer.get("max_steps", -1) in (-1, None):
        raise ConfigError("data.streaming=true reads the corpus as training goes, with no end of epoch: set "
                          "trainer.max_steps=N")
    if not isinstance(cfg.trainer.get("val_check_interval"), int):
        raise ConfigError("data.streaming=true: validate every N optimizer steps, trainer.val_check_interval=N (an "
                          f"integer; got {cfg.trainer.get('val_check_interval')!r})")
    if cfg.tokenizer.get("train_samples") is None and not cfg.tokenizer.path:
        cfg.tokenizer.train_samples = 100_000
        log.info("Training the tokenizer on the first 100,000 documents of the stream (tokenizer.train_samples)")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="pretrain")
@exit_on_user_error
def _main(cfg: DictConfig) -> None:
    pretrain(cfg)


def main() -> None:
    register_model_presets()
    _main()


if __name__ == "__main__":
    main()
