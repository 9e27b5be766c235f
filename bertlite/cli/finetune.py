"""bertlite-finetune: fine-tune a classifier or a token tagger (NER), from a pretrained model or from scratch.

    bertlite-finetune data=sst2 pretrained=outputs/pretrain/<run>/checkpoints/last.ckpt
    bertlite-finetune data=mrpc pretrained=... task.lr=5e-5
    bertlite-finetune data=csv data.train_file=train.csv data.text_column=review data.label_column=stars
    bertlite-finetune data=sst2 pretrained=null model=bert-mini          # random initialisation (ablation)
    bertlite-finetune data=sst2 pretrained=hf:/path/to/hf_bert_folder    # a Hugging Face BERT folder
    bertlite-finetune task=token_classification data=conll2003 tokenizer.lowercase=false   # NER

At the end the best checkpoint (by the data set's metric) is evaluated on validation and test data,
and the numbers are written to metrics.json in the run directory.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from omegaconf import DictConfig, OmegaConf

from bertlite.atomic import write_text_atomically
from bertlite.cli.common import (CONFIG_DIR, apply_global_batch_size, build_task, check_vocabulary, close_trackers,
                                 evaluation_checkpoint, exit_on_user_error, fit, instantiate_group, is_rank_zero,
                                 overridden, prepare_tokenizer, register_model_presets, resolve_ckpt_path,
                                 save_resolved_config)
from bertlite.errors import ConfigError
from bertlite.memory import retain_freed_memory
from bertlite.positions import SequenceLengths, sequence_lengths

if TYPE_CHECKING:
    from bertlite.models.config import ModelConfig

log = logging.getLogger("bertlite.finetune")


def finetune(cfg: DictConfig) -> dict:
    """Fine-tune on data=, evaluate the best checkpoint, and write the report (metrics.json); returns the report."""
    import lightning as L
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import get_class, instantiate

    from bertlite.sources import read_checkpoint

    started = time.perf_counter()
    retain_freed_memory()  # no page faults for every step's large tensors (bertlite/memory.py)
    L.seed_everything(cfg.seed, workers=True)
    output_dir = Path(HydraConfig.get().runtime.output_dir)

    datamodule = instantiate(cfg.data)
    task_class = get_class(cfg.task._target_)  # ClassificationTask, TokenClassificationTask
    check_data_fits_task(datamodule, task_class)
    trust = cfg.trust_checkpoint
    pretrained = read_pretrained(cfg.pretrained, trust) if cfg.pretrained else None
    tokenizer = set_up_tokenizer(cfg, datamodule, pretrained, output_dir)
    model_config, lengths = finetune_model_config(cfg, pretrained, tokenizer)

    label_names = datamodule.find_label_names()
    task_options = datamodule.task_options()  # the problem type of classification data
    metric = task_class.resolve_metric(cfg.data.metric, len(label_names), **task_options)
    run_config = OmegaConf.merge(cfg, {"data": {"metric": metric}})  # the callbacks monitor val/${data.metric}
    if is_rank_zero():
        save_resolved_config(run_config, output_dir)
    task = build_task(cfg.task, model=model_config, num_labels=len(label_names), label_names=label_names,
                      metric=metric, max_seq_len=lengths.truncation, **task_options,
                      **weighting(cfg, datamodule, label_names))
    start_from(task, pretrained, tokenizer, lengths)
    log.info("Fine-tuning %s on %s (metric %s), %s", model_config.arch, describe_target(label_names, task_options),
             metric, f"from {cfg.pretrained}" if pretrained is not None else "from random initialisation")

    trainer: L.Trainer = instantiate(run_config.trainer, callbacks=instantiate_group(run_config.get("callbacks")),
                                     logger=instantiate_group(run_config.get("logger")) or False)
    apply_global_batch_size(trainer, datamodule, cfg.get("global_batch_size"))
    ckpt_path = resolve_ckpt_path(cfg.ckpt_path, output_dir)
    if ckpt_path:  # refused, damaged or mismatched files fail here, in one line, before Lightning opens them
        task.check_resume(read_checkpoint(ckpt_path, expect_task=task_class.task_name, trust=trust), ckpt_path)
    fit(trainer, task, datamodule, ckpt_path, trust)
    train_seconds = time.perf_counter() - started

    best, results = final_evaluation(trainer, task, datamodule, trust)
    report = {"metric": metric, "labels": label_names, "best_checkpoint": best,
              "pretrained": cfg.pretrained, "train_seconds": round(train_seconds, 1),
              "train_examples": len(datamodule.datasets["train"]),
              **{split: {k: float(v) for k, v in m.items()} for split, m in results.items()}}
    if trainer.is_global_zero:
        write_report(report, output_dir)
    close_trackers(trainer)
    return report


def set_up_tokenizer(cfg: DictConfig, datamodule, pretrained: dict | None, output_dir: Path):
    """The run's tokenizer, given to the data: the pretrained model's, or tokenizer= (which must then match the
    pretrained vocabulary), or one trained on the data."""
    datamodule.set_tokenizer(prepare_tokenizer(cfg.tokenizer, output_dir / "tokenizer.json", datamodule.train_texts,
                                               checkpoint=pretrained))
    if pretrained is not None and cfg.tokenizer.path:
        check_vocabulary(datamodule.tokenizer, pretrained, cfg.pretrained)
    return datamodule.tokenizer


def start_from(task, pretrained: dict | None, tokenizer, lengths: SequenceLengths) -> None:
    """The pretrained encoder's weights (when there is one), and what every checkpoint of the task records."""
    from bertlite.data.special_tokens import special_tokens

    if pretrained is not None:
        task.load_encoder(pretrained["state_dict"])
    task.tokenizer_json = tokenizer.to_str()
    task.special_tokens = special_tokens(tokenizer).to_dict()  # the roles, saved beside the tokenizer
    task.trained_seq_len = lengths.trained


def write_report(report: dict, output_dir: Path) -> None:
    write_text_atomically(output_dir / "metrics.json", json.dumps(report, indent=2) + "\n")
    log.info("Validation %s: %s", report["metric"], report["validation"].get(f"val/{report['metric']}"))
    log.info("Wrote %s", output_dir / "metrics.json")


def read_pretrained(source: str, trust: bool) -> dict:
    """pretrained=: a pretraining checkpoint (MLM, CLM, seq2seq, encoder) or model folder, or hf:<folder>, an HF BERT
    with any head (its encoder is used; a classifier head in it is not)."""
    from bertlite.sources import read_checkpoint

    tasks = None if str(source).startswith("hf:") else ("mlm", "clm", "seq2seq", "encoder")
    return read_checkpoint(source, tasks, trust)


def describe_target(label_names: list[str], task_options: dict) -> str:
    if task_options.get("problem_type") == "regression":
        return f"a regression of {label_names[0]!r}"
    return f"{len(label_names)} labels {label_names}"


def final_evaluation(trainer, task, datamodule, trust: bool) -> tuple[str, dict]:
    """Validation and test scores of the best checkpoint (a file of this run's, opened weights-only unless
    trust_checkpoint=true): (its path, {split: metrics})."""
    best = evaluation_checkpoint(trainer)
    evaluate = dict(datamodule=datamodule, ckpt_path=best or None, verbose=False, weights_only=not trust)
    results = {"validation": trainer.validate(task, **evaluate)[0]}
    if datamodule.test_dataloader():
        results["test"] = trainer.test(task, **evaluate)[0]
    return best, results


def check_data_fits_task(datamodule, task_class) -> None:
    """Classification data for a classification task, NER data for token classification."""
    from hydra.core.hydra_config import HydraConfig

    data_task = getattr(datamodule, "task_name", "classification")
    if data_task != task_class.task_name:
        choices = HydraConfig.get().runtime.choices
        if task_class.task_name == "token_classification":  # the default data (sst2) is sentence classification
            raise ConfigError(f"data={choices.get('data')} is {data_task} data but task={choices.get('task')} tags "
                              "words: add data=conll2003 (CoNLL-2003 under paths.data_dir), data=conll "
                              "data.train_file=<CoNLL column file> or data=ner_jsonl data.train_file=<file.jsonl>, "
                              "or use task=classification")
        raise ConfigError(f"data={choices.get('data')} is {data_task} data but task={choices.get('task')} is "
                          f"{task_class.task_name}: add task={data_task} (or choose a {task_class.task_name} data set)")


def finetune_model_config(cfg: DictConfig, pretrained: dict | None,
                          tokenizer) -> tuple[ModelConfig, SequenceLengths]:
    """The checked model config (the pretrained checkpoint's, or model= for random initialisation, with this run's
    dropout), and the run's sequence lengths."""
    from bertlite.data.special_tokens import special_id
    from bertlite.models.config import config_from_dict

    if pretrained is not None:  # read_checkpoint has checked the file's values
        values = dict(pretrained["bertlite"]["model_config"])
        trained_len = pretrained["bertlite"].get("trained_seq_len")
    else:
        values = OmegaConf.to_container(cfg.model, resolve=True)
        values.update(vocab_size=tokenizer.get_vocab_size(),
                      pad_token_id=special_id(tokenizer, "pad", "the model's padding embedding (model.pad_token_id)"))
        trained_len = None
    values.update(dropout=cfg.dropout, attention_dropout=cfg.dropout)
    config = config_from_dict(values)  # validates the fields
    lengths = sequence_lengths("finetune", config, cfg.data.max_seq_len, trained_len=trained_len,
                               source=cfg.pretrained if pretrained is not None else None,
                               explicit_model_len=overridden("model.max_seq_len"))
    return dataclasses.replace(config, max_seq_len=lengths.model), lengths


def weighting(cfg: DictConfig, datamodule, label_names: list[str]) -> dict:
    """task.class_weights as the task's class_weights argument (none when the setting is null)."""
    if cfg.task.get("class_weights") is None:
        return {}
    from bertlite.tasks.classification import class_weights

    setting = cfg.task.class_weights
    weights = class_weights(setting if isinstance(setting, str) else list(setting), datamodule.label_counts(),
                            label_names)
    log.info("Class weights (task.class_weights=%s): %s", setting,
             {n: round(w, 4) for n, w in zip(label_names, weights)})
    return {"class_weights": weights}


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="finetune")
@exit_on_user_error
def _main(cfg: DictConfig) -> float | None:
    """Returns the validation metric of the best checkpoint: a sweeper (hparams_search=...) maximises it."""
    report = finetune(cfg)
    value = report["validation"].get(f"val/{report['metric']}")
    return None if value is None else float(value)


def main() -> None:
    register_model_presets()
    sweeps = [a for a in sys.argv[1:] if a.startswith("hparams_search=") and a != "hparams_search=null"]
    if sweeps and importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is None:
        print(f"error: {sweeps[0]} needs Hydra's Optuna sweeper: pip install -e \".[optuna]\" "
              "(or pip install hydra-optuna-sweeper)", file=sys.stderr)
        sys.exit(2)
    _main()


if __name__ == "__main__":
    main()
