"""torch.compile (task.compile, bertlite.load's compile=) and the inference dtype (bertlite.load's dtype=)."""

from __future__ import annotations

import dataclasses
import time
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from torch._dynamo.testing import CompileCounter

from bertlite import inference
from bertlite.data.tokenizer import train_wordpiece
from bertlite.errors import ConfigError
from bertlite.inference import Classifier, MaskedLM, TextGenerator, load
from bertlite.precision import compile_model, resolve_compile
from bertlite.models import BertForMaskedLM, BertForSequenceClassification, preset
from bertlite.models.decoder import GPTForCausalLM
from bertlite.tasks import ClassificationTask
from tests.conftest import predictor_checkpoint, synthetic_sentences

TINY = dict(d_model=32, n_heads=2, d_ff=64, n_layers=2, max_seq_len=32, dropout=0.0, attention_dropout=0.0)
TASK_CONFIG = dataclasses.asdict(preset("bert-tiny", **TINY, vocab_size=100))


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()  # compiled code and recompile counts of earlier tests would leak in
    yield
    torch._dynamo.reset()


@pytest.fixture(scope="module")
def tokenizer():
    return train_wordpiece(synthetic_sentences(200), vocab_size=120)


def tiny_classifier(tokenizer) -> BertForSequenceClassification:
    torch.manual_seed(0)
    model = BertForSequenceClassification(preset("bert-tiny", **TINY, vocab_size=tokenizer.get_vocab_size()), 2)
    with torch.no_grad():
        model.head.classifier.weight.mul_(300)  # random logits far apart: most texts are clear-cut
    return model


@pytest.mark.slow
def test_compiled_forward_matches_eager(monkeypatch):
    monkeypatch.setattr(torch._inductor.config, "compile_threads", 1)  # no worker pool on a small shared machine
    torch.manual_seed(0)
    model = BertForMaskedLM(preset("bert-tiny", **TINY, vocab_size=100)).eval()
    ids = torch.randint(5, 100, (2, 16))
    mask = torch.ones_like(ids)
    mask[1, 10:] = 0
    positions = torch.tensor([1, 3, 17, 20])
    with torch.no_grad():
        eager = model(ids, mask, mlm_positions=positions).logits
        compile_model(model)  # inductor, as on a GPU, here generating C++ for the CPU
        started = time.perf_counter()
        compiled = model(ids, mask, mlm_positions=positions).logits
    print(f"compile + first forward: {time.perf_counter() - started:.1f} s")
    torch.testing.assert_close(compiled, eager, atol=1e-4, rtol=1e-4)


def test_batches_padded_to_multiples_of_8_compile_twice_not_once_per_length():
    model = BertForSequenceClassification(preset("bert-tiny", **TINY, vocab_size=100), 2).eval()
    counter = CompileCounter()  # a backend that only counts the graphs Dynamo captures
    compile_model(model, backend=counter)
    with torch.no_grad():
        for length in (8, 16, 24, 32, 8):
            ids = torch.randint(5, 100, (4, length))
            mask = torch.ones_like(ids)
            mask[1:, length // 2:] = 0  # padding: the compiled model keeps the padded path (no unpadding)
            model(ids, mask)
    assert counter.frame_count == 2  # static for the first length, then one graph with a symbolic length
    assert torch._dynamo.config.cache_size_limit >= 32


def test_auto_compiles_on_cuda_only(monkeypatch):
    assert resolve_compile("auto", "cpu") is False
    assert resolve_compile(True, "cpu") is True and resolve_compile("true", "cpu") is True
    assert resolve_compile(False, "cuda") is False and resolve_compile("False", "cuda") is False
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert resolve_compile("auto", "cuda") is True and resolve_compile("auto", torch.device("cuda", 1)) is True
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (6, 0))
    assert resolve_compile("auto", "cuda") is False  # Triton cannot compile for cards before Volta
    for bad in ("sometimes", 1, None):
        with pytest.raises(ConfigError, match="task.compile=.*choose auto"):
            resolve_compile(bad, "cpu", "task.compile")
    with pytest.raises(ConfigError, match="task.compile"):
        ClassificationTask(TASK_CONFIG, num_labels=2, label_names=["a", "b"], compile="yes")


@pytest.mark.parametrize("device, compiled", [("cpu", False), ("cuda", True)])
def test_task_decides_once_it_knows_the_device(monkeypatch, device, compiled):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    task = ClassificationTask(TASK_CONFIG, num_labels=2, label_names=["a", "b"])  # compile: auto by default
    assert task.compiled is None and task.model._compiled_call_impl is None  # not at construction
    task.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device)))
    task.configure_model()
    task.configure_model()  # Lightning calls it again at validate and test
    assert task.compiled is compiled and (task.model._compiled_call_impl is not None) is compiled


def test_compiled_task_checkpoint_has_plain_keys(monkeypatch, tmp_path, tokenizer):
    """A real fit on the CPU with task.compile=true: Lightning calls configure_model, and the checkpoint's keys
    are the eager model's, so it loads for inference. Dynamo's eager backend stands in for inductor (speed)."""
    monkeypatch.setattr("bertlite.tasks.base.compile_model", lambda m: compile_model(m, backend="eager"))
    config = dataclasses.asdict(preset("bert-tiny", **TINY, vocab_size=tokenizer.get_vocab_size()))
    task = ClassificationTask(config, num_labels=2, label_names=["neg", "pos"], compile=True)
    task.tokenizer_json = tokenizer.to_str()
    torch.manual_seed(0)
    batches = [{"input_ids": torch.randint(5, 100, (4, 16)), "attention_mask": torch.ones(4, 16, dtype=torch.long),
                "labels": torch.randint(0, 2, (4,))} for _ in range(2)]
    trainer = L.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(task, torch.utils.data.DataLoader(batches, batch_size=None))
    assert task.compiled and task.model._compiled_call_impl is not None
    path = tmp_path / "compiled.ckpt"
    trainer.save_checkpoint(path)
    saved = torch.load(path, map_location="cpu", weights_only=False)
    assert not [k for k in saved["state_dict"] if "_orig_mod" in k]
    assert set(saved["state_dict"]) == {f"model.{k}" for k in BertForSequenceClassification(
        task.model_config, 2).state_dict()}
    clf = Classifier(path, compile=False)
    assert clf.predict(["the cat sat on the mat ."])[0] in ("neg", "pos")


def test_bf16_inference_on_cpu_agrees_with_fp32(tmp_path, tokenizer):
    model = tiny_classifier(tokenizer)
    path = tmp_path / "clf.ckpt"
    checkpoint = predictor_checkpoint(model, tokenizer, "classification", label_names=["neg", "pos"], pooling="cls")
    torch.save(checkpoint, path)
    fp32 = load(path)
    assert fp32.dtype == torch.float32 and not fp32.compiled  # the CPU defaults: fp32, no compile
    bf16 = load(path, dtype="bf16")
    assert bf16.dtype == torch.bfloat16 and next(bf16.model.parameters()).dtype == torch.bfloat16
    texts = synthetic_sentences(40, seed=7)
    p32, p16 = fp32.predict_proba(texts), bf16.predict_proba(texts)
    assert p16.dtype == torch.float32  # probabilities come back in fp32 whatever the model's dtype
    clear = (p32[:, 1] - p32[:, 0]).abs() > 0.5
    assert clear.sum() >= 20
    assert torch.equal(p16[clear].argmax(-1), p32[clear].argmax(-1))
    torch.testing.assert_close(p16, p32, atol=0.1, rtol=0)
    assert load(path, dtype=torch.bfloat16).dtype == torch.bfloat16
    with pytest.raises(ConfigError, match="dtype='int8': choose bf16, fp32 or fp16"):
        load(path, dtype="int8")
    with pytest.raises(ConfigError, match="dtype="):
        load(path, dtype=torch.int64)
    with pytest.raises(ConfigError, match="compile='maybe'"):
        load(path, compile="maybe")


def test_bf16_masked_lm_and_generation_on_cpu(tokenizer):
    """Position tables, ALiBi biases and key/value caches cast with the model: nothing mixes dtypes."""
    torch.manual_seed(0)
    vocab = tokenizer.get_vocab_size()
    model = BertForMaskedLM(preset("bert-tiny", **TINY, vocab_size=vocab))
    mlm = MaskedLM(predictor_checkpoint(model, tokenizer, "mlm"), dtype="bf16")
    options = mlm.fill_mask("the cat [MASK] on the mat .", top_k=3)
    assert len(options) == 3 and all(0.0 <= o["score"] <= 1.0 for o in options)
    for position in ("learned", "alibi"):
        gpt = GPTForCausalLM(preset("gpt-tiny", **TINY, vocab_size=vocab, position=position))
        generator = TextGenerator(predictor_checkpoint(gpt, tokenizer, "clm"), dtype="bf16")
        assert isinstance(generator.generate("the cat", max_new_tokens=8, seed=0, stop_at_sep=False), str)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_cuda_defaults_to_bf16_and_compile(tmp_path, tokenizer):
    path = tmp_path / "clf.ckpt"
    torch.save(predictor_checkpoint(tiny_classifier(tokenizer), tokenizer, "classification", label_names=["neg", "pos"],
                          pooling="cls"), path)
    clf = load(path, device="cuda")
    native = inference.cuda_bf16_is_native()
    assert clf.dtype == (torch.bfloat16 if native else torch.float32)
    assert next(clf.model.parameters()).dtype == clf.dtype
    assert clf.compiled == (torch.cuda.get_device_capability() >= (7, 0))
    texts = synthetic_sentences(16, seed=7)
    probs = clf.predict_proba(texts)
    assert probs.dtype == torch.float32 and probs.device.type == "cpu"
    reference = load(path, device="cpu").predict_proba(texts)
    torch.testing.assert_close(probs, reference, atol=0.1, rtol=0)
