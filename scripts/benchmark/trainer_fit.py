"""The MLM step as ``bertlite-pretrain`` runs it: a row of the benchmark beside the bare training step.

The config is composed from conf/pretrain.yaml as the command line composes it (callbacks, loggers, trainer
settings, gradient clipping, the task's optimizer and schedule), with the bare step's model, recipe and precision;
its data is the benchmark's corpus through bertlite's own PretrainingDataModule (dynamic masking in the loader).
Validation is off: the row measures training steps. Each timed unit is a fresh ``Trainer.fit`` of
``skip + steps`` steps, each step timed by a callback from its start to the next step's start, so setup and
the first ``skip`` steps (allocations, autocast caches) stay out of the figure. The callback runs one bare
step before each timed step, off the clock, so that the fit and the bare step take turns step by step and a
few seconds of load from elsewhere fall on both alike.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from typing import Callable

import lightning as L
from hydra import compose, initialize_config_dir

from bertlite.cli.common import CONFIG_DIR, instantiate_group, register_model_presets

from .harness import Case

SKIP = 2  # steps of each fit left untimed


class _StepTimer(L.Callback):
    """Each step's seconds, from the start of one step to the start of the next (the last: to the end of
    training), so that the loop, callbacks, logging and fetching the next batch count; steps before ``skip``
    are left out. With ``between``, another step (the bare step) runs before each timed step, off the clock."""

    def __init__(self, env, skip: int, between: Callable[[], object] | None = None):
        self.env, self.skip, self.between = env, skip, between
        self.start: float | None = None
        self.seconds: list[float] = []

    def _mark(self, trainer, last: bool = False) -> None:
        self.env.sync()
        now = time.perf_counter()
        if self.start is not None:
            self.seconds.append(now - self.start)
        timed = trainer.global_step >= self.skip and not last
        if timed and self.between is not None:
            self.between()
            self.env.sync()
            now = time.perf_counter()
        self.start = now if timed else None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._mark(trainer)

    def on_train_end(self, trainer, pl_module):
        self._mark(trainer, last=True)


def pretrain_case(env, config, recipe: dict, datamodule, flops_per_token: float,
                  overrides: tuple[str, ...] = (), interleave: str | None = None):
    """A Case whose unit is ``steps`` MLM steps through Trainer.fit, configured as ``bertlite-pretrain``;
    ``interleave`` names the case whose steps take turns with them (run_cases)."""
    from hydra.utils import instantiate

    args = env.args
    register_model_presets()
    out = tempfile.mkdtemp(prefix="bertlite_bench_")
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("pretrain", overrides=[
            f"paths.output_dir={out}", f"task.lr={recipe['lr']}", f"task.weight_decay={recipe['weight_decay']}",
            f"task.compile={recipe['compile']}", f"trainer.precision={'bf16-mixed' if env.bf16 else '32-true'}",
            f"trainer.accelerator={env.device.type}", "trainer.limit_val_batches=0", *overrides])
    task = instantiate(cfg.task, model=dataclasses.asdict(config), _convert_="all")
    task.tokenizer_json = datamodule.tokenizer.to_str()

    def fit(steps: int, between: Callable[[], object] | None = None) -> list[tuple[int, float]]:
        timer = _StepTimer(env, SKIP, between)
        trainer = instantiate(cfg.trainer, callbacks=[*instantiate_group(cfg.callbacks), timer],
                              logger=instantiate_group(cfg.logger) or False, max_steps=SKIP + steps,
                              enable_model_summary=False)
        trainer.fit(task, datamodule=datamodule)
        return [(datamodule.batch_size * datamodule.max_seq_len, seconds) for seconds in timer.seconds]

    return Case(lambda between=None: fit(args.steps, between), lambda: fit(args.warmup), flops_per_token,
                interleave=interleave)
