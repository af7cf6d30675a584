"""Fixtures for the training-data tests: the shared testdata folder and our own fixtures."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parent / "fixtures"


def testdata_dir() -> Path:
    return Path(os.environ.get("COMPANION_TESTDATA", ROOT.parent / "shared" / "testdata"))


@pytest.fixture(scope="session")
def testdata() -> Path:
    folder = testdata_dir()
    if not folder.is_dir():
        pytest.skip(f"shared testdata not found at {folder} (set COMPANION_TESTDATA to run these tests)")
    return folder


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture
def mochi(tmp_path: Path) -> Path:
    """A copy of the shipped demo character in a characters dir of its own."""
    source = ROOT / "characters" / "mochi"
    if not (source / "card.yaml").is_file():
        pytest.skip("characters/mochi is not in this checkout")
    target = tmp_path / "characters" / "mochi"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("dataset"))
    return target
