"""Test doubles for the parts a frontend test is not about.

`ScriptedLLM` streams a fixed reply (with an emotion tag) so page tests can wait for a known
expression; `tone_processor` turns each sentence into a real WAV (a tone shaped like speech)
with lip-sync volumes, so the page's audio path is tested without the voice extra. The real
model and the real voice pipeline are exercised by the other tests.
"""

from __future__ import annotations

import asyncio
import base64
import io
import math
import wave
from collections.abc import AsyncIterator

from companion.events import AudioEvent, Event, SentenceEvent
from companion.llm.base import GenerationRequest

DEFAULT_SCRIPT = "[joy] Hello there! I am so happy to see you. *waves* How was your day?"


class ScriptedLLM:
    def __init__(self, script: str = DEFAULT_SCRIPT, delay: float = 0.03) -> None:
        self.script = script
        self.delay = delay
        self.requests: list[GenerationRequest] = []
        self.by_prompt: dict[str, str] = {}
        """Replies for user messages that contain a key (else `script`)."""

    def count_tokens(self, text: str) -> int:
        return max(1, len(text) // 4)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[str]:
        self.requests.append(request)
        last = request.messages[-1].content
        script = next((reply for key, reply in self.by_prompt.items() if key in last), self.script)
        words = script.split(" ")
        for i, word in enumerate(words[: request.params.max_new_tokens * 4]):
            await asyncio.sleep(self.delay)
            yield word if i == 0 else " " + word


def tone_wav(seconds: float, rate: int = 16_000) -> bytes:
    import numpy as np

    t = np.arange(int(seconds * rate)) / rate
    envelope = np.abs(np.sin(np.pi * 4 * t))  # syllable-like loudness
    samples = (12000 * envelope * np.sin(2 * np.pi * 220 * t)).astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(samples.tobytes())
    return out.getvalue()


def tone_processor(events: AsyncIterator[Event]) -> AsyncIterator[Event]:
    async def run() -> AsyncIterator[Event]:
        async for event in events:
            yield event
            if isinstance(event, SentenceEvent) and event.text:
                seconds = min(1.5, 0.06 * len(event.text))
                volumes = [round(abs(math.sin(math.pi * 4 * t * 0.02)), 3) for t in range(int(seconds / 0.02))]
                yield AudioEvent(
                    turn_id=event.turn_id,
                    sentence_index=event.index,
                    text=event.text,
                    sample_rate=16_000,
                    audio_wav_b64=base64.b64encode(tone_wav(seconds)).decode(),
                    volumes=volumes,
                    slice_ms=20,
                )

    return run()
