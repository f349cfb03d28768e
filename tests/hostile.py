"""Hostile images for tests and benchmarks: scan bombs, absurd dimensions.

Each builder returns the bytes of a file that is well formed as far as its
header goes, so it reaches the checks that must refuse it.
"""

from __future__ import annotations

import io
import struct
import zlib


def progressive_jpeg(size: tuple[int, int] = (64, 48), mode: str = "L", flat: bool = False) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    image = Image.new("L", size, 128) if flat else Image.linear_gradient("L").resize(size)
    image.convert(mode).save(out, "JPEG", progressive=True)
    return out.getvalue()


def scan_bomb(repeats: int, size: tuple[int, int] = (64, 48), mode: str = "L") -> bytes:
    """A progressive JPEG whose last scan is repeated ``repeats`` more times.

    Each repeat is a complete SOS segment with its entropy-coded data: a
    decoder works through every one of them at the cost of a whole scan.  The
    picture is flat grey, so a refinement scan is a few hundred bytes even at
    10000x10000 (runs of empty blocks), as in the attack.
    """
    data = progressive_jpeg(size, mode, flat=True)
    assert data.endswith(b"\xff\xd9")
    eoi = len(data) - 2
    last_scan = data.rfind(b"\xff\xda")  # 0xFF 0xDA cannot occur inside scan data
    return data[:eoi] + data[last_scan:eoi] * repeats + data[eoi:]


def bmp_claiming(width: int, height: int) -> bytes:
    """A 24-bit BMP header declaring ``width`` x ``height``, with a few pixel bytes."""
    pixels = b"\x00" * 48
    dib = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    head = b"BM" + struct.pack("<IHHI", 14 + len(dib) + len(pixels), 0, 0, 14 + len(dib))
    return head + dib + pixels


def png_claiming(width: int, height: int, idat: bytes = b"") -> bytes:
    """A PNG (valid IHDR and CRCs) declaring ``width`` x ``height`` grey pixels."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", idat or zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))
