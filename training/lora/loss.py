"""Loss on her tokens only, without materialising the full logits.

Gemma's output layer has 262k rows: logits for every position of a packed row would take
gigabytes, and most positions (the prompt) carry no loss anyway. We gather the hidden states
that predict a learned token, then compute output layer + cross-entropy chunk by chunk,
keeping only the gradient with respect to those hidden states (the output layer is frozen).
Memory is bounded by `chunk x vocab`, and work by the number of learned tokens.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from training.lora.packing import PackedBatch, packed_forward


class _LinearCrossEntropy(torch.autograd.Function):
    """Per-token negative log-likelihood of `targets` under `hidden @ weight.T (+ bias)`."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk, softcap, compute_dtype):  # type: ignore[override]
        n = hidden.shape[0]
        nll = torch.empty(n, dtype=torch.float32, device=hidden.device)
        want_grad = hidden.requires_grad
        grad_hidden = torch.empty_like(hidden) if want_grad else None
        device_type = hidden.device.type
        with torch.autocast(device_type=device_type, enabled=False):
            w = weight.to(compute_dtype)
            for start in range(0, n, chunk):
                stop = min(start + chunk, n)
                logits = (hidden[start:stop].to(compute_dtype) @ w.T).float()
                if bias is not None:
                    logits += bias.float()
                capped = None
                if softcap:
                    capped = torch.tanh(logits / softcap)
                    logits = capped * softcap
                target = targets[start:stop, None]
                lse = torch.logsumexp(logits, dim=-1, keepdim=True)
                nll[start:stop] = (lse - logits.gather(1, target))[:, 0]
                if grad_hidden is not None:
                    probs = logits.sub_(lse).exp_()  # softmax, in place
                    probs.scatter_add_(1, target, torch.full_like(target, -1.0, dtype=probs.dtype))
                    if capped is not None:
                        probs *= 1 - capped * capped
                    grad_hidden[start:stop] = (probs.to(compute_dtype) @ w).to(hidden.dtype)
                del logits
        ctx.save_for_backward(grad_hidden if grad_hidden is not None else torch.empty(0))
        return nll

    @staticmethod
    def backward(ctx, grad_nll):  # type: ignore[override]
        (grad_hidden,) = ctx.saved_tensors
        grad = grad_hidden * grad_nll[:, None].to(grad_hidden.dtype)
        return grad, None, None, None, None, None, None


def linear_cross_entropy(
    hidden: torch.Tensor,
    head: torch.nn.Module,
    targets: torch.Tensor,
    *,
    chunk: int = 256,
    softcap: float | None = None,
    compute_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    weight = head.weight
    compute_dtype = compute_dtype or weight.dtype
    return _LinearCrossEntropy.apply(
        hidden, weight, getattr(head, "bias", None), targets, chunk, softcap, compute_dtype
    )


def unwrap(model: Any) -> Any:
    """The causal LM inside a PeftModel (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


class PackedLoss(torch.nn.Module):
    """model + packed batch -> per-target NLL (float32). A Module so DDP can wrap it."""

    def __init__(self, model: Any, *, chunk: int = 256, autocast_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.model = model
        self.chunk = chunk
        self.autocast_dtype = autocast_dtype

    def forward(self, batch: PackedBatch) -> torch.Tensor:
        lm = unwrap(self.model)
        decoder = lm.get_decoder()
        head = lm.get_output_embeddings()
        device = batch.input_ids.device
        autocast = (
            torch.autocast(device_type=device.type, dtype=self.autocast_dtype)
            if self.autocast_dtype is not None
            else contextlib.nullcontext()
        )
        with autocast, packed_forward():
            out = decoder(
                input_ids=batch.input_ids[None],
                position_ids=batch.position_ids[None],
                use_cache=False,
                packing=batch,
            )
        hidden = out.last_hidden_state[0].index_select(0, batch.target_rows)
        compute = self.autocast_dtype or head.weight.dtype
        softcap = getattr(lm.config, "final_logit_softcapping", None)
        return linear_cross_entropy(
            hidden, head, batch.target_ids, chunk=self.chunk, softcap=softcap, compute_dtype=compute
        )


class Score:
    """Summed NLL over learned tokens: all of them, and her words only (no end-of-turn marker)."""

    def __init__(self) -> None:
        self.nll = 0.0
        self.tokens = 0
        self.content_nll = 0.0
        self.content_tokens = 0

    def add(self, nll: torch.Tensor, kinds: torch.Tensor) -> None:
        content = kinds == 1
        self.nll += float(nll.sum())
        self.tokens += int(nll.numel())
        self.content_nll += float(nll[content].sum())
        self.content_tokens += int(content.sum())

    @property
    def loss(self) -> float:
        return self.nll / max(1, self.tokens)

    @property
    def content_loss(self) -> float:
        return self.content_nll / max(1, self.content_tokens)

    def as_dict(self) -> dict[str, float | int]:
        import math

        return {
            "loss": self.loss,
            "perplexity": math.exp(self.loss),
            "lines_loss": self.content_loss,
            "lines_perplexity": math.exp(self.content_loss),
            "tokens": self.tokens,
            "line_tokens": self.content_tokens,
        }


@torch.no_grad()
def score(loss_module: PackedLoss, samples: list, *, batch_size: int = 8, share_prefix: bool = True) -> Score:
    from training.lora.packing import pack

    model = loss_module.model
    was_training = model.training
    model.eval()
    device = next(p for p in model.parameters()).device
    result = Score()
    try:
        for start in range(0, len(samples), batch_size):
            batch = pack(samples[start : start + batch_size], share_prefix=share_prefix).to(device)
            result.add(loss_module(batch).cpu(), batch.target_kinds.cpu())
    finally:
        model.train(was_training)
    return result
