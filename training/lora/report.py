"""The human-readable side of a training run: the loss plot and the adapter's README."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_losses(history: dict[str, list], path: Path, *, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    train = history.get("train", [])
    if train:
        steps = [p["step"] for p in train]
        losses = [p["loss"] for p in train]
        ax.plot(steps, losses, color="#9ab", linewidth=1, label="train loss (per step)")
        window = max(1, len(losses) // 20)
        if window > 1:
            smooth = [
                sum(losses[max(0, i - window + 1) : i + 1]) / len(losses[max(0, i - window + 1) : i + 1])
                for i in range(len(losses))
            ]
            ax.plot(steps, smooth, color="#247", linewidth=1.6, label=f"train loss ({window}-step mean)")
    evals = history.get("eval", [])
    if evals:
        ax.plot([p["step"] for p in evals], [p["loss"] for p in evals], "o-", color="#c52", label="held-out loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats / learned token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _fmt(value: Any, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def render_training_readme(report: dict[str, Any]) -> str:
    m = report["metrics"]
    c = report["config"]
    d = report["data"]
    env = report["environment"]
    train, held = d["splits"]["train"], d["splits"]["eval"]
    lines = [
        f"# LoRA adapter for {report['character']}",
        "",
        f"Base model `{report['base_model']}`; trained by `companion train {report['character']}` "
        f"on {env['device']} ({env['precision']}, {env['threads']} threads, {env['processes']} process(es)).",
        "",
        "| | |",
        "|---|---|",
        f"| LoRA | r={c['lora_rank']}, alpha={c['lora_alpha']:g}, dropout={c['lora_dropout']:g}, "
        f"targets {c['lora_targets']} |",
        f"| schedule | {m['steps']} steps ({m['epochs']:.2f} epochs), "
        f"batch {c['batch_size']} x accum {c['grad_accum']}, "
        f"lr {c['learning_rate']:g} {c['lr_scheduler']}, warmup {m['warmup_steps']} steps |",
        f"| data | {train['samples']} train / {held['samples']} held-out samples ({d['origin']}), "
        f"system prompt: {d['system_prompt']}, data hash `{d['data_hash']}` |",
        f"| held-out loss | {_fmt(m['eval_loss_base'])} (base) -> {_fmt(m['eval_loss'])} |",
        f"| held-out perplexity of her lines | {_fmt(m['eval_lines_perplexity_base'], '.2f')} (base) -> "
        f"{_fmt(m['eval_lines_perplexity'], '.2f')}"
        + (
            f" ({m['eval_lines_perplexity_reduction']:.0%} lower) |" if "eval_lines_perplexity_reduction" in m else " |"
        ),
        f"| final train loss | {_fmt(m['final_train_loss'])} |",
        f"| throughput | {m['tokens_per_second']:.0f} tokens/s of the samples as written; prefix sharing computed "
        f"{m['computed_tokens'] / max(1, m['sample_tokens']):.0%} of them "
        f"({m['computed_tokens_per_second']:.0f} tokens/s); "
        f"{m['seconds_per_step']:.1f} s/step, {m['train_seconds'] / 60:.1f} min |",
        f"| peak memory | {m['peak_rss_mb']:.0f} MB RSS |",
        "",
        "![loss curves](loss_curve.png)",
        "",
    ]
    if d["notes"]:
        lines += ["Notes:", *[f"- {n}" for n in d["notes"]], ""]
    lines += [
        "Files: `adapter_config.json` + `adapter_model.safetensors` (PEFT LoRA), `companion_adapter.json` (its base), "
        "`training_report.json` (metrics, "
        "history, exact config, data hash, versions), `train_config.json` (reusable with "
        "`companion train --config-file`), "
        "`loss_curve.png`; `eval.md` / `eval.json` after `companion eval`.",
        "",
    ]
    return "\n".join(lines)
