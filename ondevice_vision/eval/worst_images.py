"""The N worst images of an evaluation, kept while it streams (their pictures only)."""

from __future__ import annotations

import heapq
import itertools

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ondevice_vision import drawing


class WorstImages:
    """Keeps the pictures of the `count` images with the highest badness (a sortable tuple).

    `add` draws a picture only when the image is among the worst so far, so an evaluation of
    thousands of images draws few.
    """

    def __init__(self, count: int):
        self.count = int(count)
        self._heap: list = []  # (badness, -order, caption, picture), the least bad on top
        self._order = itertools.count()

    def add(self, badness: tuple, caption: str, make_picture) -> None:
        if self.count <= 0:
            return
        entry = (tuple(badness), -next(self._order))
        if len(self._heap) >= self.count and entry <= self._heap[0][:2]:
            return
        item = (*entry, caption, make_picture())
        if len(self._heap) < self.count:
            heapq.heappush(self._heap, item)
        else:
            heapq.heapreplace(self._heap, item)

    def captions(self) -> list[str]:
        """Worst first."""
        return [item[2] for item in sorted(self._heap, reverse=True)]

    def picture(self, cols: int = 2) -> np.ndarray | None:
        """One sheet, worst first, each picture under its caption; None when nothing was kept."""
        if not self._heap:
            return None
        items = sorted(self._heap, reverse=True)
        return drawing.image_grid(
            [_captioned(picture, caption) for *_, caption, picture in items],
            cols=min(cols, len(items)),
            pad=6,
            pad_value=255,
        )


def _captioned(picture: np.ndarray, caption: str) -> np.ndarray:
    font = ImageFont.load_default()
    strip = Image.new("RGB", (picture.shape[1], 14), (255, 255, 255))
    ImageDraw.Draw(strip).text((2, 1), caption, fill=(0, 0, 0), font=font)
    return np.concatenate([np.asarray(strip, np.uint8), picture], axis=0)
