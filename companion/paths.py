"""Where derived state lives: the data directory (models, indexes, history, caches).

Character folders stay portable; everything we compute from them is kept here, keyed by
character and content hash. `COMPANION_DATA_DIR` or `--data-dir` moves it.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

DATA_DIR_ENV = "COMPANION_DATA_DIR"
CONFIG_ENV = "COMPANION_CONFIG"
SHIPPED_CHARACTERS = Path(__file__).resolve().parent.parent / "characters"


def default_data_dir() -> Path:
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env).expanduser() if env else Path(platformdirs.user_data_dir("companion"))


def default_config_file() -> Path:
    env = os.environ.get(CONFIG_ENV)
    return Path(env).expanduser() if env else Path(platformdirs.user_config_dir("companion")) / "config.toml"


def contain_library_caches(data_dir: Path) -> None:
    """Point third-party caches (HF, chroma, matplotlib, ...) into our data dir and keep hubs offline
    unless the user configured otherwise. Called once at start-up, before heavy imports."""
    cache = data_dir / "cache"
    defaults = {
        "HF_HOME": cache / "huggingface",
        "MPLCONFIGDIR": cache / "matplotlib",
        "XDG_CACHE_HOME": cache / "xdg",
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, str(value))
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
