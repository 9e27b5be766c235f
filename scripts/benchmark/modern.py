"""The modern encoder against the classic one (``--sections modern``): bertlite against itself, no transformers.

- MLM training step: modernbert-mini as ``experiment=modern_mini`` trains it against bert-mini as
  ``experiment=gutenberg_mini`` does (each model config composed by Hydra from the experiment, as
  ``bertlite-pretrain`` composes it), on the same packed blocks and the same masks, at the benchmark's batch and
  sequence length. The reference row is bert-mini.
- Inference at ``--long-seq-len`` (512) tokens, the encoder's forward pass without gradients: modernbert-mini with
  its local layers, the same model with every layer global (``local_attention=0, global_attn_every_n_layers=1``),
  and bert-mini. The reference row is the all-global modernbert-mini, so the local row's ratio is what local
  attention pays at that length; its note gives it against bert-mini too. fp32 on a CPU, as ``bertlite.load``
  runs there; bf16 autocast on a GPU with bf16.

Both take their vocabulary and padding id from the benchmark's tokenizer (``--vocab-size``; the recipes'
vocabulary is 8,192) and the positions they need, everything else from the experiments.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from functools import partial

import torch

from bertlite.data.objectives import MaskedLM
from bertlite.data.tokenizer import PAD
from bertlite.models.config import BertConfig, config_from_dict
from bertlite.models.flops import training_flops
from bertlite.nn.stack import is_local_layer
from bertlite.precision import resolve_compile
from bertlite.tasks.optim import build_adamw, parameter_groups

from . import train
from .harness import QUICK_SHAPE, Case, paired_ratio, run_cases

# the model of each row and the experiment whose recipe it trains with
EXPERIMENTS = {"bert-mini": "gutenberg_mini", "modernbert-mini": "modern_mini"}
CLASSIC, MODERN = EXPERIMENTS
QUICK_WINDOW = 16  # --quick: a window shorter than the tiny sequences, so that the local path runs
ALL_GLOBAL = dict(local_attention=0, global_attn_every_n_layers=1)


@dataclass
class Recipe:
    """What one experiment sets for the benchmark: the model config's fields and the training step's settings."""

    experiment: str
    model: dict
    mlm_probability: float
    lr: float
    betas: tuple[float, float]
    eps: float
    weight_decay: float
    compile: str | bool


def experiment_recipes() -> dict[str, Recipe]:
    """{model: Recipe} for EXPERIMENTS, composed from conf/pretrain.yaml as the command line composes them."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from bertlite.cli.common import CONFIG_DIR, register_model_presets

    register_model_presets()
    recipes = {}
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        for name, experiment in EXPERIMENTS.items():
            cfg = compose("pretrain", overrides=[f"experiment={experiment}"])
            task = cfg.task
            recipes[name] = Recipe(experiment, OmegaConf.to_container(cfg.model, resolve=True),
                                   cfg.data.mlm_probability, task.lr, tuple(task.betas), task.eps,
                                   task.weight_decay, task.compile)
    return recipes


def model_config(env, recipe: Recipe, tokenizer, **overrides) -> BertConfig:
    """The recipe's model with the tokenizer's vocabulary and padding id, positions for the section's longest
    sequence; under --quick, the tiny shape and a window shorter than its sequences."""
    args = env.args
    values = {**recipe.model, **(QUICK_SHAPE if args.quick else {})}
    if args.quick and values.get("local_attention"):
        values["local_attention"] = QUICK_WINDOW
    return config_from_dict({**values, "vocab_size": tokenizer.get_vocab_size(), "pad_token_id":
                             tokenizer.token_to_id(PAD), "max_seq_len": max(args.seq_len, args.long_seq_len),
                             **overrides})


def describe(config: BertConfig) -> str:
    """The blocks of a config in a few words: 'pre-LN, geglu, rope, no biases, local 128 in 2 of 4 layers'."""
    local = sum(is_local_layer(i, config.local_attention, config.global_attn_every_n_layers)
                for i in range(config.n_layers))
    attention = f"local {config.local_attention} in {local} of {config.n_layers} layers" if local else "all global"
    return ", ".join(["pre-LN" if config.norm_first else "post-LN", config.activation, config.position,
                      "biases" if config.bias else "no biases", attention])


# --- the training step --------------------------------------------------------------------------------
def mlm_case(env, tokenizer, recipe: Recipe, blocks: list[list[dict]]) -> Case:
    from bertlite.models.encoder import BertForMaskedLM

    config = model_config(env, recipe, tokenizer)
    torch.manual_seed(0)  # the same masks for every row that masks at the same rate
    batches = [MaskedLM(tokenizer, mlm_probability=recipe.mlm_probability)(rows) for rows in blocks]
    predicted = round(sum(b["mlm_positions"].numel() for b in batches) / len(batches))
    model = BertForMaskedLM(config).to(env.device)
    if resolve_compile(recipe.compile, env.device):
        model.compile()
    optimizer = build_adamw(parameter_groups(model, recipe.weight_decay), recipe.lr, recipe.betas, recipe.eps)
    loss_fn = lambda m, b: m(b["input_ids"], mlm_positions=b["mlm_positions"],  # noqa: E731
                             mlm_labels=b["mlm_labels"]).loss
    tokens = len(blocks[0]) * env.args.seq_len
    flops = training_flops(config, len(blocks[0]), env.args.seq_len, predicted=predicted) / tokens
    return train.training_case(env, model, optimizer, loss_fn, batches, flops)


def training_table(env, tokenizer, recipes: dict[str, Recipe]) -> tuple[str, str, list[dict]]:
    args = env.args
    blocks = train.blocks(env, tokenizer, args.batch_size)
    factories = {f"{name}, experiment={recipe.experiment} ({describe(model_config(env, recipe, tokenizer))}, "
                 f"{recipe.mlm_probability:.0%} masked)": partial(mlm_case, env, tokenizer, recipe, blocks)
                 for name, recipe in recipes.items()}
    rows = run_cases(env, factories, args.reps, not args.no_memory, reference=CLASSIC)
    precision = "bf16 autocast" if env.bf16 else "fp32"
    title = (f"Modern encoder MLM training step, {MODERN} vs {CLASSIC}, batch {args.batch_size} x {args.seq_len}, "
             f"vocab {tokenizer.get_vocab_size()}, {precision}")
    return title, "tokens/s", rows


# --- inference ----------------------------------------------------------------------------------------
def inference_precision(env) -> str:
    return "bf16 autocast" if env.bf16 and env.device.type == "cuda" else "fp32"


def forward_case(env, config: BertConfig, batches: list[torch.Tensor]) -> Case:
    """The encoder's forward pass (hidden states, no head) on full blocks, under inference_mode; a step is one
    batch: (tokens, seconds)."""
    from bertlite.models.encoder import BertEncoder

    model = BertEncoder(config).to(env.device).eval()
    batches = [b.to(env.device) for b in batches]
    cycle = itertools.cycle(batches)
    cast = inference_precision(env) != "fp32"

    def step() -> tuple[int, float]:
        ids = next(cycle)
        env.sync()
        start = time.perf_counter()
        with torch.inference_mode(), torch.autocast(env.device.type, dtype=torch.bfloat16, enabled=cast):
            model(ids)
        env.sync()
        return ids.numel(), time.perf_counter() - start

    b, t = batches[0].shape
    flops = training_flops(config, b, t, predicted=0) / 3 / (b * t)  # forward: a third of forward + backward
    return Case(lambda: [step() for _ in range(env.args.steps)], lambda: [step() for _ in range(env.args.warmup)],
                flops, step=step)


def long_blocks(env, tokenizer) -> list[torch.Tensor]:
    """train.N_BATCHES batches of --long-batch-size packed blocks of --long-seq-len token ids."""
    args = env.args
    ds = train.datamodule(tokenizer, args.long_seq_len, args.long_batch_size).train_dataset
    ids = [ds[i % len(ds)]["input_ids"] for i in range(train.N_BATCHES * args.long_batch_size)]
    return [torch.stack(ids[k * args.long_batch_size:(k + 1) * args.long_batch_size])
            for k in range(train.N_BATCHES)]


def inference_table(env, tokenizer, recipes: dict[str, Recipe]) -> tuple[str, str, list[dict]]:
    args = env.args
    batches = long_blocks(env, tokenizer)
    local, every_global, classic = (model_config(env, recipes[MODERN], tokenizer),
                                    model_config(env, recipes[MODERN], tokenizer, **ALL_GLOBAL),
                                    model_config(env, recipes[CLASSIC], tokenizer))
    local_name = f"{MODERN} ({describe(local)})"
    reference = f"{MODERN}, every layer global"
    factories = {local_name: partial(forward_case, env, local, batches),
                 f"{reference} (local_attention=0, global_attn_every_n_layers=1)":
                 partial(forward_case, env, every_global, batches),
                 f"{CLASSIC} ({describe(classic)})": partial(forward_case, env, classic, batches)}
    rows = run_cases(env, factories, args.reps, not args.no_memory, reference=reference)
    ours = next((r for r in rows if r["case"] == local_name), None)
    bert = next((r for r in rows if r["case"].startswith(CLASSIC)), None)
    if ours and bert:  # paired round by round, as the ratio column
        ours["vs_classic"], low, high = paired_ratio(ours["step_rates"], bert["step_rates"])
        ours["note"] = f"{ours['vs_classic']:.2f}× {CLASSIC} [{low:.2f}–{high:.2f}]"
    title = (f"Modern encoder inference, {args.long_batch_size} x {args.long_seq_len} tokens, encoder forward, "
             f"vocab {tokenizer.get_vocab_size()}, {inference_precision(env)}")
    return title, "tokens/s", rows


def modern_sections(env, tokenizer) -> list:
    recipes = experiment_recipes()
    return [training_table(env, tokenizer, recipes), inference_table(env, tokenizer, recipes)]
