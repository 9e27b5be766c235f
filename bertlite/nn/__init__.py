"""The building blocks of every bertlite model. Plain PyTorch: no Lightning, no Hydra."""

from bertlite.nn.attention import MultiHeadAttention, attention_fused, attention_reference, causal_mask
from bertlite.nn.block import TransformerBlock
from bertlite.nn.embeddings import TransformerEmbeddings
from bertlite.nn.feedforward import FeedForward
from bertlite.nn.positional import LearnedPositionalEmbedding, SinusoidalPositionalEncoding, sinusoidal_table
from bertlite.nn.stack import TransformerStack, init_weights, padding_mask

__all__ = [
    "FeedForward",
    "LearnedPositionalEmbedding",
    "MultiHeadAttention",
    "SinusoidalPositionalEncoding",
    "TransformerBlock",
    "TransformerEmbeddings",
    "TransformerStack",
    "attention_fused",
    "attention_reference",
    "causal_mask",
    "init_weights",
    "padding_mask",
    "sinusoidal_table",
]
