"""bertlite: pretrain and fine-tune Transformer language models on Lightning, configured by Hydra."""

__version__ = "0.1.0"


def load(path, device=None):
    """Load a checkpoint for inference: a Classifier (predict, predict_proba) or a MaskedLM (fill_mask)."""
    from bertlite.inference import load as _load

    return _load(path, device)


__all__ = ["__version__", "load"]
