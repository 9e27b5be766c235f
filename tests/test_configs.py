"""Every config composes, alone and as the options of every group; presets are typed config options."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from bertlite.cli.common import CONFIG_DIR, register_model_presets
from bertlite.models.config import PRESETS
from bertlite.precision import fast_precision

PRIMARY = ["pretrain", "finetune", "predict", "generate", "attention", "compare", "glue"]
REQUIRED = {"predict": ["checkpoint=x.ckpt"], "generate": ["checkpoint=x.ckpt", "prompt=x"],
            "attention": ["checkpoint=x.ckpt", "text=x"], "glue": ["pretrained=x.ckpt"]}
GROUPS = ["data", "task", "trainer", "schedule", "callbacks", "logger", "experiment", "debug",
          "hparams_search"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml") if not p.stem.startswith("_"))


def compose_resolved(config_name: str, overrides: list[str]):
    register_model_presets()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = "/tmp/bertlite-config-test"
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            del cfg["hydra"]
        # resolve every interpolation; ??? (required) values may stay missing
        container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    return cfg, container


def is_pretraining_data(option: str) -> bool:
    return "_pretraining" in (Path(CONFIG_DIR) / "data" / f"{option}.yaml").read_text()


def primary_for(group: str, option: str) -> str:
    """Each option composes under the entry point it belongs to."""
    finetuning_tasks = ("classification", "token_classification")
    if group == "data" and not is_pretraining_data(option) or group == "task" and option in finetuning_tasks \
            or group in ("callbacks", "schedule") and option.startswith("finetune") \
            or group == "hparams_search":
        return "finetune"
    return "pretrain"


CASES = [(p, REQUIRED.get(p, [])) for p in PRIMARY]
CASES += [(primary_for(g, o), [f"{g}={o}"]) for g in GROUPS for o in options(g)]
CASES += [(p, [f"model={name}"]) for name in PRESETS for p in ("pretrain", "finetune")]


@pytest.mark.parametrize("config_name,overrides", CASES, ids=lambda x: "-".join(x) if isinstance(x, list) else x)
def test_config_composes(config_name, overrides):
    cfg, container = compose_resolved(config_name, overrides)
    if config_name in ("pretrain", "finetune"):
        assert container["model"]["arch"] in ("bert", "gpt", "transformer")
        assert container["trainer"]["_target_"] == "lightning.Trainer"


def test_every_group_has_options():
    for group in GROUPS:
        assert options(group), f"conf/{group} holds no options"


@pytest.mark.parametrize("data", options("data"))
def test_data_configs_instantiate(data):
    primary = primary_for("data", data)
    required = "data.train_files=x.txt" if primary == "pretrain" else "data.train_file=x.csv"
    cfg, _ = compose_resolved(primary, [f"data={data}", required, "data.path=x"])
    datamodule = instantiate(cfg.data)
    assert datamodule.max_seq_len == cfg.data.max_seq_len


def test_preset_values_flow_into_the_config():
    _, c = compose_resolved("pretrain", ["model=bert-mini", "model.dropout=0.0"])
    assert (c["model"]["n_layers"], c["model"]["d_model"], c["model"]["dropout"]) == (4, 256, 0.0)


def test_unknown_preset_and_bad_types_are_refused():
    with pytest.raises(ConfigCompositionException):
        compose_resolved("pretrain", ["model=bert-huge"])
    with pytest.raises(Exception, match="n_layers"):
        compose_resolved("pretrain", ["model.n_layers=many"])


@pytest.mark.parametrize("arch,task", [("bert", "mlm"), ("gpt", "clm"), ("transformer", "seq2seq")])
def test_every_architecture_composes_with_its_task(arch, task):
    _, c = compose_resolved("pretrain", [f"model={arch}-mini", f"task={task}"])
    assert c["model"]["arch"] == arch and c["task"]["_target_"].endswith(
        {"mlm": "MaskedLMTask", "clm": "CausalLMTask", "seq2seq": "Seq2SeqTask"}[task])


def test_experiment_changes_only_what_it_names():
    _, base = compose_resolved("pretrain", ["model=bert-mini", "data=gutenberg"])
    _, exp = compose_resolved("pretrain", ["experiment=gutenberg_mini"])
    assert exp["model"]["dropout"] == 0.0 and exp["trainer"]["precision"] == fast_precision("cpu")
    assert exp["data"]["train_files"] == base["data"]["train_files"]


def test_slurm_launcher_takes_its_shape_from_the_trainer():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    register_model_presets()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="pretrain", return_hydra_config=True,
                      overrides=["hydra/launcher=slurm", "trainer=ddp_multinode", "trainer.num_nodes=2",
                                 "trainer.devices=8"])
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert (launcher["nodes"], launcher["tasks_per_node"], launcher["gpus_per_node"]) == (2, 8, 8)
