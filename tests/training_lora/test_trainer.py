"""`companion train` on the tiny model: outputs, resume after a kill, bad checkpoints, atomicity."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from companion.errors import CompanionError
from companion.llm.local import check_adapter_matches
from training.lora.checkpoints import checkpoint_root, list_checkpoints
from training.lora.config import TrainConfig
from training.lora.trainer import Plan, Trainer, lr_factor

from .conftest import Quiet, make_character, make_settings

RESUME_STEPS = 6


def run(character, settings, config, out, *, resume=False, stop_after=None, progress=None):
    trainer = Trainer(
        character, settings, config, out_dir=out, progress=progress or Quiet(), stop_after_step=stop_after
    )
    return trainer.run(resume=resume)


def weights(folder: Path) -> dict:
    return load_file(str(folder / "adapter_model.safetensors"))


def assert_same_adapter(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert (wa[name] == wb[name]).all(), f"{name} differs"


@pytest.fixture(scope="module")
def reference(tmp_path_factory, model_data_dir, tiny_model_dir):
    """An uninterrupted run of RESUME_STEPS steps: what every resumed run must reproduce."""
    root = tmp_path_factory.mktemp("reference")
    character = make_character(root / "chars")
    settings = make_settings(root / "data", model_data_dir)
    config = resume_config(tiny_model_dir)
    result = run(character, settings, config, root / "adapter")
    return result


def resume_config(tiny_model_dir: Path) -> TrainConfig:
    return TrainConfig(
        model=str(tiny_model_dir),
        precision="fp32",
        max_steps=RESUME_STEPS,
        batch_size=3,
        grad_accum=2,
        learning_rate=5e-3,
        lora_dropout=0.1,  # randomness that must be restored on resume
        eval_every=3,
        save_every=2,
        eval_fraction=0.2,
    )


def test_training_writes_adapter_and_report(character, settings, tiny_config, tiny_model_dir):
    result = run(character, settings, tiny_config, character.adapter_dir)
    folder = character.adapter_dir
    assert character.has_adapter()
    names = {p.name for p in folder.iterdir()}
    assert {
        "adapter_config.json",
        "adapter_model.safetensors",
        "training_report.json",
        "train_config.json",
        "loss_curve.png",
        "README.md",
    } <= names
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tiny_model_dir.resolve())
    assert json.loads((folder / "companion_adapter.json").read_text())["base_architecture"] == "gemma3_text"
    assert config["r"] == 8 and config["lora_alpha"] == 16
    assert set(config["target_modules"]) == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    }
    from transformers import AutoConfig

    check_adapter_matches(
        folder / "adapter_config.json", str(tiny_model_dir), AutoConfig.from_pretrained(tiny_model_dir)
    )
    assert (folder / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert TrainConfig.from_file(folder / "train_config.json") == tiny_config
    report = json.loads((folder / "training_report.json").read_text())
    m = report["metrics"]
    assert report["config"] == tiny_config.model_dump() and report["data"]["data_hash"]
    assert m["steps"] == 4 and len(report["history"]["train"]) == 4
    assert [e["step"] for e in report["history"]["eval"]] == [0, 2, 4]
    assert m["eval_loss"] < m["eval_loss_base"]  # she learned something
    assert m["tokens_per_second"] > 0 and m["computed_tokens"] < m["sample_tokens"]  # the shared prefix paid off
    assert m["peak_rss_mb"] > 0
    assert result.report == report
    assert "LoRA adapter for tiny" in (folder / "README.md").read_text()
    assert not list((folder.parent).glob(".adapter.*"))  # no temporary folders left behind


def test_resume_after_interruption_reproduces_the_run(reference, tmp_path, model_data_dir, tiny_model_dir):
    character = make_character(tmp_path / "chars")
    settings = make_settings(tmp_path / "data", model_data_dir)
    config = resume_config(tiny_model_dir)
    stopped = run(character, settings, config, tmp_path / "out", stop_after=3)  # dies after step 3, saved at 2
    assert stopped.interrupted and not (tmp_path / "out").exists()
    assert [p.name for p in list_checkpoints(checkpoint_root(settings.data_dir, "tiny"))] == ["step-000002"]
    quiet = Quiet()
    resumed = run(character, settings, config, tmp_path / "out", resume=True, progress=quiet)
    assert any("resuming from" in n for n in quiet.notes) and quiet.steps[0] == 3
    assert_same_adapter(tmp_path / "out", reference.adapter_dir)
    assert resumed.history == reference.history
    assert resumed.report["resumed_from_step"] == 2


def test_ctrl_c_saves_a_checkpoint(reference, tmp_path, model_data_dir, tiny_model_dir):
    character = make_character(tmp_path / "chars")
    settings = make_settings(tmp_path / "data", model_data_dir)
    config = resume_config(tiny_model_dir)

    class CtrlC(Quiet):
        def update(self, step, metrics):
            if step == 3:
                raise KeyboardInterrupt

    progress = CtrlC()
    with pytest.raises(KeyboardInterrupt):
        run(character, settings, config, tmp_path / "out", progress=progress)
    assert any("checkpoint saved at step 3" in n for n in progress.notes)
    run(character, settings, config, tmp_path / "out", resume=True)
    assert_same_adapter(tmp_path / "out", reference.adapter_dir)


def test_corrupt_checkpoint_is_named_and_skipped(reference, tmp_path, model_data_dir, tiny_model_dir):
    character = make_character(tmp_path / "chars")
    settings = make_settings(tmp_path / "data", model_data_dir)
    config = resume_config(tiny_model_dir)
    run(character, settings, config, tmp_path / "out", stop_after=5)  # checkpoints at 2 and 4
    root = checkpoint_root(settings.data_dir, "tiny")
    broken = root / "step-000004" / "lora.safetensors"
    broken.write_bytes(broken.read_bytes()[:100])  # a kill mid-copy, a full disk...
    quiet = Quiet()
    run(character, settings, config, tmp_path / "out", resume=True, progress=quiet)
    assert any(str(broken) in n and "corrupt" in n for n in quiet.notes)
    assert_same_adapter(tmp_path / "out", reference.adapter_dir)  # continued from step 2 instead

    for folder in list_checkpoints(root):
        (folder / "optimizer.pt").write_bytes(b"garbage")
    with pytest.raises(CompanionError, match=r"optimizer\.pt"):
        run(character, settings, config, tmp_path / "out2", resume=True)


def test_resume_refuses_other_settings(tmp_path, model_data_dir, tiny_model_dir):
    character = make_character(tmp_path / "chars")
    settings = make_settings(tmp_path / "data", model_data_dir)
    config = resume_config(tiny_model_dir)
    run(character, settings, config, tmp_path / "out", stop_after=2)
    with pytest.raises(CompanionError, match=r"learning_rate: 0.005 -> 0.001") as info:
        run(character, settings, config.updated(learning_rate=1e-3), tmp_path / "out", resume=True)
    assert "state.json" in str(info.value)
    # watching/saving knobs may change
    run(character, settings, config.updated(eval_every=0, save_every=0), tmp_path / "out", resume=True)


def test_failed_run_leaves_the_existing_adapter_alone(character, settings, tiny_config, monkeypatch):
    folder = character.adapter_dir
    folder.mkdir()
    (folder / "adapter_config.json").write_text('{"old": true}')
    (folder / "notes.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    def broken_plot(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("training.lora.report.plot_losses", broken_plot)
    with pytest.raises(OSError, match="disk full"):
        run(character, settings, tiny_config.updated(max_steps=1), folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert [p.name for p in folder.parent.iterdir() if p.name.startswith(".adapter")] == []


def test_empty_dataset_fails_before_training(character, settings, tiny_config):
    data = character.folder / "corpus" / "dialogues" / "chat.jsonl"
    data.write_text("")
    with pytest.raises(CompanionError, match="empty dataset") as info:
        run(character, settings, tiny_config, character.adapter_dir)
    assert str(data) in str(info.value)
    assert not character.adapter_dir.exists()


def test_plan_and_schedule():
    config = TrainConfig(batch_size=4, grad_accum=2, epochs=2.0, seed=3)
    plan = Plan.build(10, config)
    assert plan.per_epoch == 3 and len(plan.micro_batches) == 6 and plan.steps == 3
    first_epoch = sorted(i for b in plan.micro_batches[:3] for i in b)
    assert first_epoch == list(range(10))  # each sample once per epoch
    assert plan.micro_batches == Plan.build(10, config).micro_batches  # a function of the seed
    assert Plan.build(10, config.updated(max_steps=7)).steps == 7
    assert lr_factor(0, 10, 2, "cosine") == 0.0 and lr_factor(2, 10, 2, "cosine") == 1.0
    assert lr_factor(6, 10, 2, "cosine") == pytest.approx(0.5)
    assert lr_factor(6, 10, 2, "linear") == pytest.approx(0.5) and lr_factor(9, 10, 2, "constant") == 1.0


def test_killed_process_resumes_to_the_same_adapter(reference, tmp_path, model_data_dir, tiny_model_dir):
    """A real SIGKILL of `companion train` mid-run, then `--resume` in a new run."""
    character = make_character(tmp_path / "chars")
    settings = make_settings(tmp_path / "data", model_data_dir)
    config = resume_config(tiny_model_dir).updated(max_steps=40)
    env = {
        **os.environ,
        "COMPANION_DATA_DIR": str(settings.data_dir),
        "COMPANION_CHARACTERS_DIR": str(tmp_path / "chars"),
        "HF_HUB_OFFLINE": "1",
    }
    flags = [
        "--model", str(tiny_model_dir), "--precision", "fp32", "--max-steps", "40", "--batch-size", "3",
        "--grad-accum", "2", "--learning-rate", "0.005", "--lora-dropout", "0.1", "--eval-every", "3",
        "--save-every", "2", "--eval-fraction", "0.2",
    ]  # fmt: skip
    command = [sys.executable, "-c", "from companion.cli import main; main()", "train", "tiny", *flags,
               "--out", str(tmp_path / "out")]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=tmp_path / "chars", env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    root = checkpoint_root(settings.data_dir, "tiny")
    deadline = time.monotonic() + 300
    while not (root / "step-000004").is_dir():
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "no checkpoint within 5 minutes"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "out").exists()
    done = {int(p.name.split("-")[1]) for p in list_checkpoints(root)}
    assert done and max(done) < 40
    run(character, settings, config, tmp_path / "out", resume=True)

    full_root = tmp_path / "full"
    uninterrupted = run(
        make_character(full_root / "chars"),
        make_settings(full_root / "data", model_data_dir),
        config,
        full_root / "out",
    )
    assert_same_adapter(tmp_path / "out", uninterrupted.adapter_dir)
