"""The roles of a tokenizer's special tokens: which token pads, which is unknown, which opens a sequence (BERT's
[CLS], RoBERTa's <s>), which closes one ([SEP], </s>) and which is masked ([MASK], <mask>).

A tokenizer.json does not say which token plays which role; Hugging Face folders say it in tokenizer_config.json
and special_tokens_map.json (``cls_token``, ``mask_token``, ...). bertlite keeps the roles in one record,
``SpecialTokens``, that travels with the tokenizer: attached to the ``Tokenizer`` object in memory
(``with_special_tokens``), stored beside the tokenizer's JSON in checkpoints and model folders (the bertlite
section's ``special_tokens``), and written as special_tokens_map.json beside a run's tokenizer.json. Every module
asks ``special_tokens(tokenizer)`` or ``special_id(tokenizer, role, purpose)``. A tokenizer without a record
(a bare tokenizer.json, a checkpoint from before roles were stored) has its roles found by their usual names:
BERT's first, then RoBERTa's.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from bertlite.errors import ConfigError

ROLES = ("pad", "unk", "cls", "sep", "mask", "bos", "eos")
HF_KEYS = {role: f"{role}_token" for role in ROLES}  # pad -> pad_token, as transformers names them
HF_FILES = ("tokenizer_config.json", "special_tokens_map.json")  # read in this order: the later one wins
# the usual names, in order of preference, for a tokenizer that does not name its roles
USUAL_NAMES = {"pad": ("[PAD]", "<pad>"), "unk": ("[UNK]", "<unk>"), "cls": ("[CLS]", "<s>"),
               "sep": ("[SEP]", "</s>"), "mask": ("[MASK]", "<mask>"), "bos": ("<s>",), "eos": ("</s>",)}
FALLBACKS = {"cls": "bos", "sep": "eos"}  # a folder naming only bos/eos (GPT-2, some BPE models) opens/closes with them
ATTRIBUTE = "bertlite_special_tokens"  # where a Tokenizer object carries its record


@dataclass(frozen=True)
class SpecialTokens:
    """Token texts by role (None: the tokenizer has no such token). ``cls``/``sep`` are the tokens that open and
    close a sequence (BERT's [CLS]/[SEP], RoBERTa's <s>/</s>); ``bos``/``eos`` are kept only to write them back
    into Hugging Face files. ``source`` says where the roles were read, for error messages."""

    pad: str | None = None
    unk: str | None = None
    cls: str | None = None
    sep: str | None = None
    mask: str | None = None
    bos: str | None = None
    eos: str | None = None
    source: str = dataclasses.field(default="the tokenizer", compare=False)

    def to_dict(self) -> dict[str, str]:
        """{role: token} for the roles the tokenizer has: what a checkpoint stores."""
        return {role: getattr(self, role) for role in ROLES if getattr(self, role) is not None}

    @classmethod
    def from_dict(cls, values: dict, source: str) -> SpecialTokens:
        """The record a checkpoint or model folder stored; an unknown role or a non-text token is a ConfigError."""
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: special_tokens must be an object of roles and tokens, "
                              f"found {type(values).__name__}")
        unknown = sorted(set(map(str, values)) - set(ROLES))
        if unknown:
            raise ConfigError(f"{source}: special_tokens names the unknown role(s) {unknown}; known: {list(ROLES)}")
        bad = {role: token for role, token in values.items() if token is not None and not isinstance(token, str)}
        if bad:
            raise ConfigError(f"{source}: special_tokens must map roles to token texts, found {bad!r:.100}")
        return cls(**values, source=source)

    def hf_map(self) -> dict[str, str]:
        """The roles as transformers' special_tokens_map.json names them (``cls_token``, ...)."""
        return {HF_KEYS[role]: token for role, token in self.to_dict().items()}

    def ids(self, tokenizer: Tokenizer) -> dict[str, int]:
        """{role: id} for the roles whose token is in the vocabulary."""
        found = {role: tokenizer.token_to_id(token) for role, token in self.to_dict().items()}
        return {role: i for role, i in found.items() if i is not None}


def hf_token_text(value) -> str | None:
    """A special token as Hugging Face files write it: a string, or an AddedToken object with its ``content``."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def read_hf_special_tokens(folder: Path, tokenizer: Tokenizer) -> SpecialTokens | None:
    """The roles a folder's tokenizer_config.json and special_tokens_map.json name (the latter wins, as in
    transformers; cls/sep fall back to bos/eos where only those are named); a role neither names is found by its
    usual name, as transformers' tokenizer classes default to them. None if the folder has neither file."""
    named: dict[str, str] = {}
    sources = []
    for name in HF_FILES:
        path = folder / name
        if path.is_file():
            named.update(_named_roles(path))
            sources.append(str(path))
    if not sources:
        return None
    for role, fallback in FALLBACKS.items():
        if role not in named and fallback in named:
            named[role] = named[fallback]
    usual = infer_special_tokens(tokenizer).to_dict()
    return SpecialTokens(**{**usual, **named}, source=" and ".join(sources))


def _named_roles(path: Path) -> dict[str, str]:
    """{role: token} as one Hugging Face file names them; an unreadable file is a ConfigError naming it."""
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {type(exc).__name__}: {str(exc)[:200]}; fix or remove it "
                          "(it names the tokenizer's special tokens)") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path} holds a JSON {type(values).__name__}, not an object; fix or remove it")
    return {role: text for role, key in HF_KEYS.items() if (text := hf_token_text(values.get(key)))}


def infer_special_tokens(tokenizer: Tokenizer, source: str = "the tokenizer") -> SpecialTokens:
    """The roles found by their usual names in the vocabulary (BERT's [PAD] ... [MASK], RoBERTa's <pad> ...
    <mask>): for a tokenizer.json with no file naming its roles, and for checkpoints that stored none."""
    vocab = tokenizer.get_vocab()
    found = {role: next((name for name in names if name in vocab), None) for role, names in USUAL_NAMES.items()}
    return SpecialTokens(**found, source=f"{source} (special tokens found by their usual names)")


def with_special_tokens(tokenizer: Tokenizer, roles: SpecialTokens | None, source: str = "the tokenizer"
                        ) -> Tokenizer:
    """The tokenizer, carrying ``roles`` (None: the roles found by their usual names)."""
    setattr(tokenizer, ATTRIBUTE, roles if roles is not None else infer_special_tokens(tokenizer, source))
    return tokenizer


def special_tokens(tokenizer: Tokenizer) -> SpecialTokens:
    """The tokenizer's roles: the record it carries, else the ones found by their usual names."""
    roles = getattr(tokenizer, ATTRIBUTE, None)
    return roles if roles is not None else infer_special_tokens(tokenizer)


def special_id(tokenizer: Tokenizer, role: str, purpose: str) -> int:
    """The id of the token playing ``role``; a tokenizer without one is a ConfigError naming the role, where the
    roles were read, and what ``purpose`` (e.g. "masked-LM pretraining") needs it for."""
    roles = special_tokens(tokenizer)
    token = getattr(roles, role)
    key = HF_KEYS[role]
    if token is None:
        raise ConfigError(f"the tokenizer has no {role} token, which {purpose} needs (roles read from "
                          f"{roles.source}). Set \"{key}\" in the tokenizer folder's tokenizer_config.json (or "
                          "special_tokens_map.json) to a token of its vocabulary, or use a tokenizer that has one")
    token_id = tokenizer.token_to_id(token)
    if token_id is None:
        raise ConfigError(f"{roles.source} names {token!r} as the {role} token ({key}), which {purpose} needs, but "
                          f"the vocabulary has no such token: set \"{key}\" to a token of the vocabulary")
    return token_id


def special_ids(tokenizer: Tokenizer) -> dict[str, int]:
    """{role: id} for every role the tokenizer has."""
    return special_tokens(tokenizer).ids(tokenizer)


def all_special_ids(tokenizer: Tokenizer) -> list[int]:
    """Every special token's id: the roles' and any other token the tokenizer marks special (such as
    ModernBERT's |||EMAIL_ADDRESS|||): the ones masking never selects."""
    marked = [i for i, token in tokenizer.get_added_tokens_decoder().items() if token.special]
    return sorted(set(special_ids(tokenizer).values()) | set(marked))
