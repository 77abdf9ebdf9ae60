"""A tiny PNG encoder and a deterministic picture, in pure Python (zlib + struct).

Real image models take seconds; the simulator must answer hundreds of image requests a
second, so pictures are small, drawn with whole-row byte operations, and cached by the
caller. Each prompt gets its own colours and shapes so tests can tell images apart.
"""

from __future__ import annotations

import hashlib
import struct
import zlib

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def encode_png(width: int, height: int, rows: list[bytes]) -> bytes:
    """Encode 8-bit RGB rows (each `width * 3` bytes) as a PNG file."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    raw = b"".join(b"\x00" + row for row in rows)
    return b"".join(
        (
            PNG_SIGNATURE,
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", zlib.compress(raw, 6)),
            _chunk(b"IEND", b""),
        )
    )


def _chunk(tag: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(tag + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)


def fit_size(requested_w: int, requested_h: int, longest: int) -> tuple[int, int]:
    """Keep the requested aspect ratio but draw at most `longest` pixels on a side."""
    requested_w, requested_h = max(1, requested_w), max(1, requested_h)
    scale = longest / max(requested_w, requested_h)
    return max(1, round(requested_w * scale)), max(1, round(requested_h * scale))


def draw_png(seed_text: str, width: int, height: int) -> bytes:
    """A diagonal two-colour gradient with a disc and a stripe, all chosen by the seed."""
    digest = hashlib.sha256(seed_text.encode("utf-8")).digest()
    start, end, disc = digest[0:3], digest[3:6], digest[6:9]
    ramp = _ramp(start, end, width + height - 1)
    cx, cy = digest[9] * width // 256, digest[10] * height // 256
    radius = max(1, (min(width, height) * (25 + digest[11] % 25)) // 100)
    stripe_y, stripe_h = digest[12] * height // 256, max(1, height // 12)
    stripe = bytes(255 - c for c in disc) * width
    rows = []
    for y in range(height):
        row = ramp[y * 3 : (y + width) * 3]
        if stripe_y <= y < stripe_y + stripe_h:
            row = stripe
        rows.append(_with_disc(row, y, cx, cy, radius, disc, width))
    return encode_png(width, height, rows)


def _ramp(start: bytes, end: bytes, length: int) -> bytes:
    span = max(1, length - 1)
    out = bytearray()
    for i in range(length):
        out += bytes(s + (e - s) * i // span for s, e in zip(start, end, strict=True))
    return bytes(out)


def _with_disc(
    row: bytes, y: int, cx: int, cy: int, radius: int, colour: bytes, width: int
) -> bytes:
    dy = y - cy
    if abs(dy) >= radius:
        return row
    half = int((radius * radius - dy * dy) ** 0.5)
    x0, x1 = max(0, cx - half), min(width, cx + half + 1)
    if x0 >= x1:
        return row
    return row[: x0 * 3] + colour * (x1 - x0) + row[x1 * 3 :]
