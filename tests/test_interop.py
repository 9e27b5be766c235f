"""Hugging Face interop: tiny random HF BERTs imported, bertlite models exported, both checked against
transformers' own forward pass (fp32, padding in the batch)."""

from __future__ import annotations

import json

import pytest
import torch

from bertlite.data.tokenizer import load_tokenizer
from bertlite.errors import CheckpointError, ConfigError
from bertlite.inference import load
from bertlite.interop import export_hf, import_hf
from bertlite.models.registry import PRETRAINING_MODELS
from tests.conftest import run_cli
from tests.test_cli_finetune import TINY_FINETUNE

transformers = pytest.importorskip("transformers")

TOL = 1e-5
SAMPLE = ["Café naïve résumé — the déjà-vu!", "unknownword zzxqj, 42 % (really?)", "The value was valid."]


def tiny_hf_config(vocab_size: int, **overrides):
    return transformers.BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                   intermediate_size=64, max_position_embeddings=32, num_labels=3,
                                   id2label={0: "neg", 1: "neu", 2: "pos"}, label2id={"neg": 0, "neu": 1, "pos": 2},
                                   **overrides)


@pytest.fixture(scope="session")
def tokenizer_dir(pretrain_run):
    return pretrain_run  # holds tokenizer.json: a real WordPiece vocabulary trained by bertlite


def save_hf(model, folder, tokenizer_dir, bin_format=False):
    model.save_pretrained(folder)
    if bin_format:  # the older pytorch_model.bin layout
        (folder / "model.safetensors").unlink()
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
    (folder / "tokenizer.json").write_text((tokenizer_dir / "tokenizer.json").read_text())
    return folder


def batch(vocab_size: int):
    torch.manual_seed(0)
    ids = torch.randint(5, vocab_size, (3, 12))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0  # padding in the batch
    mask[2, 3:] = 0
    types = torch.zeros_like(ids)
    types[0, 6:] = 1
    return ids, mask, types


def real(x, mask):
    return x[mask.bool()]  # (N_real, ...): positions that are tokens, not padding


@pytest.mark.parametrize("hf_class, bin_format", [("BertModel", False), ("BertForMaskedLM", True),
                                                  ("BertForSequenceClassification", False)])
def test_import_matches_transformers(hf_class, bin_format, tokenizer_dir, tmp_path):
    vocab = load_tokenizer(tokenizer_dir / "tokenizer.json").get_vocab_size()
    torch.manual_seed(1)
    hf = getattr(transformers, hf_class)(tiny_hf_config(vocab)).eval()
    folder = save_hf(hf, tmp_path / hf_class, tokenizer_dir, bin_format)
    checkpoint, report = import_hf(folder)
    assert report.task == {"BertModel": "encoder", "BertForMaskedLM": "mlm",
                           "BertForSequenceClassification": "classification"}[hf_class]
    assert report.missing == []
    predictor = load(f"hf:{folder}")
    ids, mask, types = batch(vocab)
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=mask, token_type_ids=types)
        ours = predictor.model(ids, mask, types)
    if hf_class == "BertModel":
        assert report.unexpected == []  # the pooler is kept
        torch.testing.assert_close(real(ours, mask), real(theirs.last_hidden_state, mask), atol=TOL, rtol=0)
        torch.testing.assert_close(predictor.model.pooler(ours), theirs.pooler_output, atol=TOL, rtol=0)
    elif hf_class == "BertForMaskedLM":
        torch.testing.assert_close(real(ours.logits, mask), real(theirs.logits, mask), atol=TOL, rtol=0)
    else:
        assert predictor.labels == ["neg", "neu", "pos"]
        torch.testing.assert_close(ours, theirs.logits, atol=TOL, rtol=0)


def test_bert_model_with_a_pooler_survives_from_hf_then_to_hf_bit_for_bit(tokenizer_dir, tmp_path):
    """A sentence encoder's pooler_output is read by users: every weight, the pooler's too, comes back identical,
    and transformers reports nothing newly initialised in the exported folder."""
    vocab = load_tokenizer(tokenizer_dir / "tokenizer.json").get_vocab_size()
    torch.manual_seed(2)
    hf = transformers.BertModel(tiny_hf_config(vocab)).eval()
    folder = save_hf(hf, tmp_path / "encoder", tokenizer_dir, False)
    checkpoint, _ = import_hf(folder)
    ckpt = tmp_path / "encoder.ckpt"
    torch.save(checkpoint, ckpt)
    out = export_hf(ckpt, tmp_path / "exported")
    original, exported = hf.state_dict(), transformers.BertModel.from_pretrained(out).state_dict()
    assert "pooler.dense.weight" in exported
    assert original.keys() == exported.keys()
    for name in original:
        assert torch.equal(original[name], exported[name]), name
    _, info = transformers.BertModel.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    texts = ["the value was valid .", "a name"]
    pooled = load(ckpt).encode(texts, pooling="pooler")
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    with torch.no_grad():
        theirs = hf(**hf_tok(texts, padding=True, return_tensors="pt")).pooler_output
    torch.testing.assert_close(pooled, theirs, atol=TOL, rtol=0)


def test_import_pretraining_folder_sharded_and_old_names(tokenizer_dir, tmp_path):
    """BertForPreTraining (its NSP head reported, not imported), saved in shards; then the same weights as one
    .bin with TF-era LayerNorm gamma/beta names: both give transformers' MLM logits."""
    vocab = load_tokenizer(tokenizer_dir / "tokenizer.json").get_vocab_size()
    hf = transformers.BertForPreTraining(tiny_hf_config(vocab)).eval()
    sharded = tmp_path / "sharded"
    hf.save_pretrained(sharded, max_shard_size="50KB")
    assert (sharded / "model.safetensors.index.json").is_file()
    (sharded / "tokenizer.json").write_text((tokenizer_dir / "tokenizer.json").read_text())
    old = tmp_path / "old"
    old.mkdir()
    (old / "config.json").write_text((sharded / "config.json").read_text())
    (old / "tokenizer.json").write_text((tokenizer_dir / "tokenizer.json").read_text())
    renamed = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
               for k, v in hf.state_dict().items()}
    torch.save(renamed, old / "pytorch_model.bin")
    ids, mask, types = batch(vocab)
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=mask, token_type_ids=types).prediction_logits
    for folder in (sharded, old):
        checkpoint, report = import_hf(folder)
        assert report.task == "mlm" and report.missing == []
        assert {"cls.seq_relationship.weight", "bert.pooler.dense.weight"} <= set(report.unexpected)
        with torch.no_grad():
            ours = load(f"hf:{folder}").model(ids, mask, types).logits
        torch.testing.assert_close(real(ours, mask), real(theirs, mask), atol=TOL, rtol=0)


def test_export_mlm_matches_transformers(pretrain_run, tmp_path):
    ckpt = pretrain_run / "checkpoints" / "last.ckpt"
    out = export_hf(ckpt, tmp_path / "exported")
    hf = transformers.BertForMaskedLM.from_pretrained(out).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    mlm = load(ckpt)
    for text in SAMPLE:
        assert hf_tok(text)["input_ids"] == mlm.tokenizer.encode(text).ids, text
    enc = hf_tok(SAMPLE, padding=True, return_tensors="pt")
    with torch.no_grad():
        theirs = hf(**enc).logits
        ours = mlm.model(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]).logits
    torch.testing.assert_close(real(ours, enc["attention_mask"]), real(theirs, enc["attention_mask"]),
                               atol=TOL, rtol=0)


@pytest.mark.slow
def test_finetune_from_hf_folder_then_export(pretrain_run, sentiment_csv, tmp_path):
    """A pretrained model handed to HF and back: bertlite-convert to-hf -> bertlite-finetune pretrained=hf:<folder>
    (CLI) -> bertlite-convert to-hf -> transformers gives the classifier's probabilities."""
    folder = tmp_path / "hf_bert"
    result = run_cli("bertlite.cli.convert", "to-hf", str(pretrain_run / "checkpoints" / "last.ckpt"), f"out={folder}")
    assert result.returncode == 0, result.stderr[-3000:]
    (folder / "tokenizer.json").unlink()  # import from vocab.txt + tokenizer_config.json's do_lower_case
    train, dev = sentiment_csv
    run_dir = tmp_path / "run"
    result = run_cli("bertlite.finetune", *TINY_FINETUNE, f"data.train_file={train}", f"data.validation_file={dev}",
                     f"pretrained=hf:{folder}", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((run_dir / "metrics.json").read_text())["validation"]["val/acc"] > 0.8

    out = tmp_path / "exported"
    result = run_cli("bertlite.cli.convert", "to-hf", str(run_dir / "checkpoints" / "best.ckpt"), f"out={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    hf_clf = transformers.AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert hf_clf.config.id2label == {0: "neg", 1: "pos"}
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    clf = load(run_dir / "checkpoints" / "best.ckpt")
    texts = ["the value was valid and correct .", "the name was wrong .", *SAMPLE]
    for text in texts:
        assert hf_tok(text)["input_ids"] == clf.tokenizer.encode(text).ids, text
    enc = hf_tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        theirs = hf_clf(**enc).logits.softmax(-1)
    torch.testing.assert_close(clf.predict_proba(texts), theirs, atol=TOL, rtol=0)


def test_convert_cli_from_hf(tokenizer_dir, tmp_path):
    vocab = load_tokenizer(tokenizer_dir / "tokenizer.json").get_vocab_size()
    folder = save_hf(transformers.BertForMaskedLM(tiny_hf_config(vocab)), tmp_path / "hf", tokenizer_dir)
    out = tmp_path / "bert.ckpt"
    result = run_cli("bertlite.cli.convert", "from-hf", str(folder), f"out={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert load(out).fill_mask("the [MASK] was valid .", top_k=3)[0]["token"]
    again = run_cli("bertlite.cli.convert", "from-hf", str(folder), f"out={out}")
    assert again.returncode == 2 and "exists" in again.stderr  # a good file is never overwritten silently


# --- bad input: one clear error each -----------------------------------------------------------------------
def test_a_folder_of_an_architecture_bertlite_does_not_read_names_those_it_reads(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(CheckpointError, match=r"'gpt2' model.*reads these Hugging Face architectures: "
                                              r"bert \(BertForSequenceClassification.*roberta \(Roberta"):
        import_hf(tmp_path)
    result = run_cli("bertlite.cli.convert", "from-hf", str(tmp_path), f"out={tmp_path / 'x.ckpt'}")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "roberta" in result.stderr


def test_truncated_weights_file(tokenizer_dir, tmp_path):
    vocab = load_tokenizer(tokenizer_dir / "tokenizer.json").get_vocab_size()
    folder = save_hf(transformers.BertModel(tiny_hf_config(vocab)), tmp_path / "hf", tokenizer_dir)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        import_hf(folder)
    result = run_cli("bertlite.cli.convert", "from-hf", str(folder), f"out={tmp_path / 'x.ckpt'}")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_vocab_and_embedding_size_mismatch(tokenizer_dir, tmp_path):
    vocab = load_tokenizer(tokenizer_dir / "tokenizer.json").get_vocab_size()
    folder = save_hf(transformers.BertModel(tiny_hf_config(vocab + 7)), tmp_path / "hf", tokenizer_dir)
    with pytest.raises(ConfigError, match=f"{vocab} tokens but config.json says vocab_size={vocab + 7}"):
        import_hf(folder)


def test_weight_shape_mismatch(tokenizer_dir, tmp_path):
    vocab = load_tokenizer(tokenizer_dir / "tokenizer.json").get_vocab_size()
    folder = save_hf(transformers.BertModel(tiny_hf_config(vocab)), tmp_path / "hf", tokenizer_dir)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "intermediate_size": 48}))
    with pytest.raises(CheckpointError, match=r"intermediate.dense.weight has shape \(64, 32\).*\(48, 32\)"):
        import_hf(folder)


@pytest.mark.parametrize("change, message", [({"norm_first": True}, "pre-LN"),
                                             ({"position": "sinusoidal"}, "position='sinusoidal'"),
                                             ({"bias": False}, "bias=False"),
                                             ({"local_attention": 8, "global_attn_every_n_layers": 2},
                                              "local_attention=8")])
def test_export_refuses_options_without_hf_equivalent(pretrain_run, tmp_path, change, message):
    checkpoint = torch.load(pretrain_run / "checkpoints" / "last.ckpt", weights_only=False)
    checkpoint["bertlite"]["model_config"].update(change)
    path = tmp_path / "changed.ckpt"
    torch.save(checkpoint, path)
    with pytest.raises(ConfigError, match=message):
        export_hf(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_export_refuses_gpt(tmp_path):
    from bertlite.models.config import preset
    from bertlite.data.tokenizer import train_wordpiece

    tokenizer = train_wordpiece(["a b c d e"] * 10, vocab_size=40)
    config = preset("gpt-tiny", vocab_size=tokenizer.get_vocab_size(), n_layers=1, d_model=32, n_heads=2)
    model = PRETRAINING_MODELS["gpt"](config)
    import dataclasses

    path = tmp_path / "gpt.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "bertlite": {"task": "clm", "model_config": dataclasses.asdict(config),
                             "tokenizer": tokenizer.to_str()}}, path)
    with pytest.raises(CheckpointError, match="causal-LM"):
        export_hf(path, tmp_path / "out")
