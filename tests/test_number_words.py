"""One number-word table (d2c/number_words.py) behind captions, SARCount and the counting evaluation."""

from __future__ import annotations

from d2c.captions.words import number_words as caption_words
from d2c.number_words import number_words
from mmsar.sarcount import render
from sarclip_train.eval.counting import WORDS, number_text


def test_words_to_ninety_nine_then_digits():
    assert [number_words(n) for n in (0, 7, 13, 20, 21, 45, 99, 100, -1)] == [
        "zero", "seven", "thirteen", "twenty", "twenty-one", "forty-five", "ninety-nine", "100", "-1"]
    assert number_words(20, up_to=20) == "twenty" and number_words(21, up_to=20) == "21"


def test_the_three_packages_use_the_one_table():
    assert caption_words is number_words
    assert tuple(number_words(n) for n in range(1, 11)) == WORDS and number_text(3, "words") == "three"
    item = {"template": "a SAR image with {n}.", "singular": "ship", "plural": "ships"}
    assert [render(item, n) for n in (1, 12, 20, 21)] == [
        "a SAR image with one ship.", "a SAR image with twelve ships.", "a SAR image with twenty ships.",
        "a SAR image with 21 ships."]
