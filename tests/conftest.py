"""Shared fixtures. Every test runs offline: no hub downloads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Lightning gives its loggers a StreamHandler bound to the sys.stderr of the moment it is first imported. Imported
# here, that is the real stderr; first imported inside a test that captures output (an in-process CLI run), it would
# be that test's capture stream, closed by the next test, and every later Lightning log line a "Logging error".
import lightning  # noqa: E402, F401
import torch  # noqa: E402

# pytest-xdist (-n auto, pyproject.toml) runs one worker per core: each worker, and every process it starts, gets
# its share of the cores, as more OpenMP threads than cores make every test slower.
if os.environ.get("PYTEST_XDIST_WORKER"):
    _threads = max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    os.environ["OMP_NUM_THREADS"] = str(_threads)  # inherited by the CLI runs (run_cli)
    torch.set_num_threads(_threads)

REPO = Path(__file__).resolve().parents[1]


SYLLABLES = ["ka", "lo", "mi", "ne", "ra", "to", "su", "vi", "pe", "dor", "lin", "tas", "gru", "bel", "fen",
             "qui", "zar", "mok"]
COMMON = ("the a of and to in is it that was for on with as he she they we you this by from at can cat sat mat "
          "not be or jump box quiz").split()


def synthetic_sentences(n_sentences: int = 600, seed: int = 1234, inner_commas: bool = False) -> list[str]:
    """English-like sentences: common words mixed with invented multi-syllable words, so that a small
    WordPiece vocabulary must split many words into ##continuation pieces."""
    import random

    rng = random.Random(seed)
    invented = sorted({"".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))) for _ in range(400)})
    texts = []
    for _ in range(n_sentences):
        words = [rng.choice(COMMON) if rng.random() < 0.4 else rng.choice(invented) for _ in range(rng.randint(6, 14))]
        words[0] = words[0].capitalize()
        if inner_commas:
            if rng.random() < 0.3:
                words[rng.randrange(len(words))] += ","
            texts.append(" ".join(words) + rng.choice([".", "!", "?"]))
        else:
            texts.append(" ".join(words) + rng.choice([".", "!", "?", ","]))
    return texts


def tiny_corpus_paragraphs(n: int = 400) -> list[str]:
    """Real English prose from the Python documentation that ships with every interpreter."""
    from bertlite.data.python_docs import _paragraphs
    from pydoc_data.topics import topics

    paragraphs = [p for name in sorted(topics) for p in _paragraphs(topics[name])]
    return paragraphs[:n]


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "train.txt"
    path.write_text("\n".join(tiny_corpus_paragraphs()) + "\n", encoding="utf-8")
    return path


# Overrides for a tiny model and run: d_model 64, 2 layers, 32-token blocks.
def jsonl_shards(text_file: Path, folder: Path, n: int = 4) -> str:
    """The lines of ``text_file`` dealt into ``n`` .jsonl.gz shards in ``folder``: the glob of the shards."""
    import gzip
    import json

    folder.mkdir(parents=True, exist_ok=True)
    lines = text_file.read_text().splitlines()
    for s in range(n):
        with gzip.open(folder / f"part-{s}.jsonl.gz", "wt") as f:
            f.writelines(json.dumps({"text": t}) + "\n" for t in lines[s::n])
    return f"{folder}/*.jsonl.gz"


TINY_RUN = [
    "model=bert-tiny", "model.d_model=64", "model.n_heads=2", "model.d_ff=128", "model.max_seq_len=32",
    "data.max_seq_len=32", "data.batch_size=8", "data.eval_batch_size=16", "data.max_eval_blocks=32",
    "tokenizer.vocab_size=300", "trainer.max_steps=30", "trainer.val_check_interval=15", "task.lr=3e-3",
    "trainer.log_every_n_steps=1", "callbacks.progress_bar=null", "callbacks.throughput.window=2",
]


def run_cli(module: str, *args: str, cwd: Path | None = None, timeout: int = 300,
            subprocess_run: bool = False) -> subprocess.CompletedProcess:
    """Run an entry point as its console script does: ``main()`` with ``sys.argv`` set, in this process (a fresh
    interpreter would spend most of a test importing Lightning again), with stdout and stderr captured and the exit
    status taken from SystemExit. ``subprocess_run=True`` starts a fresh interpreter instead, as a user would."""
    if subprocess_run:
        env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
        return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd or REPO, env=env, capture_output=True,
                              text=True, timeout=timeout)
    import contextlib
    import importlib
    import io
    import logging
    import traceback

    main = importlib.import_module(module).main
    out, err = io.StringIO(), io.StringIO()
    saved_argv, saved_cwd = sys.argv, os.getcwd()
    handlers = logging.getLogger().handlers[:]
    code = 0
    try:
        sys.argv = [module, *args]
        os.chdir(cwd or REPO)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except Exception:  # what the interpreter would print before exiting with 1
                traceback.print_exc()
                code = 1
    finally:
        sys.argv = saved_argv
        os.chdir(saved_cwd)
        logging.getLogger().handlers[:] = handlers  # Hydra's job logging points at the captured streams
    return subprocess.CompletedProcess([module, *args], code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="session")
def pretrain_run(tiny_corpus, tmp_path_factory) -> Path:
    """One tiny MLM pretraining through the CLI, shared by the end-to-end tests."""
    run_dir = tmp_path_factory.mktemp("pretrain_run")
    result = run_cli("bertlite.pretrain", *TINY_RUN, "data=text_files", f"data.train_files={tiny_corpus}",
                     f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


# Words the tiny pretraining corpus (Python's docs) has whole tokens for.
POSITIVE = ["valid", "correct", "true", "defined", "supported", "available", "enabled", "found"]
NEGATIVE = ["invalid", "wrong", "false", "undefined", "unsupported", "missing", "disabled", "lost"]
NOUNS = ["value", "object", "name", "module", "function", "argument", "type", "method"]


def sentiment_rows(n: int, seed: int) -> list[dict]:
    """A learnable toy task: the label follows the adjectives."""
    import random

    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice(["pos", "neg"])
        words = POSITIVE if label == "pos" else NEGATIVE
        rows.append({"review": f"the {rng.choice(NOUNS)} was {rng.choice(words)} and {rng.choice(words)} .",
                     "sentiment": label})
    return rows


@pytest.fixture(scope="session")
def sentiment_csv(tmp_path_factory) -> tuple[Path, Path]:
    import csv

    folder = tmp_path_factory.mktemp("sentiment")
    paths = []
    for name, n, seed in [("train.csv", 240, 0), ("dev.csv", 60, 1)]:
        path = folder / name
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["review", "sentiment"])
            writer.writeheader()
            writer.writerows(sentiment_rows(n, seed))
        paths.append(path)
    return paths[0], paths[1]


def predictor_checkpoint(model, tokenizer, task: str, **meta) -> dict:
    """A checkpoint dict for a Predictor, as the LightningModule writes it, from a bare model (no training)."""
    import dataclasses

    return {"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
            "bertlite": {"task": task, "model_config": dataclasses.asdict(model.config),
                         "tokenizer": tokenizer.to_str(), **meta}}


class TableModel(torch.nn.Module):
    """Logits looked up by token id: a tagger whose output is known in advance."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = table

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        return self.table[input_ids]

