"""Export a bertlite BERT checkpoint to a folder that ``transformers`` loads as it loads its own models.

    export_hf("runs/sst2/checkpoints/best.ckpt", "exported/")
    export_hf(bertlite.sources.read_checkpoint("my-model/", EXPORTABLE_TASKS), "exported/")  # any source
    # AutoModelForSequenceClassification.from_pretrained("exported/"); AutoTokenizer.from_pretrained("exported/")
    # (a token classification checkpoint: AutoModelForTokenClassification)

The model's config picks the HF architecture (bertlite.interop.architectures): ModernBERT where it has rotary
positions, RoBERTa where its learned positions start at pad_token_id + 1 (an imported RoBERTa, and what was
fine-tuned from one), BERT otherwise.

Writes config.json, model.safetensors and the tokenizer (tokenizer.json, tokenizer_config.json and
special_tokens_map.json naming its special tokens, vocab.txt for a WordPiece one). The folder is assembled beside
the target and renamed into place, so a failure leaves no half-written export behind.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from bertlite.atomic import write_folder_atomically
from bertlite.checkpoints import check_task, model_state, read_checkpoint_file
from bertlite.data.special_tokens import special_tokens
from bertlite.data.tokenizer import tokenizer_from_json
from bertlite.errors import ConfigError
from bertlite.interop.architectures import architecture_of_config
from bertlite.interop.hf_arch import HFArchitecture
from bertlite.interop.hf_bert import BERT
from bertlite.models.config import config_from_dict

EXPORTABLE_TASKS = tuple(BERT.classes)  # every architecture exports the same tasks


def hf_state_dict(arch: HFArchitecture, task: str, state: dict[str, torch.Tensor],
                  n_layers: int) -> dict[str, torch.Tensor]:
    """bertlite weight names -> HF names (base-model files, BertModel's, carry no prefix)."""
    names = arch.weight_names(task, n_layers, pooler="pooler.dense.weight" in state, has=state)
    out = {theirs: state[ours].detach().to(torch.float32).contiguous().clone() for ours, theirs in names.items()}
    if task == "encoder":
        out = {k.removeprefix(f"{arch.prefix}."): v for k, v in out.items()}
    return out


def _lowercase(tokenizer_json: dict) -> bool:
    normalizer = tokenizer_json.get("normalizer") or {}
    if normalizer.get("type") == "Sequence":  # a normalizer sequence lower-cases if any step does
        return any(n.get("type") == "Lowercase" or n.get("lowercase") for n in normalizer.get("normalizers", []))
    return bool(normalizer.get("lowercase") or normalizer.get("type") == "Lowercase")


def write_tokenizer(tokenizer_str: str, folder: Path, max_seq_len: int, roles: dict | None = None) -> None:
    """tokenizer.json as the checkpoint stores it, and tokenizer_config.json and special_tokens_map.json naming its
    special tokens (``roles``: the checkpoint's ``special_tokens``; None, in checkpoints that stored none: found by
    their usual names). A WordPiece tokenizer is written as BertTokenizer's (with vocab.txt, as transformers writes
    it); any other (byte-level BPE, Unigram) as PreTrainedTokenizerFast's, which reads tokenizer.json as it is."""
    tokenizer = tokenizer_from_json(tokenizer_str, roles)
    spec = json.loads(tokenizer_str)
    (folder / "tokenizer.json").write_text(tokenizer_str)
    specials = special_tokens(tokenizer).hf_map()
    (folder / "special_tokens_map.json").write_text(json.dumps(specials, indent=2) + "\n")
    if (spec.get("model") or {}).get("type") == "WordPiece":
        vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
        (folder / "vocab.txt").write_text("".join(token + "\n" for token, _ in vocab))
        settings = {"tokenizer_class": "BertTokenizer", "do_lower_case": _lowercase(spec), "strip_accents": None,
                    "tokenize_chinese_chars": True}
    else:
        settings = {"tokenizer_class": "PreTrainedTokenizerFast"}
    config = {**settings, "model_max_length": max_seq_len, "clean_up_tokenization_spaces": False, **specials}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


def _architecture_extras(arch: HFArchitecture, task: str, pooling: str, meta: dict) -> dict:
    """config.json entries some architectures have: the classifier's pooling, the special tokens' ids."""
    extras = {}
    if arch.pooling_key and task == "classification":
        extras[arch.pooling_key] = pooling
    if arch.special_token_ids:
        tokenizer = tokenizer_from_json(meta["tokenizer"], meta.get("special_tokens"))
        extras.update(arch.special_token_ids(special_tokens(tokenizer).ids(tokenizer)))
    return extras


def export_hf(checkpoint: str | Path | dict[str, Any], out: str | Path, overwrite: bool = False,
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
    arch = architecture_of_config(config)
    pooling = meta.get("pooling", "cls")
    if task == "classification" and pooling not in arch.poolings:
        kinds = " or ".join("cls (the first token)" if kind == "cls" else kind for kind in arch.poolings)
        raise ConfigError(f"cannot export to Hugging Face {arch.name}: pooling={pooling!r} has no HF equivalent "
                          f"({arch.classes[task]} pools by {kinds}); fine-tune with task.pooling={arch.poolings[0]}")
    labelled = task in ("classification", "token_classification")
    problem_type = meta.get("problem_type", "single_label") if task == "classification" else None
    hf_config = arch.config_to_hf(config, arch.classes[task], meta.get("label_names") if labelled else None,
                                  problem_type)
    hf_config.update(_architecture_extras(arch, task, pooling, meta))

    def fill(folder: Path) -> None:
        (folder / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
        hf_weights = hf_state_dict(arch, task, arch.hf_layout(model_state(checkpoint)), config.n_layers)
        save_file(hf_weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
        write_tokenizer(meta["tokenizer"], folder, meta.get("max_seq_len", config.max_seq_len),
                        meta.get("special_tokens"))

    return write_folder_atomically(out, fill, overwrite)


export_hf_bert = export_hf  # the name from when BERT was the only architecture
