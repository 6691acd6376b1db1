"""Captions for scenes: attributes from geometry, Jinja2 templates in a sandbox, diversity statistics.

``CaptionEngine(templates_dir=None, *, captions_per_image=5, seed=0, count_threshold=10)`` renders
``engine.caption(scene) -> list[Caption]``; see docs/templates.md.
"""

from __future__ import annotations

from d2c.captions.engine import Caption, CaptionEngine, TemplateError, TemplateInfo

__all__ = ["Caption", "CaptionEngine", "TemplateError", "TemplateInfo"]
