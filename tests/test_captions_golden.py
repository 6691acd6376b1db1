"""Fixed seed + fixed scenes -> exact captions, so every template change shows in review.

Regenerate deliberately with ``D2C_REGEN_GOLDEN=1 pytest tests/test_captions_golden.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from d2c.captions import CaptionEngine
from d2c.captions.lint import battery

GOLDEN = Path(__file__).parent / "data" / "golden_captions.json"


def current() -> dict:
    engine = CaptionEngine(seed=1234)
    return {s.key: [[c.template_id, c.text] for c in engine.caption(s)] for s in battery()}


def test_golden_captions():
    got = current()
    if os.environ.get("D2C_REGEN_GOLDEN"):
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    want = json.loads(GOLDEN.read_text(encoding="utf-8"))
    assert got == want
