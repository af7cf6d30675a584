"""From community votes to a preference-trained adapter: court -> preference pairs -> DPO -> accuracy.

    .venv/bin/python bench/court_dpo.py [--questions 40] [--voters 7] [--noise 0.15] [--steps 30]
                                        [--sft-steps 0] [--model gemma3-270m]

A copy of the shipped character Mochi; for each of `--questions` questions from her own
dialogues an author submits her real answer and another author submits a wrong one (Mochi's
answer to a different question: fluent, in her voice, but not an answer). `--voters` voters vote
on every submission, each flipping their honest vote with probability `--noise`. Verdicts follow
the court's rules; the votes are exported as preference pairs, and DPO trains on them (on top of
an SFT adapter when `--sft-steps` > 0). Printed: the court's verdicts, pairs, DPO time per step,
and preference accuracy on the held-out pairs for the base, the reference and the DPO adapter.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def mochi_lines(limit: int, seed: int) -> list[tuple[str, str]]:
    from training.cleaning import asks_something

    lines = []
    for path in sorted((ROOT / "characters" / "mochi" / "corpus" / "dialogues").glob("*.jsonl")):
        for raw in path.read_text(encoding="utf-8").splitlines():
            turns = json.loads(raw)["conversations"]
            if len(turns) >= 2 and turns[0]["from"] == "human" and turns[1]["from"] == "gpt":
                lines.append((turns[0]["value"], turns[1]["value"]))
    random.Random(seed).shuffle(lines)
    seen, out = set(), []
    for q, a in lines:
        if q not in seen and asks_something(q):
            seen.add(q)
            out.append((q, a))
    return out[:limit]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=40)
    parser.add_argument("--voters", type=int, default=7)
    parser.add_argument("--noise", type=float, default=0.15)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--sft-steps", type=int, default=0)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--data-dir", type=Path, default=ROOT / ".data" / "test", help="Where converted models live.")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    from companion.paths import contain_library_caches

    contain_library_caches(args.data_dir)
    from companion.character import Character
    from companion.config import Settings
    from training.court.export import COURT_PAIRS, export_pairs
    from training.court.settings import CourtSettings
    from training.court.store import Court, CourtError
    from training.preference.config import DPOConfig
    from training.preference.trainer import train_dpo

    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="court-dpo-") as tmp:
        folder = Path(tmp) / "mochi"
        shutil.copytree(ROOT / "characters" / "mochi", folder, ignore=shutil.ignore_patterns("adapter"))
        data = Path(tmp) / "data"
        data.mkdir()
        (data / "models").symlink_to((args.data_dir / "models").resolve(), target_is_directory=True)
        settings = Settings(data_dir=data, characters_dir=Path(tmp))
        character = Character.load(folder)
        # the prankster's wrong answers are rejected, which costs points; keep him submitting for the measurement
        court = Court(data / "court.db", CourtSettings(min_votes=3, min_points_to_submit=-(10**6)))
        good_author, bad_author = court.add_user("writer")[0], court.add_user("prankster")[0]
        voters = [court.add_user(f"voter{i}")[0] for i in range(args.voters)]
        pool = mochi_lines(2 * args.questions, args.seed)
        lines, others = pool[: args.questions], pool[args.questions :]  # wrong answers: lines never submitted
        submitted = refused = 0
        started = time.perf_counter()
        for i, (question, answer) in enumerate(lines):
            wrong = others[i % len(others)][1]
            for author, text, honest in ((good_author, answer, "approve"), (bad_author, wrong, "reject")):
                try:
                    s = court.submit(author, "mochi", question, text)
                except CourtError:
                    refused += 1
                    continue
                submitted += 1
                for voter in voters:
                    flip = rng.random() < args.noise
                    verdict = ("reject" if honest == "approve" else "approve") if flip else honest
                    try:
                        court.vote(voter, court.ballot(voter, s.id).token, verdict)
                    except CourtError:
                        break  # decided
        stats = court.stats("mochi")
        pairs = export_pairs(court, "mochi", folder / COURT_PAIRS)
        court_seconds = time.perf_counter() - started
        print(
            f"court: {submitted} submissions ({refused} refused by the rules), {stats['votes']} votes, verdicts "
            f"{stats['submissions']}; {pairs} preference pairs exported; {court_seconds:.1f}s"
        )
        if args.sft_steps:
            from training.lora.config import TrainConfig
            from training.lora.trainer import train

            sft = train(character, settings, TrainConfig(model=args.model, max_steps=args.sft_steps, eval_every=0,
                                                         save_every=0))  # fmt: skip
            print(f"sft: {args.sft_steps} steps in {sft.report['metrics']['train_seconds']:.0f}s")
        config = DPOConfig(
            model=args.model, max_steps=args.steps, batch_size=2, grad_accum=1, beta=args.beta,
            learning_rate=args.learning_rate, eval_fraction=0.25, seed=args.seed,
        )  # fmt: skip
        result = train_dpo(character, settings, config)
        m = result.report["metrics"]
        b, before, after = m["base"], m["before"], m["after"]
        print(
            f"dpo: {m['steps']} steps, {m['seconds_per_step']:.1f}s/step ({m['tokens_per_second']:.0f} tokens/s), "
            f"reference pass {m['reference_seconds']:.0f}s, {result.report['data']['pairs']}"
        )
        print(
            f"preference accuracy on {after['pairs']} {result.report['data']['measured_on']}: "
            f"base {b['accuracy']:.0%}, before {before['accuracy']:.0%}, after {after['accuracy']:.0%}; "
            f"length-neutral {before['token_accuracy']:.0%} -> {after['token_accuracy']:.0%}; "
            f"DPO reward accuracy {after['reward_accuracy']:.0%}, "
            f"held-out DPO loss {after['dpo_loss']:.3f} (0.693 at the start)"
        )


if __name__ == "__main__":
    main()
