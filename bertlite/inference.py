"""Inference from a checkpoint, with neither Hydra nor the training data.

    clf = bertlite.load("runs/sst2/checkpoints/best.ckpt")
    clf.predict(["great movie", "dull and far too long"])      # -> ["1", "0"]
    clf.predict_proba(["great movie"])                          # -> tensor (N, num_labels)
    sts = bertlite.load("runs/stsb/checkpoints/best.ckpt")      # a regression model
    sts.predict(["A man plays a flute."], ["A man plays music."])  # -> [3.9]
    gpt = bertlite.load("runs/gpt/checkpoints/last.ckpt")
    gpt.generate("It was a dark and", max_new_tokens=40, temperature=0.8, top_k=50)
    mlm = bertlite.load("runs/pretrain/checkpoints/last.ckpt")
    mlm.fill_mask("The capital of France is [MASK].")           # -> [{"token", "score", "sequence"}, ...]
    mlm.mask_token                                              # the text to write: [MASK], or <mask> (RoBERTa)
    ner = bertlite.load("runs/conll2003/checkpoints/best.ckpt")
    ner.predict(["Angela Merkel visited Paris ."])  # -> [[{"type": "PER", "text": "Angela Merkel", "start": 0, ...}]]

Texts are encoded once, sorted by length, and run in batches padded only to their own longest text,
under ``torch.inference_mode``. On a GPU the model runs in bf16 where the card multiplies it natively, and
is compiled with torch.compile (``dtype=`` and ``compile=`` override both).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from tokenizers import Tokenizer

from bertlite.checkpoints import model_state
from bertlite.data.batching import pad_batch
from bertlite.data.encoding import encode_texts, truncating
from bertlite.data.entities import get_entities
from bertlite.data.special_tokens import special_id, special_tokens
from bertlite.data.tokenizer import tokenizer_from_section
from bertlite.data.word_windows import (SPECIAL_TOKENS, pieces_by_word, plan_windows, resolve_stride, scored_words,
                                        window_pieces)
from bertlite.errors import BertliteError, CheckpointError, ConfigError
from bertlite.models.config import config_from_dict
from bertlite.models.encoder import BertEncoder, BertForMaskedLM, BertForTokenClassification
from bertlite.models.heads import pool
from bertlite.models.registry import PRETRAINING_MODELS, build_classifier
from bertlite.positions import sequence_lengths, warn_if_extrapolating
from bertlite.precision import check_compile, compile_model, resolve_compile, resolve_dtype
from bertlite.sources import read_checkpoint


PAD_TO_MULTIPLE_OF = 8  # as in fine-tuning (conf/data/_classification.yaml): few distinct batch shapes


def pick_device(device: str | torch.device | None) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Predictor:
    """What every predictor shares: the checkpoint's config, tokenizer and weights on a device."""

    task = ""

    def __init__(self, checkpoint: str | Path | dict[str, Any], device: str | torch.device | None = None,
                 dtype: str | torch.dtype | None = None, compile: bool | str = "auto", trust: bool = False):
        if not isinstance(checkpoint, dict):
            checkpoint = read_checkpoint(checkpoint, expect_task=self.task, trust=trust)
        meta = checkpoint["bertlite"]
        self.meta = meta
        self.config = config_from_dict(meta["model_config"])
        self.tokenizer: Tokenizer = tokenizer_from_section(meta)
        if self.tokenizer.get_vocab_size() != self.config.vocab_size:
            raise CheckpointError(f"the checkpoint's tokenizer has {self.tokenizer.get_vocab_size()} tokens but its "
                                  f"model {self.config.vocab_size}: the checkpoint is inconsistent")
        self.device = pick_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.compiled = resolve_compile(compile, self.device)
        self.model = self.build_model()
        try:
            self.model.load_state_dict(model_state(checkpoint))
        except RuntimeError as exc:
            raise CheckpointError(f"the checkpoint's weights do not fit its own config: {str(exc)[:300]}") from exc
        # the whole model in one dtype, as Hugging Face runs inference; softmax and the losses work in fp32 anyway
        self.model.to(self.device, self.dtype).eval()
        if self.compiled:
            compile_model(self.model)
        self.pad_id = special_id(self.tokenizer, "pad", "batching texts for the model")
        lengths = sequence_lengths("predict", self.config, meta.get("max_seq_len"),
                                   trained_len=meta.get("trained_seq_len"))
        self.max_positions = lengths.max_positions  # the longest input: learned positions only as far as trained
        self.max_seq_len = lengths.truncation  # texts are cut to this many tokens

    def save_pretrained(self, folder: str | Path, overwrite: bool = False) -> Path:
        """Write this model as a model folder (config.json, model.safetensors, tokenizer.json): shareable without
        pickle, and read back by ``bertlite.load(folder)``. The weights are saved in the dtype they run in."""
        from bertlite.model_folder import save_model_folder

        state = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        meta = {**self.meta, "special_tokens": special_tokens(self.tokenizer).to_dict()}  # the roles, stated
        return save_model_folder({"state_dict": state, "bertlite": meta}, folder, overwrite)

    def build_model(self) -> torch.nn.Module:
        raise NotImplementedError

    def batches(self, texts: Sequence[str], pairs: Sequence[str] | None, batch_size: int, encodings=None):
        """Yield (original indices, padded batch on the device), longest texts first (``encodings``: those of
        ``encode_inputs(texts, pairs)``, when the caller needs them too)."""
        encodings = self.encode_inputs(texts, pairs) if encodings is None else encodings
        order = sorted(range(len(encodings)), key=lambda i: -len(encodings[i].ids))
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            rows = [{"input_ids": encodings[i].ids, "token_type_ids": encodings[i].type_ids} for i in idx]
            yield idx, {k: v.to(self.device) for k, v in pad_batch(rows, self.pad_id, PAD_TO_MULTIPLE_OF).items()}

    def encode_inputs(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> list:
        """The texts' encodings, truncated to the model's length; empty texts are an error."""
        check_texts(texts, pairs)
        encodings = encode_texts(truncating(self.tokenizer, self.max_seq_len), [str(t) for t in texts],
                                 None if pairs is None else [str(p) for p in pairs])
        warn_if_extrapolating(self.config, max((len(e.ids) for e in encodings), default=0),
                              self.meta.get("trained_seq_len"))
        return encodings


def check_texts(texts: Sequence[str], pairs: Sequence[str] | None = None) -> None:
    """A list of texts (and as many pairs), none of them empty."""
    if isinstance(texts, str):
        raise TypeError("pass a list of texts, e.g. predict([text])")
    if pairs is not None and len(pairs) != len(texts):
        raise BertliteError(f"{len(texts)} texts but {len(pairs)} text pairs")
    empty = [i for i, t in enumerate(texts) if not str(t).strip()]
    if empty:
        raise BertliteError(f"{len(empty)} empty text(s) to predict (positions {empty[:10]}); "
                            "there is nothing to classify: remove them or fill them in")


class Classifier(Predictor):
    """Sequence classification and regression, as the checkpoint's ``problem_type`` says: ``predict`` returns a
    label name per text (single-label), the set of labels whose probability reaches the threshold
    (multi-label), or a number (regression)."""

    task = "classification"

    def build_model(self) -> torch.nn.Module:
        self.labels: list[str] = list(self.meta["label_names"])
        self.problem_type: str = self.meta.get("problem_type", "single_label")
        self.threshold: float = self.meta.get("threshold", 0.5)
        return build_classifier(self.config, len(self.labels), self.meta.get("pooling", "auto"))

    @torch.inference_mode()
    def scores(self, texts: Sequence[str], text_pairs: Sequence[str] | None = None,
               batch_size: int = 64) -> torch.Tensor:
        """(N, num_labels): probabilities (a softmax over the classes, or a sigmoid per label for multi-label), or
        the predicted numbers (N, 1) for regression."""
        out = torch.empty(len(texts), len(self.labels))
        for idx, batch in self.batches(texts, text_pairs, batch_size):
            logits = self.model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).float()
            out[idx] = {"single_label": logits.softmax(-1), "multi_label": logits.sigmoid(),
                        "regression": logits}[self.problem_type].cpu()
        return out

    def predict_proba(self, texts: Sequence[str], text_pairs: Sequence[str] | None = None,
                      batch_size: int = 64) -> torch.Tensor:
        """(N, num_labels) probabilities, columns in the order of ``self.labels``."""
        if self.problem_type == "regression":
            raise BertliteError("a regression model predicts numbers, not probabilities: use predict()")
        return self.scores(texts, text_pairs, batch_size)

    def predict(self, texts: Sequence[str], text_pairs: Sequence[str] | None = None,
                batch_size: int = 64) -> list[str] | list[list[str]] | list[float]:
        """Per text: the most probable label name; the label names at or above the threshold (multi-label, in
        label order; possibly none); or the predicted number (regression)."""
        return self.predict_from_scores(self.scores(texts, text_pairs, batch_size).tolist())

    def predict_from_scores(self, scores: list[list[float]]) -> list:
        """``predict``'s answers from the rows of ``scores``."""
        if self.problem_type == "regression":
            return [row[0] for row in scores]
        if self.problem_type == "multi_label":
            return [[name for name, p in zip(self.labels, row) if p >= self.threshold] for row in scores]
        return [self.labels[max(range(len(row)), key=row.__getitem__)] for row in scores]


class TokenClassifier(Predictor):
    """Named entities (or any IOB tags) in raw texts. Words are split as the tokenizer's pre-tokenizer splits
    them (whitespace and punctuation); each word takes the tag of its first piece, and entities are read from the
    word tags as the metric reads them (seqeval's default mode). A text longer than the model's length is read in
    overlapping windows of whole words, as in fine-tuning (bertlite/data/word_windows.py), so every word is tagged."""

    task = "token_classification"

    def build_model(self) -> BertForTokenClassification:
        self.labels: list[str] = list(self.meta["label_names"])
        return BertForTokenClassification(self.config, len(self.labels))

    @torch.inference_mode()
    def predict_words(self, texts: Sequence[str], batch_size: int = 64, stride: int | None = None) -> list[list[dict]]:
        """Per text, its words in order: {word, start, end, tag, score} (character offsets into the text; the
        probability of the tag). ``stride``: the word pieces consecutive windows of a long text share (None: a
        quarter of the model's length)."""
        check_texts(texts)
        stride = resolve_stride(stride, self.max_seq_len, "stride")
        encodings = self.tokenizer.encode_batch([str(t) for t in texts], add_special_tokens=False)
        rows = [row for i, encoding in enumerate(encodings) for row in self.window_rows(i, encoding, stride)]
        tagged: list[dict[int, tuple[int, float]]] = [{} for _ in texts]  # per text: word -> (tag id, probability)
        rows.sort(key=lambda r: -len(r["input_ids"]))  # longest first: little padding
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            batch = {k: v.to(self.device) for k, v in pad_batch(chunk, self.pad_id, PAD_TO_MULTIPLE_OF).items()}
            logits = self.model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
            scores, tags = (t.tolist() for t in logits.float().softmax(-1).max(-1))
            for row, r in enumerate(chunk):
                for pos, w in r["scored"]:
                    tagged[r["text"]][w] = (tags[row][pos], scores[row][pos])
        return [self.words_of(str(text), encoding, found) for text, encoding, found in zip(texts, encodings, tagged)]

    def window_rows(self, text: int, encoding, stride: int) -> list[dict]:
        """The model inputs of one text: a row per window, with the (position, word) pairs scored in it."""
        n_words = 1 + max((w for w in encoding.word_ids if w is not None), default=-1)
        pieces = pieces_by_word(encoding.ids, encoding.word_ids, n_words)
        counts = [len(p) for p in pieces]
        windows = plan_windows(counts, self.max_seq_len, stride)
        purpose = "token classification (every window of words starts and ends with them)"
        cls_id = special_id(self.tokenizer, "cls", purpose)
        sep_id = special_id(self.tokenizer, "sep", purpose)
        rows = []
        for window, scored in zip(windows, scored_words(windows, counts)):
            window_ids, words = window_pieces(window, pieces, self.max_seq_len)
            first = {w: pos for pos, w in reversed(list(enumerate(words, 1)))}  # after [CLS]
            rows.append({"input_ids": [cls_id, *window_ids, sep_id],
                         "token_type_ids": [0] * (len(window_ids) + SPECIAL_TOKENS), "text": text,
                         "scored": [(first[w], w) for w in scored]})
        return rows

    def words_of(self, text: str, encoding, tagged: dict[int, tuple[int, float]]) -> list[dict]:
        """The words of a text with their character offsets, in order, and the tags found for them. A byte-level
        BPE's first piece of a word holds the space before it (Ġ), which is no part of the word."""
        spans: dict[int, list[int]] = {}
        for w, (start, end) in zip(encoding.word_ids, encoding.offsets):
            if w is not None:
                spans.setdefault(w, [start, end])[1] = end
        for span in spans.values():
            while span[0] < span[1] and text[span[0]].isspace():
                span[0] += 1
        return [{"start": start, "end": end, "word": text[start:end], "tag": self.labels[tagged[w][0]],
                 "score": tagged[w][1]} for w, (start, end) in sorted(spans.items())]

    def predict(self, texts: Sequence[str], batch_size: int = 64, stride: int | None = None) -> list[list[dict]]:
        """Per text, its entities: {type, text, start, end, score}, with ``text[start:end]`` the entity's text and
        ``score`` the mean probability of its words' tags."""
        results = []
        for text, words in zip(texts, self.predict_words(texts, batch_size, stride)):
            entities = []
            for type_, first, last in get_entities([w["tag"] for w in words]):
                start, end = words[first]["start"], words[last]["end"]
                score = sum(w["score"] for w in words[first:last + 1]) / (last - first + 1)
                entities.append({"type": type_, "text": str(text)[start:end], "start": start, "end": end,
                                 "score": score})
            results.append(entities)
        return results


class MaskedLM(Predictor):
    task = "mlm"

    def build_model(self) -> BertForMaskedLM:
        return BertForMaskedLM(self.config)

    @property
    def mask_token(self) -> str:
        """The text that marks a blank: the tokenizer's own mask token ([MASK] for BERT, <mask> for RoBERTa)."""
        special_id(self.tokenizer, "mask", "fill_mask")  # a tokenizer without one: the error says how to name it
        return special_tokens(self.tokenizer).mask

    @torch.inference_mode()
    def fill_mask(self, text: str, top_k: int = 5) -> list[dict] | list[list[dict]]:
        """The top_k tokens for each mask token (``self.mask_token``: [MASK], <mask>) in ``text``: a list of
        {token, score, sequence} (a list per mask when there are several)."""
        mask = self.mask_token
        mask_id = self.tokenizer.token_to_id(mask)
        encoding = self.tokenizer.encode(text)
        if len(encoding.ids) > self.max_positions:
            raise BertliteError(f"the text has {len(encoding.ids)} tokens; the model was trained on at most "
                                f"{self.max_positions}: shorten it around the {mask}")
        ids = torch.tensor([encoding.ids], device=self.device)
        positions = (ids[0] == mask_id).nonzero().flatten()
        if len(positions) == 0:
            raise BertliteError(f"no {mask} token in the text: {text!r} (this model's mask token is {mask})")
        probs = self.model(ids, mlm_positions=positions).logits.float().softmax(-1)  # (n_masks, V)
        results = []
        for row, pos in zip(probs, positions.tolist()):
            scores, tokens = row.topk(top_k)
            options = []
            for score, token in zip(scores.tolist(), tokens.tolist()):
                filled = ids[0].clone()
                filled[pos] = token
                options.append({"token": self.tokenizer.id_to_token(token), "score": score,
                                "sequence": self.tokenizer.decode(filled.tolist())})
            results.append(options)
        return results[0] if len(results) == 1 else results


class TextGenerator(Predictor):
    """Continue a prompt (GPT) or rewrite / infill a source text (encoder-decoder)."""

    task = ("clm", "seq2seq")

    def build_model(self) -> torch.nn.Module:
        return PRETRAINING_MODELS[self.config.arch](self.config)

    @torch.inference_mode()
    def generate(self, prompt: str, max_new_tokens: int = 40, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, greedy: bool = False, use_cache: bool = True,
                 seed: int | None = None, stop_at_sep: bool = True) -> str:
        """The generated text. GPT: the prompt and its continuation; encoder-decoder: the decoder's output.
        Every training document ended with [SEP] (</s>), so generation stops there (``stop_at_sep=False`` goes on
        into new documents, up to ``max_new_tokens``)."""
        cls_id = special_id(self.tokenizer, "cls", "generation (every training block began with it)")
        sep_id = special_id(self.tokenizer, "sep", "generation (every training document ended with it)")
        generator = None if seed is None else torch.Generator(device=self.device).manual_seed(seed)
        options = dict(temperature=temperature, top_k=top_k, top_p=top_p, greedy=greedy, use_cache=use_cache,
                       eos_id=sep_id if stop_at_sep else None, generator=generator)
        if self.config.arch == "gpt":
            prompt_ids = self.tokenizer.encode(prompt, add_special_tokens=False).ids
            tokens = torch.tensor([[cls_id, *prompt_ids]], device=self.device)  # [CLS] began every block
            out = self.model.generate(tokens, max_new_tokens, max_len=self.max_positions, **options)
        else:
            src = torch.tensor([self.tokenizer.encode(prompt).ids[: self.max_positions]], device=self.device)
            out = self.model.generate(src, cls_id, max_new_tokens, max_len=self.max_positions, **options)
        return self.tokenizer.decode(out[0].tolist())


class Encoder(Predictor):
    """Sentence embeddings from an encoder-only checkpoint (for example one imported from an HF BertModel)."""

    task = "encoder"

    def build_model(self) -> BertEncoder:
        return BertEncoder(self.config, pooler=bool(self.meta.get("pooler")))

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], text_pairs: Sequence[str] | None = None, pooling: str = "cls",
               batch_size: int = 64) -> torch.Tensor:
        """(N, d_model): each text's [CLS] hidden state (pooling="cls"), the mean over its tokens ("mean"), or
        the pooler's output (tanh of a dense layer on [CLS], HF's ``pooler_output``) where the model has one."""
        if pooling == "pooler" and self.model.pooler is None:
            raise ConfigError("pooling='pooler': this encoder has no pooler (its HF folder had none); "
                              "use pooling='cls' or 'mean'")
        out = torch.empty(len(texts), self.config.d_model)
        for idx, batch in self.batches(texts, text_pairs, batch_size):
            hidden = self.model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
            if pooling == "pooler":
                out[idx] = self.model.pooler(hidden).float().cpu()
            else:
                out[idx] = pool(hidden, batch["attention_mask"], pooling).float().cpu()
        return out


PREDICTORS = {"classification": Classifier, "mlm": MaskedLM, "encoder": Encoder, "clm": TextGenerator,
              "seq2seq": TextGenerator, "token_classification": TokenClassifier}


def load(path: str | Path, device: str | torch.device | None = None, dtype: str | torch.dtype | None = None,
         compile: bool | str = "auto", trust: bool = False) -> Predictor:
    """The predictor that fits the checkpoint's task: a Classifier, a TokenClassifier, a MaskedLM, an Encoder or a
    TextGenerator.
    ``path`` is a bertlite checkpoint, a bertlite model folder (see save_pretrained), or ``hf:<folder>`` for a Hugging
    Face BERT folder. ``dtype``: None (bf16 on a GPU that supports it, else fp32), "bf16", "fp32", "fp16" or a
    torch.dtype; probabilities and embeddings come back in fp32 whatever it is. ``compile``: "auto" (torch.compile
    on a GPU only), true or false.
    The file is opened with torch's weights-only loader, which runs no code from it; ``trust=True`` unpickles it
    fully, for your own files only (see bertlite.checkpoints)."""
    resolve_dtype(dtype, pick_device(device))  # a bad value fails before the checkpoint is read
    check_compile(compile)
    checkpoint = read_checkpoint(path, trust=trust)
    task = checkpoint["bertlite"]["task"]
    if task not in PREDICTORS:
        raise CheckpointError(f"{path} is a {task!r} checkpoint; bertlite.load knows {', '.join(PREDICTORS)}")
    return PREDICTORS[task](checkpoint, device, dtype, compile)
