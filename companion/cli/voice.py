"""`companion voice`: talk with a character at the microphone, or over recordings (headless)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from companion.cli.common import ConfigOption, DataDirOption, err_console, settings_from


def register(app: typer.Typer) -> None:
    app.command("voice")(voice)


class ConsoleView:
    """Shows the conversation as it happens: the transcript, then her sentences as they are ready."""

    def __init__(self, name: str, user: str) -> None:
        self.name = name
        self.user = user
        self.open = False

    def __call__(self, event) -> None:
        out = sys.stdout
        kind = event.type
        if kind == "transcript":
            self._close()
            out.write(f"{self.user}: {event.text}\n")
        elif kind == "sentence" and event.text:
            if not self.open:
                out.write(f"{self.name}: ")
                self.open = True
            out.write(event.text + ("" if event.text[-1:] in "，。！？…～" else " "))
        elif kind == "expression":
            err_console.print(f"[dim]({event.emotion}{f' -> {event.expression}' if event.expression else ''})[/]")
        elif kind == "interrupted":
            self._close()
            err_console.print(f"[yellow](interrupted; you heard: {event.heard_text or 'nothing yet'})[/]")
        elif kind == "error":
            err_console.print(f"[red]{event.code}: {event.message}[/]", highlight=False)
        elif kind == "turn_end":
            self._close()
        out.flush()

    def _close(self) -> None:
        if self.open:
            sys.stdout.write("\n")
            self.open = False


def voice(
    character: Annotated[str, typer.Option("--character", "-c", help="Character id (folder name).")] = "mochi",
    input_path: Annotated[
        Path | None, typer.Option("--input", "-i", help="A recording or a folder of them (headless: no devices).")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write her replies (WAV + JSON per input) here.")
    ] = None,
    user: Annotated[str | None, typer.Option("--user", help="Your name; history is kept per user.")] = None,
    language: Annotated[
        list[str] | None, typer.Option("--language", "-l", help="Language you speak (repeatable): zh, en...")
    ] = None,
    tts: Annotated[str | None, typer.Option("--tts", help="TTS plugin: piper, espeak-ng, gpt-sovits, coqui.")] = None,
    tts_voice: Annotated[str | None, typer.Option("--voice", help="Voice for the TTS plugin (model, name).")] = None,
    asr_model: Annotated[
        str | None, typer.Option("--asr-model", help="Whisper model: base (embedded), a CTranslate2 folder, a name.")
    ] = None,
    silence_ms: Annotated[int | None, typer.Option("--silence-ms", help="Silence that ends your turn.")] = None,
    no_barge_in: Annotated[bool, typer.Option("--no-barge-in", help="Do not stop her when you speak.")] = False,
    input_device: Annotated[str | None, typer.Option("--input-device", help="Microphone (name or index).")] = None,
    output_device: Annotated[str | None, typer.Option("--output-device", help="Speaker (name or index).")] = None,
    list_devices: Annotated[bool, typer.Option("--list-devices", help="List audio devices and exit.")] = False,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Talk with a character: speak, she answers aloud, sentence by sentence; speak again to interrupt her.

    Headless: --input speech.wav (or a folder) --output replies/ writes her reply per recording."""
    if list_devices:
        from companion.voice.devices import list_devices as show

        print(show())
        return
    settings = settings_from(config, data_dir, user_name=user)
    if tts or tts_voice:
        settings.tts = settings.tts.merged({"plugin": tts, "voice": tts_voice})
    if asr_model:
        settings.asr = settings.asr.merged({"model": asr_model})
    if language:
        settings.voice.languages = language
    if silence_ms is not None:
        settings.voice.silence_ms = silence_ms
    if no_barge_in:
        settings.voice.barge_in = False
    settings.voice.input_device = _device(input_device) if input_device is not None else settings.voice.input_device
    settings.voice.output_device = _device(output_device) if output_device is not None else settings.voice.output_device

    from companion.voice.audio import audio_files
    from companion.voice.runner import build_voice, run_files

    paths = audio_files(input_path) if input_path is not None else None
    if paths is not None and not paths:
        from companion.errors import InputFileError

        raise InputFileError(input_path, "no audio files here (wav, flac, mp3, ogg, m4a...)")
    microphone = speaker = None
    if paths is None:  # check the devices before loading models for a minute
        from companion.voice.devices import Microphone, Speaker

        microphone = Microphone(settings.voice.input_device)
        speaker = Speaker(settings.voice.output_device)
    with err_console.status("Loading speech recognition, her voice and her language model..."):
        stack = build_voice(character, settings, user=user, status=lambda text: err_console.print(f"[dim]{text}[/]"))
    view = ConsoleView(stack.companion.name, stack.agent.user_name or settings.user_name)
    if paths is not None:
        results = asyncio.run(run_files(stack, paths, output, view))
        for result in results:
            if result.get("transcript") is None or result.get("note"):
                err_console.print(f"[dim]{result['input']}: {result.get('note')}[/]")
        if output is not None:
            err_console.print(f"[dim]replies written to {output}[/]")
        else:
            print(json.dumps(results, ensure_ascii=False, indent=2))
        return
    err_console.print(
        f"[dim]Listening on {microphone.name}, speaking on {speaker.name}. Speak; Ctrl+C to leave."
        + ("" if settings.voice.barge_in else " (barge-in off)")
        + "[/]"
    )
    loop = stack.live_loop(speaker, view)
    try:
        asyncio.run(loop.run(microphone.frames()))
    finally:
        speaker.close()


def _device(value: str) -> str | int:
    return int(value) if value.isdigit() else value
