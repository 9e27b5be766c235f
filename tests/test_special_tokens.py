"""The roles of special tokens (bertlite/data/special_tokens.py): read from a folder's tokenizer_config.json and
special_tokens_map.json, found by their usual names otherwise, kept through checkpoints, model folders and Hugging
Face exports; and masking, pair encoding, fill-mask and NER alignment with RoBERTa- and ModernBERT-style
tokenizers. A tokenizer without a role a task needs is one error that names the role and the file."""

from __future__ import annotations

import json

import pytest
import torch
from tokenizers import Tokenizer, models, processors

import bertlite
from bertlite.checkpoints import save_checkpoint
from bertlite.data.classification import ClassificationDataModule
from bertlite.data.encoding import encode_texts, truncating
from bertlite.data.masking import MLMMasker
from bertlite.data.special_tokens import SpecialTokens, special_tokens, with_special_tokens
from bertlite.data.token_classification import IGNORE, TokenClassificationDataModule
from bertlite.data.tokenizer import load_tokenizer, tokenizer_section, train_wordpiece
from bertlite.errors import BertliteError, CheckpointError, ConfigError
from bertlite.inference import MaskedLM, TokenClassifier
from bertlite.interop.hf_export import write_tokenizer
from bertlite.models import preset
from bertlite.models.encoder import BertForMaskedLM, BertForTokenClassification
from tests.conftest import TINY_RUN, TableModel, predictor_checkpoint, run_cli, synthetic_sentences
from tests.test_bpe_tokenizers import FOLDERS, HARD_TEXTS, byte_level_bpe, training_texts
from tests.test_token_classification import ner_sentences, write_conll

transformers = pytest.importorskip("transformers")

TINY = dict(d_model=32, n_heads=2, d_ff=64, n_layers=2, max_seq_len=64, dropout=0.0, attention_dropout=0.0)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    built: dict = {}

    def folder(kind: str):
        if kind not in built:
            built[kind] = FOLDERS[kind](tmp_path_factory.mktemp(kind))
        return built[kind]

    return folder


def word_level(tokens: list[str]) -> Tokenizer:
    """A tokenizer of whole words, for tests that only need a vocabulary."""
    return Tokenizer(models.WordLevel({t: i for i, t in enumerate(tokens)}, unk_token=tokens[0]))


# --- where the roles come from ---------------------------------------------------------------------------------


def test_roles_come_from_tokenizer_config_and_special_tokens_map_wins(tmp_path):
    word_level(["<unk>", "<cls>", "<sep>", "<blank>", "<hole>", "<pad>", "<mask>", "a"]).save(
        str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"cls_token": "<cls>", "sep_token": "<sep>", "mask_token": "<blank>", "unk_token": "<unk>"}))
    (tmp_path / "special_tokens_map.json").write_text(json.dumps(  # transformers' AddedToken form
        {"mask_token": {"content": "<hole>", "lstrip": True, "rstrip": False, "single_word": False}}))
    roles = special_tokens(load_tokenizer(tmp_path))
    assert (roles.cls, roles.sep, roles.mask, roles.unk) == ("<cls>", "<sep>", "<hole>", "<unk>")
    assert roles.pad == "<pad>"  # named by neither file: found by its usual name, as transformers' classes default
    assert str(tmp_path / "tokenizer_config.json") in roles.source
    assert special_tokens(load_tokenizer(tmp_path / "tokenizer.json")) == roles  # the file's folder is read too


def test_bos_and_eos_open_and_close_where_no_cls_or_sep_is_named(tmp_path):
    word_level(["<|endoftext|>", "<|pad|>", "a"]).save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|pad|>"}))
    roles = special_tokens(load_tokenizer(tmp_path))
    assert (roles.cls, roles.sep, roles.pad, roles.mask) == ("<|endoftext|>", "<|endoftext|>", "<|pad|>", None)


def test_a_bare_tokenizer_json_finds_robertas_and_berts_roles_by_name(tmp_path):
    word_level(["<s>", "<pad>", "</s>", "<unk>", "<mask>", "a"]).save(str(tmp_path / "roberta.json"))
    roberta = special_tokens(load_tokenizer(tmp_path / "roberta.json"))
    assert roberta.to_dict() == {"pad": "<pad>", "unk": "<unk>", "cls": "<s>", "sep": "</s>", "mask": "<mask>",
                                 "bos": "<s>", "eos": "</s>"}
    bert = special_tokens(train_wordpiece(synthetic_sentences(100), vocab_size=100))
    assert (bert.pad, bert.unk, bert.cls, bert.sep, bert.mask) == ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


# --- masking, pairs, NER, fill-mask with other tokenizers ------------------------------------------------------


def blocks(tokenizer: Tokenizer, texts: list[str], length: int = 32) -> torch.Tensor:
    """(N, length) pretraining blocks as bertlite packs them: the opening token, then documents each closed."""
    roles = special_tokens(tokenizer)
    stream = [i for e in tokenizer.encode_batch(texts, add_special_tokens=False)
              for i in [*e.ids, tokenizer.token_to_id(roles.sep)]]
    chunk = length - 1
    rows = [[tokenizer.token_to_id(roles.cls), *stream[k:k + chunk]] for k in range(0, len(stream) - chunk, chunk)]
    return torch.tensor(rows)


@pytest.mark.parametrize("kind", ["roberta", "modernbert"])
def test_masking_never_selects_a_special_token_and_masks_with_the_tokenizers_own(kind, folders):
    tokenizer = load_tokenizer(folders(kind))
    texts = [t + " write to |||EMAIL_ADDRESS||| or <pad> [PAD] now" for t in training_texts()[:60]]
    ids = blocks(tokenizer, texts)
    specials = {i for i, t in tokenizer.get_added_tokens_decoder().items() if t.special}
    present = set(ids.unique().tolist())
    assert tokenizer.token_to_id("<pad>" if kind == "roberta" else "[PAD]") in present
    if kind == "modernbert":
        assert tokenizer.token_to_id("|||EMAIL_ADDRESS|||") in present  # special, though it plays no role
    masker = MLMMasker(tokenizer, mlm_probability=0.9)
    corrupted, labels = masker(ids, torch.Generator().manual_seed(0))
    is_special = torch.isin(ids, torch.tensor(sorted(specials)))
    assert is_special.any() and not (labels[is_special] != -100).any()
    mask_id = tokenizer.token_to_id("<mask>" if kind == "roberta" else "[MASK]")
    assert masker.mask_id == mask_id and (corrupted == mask_id).sum() > 0.6 * (labels != -100).sum()


def test_whole_word_masking_selects_every_piece_of_a_byte_level_word(folders):
    tokenizer = load_tokenizer(folders("roberta"))
    ids = blocks(tokenizer, training_texts()[:40])
    selected = MLMMasker(tokenizer, 0.3, whole_word_mask=True).select(ids, torch.Generator().manual_seed(1))
    specials = torch.isin(ids, torch.tensor(sorted(tokenizer.get_added_tokens_decoder())))
    tokens = [[tokenizer.id_to_token(i) for i in row] for row in ids.tolist()]
    words_seen = 0
    for row in range(len(ids)):
        for pos in range(1, ids.size(1)):
            starts = tokens[row][pos].startswith("Ġ") or specials[row, pos - 1]
            if not starts and not specials[row, pos]:  # a piece inside a word shares its word's draw
                assert selected[row, pos] == selected[row, pos - 1], tokens[row][pos - 1:pos + 1]
                words_seen += 1
    assert words_seen > 50 and 0.15 < selected[~specials].float().mean() < 0.45


@pytest.mark.parametrize("kind", ["roberta", "modernbert"])
def test_pairs_are_encoded_with_the_tokenizers_own_template(kind, folders, tmp_path):
    folder = folders(kind)
    rows = [{"a": f"text {i} comes first, accents é and emoji 😀", "b": f"{i} is its partner", "label": "xy"[i % 2]}
            for i in range(12)]  # longer than 16 tokens together: truncated, the longer text first
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    dm = ClassificationDataModule(load_tokenizer(folder), text_column="a", text_pair_column="b",
                                  train_file=str(tmp_path / "train.jsonl"), validation_fraction=0.25, max_seq_len=16)
    dm.setup()
    theirs = transformers.AutoTokenizer.from_pretrained(str(folder))
    encoded = {tuple(r["input_ids"]) for r in dm.datasets["train"]}
    expected = theirs([r["a"] for r in rows], [r["b"] for r in rows], truncation=True, max_length=16)["input_ids"]
    assert encoded <= {tuple(ids) for ids in expected} and len(encoded) == len(dm.datasets["train"])
    full = encode_texts(truncating(load_tokenizer(folder), 64), ["A"], ["B"])[0].tokens
    if kind == "roberta":
        assert full[0] == "<s>" and full.count("</s>") == 3 and full[full.index("</s>") + 1] == "</s>"
    else:
        assert full[0] == "[CLS]" and full.count("[SEP]") == 2
    batch = dm.collate([dm.datasets["train"][0], {"input_ids": [0, 5], "token_type_ids": [0, 0], "length": 2,
                                                 "label": 0}])
    pad = theirs.pad_token_id
    assert batch["input_ids"][1, -1] == pad and pad == load_tokenizer(folder).token_to_id(theirs.pad_token)


@pytest.mark.parametrize("kind", ["roberta", "bertlite_bpe", "modernbert"])
def test_ner_labels_exactly_the_first_piece_of_each_word(kind, folders, tmp_path):
    folder = folders(kind)
    write_conll(tmp_path / "train.txt", ner_sentences(30, seed=3))
    dm = TokenClassificationDataModule(train_file=str(tmp_path / "train.txt"), validation_fraction=0.2,
                                       max_seq_len=64)
    tokenizer = load_tokenizer(folder)
    dm.set_tokenizer(tokenizer)
    dm.setup()
    theirs = transformers.AutoTokenizer.from_pretrained(str(folder))
    prefix_space = kind == "bertlite_bpe"  # its ByteLevel adds a space before the first word; RoBERTa's does not
    split = dm.datasets["validation"]
    for row in split:
        words = dm.load_raw()["validation"]["tokens"][row["sentence"]]
        pieces = [tokenizer.id_to_token(i) for i in row["input_ids"][1:-1]]
        starts = [i for i, s in enumerate(row["word_starts"][1:-1]) if s]
        assert len(starts) == len(words)  # every word labelled once, on one piece
        assert [p.startswith("Ġ") for p in pieces] == [i in starts and (i > 0 or prefix_space)
                                                       for i in range(len(pieces))], pieces
        labelled = [i for i, label in enumerate(row["labels"][1:-1]) if label != IGNORE]
        assert labelled == starts
        # the words' pieces are the running text's, as the model reads it at inference
        assert row["input_ids"][1:-1] == theirs(" ".join(words), add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("kind", ["roberta", "modernbert"])
def test_tagger_finds_words_and_entities_without_the_space_a_byte_level_piece_holds(kind, folders):
    tokenizer = load_tokenizer(folders(kind))
    labels = ["B-PER", "I-PER", "O"]
    config = preset("bert-tiny", **TINY, vocab_size=tokenizer.get_vocab_size())
    tagger = TokenClassifier(predictor_checkpoint(BertForTokenClassification(config, 3), tokenizer,
                                                  "token_classification", label_names=labels))
    text = "Yesterday the function object returned its value ."  # words the tiny vocabulary holds whole, with Ġ
    encoding = tokenizer.encode(text, add_special_tokens=False)
    first_pieces = {w: encoding.tokens[i] for i, w in reversed(list(enumerate(encoding.word_ids)))}
    assert (first_pieces[2], first_pieces[3]) == ("Ġfunction", "Ġobject")
    table = torch.full((tokenizer.get_vocab_size(), 3), -5.0)
    table[:, 2] = 5.0
    for word, tag in [(2, 0), (3, 1)]:  # B-PER, I-PER: read on each word's first piece
        piece = tokenizer.token_to_id(first_pieces[word])
        table[piece] = -5.0
        table[piece, tag] = 5.0
    tagger.model = TableModel(table)
    assert [w["word"] for w in tagger.predict_words([text])[0]] == text.split()
    assert [(e["type"], e["text"], e["start"]) for e in tagger.predict([text])[0]] == [("PER", "function object", 14)]


def mlm_checkpoint(tokenizer, **meta) -> dict:
    torch.manual_seed(0)
    model = BertForMaskedLM(preset("bert-tiny", **TINY, vocab_size=tokenizer.get_vocab_size(),
                                   pad_token_id=tokenizer.token_to_id(special_tokens(tokenizer).pad)))
    return predictor_checkpoint(model.eval(), tokenizer, "mlm", **meta)


def test_fill_mask_takes_the_tokenizers_own_mask_token(folders):
    tokenizer = load_tokenizer(folders("roberta"))
    mlm = MaskedLM(mlm_checkpoint(tokenizer, special_tokens=special_tokens(tokenizer).to_dict()))
    assert mlm.mask_token == "<mask>"
    options = mlm.fill_mask("The value of the <mask> is returned.", top_k=4)
    assert len(options) == 4 and all("<mask>" not in o["sequence"] for o in options)
    assert options[0]["sequence"].startswith("The value of the")
    with pytest.raises(BertliteError, match="no <mask> token in the text.*mask token is <mask>"):
        mlm.fill_mask("The value of the [MASK] is returned.")


# --- the roles travel with the tokenizer ----------------------------------------------------------------------


def test_roles_travel_through_checkpoint_files_and_model_folders(folders, tmp_path):
    tokenizer = load_tokenizer(folders("unigram"))  # <cls> and <sep>: no usual name would find them
    roles = special_tokens(tokenizer)
    assert (roles.cls, roles.sep, roles.mask) == ("<cls>", "<sep>", "<mask>")
    checkpoint = mlm_checkpoint(tokenizer)
    checkpoint["bertlite"].update(tokenizer_section(tokenizer))
    save_checkpoint(checkpoint, tmp_path / "model.ckpt")
    from_file = bertlite.load(tmp_path / "model.ckpt")
    assert special_tokens(from_file.tokenizer) == roles and from_file.mask_token == "<mask>"
    from_file.save_pretrained(tmp_path / "folder")
    assert json.loads((tmp_path / "folder" / "config.json").read_text())["special_tokens"] == roles.to_dict()
    from_folder = bertlite.load(tmp_path / "folder")
    assert special_tokens(from_folder.tokenizer) == roles
    options = from_folder.fill_mask("The value <mask> returned.", top_k=2)
    assert [o["token"] for o in options] == [o["token"] for o in from_file.fill_mask("The value <mask> returned.",
                                                                                      top_k=2)]


def test_a_checkpoint_without_roles_reads_berts_names(tmp_path):
    tokenizer = train_wordpiece(synthetic_sentences(200), vocab_size=120)
    checkpoint = mlm_checkpoint(tokenizer)
    assert "special_tokens" not in checkpoint["bertlite"]  # as every checkpoint written before roles were stored
    save_checkpoint(checkpoint, tmp_path / "old.ckpt")
    old = bertlite.load(tmp_path / "old.ckpt")
    assert special_tokens(old.tokenizer).to_dict() == {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]",
                                                       "sep": "[SEP]", "mask": "[MASK]"}
    assert len(old.fill_mask("the cat [MASK] on the mat", top_k=3)) == 3


@pytest.mark.parametrize("roles", [{"mask": 3}, {"colour": "<mask>"}, ["<mask>"]])
def test_damaged_roles_in_a_checkpoint_are_one_checkpoint_error(roles, tmp_path):
    tokenizer = train_wordpiece(synthetic_sentences(200), vocab_size=120)
    save_checkpoint(mlm_checkpoint(tokenizer, special_tokens=roles), tmp_path / "bad.ckpt")
    with pytest.raises(CheckpointError, match="bertlite.special_tokens"):
        bertlite.load(tmp_path / "bad.ckpt")


@pytest.mark.parametrize("kind", ["roberta", "modernbert", "unigram", "wordpiece"])
def test_exported_tokenizer_files_name_the_roles_for_transformers(kind, folders, tmp_path):
    tokenizer = load_tokenizer(folders(kind))
    section = tokenizer_section(tokenizer)
    write_tokenizer(section["tokenizer"], tmp_path, 64, section["special_tokens"])
    theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    roles = special_tokens(tokenizer)
    assert (theirs.cls_token, theirs.sep_token, theirs.pad_token, theirs.mask_token, theirs.unk_token) == (
        roles.cls, roles.sep, roles.pad, roles.mask, roles.unk)
    assert theirs(HARD_TEXTS, HARD_TEXTS[::-1])["input_ids"] == [e.ids for e in tokenizer.encode_batch(
        list(zip(HARD_TEXTS, HARD_TEXTS[::-1])))]
    assert special_tokens(load_tokenizer(tmp_path)) == roles  # and bertlite reads its own export back


# --- a tokenizer without a role the task needs ---------------------------------------------------------------------


def bpe_without_a_mask_token(folder):
    """A byte-level BPE folder whose tokenizer_config.json names no mask token, and whose vocabulary has none."""
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = byte_level_bpe(["<s>", "<pad>", "</s>", "<unk>"])
    tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>",
         "unk_token": "<unk>"}))
    return folder


def test_a_tokenizer_without_a_mask_token_is_one_config_error_naming_the_role_and_file(tmp_path):
    folder = bpe_without_a_mask_token(tmp_path / "no_mask")
    tokenizer = load_tokenizer(folder)
    with pytest.raises(ConfigError) as error:
        MLMMasker(tokenizer)
    message = str(error.value)
    assert "no mask token, which masked-LM pretraining (task=mlm) needs" in message
    assert str(folder / "tokenizer_config.json") in message and '"mask_token"' in message
    misnamed = with_special_tokens(tokenizer, SpecialTokens(mask="<hole>", source=str(folder)))
    with pytest.raises(ConfigError, match="names '<hole>' as the mask token .* the vocabulary has no such token"):
        MLMMasker(misnamed)


def test_pretrain_cli_names_the_missing_mask_token_in_one_line(tiny_corpus, tmp_path):
    folder = bpe_without_a_mask_token(tmp_path / "no_mask")
    result = run_cli("bertlite.pretrain", *TINY_RUN, "data=text_files", f"data.train_files={tiny_corpus}",
                     f"tokenizer.path={folder}", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "no mask token" in result.stderr and "tokenizer_config.json" in result.stderr


@pytest.mark.slow
def test_finetuning_keeps_the_pretrained_checkpoints_roles(folders, sentiment_csv, tmp_path):
    from tests.test_cli_finetune import TINY_FINETUNE

    tokenizer = load_tokenizer(folders("unigram"))  # <cls> and <sep>: only the stored roles name them
    checkpoint = mlm_checkpoint(tokenizer)
    checkpoint["bertlite"].update(tokenizer_section(tokenizer))
    save_checkpoint(checkpoint, tmp_path / "pretrained.ckpt")
    train, dev = sentiment_csv
    result = run_cli("bertlite.finetune", *TINY_FINETUNE, f"data.train_file={train}", f"data.validation_file={dev}",
                     f"pretrained={tmp_path / 'pretrained.ckpt'}", "trainer.max_steps=4",
                     "trainer.val_check_interval=2", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 0, result.stderr[-3000:]
    best = json.loads((tmp_path / "run" / "metrics.json").read_text())["best_checkpoint"]
    classifier = bertlite.load(best)
    assert classifier.meta["special_tokens"] == special_tokens(tokenizer).to_dict()
    assert special_tokens(classifier.tokenizer) == special_tokens(tokenizer)
    assert len(classifier.predict(["the value was valid and correct ."])) == 1
