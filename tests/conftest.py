"""Shared test fixtures: the real samples folder and offline settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Two xdist workers share two cores: OpenMP threads that spin while waiting turn that into a many-fold
# slowdown of whichever torch test runs beside another one. Waiting threads sleep instead.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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


# The few tests that train or run the whole pipeline share one xdist worker (`--dist loadgroup` in the
# Makefile): run side by side on a 2-core machine they would fight for the same cores, each one slowing
# the other past the 60 s per-test limit, while the light tests fill the second worker.
HEAVY = ("test_demo.py", "test_train_learn.py", "test_train_learn_synth.py", "test_train_resume.py",
         "test_train_ddp.py")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name in HEAVY:
            item.add_marker(pytest.mark.xdist_group("torch-heavy"))
