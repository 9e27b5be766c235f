"""The benchmark of bertlite against Hugging Face transformers, and of the modern encoder against the classic
one: ``python -m scripts.benchmark --help``.

__main__.py: the command line and the sections; harness.py: cases, interleaved timing, memory and the table;
text.py: text, tokenizer, fine-tuning and inference cases; train.py: the pretraining steps and the loaders;
trainer_fit.py: the MLM step through Trainer.fit; modern.py: modernbert-mini against bert-mini; compare.py: two
runs' ratios side by side.
"""

import os

# set here, before any module of the benchmark imports torch, datasets or transformers, which read them on import
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
