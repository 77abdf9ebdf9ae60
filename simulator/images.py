"""Generated images: drawn once per (model, prompt, size, index), then served from memory.

The cache is what keeps the simulator at hundreds of images per second: a repeated prompt
costs a dict lookup, and the base64 form is computed at most once per image.
"""

from __future__ import annotations

import base64
import hashlib
from collections import OrderedDict
from dataclasses import dataclass

from simulator.png import draw_png, fit_size

MAX_CACHED_IMAGES = 20_000


@dataclass
class StoredImage:
    name: str  # file name under /files/
    png: bytes
    _b64: str | None = None

    @property
    def b64(self) -> str:
        if self._b64 is None:
            self._b64 = base64.b64encode(self.png).decode("ascii")
        return self._b64


class ImageStore:
    """An LRU of drawn PNGs keyed by what was asked for; also backs `GET /files/{name}`."""

    def __init__(self, capacity: int = MAX_CACHED_IMAGES) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, StoredImage] = OrderedDict()

    def get_or_draw(
        self, *, model: str, prompt: str, width: int, height: int, longest: int, index: int = 0
    ) -> StoredImage:
        seed_text = f"{model}\x1f{prompt}\x1f{width}x{height}\x1f{index}"
        key = hashlib.sha256(f"{seed_text}\x1f{longest}".encode()).hexdigest()[:32]
        name = f"{key}.png"
        item = self._items.get(name)
        if item is None:
            draw_w, draw_h = fit_size(width, height, longest)
            item = StoredImage(name=name, png=draw_png(seed_text, draw_w, draw_h))
            self._items[name] = item
            if len(self._items) > self.capacity:
                self._items.popitem(last=False)
        else:
            self._items.move_to_end(name)
        return item

    def file(self, name: str) -> StoredImage | None:
        return self._items.get(name)


def parse_size(size: object, default: tuple[int, int] = (1024, 1024)) -> tuple[int, int] | None:
    """ "WxH" → (w, h); "auto"/None → default; anything else → None (a 400 for the caller)."""
    if size is None or size == "auto":
        return default
    if not isinstance(size, str) or "x" not in size:
        return None
    width_s, _, height_s = size.lower().partition("x")
    if not (width_s.isdigit() and height_s.isdigit()):
        return None
    width, height = int(width_s), int(height_s)
    if not (1 <= width <= 4096 and 1 <= height <= 4096):
        return None
    return width, height
