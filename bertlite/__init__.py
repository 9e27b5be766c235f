"""bertlite: pretrain and fine-tune Transformer language models on Lightning, configured by Hydra."""

__version__ = "0.1.0"


def load(path, device=None, dtype=None, compile="auto"):
    """Load a checkpoint for inference: a Classifier, MaskedLM, Encoder or TextGenerator (bertlite.inference.load).
    On a CUDA device it runs in bf16 where the card has it and compiled; ``dtype=`` and ``compile=`` override."""
    from bertlite.inference import load as _load

    return _load(path, device, dtype, compile)


__all__ = ["__version__", "load"]
