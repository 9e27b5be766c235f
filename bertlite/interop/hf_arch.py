"""What bertlite needs to know about one Hugging Face architecture to read and write its folders.

Each architecture bertlite reads (hf_bert.py, hf_roberta.py) is one ``HFArchitecture``: its config.json mapping,
its class names and one table of weight names. The import and export code (hf_import.py, hf_export.py) is written
once against this record, and ``architectures.py`` lists the records. A new architecture is one more file with
one more record: bertlite's side of every table is a bertlite BERT model (``bert.*`` backbone, heads).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Collection

import torch

from bertlite.models.config import ModelConfig
from bertlite.nn.attention import split_qkv

Names = dict[str, str]  # bertlite weight name -> HF weight name


def with_biases(modules: Names) -> Names:
    """{bertlite module: HF module} -> the same for their weights and biases."""
    return {f"{ours}.{p}": f"{theirs}.{p}" for ours, theirs in modules.items() for p in ("weight", "bias")}


@dataclass(frozen=True)
class HFArchitecture:
    """One HF architecture. Weight tables map bertlite names to HF names; {i} in ``layer`` is the layer index.
    HF names are the ones its ``*For*`` classes save, under ``prefix``; a base-model folder saves them without it."""

    name: str  # for messages: "BERT", "RoBERTa"
    model_type: str  # config.json's model_type
    prefix: str  # the backbone's weight-name prefix in HF's *For* classes ("bert", "roberta")
    classes: dict[str, str]  # bertlite task -> the HF class an export names (and an import recognises)
    embeddings: Names  # bertlite name without "bert." -> HF name without the prefix
    layer: Names  # one layer: bertlite name under "bert.encoder.layers.{i}." -> HF name under the prefix, with {i}
    heads: dict[str, Names]  # task (and "pooler": a base model's pooler) -> full bertlite name -> full HF name
    # (task, HF names) in order: the first task whose names are all in a folder is what the folder holds, where
    # config.json's architectures name no class of ``classes``; none matching: an encoder
    markers: tuple[tuple[str, tuple[str, ...]], ...]
    ignored: re.Pattern  # HF names with no bertlite counterpart that are no loss (recomputed buffers, tied copies)
    tied_decoder: str  # HF name of the MLM decoder weight, which bertlite ties to the word embeddings
    config_from_hf: Callable[[dict], dict]  # config.json -> bertlite BertConfig fields (ConfigError if inexpressible)
    # (config, HF class, label names, problem type) -> config.json; ConfigError naming what HF cannot express
    config_to_hf: Callable[..., dict]
    field_names: Names  # bertlite config field -> the config.json key it came from, for messages
    exports: Callable[[ModelConfig], bool]  # whether a bertlite config is this architecture on export
    also_reads: dict[str, str] = field(default_factory=dict)  # further HF classes -> the task they import as
    base_names: tuple[str, ...] = ("embeddings.", "encoder.", "pooler.")  # how a base model's weight names begin
    # True: HF stacks query, key and value in one matrix, as bertlite's qkv_proj (ModernBERT's Wqkv); False: HF
    # keeps them apart (BERT's query, key, value), and bertlite's are split on export and stacked on import
    fused_qkv: bool = False
    # config.json's key for the sequence classifier's pooling, whose values are bertlite's names of ``poolings``;
    # None: the classifier pools the first token
    pooling_key: str | None = None
    poolings: tuple[str, ...] = ("cls",)
    # the tokenizer's {role: id} -> config.json's special-token ids (cls_token_id, ...); None: config.json has none
    special_token_ids: Callable[[dict[str, int]], dict] | None = None

    def backbone_names(self, n_layers: int, has: Collection[str] | None = None) -> Names:
        """bertlite ``bert.*`` name -> HF ``<prefix>.*`` name, for every encoder weight; with ``has`` (a model's
        weight names), only the weights that model has (a table may list biases that a bias-free model lacks)."""
        names = {f"bert.{ours}": f"{self.prefix}.{theirs}" for ours, theirs in self.embeddings.items()}
        for i in range(n_layers):
            for ours, theirs in self.layer.items():
                names[f"bert.encoder.layers.{i}.{ours}"] = f"{self.prefix}.{theirs.format(i=i)}"
        return names if has is None else {ours: theirs for ours, theirs in names.items() if ours in has}

    def weight_names(self, task: str, n_layers: int, pooler: bool = False,
                     has: Collection[str] | None = None) -> Names:
        """Every weight of a bertlite model of ``task`` -> its HF name (an encoder's pooler with ``pooler``); with
        ``has``, only those of that model's weight names."""
        names = self.backbone_names(n_layers)
        names.update(self.heads.get("pooler" if task == "encoder" and pooler else task, {}))
        return names if has is None else {ours: theirs for ours, theirs in names.items() if ours in has}

    def hf_layout(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A bertlite state dict with its attention projections laid out as HF's (q, k and v apart or stacked)."""
        return state if self.fused_qkv else split_qkv(state)

    def normalise(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """HF weights under the names their *For* classes save: the prefix added where a base model saved none,
        and the LayerNorm ``gamma``/``beta`` of old TF-converted checkpoints renamed ``weight``/``bias``."""
        out = {}
        for name, tensor in state.items():
            name = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", name))
            out[f"{self.prefix}.{name}" if name.startswith(self.base_names) else name] = tensor
        return out

    def task_of(self, state: dict[str, torch.Tensor], hf_config: dict) -> str:
        """What a folder holds: the task of the class config.json names, else the first marker found."""
        tasks = {theirs: ours for ours, theirs in self.classes.items()} | self.also_reads
        architectures = hf_config.get("architectures")
        for name in architectures if isinstance(architectures, list) else []:
            if isinstance(name, str) and name in tasks:
                return tasks[name]
        return next((task for task, names in self.markers if all(n in state for n in names)), "encoder")

    def hf_classes(self) -> list[str]:
        return [*self.classes.values(), *self.also_reads]
