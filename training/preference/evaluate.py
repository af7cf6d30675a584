"""How often a model ranks the preferred answer above the other: preference accuracy.

For each pair, the log-probability of each answer after the prompt (summed over its tokens and
its end-of-turn marker, rendered as in training). Reported:
- accuracy: share of pairs where log p(chosen) > log p(rejected);
- token_accuracy: the same on mean log-probability per token (length-neutral);
- against a reference (the SFT adapter): DPO loss, reward accuracy ((policy - reference) gap
  larger for chosen) and the mean reward margin beta * ((pc - rc) - (pr - rr)).

`companion eval` calls `attach_preference`: base, SFT (the DPO adapter's `reference/`) and
adapter accuracies on the held-out pairs, as a goal row and a note in the eval report, and
`preference_eval.json` beside the adapter.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from training.lora.loss import PackedLoss
from training.lora.packing import pack
from training.preference.data import PairSample

REFERENCE_DIR = "reference"
REPORT_FILE = "preference_report.json"
CONFIG_FILE = "dpo_config.json"


def sequence_logps(loss_module: PackedLoss, samples: list, *, share_prefix: bool = True) -> torch.Tensor:
    """Summed log-probability of each sample's learned tokens, one packed forward for all."""
    device = next(p for p in loss_module.model.parameters()).device
    batch = pack(samples, share_prefix=share_prefix).to(device)
    nll = loss_module(batch)
    parts = nll.split([s.n_targets for s in samples])
    return -torch.stack([part.sum() for part in parts])


@torch.no_grad()
def pair_logps(loss_module: PackedLoss, pairs: list[PairSample], *, batch_size: int = 4, share_prefix: bool = True):
    """[n, 2] log-probabilities (chosen, rejected), float64 on the CPU."""
    model = loss_module.model
    was_training = model.training
    model.eval()
    rows = []
    try:
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start : start + batch_size]
            samples = [s for p in chunk for s in (p.chosen, p.rejected)]
            rows.append(sequence_logps(loss_module, samples, share_prefix=share_prefix).double().cpu().view(-1, 2))
    finally:
        model.train(was_training)
    return torch.cat(rows) if rows else torch.zeros(0, 2, dtype=torch.float64)


def lengths(pairs: list[PairSample]) -> torch.Tensor:
    return torch.tensor([[p.chosen.n_targets, p.rejected.n_targets] for p in pairs], dtype=torch.float64)


def metrics(logps: torch.Tensor, sizes: torch.Tensor, reference: torch.Tensor | None = None, beta: float = 0.1):
    n = int(logps.shape[0])
    if n == 0:
        return {"pairs": 0}
    out: dict[str, Any] = {
        "pairs": n,
        "accuracy": float((logps[:, 0] > logps[:, 1]).double().mean()),
        "token_accuracy": float((logps[:, 0] / sizes[:, 0] > logps[:, 1] / sizes[:, 1]).double().mean()),
        "mean_logp_chosen": float(logps[:, 0].mean()),
        "mean_logp_rejected": float(logps[:, 1].mean()),
    }
    if reference is not None:
        margin = beta * ((logps[:, 0] - reference[:, 0]) - (logps[:, 1] - reference[:, 1]))
        out["dpo_loss"] = float(-torch.nn.functional.logsigmoid(margin).mean())
        out["reward_accuracy"] = float((margin > 0).double().mean())
        out["margin"] = float(margin.mean())
    return out


def attach_preference(result: Any, character: Any, settings: Any, *, adapter_dir: Path | None = None, on_status=None):
    """Add preference accuracy (base, SFT, adapter) to an `EvalResult` when she has preference pairs."""
    from companion.errors import InputFileError

    try:
        report = preference_eval(character, settings, adapter_dir=adapter_dir, on_status=on_status)
    except InputFileError as error:
        if "no preference pairs" in str(error):
            return None
        raise
    before = report.get("reference") or report["base"]
    after = report["adapter"]
    result.goals["preference_accuracy"] = {
        "value": after["accuracy"],
        "goal": before["accuracy"],
        "met": after["accuracy"] > before["accuracy"],
    }
    label = "SFT adapter" if report.get("reference") else "base"
    result.notes.append(
        f"preference accuracy on {after['pairs']} {report['split']} pairs: base {report['base']['accuracy']:.0%}, "
        + (f"SFT {report['reference']['accuracy']:.0%}, " if report.get("reference") else "")
        + f"adapter {after['accuracy']:.0%} (goal row: above the {label}); length-neutral "
        f"{before['token_accuracy']:.0%} -> {after['token_accuracy']:.0%}"
        + (f"; DPO reward accuracy {after['reward_accuracy']:.0%}" if "reward_accuracy" in after else "")
    )
    folder = Path(result.adapter_dir)
    (folder / "preference_eval.json").write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")
    return report


def preference_eval(
    character: Any, settings: Any, *, adapter_dir: Path | None = None, pairs_files=None, on_status=None
):
    """Preference accuracy of base, reference (SFT) and adapter on her pairs (held-out split when DPO made one)."""
    from training.lora.data import Renderer, SplitStats
    from training.lora.model import load_adapter, load_base
    from training.preference.config import DPOConfig
    from training.preference.data import find_pairs, read_pairs, split_pairs, tokenize_pairs
    from training.preference.trainer import resolve_model

    status = on_status or (lambda text: None)
    folder = adapter_dir or character.adapter_dir
    files = pairs_files or find_pairs(character.folder)
    config_file = folder / CONFIG_FILE
    config = DPOConfig.model_validate_json(config_file.read_text(encoding="utf-8")) if config_file.is_file() else None
    model_name = resolve_model(folder, config.model if config else None)
    status(f"preference accuracy: loading {model_name} and {folder}")
    base = load_base(model_name, settings.data_dir, device=config.device if config else "auto")
    dpo = config or DPOConfig()
    renderer = Renderer.for_config(base.tokenizer, character.card, settings, dpo)
    pairs = [p for f in files for p in read_pairs(f)]
    split = "all"
    if config is not None:
        _, held = split_pairs(pairs, config.eval_fraction, config.seed)
        if held:
            pairs, split = held, "held-out"
    samples = tokenize_pairs(pairs, renderer, SplitStats())
    model = load_adapter(base, folder, model_name=model_name)
    loss = PackedLoss(model, chunk=dpo.loss_chunk_tokens, autocast_dtype=base.precision.autocast)
    sizes = lengths(samples)
    adapter = pair_logps(loss, samples, share_prefix=dpo.share_prefix)
    with model.disable_adapter():
        base_logps = pair_logps(loss, samples, share_prefix=dpo.share_prefix)
    reference = None
    if (folder / REFERENCE_DIR / "adapter_config.json").is_file():
        model.load_adapter(str(folder / REFERENCE_DIR), adapter_name="reference")
        model.set_adapter("reference")
        reference = pair_logps(loss, samples, share_prefix=dpo.share_prefix)
        model.set_adapter("default")
    report = {
        "pairs_files": [str(f) for f in files],
        "split": split,
        "base": metrics(base_logps, sizes),
        "reference": metrics(reference, sizes) if reference is not None else None,
        "adapter": metrics(adapter, sizes, reference if reference is not None else base_logps, dpo.beta),
    }
    if not math.isfinite(report["adapter"].get("accuracy", 0.0)):
        report["note"] = "no pairs fit max_length"
    return report
