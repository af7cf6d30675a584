"""Training checkpoints: everything needed to continue a run to the same result.

    <data_dir>/training/<character>/checkpoints/step-000040/
        lora.safetensors    trainable weights (float32)
        optimizer.pt        AdamW moments
        rng.pt              torch / python RNG states (dropout, anything random)
        state.json          step, config, data hash, the loss history so far

Each checkpoint is written to a temporary folder and renamed, so a kill mid-write leaves the
previous checkpoints intact. On resume a checkpoint that does not read back (a truncated file)
is reported by name and the one before it is used.
"""

from __future__ import annotations

import json
import logging
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from companion import atomic
from companion.errors import CompanionError, InputFileError

log = logging.getLogger(__name__)
STEP_DIR = re.compile(r"^step-(\d+)$")
STATE_FILE = "state.json"
WEIGHTS_FILE = "lora.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
RNG_FILE = "rng.pt"


@dataclass
class Checkpoint:
    folder: Path
    state: dict[str, Any]
    weights: dict[str, Any]
    optimizer: dict[str, Any]
    rng: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.state["step"])


def checkpoint_root(data_dir: Path, character_id: str) -> Path:
    return data_dir / "training" / character_id / "checkpoints"


def list_checkpoints(root: Path) -> list[Path]:
    """Step folders, newest first (temporary and half-written folders are not listed)."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def rng_state() -> dict[str, Any]:
    import torch

    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    root: Path, step: int, *, weights: dict[str, Any], optimizer: dict[str, Any], state: dict[str, Any], keep: int
) -> Path:
    import torch
    from safetensors.torch import save_file

    folder = root / f"step-{step:06d}"
    with atomic.staged_dir(folder, replace=True) as staging:
        save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, str(staging / WEIGHTS_FILE))
        torch.save(optimizer, staging / OPTIMIZER_FILE)
        torch.save(rng_state(), staging / RNG_FILE)
        (staging / STATE_FILE).write_text(json.dumps({**state, "step": step}, indent=1), encoding="utf-8")
    for old in list_checkpoints(root)[keep:]:
        shutil.rmtree(old, ignore_errors=True)
    return folder


def read_checkpoint(folder: Path) -> Checkpoint:
    """Load one checkpoint; any unreadable part raises InputFileError naming that file."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    state_file = folder / STATE_FILE
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
        int(state["step"])
    except FileNotFoundError:
        raise InputFileError(state_file, "missing: incomplete checkpoint") from None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as error:
        raise InputFileError(state_file, f"corrupt checkpoint state ({error})") from None
    weights_file = folder / WEIGHTS_FILE
    try:
        weights = load_file(str(weights_file))
    except FileNotFoundError:
        raise InputFileError(weights_file, "missing: incomplete checkpoint") from None
    except (SafetensorError, OSError, ValueError) as error:
        raise InputFileError(weights_file, f"corrupt checkpoint weights ({error})") from None
    loaded = {}
    for name in (OPTIMIZER_FILE, RNG_FILE):
        path = folder / name
        try:
            loaded[name] = torch.load(path, map_location="cpu", weights_only=False)
        except FileNotFoundError:
            raise InputFileError(path, "missing: incomplete checkpoint") from None
        except Exception as error:  # torch.load raises many kinds on a truncated or garbled file
            raise InputFileError(path, f"corrupt checkpoint file ({type(error).__name__}: {error})") from None
    return Checkpoint(folder, state, weights, loaded[OPTIMIZER_FILE], loaded[RNG_FILE])


def latest_checkpoint(root: Path, *, on_warning=None) -> Checkpoint | None:
    """The newest checkpoint that reads back; broken ones are reported and skipped."""
    problems = []
    for folder in list_checkpoints(root):
        try:
            return read_checkpoint(folder)
        except InputFileError as error:
            problems.append(error)
            message = f"skipping a broken checkpoint: {error}"
            if on_warning:
                on_warning(message)
            log.warning(message)
    if problems:
        raise CompanionError(f"no usable checkpoint in {root}: " + "; ".join(str(p) for p in problems))
    return None
