"""Training: raw material -> conversations -> clean dataset (here) -> LoRA adapter (`training.lora`).

    files -> importers (detect + read) -> Conversation[Message(speaker, role, text, time)]
          -> choose the character (--as / --me) -> clean (PII, quality rules, sessions, dedupe)
          -> dataset/ (ShareGPT + Alpaca jsonl, dataset_info.json, report) in the character folder

`companion data import|build|stats|scrub` drive it from the command line (companion/cli/data.py).
"""
