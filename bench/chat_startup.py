"""First start vs warm start of `companion chat --message`, as a user sees them.

Cold: a fresh data directory, so the embedded GGUF is converted to safetensors first.
Warm: the same data directory again. Prints wall times and the model-ready times that the
command reports, plus the warm/cold ratio.

    .venv/bin/python bench/chat_startup.py [--character mochi] [--runs 2]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_chat(data_dir: Path, character: str, tokens: int) -> tuple[float, float]:
    env = {
        **os.environ,
        "COMPANION_DATA_DIR": str(data_dir),
        "COMPANION_MAX_NEW_TOKENS": str(tokens),
        "COMPANION_TEMPERATURE": "0",
    }
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "companion", "chat", "-c", character, "-m", "你好"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    wall = time.perf_counter() - started
    ready = re.search(r"ready in ([\d.]+)s", proc.stderr)
    return wall, float(ready.group(1)) if ready else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--character", default="mochi")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        cold_wall, cold_ready = run_chat(data_dir, args.character, args.tokens)
        warm = [run_chat(data_dir, args.character, args.tokens) for _ in range(args.runs)]
    warm_wall = statistics.median(w for w, _ in warm)
    warm_ready = statistics.median(r for _, r in warm)
    print(f"{'':18}{'wall s':>10}{'model ready s':>16}")
    print(f"{'first start':18}{cold_wall:10.1f}{cold_ready:16.1f}")
    print(f"{'warm start (p50)':18}{warm_wall:10.1f}{warm_ready:16.1f}")
    print(f"warm/cold model-ready ratio: {warm_ready / cold_ready:.3f}  ({args.tokens} new tokens per reply)")


if __name__ == "__main__":
    main()
