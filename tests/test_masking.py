"""BERT's MLM corruption (MLMMasker), labels_to_targets, the MaskedLM objective and tokenize_and_pack,
on a real WordPiece tokenizer trained on a small synthetic corpus."""

from __future__ import annotations


import random

import pytest
import torch

from bertlite.data.masking import MLMMasker, labels_to_targets
from bertlite.data.objectives import MaskedLM
from bertlite.data.pretraining import tokenize_and_pack
from bertlite.data.tokenizer import special_ids, train_wordpiece
from tests.conftest import synthetic_sentences

def make_corpus(n_sentences: int = 600, seed: int = 1234) -> list[str]:
    return synthetic_sentences(n_sentences, seed, inner_commas=False)


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return make_corpus()


@pytest.fixture(scope="module")
def tokenizer(corpus):
    return train_wordpiece(corpus, vocab_size=200)


@pytest.fixture(scope="module")
def ids(tokenizer):
    return special_ids(tokenizer)


@pytest.fixture(scope="module")
def batch(tokenizer, ids, corpus) -> torch.Tensor:
    """(512, 32): [CLS] words... [SEP] then [PAD]s; some [UNK] and [MASK] tokens between words."""
    rng = random.Random(7)
    vocab = tokenizer.get_vocab()
    inv = {i: t for t, i in vocab.items()}
    rows = []
    for r in range(512):
        pieces: list[int] = []
        while len(pieces) < 40:
            enc = tokenizer.encode(rng.choice(corpus), add_special_tokens=False)
            pieces.extend(enc.ids)
        length = rng.randint(10, 30)  # real tokens between [CLS] and [SEP]
        body = pieces[:length]
        while body and inv[pieces[len(body)]].startswith("##"):
            body.pop()  # do not end in the middle of a word
        # Insert [UNK] / [MASK] at word boundaries.
        full: list[int] = []
        for tok in body:
            if not inv[tok].startswith("##") and rng.random() < 0.04:
                full.append(rng.choice([ids["unk"], ids["mask"]]))
            full.append(tok)
        out = full[:30]
        while out and len(out) < len(full) and inv[full[len(out)]].startswith("##"):
            out.pop()  # truncation must not split a word either
        row = [ids["cls"]] + out + [ids["sep"]]
        row += [ids["pad"]] * (32 - len(row))
        rows.append(row)
    t = torch.tensor(rows)
    assert t.shape == (512, 32)
    return t


def _specials(ids) -> torch.Tensor:
    return torch.tensor(sorted(ids.values()))


def _words(row: list[int], is_special, is_cont) -> list[list[int]]:
    """Positions of each word: a non-special, non-## token followed by its ## pieces."""
    words: list[list[int]] = []
    for j, tok in enumerate(row):
        if is_special[tok]:
            continue
        if is_cont[tok] and words and words[-1][-1] == j - 1:
            words[-1].append(j)
        else:
            words.append([j])
    return words


def test_batch_fixture_is_representative(batch, ids, tokenizer):
    for name in ("cls", "sep", "pad", "unk", "mask"):
        assert (batch == ids[name]).any(), name
    cont = {i for t, i in tokenizer.get_vocab().items() if t.startswith("##")}
    assert sum(int((batch == c).sum()) for c in cont) > 2000  # plenty of multi-piece words


def test_selection_and_80_10_10_split(tokenizer, ids, batch):
    masker = MLMMasker(tokenizer)
    g = torch.Generator().manual_seed(0)
    corrupted, labels = masker(batch, g)
    assert corrupted.shape == labels.shape == batch.shape
    assert corrupted.dtype == labels.dtype == torch.long

    candidates = ~torch.isin(batch, _specials(ids))
    selected = labels != -100
    # Never special tokens or padding.
    assert not (selected & ~candidates).any()
    assert torch.equal(corrupted[~candidates], batch[~candidates])
    # Nothing changes outside the selection.
    assert torch.equal(corrupted[~selected], batch[~selected])
    # Labels: the original id where selected, -100 elsewhere.
    assert torch.equal(labels[selected], batch[selected])
    assert torch.all(labels[~selected] == -100)

    rate = selected.sum().item() / candidates.sum().item()
    assert abs(rate - 0.15) < 0.01, rate

    n = selected.sum().item()
    v = tokenizer.get_vocab_size()
    orig, new = batch[selected], corrupted[selected]
    frac_mask = (new == ids["mask"]).sum().item() / n
    frac_same = (new == orig).sum().item() / n
    frac_other = ((new != orig) & (new != ids["mask"])).sum().item() / n
    # A "random" replacement is uniform over the vocabulary, so it hits [MASK] or the original with prob 1/V each.
    assert abs(frac_mask - (0.8 + 0.1 / v)) < 0.02, frac_mask
    assert abs(frac_same - (0.1 + 0.1 / v)) < 0.02, frac_same
    assert abs(frac_other - 0.1 * (1 - 2 / v)) < 0.02, frac_other
    # Random replacements are drawn from the whole vocabulary: more than a handful of distinct ids.
    assert len(set(new[(new != orig) & (new != ids["mask"])].tolist())) > 50


def test_whole_word_masking_selects_complete_words(tokenizer, ids, batch):
    masker = MLMMasker(tokenizer, whole_word_mask=True)
    g = torch.Generator().manual_seed(1)
    _, labels = masker(batch, g)
    selected = labels != -100
    candidates = ~torch.isin(batch, _specials(ids))
    assert not (selected & ~candidates).any()

    is_special = masker.is_special.tolist()
    is_cont = masker.is_continuation.tolist()
    multi_piece_selected = 0
    for r in range(batch.size(0)):
        row, sel = batch[r].tolist(), selected[r].tolist()
        for word in _words(row, is_special, is_cont):
            states = {sel[j] for j in word}
            assert len(states) == 1, (r, word, [sel[j] for j in word])  # all pieces or none
            if len(word) > 1 and sel[word[0]]:
                multi_piece_selected += 1
    assert multi_piece_selected > 100  # the check above is not vacuous

    rate = selected.sum().item() / candidates.sum().item()
    assert abs(rate - 0.15) < 0.03, rate


def test_token_level_masking_splits_words(tokenizer, batch):
    """Contrast: without whole-word masking, some multi-piece words are only partly selected."""
    masker = MLMMasker(tokenizer, whole_word_mask=False)
    _, labels = masker(batch, torch.Generator().manual_seed(1))
    sel_all = (labels != -100).tolist()
    is_special, is_cont = masker.is_special.tolist(), masker.is_continuation.tolist()
    partial = sum(
        len({sel_all[r][j] for j in word}) > 1
        for r in range(batch.size(0))
        for word in _words(batch[r].tolist(), is_special, is_cont)
    )
    assert partial > 50


@pytest.mark.parametrize("p", [0.3, 0.5])
def test_mlm_probability_is_configurable(tokenizer, ids, batch, p):
    masker = MLMMasker(tokenizer, mlm_probability=p)
    _, labels = masker(batch, torch.Generator().manual_seed(2))
    candidates = ~torch.isin(batch, _specials(ids))
    rate = (labels != -100).sum().item() / candidates.sum().item()
    assert abs(rate - p) < 0.01, rate


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 1.5])
def test_mlm_probability_out_of_range(tokenizer, bad):
    with pytest.raises(ValueError):
        MLMMasker(tokenizer, mlm_probability=bad)


def test_replace_probabilities_must_not_exceed_one(tokenizer):
    with pytest.raises(ValueError):
        MLMMasker(tokenizer, mask_replace_prob=0.8, random_replace_prob=0.3)


@pytest.mark.parametrize("whole_word", [False, True])
def test_masking_is_reproducible_with_a_seeded_generator(tokenizer, batch, whole_word):
    masker = MLMMasker(tokenizer, whole_word_mask=whole_word)
    a = masker(batch, torch.Generator().manual_seed(123))
    b = masker(batch, torch.Generator().manual_seed(123))
    c = masker(batch, torch.Generator().manual_seed(124))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])
    assert not torch.equal(a[0], c[0])


def test_masker_always_selects_something(tokenizer, ids):
    """A batch must predict at least one token, or the loss is undefined."""
    masker = MLMMasker(tokenizer, mlm_probability=1e-6)
    word = tokenizer.token_to_id("the")
    row = torch.tensor([[ids["cls"], word, word, ids["sep"], ids["pad"]]])
    _, labels = masker(row, torch.Generator().manual_seed(0))
    assert (labels != -100).sum().item() == 1
    assert labels[0, 1].item() == word


def test_labels_to_targets():
    labels = torch.tensor([[-100, 5, -100, 7], [9, -100, -100, 11]])
    positions, targets = labels_to_targets(labels)
    assert positions.tolist() == [1, 3, 4, 7]
    assert targets.tolist() == [5, 7, 9, 11]
    # Consistent with the tensor: flat index p is row p // T, column p % T.
    t = labels.size(1)
    for p, y in zip(positions.tolist(), targets.tolist()):
        assert labels[p // t, p % t].item() == y


def test_labels_to_targets_on_masker_output(tokenizer, batch):
    _, labels = MLMMasker(tokenizer)(batch, torch.Generator().manual_seed(3))
    positions, targets = labels_to_targets(labels)
    assert positions.shape == targets.shape and positions.ndim == 1
    assert positions.numel() == (labels != -100).sum().item()
    assert torch.equal(labels.reshape(-1)[positions], targets)
    assert torch.all(positions[1:] > positions[:-1])  # sorted, unique


def test_collator_dynamic_masking(tokenizer, batch):
    collator = MaskedLM(tokenizer)
    rows = [{"input_ids": batch[i].tolist()} for i in range(8)]
    torch.manual_seed(0)
    out = collator(rows)
    assert set(out) == {"input_ids", "mlm_positions", "mlm_labels"}
    assert out["input_ids"].shape == (8, 32)
    n = out["mlm_positions"].numel()
    assert n > 0 and out["mlm_labels"].shape == (n,)
    # The labels are the original ids at the masked positions.
    originals = batch[:8].reshape(-1)[out["mlm_positions"]]
    assert torch.equal(out["mlm_labels"], originals)
    # And the collator does mask: a second call draws a fresh mask.
    out2 = collator(rows)
    assert not torch.equal(out["mlm_positions"], out2["mlm_positions"]) or not torch.equal(
        out["input_ids"], out2["input_ids"])


def test_collator_uses_precomputed_labels(tokenizer, batch):
    masker = MLMMasker(tokenizer)
    corrupted, labels = masker(batch[:6], torch.Generator().manual_seed(4))
    rows = [{"input_ids": torch.as_tensor(corrupted[i]), "labels": labels[i].tolist()} for i in range(6)]
    out = MaskedLM(tokenizer)(rows)
    assert torch.equal(out["input_ids"], corrupted)
    expected_positions, expected_targets = labels_to_targets(labels)
    assert torch.equal(out["mlm_positions"], expected_positions)
    assert torch.equal(out["mlm_labels"], expected_targets)
    # Precomputed labels are used as they are, whatever the RNG state.
    torch.manual_seed(99)
    again = MaskedLM(tokenizer)(rows)
    assert all(torch.equal(out[k], again[k]) for k in out)


def test_tokenize_and_pack(tokenizer, ids):
    datasets = pytest.importorskip("datasets")
    texts = make_corpus(40, seed=5)
    ds = datasets.Dataset.from_dict({"text": texts})
    packed = tokenize_and_pack(ds, tokenizer, "text", max_seq_len=16)
    stream = []
    for t in texts:
        stream += tokenizer.encode(t, add_special_tokens=False).ids + [ids["sep"]]
    n_blocks = len(stream) // 15
    assert len(packed) == n_blocks > 0
    blocks = packed["input_ids"]
    assert all(len(b) == 16 and b[0] == ids["cls"] for b in blocks)
    assert [i for b in blocks for i in b[1:]] == stream[: n_blocks * 15]
