"""Packing a micro-batch into one row with no padding, and attention that keeps samples apart.

A micro-batch of samples becomes one row:

    [ shared prefix (trunk) ][ rest of sample 1 ][ rest of sample 2 ] ...

The trunk is the longest prefix of tokens all samples share (for a character, the persona
prompt: often most of each sample). It is computed once; each sample's rest attends to the
trunk and to itself only, with position ids continuing from the trunk, so every sample sees
exactly what it would see alone (`share_prefix=False` leaves the trunk empty: plain packing).
Gradients from every sample flow back through the shared trunk, as they would through each
sample's own copy.

Attention runs per segment (trunk, then each sample against trunk + itself), so no work is
spent on masked-out pairs: cost is sum(n_i * (trunk + n_i)) instead of row_length^2. The
function is registered with transformers as the attention implementation `companion_packed`;
without a `packing` argument it is plain SDPA, so generation is unchanged.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from training.lora.data import Sample

ATTENTION_NAME = "companion_packed"


@dataclass
class PackedBatch:
    input_ids: torch.Tensor  # [L]
    position_ids: torch.Tensor  # [L]
    trunk: int
    branches: list[tuple[int, int, int]]  # (row offset, length, first position)
    target_rows: torch.Tensor  # [N] row of the hidden state that predicts each target
    target_ids: torch.Tensor  # [N]
    target_kinds: torch.Tensor  # [N]
    sample_tokens: int  # tokens the samples hold on their own (what unpacked training would compute)
    _masks: dict[Any, torch.Tensor | None] = field(default_factory=dict, repr=False)

    @property
    def row_tokens(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def n_targets(self) -> int:
        return int(self.target_ids.shape[0])

    def to(self, device: torch.device | str) -> PackedBatch:
        if str(device) == "cpu":
            return self
        return PackedBatch(
            input_ids=self.input_ids.to(device),
            position_ids=self.position_ids.to(device),
            trunk=self.trunk,
            branches=self.branches,
            target_rows=self.target_rows.to(device),
            target_ids=self.target_ids.to(device),
            target_kinds=self.target_kinds.to(device),
            sample_tokens=self.sample_tokens,
        )

    # -- masks (built once per batch, shared by every layer and by backward) ----------------
    def trunk_mask(self, window: int | None, device: torch.device) -> torch.Tensor | None:
        """None means plain causal."""
        if window is None or self.trunk <= window:
            return None
        key = ("trunk", window, device)
        if key not in self._masks:
            pos = torch.arange(self.trunk, device=device)
            diff = pos[:, None] - pos[None, :]
            self._masks[key] = (diff >= 0) & (diff < window)
        return self._masks[key]

    def branch_mask(self, index: int, kv_start: int, window: int | None, device: torch.device) -> torch.Tensor | None:
        """Mask of branch `index` against keys trunk[kv_start:] + itself; None: plain causal."""
        _, length, first = self.branches[index]
        trunk_keys = self.trunk - kv_start
        if trunk_keys == 0 and (window is None or length <= window):
            return None
        key = ("branch", index, kv_start, window, device)
        if key not in self._masks:
            q_pos = torch.arange(first, first + length, device=device)
            k_pos = torch.cat(
                [torch.arange(kv_start, self.trunk, device=device), torch.arange(first, first + length, device=device)]
            )
            diff = q_pos[:, None] - k_pos[None, :]
            mask = diff >= 0
            if window is not None:
                mask &= diff < window
            self._masks[key] = mask
        return self._masks[key]


def common_prefix(samples: Sequence[Sample]) -> int:
    """Shared leading tokens of all samples, stopping before any token that is learned."""
    if len(samples) < 2:
        return 0
    limit = min(s.first_target for s in samples)
    first = samples[0].input_ids
    n = 0
    while n < limit and all(s.input_ids[n] == first[n] for s in samples):
        n += 1
    return n


def pack(samples: Sequence[Sample], *, share_prefix: bool = True) -> PackedBatch:
    trunk = common_prefix(samples) if share_prefix else 0
    ids: list[int] = list(samples[0].input_ids[:trunk])
    positions: list[int] = list(range(trunk))
    branches = []
    rows: list[int] = []
    targets: list[int] = []
    kinds: list[int] = []
    for sample in samples:
        offset = len(ids)
        rest = sample.input_ids[trunk:]
        branches.append((offset, len(rest), trunk))
        ids += rest
        positions += range(trunk, len(sample))
        for j in range(max(1, trunk), len(sample)):
            if sample.kinds[j]:
                source = j - 1  # the hidden state at j-1 predicts token j
                rows.append(source if source < trunk else offset + source - trunk)
                targets.append(sample.input_ids[j])
                kinds.append(sample.kinds[j])
    return PackedBatch(
        input_ids=torch.tensor(ids, dtype=torch.long),
        position_ids=torch.tensor(positions, dtype=torch.long),
        trunk=trunk,
        branches=branches,
        target_rows=torch.tensor(rows, dtype=torch.long),
        target_ids=torch.tensor(targets, dtype=torch.long),
        target_kinds=torch.tensor(kinds, dtype=torch.long),
        sample_tokens=sum(len(s) for s in samples),
    )


# -- attention ---------------------------------------------------------------------------------
def _repeat_kv(states: torch.Tensor, groups: int) -> torch.Tensor:
    if groups == 1:
        return states
    batch, heads, length, dim = states.shape
    return states[:, :, None].expand(batch, heads, groups, length, dim).reshape(batch, heads * groups, length, dim)


def packed_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    sliding_window: int | None = None,
    packing: PackedBatch | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers attention interface: q [1, H, L, D], k/v [1, Hkv, L, D] -> out [1, L, H, D]."""
    if packing is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    if getattr(getattr(module, "config", None), "attn_logit_softcapping", None):
        raise NotImplementedError("packed attention does not implement attention logit softcapping")
    groups = query.shape[1] // key.shape[1]
    key, value = _repeat_kv(key, groups), _repeat_kv(value, groups)
    p = dropout if module.training else 0.0
    device = query.device
    trunk = packing.trunk
    outputs = []

    def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return torch.nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=p, is_causal=mask is None, scale=scaling
        )

    if trunk:
        mask = packing.trunk_mask(sliding_window, device)
        outputs.append(attend(query[:, :, :trunk], key[:, :, :trunk], value[:, :, :trunk], mask))
    # A sliding-window layer never looks further back than the window: skip older trunk keys.
    kv_start = max(0, trunk - sliding_window + 1) if sliding_window else 0
    for index, (offset, length, _) in enumerate(packing.branches):
        if length == 0:
            continue
        span = slice(offset, offset + length)
        if trunk > kv_start:
            k = torch.cat([key[:, :, kv_start:trunk], key[:, :, span]], dim=2)
            v = torch.cat([value[:, :, kv_start:trunk], value[:, :, span]], dim=2)
        else:
            k, v = key[:, :, span], value[:, :, span]
        mask = packing.branch_mask(index, kv_start, sliding_window, device)
        outputs.append(attend(query[:, :, span], k, v, mask))
    out = torch.cat(outputs, dim=2) if len(outputs) > 1 else outputs[0]
    return out.transpose(1, 2).contiguous(), None


_state = threading.local()
_registered = False


@contextlib.contextmanager
def packed_forward() -> Iterator[None]:
    """While active, the model builds no attention mask (packed attention needs none)."""
    _state.active = True
    try:
        yield
    finally:
        _state.active = False


def _mask(*args: Any, **kwargs: Any) -> torch.Tensor | None:
    if getattr(_state, "active", False):
        return None
    from transformers.masking_utils import sdpa_mask

    return sdpa_mask(*args, **kwargs)


def register_attention() -> str:
    """Make `companion_packed` known to transformers (idempotent); returns its name."""
    global _registered
    if not _registered:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface

        AttentionInterface.register(ATTENTION_NAME, packed_attention)
        AttentionMaskInterface.register(ATTENTION_NAME, _mask)
        _registered = True
    return ATTENTION_NAME
