"""bertlite: pretrain and fine-tune Transformer language models on Lightning, configured by Hydra."""

__version__ = "0.1.0"


def load(path, device=None, dtype=None, compile="auto", trust=False):
    """Load a checkpoint or a model folder for inference: a Classifier, MaskedLM, Encoder or TextGenerator
    (bertlite.inference.load). On a CUDA device it runs in bf16 where the card has it and compiled; ``dtype=`` and
    ``compile=`` override. Files are opened without running code from them; ``trust=True`` unpickles your own
    older files fully."""
    from bertlite.inference import load as _load

    return _load(path, device, dtype, compile, trust)


__all__ = ["__version__", "load"]
