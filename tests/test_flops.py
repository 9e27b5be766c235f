"""The FLOPs count behind throughput and MFU: matrix weights from the model itself, attention from the mask."""

import pytest
import torch

from bertlite.models.config import preset
from bertlite.models.flops import layer_weights, stack_flops, training_flops
from bertlite.nn.block import TransformerBlock


def matrix_weights(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.dim() == 2)


@pytest.mark.parametrize("activation", ["gelu", "geglu", "swiglu"])
def test_layer_weights_are_the_matrix_parameters_of_a_layer(activation):
    block = TransformerBlock(d_model=32, n_heads=2, d_ff=48, activation=activation)
    gated = activation != "gelu"
    assert layer_weights(32, 48, gated=gated) == matrix_weights(block)


def test_local_layers_count_only_the_keys_inside_their_window():
    seq_len, window, d = 32, 8, 16
    one_global = stack_flops(1, d, 4 * d, seq_len, seq_len, 1)
    one_local = stack_flops(1, d, 4 * d, seq_len, seq_len, 1, local_layers=1, window=window)
    assert one_global - one_local == 12 * d * seq_len * (seq_len - (window + 1))
    # a window as long as the sequence is global attention
    assert stack_flops(1, d, 4 * d, seq_len, seq_len, 1, local_layers=1, window=seq_len) == one_global


def test_modernbert_flops_count_its_glu_and_its_local_layers():
    modern = preset("modernbert-mini", vocab_size=1000, pad_token_id=0)
    everywhere_global = preset("modernbert-mini", vocab_size=1000, pad_token_id=0, local_attention=0,
                               global_attn_every_n_layers=1)
    at_512, at_64 = training_flops(modern, 2, 512), training_flops(modern, 2, 64)
    assert at_512 < training_flops(everywhere_global, 2, 512)  # 2 of 4 layers local, window 128 < 512
    assert at_64 == training_flops(everywhere_global, 2, 64)  # the window covers a 64-token block
    assert layer_weights(256, 384, gated=True) == 4 * 256 * 256 + 3 * 256 * 384
