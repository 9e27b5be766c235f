"""Rows of the bad-input table in docs/failures.md that no other test file covers (the table names every row's test)."""

from __future__ import annotations

import pytest

from bertlite.cli.common import check_vocabulary
from bertlite.data.pretraining import load_text_corpus
from bertlite.data.tokenizer import train_wordpiece
from bertlite.errors import ConfigError, DataError
from tests.conftest import TINY_RUN, run_cli, synthetic_sentences


def test_unreadable_data_file(tmp_path):
    broken = tmp_path / "corpus.txt.gz"
    broken.write_bytes(b"<html>404 Not Found</html>" * 10)  # not gzip at all: a failed download
    with pytest.raises(DataError, match="cannot read"):
        load_text_corpus(train_files=str(broken))


def test_empty_validation_split(tmp_path):
    train, blank = tmp_path / "train.txt", tmp_path / "dev.txt"
    train.write_text("\n".join(synthetic_sentences(50)))
    blank.write_text("\n \n")
    with pytest.raises(DataError, match="validation split is empty"):
        load_text_corpus(train_files=str(train), validation_files=str(blank))


def test_vocabulary_not_matching_the_checkpoint():
    texts = synthetic_sentences(200)
    ours, other = train_wordpiece(texts, vocab_size=120), train_wordpiece(texts[:100], vocab_size=90)
    checkpoint = {"bertlite": {"tokenizer": ours.to_str()}}
    check_vocabulary(ours, checkpoint, "x.ckpt")  # the same vocabulary passes
    with pytest.raises(ConfigError, match=r"does not match the vocabulary of x.ckpt .*sizes differ.*drop "
                                          r"tokenizer.path"):
        check_vocabulary(other, checkpoint, "x.ckpt")


@pytest.mark.slow
def test_resuming_with_another_tokenizer_is_one_clear_error(pretrain_run, tiny_corpus, tmp_path):
    other = tmp_path / "other.json"
    train_wordpiece(synthetic_sentences(200), vocab_size=150).save(str(other))
    result = run_cli("bertlite.pretrain", *TINY_RUN, "data=text_files", f"data.train_files={tiny_corpus}",
                     f"ckpt_path={pretrain_run / 'checkpoints' / 'last.ckpt'}", f"tokenizer.path={other}",
                     f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "does not match the vocabulary" in result.stderr
