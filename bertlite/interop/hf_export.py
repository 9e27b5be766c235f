"""Export a bertlite BERT checkpoint to a folder that ``transformers`` loads as it loads its own models.

    export_hf_bert("runs/sst2/checkpoints/best.ckpt", "exported/")
    export_hf_bert(bertlite.sources.read_checkpoint("my-model/", EXPORTABLE_TASKS), "exported/")  # any source
    # AutoModelForSequenceClassification.from_pretrained("exported/"); AutoTokenizer.from_pretrained("exported/")
    # (a token classification checkpoint: AutoModelForTokenClassification)

Writes config.json, model.safetensors and the tokenizer (tokenizer.json, vocab.txt, tokenizer_config.json,
special_tokens_map.json). The folder is assembled beside the target and renamed into place, so a failure
leaves no half-written export behind.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from bertlite.atomic import write_folder_atomically
from bertlite.checkpoints import check_task, model_state, read_checkpoint_file
from bertlite.data.tokenizer import CLS, MASK, PAD, SEP, UNK, tokenizer_from_json
from bertlite.nn.attention import split_qkv
from bertlite.errors import ConfigError
from bertlite.interop.hf_bert import (CLASSIFIER_HEAD, MLM_HEAD, POOLER, TOKEN_CLASSIFIER_HEAD, backbone_names,
                                      config_to_hf)
from bertlite.models.config import config_from_dict

ARCHITECTURES = {"classification": "BertForSequenceClassification", "mlm": "BertForMaskedLM",
                 "encoder": "BertModel", "token_classification": "BertForTokenClassification"}
EXPORTABLE_TASKS = tuple(ARCHITECTURES)
HEADS = {"classification": CLASSIFIER_HEAD, "mlm": MLM_HEAD, "token_classification": TOKEN_CLASSIFIER_HEAD}


def hf_state_dict(task: str, state: dict[str, torch.Tensor], n_layers: int) -> dict[str, torch.Tensor]:
    """bertlite weight names -> HF names (BertModel files carry no ``bert.`` prefix)."""
    names = backbone_names(n_layers)
    names.update(HEADS.get(task, {}))
    if task == "encoder" and "pooler.dense.weight" in state:
        names.update(POOLER)
    out = {theirs: state[ours].detach().to(torch.float32).contiguous().clone() for ours, theirs in names.items()}
    if task == "encoder":
        out = {k.removeprefix("bert."): v for k, v in out.items()}
    return out


def _lowercase(tokenizer_json: dict) -> bool:
    normalizer = tokenizer_json.get("normalizer") or {}
    if normalizer.get("type") == "Sequence":  # a normalizer sequence lower-cases if any step does
        return any(n.get("type") == "Lowercase" or n.get("lowercase") for n in normalizer.get("normalizers", []))
    return bool(normalizer.get("lowercase") or normalizer.get("type") == "Lowercase")


def write_tokenizer(tokenizer_str: str, folder: Path, max_seq_len: int) -> None:
    tokenizer = tokenizer_from_json(tokenizer_str)
    (folder / "tokenizer.json").write_text(tokenizer_str)
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    (folder / "vocab.txt").write_text("".join(token + "\n" for token, _ in vocab))
    specials = {"unk_token": UNK, "sep_token": SEP, "pad_token": PAD, "cls_token": CLS, "mask_token": MASK}
    (folder / "special_tokens_map.json").write_text(json.dumps(specials, indent=2) + "\n")
    lowercase = _lowercase(json.loads(tokenizer_str))
    config = {"tokenizer_class": "BertTokenizer", "do_lower_case": lowercase, "strip_accents": None,
              "tokenize_chinese_chars": True, "model_max_length": max_seq_len, "clean_up_tokenization_spaces": False,
              **specials}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


def export_hf_bert(checkpoint: str | Path | dict[str, Any], out: str | Path, overwrite: bool = False,
                   trust: bool = False) -> Path:
    """Write the HF folder ``out`` from a checkpoint file, or from a checkpoint dict that a reader has
    checked (a model folder or any source: ``bertlite.sources.read_checkpoint``). An existing non-empty
    ``out`` is replaced only with ``overwrite``."""
    from safetensors.torch import save_file

    if isinstance(checkpoint, dict):
        check_task("the checkpoint", checkpoint["bertlite"]["task"], EXPORTABLE_TASKS)
    else:
        checkpoint = read_checkpoint_file(checkpoint, expect_task=EXPORTABLE_TASKS, trust=trust)
    meta = checkpoint["bertlite"]
    task = meta["task"]
    config = config_from_dict(meta["model_config"])
    if task == "classification" and meta.get("pooling", "cls") != "cls":
        raise ConfigError(f"cannot export to Hugging Face BERT: pooling={meta['pooling']!r} has no HF equivalent "
                          "(BertForSequenceClassification pools [CLS]); fine-tune with task.pooling=cls")
    labelled = task in ("classification", "token_classification")
    problem_type = meta.get("problem_type", "single_label") if task == "classification" else None
    hf_config = config_to_hf(config, ARCHITECTURES[task], meta.get("label_names") if labelled else None,
                             problem_type)

    def fill(folder: Path) -> None:
        (folder / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
        hf_weights = hf_state_dict(task, split_qkv(model_state(checkpoint)), config.n_layers)  # HF: query, key, value
        save_file(hf_weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
        write_tokenizer(meta["tokenizer"], folder, meta.get("max_seq_len", config.max_seq_len))

    return write_folder_atomically(out, fill, overwrite)
