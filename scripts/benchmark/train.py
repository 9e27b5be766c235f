"""The pretraining sections of the benchmark: the MLM step (bert-mini, bert-base), the causal-LM step
(gpt-mini against GPT2LMHeadModel) and bertlite's DataLoaders timed alone.

Both libraries train on the same packed blocks of real text (bertlite's PretrainingDataModule). bertlite's
batches come from its own objective (dynamic masking, loss only at the masked positions); transformers'
from DataCollatorForLanguageModeling (labels with -100 elsewhere, logits at every position).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import torch
from omegaconf import OmegaConf

from bertlite.data.objectives import CausalLM, MaskedLM
from bertlite.data.pretraining import PretrainingDataModule
from bertlite.models.flops import training_flops
from bertlite.precision import resolve_compile
from bertlite.tasks.optim import build_adamw, parameter_groups

from . import text
from .harness import Case, run_cases

CONF = Path(__file__).resolve().parents[2] / "conf"
N_BATCHES = 4  # distinct batches per case, cycled (masks differ from step to step)


def recipe() -> dict:
    """bertlite's default bert-mini pretraining recipe: conf/task/mlm.yaml (over the shared conf/task/_optim.yaml)
    and conf/experiment/gutenberg_mini.yaml."""
    exp = OmegaConf.load(CONF / "experiment" / "gutenberg_mini.yaml")
    task = OmegaConf.merge(OmegaConf.load(CONF / "task" / "_optim.yaml"), OmegaConf.load(CONF / "task" / "mlm.yaml"))
    return dict(dropout=exp.model.dropout, attention_dropout=exp.model.attention_dropout,
                mlm_probability=exp.data.mlm_probability, lr=exp.task.lr,
                betas=tuple(task.betas), eps=task.eps, weight_decay=task.weight_decay, compile=task.compile)


def datamodule(tokenizer, seq_len: int, batch_size: int, objective: str = "mlm", mlm_probability: float = 0.15):
    dm = PretrainingDataModule(tokenizer, objective=objective, source="files",
                               train_files=str(text.WORK / "corpus.txt"), format="text", max_seq_len=seq_len,
                               batch_size=batch_size, mlm_probability=mlm_probability, max_eval_blocks=64, seed=0)
    dm.build()
    return dm


def blocks(env, tokenizer, batch_size: int) -> list[list[dict]]:
    """N_BATCHES lists of ``batch_size`` packed blocks of ``seq_len`` token ids (rows: {"input_ids": list})."""
    ds = datamodule(tokenizer, env.args.seq_len, batch_size).train_dataset
    rows = [{"input_ids": ds[i % len(ds)]["input_ids"].tolist()} for i in range(N_BATCHES * batch_size)]
    return [rows[k * batch_size:(k + 1) * batch_size] for k in range(N_BATCHES)]


def training_case(env, model, optimizer, loss_fn, batches: list[dict], flops_per_token: float):
    device, steps = env.device, env.args.steps
    batches = [text.to_device(b, device) for b in batches]
    cycle = itertools.cycle(batches)

    def step() -> tuple[int, float]:
        """One timed step: (tokens, seconds)."""
        batch = next(cycle)
        env.sync()
        start = time.perf_counter()
        text.train_step(env, model, optimizer, loss_fn, batch)
        env.sync()
        return batch["input_ids"].numel(), time.perf_counter() - start

    model.train()
    return Case(lambda: [step() for _ in range(steps)], lambda: [step() for _ in range(env.args.warmup)],
                flops_per_token, step=step)


def hf_adamw(model, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
    """What HF's Trainer builds by default (optim="adamw_torch_fused" with torch >= 2.8), bertlite's groups."""
    return torch.optim.AdamW(parameter_groups(model, weight_decay), lr=lr, betas=betas, eps=eps, fused=True)


@dataclass
class MlmShape:
    """What the MLM cases of one model size share: the preset, the batch and the packed blocks they train on."""

    size: str
    batch_size: int
    blocks: list[list[dict]]
    vocab: int
    seq_len: int

    @property
    def tokens(self) -> int:
        return self.batch_size * self.seq_len


def bertlite_mlm_case(env, tokenizer, shape: MlmShape, r: dict, dropout: float, mlm_probability: float,
                      compile: bool = False) -> Case:
    from bertlite.models.encoder import BertForMaskedLM

    config = env.model_config(shape.size, vocab_size=shape.vocab, dropout=dropout, attention_dropout=dropout)
    objective = MaskedLM(tokenizer, mlm_probability=mlm_probability)
    batches = [objective(rs) for rs in shape.blocks]
    predicted = sum(b["mlm_positions"].numel() for b in batches) / len(batches)
    model = BertForMaskedLM(config).to(env.device)
    if compile:
        model.compile()
    optimizer = build_adamw(parameter_groups(model, r["weight_decay"]), r["lr"], r["betas"], r["eps"])
    loss_fn = lambda m, b: m(b["input_ids"], mlm_positions=b["mlm_positions"],  # noqa: E731
                             mlm_labels=b["mlm_labels"]).loss
    flops = training_flops(config, shape.batch_size, shape.seq_len, predicted=round(predicted)) / shape.tokens
    return training_case(env, model, optimizer, loss_fn, batches, flops)


def hf_mlm_case(env, shape: MlmShape, r: dict, hf_collate, compile: bool = False) -> Case:
    from transformers import AutoModelForMaskedLM

    config = env.model_config(shape.size, vocab_size=shape.vocab, dropout=0.1, attention_dropout=0.1)
    hf_model = AutoModelForMaskedLM.from_config(text.hf_bert_config(config, "BertForMaskedLM"),
                                                attn_implementation="sdpa").to(env.device)
    if compile:
        hf_model.compile()
    batches = [hf_collate(rs) for rs in shape.blocks]
    loss_fn = lambda m, b: m(input_ids=b["input_ids"], labels=b["labels"]).loss  # noqa: E731
    flops = training_flops(config, shape.batch_size, shape.seq_len) / shape.tokens  # logits at every position
    return training_case(env, hf_model, hf_adamw(hf_model, r["lr"], r["betas"], r["eps"]), loss_fn, batches, flops)


def fit_mlm_case(env, tokenizer, shape: MlmShape, r: dict, dropout: float, mlm_probability: float) -> Case:
    from .trainer_fit import pretrain_case  # Lightning and Hydra, only where this row runs

    config = env.model_config(shape.size, vocab_size=shape.vocab, dropout=dropout, attention_dropout=dropout)
    dm = datamodule(tokenizer, shape.seq_len, shape.batch_size, mlm_probability=mlm_probability)
    predicted = round(mlm_probability * shape.batch_size * (shape.seq_len - 1))
    flops = training_flops(config, shape.batch_size, shape.seq_len, predicted=predicted) / shape.tokens
    return pretrain_case(env, config, r, dm, flops, tuple(env.args.fit_overrides), interleave="default recipe")


def mlm_factories(env, tokenizer, shape: MlmShape, r: dict, hf_collate) -> dict:
    """The MLM rows of one model size: bertlite's default recipe (bare, and through Trainer.fit), bertlite with
    HF's hyperparameters, transformers; with --compile, both compiled."""
    p, d = r["mlm_probability"], r["dropout"]
    bertlite = partial(bertlite_mlm_case, env, tokenizer, shape, r)
    factories = {f"bertlite, default recipe (dropout {d}, {p:.0%} masked, logits at masked only)":
                 partial(bertlite, d, p, resolve_compile(r["compile"], env.device)),  # task.compile's default
                 "the same through bertlite-pretrain's Trainer.fit (callbacks, logging, data loader)":
                 partial(fit_mlm_case, env, tokenizer, shape, r, d, p),
                 "bertlite, HF hyperparameters (dropout 0.1, 15% masked)": partial(bertlite, 0.1, 0.15),
                 "transformers BertForMaskedLM, sdpa (dropout 0.1, 15% masked)":
                 partial(hf_mlm_case, env, shape, r, hf_collate)}
    if env.args.compile:
        factories["bertlite, default recipe + torch.compile"] = partial(bertlite, d, p, True)
        factories["transformers BertForMaskedLM, sdpa + torch.compile"] = partial(hf_mlm_case, env, shape, r,
                                                                                   hf_collate, compile=True)
    return factories


def mlm_sections(env, tokenizer) -> list:
    from transformers import DataCollatorForLanguageModeling

    args, r = env.args, recipe()
    vocab = tokenizer.get_vocab_size()
    hf_tok = text.hf_tokenizer(tokenizer, args.seq_len)
    hf_collate = DataCollatorForLanguageModeling(hf_tok, mlm_probability=0.15, return_tensors="pt")
    results = []
    batch_sizes = {"bert-mini": args.batch_size, "bert-base": args.base_batch_size}
    for size in args.mlm_sizes:
        batch_size = batch_sizes.get(size, args.base_batch_size)
        shape = MlmShape(size, batch_size, blocks(env, tokenizer, batch_size), vocab, args.seq_len)
        precision = "bf16 autocast" if env.bf16 else "fp32"
        title = f"MLM training step, {size}, batch {batch_size} x {args.seq_len}, vocab {vocab}, {precision}"
        rows = run_cases(env, mlm_factories(env, tokenizer, shape, r, hf_collate), args.reps, not args.no_memory)
        fit = next((row for row in rows if "of_interleaved" in row), None)
        if fit:  # each Trainer.fit step against the bare step taken just before it
            fit["of_bare_step"] = fit["of_interleaved"]
            fit["note"] = "{:.1%} of the bare step [{:.1%}–{:.1%}]".format(fit["of_bare_step"],
                                                                          *fit["of_interleaved_range"])
        results.append((title, "tokens/s", rows))
    return results


def clm_sections(env, tokenizer) -> list:
    from transformers import AutoModelForCausalLM, GPT2Config

    from bertlite.models.decoder import GPTForCausalLM

    args = env.args
    vocab, batch_size = tokenizer.get_vocab_size(), args.batch_size
    config = env.model_config("gpt-mini", vocab_size=vocab)  # dropout 0.1 as GPT-2
    tokens = batch_size * args.seq_len
    flops = training_flops(config, batch_size, args.seq_len) / tokens
    batches = [CausalLM(tokenizer)([{"input_ids": torch.tensor(r["input_ids"])} for r in rs])
               for rs in blocks(env, tokenizer, batch_size)]

    def bertlite_case(compile: bool = False):
        def make():
            model = GPTForCausalLM(config).to(env.device)
            if compile:
                model.compile()
            loss_fn = lambda m, b: m.loss(b["input_ids"])[0]  # noqa: E731
            return training_case(env, model, build_adamw(parameter_groups(model, 0.01), 1e-3), loss_fn,
                                 batches, flops)
        return make

    def hf_case():
        hf_config = GPT2Config(vocab_size=vocab, n_positions=config.max_seq_len, n_embd=config.d_model,
                               n_layer=config.n_layers, n_head=config.n_heads, n_inner=config.d_ff,
                               activation_function="gelu", resid_pdrop=config.dropout, embd_pdrop=config.dropout,
                               attn_pdrop=config.attention_dropout, layer_norm_epsilon=config.layer_norm_eps,
                               bos_token_id=tokenizer.token_to_id("[CLS]"), eos_token_id=tokenizer.token_to_id("[SEP]"))
        model = AutoModelForCausalLM.from_config(hf_config, attn_implementation="sdpa").to(env.device)
        loss_fn = lambda m, b: m(input_ids=b["input_ids"], labels=b["input_ids"]).loss  # noqa: E731
        return training_case(env, model, hf_adamw(model, 1e-3), loss_fn, batches, flops)

    factories = {"bertlite GPTForCausalLM": bertlite_case(), "transformers GPT2LMHeadModel, sdpa": hf_case}
    if args.compile:
        factories["bertlite GPTForCausalLM + torch.compile"] = bertlite_case(True)
    precision = "bf16 autocast" if env.bf16 else "fp32"
    title = (f"Causal LM training step, gpt-mini shape, batch {batch_size} x {args.seq_len}, vocab {vocab}, "
             f"dropout 0.1, {precision}")
    return [(title, "tokens/s", run_cases(env, factories, args.reps, not args.no_memory))]


def loader_sections(env, tokenizer, done: dict) -> list:
    """bertlite's training DataLoaders alone (collation and masking included, no model): batches/s, against
    the batches/s the bertlite training step consumes where that section ran in this process."""
    args = env.args
    n = 5 if args.quick else 50

    def timed(loader) -> Callable[[], int]:
        def run() -> int:
            return sum(1 for _ in itertools.islice(iter(loader), n))
        return run

    def pretraining():
        loader = datamodule(tokenizer, args.seq_len, args.batch_size, mlm_probability=recipe()["mlm_probability"]
                            ).train_dataloader()
        return Case(timed(loader), lambda: next(iter(loader)))

    def finetuning():
        loader = text.finetune_datamodule(args, tokenizer).train_dataloader()
        return Case(timed(loader), lambda: next(iter(loader)))

    rows = run_cases(env, {f"pretraining: PretrainingDataModule + MaskedLM, batch {args.batch_size}": pretraining,
                           "fine-tuning: ClassificationDataModule, SST-2, batch "
                           f"{args.finetune_batch_size}": finetuning}, args.reps, memory=False)
    consumers = [("mlm", 0, args.batch_size * args.seq_len), ("finetune", 0, args.finetune_batch_size)]
    for row, (section, index, per_batch) in zip(rows, consumers):
        if section in done:
            steps_per_sec = done[section][0]["rows"][index]["median"] / per_batch
            row["note"] = f"{row['median'] / steps_per_sec:.0f}x the {steps_per_sec:.1f} batches/s training uses"
    return [("DataLoader alone (bertlite)", "batches/s", rows)]
