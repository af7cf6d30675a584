"""Character cards: our model, SillyTavern V1/V2/V3 formats, PNG and CHARX containers."""

from companion.card.model import (
    Asset,
    CardData,
    CompanionSettings,
    Lorebook,
    LorebookEntry,
    PluginChoice,
    VoiceSettings,
)

__all__ = [
    "Asset",
    "CardData",
    "CompanionSettings",
    "Lorebook",
    "LorebookEntry",
    "PluginChoice",
    "VoiceSettings",
]
