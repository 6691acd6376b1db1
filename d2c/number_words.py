"""English number words: the one table behind d2c's captions, mmsar's SARCount and sarclip_train's counting.

Why one module: a count written "twenty-one" in a caption and "twenty-one" in a counting prompt must be the
same word; three tables could drift apart.
"""

from __future__ import annotations

_ONES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
         "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")


def number_words(n: int, up_to: int = 99) -> str:
    """English words for 0..``up_to`` (99 at most: "twenty-one"), digits for any other number."""
    if not 0 <= n <= min(up_to, 99):
        return str(n)
    if n < 20:
        return _ONES[n]
    tens, ones = divmod(n, 10)
    return _TENS[tens] + (f"-{_ONES[ones]}" if ones else "")
