"""ModernBERT folders in and out: tiny random HF ModernBERTs (local windows shorter than the sequence, every other
layer global) imported and checked against transformers' own forward pass (fp32, padding in the batch, bertlite's
padded and padding-free paths), exported back bit for bit."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file

from bertlite.checkpoints import model_state
from bertlite.errors import CheckpointError, ConfigError
from bertlite.interop import export_hf, import_hf
from bertlite.models.config import config_from_dict, preset
from bertlite.models.encoder import (BertEncoder, BertForMaskedLM, BertForSequenceClassification,
                                     BertForTokenClassification)
from tests.conftest import run_cli, sentiment_rows
from tests.hf_finetune import finetune_from_hf_then_export
from tests.test_token_classification import ner_sentences, write_conll

transformers = pytest.importorskip("transformers")

TOL = 1e-5
CLASSES = ["ModernBertModel", "ModernBertForMaskedLM", "ModernBertForSequenceClassification",
           "ModernBertForTokenClassification"]
TASKS = dict(zip(CLASSES, ["encoder", "mlm", "classification", "token_classification"]))
LABELS = {0: "neg", 1: "neu", 2: "pos"}
SPECIALS = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]  # after the BPE vocabulary, as in ModernBERT's
SEQ_LEN = 20  # longer than the local window of 8 (4 tokens either side)
NER_TEXTS = [" ".join(word for word, _ in sentence) for sentence in ner_sentences(100, seed=0)]
TINY_NER_FROM_HF = ["task=token_classification", "data=conll2003", "data.test_file=null", "data.max_seq_len=32",
                    "data.batch_size=16", "trainer.max_steps=50", "trainer.max_epochs=-1",
                    "trainer.val_check_interval=50", "trainer.check_val_every_n_epoch=null", "task.lr=1e-2",
                    "callbacks.progress_bar=null", "dropout=0.0"]


def save_modernbert_tokenizer(folder, texts: list[str]) -> dict[str, int]:
    """A byte-level BPE tokenizer trained on ``texts``, its special tokens appended and the "[CLS] $A [SEP]"
    template, saved as ModernBERT's is (PreTrainedTokenizerFast naming the roles); -> {special token: id}."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=100, show_progress=False))
    # [MASK] takes the space before it, as in ModernBERT's tokenizer: "was [MASK]" is "Ġwas", "[MASK]"
    tokenizer.add_special_tokens([AddedToken(token, lstrip=token == "[MASK]", special=True) for token in SPECIALS])
    ids = {token: tokenizer.token_to_id(token) for token in SPECIALS}
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])])
    transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", cls_token="[CLS]",
                                         sep_token="[SEP]", pad_token="[PAD]", mask_token="[MASK]"
                                         ).save_pretrained(folder)
    return {**ids, "vocab_size": tokenizer.get_vocab_size()}


def tiny_modernbert_config(tokens: dict[str, int], **changes):
    """3 layers (0 global, 1 local, 2 global), hidden 32, 2 heads; mean pooling, as ModernBERT-base's classifier."""
    values = dict(vocab_size=tokens["vocab_size"], hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                  intermediate_size=48, max_position_embeddings=64, global_attn_every_n_layers=2, local_attention=8,
                  pad_token_id=tokens["[PAD]"], cls_token_id=tokens["[CLS]"], sep_token_id=tokens["[SEP]"],
                  bos_token_id=tokens["[CLS]"], eos_token_id=tokens["[SEP]"], classifier_pooling="mean",
                  num_labels=3, id2label=LABELS, label2id={v: k for k, v in LABELS.items()},
                  attn_implementation="sdpa")
    return transformers.ModernBertConfig(**{**values, **changes})


@pytest.fixture(scope="module")
def tokenizer_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("modernbert_tokenizer")
    texts = [row["review"] for row in sentiment_rows(200, 0)] + NER_TEXTS
    return folder, save_modernbert_tokenizer(folder, texts)


def save_hf_modernbert(hf_class: str, tokenizer_folder, folder, seed: int = 0, **changes):
    """A random HF model of ``hf_class`` saved with the tiny tokenizer; -> the model (eval mode)."""
    source, tokens = tokenizer_folder
    torch.manual_seed(seed)
    model = getattr(transformers, hf_class)(tiny_modernbert_config(tokens, **changes)).eval()
    with torch.no_grad():  # HF starts these at one and zero; other values show that they travel
        for name, param in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                param.add_(torch.randn_like(param) * 0.1)
    model.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (source / name).is_file():
            (folder / name).write_text((source / name).read_text())
    return model


def batch(tokens: dict[str, int], seq_len: int = SEQ_LEN):
    """(3, seq_len) ids between [CLS] and [SEP], two rows right-padded with [PAD], and their attention mask."""
    torch.manual_seed(0)
    ids = torch.randint(0, min(tokens[t] for t in SPECIALS), (3, seq_len))
    mask = torch.ones_like(ids)
    mask[1, 14:] = 0
    mask[2, 6:] = 0
    ids[:, 0] = tokens["[CLS]"]
    ids[torch.arange(3), mask.sum(1) - 1] = tokens["[SEP]"]
    return ids.masked_fill(mask == 0, tokens["[PAD]"]), mask


def bertlite_model(checkpoint: dict, unpad: bool) -> torch.nn.Module:
    """The network a checkpoint holds, on the padding-free (unpad) or the padded path."""
    meta = checkpoint["bertlite"]
    config = config_from_dict({**meta["model_config"], "unpad": unpad})
    labels = len(meta.get("label_names", []))
    model = {"encoder": lambda: BertEncoder(config),
             "mlm": lambda: BertForMaskedLM(config),
             "classification": lambda: BertForSequenceClassification(config, labels, pooling=meta["pooling"]),
             "token_classification": lambda: BertForTokenClassification(config, labels)}[meta["task"]]()
    model.load_state_dict(model_state(checkpoint))
    return model.eval()


def real(x, mask):
    return x[mask.bool()]  # (N_real, ...): positions that are tokens, not padding


def hf_output(model, ids, mask) -> torch.Tensor:
    """A transformers model's output at the real tokens: hidden states, or logits."""
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask)
    if hasattr(out, "last_hidden_state"):
        return real(out.last_hidden_state, mask)
    return out.logits if out.logits.dim() == 2 else real(out.logits, mask)


def bertlite_output(task: str, model, ids, mask) -> torch.Tensor:
    """The same for a bertlite model of ``task``."""
    with torch.no_grad():
        out = model(ids, mask)
    out = out.logits if task == "mlm" else out
    return out if task == "classification" else real(out, mask)


@pytest.mark.parametrize("unpad", [True, False], ids=["padding_free", "padded"])
@pytest.mark.parametrize("hf_class", CLASSES)
def test_modernbert_import_gives_transformers_outputs(hf_class, unpad, tokenizer_folder, tmp_path):
    hf = save_hf_modernbert(hf_class, tokenizer_folder, tmp_path / hf_class)
    checkpoint, report = import_hf(tmp_path / hf_class)
    assert (report.task, report.missing, report.unexpected) == (TASKS[hf_class], [], [])
    config = checkpoint["bertlite"]["model_config"]
    assert (config["local_attention"], config["global_attn_every_n_layers"], config["position"]) == (8, 2, "rope")
    assert (config["rope_theta"], config["rope_theta_local"], config["bias"]) == (160000.0, 10000.0, False)
    if TASKS[hf_class] == "classification":
        assert checkpoint["bertlite"]["pooling"] == "mean"
        assert checkpoint["bertlite"]["label_names"] == ["neg", "neu", "pos"]
    ids, mask = batch(tokenizer_folder[1])
    ours = bertlite_output(TASKS[hf_class], bertlite_model(checkpoint, unpad), ids, mask)
    torch.testing.assert_close(ours, hf_output(hf, ids, mask), atol=TOL, rtol=0)


@pytest.mark.parametrize("unpad", [True, False], ids=["padding_free", "padded"])
def test_modernbert_long_rows_take_the_chunked_local_path_with_transformers_outputs(unpad, tokenizer_folder, tmp_path):
    from bertlite.nn.local_attention import chunk_for, chunking_pays

    seq_len = 64  # long enough for local layers to attend chunk by chunk instead of through a band mask
    assert chunking_pays(seq_len, 8, False, chunk_for(8))
    hf = save_hf_modernbert("ModernBertForMaskedLM", tokenizer_folder, tmp_path)
    checkpoint, _ = import_hf(tmp_path)
    ids, mask = batch(tokenizer_folder[1], seq_len)
    ours = bertlite_output("mlm", bertlite_model(checkpoint, unpad), ids, mask)
    torch.testing.assert_close(ours, hf_output(hf, ids, mask), atol=TOL, rtol=0)


@pytest.mark.parametrize("hf_class, changes, pattern", [
    ("ModernBertForMaskedLM", dict(attention_bias=True, mlp_bias=True, norm_bias=True, classifier_bias=True,
                                   hidden_activation="silu", classifier_activation="gelu_pytorch_tanh",
                                   decoder_bias=False, attn_implementation="eager"), (8, 2)),
    ("ModernBertForSequenceClassification", dict(classifier_pooling="cls", global_attn_every_n_layers=3), (8, 3)),
    ("ModernBertForTokenClassification", dict(global_attn_every_n_layers=1), (0, 1)),
], ids=["biased_swiglu", "cls_pooling_every_third_global", "every_layer_global"])
def test_modernbert_variants_import_with_transformers_outputs(hf_class, changes, pattern, tokenizer_folder, tmp_path):
    """Biases everywhere with SwiGLU and no decoder bias; the first token pooled; every layer global, which is
    bertlite's local_attention=0 (pattern: local_attention, global_attn_every_n_layers)."""
    hf = save_hf_modernbert(hf_class, tokenizer_folder, tmp_path, **changes)
    checkpoint, report = import_hf(tmp_path)
    assert (report.missing, report.unexpected) == ([], [])
    config = checkpoint["bertlite"]["model_config"]
    assert (config["local_attention"], config["global_attn_every_n_layers"]) == pattern
    ids, mask = batch(tokenizer_folder[1])
    for unpad in (True, False):
        ours = bertlite_output(TASKS[hf_class], bertlite_model(checkpoint, unpad), ids, mask)
        torch.testing.assert_close(ours, hf_output(hf, ids, mask), atol=TOL, rtol=0)


@pytest.mark.parametrize("hf_class", CLASSES)
def test_modernbert_from_hf_then_to_hf_gives_an_identical_state_dict(hf_class, tokenizer_folder, tmp_path):
    """Every tensor of the exported folder equals the original's; transformers loads the folder as the same class,
    newly initialising nothing, with the same outputs and the same attention pattern and rotary bases."""
    hf = save_hf_modernbert(hf_class, tokenizer_folder, tmp_path / "original", seed=1)
    checkpoint, _ = import_hf(tmp_path / "original")
    out = export_hf(checkpoint, tmp_path / "exported")
    original, exported = load_file(tmp_path / "original" / "model.safetensors"), load_file(out / "model.safetensors")
    assert original.keys() == exported.keys()
    for name in original:
        assert torch.equal(original[name], exported[name]), name
    config = json.loads((out / "config.json").read_text())
    assert (config["model_type"], config["architectures"]) == ("modernbert", [hf_class])
    again, info = getattr(transformers, hf_class).from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    kept = ["layer_types", "local_attention", "rope_parameters", "pad_token_id", "cls_token_id", "sep_token_id",
            "hidden_activation", "norm_bias", "decoder_bias"]
    if TASKS[hf_class] in ("classification", "token_classification"):
        kept += ["id2label", "classifier_pooling" if TASKS[hf_class] == "classification" else "num_labels"]
    for key in kept:
        assert getattr(again.config, key) == getattr(hf.config, key), key
    ids, mask = batch(tokenizer_folder[1])
    torch.testing.assert_close(hf_output(again.eval(), ids, mask), hf_output(hf, ids, mask), atol=TOL, rtol=0)


def test_modernbert_config_of_older_transformers_is_read(tokenizer_folder, tmp_path):
    """A config.json as ModernBERT-base's on the Hub: global_attn_every_n_layers and global/local_rope_theta, no
    layer_types nor rope_parameters."""
    save_hf_modernbert("ModernBertModel", tokenizer_folder, tmp_path, num_hidden_layers=4)
    config = json.loads((tmp_path / "config.json").read_text())
    for key in ("layer_types", "rope_parameters"):
        del config[key]
    config.update(global_attn_every_n_layers=3, global_rope_theta=80000.0, local_rope_theta=5000.0)
    (tmp_path / "config.json").write_text(json.dumps(config))
    ours = import_hf(tmp_path)[0]["bertlite"]["model_config"]
    assert (ours["local_attention"], ours["global_attn_every_n_layers"]) == (8, 3)
    assert (ours["rope_theta"], ours["rope_theta_local"]) == (80000.0, 5000.0)


def test_modernbert_folder_without_architectures_is_read_by_its_heads(tokenizer_folder, tmp_path):
    save_hf_modernbert("ModernBertForMaskedLM", tokenizer_folder, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["architectures"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert import_hf(tmp_path)[1].task == "mlm"


# --- bad input: one clear error each -----------------------------------------------------------------------
@pytest.mark.parametrize("change, message", [
    ({"mlp_bias": True}, r"attention_bias=False, mlp_bias=True, .*one switch"),
    ({"hidden_activation": "relu"}, "hidden_activation='relu' has no bertlite equivalent"),
    ({"layer_types": ["sliding_attention", "full_attention", "full_attention"]}, "layer_types=.*i % n == 0"),
    ({"rope_parameters": {"full_attention": {"rope_type": "linear", "rope_theta": 1e4, "factor": 2.0}}},
     r"rope_parameters.full_attention.rope_type='linear'"),
    ({"classifier_pooling": "max"}, "classifier_pooling='max'"),
    ({"tie_word_embeddings": False}, "tie_word_embeddings=false"),
    ({"pad_token_id": None}, "pad_token_id=None: bertlite needs the id of the padding token"),
])
def test_modernbert_config_bertlite_cannot_express_is_refused(change, message, tokenizer_folder, tmp_path):
    save_hf_modernbert("ModernBertModel", tokenizer_folder, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(ConfigError, match=message):
        import_hf(tmp_path)


def test_an_unread_architecture_names_modernbert_among_those_read(tokenizer_folder, tmp_path):
    save_hf_modernbert("ModernBertModel", tokenizer_folder, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "neobert"}))
    with pytest.raises(CheckpointError, match=r"'neobert' model.*modernbert \(.*ModernBertForMaskedLM"):
        import_hf(tmp_path)


def test_export_refuses_a_rotary_model_that_modernbert_cannot_express(tokenizer_folder, tmp_path):
    save_hf_modernbert("ModernBertModel", tokenizer_folder, tmp_path / "hf")
    checkpoint, _ = import_hf(tmp_path / "hf")
    checkpoint["bertlite"]["model_config"].update(norm_first=False, first_layer_attn_norm=True, activation="gelu")
    with pytest.raises(ConfigError, match=r"ModernBERT: .*norm_first=False \(ModernBERT is pre-LN\).*"
                                          r"activation='gelu'"):
        export_hf(checkpoint, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_export_refuses_a_pooling_modernbert_lacks(tokenizer_folder, tmp_path):
    save_hf_modernbert("ModernBertForSequenceClassification", tokenizer_folder, tmp_path / "hf")
    checkpoint, _ = import_hf(tmp_path / "hf")
    checkpoint["bertlite"]["pooling"] = "last"
    with pytest.raises(ConfigError, match=r"pooling='last' has no HF equivalent \(ModernBertForSequenceClassification "
                                          r"pools by cls \(the first token\) or mean\)"):
        export_hf(checkpoint, tmp_path / "out")


def test_a_model_of_the_modernbert_preset_exports_as_modernbert(tokenizer_folder, tmp_path):
    """A model built from the modernbert preset, never imported, is a ModernBERT for transformers."""
    tokens = tokenizer_folder[1]
    config = preset("modernbert-tiny", vocab_size=tokens["vocab_size"], pad_token_id=tokens["[PAD]"], d_model=32,
                    n_heads=2, d_ff=48, max_seq_len=32, local_attention=8, global_attn_every_n_layers=2)
    model = BertForMaskedLM(config).eval()
    save_hf_modernbert("ModernBertForMaskedLM", tokenizer_folder, tmp_path / "hf")
    checkpoint, _ = import_hf(tmp_path / "hf")  # for its tokenizer
    checkpoint["bertlite"]["model_config"] = dataclasses.asdict(config)
    checkpoint["state_dict"] = {f"model.{k}": v for k, v in model.state_dict().items()}
    hf = transformers.AutoModelForMaskedLM.from_pretrained(export_hf(checkpoint, tmp_path / "out")).eval()
    assert type(hf).__name__ == "ModernBertForMaskedLM"
    assert (hf.config.cls_token_id, hf.config.sep_token_id) == (tokens["[CLS]"], tokens["[SEP]"])
    ids, mask = batch(tokens)
    torch.testing.assert_close(hf_output(hf, ids, mask), bertlite_output("mlm", model, ids, mask), atol=TOL, rtol=0)


# --- end to end ----------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_finetune_from_a_modernbert_folder_then_export(tokenizer_folder, sentiment_csv, tmp_path):
    save_hf_modernbert("ModernBertForMaskedLM", tokenizer_folder, tmp_path / "modernbert")
    finetune_from_hf_then_export(tmp_path / "modernbert", sentiment_csv, tmp_path,
                                 "ModernBertForSequenceClassification", tokenizer_folder[1]["[PAD]"])


@pytest.mark.slow
def test_finetune_ner_from_a_modernbert_folder_then_export(tokenizer_folder, tmp_path):
    """task=token_classification from hf:<ModernBERT folder> on a tiny CoNLL file trains and tags; its to-hf export
    is a ModernBertForTokenClassification with the same logits."""
    import bertlite

    save_hf_modernbert("ModernBertModel", tokenizer_folder, tmp_path / "modernbert")
    for name, n, seed in [("train.txt", 300, 10), ("dev.txt", 60, 11)]:
        write_conll(tmp_path / name, ner_sentences(n, seed))
    run_dir = tmp_path / "run"
    result = run_cli("bertlite.finetune", *TINY_NER_FROM_HF, f"pretrained=hf:{tmp_path / 'modernbert'}",
                     f"data.train_file={tmp_path / 'train.txt'}", f"data.validation_file={tmp_path / 'dev.txt'}",
                     f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((run_dir / "metrics.json").read_text())["validation"]["val/entity_f1"] > 0.6
    tagger = bertlite.load(run_dir / "checkpoints" / "best.ckpt")
    text = "Angela Merkel visited Paris on Monday ."
    entities = tagger.predict([text])[0]
    assert entities and all(text[e["start"]:e["end"]] == e["text"] for e in entities)

    out = tmp_path / "exported"
    result = run_cli("bertlite.cli.convert", "to-hf", str(run_dir / "checkpoints" / "best.ckpt"), f"out={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    hf = transformers.AutoModelForTokenClassification.from_pretrained(out).eval()
    assert type(hf).__name__ == "ModernBertForTokenClassification"
    ids = torch.tensor([tagger.tokenizer.encode(text).ids])
    with torch.no_grad():
        ours = tagger.model(ids, torch.ones_like(ids))
        theirs = hf(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    torch.testing.assert_close(ours, theirs, atol=TOL, rtol=0)
