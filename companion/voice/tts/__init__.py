"""TTS plugins: piper (default), espeak-ng (fallback), gpt-sovits (HTTP), coqui (optional extra)."""

from companion.voice.tts.base import TTS, TTSSettings, VoiceRouter

__all__ = ["TTS", "TTSSettings", "VoiceRouter"]
