"""Text, tokenizer and the text-classification sections of the benchmark (fine-tuning, inference).

Every library reads the same sentences through the same WordPiece tokenizer: bertlite's own ``tokenizers``
object, and for transformers the very same object wrapped in ``PreTrainedTokenizerFast``.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import json
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

from bertlite.data.tokenizer import CLS, MASK, PAD, SEP, UNK, load_tokenizer, train_wordpiece
from bertlite.tasks.optim import build_adamw, parameter_groups

from .harness import Case

WORK = Path(tempfile.mkdtemp(prefix="bertlite-benchmark-"))  # the corpus file, checkpoints, the HF export
# fine-tuning passes are timed FINETUNE_CHUNK batches at a time, the cases taking turns (about a second each)
FINETUNE_CHUNK = 4
# inference INFERENCE_CHUNK sentences at a time (each library batches a chunk as it batches a whole pass)
INFERENCE_CHUNK = 500


# --- text and tokenizer -----------------------------------------------------------------------------
def sst2_file(data_dir: Path, split: str = "train") -> Path:
    path = data_dir / "glue_sst2" / f"{split}.tsv"
    if not path.is_file():
        raise SystemExit(f"SST-2 not found at {path}: give --data-dir (or BERTLITE_DATA_DIR) holding glue_sst2/")
    return path


def sst2(data_dir: Path, n: int) -> tuple[list[str], list[int]]:
    """The first n non-empty sentences of SST-2's train.tsv and their labels."""
    texts, labels = [], []
    with open(sst2_file(data_dir), newline="") as f:
        for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            if row["sentence"].strip():
                texts.append(row["sentence"])
                labels.append(int(row["label"]))
            if len(texts) == n:
                break
    return texts, labels


def corpus_file(data_dir: Path, max_lines: int) -> Path:
    """Prose for packed pretraining blocks: the Gutenberg validation books (SST-2 sentences if absent)."""
    gutenberg = data_dir / "gutenberg_en" / "validation.jsonl.gz"
    if gutenberg.is_file():
        with gzip.open(gutenberg, "rt") as f:
            lines = [json.loads(line)["text"] for _, line in zip(range(max_lines), f)]
    else:
        lines = sst2(data_dir, max_lines)[0]
    path = WORK / "corpus.txt"
    path.write_text("".join(line.replace("\n", " ") + "\n" for line in lines if line.strip()))
    return path


def build_tokenizer(data_dir: Path, vocab_size: int, max_lines: int):
    """A lower-case WordPiece tokenizer of exactly ``vocab_size`` tokens, trained on the corpus and SST-2;
    when the text has fewer distinct pieces, [unused*] entries fill the vocabulary up, as in released BERTs."""
    texts = corpus_file(data_dir, max_lines).read_text().splitlines() + sst2(data_dir, max_lines)[0]
    tokenizer = train_wordpiece(texts, vocab_size)
    if tokenizer.get_vocab_size() < vocab_size:
        vocab = [t for t, _ in sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])]
        vocab += [f"[unused{i}]" for i in range(vocab_size - len(vocab))]
        (WORK / "vocab.txt").write_text("".join(t + "\n" for t in vocab))
        tokenizer = load_tokenizer(WORK / "vocab.txt", lowercase=True)
    return tokenizer


def hf_tokenizer(tokenizer, max_len: int):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=tokenizer.__class__.from_str(tokenizer.to_str()),
                                   unk_token=UNK, pad_token=PAD, cls_token=CLS, sep_token=SEP, mask_token=MASK,
                                   model_max_length=max_len)


def hf_bert_config(config, architecture: str, **extra):
    """The transformers BertConfig of a bertlite BertConfig (bertlite.interop's mapping), SDPA attention."""
    from transformers import BertConfig as HFBertConfig

    from bertlite.interop.hf_bert import config_to_hf

    hf = HFBertConfig(**{**config_to_hf(config, architecture), **extra})
    hf._attn_implementation = "sdpa"
    return hf


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


# --- fine-tuning -----------------------------------------------------------------------------------
def train_step(env, model, optimizer, loss_fn, batch: dict) -> None:
    """One training step as every case runs it: forward under autocast, backward, clipping at 1.0, AdamW."""
    with env.autocast():
        loss = loss_fn(model, batch)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def finetune_datamodule(args, tokenizer):
    """bertlite's fine-tuning data path on SST-2 (conf/data/sst2.yaml): a random subset of the training sentences."""
    from bertlite.data.classification import ClassificationDataModule

    dm = ClassificationDataModule(tokenizer, train_file=str(sst2_file(args.data_dir)),
                                  validation_file=str(sst2_file(args.data_dir, "dev")), reader={"quoting": 3},
                                  text_column="sentence", max_train_samples=args.finetune_examples,
                                  max_seq_len=args.seq_len, batch_size=args.finetune_batch_size, seed=0)
    dm.build()
    return dm


def finetune_cases(env, tokenizer) -> dict:
    """SST-2 fine-tuning at --finetune-size (bert-mini on a CPU, bert-base on a GPU): one pass per repetition.
    bertlite: ClassificationDataModule (dynamic padding to a multiple of 8, its default batching: random order)
    + BertForSequenceClassification;
    transformers: BertForSequenceClassification with batches padded to 128 (run_glue.py's default) or padded
    dynamically by DataCollatorWithPadding, shuffled."""
    args = env.args
    config = env.model_config(args.finetune_size, vocab_size=tokenizer.get_vocab_size())
    # the data is read and tokenized once, outside the cases: their memory is the training's, not the reading's
    dm = finetune_datamodule(args, tokenizer)
    raw = dm.load_raw()["train"]
    texts, labels = list(raw["sentence"]), [int(v) for v in raw["label"]]  # the very sentences bertlite trains on
    hf_tok = hf_tokenizer(tokenizer, args.seq_len)
    padded = hf_finetune_rows(hf_tok, texts, labels, args.seq_len, pad_to_max=True)
    dynamic = hf_finetune_rows(hf_tok, texts, labels, args.seq_len, pad_to_max=False)
    return {"bertlite (ClassificationDataModule: dynamic padding, default batching; padding-free layers)":
            partial(bertlite_finetune_case, env, dataclasses.replace(config, unpad=True), dm),
            "bertlite, padded layers (model.unpad=false)":
            partial(bertlite_finetune_case, env, dataclasses.replace(config, unpad=False), dm),
            "transformers, padded to 128 (run_glue.py default)":
            partial(hf_finetune_case, env, config, hf_tok, padded, pad_to_max=True),
            "transformers, DataCollatorWithPadding (dynamic)":
            partial(hf_finetune_case, env, config, hf_tok, dynamic, pad_to_max=False)}


def train_pass(env, model, optimizer, loader, loss_fn, limit=None) -> int:
    """One pass over ``loader`` (its first ``limit`` batches, if given): the examples it trained on."""
    model.train()
    examples = 0
    for i, batch in enumerate(loader):
        if limit is not None and i == limit:
            break
        batch = to_device(batch, env.device)
        train_step(env, model, optimizer, loss_fn, batch)
        examples += batch["labels"].size(0)
    return examples


def finetune_case(env, model, optimizer, loader, loss_fn) -> Case:
    """A pass for run(), and for step() the next FINETUNE_CHUNK batches of an endless stream of passes, so
    that run_cases can interleave the cases' passes a few batches at a time (pass_chunks)."""
    def endless():
        while True:
            yield from loader
    stream = endless()

    def chunk() -> tuple[int, float]:
        model.train()
        env.sync()
        start, examples = time.perf_counter(), 0
        for _ in range(FINETUNE_CHUNK):
            batch = to_device(next(stream), env.device)
            train_step(env, model, optimizer, loss_fn, batch)
            examples += batch["labels"].size(0)
        env.sync()
        return examples, time.perf_counter() - start

    return Case(lambda: train_pass(env, model, optimizer, loader, loss_fn),
                lambda: train_pass(env, model, optimizer, loader, loss_fn, limit=env.args.warmup), step=chunk)


def bertlite_finetune_case(env, config, dm) -> Case:
    from bertlite.models.encoder import BertForSequenceClassification

    loader = dm.train_dataloader()
    model = BertForSequenceClassification(config, 2).to(env.device)
    optimizer = build_adamw(parameter_groups(model, 0.01), lr=1e-4)

    def loss_fn(m, b):
        return F.cross_entropy(m(b["input_ids"], b["attention_mask"], b["token_type_ids"]), b["labels"])

    return finetune_case(env, model, optimizer, loader, loss_fn)


def hf_finetune_rows(hf_tok, texts: list[str], labels: list[int], max_len: int, pad_to_max: bool) -> list[dict]:
    """The sentences tokenized by transformers, padded to ``max_len`` or not (the collator pads each batch)."""
    encoded = hf_tok(texts, truncation=True, max_length=max_len, padding="max_length" if pad_to_max else False)
    return [{**{k: v[i] for k, v in encoded.items()}, "labels": labels[i]} for i in range(len(texts))]


def hf_finetune_case(env, config, hf_tok, rows: list[dict], pad_to_max: bool) -> Case:
    from torch.utils.data import DataLoader
    from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, default_data_collator

    collate = default_data_collator if pad_to_max else DataCollatorWithPadding(hf_tok)
    loader = DataLoader(rows, batch_size=env.args.finetune_batch_size, shuffle=True, collate_fn=collate,
                        generator=torch.Generator().manual_seed(0))
    hf_config = hf_bert_config(config, "BertForSequenceClassification", num_labels=2)
    model = AutoModelForSequenceClassification.from_config(hf_config, attn_implementation="sdpa").to(env.device)
    optimizer = torch.optim.AdamW(parameter_groups(model, 0.01), lr=1e-4, fused=True)  # HF Trainer's default
    loss_fn = lambda m, b: m(**b).loss  # noqa: E731
    return finetune_case(env, model, optimizer, loader, loss_fn)

# --- inference ---------------------------------------------------------------------------------------
def classifier_checkpoint(config, tokenizer, path: Path) -> Path:
    """A self-contained classification checkpoint from random weights (the layout bertlite.interop writes)."""
    from bertlite.checkpoints import save_checkpoint
    from bertlite.models.encoder import BertForSequenceClassification

    model = BertForSequenceClassification(config, 2, pooling="cls")
    checkpoint = {"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                  "bertlite": {"format_version": 1, "task": "classification",
                               "model_config": dataclasses.asdict(config), "tokenizer": tokenizer.to_str(),
                               "label_names": ["0", "1"], "pooling": "cls", "metric": "acc",
                               "max_seq_len": config.max_seq_len}}
    save_checkpoint(checkpoint, path)
    return path


def inference_cases(env, tokenizer, results: dict) -> dict:
    """bertlite.load(ckpt).predict against transformers' pipeline("text-classification") on the same weights
    (exported with bertlite.interop.export_hf_bert), fp32 as both load them, the same batch size; the
    pipeline's own default (batch_size=1) is shown too."""
    from bertlite.interop import export_hf_bert

    args = env.args
    if args.classifier:
        ckpt = Path(args.classifier)
    else:
        config = env.model_config(args.finetune_size, vocab_size=tokenizer.get_vocab_size(), max_seq_len=args.seq_len)
        ckpt = classifier_checkpoint(config, tokenizer, WORK / "classifier.ckpt")
    hf_dir = export_hf_bert(ckpt, WORK / "classifier-hf", overwrite=True)
    texts = sst2(args.data_dir, args.inference_examples)[0]
    bs = args.inference_batch_size
    return {"bertlite.load(ckpt).predict (padding-free layers)":
            partial(bertlite_inference_case, env, ckpt, texts, results, unpad=True),
            "bertlite, padded layers (model.unpad=false)":
            partial(bertlite_inference_case, env, ckpt, texts, results, unpad=False),
            f"transformers pipeline, batch_size={bs}": partial(hf_inference_case, env, hf_dir, texts, results, bs),
            "transformers pipeline, batch_size=1 (its default)":
            partial(hf_inference_case, env, hf_dir, texts, results, 1)}


def inference_case(env, texts: list[str], results: dict, key: str, predict) -> Case:
    """run(): every text at once; step(): the next INFERENCE_CHUNK texts, so that run_cases can interleave
    the cases chunk by chunk (pass_chunks). Either way the labels land in results[key], for the check
    that both libraries agree."""
    results[key] = [None] * len(texts)
    start_at = [0]

    def run() -> int:
        results[key] = predict(texts)
        return len(texts)

    def chunk() -> tuple[int, float]:
        i = start_at[0]
        part = texts[i:i + INFERENCE_CHUNK]
        env.sync()
        start = time.perf_counter()
        results[key][i:i + len(part)] = predict(part)
        env.sync()
        start_at[0] = (i + len(part)) % len(texts)
        return len(part), time.perf_counter() - start
    return Case(run, lambda: predict(texts[:env.args.inference_batch_size]), step=chunk)


def bertlite_inference_case(env, ckpt: Path, texts: list[str], results: dict, unpad: bool) -> Case:
    import bertlite

    clf = bertlite.load(ckpt, device=env.device)
    clf.model.config.unpad = unpad
    bs = env.args.inference_batch_size
    return inference_case(env, texts, results, "bertlite" if unpad else "bertlite-padded",
                          lambda part: clf.predict(part, batch_size=bs))


def hf_inference_case(env, hf_dir: Path, texts: list[str], results: dict, batch_size: int) -> Case:
    from transformers import pipeline

    pipe = pipeline("text-classification", model=str(hf_dir), device=env.device)

    def predict(part: list[str]) -> list:
        return [o["label"] for o in pipe(part, batch_size=batch_size, truncation=True, max_length=env.args.seq_len)]
    return inference_case(env, texts, results, f"hf{batch_size}", predict)
