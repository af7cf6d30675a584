"""Shared fixtures: real small models loaded once per test session, the outside test data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Converted models are cached across runs here (git-ignored), so only the first run converts.
MODEL_DATA_DIR = Path(os.environ.get("COMPANION_TEST_DATA_DIR", REPO / ".data" / "test"))
TESTDATA = Path(os.environ.get("COMPANION_TESTDATA", REPO.parent / "shared" / "testdata"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
from companion.paths import contain_library_caches  # noqa: E402

contain_library_caches(MODEL_DATA_DIR)


@pytest.fixture(scope="session")
def testdata() -> Path:
    if not TESTDATA.is_dir():
        pytest.skip(f"outside test data not found at {TESTDATA} (set COMPANION_TESTDATA)")
    return TESTDATA


@pytest.fixture(scope="session")
def model_data_dir() -> Path:
    MODEL_DATA_DIR.mkdir(parents=True, exist_ok=True)
    return MODEL_DATA_DIR


@pytest.fixture(scope="session")
def local_llm(model_data_dir: Path):
    """The embedded default dialogue model (Gemma-3-270M), loaded once for the whole session."""
    from companion.llm.local import LocalLLM, LocalLLMSettings
    from companion.plugins import PluginContext

    llm = LocalLLM(LocalLLMSettings(model="gemma3-270m"), PluginContext(data_dir=model_data_dir))
    llm.load()
    return llm


@pytest.fixture
def settings(tmp_path: Path, model_data_dir: Path):
    """Settings with a private data dir per test, sharing the converted model cache."""
    from companion.config import Settings

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (model_data_dir / "models").mkdir(exist_ok=True)
    (data_dir / "models").symlink_to(model_data_dir / "models", target_is_directory=True)
    return Settings(data_dir=data_dir, max_new_tokens=12, temperature=0.0)
