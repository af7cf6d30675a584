"""Settings of the live voice loop (`[voice]` in the config file, COMPANION_VOICE__* in the environment).

Plain pydantic, no heavy imports: `companion.config` reads it at start-up.
"""

from __future__ import annotations

from pydantic import BaseModel


class VoiceLoopSettings(BaseModel):
    languages: list[str] | None = None
    """Languages the user speaks (speech recognition considers only these). Default: the
    character's language and her voice's language."""
    silence_ms: int = 500
    """Silence that ends an utterance (endpointing)."""
    pause_ms: int = 100
    """Silence after which the utterance so far is transcribed and her answer prefilled,
    speculatively (discarded if the user goes on): the sooner, the more of it is done when
    `silence_ms` is reached."""
    piece_s: float | None = 1.0
    """Transcribe while the user speaks: speech up to a pause of `piece_pause_ms` is kept once it
    lasts this long, so only the tail since the last pause is left at the end (None: all at the end)."""
    piece_pause_ms: int = 160
    """A pause this long may end a kept piece; shorter gaps fall between words (cutting the
    speech set's recordings at 100-120 ms gaps raised English WER from 0 to 0.044)."""
    prefill: bool = True
    """Have the LLM evaluate her prompt before the turn: the shared part (persona, history) while
    the user is quiet, the whole turn (retrieval included) from the transcript at each pause.
    Only for LLMs with a prefix cache (llm.llamacpp)."""
    pre_roll_ms: int = 500
    """Audio kept from before the VAD heard speech start: quiet onsets need it (300 ms cost the
    CosyVoice clip its first two characters in half of the cuts measured)."""
    min_speech_ms: int = 200
    vad_threshold: float = 0.5
    max_utterance_s: float = 30.0
    barge_in: bool = True
    """Stop her (playback and generation) when the user starts speaking. Use headphones, or
    her own voice from the speakers interrupts her."""
    barge_in_ms: int = 300
    """Speech needed to count as an interruption (coughs and clicks are shorter)."""
    fallback_tts: str | None = "espeak-ng"
    """Speaks sentences in a language her voice does not (None: her voice reads everything)."""
    min_sentence_chars: int = 4
    """Shorter sentences are merged with the next. Lengths count letters' worth of speaking time:
    a letter or digit is 1, a Chinese/Japanese/Korean character 3 (a syllable)."""
    first_clause_chars: int | None = 10
    """Cut her first sentence at a comma once this long, so she starts speaking sooner (None: off)."""
    context_budget_tokens: int | None = 200
    """Retrieval budget of a `companion voice` turn (lorebook, memory, lore, classic lines), in
    place of the chat's `context_budget_tokens` (500); the web page's spoken turns keep the chat's.
    What is retrieved depends on the final words, so the LLM reads it after the user stops: on 2
    laptop cores each token costs ~2.3 ms of her answer (measured over Mochi's 26 labelled
    questions: 250 -> 200 took 0.10 s off the prefill, and every answer stayed in her context; at
    150, 5 fell out). 200 still holds one whole lore chunk (180 embedder tokens). None: the chat's."""
    input_device: str | int | None = None
    output_device: str | int | None = None
