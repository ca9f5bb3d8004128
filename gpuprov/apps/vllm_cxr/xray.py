"""A synthetic chest-X-ray-sized PNG for the smoke test: drawn in code, no patient data.

Grayscale, 512 x 512: a bright body outline with two darker lung fields and a spine, the shape
a chest radiograph has, so the request carries a real image of a realistic size and the model's
vision encoder has something to read.
"""

from __future__ import annotations

import struct
import zlib

SIZE = 512


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _pixel(x: float, y: float) -> int:
    """Brightness at (x, y) in [-1, 1]^2: body, lungs, spine."""
    value = 30
    if (x / 0.9) ** 2 + (y / 1.05) ** 2 < 1:
        value = 190  # soft tissue and ribs
    for cx in (-0.38, 0.38):
        if ((x - cx) / 0.3) ** 2 + ((y + 0.05) / 0.62) ** 2 < 1:
            value = 70  # the lung fields are dark on a radiograph
    if abs(x) < 0.06 and y > -0.8:
        value = 235  # the spine
    return value


def chest_xray_png(size: int = SIZE) -> bytes:
    """The PNG file's bytes (8-bit grayscale)."""
    rows = bytearray()
    for j in range(size):
        rows.append(0)  # filter: none
        y = 2 * j / (size - 1) - 1
        rows += bytes(_pixel(2 * i / (size - 1) - 1, y) for i in range(size))
    header = struct.pack(">IIBBBBB", size, size, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(bytes(rows), 9))
            + _chunk(b"IEND", b""))
