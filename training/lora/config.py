"""Every knob of LoRA training, in one pydantic model (CLI flags are generated from it)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from companion.errors import InputFileError

# Fields that change how a run is watched or saved, not what it computes: a checkpoint made
# with other values of these still resumes to the same adapter.
NON_SEMANTIC_FIELDS = frozenset(
    {"eval_every", "eval_at_start", "save_every", "keep_checkpoints", "log_every", "threads"}
)


class TrainConfig(BaseModel):
    """LoRA SFT settings. Defaults suit a small character dataset on a CPU (LLaMA-Factory's LoRA
    defaults: rank 8, alpha 16, every linear layer, cosine schedule with warmup)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # -- model -------------------------------------------------------------------------------
    model: str = Field("gemma3-270m", description="Base model: an embedded name (gemma3-270m), a folder or a hub id.")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N.")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description="auto: bf16 on GPUs and on CPUs with native bf16 (AVX512-BF16/AMX), else fp32."
    )
    quantization: Literal["none", "4bit"] = Field(
        "none", description="4bit: QLoRA (NF4 base weights via bitsandbytes; CUDA only)."
    )
    threads: int | None = Field(None, ge=1, description="CPU threads for torch (default: torch's choice).")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in backward to save memory.")

    # -- LoRA --------------------------------------------------------------------------------
    lora_rank: int = Field(8, ge=1, description="LoRA rank r.")
    lora_alpha: float = Field(16.0, gt=0, description="LoRA alpha (scale = alpha / rank).")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the LoRA input.")
    lora_targets: str = Field(
        "all-linear",
        description="Comma-separated module names (q_proj,v_proj) or all-linear (every linear but lm_head).",
    )

    # -- data --------------------------------------------------------------------------------
    max_length: int = Field(2048, ge=16, description="Longest sample in tokens; longer ones are shortened and counted.")
    system_prompt: Literal["auto", "chat", "persona", "dataset", "none"] = Field(
        "auto",
        description="chat: the system prompt and final user turn exactly as `companion chat` builds them; "
        "persona: persona_prompt only; dataset: the dataset's own; none: no system prompt; auto: chat, unless "
        "the dataset carries a system prompt other than the card's persona prompt.",
    )
    user_name: str | None = Field(None, description="{{user}} in prompts (default: the settings' user_name).")
    eval_fraction: float = Field(
        0.1, ge=0, lt=1, description="Held-out share when the dataset has no eval.jsonl (split by content hash)."
    )
    share_prefix: bool = Field(
        True,
        description="Compute the prompt prefix that all samples of a micro-batch share (the persona) once per "
        "micro-batch. Exact: each sample still sees only itself and the prefix.",
    )

    # -- optimisation ------------------------------------------------------------------------
    batch_size: int = Field(4, ge=1, description="Samples per micro-batch (packed into one row, no padding).")
    grad_accum: int = Field(2, ge=1, description="Micro-batches per optimizer step.")
    epochs: float = Field(3.0, gt=0, description="Passes over the training split (ignored when max_steps is set).")
    max_steps: int | None = Field(None, ge=1, description="Optimizer steps; overrides epochs.")
    learning_rate: float = Field(2e-4, gt=0, description="Peak learning rate.")
    lr_scheduler: Literal["cosine", "linear", "constant"] = Field("cosine", description="Decay after warmup.")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="Share of steps with linear warmup.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    adam_beta1: float = Field(0.9, gt=0, lt=1)
    adam_beta2: float = Field(0.999, gt=0, lt=1)
    adam_epsilon: float = Field(1e-8, gt=0)
    max_grad_norm: float = Field(1.0, ge=0, description="Gradient clipping (0 disables).")
    seed: int = Field(42, description="Seeds LoRA init, data order and dropout.")
    loss_chunk_tokens: int = Field(
        256, ge=8, description="Tokens per chunk of the output layer + cross-entropy (bounds logits memory)."
    )

    # -- watching and saving -----------------------------------------------------------------
    eval_every: int = Field(25, ge=0, description="Held-out loss every N steps (0: only at the end).")
    eval_at_start: bool = Field(True, description="Held-out loss of the base model before the first step.")
    save_every: int = Field(25, ge=0, description="Checkpoint every N steps (0: never).")
    keep_checkpoints: int = Field(2, ge=1, description="Checkpoints kept on disk.")
    log_every: int = Field(1, ge=1, description="Record the training loss every N steps.")

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.quantization == "4bit" and self.precision == "fp32":
            raise ValueError("4bit QLoRA computes in bf16/fp16: use precision auto, bf16 or fp16")
        return self

    @property
    def target_modules(self) -> str | list[str]:
        value = self.lora_targets.strip()
        if value in ("all-linear", "all", "all_linear"):
            return "all-linear"
        return [t.strip() for t in value.split(",") if t.strip()]

    def semantic_dict(self) -> dict:
        return self.model_dump(exclude=set(NON_SEMANTIC_FIELDS))

    def fingerprint(self) -> str:
        blob = json.dumps(self.semantic_dict(), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @classmethod
    def from_file(cls, path: Path) -> TrainConfig:
        """A YAML or JSON file of these fields (the train_config.json a run writes is one)."""
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputFileError(path, "training config not found") from None
        except (yaml.YAMLError, UnicodeDecodeError) as error:
            raise InputFileError(path, f"not a YAML/JSON training config: {error}") from None
        if not isinstance(data, dict):
            raise InputFileError(path, "a training config must be a mapping of field: value")
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            raise InputFileError(path, _describe(error)) from None

    def updated(self, **changes) -> TrainConfig:
        """A copy with `changes` applied and validated (None means: keep)."""
        changes = {k: v for k, v in changes.items() if v is not None}
        return TrainConfig.model_validate({**self.model_dump(), **changes})


def _describe(error: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors())
