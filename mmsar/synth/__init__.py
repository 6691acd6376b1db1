"""Synthetic SAR scenes with exact annotations (``mmsar synth``): clutter, targets, layout, rendering.

Public API: :func:`generate` and :class:`SynthResult`; see docs/synth.md.
"""

from mmsar.synth.generate import SynthResult, generate
from mmsar.synth.targets import CLASSES

__all__ = ["CLASSES", "SynthResult", "generate"]
