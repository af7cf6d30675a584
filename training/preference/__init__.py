"""Preference training: DPO on chosen/rejected pairs, on top of the character's SFT adapter.

    companion train ID --method dpo [--pairs FILE] [--beta 0.1] [--max-steps N]
    companion eval ID          (adds preference accuracy: base, SFT adapter, DPO adapter)

`data` reads pairs (LLaMA-Factory's ranking format, the court's export, TRL's prompt/chosen/
rejected, Alpaca-style); `trainer` runs DPO with the LoRA trainer's model loading, chat
template, packing and chunked loss; `evaluate` measures how often a model ranks chosen above
rejected.
"""
