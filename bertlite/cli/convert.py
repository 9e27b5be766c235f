"""bertlite-convert: move BERT models between Hugging Face folders and bertlite checkpoints.

    bertlite-convert from-hf /path/to/hf_bert_folder out=bert.ckpt
    bertlite-convert to-hf runs/sst2/checkpoints/best.ckpt out=exported/ [overwrite=true]

from-hf reads config.json, model.safetensors (or pytorch_model.bin, sharded or not) and tokenizer.json (or
vocab.txt) and writes a bertlite checkpoint: classification, MLM or encoder-only, after the heads the folder has.
to-hf writes a folder that ``transformers`` loads with BertForSequenceClassification / BertForMaskedLM / BertModel.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from bertlite.cli.common import exit_on_user_error
from bertlite.errors import ConfigError

log = logging.getLogger("bertlite.convert")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bertlite-convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("direction", choices=["from-hf", "to-hf"])
    parser.add_argument("source", help="an HF folder (from-hf) or a bertlite checkpoint (to-hf)")
    parser.add_argument("options", nargs="*", help="out=<path> (required), overwrite=true")
    args = parser.parse_args(argv)
    options = {}
    for item in args.options:
        key, sep, value = item.partition("=")
        if not sep or key not in ("out", "overwrite"):
            raise ConfigError(f"unknown option {item!r}; give out=<path> and optionally overwrite=true")
        options[key] = value
    if not options.get("out"):
        raise ConfigError("give the destination: out=<file.ckpt> for from-hf, out=<folder> for to-hf")
    args.out = Path(options["out"])
    args.overwrite = options.get("overwrite", "false").lower() in ("1", "true", "yes")
    return args


def from_hf(folder: str, out: Path, overwrite: bool) -> None:
    from bertlite.checkpoints import save_checkpoint
    from bertlite.interop import import_hf_bert

    if out.exists() and not overwrite:
        raise ConfigError(f"{out} exists; choose another path or pass overwrite=true")
    checkpoint, report = import_hf_bert(folder)
    report.log()
    save_checkpoint(checkpoint, out)
    meta = checkpoint["bertlite"]
    log.info("Wrote %s: a %s checkpoint (%d layers, d_model %d, vocabulary %d)%s", out, meta["task"],
             meta["model_config"]["n_layers"], meta["model_config"]["d_model"], meta["model_config"]["vocab_size"],
             f", labels {meta['label_names']}" if "label_names" in meta else "")


def to_hf(checkpoint: str, out: Path, overwrite: bool) -> None:
    from bertlite.interop import export_hf_bert

    export_hf_bert(checkpoint, out, overwrite=overwrite)
    log.info("Wrote %s: load it with transformers' AutoModel*.from_pretrained(%r) and AutoTokenizer", out, str(out))


@exit_on_user_error
def run(argv: list[str]) -> None:
    args = parse(argv)
    (from_hf if args.direction == "from-hf" else to_hf)(args.source, args.out, args.overwrite)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    run(sys.argv[1:])


if __name__ == "__main__":
    main()
