"""GPU checks: skipped cleanly where there is no GPU (CI never has one)."""

from __future__ import annotations

import pytest
import torch

from bertlite.models import BertForMaskedLM, preset
from bertlite.nn.attention import attention_fused, attention_reference

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")


def test_fused_attention_matches_reference_on_gpu():
    q, k, v = (torch.randn(2, 4, 32, 16, device="cuda") for _ in range(3))
    mask = torch.ones(2, 1, 1, 32, dtype=torch.bool, device="cuda")
    mask[1, ..., 20:] = False
    for causal in (False, True):
        ref, _ = attention_reference(q, k, v, mask, causal)
        torch.testing.assert_close(attention_fused(q, k, v, mask, causal), ref, atol=1e-3, rtol=1e-3)


def test_bf16_mlm_step_on_gpu():
    model = BertForMaskedLM(preset("bert-tiny", d_model=64, n_heads=2, d_ff=128, vocab_size=100, max_seq_len=32)).cuda()
    ids = torch.randint(5, 100, (4, 32), device="cuda")
    positions = torch.arange(0, 128, 7, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(ids, mlm_positions=positions, mlm_labels=ids.flatten()[positions])
    out.loss.backward()
    assert torch.isfinite(out.loss) and model.bert.embeddings.token.weight.grad is not None
