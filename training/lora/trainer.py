"""`companion train`: LoRA SFT of a character on her dataset, into her adapter/ folder.

One step = `grad_accum` micro-batches of `batch_size` samples, each micro-batch packed into a
single row (packing.py); the loss is the mean NLL over every learned token of the step (her
words and her end-of-turn marker), as LLaMA-Factory / transformers compute it. The order of
micro-batches is a pure function of the seed, so a run resumed from a checkpoint repeats the
uninterrupted run exactly.

Multi-GPU: under `accelerate launch` (or torchrun) each process takes `grad_accum / world`
micro-batches of every step and DDP averages gradients; results match one process.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import resource
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from companion import atomic
from companion.character import Character
from companion.config import Settings
from companion.errors import CompanionError
from training.lora import checkpoints as ckpt
from training.lora.config import NON_SEMANTIC_FIELDS, TrainConfig
from training.lora.data import PreparedData, Renderer, prepare, shuffled
from training.lora.loss import PackedLoss, score
from training.lora.model import LoadedBase, attach_lora, load_base, write_adapter_metadata
from training.lora.packing import pack

REPORT_FILE = "training_report.json"
CONFIG_FILE = "train_config.json"
PLOT_FILE = "loss_curve.png"


class Progress(Protocol):
    def start(self, total_steps: int, first_step: int) -> None: ...
    def update(self, step: int, metrics: dict[str, Any]) -> None: ...
    def note(self, text: str) -> None: ...
    def finish(self) -> None: ...


class _LogProgress:
    def __init__(self, log: Callable[[str], None] = print) -> None:
        self.log = log

    def start(self, total_steps: int, first_step: int) -> None:
        self.log(f"training: steps {first_step + 1}..{total_steps}")

    def update(self, step: int, metrics: dict[str, Any]) -> None:
        pass

    def note(self, text: str) -> None:
        self.log(text)

    def finish(self) -> None:
        pass


@dataclass
class Plan:
    """Which samples each micro-batch of the whole run holds (a function of the seed only)."""

    micro_batches: list[list[int]]
    steps: int
    accum: int
    per_epoch: int

    @classmethod
    def build(cls, n_samples: int, config: TrainConfig) -> Plan:
        per_epoch = math.ceil(n_samples / config.batch_size)
        if config.max_steps:
            total = config.max_steps * config.grad_accum
        else:
            total = max(1, math.ceil(config.epochs * per_epoch))
        batches: list[list[int]] = []
        epoch = 0
        while len(batches) < total:
            order = shuffled(n_samples, config.seed, epoch)
            batches += [order[i : i + config.batch_size] for i in range(0, n_samples, config.batch_size)]
            epoch += 1
        batches = batches[:total]
        return cls(batches, math.ceil(total / config.grad_accum), config.grad_accum, per_epoch)

    def step_batches(self, step: int) -> list[list[int]]:
        return self.micro_batches[step * self.accum : (step + 1) * self.accum]

    def epoch_at(self, step: int) -> float:
        return min(len(self.micro_batches), step * self.accum) / self.per_epoch


def lr_factor(step: int, total: int, warmup: int, kind: str) -> float:
    """transformers' schedules (`get_cosine_schedule_with_warmup` & co.), for step 0, 1, ..."""
    if step < warmup:
        return step / max(1, warmup)
    if kind == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if kind == "linear":
        return max(0.0, 1.0 - progress)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def optimizer_step(optimizer: Any, params: list[Any], lr: float, max_grad_norm: float) -> float:
    """Set the learning rate, clip the gradients to `max_grad_norm` (0: no clipping), step and clear
    them; returns the gradient norm before clipping (nan when not clipped)."""
    import torch

    for group in optimizer.param_groups:
        group["lr"] = lr
    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_grad_norm)) if max_grad_norm > 0 else math.nan
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm


@dataclass
class Distributed:
    world: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def detect(cls) -> Distributed:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        import torch.distributed as dist
        from accelerate import PartialState

        PartialState()  # sets up the process group that `accelerate launch` / torchrun describe
        return cls(world=world, rank=dist.get_rank(), local_rank=int(os.environ.get("LOCAL_RANK", "0")))

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()


@dataclass
class TrainResult:
    adapter_dir: Path
    report: dict[str, Any]
    interrupted: bool = False
    history: dict[str, list] = field(default_factory=dict)


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 / (1024 if platform.system() == "Darwin" else 1)


def trainable_state(model: Any) -> dict[str, Any]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


class Trainer:
    def __init__(
        self,
        character: Character,
        settings: Settings,
        config: TrainConfig,
        *,
        out_dir: Path | None = None,
        progress: Progress | None = None,
        stop_after_step: int | None = None,
    ) -> None:
        self.character = character
        self.settings = settings
        self.config = config
        self.out_dir = out_dir or character.adapter_dir
        self.progress = progress or _LogProgress()
        self.stop_after_step = stop_after_step
        self.dist = Distributed.detect()
        self.checkpoint_dir = ckpt.checkpoint_root(settings.data_dir, character.id)
        self.base: LoadedBase | None = None
        self.data: PreparedData | None = None

    # -- setup -----------------------------------------------------------------------------
    def load(self) -> None:
        import torch

        config = self.config
        if config.threads:
            torch.set_num_threads(config.threads)
        if self.dist.world > 1 and config.grad_accum % self.dist.world:
            raise CompanionError(
                f"grad_accum ({config.grad_accum}) must be a multiple of the number of processes ({self.dist.world})"
            )
        device = config.device
        if self.dist.world > 1 and device in ("auto", "cuda"):
            device = f"cuda:{self.dist.local_rank}"
        self.base = load_base(
            config.model,
            self.settings.data_dir,
            device=device,
            precision=config.precision,
            quantization=config.quantization,
            on_status=self.progress.note,
        )
        renderer = Renderer.for_config(self.base.tokenizer, self.character.card, self.settings, config)
        self.data = prepare(
            self.character.folder,
            renderer,
            eval_fraction=config.eval_fraction,
            seed=config.seed,
            on_note=self.progress.note,
        )

    # -- the run ---------------------------------------------------------------------------
    def run(self, *, resume: bool = False, export_only: bool = False) -> TrainResult:
        """Train (or continue with `resume`). `export_only` writes the adapter from the latest
        checkpoint without training further: a run stopped early is still usable."""
        import torch

        if self.base is None:
            self.load()
        assert self.base is not None and self.data is not None
        config, data, base = self.config, self.data, self.base
        plan = Plan.build(len(data.train), config)
        warmup = math.ceil(config.warmup_ratio * plan.steps)

        checkpoint = self._resume_point() if resume or export_only else None
        if export_only and checkpoint is None:
            raise CompanionError(f"no checkpoint to export in {self.checkpoint_dir}")
        if checkpoint is None and self.dist.main:
            for old in ckpt.list_checkpoints(self.checkpoint_dir):
                shutil.rmtree(old, ignore_errors=True)
        torch.manual_seed(config.seed)
        model = attach_lora(base, config, gradient_checkpointing=config.gradient_checkpointing)
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            params,
            lr=config.learning_rate,
            betas=(config.adam_beta1, config.adam_beta2),
            eps=config.adam_epsilon,
            weight_decay=config.weight_decay,
        )
        loss_module: Any = PackedLoss(model, chunk=config.loss_chunk_tokens, autocast_dtype=base.precision.autocast)
        scorer = loss_module
        if self.dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            loss_module = DistributedDataParallel(loss_module, device_ids=[torch.device(base.device).index])

        history: dict[str, list] = {"train": [], "eval": []}
        clock = {"train_seconds": 0.0, "sample_tokens": 0, "row_tokens": 0, "target_tokens": 0}
        start_step = 0
        if checkpoint is not None:
            state = trainable_state(model)
            missing = set(state) ^ set(checkpoint.weights)
            if missing:
                raise CompanionError(
                    f"{checkpoint.folder / ckpt.WEIGHTS_FILE}: does not match this LoRA ({len(missing)} tensors differ)"
                )
            with torch.no_grad():
                for name, param in state.items():
                    param.copy_(checkpoint.weights[name].to(param.dtype))
            optimizer.load_state_dict(checkpoint.optimizer)
            ckpt.restore_rng(checkpoint.rng)
            history = checkpoint.state["history"]
            clock.update(checkpoint.state["clock"])
            start_step = checkpoint.step
            self.progress.note(f"resuming from {checkpoint.folder} (step {start_step} of {plan.steps})")

        def evaluate(step: int) -> None:
            if not data.eval:
                return
            result = score(scorer, data.eval, batch_size=max(config.batch_size, 8), share_prefix=config.share_prefix)
            history["eval"].append({"step": step, **result.as_dict()})

        def save(step: int) -> None:
            if self.dist.main:
                ckpt.save_checkpoint(
                    self.checkpoint_dir,
                    step,
                    weights=trainable_state(model),
                    optimizer=optimizer.state_dict(),
                    state={
                        "config": config.model_dump(),
                        "config_fingerprint": config.fingerprint(),
                        "data_hash": data.data_hash,
                        "history": history,
                        "clock": clock,
                    },
                    keep=config.keep_checkpoints,
                )
            self.dist.barrier()

        if start_step == 0 and not history["eval"] and config.eval_at_start:
            evaluate(0)  # the base model's held-out loss: where the curve starts
        self.progress.start(plan.steps, start_step)
        saved_at = start_step
        completed = start_step
        updating = False
        try:
            for step in range(start_step, start_step if export_only else plan.steps):
                step_started = time.perf_counter()
                batches = [
                    pack([data.train[i] for i in ids], share_prefix=config.share_prefix)
                    for ids in plan.step_batches(step)
                ]
                step_targets = sum(b.n_targets for b in batches)
                mine = batches[self.dist.rank :: self.dist.world]
                loss_sum = 0.0
                for index, batch in enumerate(mine):
                    batch = batch.to(base.device)
                    sync = self.dist.world == 1 or index == len(mine) - 1
                    with contextlib.nullcontext() if sync else loss_module.no_sync():
                        nll = loss_module(batch)
                        (nll.sum() * (self.dist.world / max(1, step_targets))).backward()
                    loss_sum += float(nll.detach().sum())
                if self.dist.world > 1:
                    loss_sum = self._all_sum(loss_sum, base.device)
                factor = lr_factor(step, plan.steps, warmup, config.lr_scheduler)
                updating = True
                grad_norm = optimizer_step(optimizer, params, config.learning_rate * factor, config.max_grad_norm)
                completed = step + 1
                updating = False
                clock["train_seconds"] += time.perf_counter() - step_started
                clock["sample_tokens"] += sum(b.sample_tokens for b in batches)
                clock["row_tokens"] += sum(b.row_tokens for b in batches)
                clock["target_tokens"] += step_targets
                train_loss = loss_sum / max(1, step_targets)
                if completed % config.log_every == 0 or completed == plan.steps:
                    history["train"].append(
                        {
                            "step": completed,
                            "loss": train_loss,
                            "lr": config.learning_rate * factor,
                            "grad_norm": grad_norm,
                            "epoch": plan.epoch_at(completed),
                        }
                    )
                if config.eval_every and completed % config.eval_every == 0 and completed != plan.steps:
                    evaluate(completed)
                if config.save_every and completed % config.save_every == 0 and completed != plan.steps:
                    save(completed)
                    saved_at = completed
                self.progress.update(completed, self._live_metrics(train_loss, history, clock))
                if self.stop_after_step is not None and completed >= self.stop_after_step:
                    raise _Stop()
        except _Stop:
            self.progress.finish()
            return TrainResult(self.out_dir, {}, interrupted=True, history=history)
        except KeyboardInterrupt:
            self.progress.finish()
            if not updating and completed > max(start_step, saved_at):
                save(completed)
                self.progress.note(f"interrupted: checkpoint saved at step {completed}; continue with --resume")
            raise
        self.progress.finish()
        evaluate(completed)
        report = self._report(plan, completed, history, clock, checkpoint.step if checkpoint else None, warmup)
        if completed < plan.steps:
            report["metrics"]["stopped_at_step"] = completed
            report["data"]["notes"].append(f"exported from the checkpoint at step {completed} of {plan.steps}")
        if self.dist.main:
            self._write_adapter(model, report, history)
        self.dist.barrier()
        return TrainResult(self.out_dir, report, history=history)

    def _all_sum(self, value: float, device: str) -> float:
        import torch
        import torch.distributed as dist

        tensor = torch.tensor([value], device=device)
        dist.all_reduce(tensor)
        return float(tensor)

    def _resume_point(self) -> ckpt.Checkpoint | None:
        assert self.data is not None
        checkpoint = ckpt.latest_checkpoint(self.checkpoint_dir, on_warning=self.progress.note)
        if checkpoint is None:
            self.progress.note(f"no checkpoint in {self.checkpoint_dir}: starting from the beginning")
            return None
        state_file = checkpoint.folder / ckpt.STATE_FILE
        saved = checkpoint.state.get("config", {})
        current = self.config.model_dump()
        differs = sorted(k for k in current if k not in NON_SEMANTIC_FIELDS and saved.get(k) != current[k])
        if differs:
            changes = ", ".join(f"{k}: {saved.get(k)!r} -> {current[k]!r}" for k in differs)
            raise CompanionError(
                f"{state_file}: the checkpoint was made with other settings ({changes}); "
                "use the same flags, or train without --resume to start over"
            )
        if checkpoint.state.get("data_hash") != self.data.data_hash:
            raise CompanionError(f"{state_file}: the dataset changed since this checkpoint; train without --resume")
        return checkpoint

    @staticmethod
    def _live_metrics(train_loss: float, history: dict, clock: dict) -> dict[str, Any]:
        seconds = max(1e-9, clock["train_seconds"])
        return {
            "loss": train_loss,
            "eval_loss": history["eval"][-1]["loss"] if history["eval"] else None,
            "tokens_per_s": clock["sample_tokens"] / seconds,
            "row_tokens_per_s": clock["row_tokens"] / seconds,
        }

    # -- output ----------------------------------------------------------------------------
    def _report(
        self, plan: Plan, done: int, history: dict, clock: dict, resumed_from: int | None, warmup: int
    ) -> dict[str, Any]:
        import peft
        import torch
        import transformers

        assert self.base is not None and self.data is not None
        seconds = max(1e-9, clock["train_seconds"])
        evals = history["eval"]
        first = evals[0] if evals and evals[0]["step"] == 0 else {}
        last = evals[-1] if evals else {}
        metrics: dict[str, Any] = {
            "steps": done,
            "planned_steps": plan.steps,
            "warmup_steps": warmup,
            "epochs": plan.epoch_at(done),
            "final_train_loss": history["train"][-1]["loss"] if history["train"] else None,
            "eval_loss_base": first.get("loss"),
            "eval_loss": last.get("loss"),
            "eval_lines_perplexity_base": first.get("lines_perplexity"),
            "eval_lines_perplexity": last.get("lines_perplexity"),
            "train_seconds": clock["train_seconds"],
            "sample_tokens": clock["sample_tokens"],
            "computed_tokens": clock["row_tokens"],
            "learned_tokens": clock["target_tokens"],
            "tokens_per_second": clock["sample_tokens"] / seconds,
            "computed_tokens_per_second": clock["row_tokens"] / seconds,
            "seconds_per_step": seconds / max(1, done),
            "peak_rss_mb": peak_rss_mb(),
        }
        if metrics["eval_lines_perplexity_base"] and metrics["eval_lines_perplexity"]:
            metrics["eval_lines_perplexity_reduction"] = (
                1 - metrics["eval_lines_perplexity"] / metrics["eval_lines_perplexity_base"]
            )
        return {
            "character": self.character.id,
            "base_model": self.base.base_name,
            "config": self.config.model_dump(),
            "config_fingerprint": self.config.fingerprint(),
            "data": self.data.summary(),
            "metrics": metrics,
            "history": history,
            "resumed_from_step": resumed_from,
            "environment": {
                "device": self.base.device,
                "precision": self.base.precision.name,
                "threads": torch.get_num_threads(),
                "processes": self.dist.world,
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "peft": peft.__version__,
                "python": platform.python_version(),
                "machine": platform.machine(),
            },
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }

    def _write_adapter(self, model: Any, report: dict[str, Any], history: dict) -> None:
        """The adapter and its report appear together or not at all."""
        import json

        from training.lora.report import plot_losses, render_training_readme

        assert self.base is not None
        with atomic.staged_dir(self.out_dir, replace=True) as staging:
            model.save_pretrained(str(staging), safe_serialization=True)
            (staging / "README.md").unlink(missing_ok=True)  # peft's generic model card
            write_adapter_metadata(staging, self.base)
            (staging / REPORT_FILE).write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")
            (staging / CONFIG_FILE).write_text(
                json.dumps(self.config.model_dump(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
            )
            plot_losses(history, staging / PLOT_FILE, title=f"{self.character.card.name}: LoRA training")
            (staging / "README.md").write_text(render_training_readme(report), encoding="utf-8")
            staging.chmod(0o755)  # a shareable folder, not a private temporary one
            for file in staging.iterdir():
                file.chmod(0o644)


class _Stop(Exception):
    """Raised by the test hook `stop_after_step`: ends the run as a kill would (no final save)."""


def train(
    character: Character,
    settings: Settings,
    config: TrainConfig,
    *,
    resume: bool = False,
    out_dir: Path | None = None,
    progress: Progress | None = None,
) -> TrainResult:
    return Trainer(character, settings, config, out_dir=out_dir, progress=progress).run(resume=resume)
