"""DPO settings. Field names shared with `TrainConfig` mean the same (and `companion train` flags fill them)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# TrainConfig fields that carry over to DPO when given as `companion train --method dpo` flags.
SHARED_FIELDS = (
    "model", "device", "precision", "threads", "lora_rank", "lora_alpha", "lora_dropout", "lora_targets",
    "max_length", "system_prompt", "user_name", "eval_fraction", "share_prefix", "batch_size", "grad_accum",
    "epochs", "max_steps", "learning_rate", "lr_scheduler", "warmup_ratio", "weight_decay", "max_grad_norm",
    "seed", "loss_chunk_tokens", "log_every",
)  # fmt: skip


class DPOConfig(BaseModel):
    """Direct Preference Optimisation (Rafailov et al. 2023), sigmoid loss, on a LoRA adapter.

    The policy starts from the character's SFT adapter (a fresh LoRA when she has none) and the
    reference is that same starting point, frozen: its log-probabilities are computed once,
    before the first step, so only one model is held in memory."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    model: str | None = Field(None, description="Base model (default: the SFT adapter's, else gemma3-270m).")
    device: str = "auto"
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    threads: int | None = Field(None, ge=1)
    beta: float = Field(0.1, gt=0, description="How far the policy may move from the reference (DPO beta).")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="Conservative DPO: assumed share of flipped labels.")
    lora_rank: int = Field(8, ge=1, description="Only for a fresh LoRA (no SFT adapter).")
    lora_alpha: float = Field(16.0, gt=0)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    lora_targets: str = "all-linear"
    max_length: int = Field(2048, ge=16, description="As SFT: a persona with examples is often 1.5k tokens.")
    system_prompt: Literal["auto", "chat", "persona", "dataset"] = "chat"
    user_name: str | None = None
    eval_fraction: float = Field(0.1, ge=0, lt=1)
    share_prefix: bool = True
    batch_size: int = Field(2, ge=1, description="Pairs per micro-batch (both answers packed into one row).")
    grad_accum: int = Field(2, ge=1)
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, ge=1)
    learning_rate: float = Field(5e-5, gt=0)
    lr_scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, ge=0)
    seed: int = 42
    loss_chunk_tokens: int = Field(256, ge=8)
    log_every: int = Field(1, ge=1)

    def updated(self, **changes) -> DPOConfig:
        changes = {k: v for k, v in changes.items() if v is not None}
        return DPOConfig.model_validate({**self.model_dump(), **changes})
