"""Putting a voice conversation together: load everything once, then run live or over files."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from companion.events import AudioEvent, Event, TranscriptEvent
from companion.voice.asr import ASR
from companion.voice.audio import decode_audio, read_wav_b64, resample, write_wav
from companion.voice.loop import LiveLoop, Player, VoiceAgent, turn_summary
from companion.voice.pipeline import asr_languages, speech_processors
from companion.voice.vad import Endpointer


@dataclass
class VoiceStack:
    companion: Any
    asr: ASR
    agent: VoiceAgent
    settings: Any
    tts: Any = None
    """Her voice router (the one her SpeechStage speaks with)."""

    def endpointer(self) -> Endpointer:
        from companion import plugins

        options = self.settings.voice
        vad = plugins.create("vad", self.settings.vad, plugins.PluginContext(data_dir=self.settings.data_dir))
        return Endpointer(
            vad,
            threshold=options.vad_threshold,
            silence_ms=options.silence_ms,
            min_speech_ms=options.min_speech_ms,
            pause_ms=options.pause_ms,
            pre_roll_ms=options.pre_roll_ms,
            max_utterance_s=options.max_utterance_s,
        )

    def live_loop(self, player: Player, emit: Callable[[Event], None]) -> LiveLoop:
        options = self.settings.voice
        return LiveLoop(
            self.agent,
            self.endpointer(),
            player,
            emit,
            barge_in=options.barge_in,
            barge_in_ms=options.barge_in_ms,
            piece_s=options.piece_s,
            piece_pause_s=options.piece_pause_ms / 1000,
            prefill=options.prefill,
        )


def voice_turn_settings(settings: Any) -> Any:
    """The settings voice turns run with: the voice retrieval budget in place of the chat's."""
    budget = settings.voice.context_budget_tokens
    return settings if budget is None else settings.model_copy(update={"context_budget_tokens": budget})


def build_voice(
    character_id: str, settings: Any, *, user: str | None = None, channel: str = "voice", status=print
) -> VoiceStack:
    """The companion with speech processors, ASR, VAD and TTS loaded (in parallel) and warmed up."""
    from concurrent.futures import ThreadPoolExecutor

    from companion.session import build_companion, shared_plugin

    settings = voice_turn_settings(settings)
    companion = build_companion(character_id, settings)
    stages = speech_processors(companion.character, settings)
    companion.processors = [*companion.processors, *stages]
    asr = shared_plugin("asr", settings.asr, settings)
    tts = stages[-1].tts
    loaders = [getattr(companion.llm, "load", None), getattr(asr, "load", None), getattr(tts.primary, "load", None)]
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=3) as pool:
        for future in [pool.submit(f) for f in loaders if f is not None]:
            future.result()
    status(f"models ready in {time.perf_counter() - started:.1f}s")
    key = companion.key(user=user or settings.user_name, channel=channel)
    languages = asr_languages(companion.character, settings)
    agent = VoiceAgent(companion, asr, key, languages=languages, user_name=user or settings.user_name)
    return VoiceStack(companion=companion, asr=asr, agent=agent, settings=settings, tts=tts)


def speech_only(endpointer: Endpointer, samples: np.ndarray) -> np.ndarray | None:
    """The speech of a recording (each utterance with its pre/post-roll, silences between them
    dropped), or None when it holds only silence or noise."""
    spans = []
    for i in range(0, len(samples), 8000):
        spans += [e.audio for e in endpointer.feed(samples[i : i + 8000]) if e.kind == "end"]
    spans += [e.audio for e in endpointer.flush() if e.kind == "end"]
    spans = [s for s in spans if s is not None and s.size]
    return np.concatenate(spans) if spans else None


async def reply_to_file(stack: VoiceStack, path: Path, out_dir: Path | None, emit: Callable[[Event], None]) -> dict:
    """One recording, one turn: transcript, her reply (text, sentences, expressions) and her voice."""
    audio = decode_audio(path)
    result: dict[str, Any] = {"input": str(path), "duration_s": round(audio.duration, 3)}
    speech = speech_only(stack.endpointer(), audio.samples)
    if speech is None:
        result["transcript"] = None
        result["note"] = "no speech heard: no turn"
        _write_json(out_dir, path, result)
        return result
    started = time.monotonic()
    transcript = await stack.agent.transcribe(speech)
    result.update(transcript=transcript.text, language=transcript.language, asr_s=round(time.monotonic() - started, 3))
    if transcript.empty:
        result["note"] = "no words recognised: no turn"
        _write_json(out_dir, path, result)
        return result
    emit(TranscriptEvent(text=transcript.text, language=transcript.language))
    events: list[Event] = []
    first_audio = None
    async for event in stack.agent.turn(transcript.text):
        if isinstance(event, AudioEvent) and first_audio is None:
            first_audio = time.monotonic() - started
        events.append(event)
        emit(event)
    result.update(turn_summary(events))
    result["first_audio_s"] = round(first_audio, 3) if first_audio is not None else None
    result["total_s"] = round(time.monotonic() - started, 3)
    audio_events = [e for e in events if isinstance(e, AudioEvent)]
    if out_dir is not None and audio_events:
        rate = audio_events[0].sample_rate
        parts = []
        for event in audio_events:
            clip = read_wav_b64(event.audio_wav_b64)
            parts.append(resample(clip.samples, clip.sample_rate, rate))
        wav = write_wav(out_dir / f"{path.stem}.reply.wav", np.concatenate(parts), rate)
        result["reply_audio"] = str(wav)
    _write_json(out_dir, path, result)
    return result


def _write_json(out_dir: Path | None, path: Path, result: dict) -> None:
    if out_dir is None:
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{path.stem}.json").write_text(json.dumps(result, ensure_ascii=False, indent=2), encoding="utf-8")


async def run_files(stack: VoiceStack, paths: list[Path], out_dir: Path | None, emit: Callable[[Event], None]) -> list:
    return [await reply_to_file(stack, path, out_dir, emit) for path in paths]


def run(coro) -> Any:
    return asyncio.run(coro)
