"""Voice latency and accuracy with the demo character, on this machine's CPU.

Real recorded speech (../shared/testdata/speech) plus questions synthesised with espeak-ng go
through the whole pipeline with Mochi (retrieval included when the knowledge package is wired
into the session): Silero endpointing -> Whisper base -> Gemma-3-270M (+ her adapter, if any)
-> sentences/tags -> Piper / espeak-ng. For every utterance, in the same run:

  streaming   the live loop, fed in real time: speech transcribed in pieces at pauses, the LLM
              prefilled with the turn from the transcript at each pause, the first clause
              spoken while the LLM writes on; latency = end of speech -> first audio chunk
  sequential  the same models one after the other: wait the silence window, transcribe all,
              generate all, synthesise all; latency = end of speech -> audio ready

Both include the endpointing silence window (`voice.silence_ms`), which any live system waits,
and both start with the LLM's cache as another user's turn leaves it (her persona evaluated).
Greedy decoding and a fresh conversation per utterance give both modes the same reply.
--no-prefill, --piece-s 0 and --first-clause-chars 0 turn the streaming levers off one by one.
Also: ASR WER/CER and real-time factor per recording; TTS real-time factor and first chunk.

    .venv/bin/python bench/voice_latency.py [--testdata ../shared/testdata] [--limit 12] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

QUESTIONS_EN = [
    "What time does the bakery open?",
    "What is the name of your cat?",
    "Which star do you like best?",
    "Are you scared of thunderstorms?",
    "What do you bake in the morning?",
    "Tell me about your telescope.",
]
QUESTIONS_ZH = ["你最喜欢哪个星座？", "你的猫叫什么名字？", "面包店几点开门？"]
TTS_SENTENCES = {
    "en": [
        "Welcome to Moon Rabbit Bakery!",
        "The red bean buns come out again at three, so you are just in time.",
        "When it thunders I hide under my blanket with Sesame and count the seconds.",
    ],
    "zh": [
        "欢迎光临月兔烘焙坊！",
        "早上七点那批月兔红豆包刚出炉，还烫手呢。",
        "天琴座里那颗织女星是我用望舒找到的第一颗星星。",
    ],
}


ZH_PROMPT = "以下是普通话的句子。"
GREEDY = {"beam_size": 1, "temperature": 0.0, "window_padding_s": None}
BEAM5 = {"beam_size": 5, "temperature": 0.0, "window_padding_s": None}
ASR_VARIANTS: dict[str, dict] = {  # each names every setting it relies on, whatever the defaults are
    "greedy": GREEDY,
    "beam 5": BEAM5,
    "beam 5 + temperature fallback": {**BEAM5, "temperature": [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]},
    "greedy + zh prompt": {**GREEDY, "language_prompts": {"zh": ZH_PROMPT}},
    "beam 5 + zh prompt": {**BEAM5, "language_prompts": {"zh": ZH_PROMPT}},
    "greedy, float32 weights": {**GREEDY, "compute_type": "float32"},
    "greedy, window speech + 2 s": {**GREEDY, "window_padding_s": 2.0},
    "greedy, window speech + 5 s": {**GREEDY, "window_padding_s": 5.0},
    "greedy, window speech + 10 s": {**GREEDY, "window_padding_s": 10.0},
    "beam 5, window speech + 3 s": {**BEAM5, "window_padding_s": 3.0},
    "beam 5, window speech + 2 s": {**BEAM5, "window_padding_s": 2.0},
    "beam 5, window speech + 5 s": {**BEAM5, "window_padding_s": 5.0},
    # as the live loop hears it: the endpointer's utterances, whole or in pieces cut at pauses
    "live, greedy, whole utterances": {**GREEDY, "live_piece_s": 0},
    "live, greedy, pieces at pauses": {**GREEDY, "live_piece_s": 1.0},
    "live, beam 5, whole utterances": {**BEAM5, "live_piece_s": 0},
    "live, beam 5, pieces at pauses": {**BEAM5, "live_piece_s": 1.0},
    "live, beam 5, speech + 3 s, pieces at pauses": {**BEAM5, "window_padding_s": 3.0, "live_piece_s": 1.0},
    "live, greedy, speech + 3 s, pieces at pauses": {**GREEDY, "window_padding_s": 3.0, "live_piece_s": 1.0},
}


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def load_references(speech: Path) -> list[tuple[Path, int | None, str, str]]:
    rows = []
    with (speech / "transcripts.tsv").open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            name, _, side = row["file"].partition(":")
            if row["language"] not in ("en", "zh") or row["reference_text"].startswith("("):
                continue
            channel = {"left": 0, "right": 1}.get(side)
            rows.append((speech / name, channel, row["language"], row["reference_text"]))
    return rows


def espeak_utterance(text: str, voice: str) -> np.ndarray:
    from companion.voice.audio import decode_audio

    wav = subprocess.run(["espeak-ng", "-v", voice, "-s", "160", "--stdout", text], capture_output=True, check=True)
    return decode_audio(wav.stdout).samples


def split_utterances(stack, samples: np.ndarray) -> list[tuple[np.ndarray, int]]:
    """Utterances as the live endpointer cuts them: (audio up to the end of speech, its length)."""
    endpointer = stack.endpointer()
    post_roll = endpointer.post_roll
    found = []
    padded = np.concatenate([samples, np.zeros(16000, dtype=np.float32)])
    for i in range(0, len(padded), 320):
        for event in endpointer.feed(padded[i : i + 320]):
            if event.kind == "end" and event.audio is not None:
                speech = event.audio[: max(0, len(event.audio) - post_roll)]
                if len(speech) > 16000 * 0.5:
                    found.append((speech, len(speech)))
    return found


async def persona_cached(stack) -> None:
    """Put the LLM's cache where an earlier turn of another user leaves it: her persona evaluated,
    nothing of the coming turn (else one mode would reuse the other's identical prompt)."""
    from companion.voice.loop import VoiceAgent

    reset = getattr(stack.companion.llm, "reset_cache", None)
    if reset is not None:
        reset()
        other = stack.companion.key(user="bench-other-user", channel="bench")
        await VoiceAgent(stack.companion, stack.asr, other, user_name=stack.agent.user_name).prefill()


async def streaming_latency(stack, speech: np.ndarray, user: str) -> dict:
    from companion.events import AudioEvent, ErrorEvent
    from companion.voice.loop import VirtualPlayer

    events: list = []
    llm_stats: dict = {}

    def emit(event) -> None:
        if isinstance(event, AudioEvent) and not llm_stats:  # the turn's own generation is still running
            stats = getattr(stack.companion.llm, "last_stats", None)
            if stats is not None:
                llm_stats.update(prompt_tokens=stats.prompt_tokens, reused_tokens=stats.reused_tokens)
        events.append(event)

    loop = stack.live_loop(VirtualPlayer(), emit)
    loop.agent.key = stack.companion.key(user=user, channel="bench")
    started = time.monotonic()
    warm = loop.warm()  # as the live loop does before the user speaks
    if warm is not None:
        await warm
    warm_s = time.monotonic() - started
    started = time.monotonic()
    for i in range(0, len(speech), 320):  # the utterance arrives in real time, as from a microphone...
        await loop.feed(speech[i : i + 320])
        await asyncio.sleep(max(0.0, started + (i + 320) / 16000 - time.monotonic()))
    silence = np.zeros(320, dtype=np.float32)
    spoken = time.monotonic()
    deadline = spoken + 240
    while time.monotonic() < deadline:  # ...then silence, in real time, until she speaks
        await loop.feed(silence)
        await asyncio.sleep(0.02)
        if any(isinstance(e, AudioEvent | ErrorEvent) for e in events) or (
            loop.timings and loop._turn is not None and loop._turn.done()
        ):
            break
        if time.monotonic() - spoken > 15 and not any(e.type == "transcript" for e in events):
            break  # no words were heard, so no turn comes (a transcript follows the endpoint within seconds)
    await loop.close()
    timing = loop.timings[-1] if loop.timings else None
    transcript = next((e.text for e in events if e.type == "transcript"), "")
    return {
        "transcript": transcript,
        "first_audio_s": timing.first_audio if timing else None,
        "endpoint_s": timing.confirmed if timing else None,
        "transcript_s": timing.transcript if timing else None,
        "first_text_s": timing.first_text if timing else None,
        "first_sentence_s": timing.first_sentence if timing else None,
        "first_sentence": next((e.text for e in events if e.type == "sentence" and e.text), ""),
        "prefilled_s": timing.marks.get("prefilled") if timing else None,
        "warm_s": warm_s,
        **llm_stats,
    }


async def sequential_latency(stack, speech: np.ndarray, user: str) -> dict:
    from companion.voice.text import parse_tags

    settings = stack.settings
    companion = stack.companion
    started = time.monotonic()
    await asyncio.sleep(settings.voice.silence_ms / 1000)  # the same endpointing wait
    transcript = await asyncio.to_thread(stack.asr.transcribe, speech, languages=stack.agent.languages)
    asr_done = time.monotonic() - started
    if transcript.empty:
        return {"first_audio_s": None}
    processors, companion.processors = companion.processors, []
    try:
        reply = ""
        async for event in companion.turn(companion.key(user=user, channel="bench"), transcript.text):
            if event.type == "turn_end":
                reply = event.text
    finally:
        companion.processors = processors
    generated = time.monotonic() - started
    stats = getattr(companion.llm, "last_stats", None)
    text = parse_tags(reply, companion.character.settings.expressions).text
    tts = stack.tts
    audio_seconds = 0.0
    if text:
        chunks = await asyncio.to_thread(lambda: list(tts.synthesize(text)))
        audio_seconds = sum(c.duration for c in chunks)
    done = time.monotonic() - started
    return {
        "first_audio_s": done if text else None,
        "asr_s": asr_done,
        "generate_s": generated - asr_done,
        "synthesize_s": done - generated,
        "decode_s": stats.decode_s if stats is not None and stats.path != "reference" else None,
        "reply_audio_s": audio_seconds,
        "reply": reply,
    }


def chain_after_speech(rows: list[dict], silence_s: float) -> dict:
    """Medians of what has to happen after the user's last word however the work is overlapped:
    transcribe, retrieve and read the prompt (timed in the sequential run, where nothing overlaps
    them), then write and speak her first sentence (timed in the streaming run)."""
    chain, sentence, speech = [], [], []
    for row in rows:
        seq, live = row["sequential"], row["streaming"]
        if seq.get("decode_s") is not None:
            chain.append(seq["asr_s"] - silence_s + seq["generate_s"] - seq["decode_s"])
        if all(live.get(key) is not None for key in ("first_text_s", "first_sentence_s", "first_audio_s")):
            sentence.append(live["first_sentence_s"] - live["first_text_s"])
            speech.append(live["first_audio_s"] - live["first_sentence_s"])
    if not (chain and sentence):
        return {}
    return {
        "asr_retrieval_prefill_s": statistics.median(chain),
        "first_sentence_s": statistics.median(sentence),
        "first_speech_s": statistics.median(speech),
    }


def asr_section(stack, speech_dir: Path) -> list[dict]:
    from companion.voice.audio import decode_audio
    from companion.voice.metrics import cer, wer

    rows = []
    for path, channel, language, reference in load_references(speech_dir):
        audio = decode_audio(path, channel=channel)
        started = time.perf_counter()
        transcript = stack.asr.transcribe(audio.samples, languages=stack.agent.languages)
        seconds = time.perf_counter() - started
        metric = cer(reference, transcript.text) if language == "zh" else wer(reference, transcript.text)
        rows.append(
            {
                "file": path.name + (f":{'left' if channel == 0 else 'right'}" if channel is not None else ""),
                "language": language,
                "detected": transcript.language,
                "metric": "CER" if language == "zh" else "WER",
                "error": round(metric, 3),
                "rtf": round(seconds / audio.duration, 3),
                "hypothesis": transcript.text,
            }
        )
    return rows


async def live_transcript(
    asr, endpointer, samples: np.ndarray, languages: list[str], piece_s: float, piece_pause_s: float
) -> tuple[str, int]:
    """What the live loop's transcripts of a recording say, joined, and how many pieces were kept
    before an utterance ended. piece_s 0: each utterance transcribed whole at its end."""
    from companion.voice.asr import join_segments
    from companion.voice.loop import IncrementalTranscript, VoiceAgent

    agent = VoiceAgent(None, asr, None, languages=languages)
    endpointer.reset()
    current: IncrementalTranscript | None = None
    texts, language, kept = [], None, 0
    padded = np.concatenate([samples, np.zeros(16000, dtype=np.float32)])
    for i in range(0, len(padded), 320):
        for event in endpointer.feed(padded[i : i + 320]):
            if event.kind in ("pause", "resume", "end") and current is None:
                current = IncrementalTranscript(agent, min_piece_s=piece_s or None, min_pause_s=piece_pause_s)
            if event.kind == "pause":
                current.pause(event)
            elif event.kind == "resume":
                current.resume(event.time)
            elif event.kind == "end":
                kept += len(current.kept)
                transcript = await current.finish(event)
                texts.append(transcript.text)
                language = language or transcript.language
                current = None
        await asyncio.sleep(0)
    return join_segments(texts, language), kept


def speech_set(speech_dir: Path, endpointer) -> list[tuple[str, str, str, np.ndarray]]:
    """Every clip with a reference, (name, language, reference, 16 kHz samples): the recordings
    whole and as the live endpointer cuts them (speech only, with its pre/post-roll), and the
    synthesised questions and sentences."""
    from companion.voice.audio import decode_audio
    from companion.voice.runner import speech_only

    clips = []
    for path, channel, language, reference in load_references(speech_dir):
        name = path.name + ("" if channel is None else f":{channel}")
        samples = decode_audio(path, channel=channel).samples
        clips.append((name, language, reference, samples))
        endpointer.reset()
        cut = speech_only(endpointer, np.concatenate([samples, np.zeros(16000, dtype=np.float32)]))
        if cut is not None:
            clips.append((f"{name} (speech only)", language, reference, cut))
    for language, voice, texts in (
        ("en", "en-us", QUESTIONS_EN + TTS_SENTENCES["en"]),
        ("zh", "cmn-latn-pinyin", QUESTIONS_ZH + TTS_SENTENCES["zh"]),
    ):
        clips += [(f"espeak-{language}: {text}", language, text, espeak_utterance(text, voice)) for text in texts]
    return clips


def clip_source(clip: str) -> str:
    if clip.startswith("espeak"):
        return "espeak"
    return "speech_only" if clip.endswith("(speech only)") else "recorded"


def mean_error(rows: list[dict], pick) -> float:
    values = [r["error"] for r in rows if pick(r)]
    return round(statistics.mean(values), 4) if values else float("nan")


def asr_sweep(settings, speech_dir: Path, variants: list[str]) -> dict:
    """Decoding settings compared over the whole speech set: mean WER (English), mean CER (Mandarin)
    per source, and the total transcription time (a time only means something on a quiet machine)."""
    from companion import plugins
    from companion.voice.asr import FasterWhisperASR, FasterWhisperSettings
    from companion.voice.metrics import cer, wer
    from companion.voice.runner import VoiceStack

    context = plugins.PluginContext(data_dir=settings.data_dir)
    endpointer = VoiceStack(companion=None, asr=None, agent=None, settings=settings).endpointer()
    clips = speech_set(speech_dir, endpointer)
    languages = ["zh", "en"]
    results = {}
    for name in variants:
        options = dict(ASR_VARIANTS[name])
        live_piece_s = options.pop("live_piece_s", None)
        asr = FasterWhisperASR(FasterWhisperSettings(**options), context)
        asr.load()
        rows, seconds = [], 0.0
        for clip, language, reference, samples in clips:
            if live_piece_s is not None and clip.endswith("(speech only)"):
                continue  # the live variants cut the recordings themselves
            started = time.perf_counter()
            row: dict = {"clip": clip, "language": language}
            if live_piece_s is None:
                text = asr.transcribe(samples, languages=languages).text
            else:
                text, row["pieces_kept"] = asyncio.run(
                    live_transcript(
                        asr, endpointer, samples, languages, live_piece_s, settings.voice.piece_pause_ms / 1000
                    )
                )
            seconds += time.perf_counter() - started
            error = cer(reference, text) if language == "zh" else wer(reference, text)
            rows.append({**row, "error": round(error, 3), "hypothesis": text})

        summary = {
            f"{lang}_{metric}_{source}": mean_error(
                rows, lambda r, lang=lang, source=source: (r["language"], clip_source(r["clip"])) == (lang, source)
            )
            for lang, metric in (("en", "wer"), ("zh", "cer"))
            for source in ("recorded", "speech_only", "espeak")
        }
        summary["aishell_cer"] = mean_error(rows, lambda r: r["clip"] == "aishell-BAC009S0724W0121.wav")
        summary["cosyvoice_cer"] = mean_error(rows, lambda r: r["clip"] == "cosyvoice_zero_shot_prompt.wav")
        summary = {k: v for k, v in summary.items() if v == v}  # no NaN for sources a variant skips
        if live_piece_s is not None:
            summary["pieces_kept"] = sum(r["pieces_kept"] for r in rows)
        summary["asr_seconds"] = round(seconds, 2)
        print(f"  {name:<32} " + "  ".join(f"{k} {v}" for k, v in summary.items()), flush=True)
        results[name] = {"summary": summary, "clips": rows}
    return {"load_average": os.getloadavg()[0], "clips": len(clips), "variants": results}


def tts_section(stack) -> list[dict]:
    from companion.voice.tts.espeak import EspeakSettings, EspeakTTS

    voices = {
        "piper (en)": (stack.tts.primary, TTS_SENTENCES["en"]),
        "espeak-ng (zh)": (EspeakTTS(EspeakSettings()), TTS_SENTENCES["zh"]),
    }
    rows = []
    for name, (tts, sentences) in voices.items():
        firsts, rtfs = [], []
        for sentence in sentences:
            started = time.perf_counter()
            first = None
            duration = 0.0
            for chunk in tts.synthesize(sentence, "zh" if "zh" in name else "en"):
                first = first if first is not None else time.perf_counter() - started
                duration += chunk.duration
            rtfs.append((time.perf_counter() - started) / duration)
            firsts.append(first)
        rows.append(
            {
                "voice": name,
                "first_chunk_s": round(statistics.median(firsts), 3),
                "rtf": round(statistics.median(rtfs), 3),
            }
        )
    return rows


async def main_async(args) -> dict:
    from companion.config import load_settings
    from companion.paths import contain_library_caches
    from companion.voice.audio import decode_audio
    from companion.voice.runner import build_voice

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    data_dir = Path(args.data_dir).resolve()
    contain_library_caches(data_dir)
    settings = load_settings(data_dir=data_dir, temperature=0.0)
    if args.llm or args.model:
        settings.llm = settings.llm.merged({"plugin": args.llm, "model": args.model})
    if args.asr_variant:
        settings.asr = settings.asr.merged(ASR_VARIANTS[args.asr_variant])
    settings.voice.prefill = not args.no_prefill
    settings.voice.piece_s = args.piece_s or None
    settings.voice.first_clause_chars = args.first_clause_chars or None
    if args.context_budget is not None:
        settings.voice.context_budget_tokens = args.context_budget or None
    print(f"  voice: {settings.voice.model_dump(exclude_none=True)}; asr: {settings.asr.model_dump()}")
    load = os.getloadavg()
    print(
        f"  machine: {os.cpu_count()} cores, load average {load[0]:.1f} (other work on the machine slows every figure)"
    )
    started = time.perf_counter()
    stack = build_voice(args.character, settings, status=lambda text: print(f"  {text}"))
    for source in stack.companion.context_sources:
        wait = getattr(source, "wait_ready", None)
        if wait is not None:
            print("  waiting for the knowledge index ...")
            wait(None)
    print(f"  loaded in {time.perf_counter() - started:.1f}s; retrieval: {bool(stack.companion.context_sources)}")
    speech_dir = Path(args.testdata) / "speech"

    asr_rows, tts_rows = [], []
    if not args.latency_only:
        print("\nASR (Whisper base int8, detection restricted to", stack.agent.languages, ")")
        asr_rows = asr_section(stack, speech_dir)
        for row in asr_rows:
            head = f"  {row['file']:<36} {row['metric']} {row['error']:.3f}  RTF {row['rtf']:.3f}"
            print(f"{head}  [{row['detected']}] {row['hypothesis'][:60]}")
        tts_rows = tts_section(stack)
        print("\nTTS")
        for row in tts_rows:
            print(f"  {row['voice']:<16} first chunk {row['first_chunk_s']:.3f}s  RTF {row['rtf']:.3f}")

    recorded: list[tuple[str, np.ndarray]] = []
    for path, channel, _, _ in load_references(speech_dir):
        for k, (speech, _) in enumerate(split_utterances(stack, decode_audio(path, channel=channel).samples)):
            recorded.append((f"{path.stem}{'' if channel is None else f':{channel}'}#{k}", speech))
    english = [(f"espeak-en: {text}", espeak_utterance(text, "en-us")) for text in QUESTIONS_EN]
    chinese = [(f"espeak-zh: {text}", espeak_utterance(text, "cmn-latn-pinyin")) for text in QUESTIONS_ZH]
    samples = []  # interleaved, so that --limit still takes some of each kind
    for i in range(max(len(recorded), len(english), len(chinese))):
        samples += [group[i] for group in (recorded, english, chinese) if i < len(group)]
    if args.limit:
        samples = samples[: args.limit]

    window = settings.voice.silence_ms
    print(f"\nLatency, end of speech -> first audio ({len(samples)} utterances, silence window {window} ms)")
    rows = []
    run = time.strftime("%Y%m%d%H%M%S")  # fresh conversations: no history from earlier runs
    for i, (name, audio) in enumerate(samples):
        speech = audio[: len(audio)]
        await persona_cached(stack)
        s = await streaming_latency(stack, speech, f"bench-stream-{run}-{i}")
        await persona_cached(stack)
        q = await sequential_latency(stack, speech, f"bench-seq-{run}-{i}")
        rows.append({"utterance": name, "streaming": s, "sequential": q})
        fs, fq = s["first_audio_s"], q["first_audio_s"]
        print(
            f"  {name[:40]:<40} streaming {fs if fs is None else round(fs, 2)}s  sequential "
            f"{fq if fq is None else round(fq, 2)}s  | heard: {s['transcript'][:40]!r}"
        )
    paired = [(r["streaming"]["first_audio_s"], r["sequential"]["first_audio_s"]) for r in rows]
    paired = [(a, b) for a, b in paired if a is not None and b is not None]
    stream = [a for a, _ in paired]
    seq = [b for _, b in paired]
    summary = {
        "utterances": len(paired),
        "streaming_p50": percentile(stream, 50),
        "streaming_p90": percentile(stream, 90),
        "sequential_p50": percentile(seq, 50),
        "sequential_p90": percentile(seq, 90),
        "speedup_p50": percentile(seq, 50) / percentile(stream, 50) if stream else float("nan"),
        "speedup_median_per_utterance": statistics.median(b / a for a, b in paired) if paired else float("nan"),
        "components_median": {
            key: statistics.median(v for r in rows if (v := r["streaming"].get(key)) is not None)
            for key in (
                "endpoint_s",
                "transcript_s",
                "prefilled_s",
                "first_text_s",
                "first_sentence_s",
                "first_audio_s",
            )
            if any(r["streaming"].get(key) is not None for r in rows)
        },
    }
    stages = {
        "wait for end of turn (silence window)": ("endpoint_s", None),
        "transcript after that": ("transcript_s", "endpoint_s"),
        "rest of the speculative prefill (retrieval + prompt)": ("prefilled_s", "transcript_s"),
        "LLM first token": ("first_text_s", "prefilled_s"),
        "LLM first token (no prefill)": ("first_text_s", "transcript_s"),
        "first sentence written": ("first_sentence_s", "first_text_s"),
        "first sentence spoken (TTS)": ("first_audio_s", "first_sentence_s"),
    }
    summary["stages_median"] = {}
    for label, (end, start) in stages.items():
        spans = [
            r["streaming"][end] - (r["streaming"][start] if start else 0.0)
            for r in rows
            if r["streaming"].get(end) is not None
            and (start is None or r["streaming"].get(start) is not None)
            and (label != "LLM first token (no prefill)" or r["streaming"].get("prefilled_s") is None)
        ]
        if spans:
            summary["stages_median"][label] = statistics.median(spans)
    summary["chain_median"] = chain_after_speech(rows, settings.voice.silence_ms / 1000)
    print("\nSummary")
    print(f"  streaming   first audio p50 {summary['streaming_p50']:.2f}s  p90 {summary['streaming_p90']:.2f}s")
    print(f"  sequential  audio ready p50 {summary['sequential_p50']:.2f}s  p90 {summary['sequential_p90']:.2f}s")
    per = summary["speedup_median_per_utterance"]
    print(f"  speed-up    {summary['speedup_p50']:.2f}x at p50 (median per utterance {per:.2f}x)")
    print(
        "  streaming components (median, from end of speech): "
        + ", ".join(f"{k} {v:.2f}s" for k, v in summary["components_median"].items())
    )
    print(
        "  where the streaming time goes (medians): "
        + "; ".join(f"{k} {v:.2f}s" for k, v in summary["stages_median"].items())
    )
    if chain := summary["chain_median"]:
        print(
            f"  3x needs first audio <= {summary['sequential_p50'] / 3:.2f}s after the end of speech; the chain"
            f" both modes run once the words are known (ASR + retrieval + prompt, from the sequential run) alone takes"
            f" {chain['asr_retrieval_prefill_s']:.2f}s, then her first sentence {chain['first_sentence_s']:.2f}s"
            f" and its speech {chain['first_speech_s']:.2f}s"
        )
    if asr_rows:
        en = [r["error"] for r in asr_rows if r["metric"] == "WER"]
        zh = [r["error"] for r in asr_rows if r["file"].startswith("aishell")]
        aishell = zh[0] if zh else float("nan")
        print(
            f"  ASR English WER mean {statistics.mean(en):.3f} (goal <= 0.05); AISHELL CER {aishell:.3f} (goal <= 0.15)"
        )
    summary["load_average"] = os.getloadavg()[0]
    summary["llm"] = settings.llm.model_dump()
    summary["asr"] = settings.asr.model_dump()
    summary["voice"] = settings.voice.model_dump()
    return {"summary": summary, "asr": asr_rows, "tts": tts_rows, "latency": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--testdata", default=os.environ.get("COMPANION_TESTDATA", str(REPO.parent / "shared" / "testdata"))
    )
    parser.add_argument("--character", default="mochi")
    parser.add_argument("--data-dir", default=str(REPO / ".data" / "bench"))
    parser.add_argument("--limit", type=int, default=0, help="At most this many utterances (0: all).")
    parser.add_argument("--llm", default=None, help="LLM plugin (default: the configured one).")
    parser.add_argument("--model", default=None, help="Model for the LLM plugin.")
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "voice_latency.json")
    parser.add_argument(
        "--asr-variant", choices=list(ASR_VARIANTS), help="ASR decoding settings (default: configured)."
    )
    parser.add_argument("--latency-only", action="store_true", help="Skip the ASR and TTS sections.")
    parser.add_argument("--no-prefill", action="store_true", help="Lever off: no LLM prefill before the turn.")
    parser.add_argument(
        "--piece-s", type=float, default=1.0, help="Lever: transcribe in pieces at pauses (0: all at the end)."
    )
    parser.add_argument(
        "--context-budget",
        type=int,
        help="Lever: voice turns' retrieval budget in tokens (default: configured; 0: the chat's).",
    )
    parser.add_argument(
        "--first-clause-chars", type=int, default=10, help="Lever: first spoken chunk may end at a comma (0: off)."
    )
    parser.add_argument(
        "--asr-sweep",
        nargs="*",
        metavar="VARIANT",
        help="Only compare ASR decoding settings over the speech set (all variants when none is named): "
        + "; ".join(ASR_VARIANTS),
    )
    args = parser.parse_args()
    if not (Path(args.testdata) / "speech").is_dir():
        sys.exit(f"no speech recordings at {args.testdata}/speech (pass --testdata)")
    if args.asr_sweep is not None:
        from companion.config import load_settings
        from companion.paths import contain_library_caches

        data_dir = Path(args.data_dir).resolve()
        contain_library_caches(data_dir)
        unknown = [v for v in args.asr_sweep if v not in ASR_VARIANTS]
        if unknown:
            sys.exit(f"unknown ASR variant(s) {unknown}; known: {list(ASR_VARIANTS)}")
        print(f"  load average {os.getloadavg()[0]:.1f}")
        result = asr_sweep(
            load_settings(data_dir=data_dir), Path(args.testdata) / "speech", args.asr_sweep or list(ASR_VARIANTS)
        )
        out = args.json.with_name(args.json.stem + "_asr.json")
        out.write_text(json.dumps(result, ensure_ascii=False, indent=2, default=float), encoding="utf-8")
        print(f"\n(details: {out})")
        return
    result = asyncio.run(main_async(args))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, ensure_ascii=False, indent=2, default=float), encoding="utf-8")
    print(f"\n(details: {args.json})")


if __name__ == "__main__":
    main()
