"""bertlite-convert: move models between bertlite checkpoints, bertlite model folders and Hugging Face folders.

    bertlite-convert from-hf /path/to/hf_folder out=model.ckpt
    bertlite-convert to-hf runs/sst2/checkpoints/best.ckpt out=exported/ [overwrite=true]
    bertlite-convert to-folder runs/sst2/checkpoints/best.ckpt out=sst2-model/ [overwrite=true]

overwrite=true replaces only an empty folder or one bertlite wrote (a model folder, an export) with nothing else
in it; never the current directory or the folder of the checkpoint being converted.

to-folder writes a bertlite model folder (config.json, model.safetensors, tokenizer.json) for any bertlite model,
GPT and encoder-decoder included: shareable without pickle, read by bertlite.load(<folder>) and pretrained=<folder>.

from-hf reads a BERT, RoBERTa or ModernBERT folder: config.json, model.safetensors (or pytorch_model.bin, sharded or
not) and tokenizer.json (or vocab.txt), and writes a bertlite checkpoint: classification, token classification, MLM
or encoder-only, after the class config.json names (else the heads the folder has).
to-hf writes a folder that ``transformers`` loads with its *ForSequenceClassification / *ForTokenClassification /
*ForMaskedLM / *Model class: RoBERTa's for a model imported from RoBERTa (or fine-tuned from one), ModernBERT's
for a model with rotary positions, else BERT's.
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
    parser.add_argument("direction", choices=["from-hf", "to-hf", "to-folder"])
    parser.add_argument("source", help="an HF folder (from-hf) or a bertlite checkpoint (to-hf, to-folder)")
    parser.add_argument("options", nargs="*",
                        help="out=<path> (required), overwrite=true, trust_checkpoint=true (to-hf: unpickle the "
                             "checkpoint fully; only for your own files)")
    args = parser.parse_args(argv)
    options = {}
    for item in args.options:
        key, sep, value = item.partition("=")
        if not sep or key not in ("out", "overwrite", "trust_checkpoint"):
            raise ConfigError(f"unknown option {item!r}; give out=<path> and optionally overwrite=true "
                              "or trust_checkpoint=true")
        options[key] = value
    if not options.get("out"):
        raise ConfigError("give the destination: out=<file.ckpt> for from-hf, out=<folder> for to-hf and to-folder")
    args.out = Path(options["out"])
    args.overwrite = options.get("overwrite", "false").lower() in ("1", "true", "yes")
    args.trust = options.get("trust_checkpoint", "false").lower() in ("1", "true", "yes")
    return args


def from_hf(folder: str, out: Path, overwrite: bool, trust: bool = False) -> None:
    from bertlite.checkpoints import save_checkpoint
    from bertlite.interop import import_hf

    if out.is_dir():
        raise ConfigError(f"out={out} is a folder; from-hf writes one checkpoint file: give out=<name>.ckpt")
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} exists; choose another path or pass overwrite=true")
    checkpoint, report = import_hf(folder)
    report.log()
    save_checkpoint(checkpoint, out)
    meta = checkpoint["bertlite"]
    log.info("Wrote %s: a %s checkpoint (%d layers, d_model %d, vocabulary %d)%s", out, meta["task"],
             meta["model_config"]["n_layers"], meta["model_config"]["d_model"], meta["model_config"]["vocab_size"],
             f", labels {meta['label_names']}" if "label_names" in meta else "")


def to_hf(checkpoint: str, out: Path, overwrite: bool, trust: bool = False) -> None:
    from bertlite.atomic import check_destination
    from bertlite.interop import EXPORTABLE_TASKS, export_hf
    from bertlite.sources import read_checkpoint

    check_destination(out, protect=[checkpoint])  # never the current directory or the checkpoint's own folder
    export_hf(read_checkpoint(checkpoint, EXPORTABLE_TASKS, trust), out, overwrite=overwrite)
    log.info("Wrote %s: load it with transformers' AutoModel*.from_pretrained(%r) and AutoTokenizer", out, str(out))


def to_folder(checkpoint: str, out: Path, overwrite: bool, trust: bool = False) -> None:
    from bertlite.atomic import check_destination
    from bertlite.model_folder import save_model_folder
    from bertlite.sources import read_checkpoint

    check_destination(out, protect=[checkpoint])  # before the checkpoint is read: a refusal comes at once
    loaded = read_checkpoint(checkpoint, trust=trust)
    save_model_folder(loaded, out, overwrite, protect=(checkpoint,))
    log.info("Wrote %s: a %s model folder; load it with bertlite.load(%r)", out, loaded["bertlite"]["task"], str(out))


@exit_on_user_error
def run(argv: list[str]) -> None:
    args = parse(argv)
    convert = {"from-hf": from_hf, "to-hf": to_hf, "to-folder": to_folder}[args.direction]
    convert(args.source, args.out, args.overwrite, args.trust)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    run(sys.argv[1:])


if __name__ == "__main__":
    main()
