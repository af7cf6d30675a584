"""The `--method dpo` branch of `companion train` (companion/cli/train.py hands over to `train_dpo_command`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from companion.cli.common import console
from companion.errors import CompanionError


def train_dpo_command(
    character_id: str,
    settings: Any,
    *,
    method: str,
    beta: float | None,
    pairs: Path | None,
    out: Path | None,
    resume: bool,
    config_file: Path | None,
    show_config: bool,
    knobs: dict[str, Any],
    progress: Any,
) -> None:
    from companion.character import find_character
    from training.preference.config import SHARED_FIELDS, DPOConfig
    from training.preference.trainer import train_dpo

    if method != "dpo":
        raise CompanionError(f"unknown training method {method!r}: use sft or dpo")
    if resume:
        raise CompanionError("--resume is for SFT runs; a DPO run is short: run it again")
    given = {k: v for k, v in knobs.items() if v is not None}
    ignored = sorted(k for k in given if k not in SHARED_FIELDS)
    base = DPOConfig()
    if config_file is not None:
        import yaml
        from pydantic import ValidationError

        from companion.errors import InputFileError
        from training.lora.config import _describe

        try:
            data = yaml.safe_load(config_file.read_text(encoding="utf-8")) or {}
            base = DPOConfig.model_validate({k: v for k, v in data.items() if k in DPOConfig.model_fields})
        except FileNotFoundError:
            raise InputFileError(config_file, "training config not found") from None
        except ValidationError as error:
            raise InputFileError(config_file, _describe(error)) from None
    try:
        config = base.updated(**{k: v for k, v in given.items() if k in SHARED_FIELDS}, beta=beta)
    except Exception as error:
        raise CompanionError(f"dpo settings: {error}") from None
    if show_config:
        print(json.dumps(config.model_dump(), indent=2, ensure_ascii=False))
        return
    if ignored:
        console.print(f"[yellow]note:[/] not used by dpo: {', '.join('--' + k.replace('_', '-') for k in ignored)}")
    character = find_character(character_id, settings.character_search_path)
    result = train_dpo(
        character, settings, config, pairs_files=[pairs] if pairs else None, out_dir=out, progress=progress
    )
    m = result.report["metrics"]
    before, after = m["before"], m["after"]
    console.print(f"[bold green]DPO adapter written[/] to {result.adapter_dir}", highlight=False)
    console.print(
        f"preference accuracy on {after['pairs']} {result.report['data']['measured_on']}: "
        f"{before['accuracy']:.0%} -> {after['accuracy']:.0%} (length-neutral {before['token_accuracy']:.0%} -> "
        f"{after['token_accuracy']:.0%}); DPO reward accuracy {after['reward_accuracy']:.0%}, "
        f"loss {after['dpo_loss']:.3f}; {m['train_seconds']:.0f} s",
        highlight=False,
    )
    for note in result.report["data"]["notes"]:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
