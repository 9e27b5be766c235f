"""bertlite: pretrain and fine-tune Transformer language models on Lightning, configured by Hydra."""

__version__ = "0.1.0"
