"""Identify an uploaded image from its bytes and read its header dimensions.

Nothing here decodes pixels. The type comes from magic bytes only (never from
a file name or a client's Content-Type). Dimensions are first read by the small
header parsers below, which read a bounded number of bytes; only when the
declared pixel count is acceptable is Pillow asked to open the header (restricted
to the sniffed format) to confirm that the image library can read it. This keeps
Pillow's process-wide decompression-bomb limit (and its warning) out of the way
without touching any global state, and stops oversized WEBP headers before
Pillow allocates a canvas for them.  That same header read gives the EXIF
orientation, so the size recorded is the upright (displayed) one.
"""

from __future__ import annotations

import hashlib
import mmap
import re
import struct
import zlib
from collections.abc import Callable
from typing import BinaryIO

from PIL import ExifTags, Image

from imgshare.domain import errors
from imgshare.domain.records import ImageInfo, ImageType

JPEG = ImageType(mime="image/jpeg", ext=".jpg", pil_format="JPEG")
PNG = ImageType(mime="image/png", ext=".png", pil_format="PNG")
BMP = ImageType(mime="image/bmp", ext=".bmp", pil_format="BMP")
WEBP = ImageType(mime="image/webp", ext=".webp", pil_format="WEBP")
TYPES: tuple[ImageType, ...] = (JPEG, PNG, BMP, WEBP)

#: How many leading bytes a caller must pass to :func:`sniff_type`.
SNIFF_BYTES = 32

#: Read size used while hashing an upload.
CHUNK_SIZE = 1024 * 1024

UNSUPPORTED_MESSAGE = "unsupported type: only JPEG, PNG, BMP and WEBP are accepted"
HEADER_MESSAGE = "cannot read the image header"

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_BMP_DIB_SIZES = frozenset({12, 40, 52, 56, 64, 108, 124})
# Upper bound on marker/junk steps while walking a JPEG's header segments.
_JPEG_MAX_STEPS = 100_000
# JPEG start-of-frame markers (C4 DHT, C8 JPG and CC DAC are not frames).
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# JPEG markers without a length field (TEM, RST0-7, a repeated SOI).
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})

#: The longest side accepted, in pixels: JPEG and WEBP cannot exceed it, and
#: a PNG or BMP declaring a longer one (1 x 100 000 000) would make the image
#: library allocate a row table that size with its lock held.
MAX_SIDE = 65535
#: The most scans a JPEG may have.  Progressive encoders write about ten; a
#: file repeating a scan thousands of times costs the decoder minutes of work
#: for a few bytes each (a "scan bomb"), so decoding cost must stay bounded by
#: the pixel count.
MAX_JPEG_SCANS = 100
# A marker inside a JPEG's entropy-coded data: 0xFF followed by anything but
# a stuffed zero, a restart marker (D0-D7) or another fill byte.
_JPEG_DATA_MARKER = re.compile(rb"\xff[\x01-\xcf\xd8-\xfe]")


def sniff_type(head: bytes) -> ImageType | None:
    """Return the accepted type whose magic bytes start ``head``, else None.

    ``head`` should hold the first :data:`SNIFF_BYTES` bytes of the file.
    """
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head.startswith(_PNG_SIGNATURE):
        return PNG
    if _looks_like_bmp(head):
        return BMP
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return WEBP
    return None


def _looks_like_bmp(head: bytes) -> bool:
    """True for "BM" followed by a known DIB header size at offset 14."""
    if len(head) < 18 or not head.startswith(b"BM"):
        return False
    (dib_size,) = struct.unpack_from("<I", head, 14)
    return dib_size in _BMP_DIB_SIZES


def declared_dimensions(path: str, image_type: ImageType) -> tuple[int, int]:
    """Return the dimensions the header declares, parsed without Pillow.

    Reads only the header bytes it needs. Raises :class:`errors.BadImage`
    when they are missing or malformed.
    """
    parser = _HEADER_PARSERS.get(image_type.pil_format)
    if parser is None:
        raise ValueError(f"not an accepted image type: {image_type!r}")
    try:
        with open(path, "rb") as fp:
            return parser(fp)
    except struct.error as exc:
        raise errors.BadImage(HEADER_MESSAGE) from exc


def _library_header(
    path: str, image_type: ImageType, declared: tuple[int, int]
) -> tuple[tuple[int, int], int]:
    """Open the header with Pillow (one format only); return its stored size
    and its EXIF orientation (see :func:`header_orientation`).

    Skipped, returning ``declared`` and orientation 1, when the declared pixel
    count is above Pillow's own limit: Pillow would warn or refuse, and the
    caller rejects such an image anyway when it exceeds the configured maximum.
    """
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and declared[0] * declared[1] > limit:
        return declared, 1
    try:
        with Image.open(path, formats=[image_type.pil_format]) as image:
            return image.size, header_orientation(image)
    except Exception as exc:  # any failure here means an unreadable header
        raise errors.BadImage(HEADER_MESSAGE) from exc


#: EXIF orientations (1-8) and whether each turns the picture a quarter turn
#: (5-8: the displayed width is the stored height).
ORIENTATIONS = frozenset(range(1, 9))
SWAPS_AXES = frozenset({5, 6, 7, 8})


def header_orientation(image: Image.Image) -> int:
    """The EXIF orientation (1-8) of an opened, not yet loaded image; 1 when
    absent, unreadable or out of range.

    Reads what Pillow found while opening the header, the way
    ``ImageOps.exif_transpose`` (and derive.py) read it: the EXIF block (JPEG
    APP1 "Exif", PNG ``eXIf``, WEBP ``EXIF``), else a ``tiff:Orientation`` in
    the XMP packet.  It calls the base ``Image.getexif`` on purpose: PNG's own
    ``getexif`` decodes the whole image when no ``eXIf`` chunk precedes the
    pixel data, and this never decodes pixels.  A corrupt EXIF block counts
    as no orientation.
    """
    try:
        value = Image.Image.getexif(image).get(ExifTags.Base.Orientation, 1)
    except Exception:  # a corrupt EXIF block: Pillow raises many kinds
        return 1
    return value if isinstance(value, int) and value in ORIENTATIONS else 1


def upright_size(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    """The displayed size of a picture stored at ``size`` with ``orientation``."""
    width, height = size
    return (height, width) if orientation in SWAPS_AXES else (width, height)


def _read_exact(fp: BinaryIO, count: int) -> bytes:
    """Read exactly ``count`` bytes or raise BadImage (truncated header)."""
    data = fp.read(count)
    if len(data) != count:
        raise errors.BadImage(HEADER_MESSAGE)
    return data


def _png_header(fp: BinaryIO) -> tuple[int, int]:
    """Dimensions from a PNG's IHDR chunk, whose CRC must be right."""
    data = _read_exact(fp, 33)
    length, chunk_type = struct.unpack_from(">I4s", data, 8)
    ihdr = data[16:29]
    (crc,) = struct.unpack_from(">I", data, 29)
    if length != 13 or chunk_type != b"IHDR" or zlib.crc32(b"IHDR" + ihdr) != crc:
        raise errors.BadImage(HEADER_MESSAGE)
    width, height = struct.unpack_from(">II", ihdr)
    if width > 0x7FFFFFFF or height > 0x7FFFFFFF:
        raise errors.BadImage(HEADER_MESSAGE)
    return width, height


def _bmp_header(fp: BinaryIO) -> tuple[int, int]:
    """Dimensions from a BMP's DIB header (height may be negative: top-down)."""
    data = _read_exact(fp, 26)
    (dib_size,) = struct.unpack_from("<I", data, 14)
    if dib_size not in _BMP_DIB_SIZES:
        raise errors.BadImage(HEADER_MESSAGE)
    if dib_size == 12:
        return struct.unpack_from("<HH", data, 18)
    width, height = struct.unpack_from("<ii", data, 18)
    if width < 0:
        raise errors.BadImage(HEADER_MESSAGE)
    return width, abs(height)


def _webp_header(fp: BinaryIO) -> tuple[int, int]:
    """Dimensions from a WEBP's first chunk (VP8, VP8L or VP8X canvas)."""
    data = _read_exact(fp, 30)
    chunk = data[12:16]
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack_from("<HH", data, 26)
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and data[20] == 0x2F:
        (bits,) = struct.unpack_from("<I", data, 21)
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height
    raise errors.BadImage(HEADER_MESSAGE)


def _jpeg_header(fp: BinaryIO) -> tuple[int, int]:
    """Dimensions from the last start-of-frame segment before start-of-scan.

    Walks the marker segments the way Pillow does (skipping junk and fill
    bytes), seeking over segment bodies. A header without a frame, or one
    that ends before the scan starts, is unreadable.
    """
    _read_exact(fp, 2)  # SOI
    size: tuple[int, int] | None = None
    for _ in range(_JPEG_MAX_STEPS):
        marker = _next_jpeg_marker(fp)
        if marker is None or marker in _JPEG_STANDALONE:
            continue
        if marker == 0xD9:  # end of image before any scan
            break
        (length,) = struct.unpack(">H", _read_exact(fp, 2))
        if length < 2:
            break
        if marker == 0xDA:  # start of scan: the header is complete
            if size is None:
                break
            return size
        body = length - 2
        if marker in _JPEG_SOF:
            frame = _read_exact(fp, 5)
            height, width = struct.unpack_from(">HH", frame, 1)
            size = (width, height)
            body -= 5
        if body < 0:
            break
        fp.seek(body, 1)
    raise errors.BadImage(HEADER_MESSAGE)


def _next_jpeg_marker(fp: BinaryIO) -> int | None:
    """Read one step of a JPEG marker walk.

    Returns the marker code after an 0xFF prefix (fill bytes skipped), or
    None for a junk byte or an escaped 0xFF00. Raises BadImage at the end of
    the file.
    """
    if _read_exact(fp, 1) != b"\xff":
        return None
    code = _read_exact(fp, 1)[0]
    while code == 0xFF:
        code = _read_exact(fp, 1)[0]
    return None if code == 0x00 else code


_HEADER_PARSERS: dict[str, Callable[[BinaryIO], tuple[int, int]]] = {
    JPEG.pil_format: _jpeg_header,
    PNG.pil_format: _png_header,
    BMP.pil_format: _bmp_header,
    WEBP.pil_format: _webp_header,
}


def count_jpeg_scans(path: str, limit: int = MAX_JPEG_SCANS) -> int:
    """The number of scans (SOS segments) in the JPEG at ``path``, counting
    stops once it passes ``limit``.

    Walks the marker segments, skipping each segment's body by its length and
    searching entropy-coded data for the next marker in C (a regular
    expression over a memory map), so a 32 MiB file takes milliseconds.  A
    file that ends early simply ends the count: truncation is the decoder's
    concern.
    """
    with open(path, "rb") as fp:
        try:
            data = mmap.mmap(fp.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # an empty file cannot be mapped
            return 0
    with data:
        return _count_scans(data, limit)


def _count_scans(data: mmap.mmap | bytes, limit: int) -> int:
    scans = 0
    pos = 2  # after SOI
    end = len(data)
    in_scan = False
    while pos < end:
        if in_scan:
            found = _JPEG_DATA_MARKER.search(data, pos)
            if found is None:
                break
            pos = found.start()
        if data[pos] != 0xFF:
            pos += 1  # junk between segments, as decoders tolerate
            continue
        while pos < end and data[pos] == 0xFF:
            pos += 1  # fill bytes
        if pos >= end:
            break
        marker = data[pos]
        pos += 1
        if marker == 0x00 or marker in _JPEG_STANDALONE:
            continue
        if marker == 0xD9:  # end of image
            break
        if pos + 2 > end:
            break
        length = (data[pos] << 8) | data[pos + 1]
        if length < 2:
            break
        pos += length
        in_scan = marker == 0xDA
        if in_scan:
            scans += 1
            if scans > limit:
                break
    return scans


def check_jpeg_scans(path: str, limit: int = MAX_JPEG_SCANS) -> None:
    """BadImage (400) when the JPEG at ``path`` has more than ``limit`` scans."""
    if count_jpeg_scans(path, limit) > limit:
        raise errors.BadImage(
            f"the JPEG has more than {limit} scans; such a file costs minutes to decode"
        )


def inspect_file(path: str, max_pixels: int) -> ImageInfo:
    """Identify, measure and hash the upload at ``path``.

    Raises :class:`errors.BadRequest` for an empty file,
    :class:`errors.UnsupportedType` (415) for anything but JPEG, PNG, BMP
    and WEBP, :class:`errors.BadImage` (400) for an unreadable header, a
    zero dimension or a JPEG with more than :data:`MAX_JPEG_SCANS` scans, and
    :class:`errors.TooLarge` (413) when the header declares more than
    ``max_pixels`` pixels or a side longer than :data:`MAX_SIDE`. These
    limits are checked before Pillow ever opens the file.

    The width and height returned are the picture's upright (displayed) size:
    the stored size with the EXIF orientation applied (orientations 5-8 swap
    them), as derive.py stands its copies upright.  The limits are the same
    either way (same product, same sides).  The orientation is read from the
    header only; a corrupt EXIF block falls back to the stored size.
    """
    size, digest, head = _hash_file(path)
    if size == 0:
        raise errors.BadRequest("empty file")
    image_type = sniff_type(head)
    if image_type is None:
        raise errors.UnsupportedType(UNSUPPORTED_MESSAGE)
    declared = declared_dimensions(path, image_type)
    _check_pixels(declared, max_pixels)
    if image_type is JPEG:
        check_jpeg_scans(path)
    stored, orientation = _library_header(path, image_type, declared)
    _check_pixels(stored, max_pixels)
    width, height = upright_size(stored, orientation)
    return ImageInfo(
        type=image_type, width=width, height=height, size=size, sha256=digest, orientation=orientation
    )


def _hash_file(path: str) -> tuple[int, str, bytes]:
    """Return the size, SHA-256 hex digest and first bytes of a file."""
    digest = hashlib.sha256()
    size = 0
    head = b""
    with open(path, "rb") as fp:
        while chunk := fp.read(CHUNK_SIZE):
            if len(head) < SNIFF_BYTES:
                head += chunk[: SNIFF_BYTES - len(head)]
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest(), head


def _check_pixels(dimensions: tuple[int, int], max_pixels: int) -> None:
    """Refuse a zero dimension (BadImage), a side over :data:`MAX_SIDE` or too
    many pixels (TooLarge)."""
    width, height = dimensions
    if width <= 0 or height <= 0:
        raise errors.BadImage("the image has a zero width or height")
    if width > MAX_SIDE or height > MAX_SIDE:
        raise errors.TooLarge(
            f"image is {width}x{height} pixels; neither side may exceed {MAX_SIDE} pixels"
        )
    pixels = width * height
    if pixels > max_pixels:
        raise errors.TooLarge(
            f"image is {width}x{height} = {pixels} pixels, above the limit of {max_pixels} pixels"
        )
