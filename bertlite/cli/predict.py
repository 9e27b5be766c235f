"""bertlite-predict: labels and probabilities for a text or a file of texts, from a classification checkpoint;
the entities in each text (type, text, start, end, score) from a token classification checkpoint."""

from __future__ import annotations

import csv
import io
import json
import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from bertlite.atomic import write_text_atomically
from bertlite.cli.common import CONFIG_DIR, exit_on_user_error, quote_free_text
from bertlite.errors import ConfigError, DataError
from bertlite.memory import retain_freed_memory

log = logging.getLogger("bertlite.predict")


def read_inputs(cfg: DictConfig) -> tuple[list[str], list[str] | None]:
    from bertlite.data.sources import expand_files, load_files, require_column

    if (cfg.text is None) == (cfg.input is None):
        raise ConfigError("give exactly one of text=\"...\" or input=<file>")
    if cfg.text is not None:
        return [str(cfg.text)], None if cfg.text_pair is None else [str(cfg.text_pair)]
    ds = load_files({"train": expand_files(cfg.input, "input file")})["train"]
    if len(ds) == 0:
        raise DataError(f"the input file {cfg.input} holds no rows")
    require_column(ds, cfg.text_column, "text_column")
    texts = ["" if t is None else str(t) for t in ds[cfg.text_column]]
    pairs = None
    if cfg.text_pair_column:
        require_column(ds, cfg.text_pair_column, "text_pair_column")
        pairs = ["" if t is None else str(t) for t in ds[cfg.text_pair_column]]
    return texts, pairs


def predict(cfg: DictConfig) -> list[dict]:
    from bertlite.inference import Classifier, TokenClassifier
    from bertlite.sources import read_checkpoint

    retain_freed_memory()  # bertlite/memory.py
    output = Path(cfg.output) if cfg.output else None
    if output is not None and output.suffix not in (".jsonl", ".csv"):
        raise ConfigError(f"output={output}: the file must end in .jsonl or .csv")
    checkpoint = read_checkpoint(cfg.checkpoint, expect_task=("classification", "token_classification"),
                                 trust=cfg.trust_checkpoint)
    if checkpoint["bertlite"]["task"] == "token_classification":
        tagger = TokenClassifier(checkpoint, device=cfg.device)
        texts, pairs = read_inputs(cfg)
        if pairs:
            raise ConfigError("a token classification model tags single texts: drop text_pair / text_pair_column")
        # texts longer than the model's length are read in overlapping windows (stride: the pieces they share)
        entities = tagger.predict(texts, cfg.batch_size, cfg.get("stride"))
        rows = [{"text": t, "entities": e} for t, e in zip(texts, entities)]
        return write_rows(rows, output)
    classifier = Classifier(checkpoint, device=cfg.device)
    texts, pairs = read_inputs(cfg)
    scores = classifier.scores(texts, pairs, batch_size=cfg.batch_size).tolist()
    rows = []
    for i, (p, predicted) in enumerate(zip(scores, classifier.predict_from_scores(scores))):
        row = {"text": texts[i], **({"text_pair": pairs[i]} if pairs else {})}
        if classifier.problem_type == "regression":  # the number, under the label column's name
            row[classifier.labels[0]] = round(predicted, 6)
        else:  # the label (or, multi-label, the list of labels) and each label's probability
            row["labels" if classifier.problem_type == "multi_label" else "label"] = predicted
            row.update({f"p_{name}": round(v, 6) for name, v in zip(classifier.labels, p)})
        rows.append(row)
    return write_rows(rows, output)


def write_rows(rows: list[dict], output: Path | None) -> list[dict]:
    """JSON lines to stdout, or a .jsonl or .csv file (lists, such as entities, as JSON text in a CSV cell)."""
    if output is None:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False))
    elif output.suffix == ".jsonl":
        write_text_atomically(output, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    else:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: json.dumps(v, ensure_ascii=False) if isinstance(v, list) else v for k, v in r.items()}
                         for r in rows)
        write_text_atomically(output, buffer.getvalue())
    if output is not None:
        log.info("Wrote %d predictions to %s", len(rows), output)
    return rows


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="predict")
@exit_on_user_error
def _main(cfg: DictConfig) -> None:
    predict(cfg)


def main() -> None:
    sys.argv = [sys.argv[0], *quote_free_text(sys.argv[1:], ("text", "text_pair"))]
    _main()


if __name__ == "__main__":
    main()
