"""Distillation: a stronger LLM (any OpenAI-compatible endpoint, or the configured local model)
turns novel chunks into role-play scripts and character interviews.

    companion data distill NOVEL... --as NAME [--character ID] [--base-url URL --model M --api-key K]

`pipeline` runs (and resumes) it; `client` talks to the endpoint (rate limit, retries, fail
fast); `templates` holds the editable prompts; `parse` refuses malformed output with a reason.
"""
