"""Import a Hugging Face folder (config.json, weights, tokenizer) of an architecture bertlite reads (BERT, RoBERTa,
ModernBERT: ``bertlite.interop.architectures``) as a bertlite checkpoint.

    checkpoint, report = import_hf("bert-base-uncased/")     # needs only torch and safetensors
    checkpoint, report = import_hf("roberta-base/")
    checkpoint, report = import_hf("ModernBERT-base/")

config.json's model_type picks the architecture; the class its ``architectures`` names (else the heads the weights
have) decides what comes out: a sequence classifier -> a classification checkpoint (BERT's pooler becomes the
head's dense layer, as it is in HF), a token classifier -> token_classification, a masked LM -> mlm, the encoder
alone -> an ``encoder`` checkpoint (its pooler kept), for fine-tuning or feature extraction.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tokenizers import Tokenizer
from torch import nn

from bertlite.checkpoints import load_torch_file
from bertlite.data.tokenizer import load_tokenizer, tokenizer_section
from bertlite.errors import CheckpointError, ConfigError
from bertlite.interop.architectures import architecture_of_folder
from bertlite.interop.hf_arch import HFArchitecture
from bertlite.interop.hf_bert import problem_type_from_hf
from bertlite.models.config import ModelConfig, config_from_dict
from bertlite.models.encoder import (BertEncoder, BertForMaskedLM, BertForSequenceClassification,
                                     BertForTokenClassification)

log = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


@dataclass
class ImportReport:
    task: str  # classification | token_classification | mlm | encoder
    missing: list[str] = field(default_factory=list)  # HF names bertlite wanted and did not find (heads only)
    unexpected: list[str] = field(default_factory=list)  # HF names bertlite has no place for

    def log(self) -> None:
        if self.missing:
            log.warning("not in the HF folder (left at their initial values): %s", ", ".join(self.missing))
        if self.unexpected:
            log.warning("HF weights not imported (no bertlite counterpart): %s", ", ".join(self.unexpected))


def _load_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix != ".safetensors":
        return load_torch_file(path)  # weights only: a pytorch_model.bin runs no code from the file
    try:
        from safetensors.torch import load_file

        return load_file(str(path))
    except Exception as exc:
        raise CheckpointError(f"cannot read the weights in {path} (truncated or corrupted?): "
                              f"{type(exc).__name__}: {str(exc)[:200]}") from exc


def read_hf_weights(folder: Path) -> dict[str, torch.Tensor]:
    """model.safetensors, pytorch_model.bin, or their sharded ``*.index.json`` form."""
    name = next((n for n in WEIGHT_FILES if (folder / n).is_file()), None)
    if name is None:
        raise CheckpointError(f"no weights in {folder}: expected one of {', '.join(WEIGHT_FILES)}")
    if not name.endswith(".index.json"):
        return _load_file(folder / name)
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(set(json.loads((folder / name).read_text())["weight_map"].values())):
        state.update(_load_file(folder / shard))
    return state


def read_hf_tokenizer(folder: Path) -> Tokenizer:
    """tokenizer.json if the folder has one (any model: WordPiece, byte-level BPE, Unigram), else vocab.txt with
    tokenizer_config.json's do_lower_case; carrying the roles of its special tokens as tokenizer_config.json and
    special_tokens_map.json name them (``special_tokens(tokenizer)``; a checkpoint stores them with
    ``tokenizer_section(tokenizer)``)."""
    if (folder / "tokenizer.json").is_file():
        return load_tokenizer(folder / "tokenizer.json")
    if (folder / "vocab.txt").is_file():
        tok_config = folder / "tokenizer_config.json"
        lowercase = json.loads(tok_config.read_text()).get("do_lower_case", True) if tok_config.is_file() else True
        return load_tokenizer(folder / "vocab.txt", lowercase=lowercase)
    raise CheckpointError(f"no tokenizer in {folder}: expected tokenizer.json or vocab.txt")


def _label_names(hf_config: dict, num_labels: int) -> list[str]:
    id2label = hf_config.get("id2label") or {}
    if isinstance(id2label, dict) and len(id2label) == num_labels and all(str(k).isdigit() for k in id2label):
        return [str(id2label[key]) for key in sorted(id2label, key=int)]
    return [f"LABEL_{i}" for i in range(num_labels)]


def read_hf_config(path: Path) -> dict:
    """config.json as a dict; an unreadable or non-object file is one ``CheckpointError`` naming it."""
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {path}: {type(exc).__name__}: {str(exc)[:200]}") from None
    if not isinstance(values, dict):
        raise CheckpointError(f"{path} holds a JSON {type(values).__name__}, not the object of a model's config")
    return values


def _read_config_and_tokenizer(folder: Path) -> tuple[HFArchitecture, dict, ModelConfig, Tokenizer]:
    """The architecture, config.json (raw and as a bertlite config) and the tokenizer, checked to belong together."""
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{folder} is not a Hugging Face model folder: it has no config.json")
    hf_config = read_hf_config(folder / "config.json")
    arch = architecture_of_folder(hf_config, str(folder / "config.json"))
    config = config_from_dict(arch.config_from_hf(hf_config), source=str(folder / "config.json"),
                              names=arch.field_names)
    tokenizer = read_hf_tokenizer(folder)
    if tokenizer.get_vocab_size() != config.vocab_size:
        raise ConfigError(f"the tokenizer in {folder} has {tokenizer.get_vocab_size()} tokens but config.json "
                          f"says vocab_size={config.vocab_size}: the vocabulary does not belong to these weights")
    return arch, hf_config, config, tokenizer


def _num_labels(arch: HFArchitecture, kind: str, state: dict[str, torch.Tensor]) -> int:
    """The rows of the head's last layer (its bias, which every classifier here has); a folder without the head
    (a classifier class named over encoder weights) gets HF's default of two labels."""
    bias = state.get(arch.heads[kind]["head.classifier.bias"])
    return 2 if bias is None else bias.shape[0]


def _model_for(arch: HFArchitecture, kind: str, config: ModelConfig, hf_config: dict,
               state: dict[str, torch.Tensor]) -> tuple[nn.Module, dict[str, str], dict]:
    """The bertlite model of ``kind``, the map of its parameter names to HF's, and the task's checkpoint meta."""
    pooler_names = arch.heads.get("pooler", {}).values()  # ModernBERT has no pooler
    pooler = kind == "encoder" and bool(pooler_names) and all(name in state for name in pooler_names)
    meta: dict = {}
    if kind == "classification":
        labels = _label_names(hf_config, _num_labels(arch, kind, state))
        pooling = hf_config.get(arch.pooling_key, "cls") if arch.pooling_key else "cls"
        model: nn.Module = BertForSequenceClassification(config, len(labels), pooling=pooling)
        problem_type = problem_type_from_hf(hf_config, len(labels))
        meta = {"label_names": labels, "pooling": pooling, "max_seq_len": config.max_seq_len,
                "problem_type": problem_type,
                "metric": {"regression": "pearson", "multi_label": "micro_f1"}.get(problem_type, "acc")}
    elif kind == "token_classification":
        labels = _label_names(hf_config, _num_labels(arch, kind, state))
        model = BertForTokenClassification(config, len(labels))
        meta = {"label_names": labels, "metric": "entity_f1", "max_seq_len": config.max_seq_len}
    elif kind == "mlm":
        model = BertForMaskedLM(config)
    else:
        model = BertEncoder(config, pooler=pooler)
        meta = {"pooler": True} if pooler else {}
    names = arch.weight_names(kind, config.n_layers, pooler, has=arch.hf_layout(model.state_dict()))
    return model, names, meta


def _matching_weights(folder: Path, names: dict[str, str], backbone: set[str], state: dict[str, torch.Tensor],
                      wanted: dict[str, torch.Tensor], report: ImportReport) -> dict[str, torch.Tensor]:
    """HF's tensors under bertlite's names, each checked against the shape the config implies. Names the folder
    lacks go to ``report.missing``; a missing head is allowed, a missing encoder weight is not."""
    weights = {}
    for ours, theirs in names.items():
        if theirs not in state:
            report.missing.append(theirs)
            continue
        tensor = state[theirs]
        if tuple(tensor.shape) != tuple(wanted[ours].shape):
            raise CheckpointError(f"{theirs} has shape {tuple(tensor.shape)} but config.json implies "
                                  f"{tuple(wanted[ours].shape)}: the weights do not match the config")
        weights[ours] = tensor.to(torch.float32)
    backbone_missing = [n for n in report.missing if n in backbone]
    if backbone_missing:
        raise CheckpointError(f"{folder} lacks encoder weights: {', '.join(backbone_missing[:8])}"
                              f"{' ...' if len(backbone_missing) > 8 else ''}")
    return weights


def _tie_mlm_decoder(arch: HFArchitecture, state: dict[str, torch.Tensor], weights: dict[str, torch.Tensor]) -> None:
    """bertlite's MLM head reads the word embeddings; an HF decoder that differs from them cannot be kept."""
    decoder = state.get(arch.tied_decoder)
    embedding = weights["bert.embeddings.token.weight"]
    if decoder is not None and not torch.equal(decoder.to(torch.float32), embedding):
        raise CheckpointError("the MLM decoder is not tied to the word embeddings; bertlite's MLM head "
                              "shares one matrix (tie_word_embeddings=true)")
    weights["mlm_head.decoder.weight"] = embedding


def import_hf(folder: str | Path) -> tuple[dict, ImportReport]:
    """A bertlite checkpoint (a dict as a checkpoint file holds) built from an HF folder of an architecture bertlite
    reads; anything else is one ``CheckpointError`` naming those it reads."""
    folder = Path(folder)
    arch, hf_config, config, tokenizer = _read_config_and_tokenizer(folder)
    state = arch.normalise(read_hf_weights(folder))
    kind = arch.task_of(state, hf_config)
    report = ImportReport(kind)
    model, names, meta = _model_for(arch, kind, config, hf_config, state)

    wanted = arch.hf_layout(model.state_dict())  # BERT's query, key and value apart: loading stacks them again
    backbone = set(arch.backbone_names(config.n_layers, has=wanted).values())
    weights = _matching_weights(folder, names, backbone, state, wanted, report)
    used = set(names.values())
    report.unexpected = sorted(k for k in state if k not in used and not arch.ignored.search(k))
    if kind == "mlm":
        _tie_mlm_decoder(arch, state, weights)

    model.load_state_dict({**wanted, **weights})  # heads absent from the folder keep their initial values
    checkpoint = {
        "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
        "bertlite": {"format_version": 1, "task": kind, "model_config": dataclasses.asdict(config),
                     **tokenizer_section(tokenizer), "source": f"hf:{folder}", **meta},
    }
    return checkpoint, report


import_hf_bert = import_hf  # the name from when BERT was the only architecture
