"""RoBERTa folders in and out: tiny random HF RoBERTas imported and checked against transformers' own forward pass
(fp32, padding in the batch, bertlite's padded and padding-free paths), exported back bit for bit."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from bertlite.checkpoints import model_state
from bertlite.errors import CheckpointError, ConfigError
from bertlite.interop import export_hf, import_hf
from bertlite.models.config import config_from_dict
from bertlite.models.encoder import (BertEncoder, BertForMaskedLM, BertForSequenceClassification,
                                     BertForTokenClassification)
from tests.conftest import sentiment_rows
from tests.hf_finetune import finetune_from_hf_then_export

transformers = pytest.importorskip("transformers")

TOL = 1e-5
CLASSES = ["RobertaModel", "RobertaForMaskedLM", "RobertaForSequenceClassification", "RobertaForTokenClassification"]
TASKS = dict(zip(CLASSES, ["encoder", "mlm", "classification", "token_classification"]))
LABELS = {0: "neg", 1: "neu", 2: "pos"}
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # RoBERTa's order: <s> 0, <pad> 1, </s> 2


def save_bpe_tokenizer(folder, texts: list[str]) -> int:
    """A byte-level BPE tokenizer trained on ``texts``, saved as RoBERTa's (tokenizer.json, tokenizer_config.json);
    -> its vocabulary size. The alphabet is the bytes of the texts: a vocabulary of ~100, not 256 + merges."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=100, special_tokens=SPECIALS,
                                                             show_progress=False))
    tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    transformers.RobertaTokenizerFast(tokenizer_object=tokenizer).save_pretrained(folder)
    return tokenizer.get_vocab_size()


def tiny_roberta_config(vocab_size: int):
    return transformers.RobertaConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2,
                                      num_attention_heads=2, intermediate_size=64, max_position_embeddings=34,
                                      pad_token_id=1, type_vocab_size=1, layer_norm_eps=1e-5, num_labels=3,
                                      id2label=LABELS, label2id={v: k for k, v in LABELS.items()})


@pytest.fixture(scope="module")
def tokenizer_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("roberta_tokenizer")
    return folder, save_bpe_tokenizer(folder, [row["review"] for row in sentiment_rows(200, 0)])


def save_hf_roberta(hf_class: str, tokenizer_folder, folder, seed: int = 0):
    """A random HF model of ``hf_class`` saved with the tiny tokenizer; -> the model (eval mode)."""
    source, vocab_size = tokenizer_folder
    torch.manual_seed(seed)
    model = getattr(transformers, hf_class)(tiny_roberta_config(vocab_size)).eval()
    with torch.no_grad():  # HF starts these at zero; non-zero values show that they travel
        for name, param in model.named_parameters():
            if name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name:
                param.add_(torch.randn_like(param) * 0.1)
    model.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_text((source / name).read_text())
    return model


def batch(vocab_size: int):
    """(3, 12) ids starting with <s>, two rows right-padded with <pad> (id 1), and their attention mask."""
    torch.manual_seed(0)
    ids = torch.randint(len(SPECIALS), vocab_size, (3, 12))
    ids[:, 0] = 0
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 3:] = 0
    return ids.masked_fill(mask == 0, 1), mask


def bertlite_model(checkpoint: dict, unpad: bool) -> torch.nn.Module:
    """The network a checkpoint holds, on the padding-free (unpad) or the padded path."""
    meta = checkpoint["bertlite"]
    config = config_from_dict({**meta["model_config"], "unpad": unpad})
    labels = len(meta.get("label_names", []))
    model = {"encoder": lambda: BertEncoder(config, pooler=meta.get("pooler", False)),
             "mlm": lambda: BertForMaskedLM(config),
             "classification": lambda: BertForSequenceClassification(config, labels),
             "token_classification": lambda: BertForTokenClassification(config, labels)}[meta["task"]]()
    model.load_state_dict(model_state(checkpoint))
    return model.eval()


def real(x, mask):
    return x[mask.bool()]  # (N_real, ...): positions that are tokens, not padding


def hf_outputs(model, ids, mask) -> list[torch.Tensor]:
    """A transformers model's outputs at the real tokens: hidden states and pooler output, or logits."""
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask)
    if hasattr(out, "pooler_output"):
        return [real(out.last_hidden_state, mask), out.pooler_output]
    return [out.logits if out.logits.dim() == 2 else real(out.logits, mask)]


def bertlite_outputs(task: str, model, ids, mask) -> list[torch.Tensor]:
    """The same for a bertlite model of ``task``."""
    with torch.no_grad():
        out = model(ids, mask)
    if task == "encoder":
        return [real(out, mask), model.pooler(out)]
    if task == "mlm":
        return [real(out.logits, mask)]
    return [out if task == "classification" else real(out, mask)]


@pytest.mark.parametrize("unpad", [True, False], ids=["padding_free", "padded"])
@pytest.mark.parametrize("hf_class", CLASSES)
def test_roberta_import_gives_transformers_outputs(hf_class, unpad, tokenizer_folder, tmp_path):
    hf = save_hf_roberta(hf_class, tokenizer_folder, tmp_path / hf_class)
    checkpoint, report = import_hf(tmp_path / hf_class)
    assert (report.task, report.missing, report.unexpected) == (TASKS[hf_class], [], [])
    config = checkpoint["bertlite"]["model_config"]
    assert (config["max_seq_len"], config["position_offset"], config["pad_token_id"]) == (32, 2, 1)
    if "label_names" in checkpoint["bertlite"]:
        assert checkpoint["bertlite"]["label_names"] == ["neg", "neu", "pos"]
    ids, mask = batch(hf.config.vocab_size)
    ours = bertlite_outputs(TASKS[hf_class], bertlite_model(checkpoint, unpad), ids, mask)
    torch.testing.assert_close(ours, hf_outputs(hf, ids, mask), atol=TOL, rtol=0)


@pytest.mark.parametrize("hf_class", CLASSES)
def test_roberta_from_hf_then_to_hf_gives_an_identical_state_dict(hf_class, tokenizer_folder, tmp_path):
    """Every tensor of the exported folder, the 34 rows of the position table included, equals the original's;
    transformers loads the folder as the same class, newly initialising nothing, with the same outputs."""
    hf = save_hf_roberta(hf_class, tokenizer_folder, tmp_path / "original", seed=1)
    checkpoint, _ = import_hf(tmp_path / "original")
    out = export_hf(checkpoint, tmp_path / "exported")
    original, exported = load_file(tmp_path / "original" / "model.safetensors"), load_file(out / "model.safetensors")
    assert original.keys() == exported.keys()
    for name in original:
        assert torch.equal(original[name], exported[name]), name
    config = json.loads((out / "config.json").read_text())
    assert (config["model_type"], config["architectures"]) == ("roberta", [hf_class])
    assert (config["max_position_embeddings"], config["pad_token_id"], config["type_vocab_size"]) == (34, 1, 1)
    again, info = getattr(transformers, hf_class).from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    ids, mask = batch(hf.config.vocab_size)
    torch.testing.assert_close(hf_outputs(again.eval(), ids, mask), hf_outputs(hf, ids, mask), atol=TOL, rtol=0)


def test_roberta_folder_without_architectures_is_read_by_its_heads(tokenizer_folder, tmp_path):
    save_hf_roberta("RobertaForSequenceClassification", tokenizer_folder, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["architectures"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert import_hf(tmp_path)[1].task == "classification"


# --- bad input: one clear error each -----------------------------------------------------------------------
@pytest.mark.parametrize("change, error, message", [
    ({"hidden_act": "relu"}, ConfigError, "RoBERTa with hidden_act=gelu only"),
    ({"max_position_embeddings": 2}, ConfigError, "leaves no position for a token"),
    ({"is_decoder": True}, ConfigError, "configured as a decoder"),
    ({"model_type": "xlm-roberta"}, CheckpointError, "'xlm-roberta' model.*reads these Hugging Face architectures"),
])
def test_roberta_config_bertlite_cannot_express_is_refused(change, error, message, tokenizer_folder, tmp_path):
    save_hf_roberta("RobertaModel", tokenizer_folder, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(error, match=message):
        import_hf(tmp_path)


def test_export_refuses_a_position_offset_of_neither_bert_nor_roberta(tokenizer_folder, tmp_path):
    save_hf_roberta("RobertaModel", tokenizer_folder, tmp_path / "hf")
    checkpoint, _ = import_hf(tmp_path / "hf")
    checkpoint["bertlite"]["model_config"]["pad_token_id"] = 0  # positions from 2, padding at 0: neither
    with pytest.raises(ConfigError, match=r"position_offset=2 is neither BERT's \(0\) nor RoBERTa's"):
        export_hf(checkpoint, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_finetune_from_a_roberta_folder_then_export(tokenizer_folder, sentiment_csv, tmp_path):
    save_hf_roberta("RobertaForMaskedLM", tokenizer_folder, tmp_path / "roberta")
    finetune_from_hf_then_export(tmp_path / "roberta", sentiment_csv, tmp_path, "RobertaForSequenceClassification",
                                 pad_id=1)
