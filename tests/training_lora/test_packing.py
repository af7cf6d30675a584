"""Packing is exact: a packed micro-batch gives the same loss and gradients as each sample alone."""

from __future__ import annotations

import random

import pytest
import torch

from training.lora.config import TrainConfig
from training.lora.data import Sample
from training.lora.loss import PackedLoss, linear_cross_entropy, score
from training.lora.model import attach_lora, load_base
from training.lora.packing import common_prefix, pack


@pytest.fixture(scope="module")
def tiny_lora(tiny_model_dir, tmp_path_factory):
    torch.manual_seed(0)
    base = load_base(str(tiny_model_dir), tmp_path_factory.mktemp("data"), precision="fp32")
    model = attach_lora(base, TrainConfig(lora_rank=4))
    with torch.no_grad():  # a non-zero adapter, so the LoRA path matters in forward and backward
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    return model


def make_samples(prefix_len: int, tails: list[int], seed: int = 0) -> list[Sample]:
    """Samples sharing `prefix_len` context tokens, then tails of context + learned tokens."""
    rng = random.Random(seed)
    prefix = [2, *[rng.randrange(10, 5000) for _ in range(prefix_len - 1)]]
    samples = []
    for n in tails:
        tail = [rng.randrange(10, 5000) for _ in range(n)]
        kinds = [0] * prefix_len + [0] * (n // 3) + [1] * (n - n // 3 - 1) + [2]
        samples.append(Sample(prefix + tail, kinds, source="synthetic"))
    return samples


def reference(model, samples: list[Sample]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Each sample on its own through the stock transformers forward (SDPA masks, full logits)."""
    model.zero_grad()
    total, count = 0.0, 0
    for sample in samples:
        ids = torch.tensor([sample.input_ids])
        labels = torch.tensor([t if k else -100 for t, k in zip(sample.input_ids, sample.kinds, strict=True)])
        logits = model(input_ids=ids).logits[0, :-1].float()
        total = total + torch.nn.functional.cross_entropy(logits, labels[1:], ignore_index=-100, reduction="sum")
        count += int((labels[1:] != -100).sum())
    loss = total / count
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    return loss.detach(), grads


def packed(model, samples: list[Sample], share_prefix: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad()
    batch = pack(samples, share_prefix=share_prefix)
    nll = PackedLoss(model, chunk=7)(batch)
    loss = nll.sum() / batch.n_targets
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    return loss.detach(), grads


def assert_grads_close(a: dict, b: dict) -> None:
    """Equal up to float32 summation order: relative error of each gradient below 1e-4."""
    assert a.keys() == b.keys()
    for name in a:
        error = float((a[name] - b[name]).norm() / b[name].norm().clamp_min(1e-12))
        assert error < 1e-4, f"{name}: relative error {error:.2e}"


@pytest.mark.parametrize("share_prefix", [True, False])
@pytest.mark.parametrize(
    ("prefix_len", "tails"),
    [
        (5, [6, 9, 4]),  # short: everything inside the sliding window (16)
        (40, [30, 7, 21]),  # the shared prefix and a tail are longer than the window
    ],
)
def test_packed_loss_and_gradients_equal_separate_samples(tiny_lora, share_prefix, prefix_len, tails):
    samples = make_samples(prefix_len, tails)
    want_loss, want_grads = reference(tiny_lora, samples)
    got_loss, got_grads = packed(tiny_lora, samples, share_prefix)
    torch.testing.assert_close(got_loss, want_loss, rtol=1e-5, atol=1e-6)
    assert_grads_close(got_grads, want_grads)


def test_shared_prefix_is_computed_once():
    samples = make_samples(40, [30, 7, 21])
    shared, plain = pack(samples, share_prefix=True), pack(samples, share_prefix=False)
    assert shared.trunk == 40 and plain.trunk == 0
    assert shared.row_tokens == 40 + 30 + 7 + 21
    assert plain.row_tokens == shared.sample_tokens == 3 * 40 + 58
    assert shared.n_targets == plain.n_targets == sum(s.n_targets for s in samples)
    # positions restart after the prefix for every sample
    assert shared.position_ids[40:70].tolist() == list(range(40, 70))
    assert shared.position_ids[70:77].tolist() == list(range(40, 47))


def test_prefix_stops_before_learned_tokens():
    a = Sample([2, 5, 6, 7, 8], [0, 0, 1, 1, 2], "a")
    b = Sample([2, 5, 6, 7, 8], [0, 0, 1, 1, 2], "b")  # identical samples: learned tokens stay per sample
    assert common_prefix([a, b]) == 2
    batch = pack([a, b])
    assert batch.n_targets == 6
    assert common_prefix([a]) == 0


def test_unequal_samples_pack_without_padding(tiny_lora):
    samples = make_samples(3, [50, 2, 11], seed=3)
    batch = pack(samples)
    assert batch.row_tokens == 3 + 50 + 2 + 11  # nothing added
    assert (batch.input_ids != 0).all()


@pytest.mark.parametrize("softcap", [None, 30.0])
def test_chunked_output_layer_loss_matches_cross_entropy(softcap):
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 300, bias=False)
    hidden = torch.randn(37, 16, requires_grad=True)
    targets = torch.randint(0, 300, (37,))
    weights = torch.rand(37)
    got = linear_cross_entropy(hidden, head, targets, chunk=8, softcap=softcap)
    (got * weights).sum().backward()
    got_grad = hidden.grad.clone()
    hidden.grad = None
    logits = head(hidden)
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    want = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    (want * weights).sum().backward()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_grad, hidden.grad, rtol=1e-5, atol=1e-6)


def test_score_separates_her_words_from_the_end_marker(tiny_lora):
    samples = make_samples(5, [6, 9])
    result = score(PackedLoss(tiny_lora), samples, batch_size=1)
    assert result.tokens == sum(s.n_targets for s in samples)
    assert result.content_tokens == result.tokens - 2  # one end marker per sample
    assert result.loss > 0 and result.content_loss > 0
