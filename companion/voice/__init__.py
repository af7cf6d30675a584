"""Voice: speech in (VAD, endpointing, ASR) and speech out (sentences, tags, TTS, lip-sync), streaming.

    mic -> Silero VAD + endpointing -> faster-whisper -> Companion.turn
        -> TextStage (sentences, expressions) -> SpeechStage (TTS while the LLM writes) -> speaker

Importing this package is cheap; models load on first use. Needs the `voice` extra.
"""
