"""What every Hydra entry point shares: where the configs live, the model presets as config options,
one-line errors for bad input, and building callbacks and loggers from their config groups."""

from __future__ import annotations

import functools
import importlib.util
import itertools
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Callable, Iterable

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from bertlite.atomic import write_text_atomically
from bertlite.errors import BertliteError, ConfigError
from bertlite.precision import fast_precision

log = logging.getLogger("bertlite")


def config_dir() -> str:
    """conf/ of a checkout, or bertlite/conf inside an installed wheel."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "conf", package.parent / "conf"):
        if (candidate / "pretrain.yaml").exists():
            return str(candidate)
    raise FileNotFoundError(f"bertlite's Hydra configs are missing (looked in {package}/conf and "
                            f"{package.parent}/conf)")


CONFIG_DIR = config_dir()

# ${fast_precision:${trainer.accelerator}} in a config: bf16-mixed where the hardware has bf16, else 32-true
if not OmegaConf.has_resolver("fast_precision"):
    OmegaConf.register_new_resolver("fast_precision", fast_precision)


def register_model_presets() -> None:
    """Each named preset is a typed option of the ``model`` group: model=bert-mini, model.n_layers=6, ..."""
    from bertlite.models.config import PRESETS

    cs = ConfigStore.instance()
    for name, config in PRESETS.items():
        cs.store(group="model", name=name, node=config)


def in_multirun() -> bool:
    """Whether this is one job of a Hydra sweep (--multirun)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def exit_on_user_error(fn: Callable) -> Callable:
    """Bad input becomes one line on stderr and exit status 2, not a traceback.
    Set BERTLITE_TRACEBACK=1 to see the traceback anyway."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except BertliteError as exc:
            if os.environ.get("BERTLITE_TRACEBACK") or in_multirun():
                raise  # in a sweep the sweeper records the failed trial and decides whether to go on
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)

    return wrapper


def instantiate_group(cfg: DictConfig | None) -> list:
    """A dict-of-targets group (callbacks, logger) -> a list of objects; null entries are skipped."""
    from hydra.utils import instantiate

    objects = []
    for name, node in (cfg or {}).items():
        if node is None or "_target_" not in node:
            continue
        if node._target_.endswith("TensorBoardLogger") and not _tensorboard_available():
            log.info("TensorBoard is not installed; logging to CSV only (pip install bertlite[tensorboard])")
            continue
        tracker = next((t for t in TRACKERS if node._target_.endswith(t)), None)
        if tracker and importlib.util.find_spec(TRACKERS[tracker]) is None:
            raise ConfigError(f"logger={name} needs the {TRACKERS[tracker]} package: pip install "
                              f"'bertlite[{name}]' (or choose another logger, e.g. logger=csv)")
        objects.append(instantiate(node))
    return objects


TRACKERS = {"MLFlowLogger": "mlflow", "WandbLogger": "wandb"}  # Lightning logger -> the module it needs


def _tensorboard_available() -> bool:
    return any(importlib.util.find_spec(m) is not None for m in ("tensorboard", "tensorboardX"))


def save_resolved_config(cfg: DictConfig, output_dir: Path) -> None:
    """Write the fully resolved config (every interpolation filled in) beside Hydra's own record."""
    write_text_atomically(output_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))


def is_rank_zero() -> bool:
    """Before the Trainer exists, the launcher's environment (RANK, LOCAL_RANK, SLURM_PROCID) tells the rank."""
    from lightning.pytorch.utilities import rank_zero_only

    return rank_zero_only.rank == 0


def prepare_tokenizer(tok_cfg: DictConfig, target: Path, texts: Callable[[], Iterable[str]],
                      checkpoint: dict | None = None):
    """The run's tokenizer, saved as ``target``: the one inside ``checkpoint`` (a loaded bertlite checkpoint, with
    the roles of its special tokens), else ``tok_cfg.path``,
    else a tokenizer of ``tok_cfg.kind`` (wordpiece or bpe) trained on ``texts()``. Only rank zero trains and writes
    it; the other ranks of a distributed run wait for the file."""
    from bertlite.data.tokenizer import get_or_train_tokenizer, load_tokenizer, tokenizer_from_section

    if checkpoint is not None and not tok_cfg.path:
        tokenizer = tokenizer_from_section(checkpoint["bertlite"])
        if is_rank_zero():
            write_text_atomically(target, tokenizer.to_str(pretty=True))
        return tokenizer
    if not is_rank_zero():
        if tok_cfg.path:
            return load_tokenizer(tok_cfg.path, tok_cfg.lowercase)
        deadline = time.monotonic() + 3600
        while not target.exists():
            if time.monotonic() > deadline:
                raise ConfigError(f"rank zero did not write {target} within an hour")
            time.sleep(1)
        return load_tokenizer(target)
    samples = tok_cfg.get("train_samples")  # the first N texts (of a stream, say); null: all of them
    return get_or_train_tokenizer(tok_cfg.path, target, itertools.islice(texts(), samples), tok_cfg.vocab_size,
                                  tok_cfg.lowercase, tok_cfg.get("kind", "wordpiece"))


def check_vocabulary(tokenizer, checkpoint: dict, checkpoint_path: str, option: str = "tokenizer.path") -> None:
    """A checkpoint's weights index its own vocabulary: another tokenizer would feed them the wrong rows."""
    from bertlite.data.tokenizer import tokenizer_from_json

    saved = tokenizer_from_json(checkpoint["bertlite"]["tokenizer"]).get_vocab()
    given = tokenizer.get_vocab()
    if saved != given:
        differ = "sizes differ" if len(saved) != len(given) else \
            f"{sum(given.get(t) != i for t, i in saved.items())} token ids differ"
        raise ConfigError(f"the tokenizer ({option}, {len(given)} tokens) does not match the vocabulary of "
                          f"{checkpoint_path} ({len(saved)} tokens; {differ}); drop {option} to use the "
                          "checkpoint's own tokenizer")


def overridden(key: str) -> bool:
    """Whether the command line sets ``key`` (``key=...``, ``+key=...`` or ``++key=...``)."""
    from hydra.core.hydra_config import HydraConfig

    return any(o.split("=", 1)[0].lstrip("+~") == key for o in HydraConfig.get().overrides.task)


def fit(trainer, task, datamodule, ckpt_path: str | None, trust: bool = False) -> None:
    """trainer.fit, then save the final state as checkpoints/last.ckpt: Lightning's own ``last`` is written
    only at validation, and training may end between two validations. A resume opens ``ckpt_path`` with torch's
    weights-only loader unless ``trust`` (trust_checkpoint=true)."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    try:
        trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=not trust)
    except SIGTERMException:
        # SaveOnInterrupt (conf/callbacks) has saved checkpoints/last.ckpt; 128 + SIGTERM, as the shell reports it
        log.info("Training interrupted at step %d", trainer.global_step)
        raise SystemExit(143) from None
    path = last_checkpoint_path(trainer)
    if path is not None and trainer.global_step > 0:
        trainer.save_checkpoint(path, weights_only=False)  # the whole state, optimizer included: a save, not a load
        if trainer.is_global_zero:
            log.info("Last checkpoint: %s (step %d)", path, trainer.global_step)


def last_checkpoint_path(trainer) -> Path | None:
    """Where this run keeps its newest state: the unmonitored ModelCheckpoint's file (checkpoints/last.ckpt)."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    last = next((cb for cb in trainer.checkpoint_callbacks
                 if isinstance(cb, ModelCheckpoint) and cb.monitor is None and cb.dirpath), None)
    return None if last is None else Path(last.dirpath) / f"{last.filename or 'last'}{last.FILE_EXTENSION}"


def evaluation_checkpoint(trainer) -> str:
    """The checkpoint a final evaluation loads: the best by the monitored metric, if it is a file in this run's
    checkpoint directory; else the run's last checkpoint ('' when there is none: the weights in memory).
    A resume restores the best path from the resumed checkpoint, which may name any file: the path is the
    checkpoint's word, not this run's, so one outside the run's directory (or missing) is dropped, with a warning."""
    monitored = monitored_checkpoint(trainer)
    best = monitored.best_model_path if monitored is not None else ""
    if best and monitored.dirpath and Path(monitored.dirpath).resolve() in Path(best).resolve().parents \
            and Path(best).is_file():
        return best
    last = last_checkpoint_path(trainer)
    fallback = str(last) if last is not None and last.is_file() else ""
    if best:
        log.warning("The best checkpoint recorded in the resumed checkpoint, %s, is not a file in this run's "
                    "checkpoint directory (%s): evaluating %s instead", best, monitored.dirpath,
                    fallback or "the final weights")
    return fallback


def build_task(task_cfg: DictConfig, **values):
    """The LightningModule ``task_cfg._target_`` names, with the config's settings and ``values`` (which override
    them). The values (a model config read from a checkpoint, label names read from data) reach the constructor as
    they are, never through hydra.utils.instantiate: it would call a dict's _target_ and resolve a ${...} string."""
    from hydra.utils import get_class

    settings = OmegaConf.to_container(task_cfg, resolve=True)
    task_class = get_class(settings.pop("_target_"))
    return task_class(**{**settings, **values})


def close_trackers(trainer) -> None:
    """A W&B run stays open until the process exits: close it when the job is done, so that its files are complete
    and a second job in the same Python process starts a run of its own."""
    for logger in trainer.loggers:
        if type(logger).__name__ == "WandbLogger" and trainer.is_global_zero:
            logger.experiment.finish()


def resolve_ckpt_path(ckpt_path: str | None, output_dir: Path) -> str | None:
    """``ckpt_path=last``: the run directory's own checkpoints/last.ckpt (resume an interrupted run in place,
    with ``hydra.run.dir=<its directory>``); any other value is a path and must exist."""
    if not ckpt_path:
        return None
    path = output_dir / "checkpoints" / "last.ckpt" if ckpt_path == "last" else Path(ckpt_path)
    if not path.is_file():
        if ckpt_path == "last":
            raise ConfigError(f"ckpt_path=last: {path} does not exist; resume in the interrupted run's directory "
                              "with hydra.run.dir=outputs/<task>/<run>, or give ckpt_path=<path to a .ckpt>")
        raise ConfigError(f"ckpt_path={ckpt_path}: no such file; give the path of a .ckpt (or ckpt_path=last)")
    return str(path)


def apply_global_batch_size(trainer, datamodule, global_batch_size: int | None) -> dict[str, int]:
    """Keep the effective batch (per-device batch x accumulation x devices x nodes) constant when the number
    of devices changes. With ``global_batch_size`` set, ``data.batch_size`` is the most one device holds at
    once: the per-device batch and ``accumulate_grad_batches`` are derived from it (the fewest accumulation
    steps that fit). An integer ``trainer.val_check_interval`` counts optimizer steps, whatever the accumulation.
    Returns the figures, which are logged."""
    world = trainer.num_devices * trainer.num_nodes
    if global_batch_size:
        if global_batch_size % world:
            raise ConfigError(f"global_batch_size={global_batch_size} is not divisible by the {world} processes "
                              f"({trainer.num_devices} devices x {trainer.num_nodes} nodes); "
                              f"choose a multiple of {world}")
        share, most = global_batch_size // world, datamodule.batch_size
        accumulate = next(a for a in range(-(-share // most), share + 1) if share % a == 0)
        datamodule.batch_size = share // accumulate
        trainer.accumulate_grad_batches = accumulate
    if isinstance(trainer.val_check_interval, int) and trainer.accumulate_grad_batches > 1:
        # Lightning counts val_check_interval in batches, and with accumulation a batch is a fraction of a step:
        # validation (and last.ckpt) would come mid-step and more often than configured. It is optimizer steps.
        trainer.val_check_interval *= trainer.accumulate_grad_batches
    figures = {"per_device_batch_size": datamodule.batch_size,
               "accumulate_grad_batches": trainer.accumulate_grad_batches, "world_size": world}
    figures["effective_batch_size"] = figures["per_device_batch_size"] * figures["accumulate_grad_batches"] * world
    log.info("Effective batch %d = %d per device x %d accumulated x %d devices x %d nodes",
             figures["effective_batch_size"], datamodule.batch_size, trainer.accumulate_grad_batches,
             trainer.num_devices, trainer.num_nodes)
    for logger in trainer.loggers:
        logger.log_hyperparams(figures)
    return figures


def monitored_checkpoint(trainer):
    """The ModelCheckpoint callback that keeps the best checkpoint by a metric, or None."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    return next((cb for cb in trainer.checkpoint_callbacks
                 if isinstance(cb, ModelCheckpoint) and cb.monitor is not None), None)


def best_checkpoint(trainer) -> str:
    """The path of the best checkpoint by the monitored metric ('' when none was saved)."""
    monitored = monitored_checkpoint(trainer)
    return monitored.best_model_path if monitored is not None else ""


def quote_free_text(argv: list[str], keys: tuple[str, ...]) -> list[str]:
    """text="a gripping, beautifully acted film" reaches us as text=a gripping, ... which Hydra would read
    as a list; a text is always one string, so quote it for Hydra's grammar."""
    out = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key in keys and value and value[0] not in "'\"":
            # Hydra's quoted strings: a quote is escaped as \', and backslashes before a quote or at the end double
            escaped = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", value)
            arg = f"{key}='" + re.sub(r"(\\+)$", lambda m: m.group(1) * 2, escaped) + "'"
        out.append(arg)
    return out
