"""Image sizes on the command line: `320` (square), `320,256` or `320x256` (height, width)."""

from __future__ import annotations


def parse_size(text: str | None, flag: str = "--input_size") -> tuple[int, int] | None:
    """`"320,256"` -> (320, 256); `"224"` -> (224, 224); None / "" -> None.

    ValueError naming the flag for anything else (non-integers, zero or negative, three parts).
    """
    if text is None or not str(text).strip():
        return None
    parts = str(text).lower().replace("x", ",").split(",")
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        sizes = []
    if len(sizes) == 1:
        sizes = sizes * 2
    if len(sizes) != 2 or min(sizes) <= 0:
        raise ValueError(f"{flag} must be N or HEIGHT,WIDTH with positive integers, got {text!r}")
    return sizes[0], sizes[1]
