"""LoRA SFT side by side: `companion train` vs LLaMA-Factory, same everything, on this machine.

Same base (the converted Gemma-3-270M folder), same samples (a character's conversations
rendered once, in the chat layout, and handed to both as ShareGPT with the system prompt),
same LoRA (rank 8, alpha 16, dropout 0, every linear layer), batch, cutoff length, steps,
learning rate and schedule, bf16 autocast, one process each. Printed: training throughput
(tokens of the samples per second of training loop), peak RSS of the process, held-out
loss as each tool reports it and as one scorer computes it for both adapters, and ratios.

LLaMA-Factory lives in its own venv, made by this script on first use (see ../shared/models.md
for why the torchvision/torchaudio steps are needed on a CPU-only machine).

    python bench/train_vs_llamafactory.py --steps 4 --batch-size 2
    python bench/train_vs_llamafactory.py --setup-only      # just build the LLaMA-Factory venv
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
DEFAULT_VENV = REPO / ".data" / "bench" / "llamafactory-venv"
LLAMAFACTORY = "llamafactory==0.9.5"


# -- LLaMA-Factory venv ------------------------------------------------------------------------
def ensure_llamafactory(venv: Path) -> Path:
    cli = venv / "bin" / "llamafactory-cli"
    if cli.is_file():
        return cli
    print(f"creating {venv} with {LLAMAFACTORY} (once; a few minutes)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    constraints = venv / "constraints.txt"
    constraints.write_text("torch==2.13.0\ntorchvision==0.28.0\n")
    subprocess.run([*pip, "torch==2.13.0"], check=True)  # the CPU build first
    subprocess.run([*pip, "-c", str(constraints), LLAMAFACTORY], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "uninstall", "-q", "-y", "torchvision"], check=True)
    # LLaMA-Factory imports torchaudio unconditionally; its PyPI build's native libraries need CUDA,
    # and nothing on the text path uses them.
    subprocess.run([*pip, "--no-deps", "torchaudio==2.11.0"], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    for lib in (site / "torchaudio" / "lib").glob("*.so"):
        lib.unlink()
    return cli


# -- measuring a process -----------------------------------------------------------------------
def run_measured(command: list[str], env: dict[str, str], log: Path) -> tuple[int, float, float]:
    """(exit code, wall seconds, peak RSS in MB over the process and its children)."""
    started = time.perf_counter()
    with log.open("w") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        peak = 0
        while process.poll() is None:
            peak = max(peak, _tree_hwm_kb(process.pid))
            time.sleep(0.2)
    return process.returncode, time.perf_counter() - started, peak / 1024


def _tree_hwm_kb(pid: int) -> int:
    best = 0
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    best = max(best, int(line.split()[1]))
        except OSError:
            continue
    return best


# -- the shared dataset ------------------------------------------------------------------------
def export_dataset(args, work: Path) -> tuple[int, int, object]:
    """Render the character's conversations once; write them for both tools. Returns token counts."""
    from companion.character import find_character
    from companion.config import load_settings
    from training.lora.data import Renderer
    from training.lora.model import resolve_model_dir

    settings = load_settings(None, data_dir=Path(args.data_dir) if args.data_dir else None)
    character = find_character(args.character, settings.character_search_path)
    model_dir, _ = resolve_model_dir("gemma3-270m", settings.data_dir)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    renderer = Renderer(
        tokenizer,
        character.card,
        mode="chat" if args.layout == "chat" else "none",
        user_name=settings.user_name,
        budget_tokens=settings.max_context_tokens - settings.max_new_tokens,
        max_length=args.max_length,
    )
    from training.lora.data import find_dataset, read_files, split_by_hash

    files = find_dataset(character.folder)
    examples = read_files(files.train)
    train_examples, eval_examples = (
        (examples, read_files(files.eval)) if files.eval else split_by_hash(examples, 0.1, 42)
    )
    n_train = args.steps * args.batch_size
    train_examples, eval_examples = train_examples[:n_train], eval_examples[: args.eval_samples]

    def records(examples):
        out = []
        for example in examples:
            messages = renderer.messages(example)
            if messages is None:
                continue
            system = messages[0].content if messages[0].role == "system" else ""
            turns = messages[1:] if system else messages
            conversations = [{"from": "human" if m.role == "user" else "gpt", "value": m.content} for m in turns]
            out.append({"system": system, "conversations": conversations})
        return out

    train, evals = records(train_examples), records(eval_examples)
    lf = work / "lf_data"
    lf.mkdir()
    (lf / "train.json").write_text(json.dumps(train, ensure_ascii=False))
    (lf / "eval.json").write_text(json.dumps(evals, ensure_ascii=False))
    columns = {"messages": "conversations", "system": "system"}
    info = {
        name: {"file_name": f"{name}.json", "formatting": "sharegpt", "columns": columns} for name in ("train", "eval")
    }
    (lf / "dataset_info.json").write_text(json.dumps(info, indent=1))
    # ours: a character folder whose dataset carries the same rendered prompts
    ours = work / "chars" / "bench"
    (ours / "dataset").mkdir(parents=True)
    shutil.copy(character.folder / "card.yaml", ours / "card.yaml")
    for name, rows in (("train", train), ("eval", evals)):
        with (ours / "dataset" / f"{name}.jsonl").open("w") as handle:
            for row in rows:
                system = [{"from": "system", "value": row["system"]}] if row["system"] else []
                line = {"conversations": [*system, *row["conversations"]]}
                handle.write(json.dumps(line, ensure_ascii=False) + "\n")
    stats = SampleStats(renderer, train_examples)
    return stats.tokens, len(train), (model_dir, settings)


class SampleStats:
    def __init__(self, renderer, examples) -> None:
        from training.lora.data import SplitStats

        split = SplitStats()
        for example in examples:
            renderer.sample(example, split)
        self.tokens = split.tokens


# -- the two runs ------------------------------------------------------------------------------
def run_ours(args, work: Path, env: dict[str, str]) -> dict:
    out = work / "ours_adapter"
    command = [
        sys.executable, "-c", "from companion.cli import main; main()", "train", "bench",
        "--max-steps", str(args.steps), "--batch-size", str(args.batch_size), "--grad-accum", "1",
        "--learning-rate", str(args.lr), "--warmup-ratio", "0", "--lr-scheduler", "cosine",
        "--lora-rank", "8", "--lora-alpha", "16", "--lora-dropout", "0", "--lora-targets", "all-linear",
        "--max-length", str(args.max_length), "--system-prompt", "dataset" if args.layout == "chat" else "none",
        "--eval-every", "0", "--no-eval-at-start",
        "--save-every", "0", "--precision", "bf16", "--seed", "42", "--out", str(out),
    ]  # fmt: skip
    code, wall, rss = run_measured(command, {**env, "COMPANION_CHARACTERS_DIR": str(work / "chars")}, work / "ours.log")
    if code:
        raise SystemExit(f"companion train failed; see {work / 'ours.log'}")
    report = json.loads((out / "training_report.json").read_text())
    return {
        "adapter": str(out),
        "train_seconds": report["metrics"]["train_seconds"],
        "wall_seconds": wall,
        "peak_rss_mb": rss,
        "eval_loss_self": report["metrics"]["eval_loss"],
    }


def run_llamafactory(args, work: Path, env: dict[str, str], model_dir: Path) -> dict:
    cli = ensure_llamafactory(Path(args.venv))
    out = work / "lf_adapter"
    cfg = {
        "model_name_or_path": str(model_dir),
        "stage": "sft",
        "do_train": True,
        "do_eval": True,
        "finetuning_type": "lora",
        "lora_rank": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.0,
        "lora_target": "all",
        "dataset": "train",
        "eval_dataset": "eval",
        "dataset_dir": str(work / "lf_data"),
        "template": "gemma",
        "cutoff_len": args.max_length,
        "overwrite_cache": True,
        "preprocessing_num_workers": 1,
        "output_dir": str(out),
        "overwrite_output_dir": True,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "per_device_train_batch_size": args.batch_size,
        "per_device_eval_batch_size": 1,
        "gradient_accumulation_steps": 1,
        "learning_rate": args.lr,
        "num_train_epochs": 1,
        "max_steps": args.steps,
        "lr_scheduler_type": "cosine",
        "warmup_ratio": 0.0,
        "bf16": True,
        "use_cpu": True,
        "seed": 42,
        "ddp_timeout": 180000000,
    }
    (work / "lf.yaml").write_text(json.dumps(cfg, indent=1))  # JSON is YAML
    lf_env = {**env, "DISABLE_VERSION_CHECK": "1", "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    code, wall, rss = run_measured([str(cli), "train", str(work / "lf.yaml")], lf_env, work / "lf.log")
    if code:
        raise SystemExit(f"llamafactory-cli failed; see {work / 'lf.log'}")
    train = json.loads((out / "train_results.json").read_text())
    evals = json.loads((out / "eval_results.json").read_text())
    return {
        "adapter": str(out),
        "train_seconds": train["train_runtime"],
        "wall_seconds": wall,
        "peak_rss_mb": rss,
        "eval_loss_self": evals["eval_loss"],
    }


def score_adapters(adapters: dict[str, str], work: Path, data_dir: Path, mode: str) -> dict[str, float]:
    """Held-out loss of each adapter by one scorer (ours), on the bench's eval samples."""
    import torch

    from companion.character import Character
    from training.lora.data import Renderer, prepare
    from training.lora.loss import PackedLoss, score
    from training.lora.model import load_adapter, load_base

    character = Character.load(work / "chars" / "bench")
    results = {}
    for name, folder in adapters.items():
        base = load_base("gemma3-270m", data_dir, precision="bf16")
        model = load_adapter(base, Path(folder), model_name="gemma3-270m")
        renderer = Renderer(
            base.tokenizer, character.card, mode="dataset", user_name="User", budget_tokens=10**6, max_length=10**6
        )
        data = prepare(character.folder, renderer, eval_fraction=0, seed=0)
        results[name] = score(PackedLoss(model, autocast_dtype=torch.bfloat16), data.eval, batch_size=4).loss
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--character", default="mochi")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument(
        "--layout",
        choices=("chat", "plain"),
        default="chat",
        help="chat: samples as companion chat lays them out (persona + examples, ~1.6k tokens each); "
        "plain: the dialogue turns alone (short samples, no system prompt)",
    )
    parser.add_argument("--eval-samples", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--data-dir", default=os.environ.get("COMPANION_DATA_DIR"))
    parser.add_argument("--venv", default=str(DEFAULT_VENV))
    parser.add_argument("--setup-only", action="store_true", help="Build the LLaMA-Factory venv and exit.")
    parser.add_argument("--skip-llamafactory", action="store_true", help="Only run companion train.")
    parser.add_argument("--json", help="Write the figures here too.")
    args = parser.parse_args()
    if args.setup_only:
        print(ensure_llamafactory(Path(args.venv)))
        return
    from companion.paths import contain_library_caches

    work = Path(tempfile.mkdtemp(prefix="train-bench-"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if args.data_dir:
        env["COMPANION_DATA_DIR"] = args.data_dir
    sample_tokens, n_train, (model_dir, settings) = export_dataset(args, work)
    contain_library_caches(settings.data_dir)
    print(
        f"{n_train} training samples, {sample_tokens} tokens; {args.steps} steps of batch {args.batch_size}; "
        f"work dir {work}",
        flush=True,
    )
    results = {"ours": run_ours(args, work, env)}
    print(f"companion train: {results['ours']}", flush=True)
    if not args.skip_llamafactory:
        results["llamafactory"] = run_llamafactory(args, work, env, Path(model_dir))
        print(f"LLaMA-Factory:   {results['llamafactory']}", flush=True)
    mode = "dataset" if args.layout == "chat" else "none"
    scored = score_adapters({k: v["adapter"] for k, v in results.items()}, work, settings.data_dir, mode)
    for name, loss in scored.items():
        results[name]["eval_loss_same_scorer"] = loss
        results[name]["tokens_per_second"] = sample_tokens / results[name]["train_seconds"]
    print()
    print(f"{'':28}{'companion':>14}{'LLaMA-Factory':>16}{'ratio':>10}")
    rows = [
        ("training tokens/s", "tokens_per_second", "{:.1f}"),
        ("training seconds", "train_seconds", "{:.0f}"),
        ("peak RSS (MB)", "peak_rss_mb", "{:.0f}"),
        ("eval loss (own report)", "eval_loss_self", "{:.4f}"),
        ("eval loss (same scorer)", "eval_loss_same_scorer", "{:.4f}"),
    ]
    ratios = {}
    for label, key, fmt in rows:
        ours = results["ours"][key]
        theirs = results.get("llamafactory", {}).get(key)
        ratio = ours / theirs if theirs else None
        ratios[key] = ratio
        print(
            f"{label:28}{fmt.format(ours):>14}{(fmt.format(theirs) if theirs else '-'):>16}"
            f"{(f'{ratio:.2f}x' if ratio else '-'):>10}"
        )
    summary = {
        "samples": n_train,
        "sample_tokens": sample_tokens,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "results": results,
        "ratios": ratios,
    }
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
