"""Sentences longer than the model's input as overlapping windows of whole words, each word scored in one of them.

A window holds at most ``max_seq_len`` tokens: [CLS] (<s>), the pieces of consecutive whole words, [SEP] (</s>). The
next window starts again on the last words of the one before that fit in ``stride`` pieces, so that words near a cut
are seen with context on both sides (Hugging Face tokenizers' overflowing windows with ``stride``, here kept to word
boundaries). A word held by two windows is scored in the one where it has more context on its narrower side
(BERT's rule for document windows in SQuAD, Devlin et al. 2019): stitched back, a sentence has one tag per word.

Words with no piece at all (the normalizer removes '\\u200b', a soft hyphen, a byte-order mark, NUL) are in no
window: the model never sees them, so they are tagged O.
Plain Python: data modules and inference share it (inference must not pull in Lightning or ``datasets``).
"""

from __future__ import annotations

import math
from typing import Sequence

from bertlite.errors import ConfigError

SPECIAL_TOKENS = 2  # [CLS] and [SEP] (RoBERTa's <s> and </s>) around every window


def resolve_stride(stride: int | None, max_seq_len: int, option: str = "data.stride") -> int:
    """The pieces consecutive windows share: ``stride``, or a quarter of ``max_seq_len`` when None."""
    budget = max_seq_len - SPECIAL_TOKENS
    if stride is None:
        stride = max_seq_len // 4
    if isinstance(stride, bool) or not isinstance(stride, int) or not 0 <= stride < budget:
        raise ConfigError(f"{option}={stride!r}: consecutive windows of a long sentence share this many word pieces; "
                          f"it must be an integer from 0 to {budget - 1} (below max_seq_len={max_seq_len} minus "
                          f"[CLS] and [SEP]). Set {option}=null for a quarter of max_seq_len")
    return stride


def plan_windows(pieces_per_word: Sequence[int], max_seq_len: int, stride: int) -> list[list[int]]:
    """The windows of one sentence: each a list of word indices, in order. Words with no piece are left out; a
    single word of more pieces than a window holds gets a window of its own (its first pieces only)."""
    budget = max_seq_len - SPECIAL_TOKENS
    words = [w for w, n in enumerate(pieces_per_word) if n > 0]
    windows: list[list[int]] = []
    start = 0  # index into ``words``
    while start < len(words):
        end, used = start, 0
        while end < len(words) and used + pieces_per_word[words[end]] <= budget:
            used += pieces_per_word[words[end]]
            end += 1
        end = max(end, start + 1)
        windows.append(words[start:end])
        if end == len(words):
            break
        # the next window repeats this one's last words that fit in ``stride`` pieces, and leaves room for the
        # word this one could not hold, so that it always moves on
        room = min(stride, budget - pieces_per_word[words[end]])
        next_start, shared = end, 0
        while next_start - 1 > start and shared + pieces_per_word[words[next_start - 1]] <= room:
            next_start -= 1
            shared += pieces_per_word[words[next_start]]
        start = next_start
    return windows


def scored_words(windows: list[list[int]], pieces_per_word: Sequence[int]) -> list[list[int]]:
    """For each window, the words scored in it: every word once, in the window where the fewer pieces on either
    side of it are the most (the sentence's own start or end counts as unlimited context); ties go to the earlier
    window."""
    best: dict[int, tuple[float, int]] = {}  # word -> (context, window)
    for k, window in enumerate(windows):
        sizes = [pieces_per_word[w] for w in window]
        total, before = sum(sizes), 0
        for w, n in zip(window, sizes):
            left = math.inf if k == 0 else before
            right = math.inf if k == len(windows) - 1 else total - before - n
            context = min(left, right)
            if w not in best or context > best[w][0]:
                best[w] = (context, k)
            before += n
    scored: list[list[int]] = [[] for _ in windows]
    for w, (_, k) in sorted(best.items()):
        scored[k].append(w)
    return scored


def pieces_by_word(ids: Sequence[int], word_ids: Sequence[int | None], n_words: int) -> list[list[int]]:
    """An encoding's piece ids grouped by word (``n_words`` lists; a word the normalizer emptied has none)."""
    grouped: list[list[int]] = [[] for _ in range(n_words)]
    for piece, w in zip(ids, word_ids):
        if w is not None:
            grouped[w].append(piece)
    return grouped


def window_pieces(window: list[int], pieces: list[list[int]], max_seq_len: int
                  ) -> tuple[list[int], list[int]]:
    """A window's piece ids and the word of each piece, cut to the pieces a window holds ([CLS] and [SEP] not
    included)."""
    ids = [p for w in window for p in pieces[w]]
    words = [w for w in window for _ in pieces[w]]
    budget = max_seq_len - SPECIAL_TOKENS
    return ids[:budget], words[:budget]
