"""`companion train --method dpo` and preference accuracy in `companion eval`, on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from companion.cli import app


def invoke(*args: str, env: dict[str, str]):
    result = CliRunner().invoke(app, list(args), env=env)
    result.text = result.output + str(result.exception or "")
    return result


def test_train_dpo_then_eval(character, tiny_settings, tiny_model_dir: Path):
    env = {"COMPANION_CHARACTERS_DIR": str(character.folder.parent)}
    common = ["--data-dir", str(tiny_settings.data_dir)]
    shown = invoke("train", "tiny", "--method", "dpo", "--show-config", "--beta", "0.3", "--max-steps", "3", *common,
                   env=env)  # fmt: skip
    assert shown.exit_code == 0, shown.text
    config = json.loads(shown.stdout)
    assert config["beta"] == 0.3 and config["max_steps"] == 3
    bad = invoke("train", "tiny", "--method", "ppo", *common, env=env)
    assert bad.exit_code != 0 and "unknown training method" in bad.text
    trained = invoke(
        "train", "tiny", "--method", "dpo", "--model", str(tiny_model_dir), "--precision", "fp32", "--max-steps", "3",
        "--batch-size", "2", "--grad-accum", "1", "--learning-rate", "5e-3", "--eval-fraction", "0.25",
        "--eval-every", "5", *common, env=env,
    )  # fmt: skip
    assert trained.exit_code == 0, trained.text
    assert "DPO adapter written" in trained.stdout and "preference accuracy on 2 held-out pairs" in trained.stdout
    assert "not used by dpo: --eval-every" in trained.stdout
    evaluated = invoke("eval", "tiny", "--perplexity-only", "--json", *common, env=env)
    assert evaluated.exit_code == 0, evaluated.text
    data = json.loads(evaluated.stdout[evaluated.stdout.index("{") :])
    goal = data["goals"]["preference_accuracy"]
    assert 0 <= goal["value"] <= 1 and any("preference accuracy on 2 held-out pairs" in n for n in data["notes"])
    report = json.loads((character.adapter_dir / "preference_eval.json").read_text())
    assert report["split"] == "held-out" and report["reference"] is None and report["adapter"]["pairs"] == 2
