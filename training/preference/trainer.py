"""`companion train ID --method dpo`: DPO on preference pairs, on top of her SFT adapter.

Built on the LoRA trainer's pieces: the same base-model loading and precision, the chat
template rendering of `companion chat` (`Renderer`), packing (both answers of a pair share the
prompt: the prompt is computed once per micro-batch) and the chunked output-layer loss. The
sigmoid DPO loss, per pair: -log sigmoid(beta * ((pc - rc) - (pr - rr))), with p/r the summed
log-probabilities of the chosen/rejected answers under the policy and the reference.

The policy starts as her SFT adapter (trainable); the reference is the same adapter frozen,
so its log-probabilities are computed once, up front. The new adapter replaces hers in one
folder swap, with the SFT adapter kept inside it as `reference/` (a second DPO run starts again
from that), `preference_report.json` (accuracy before/after) and `dpo_config.json`.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from companion import atomic
from companion.character import Character
from companion.config import Settings
from companion.errors import CompanionError, InputFileError
from companion.llm.embedded import EMBEDDED_MODELS
from companion.llm.local import check_adapter_matches
from training.lora.config import TrainConfig
from training.lora.data import Renderer, SplitStats
from training.lora.loss import PackedLoss
from training.lora.model import (
    ADAPTER_CONFIG,
    ADAPTER_INFO,
    ADAPTER_WEIGHTS,
    LoadedBase,
    attach_lora,
    load_base,
    write_adapter_metadata,
)
from training.lora.trainer import Plan, Progress, _LogProgress, lr_factor, optimizer_step, peak_rss_mb
from training.preference.config import DPOConfig
from training.preference.data import PairSample, find_pairs, read_pairs, split_pairs, tokenize_pairs
from training.preference.evaluate import (
    CONFIG_FILE,
    REFERENCE_DIR,
    REPORT_FILE,
    lengths,
    metrics,
    pair_logps,
    sequence_logps,
)

SFT_FILES = ("train_config.json", "training_report.json", "loss_curve.png")


def start_adapter(folder: Path) -> Path | None:
    """The SFT adapter DPO starts from: the folder's `reference/` when it is already a DPO adapter."""
    if (folder / REFERENCE_DIR / ADAPTER_CONFIG).is_file():
        return folder / REFERENCE_DIR
    if (folder / ADAPTER_CONFIG).is_file():
        return folder
    return None


def resolve_model(adapter: Path | None, requested: str | None) -> str:
    """The base model: asked for, else what the adapter was trained on, else the default."""
    if requested:
        return requested
    if adapter is not None:
        for candidate in (adapter, adapter.parent if adapter.name == REFERENCE_DIR else adapter):
            try:
                recorded = str(json.loads((candidate / ADAPTER_CONFIG).read_text(encoding="utf-8")).get(
                    "base_model_name_or_path") or "")  # fmt: skip
            except (FileNotFoundError, json.JSONDecodeError):
                continue
            if recorded in EMBEDDED_MODELS or Path(recorded).is_dir():
                return recorded
        config = adapter / "train_config.json"
        if config.is_file():
            return TrainConfig.from_file(config).model
    return TrainConfig().model


@dataclass
class DPOResult:
    adapter_dir: Path
    report: dict[str, Any]
    history: dict[str, list] = field(default_factory=dict)


class DPOTrainer:
    def __init__(
        self,
        character: Character,
        settings: Settings,
        config: DPOConfig,
        *,
        pairs_files: list[Path] | None = None,
        out_dir: Path | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.character = character
        self.settings = settings
        self.config = config
        self.out_dir = out_dir or character.adapter_dir
        self.pairs_files = pairs_files
        self.progress = progress or _LogProgress()
        self.start = start_adapter(character.adapter_dir)
        self.base: LoadedBase | None = None
        self.notes: list[str] = []

    def load(self) -> tuple[list[PairSample], list[PairSample]]:
        import torch

        config = self.config
        if config.threads:
            torch.set_num_threads(config.threads)
        files = self.pairs_files or find_pairs(self.character.folder)
        pairs = [p for f in files for p in read_pairs(f)]
        self.files = files
        model_name = resolve_model(self.start, config.model)
        self.model_name = model_name
        if self.start is None:
            self.notes.append(f"no SFT adapter in {self.character.adapter_dir}: DPO trains a fresh LoRA on the base")
        elif self.start.name == REFERENCE_DIR:
            self.notes.append(f"the adapter is already a DPO adapter: starting again from its SFT adapter {self.start}")
        self.base = load_base(
            model_name, self.settings.data_dir, device=config.device, precision=config.precision,
            on_status=self.progress.note,
        )  # fmt: skip
        renderer = Renderer.for_config(self.base.tokenizer, self.character.card, self.settings, config)
        train_pairs, eval_pairs = split_pairs(pairs, config.eval_fraction, config.seed)
        self.stats = {"train": SplitStats(), "eval": SplitStats()}
        train = tokenize_pairs(train_pairs, renderer, self.stats["train"])
        held = tokenize_pairs(eval_pairs, renderer, self.stats["eval"])
        skipped = len(train_pairs) - len(train) + len(eval_pairs) - len(held)
        if skipped:
            self.notes.append(f"{skipped} pairs had no answer left within max_length={config.max_length}: skipped")
        if not train:
            raise InputFileError(files[0], "no usable preference pairs (every answer was cut by max_length?)")
        if not held:
            self.notes.append("too few pairs for a held-out split: accuracy is measured on the training pairs")
        for note in self.notes:
            self.progress.note(note)
        return train, held

    def _policy(self) -> Any:
        import torch
        from peft import PeftModel

        assert self.base is not None
        if self.start is None:
            torch.manual_seed(self.config.seed)
            lora = TrainConfig(
                model=self.model_name,
                lora_rank=self.config.lora_rank,
                lora_alpha=self.config.lora_alpha,
                lora_dropout=self.config.lora_dropout,
                lora_targets=self.config.lora_targets,
            )
            self.lora_config = lora
            return attach_lora(self.base, lora)
        check_adapter_matches(self.start / ADAPTER_CONFIG, self.model_name, self.base.model.config)
        try:
            model = PeftModel.from_pretrained(self.base.model, str(self.start), is_trainable=True)
        except (RuntimeError, ValueError, OSError, KeyError) as error:
            raise InputFileError(self.start / ADAPTER_WEIGHTS, f"adapter does not load: {error}") from None
        self.lora_config = None
        return model

    def run(self) -> DPOResult:
        import torch

        train, held = self.load()
        assert self.base is not None
        config, base = self.config, self.base
        plan = Plan.build(len(train), config)  # type: ignore[arg-type]  (batch_size, grad_accum, epochs, ...)
        warmup = math.ceil(config.warmup_ratio * plan.steps)
        model = self._policy()
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise CompanionError("the adapter has no trainable weights")
        optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
        loss_module = PackedLoss(model, chunk=config.loss_chunk_tokens, autocast_dtype=base.precision.autocast)
        measured = held or train
        self.progress.note(f"reference log-probabilities of {len(train)} training and {len(held)} held-out pairs")
        started = time.perf_counter()
        ref_train = pair_logps(loss_module, train, share_prefix=config.share_prefix)
        ref_measured = pair_logps(loss_module, held, share_prefix=config.share_prefix) if held else ref_train
        with model.disable_adapter():
            base_measured = pair_logps(loss_module, measured, share_prefix=config.share_prefix)
        sizes = lengths(measured)
        before = metrics(ref_measured, sizes)
        history: dict[str, list] = {"train": [], "eval": []}
        history["eval"].append(
            {"step": 0, "loss": math.log(2), **metrics(ref_measured, sizes, ref_measured, config.beta)}
        )
        clock = {"train_seconds": 0.0, "tokens": 0}
        self.progress.start(plan.steps, 0)
        for step in range(plan.steps):
            step_started = time.perf_counter()
            micro = plan.step_batches(step)
            n_pairs = sum(len(ids) for ids in micro)
            loss_sum = correct = margin_sum = 0.0
            for ids in micro:
                samples = [s for i in ids for s in (train[i].chosen, train[i].rejected)]
                logps = sequence_logps(loss_module, samples, share_prefix=config.share_prefix).view(-1, 2)
                ref = ref_train[ids].to(logps.device, logps.dtype)
                margin = config.beta * ((logps[:, 0] - ref[:, 0]) - (logps[:, 1] - ref[:, 1]))
                ls = config.label_smoothing
                loss = -(
                    torch.nn.functional.logsigmoid(margin) * (1 - ls) + torch.nn.functional.logsigmoid(-margin) * ls
                )
                (loss.sum() / n_pairs).backward()
                loss_sum += float(loss.detach().sum())
                correct += float((margin.detach() > 0).sum())
                margin_sum += float(margin.detach().sum())
                clock["tokens"] += sum(len(s) for s in samples)
            factor = lr_factor(step, plan.steps, warmup, config.lr_scheduler)
            grad_norm = optimizer_step(optimizer, params, config.learning_rate * factor, config.max_grad_norm)
            clock["train_seconds"] += time.perf_counter() - step_started
            done = step + 1
            if done % config.log_every == 0 or done == plan.steps:
                history["train"].append(
                    {"step": done, "loss": loss_sum / n_pairs, "reward_accuracy": correct / n_pairs,
                     "margin": margin_sum / n_pairs, "lr": config.learning_rate * factor, "grad_norm": grad_norm}
                )  # fmt: skip
            seconds = max(1e-9, clock["train_seconds"])
            self.progress.update(
                done, {"loss": loss_sum / n_pairs, "eval_loss": None, "tokens_per_s": clock["tokens"] / seconds}
            )
        self.progress.finish()
        after_logps = pair_logps(loss_module, measured, share_prefix=config.share_prefix)
        after = metrics(after_logps, sizes, ref_measured, config.beta)
        history["eval"].append({"step": plan.steps, "loss": after["dpo_loss"], **after})
        report = {
            "character": self.character.id,
            "method": "dpo",
            "base_model": base.base_name,
            "start_adapter": str(self.start) if self.start else None,
            "config": config.model_dump(),
            "data": {
                "files": [str(f) for f in self.files],
                "pairs": {"train": len(train), "eval": len(held)},
                "measured_on": "held-out pairs" if held else "training pairs",
                "notes": self.notes,
            },
            "metrics": {
                "steps": plan.steps,
                "train_seconds": clock["train_seconds"],
                "seconds_per_step": clock["train_seconds"] / max(1, plan.steps),
                "reference_seconds": time.perf_counter() - started - clock["train_seconds"],
                "tokens_per_second": clock["tokens"] / max(1e-9, clock["train_seconds"]),
                "final_train_loss": history["train"][-1]["loss"] if history["train"] else None,
                "base": metrics(base_measured, sizes),
                "before": before,
                "after": after,
                "peak_rss_mb": peak_rss_mb(),
            },
            "history": history,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        self._write(model, report, history)
        return DPOResult(self.out_dir, report, history)

    def _write(self, model: Any, report: dict[str, Any], history: dict) -> None:
        from training.lora.report import plot_losses

        assert self.base is not None
        with atomic.staged_dir(self.out_dir, replace=True) as staging:
            model.save_pretrained(str(staging), safe_serialization=True)
            (staging / "README.md").unlink(missing_ok=True)
            write_adapter_metadata(staging, self.base, method="dpo")
            if self.start is not None:
                reference = staging / REFERENCE_DIR
                reference.mkdir()
                for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS, ADAPTER_INFO):
                    if (self.start / name).is_file():
                        shutil.copy2(self.start / name, reference / name)
                sft_folder = self.start.parent if self.start.name == REFERENCE_DIR else self.start
                for name in SFT_FILES:
                    if (sft_folder / name).is_file():
                        shutil.copy2(sft_folder / name, staging / name)
            elif self.lora_config is not None:
                (staging / "train_config.json").write_text(
                    json.dumps(self.lora_config.model_dump(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
                )
            (staging / REPORT_FILE).write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")
            (staging / CONFIG_FILE).write_text(self.config.model_dump_json(indent=2) + "\n", encoding="utf-8")
            plot_losses(history, staging / "dpo_loss_curve.png", title=f"{self.character.card.name}: DPO")
            (staging / "README.md").write_text(render_readme(report), encoding="utf-8")


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def render_readme(report: dict[str, Any]) -> str:
    m = report["metrics"]
    b, before, after = m["base"], m["before"], m["after"]
    start = "her SFT adapter (kept in `reference/`)" if report["start_adapter"] else "a fresh LoRA on the base model"
    lines = [
        f"# DPO adapter for {report['character']}",
        "",
        f"Base model `{report['base_model']}`; `companion train {report['character']} --method dpo` from {start}, "
        f"beta {report['config']['beta']}, {m['steps']} steps on {report['data']['pairs']['train']} pairs "
        f"({m['train_seconds']:.0f} s).",
        "",
        f"Preference accuracy on {after['pairs']} {report['data']['measured_on']} (chosen answer more likely):",
        "",
        "| | base | before (reference) | after (DPO) |",
        "|---|---|---|---|",
        f"| accuracy | {_pct(b['accuracy'])} | {_pct(before['accuracy'])} | {_pct(after['accuracy'])} |",
        f"| length-neutral accuracy | {_pct(b['token_accuracy'])} | {_pct(before['token_accuracy'])} | "
        f"{_pct(after['token_accuracy'])} |",
        f"| DPO reward accuracy / loss | | 50% / {math.log(2):.3f} (by definition) | "
        f"{_pct(after['reward_accuracy'])} / {after['dpo_loss']:.3f} |",
        "",
    ]
    lines += [f"- note: {n}" for n in report["data"]["notes"]]
    return "\n".join(lines) + "\n"


def train_dpo(character: Character, settings: Settings, config: DPOConfig, **options: Any) -> DPOResult:
    """`DPOTrainer(...).run()`; `options` are the trainer's keywords (pairs_files, out_dir, progress)."""
    return DPOTrainer(character, settings, config, **options).run()
