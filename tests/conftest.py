"""Shared test fixtures: the real samples folder and offline settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
REAL_SAMPLES = REPO.parent / "shared" / "real-samples"


@pytest.fixture(scope="session")
def real_samples() -> Path:
    """``../shared/real-samples``; skipped only outside CI when the folder is absent."""
    if not REAL_SAMPLES.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide {REAL_SAMPLES}")
        pytest.skip(f"{REAL_SAMPLES} not present")
    return REAL_SAMPLES
