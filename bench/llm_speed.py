"""Local dialogue-model speed, side by side: the new default (`llm.llamacpp`), the transformers +
peft reference (`llm.local`) and llama-cpp-python's own `Llama`, on the same Gemma-3-270M Q4_K_M
GGUF with the same LoRA adapter applied, the same prompts (a short one and Mochi's real ~1k-token
prompt) and the app's sampling settings (temperature 0.7, top-p 0.9, repetition penalty 1.1).

For each engine: load time; time to first token cold (empty cache) and warm (the second turn of
the same conversation); decode tokens/s over a fixed number of tokens (end-of-turn ignored, so
every engine decodes the same count); peak RSS. Each engine runs in its own process (so RSS is
its own), engines interleaved over repetitions in rotating order (so a busy machine hits all
alike); the table shows medians and the ratios the goals are stated in:
decode >= 0.9x llama-cpp-python and >= 4x the reference; warm first token <= 0.3x cold.

    .venv/bin/python bench/llm_speed.py [--reps 3] [--tokens 64] [--adapter DIR] [--json OUT]

The adapter is characters/mochi/adapter when it exists, else a random all-linear r=8 peft adapter
(LLaMA-Factory's default targets) made on the fly. llama-cpp-python gets the same adapter through
our converter (it has no peft loader of its own).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

DATA_DIR = Path(os.environ.get("COMPANION_BENCH_DATA_DIR", ROOT / ".data" / "test"))
ENGINES = ("new default", "transformers reference", "llama-cpp-python")
SAMPLING = {"temperature": 0.7, "top_p": 0.9, "repetition_penalty": 1.1, "seed": 1}
SECOND_USER = {"short": "And what do you bake on Sundays?", "long": "那你周日一般做什么面包？"}
FIRST_REPLY = {
    "short": "I bake milk bread and black-sesame rolls every morning before the harbour wakes up.",
    "long": "今天我做了星夜黑芝麻卷和外婆的牛奶吐司，芝麻一直在窗台上看着烤箱呢。",
}


# -- prompts -----------------------------------------------------------------------------
def build_prompts(count_tokens) -> dict[str, list[dict]]:
    """short: one line of persona + a question; long: Mochi's assembled prompt (persona, example
    dialogue, some history), ~1k tokens, exactly as the session builds it."""
    short = [
        {"role": "system", "content": "You are Mochi, a cheerful apprentice baker in a seaside town."},
        {"role": "user", "content": "Hi Mochi! What did you bake today?"},
    ]
    long = _mochi_prompt(count_tokens)
    return {"short": short, "long": long}


def _mochi_prompt(count_tokens) -> list[dict]:
    from companion.messages import ChatMessage

    history = []
    for i in range(6):
        history += [
            ChatMessage(role="user", content=f"第{i + 1}天：今天店里忙吗？有没有新来的客人？"),
            ChatMessage(
                role="assistant", content=f"第{i + 1}天可忙啦！早上五点渔民们就来买热乎乎的吐司，芝麻在柜台上打盹。"
            ),
        ]
    card_dir = ROOT / "characters" / "mochi"
    if (card_dir / "card.yaml").is_file():
        from companion.character import Character
        from companion.prompt import assemble

        card = Character.load(card_dir).card
        prompt = assemble(
            card, history, "今天你做了什么面包？", user_name="小林", count_tokens=count_tokens, budget_tokens=1100
        )
        return [m.model_dump() for m in prompt.messages]
    persona = "You are Mochi (糯米), a 19-year-old apprentice baker at the Moon Rabbit Bakery. " * 40
    messages = [{"role": "system", "content": persona}, *(m.model_dump() for m in history)]
    return [*messages, {"role": "user", "content": "今天你做了什么面包？"}]


def second_turn(kind: str, messages: list[dict]) -> list[dict]:
    return [
        *messages,
        {"role": "assistant", "content": FIRST_REPLY[kind]},
        {"role": "user", "content": SECOND_USER[kind]},
    ]


# -- adapter -----------------------------------------------------------------------------
def prepare_adapter(given: Path | None, workdir: Path) -> Path:
    if given is not None:
        return given
    shipped = ROOT / "characters" / "mochi" / "adapter"
    if (shipped / "adapter_model.safetensors").is_file():
        return shipped
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from companion.llm.embedded import embedded_model_dir

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(embedded_model_dir("gemma3-270m", DATA_DIR), dtype=torch.float32)
    peft_model = get_peft_model(
        base, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False)
    )
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.mul_(0.25)
    folder = workdir / "adapter"
    peft_model.save_pretrained(folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "gemma3-270m"
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


# -- workers (one engine per process) ----------------------------------------------------
class Timer:
    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.first: float | None = None
        self.last = self.start
        self.count = 0

    def tick(self) -> None:
        now = time.perf_counter()
        if self.first is None:
            self.first = now
        self.last = now
        self.count += 1

    def result(self, tokens: int | None = None) -> dict:
        """`tokens`: how many tokens the ticks stood for, when a tick is a text piece (a piece can
        hold two tokens of one character); decode counts tokens from the first tick to the last."""
        count = self.count if tokens is None else tokens
        decode = (count - 1) / (self.last - self.first) if count > 1 and self.last > self.first else 0.0
        return {"ttft": (self.first or self.last) - self.start, "tokens": count, "decode_tps": decode}


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM; ru_maxrss would carry over the parent's peak across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(engine: str, spec: dict) -> dict:
    started = time.perf_counter()
    run = {"new default": _fast_runner, "transformers reference": _reference_runner, "llama-cpp-python": _lcp_runner}
    turn, reset = run[engine](spec)
    out = {"load_s": time.perf_counter() - started}
    for kind, messages in spec["prompts"].items():
        reset()
        cold = turn(messages, spec["tokens"])
        warm = turn(second_turn(kind, messages), 8)
        out[kind] = {"cold_ttft": cold["ttft"], "warm_ttft": warm["ttft"], "decode_tps": cold["decode_tps"]}
        out[kind]["tokens"] = cold["tokens"]
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def _request(messages: list[dict], n: int, adapter: str):
    from companion.llm.base import GenerationParams, GenerationRequest
    from companion.messages import ChatMessage

    return GenerationRequest(
        messages=[ChatMessage(**m) for m in messages],
        params=GenerationParams(max_new_tokens=n, **SAMPLING),
        adapter=Path(adapter),
    )


def _drain(llm, request, tokens: Callable[[], int]) -> dict:
    """One streamed turn; `tokens()` tells afterwards how many tokens it generated."""
    timer = Timer()

    async def go() -> None:
        async for _piece in llm.stream(request):
            timer.tick()

    asyncio.run(go())
    return timer.result(tokens())


def _fast_runner(spec: dict):
    from companion.llm.llamacpp import LlamaCppLLM, LlamaCppSettings
    from companion.plugins import PluginContext

    # its default thread setting (tuned while decoding) unless --threads fixes every engine's
    llm = LlamaCppLLM(LlamaCppSettings(threads=spec["fixed_threads"]), PluginContext(data_dir=DATA_DIR))
    llm.load()
    assert llm.fast and not llm.uses_reference(_request([], 1, spec["adapter"])), "fast path unavailable"
    llm.engine.stop_ids = set()  # decode a fixed count, like the other engines

    def turn(messages: list[dict], n: int) -> dict:
        return _drain(llm, _request(messages, n, spec["adapter"]), lambda: llm.last_stats.generated_tokens)

    return turn, llm.reset_cache


def _reference_runner(spec: dict):
    import torch

    torch.set_num_threads(spec["threads"])
    from companion.llm.local import LocalLLM, LocalLLMSettings
    from companion.plugins import PluginContext

    llm = LocalLLM(LocalLLMSettings(threads=spec["threads"]), PluginContext(data_dir=DATA_DIR))
    llm.load()
    llm._activate_adapter(Path(spec["adapter"]))
    llm.end_of_turn_ids = lambda: [-1]  # decode a fixed count (no token has id -1)
    return (lambda messages, n: _drain(llm, _request(messages, n, spec["adapter"]), lambda: n)), (lambda: None)


def _lcp_runner(spec: dict):
    """llama-cpp-python's own high-level Llama: its prompt-prefix reuse, its sampler."""
    from llama_cpp import Llama

    llm = Llama(
        model_path=spec["gguf"],
        lora_path=spec["lora_gguf"],
        n_ctx=4096,
        n_batch=512,
        n_threads=spec["threads"],
        n_threads_batch=spec["threads"],
        verbose=False,
    )
    from companion.llm.embedded import GEMMA_CHAT_TEMPLATE
    from companion.llm.llamacpp_lib import render_template

    def turn(messages: list[dict], n: int) -> dict:
        timer = Timer()
        text = render_template(GEMMA_CHAT_TEMPLATE, messages, bos_token="<bos>", eos_token="<eos>")
        tokens = llm.tokenize(text.encode(), add_bos=False, special=True)
        for i, _token in enumerate(
            llm.generate(tokens, top_k=50, top_p=SAMPLING["top_p"], temp=SAMPLING["temperature"], repeat_penalty=1.1)
        ):
            timer.tick()
            if i + 1 >= n:
                break
        return timer.result()

    return turn, llm.reset


# -- driver ------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--adapter", type=Path, default=None)
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, json.loads(args.spec.read_text()))))
        return

    from companion.llm.embedded import EMBEDDED_MODELS
    from companion.llm.llamacpp import LlamaCppLLM, LlamaCppSettings, default_threads
    from companion.plugins import PluginContext

    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        adapter = prepare_adapter(args.adapter, workdir)
        fast = LlamaCppLLM(LlamaCppSettings(), PluginContext(data_dir=DATA_DIR))
        _handle, reason = fast.adapter_route(adapter)  # converts once (cached in the data dir)
        if reason:
            sys.exit(f"the adapter cannot run on the fast path: {reason}")
        lora_gguf = fast.adapter_gguf_path(adapter)
        gguf = EMBEDDED_MODELS["gemma3-270m"].locate_gguf(DATA_DIR / "models" / "gguf")
        prompts = build_prompts(fast.count_tokens)
        sizes = {kind: len(fast.prompt_tokens([_msg(m) for m in msgs])[0]) for kind, msgs in prompts.items()}
        del fast
        spec = {
            "prompts": prompts,
            "tokens": args.tokens,
            "adapter": str(adapter),
            "gguf": str(gguf),
            "lora_gguf": str(lora_gguf),
            "threads": args.threads or default_threads(),
            "fixed_threads": args.threads,
        }
        spec_file = workdir / "spec.json"
        spec_file.write_text(json.dumps(spec))
        threads = f"{spec['threads']} (new default: {args.threads or 'auto'})"
        print(f"adapter: {adapter}  prompts: {sizes} tokens  threads: {threads}  load avg: {os.getloadavg()}")
        runs: dict[str, list[dict]] = {e: [] for e in engines}
        for rep in range(args.reps):
            order = engines[rep % len(engines) :] + engines[: rep % len(engines)]
            for engine in order:
                command = [sys.executable, __file__, "--worker", engine, "--spec", str(spec_file)]
                done = subprocess.run(command, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    print(f"{engine} failed:\n{done.stderr[-3000:]}", file=sys.stderr)
                    continue
                result = json.loads(done.stdout.strip().splitlines()[-1])
                runs[engine].append(result)
                print(f"rep {rep + 1} {engine}: {json.dumps(result)}", file=sys.stderr)
    table = summarise(runs, sizes)
    print(table["text"])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"spec": {**spec, "prompts": sizes}, "runs": runs, "medians": table["medians"]})
        )


def _msg(m: dict):
    from companion.messages import ChatMessage

    return ChatMessage(**m)


def summarise(runs: dict[str, list[dict]], sizes: dict[str, int]) -> dict:
    rows = [("load (s)", ("load_s",))]
    for kind in ("short", "long"):
        label = f"{kind} ({sizes[kind]} tok)"
        rows += [
            (f"{label} first token cold (s)", (kind, "cold_ttft")),
            (f"{label} first token warm (s)", (kind, "warm_ttft")),
            (f"{label} decode (tok/s)", (kind, "decode_tps")),
        ]
    rows.append(("peak RSS (MB)", ("peak_rss_mb",)))

    def value(result: dict, path: tuple) -> float:
        for key in path:
            result = result[key]
        return float(result)

    medians = {
        engine: {label: statistics.median(value(r, path) for r in results) for label, path in rows}
        for engine, results in runs.items()
        if results
    }
    names = list(medians)
    new, ref, lcp = "new default", "transformers reference", "llama-cpp-python"
    header = f"{'':38}" + "".join(f"{n:>24}" for n in names)
    if new in medians:
        header += "".join(
            f"{'new/' + short:>12}" for other, short in ((lcp, "llama.cpp"), (ref, "ref")) if other in medians
        )
    lines = [header]
    for label, _path in rows:
        line = f"{label:38}" + "".join(f"{medians[n][label]:>24.3f}" for n in names)
        if new in medians:
            for other in (lcp, ref):
                if other in medians:
                    line += f"{medians[new][label] / medians[other][label]:>12.2f}x"
        lines.append(line)
    if new in medians:
        lines.append("")
        for kind in ("short", "long"):
            label = f"{kind} ({sizes[kind]} tok)"
            warm = medians[new][f"{label} first token warm (s)"] / medians[new][f"{label} first token cold (s)"]
            lines.append(f"goal warm/cold first token <= 0.3 ({kind}): {warm:.2f}")
            decode = f"{label} decode (tok/s)"
            for other, goal in ((lcp, 0.9), (ref, 4.0)):
                if other in medians:
                    ratio = medians[new][decode] / medians[other][decode]
                    lines.append(f"goal decode >= {goal}x {other} ({kind}): {ratio:.2f}x")
    counts = {e: len(r) for e, r in runs.items()}
    lines.append(f"runs per engine: {counts}; medians shown")
    return {"text": "\n".join(lines), "medians": medians}


if __name__ == "__main__":
    main()
