"""Find and remove the location (GPS) metadata of an original, without re-encoding it.

An original is served verbatim, so a phone photo's position would be public at its
Original URL.  :func:`examine` reads only the metadata blocks of a JPEG, PNG or
WEBP file (bounded reads: JPEG segments before the first scan, PNG and WEBP
chunk headers, seeking over the image data) and tells whether it carries a
location, and which byte ranges would have to change to remove it.
:func:`strip_location` then copies the file with only those ranges replaced.

Where location lives, and how it is removed:

* EXIF (JPEG APP1 ``Exif``, PNG ``eXIf``, PNG ``Raw profile type exif``/``APP1``
  text chunks as ImageMagick writes them, WEBP ``EXIF``): the GPS IFD, found
  through tag 0x8825 of IFD0 (or of IFD1).  The TIFF structure is edited in
  place: the 0x8825 entry is removed from its IFD (the entries after it move up
  one slot, the freed slot at the end is zeroed), and the GPS IFD and the values
  it points to are zeroed.  Nothing else moves, so every other offset (MakerNote
  included) stays valid, and the block keeps its length.
* XMP (JPEG APP1 ``http://ns.adobe.com/xap/1.0/`` and extended XMP chunks, PNG
  ``XML:com.adobe.xmp``, WEBP ``XMP ``): every property whose local name starts
  with ``GPS`` in any case (``exif:GPSLatitude``, ``drone-dji:GpsLongitude``),
  as an attribute or as an element, is overwritten with spaces: the packet keeps
  its length and stays well-formed.

So a JPEG's or WEBP's file keeps its size (same-length overwrites); a PNG's
changed chunks get a new CRC (and a compressed text chunk is compressed again).
The image data (JPEG scans, PNG ``IDAT``, WEBP ``VP8``/``VP8L``/``ALPH``) is
copied byte for byte.

"Carries a location" means coordinates: a GPS IFD with GPSLatitude (2) or
GPSLongitude (4), or an XMP GPSLatitude/GPSLongitude property.  Removal takes
every GPS field, coordinates or not (altitude, time, direction).

Hostile input never crashes or hangs the reading: every offset is checked
against the block, IFD chains are followed at most :data:`MAX_IFDS` steps and
never twice through the same IFD, walks are bounded in steps, and compressed
text is inflated up to :data:`MAX_METADATA` bytes.  A block that cannot be read
(a TIFF header or IFD0 out of range, a segment or chunk running past the end of
the file, text that does not inflate, metadata over :data:`MAX_METADATA`) is
left as it is and reported in :attr:`Findings.problems`: it does not count as a
location, and a caller asked to remove the location refuses the file (400)
rather than store what it could not check.
"""

from __future__ import annotations

import os
import re
import struct
import tempfile
import zlib
from typing import BinaryIO

import attrs

from imgshare.domain import errors
from imgshare.domain.sniff import (
    _JPEG_STANDALONE,
    JPEG,
    PNG,
    SNIFF_BYTES,
    WEBP,
    _next_jpeg_marker,
    sniff_type,
)

#: The largest metadata block read into memory (an eXIf chunk, inflated text).
MAX_METADATA = 4 * 1024 * 1024
#: IFDs followed along one chain (IFD0, IFD1 and a few hostile extras).
MAX_IFDS = 8
#: Segment or chunk steps walked before giving up (tiny hostile chunks).
MAX_STEPS = 100_000
#: GPS properties removed from one XMP packet before it is called unreadable.
MAX_XMP_PROPERTIES = 256

GPS_IFD_TAG = 0x8825
_GPS_COORDINATES = frozenset({2, 4})  # GPSLatitude, GPSLongitude
_TIFF_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4}

_EXIF_HEADER = b"Exif\x00\x00"
_XMP_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"
_XMP_EXTENSION_HEADER = b"http://ns.adobe.com/xmp/extension/\x00"
_XMP_EXTENSION_PREFIX = 32 + 4 + 4  # GUID, full length, offset
_PNG_TEXT = frozenset({b"tEXt", b"zTXt", b"iTXt"})
_PNG_XMP_KEYWORD = b"XML:com.adobe.xmp"
_PNG_RAW_EXIF_KEYWORDS = frozenset({b"Raw profile type exif", b"Raw profile type APP1"})

# A GPS property's qualified name: any prefix, a local name starting with "GPS".
_GPS_NAME = rb"[A-Za-z_][\w.-]*:(?i:gps)[\w.-]*"
_GPS_ATTRIBUTE = re.compile(rb"(?<=\s)(" + _GPS_NAME + rb")\s*=\s*(?:\"[^\"]*\"|'[^']*')")
_GPS_OPEN_TAG = re.compile(rb"<(" + _GPS_NAME + rb")(?:\s[^<>]*)?>")


@attrs.frozen
class Edit:
    """Replace the bytes ``start``..``end`` of the file with ``data``."""

    start: int
    end: int
    data: bytes


@attrs.frozen
class Findings:
    """What :func:`examine` found in one file."""

    #: The file carries coordinates (EXIF GPS or XMP GPS latitude/longitude).
    has_location: bool = False
    #: The edits that remove every GPS field found (empty: nothing to remove).
    edits: tuple[Edit, ...] = ()
    #: Metadata blocks that could not be read, in words (left as they are).
    problems: tuple[str, ...] = ()


class _Collector:
    def __init__(self) -> None:
        self.has_location = False
        self.edits: list[Edit] = []
        self.problems: list[str] = []

    def findings(self) -> Findings:
        return Findings(self.has_location, tuple(sorted(self.edits, key=lambda e: e.start)),
                        tuple(self.problems))


# ---------------------------------------------------------------- entry points


def examine(path: str) -> Findings:
    """Read the metadata of the file at ``path``; other types than JPEG, PNG and WEBP
    (and files too short to be one) have none to find."""
    with open(path, "rb") as fp:
        head = fp.read(SNIFF_BYTES)
        image_type = sniff_type(head)
        found = _Collector()
        size = os.fstat(fp.fileno()).st_size
        if image_type is JPEG:
            _examine_jpeg(fp, found)
        elif image_type is PNG:
            _examine_png(fp, size, found)
        elif image_type is WEBP:
            _examine_webp(fp, size, found)
        return found.findings()


def strip_location(path: str, findings: Findings | None = None) -> Findings:
    """Remove the location metadata of the file at ``path`` in place (through a
    temporary file in the same folder, then a rename); return what was found.

    BadImage (400), the file unchanged, when a metadata block could not be read:
    it might hold a location this cannot remove."""
    findings = examine(path) if findings is None else findings
    if findings.problems:
        raise errors.BadImage(f"cannot remove the location metadata: {findings.problems[0]}")
    if not findings.edits:
        return findings
    folder, name = os.path.split(path)
    fd, temporary = tempfile.mkstemp(dir=folder or ".", prefix="upload-strip-")
    try:
        with os.fdopen(fd, "wb") as out, open(path, "rb") as source:
            apply_edits(source, out, findings.edits)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
    return findings


def apply_edits(source: BinaryIO, out: BinaryIO, edits: tuple[Edit, ...], chunk: int = 1024 * 1024) -> None:
    """Copy ``source`` to ``out`` with each edit's range replaced (edits sorted and
    not overlapping), in bounded memory."""
    position = 0
    for edit in edits:
        _copy(source, out, edit.start - position, chunk)
        out.write(edit.data)
        source.seek(edit.end)
        position = edit.end
    while data := source.read(chunk):
        out.write(data)


def _copy(source: BinaryIO, out: BinaryIO, count: int, chunk: int) -> None:
    while count > 0:
        data = source.read(min(chunk, count))
        if not data:
            return
        out.write(data)
        count -= len(data)


# ------------------------------------------------------------------------ TIFF


def strip_tiff(block: bytes) -> tuple[bool, bytes | None, str | None]:
    """Remove the GPS IFD of one TIFF (EXIF) block: ``(has coordinates, the block
    edited in place or None when it has no GPS IFD, a problem in words or None)``.
    The edited block has the same length and every other offset unchanged."""
    if len(block) < 8 or block[:2] not in (b"II", b"MM"):
        return False, None, "the EXIF block has no TIFF header"
    order = "<" if block[:2] == b"II" else ">"
    magic, first = struct.unpack_from(order + "HI", block, 2)
    if magic != 42:
        return False, None, "the EXIF block has no TIFF header"
    out = bytearray(block)
    has_location = False
    changed = False
    seen: set[int] = set()
    ifds: list[tuple[int, int]] = []  # (start, end) of every IFD walked
    offset = first
    for index in range(MAX_IFDS):
        if offset == 0 or offset in seen:
            break
        seen.add(offset)
        bounds = _ifd_bounds(out, order, offset)
        if bounds is None:
            if index == 0:
                return False, None, "the EXIF block's first IFD lies outside it"
            break  # a broken IFD1 pointer: readers stop there too
        ifds.append(bounds)
        count = bounds[2]
        gps_entries = [i for i in range(count)
                       if struct.unpack_from(order + "H", out, offset + 2 + 12 * i)[0] == GPS_IFD_TAG]
        for i in reversed(gps_entries):
            entry = offset + 2 + 12 * i
            (pointer,) = struct.unpack_from(order + "I", out, entry + 8)
            has_location |= _blank_gps_ifd(out, order, pointer, seen)
            end = bounds[1]
            out[entry:end - 12] = out[entry + 12:end]
            out[end - 12:end] = bytes(12)
            count -= 1
            struct.pack_into(order + "H", out, offset, count)
            bounds = (offset, end - 12, count)
            changed = True
        (offset,) = struct.unpack_from(order + "I", out, offset + 2 + 12 * count)
    return has_location, (bytes(out) if changed else None), None


def tiff_has_location(block: bytes) -> bool:
    """Whether one TIFF (EXIF) block has GPS coordinates (a read-only :func:`strip_tiff`)."""
    return strip_tiff(block)[0]


def _ifd_bounds(data: bytearray, order: str, offset: int) -> tuple[int, int, int] | None:
    """(start, end including the next-IFD pointer, entry count) of the IFD at
    ``offset``, or None when it does not fit in ``data``."""
    if offset < 8 or offset + 2 > len(data):
        return None
    (count,) = struct.unpack_from(order + "H", data, offset)
    end = offset + 2 + 12 * count + 4
    return None if end > len(data) else (offset, end, count)


def _blank_gps_ifd(out: bytearray, order: str, offset: int, ifds: set[int]) -> bool:
    """Zero the GPS IFD at ``offset`` and the values it points to; whether it held
    coordinates.  One out of range (or that is also another IFD of the chain) is
    left alone: the pointer to it goes anyway."""
    if offset in ifds:
        return False
    bounds = _ifd_bounds(out, order, offset)
    if bounds is None:
        return False
    start, end, count = bounds
    has_coordinates = False
    for i in range(count):
        entry = start + 2 + 12 * i
        tag, kind, number, value = struct.unpack_from(order + "HHII", out, entry)
        has_coordinates |= tag in _GPS_COORDINATES
        size = _TIFF_TYPE_SIZES.get(kind, 0) * number
        if size > 4 and value >= 8 and value + size <= len(out):
            out[value:value + size] = bytes(size)
    out[start:end] = bytes(end - start)
    return has_coordinates


# ------------------------------------------------------------------------- XMP


def strip_xmp(packet: bytes) -> tuple[bool, bytes | None, str | None]:
    """Overwrite every GPS property of one XMP packet with spaces: ``(has
    coordinates, the packet of the same length or None when it has none, a problem
    or None)``."""
    spans: list[tuple[int, int]] = []
    names: list[bytes] = []
    for found in _GPS_ATTRIBUTE.finditer(packet):
        spans.append(found.span())
        names.append(found.group(1))
    position = 0
    unclosed: set[bytes] = set()  # names whose closing tag is absent past some point
    opened = 0
    while len(names) <= MAX_XMP_PROPERTIES:
        found = _GPS_OPEN_TAG.search(packet, position)
        if found is None:
            break
        opened += 1
        if opened > MAX_XMP_PROPERTIES:  # each unclosed one costs a search to the end
            names.extend([b""] * (MAX_XMP_PROPERTIES + 1 - len(names)))
            break
        name = found.group(1)
        position = found.end()
        if found.group(0).endswith(b"/>"):
            end = found.end()
        elif name in unclosed:
            continue
        else:
            end = _closing_tag_end(packet, name, found.end())
            if end < 0:
                unclosed.add(name)
                continue
        spans.append((found.start(), end))
        names.append(name)
        position = end
    if len(names) > MAX_XMP_PROPERTIES:
        return False, None, "the XMP packet has too many GPS properties"
    if not spans:
        return False, None, None
    has_location = any(n.split(b":", 1)[1].lower() in (b"gpslatitude", b"gpslongitude") for n in names if n)
    out = bytearray(packet)
    for start, end in spans:
        # Attribute spans may lie inside an element span already blanked: harmless.
        out[start:end] = b" " * (end - start)
    return has_location, bytes(out), None


def _closing_tag_end(packet: bytes, name: bytes, start: int) -> int:
    """Where the first ``</name>`` (spaces allowed before ``>``) after ``start`` ends; -1 if none."""
    needle = b"</" + name
    while (at := packet.find(needle, start)) >= 0:
        after = at + len(needle)
        while after < len(packet) and packet[after] in b" \t\r\n":
            after += 1
        if after < len(packet) and packet[after] == ord(">"):
            return after + 1
        start = at + 1
    return -1


# ------------------------------------------------------------------------ JPEG


def _examine_jpeg(fp: BinaryIO, found: _Collector) -> None:
    """Walk the segments before the first scan; APP1 Exif and XMP are examined."""
    fp.seek(2)
    for _ in range(MAX_STEPS):
        try:
            marker = _next_jpeg_marker(fp)
            if marker is None or marker in _JPEG_STANDALONE:
                continue
            if marker in (0xD9, 0xDA):  # end of image, start of scan: no metadata past here
                return
            raw = fp.read(2)
            if len(raw) != 2:
                raise errors.BadImage("truncated")
        except errors.BadImage:
            found.problems.append("the JPEG ends before its image data")
            return
        (length,) = struct.unpack(">H", raw)
        if length < 2:
            found.problems.append("a JPEG segment has a length below 2")
            return
        if marker != 0xE1:
            fp.seek(length - 2, 1)
            continue
        start = fp.tell()
        body = fp.read(length - 2)
        if len(body) != length - 2:
            found.problems.append("a JPEG metadata segment runs past the end of the file")
            return
        _examine_app1(body, start, found)
    found.problems.append("the JPEG has too many segments before its image data")


def _examine_app1(body: bytes, start: int, found: _Collector) -> None:
    if body.startswith(_EXIF_HEADER):
        skip = len(_EXIF_HEADER)
        _record(found, strip_tiff(body[skip:]), start + skip)
    elif body.startswith(_XMP_HEADER):
        skip = len(_XMP_HEADER)
        _record(found, strip_xmp(body[skip:]), start + skip)
    elif body.startswith(_XMP_EXTENSION_HEADER):
        skip = len(_XMP_EXTENSION_HEADER) + _XMP_EXTENSION_PREFIX
        _record(found, strip_xmp(body[skip:]), start + skip)


def _record(found: _Collector, result: tuple[bool, bytes | None, str | None], start: int) -> None:
    """Note a same-length edit of a block that starts at ``start`` in the file."""
    has_location, edited, problem = result
    found.has_location |= has_location
    if problem is not None:
        found.problems.append(problem)
    if edited is not None:
        found.edits.append(Edit(start, start + len(edited), edited))


# ------------------------------------------------------------------------- PNG


def _examine_png(fp: BinaryIO, size: int, found: _Collector) -> None:
    """Walk every chunk (seeking over the others); ``eXIf`` and the text chunks that
    hold EXIF or XMP are examined, and rebuilt (new length, new CRC) when edited."""
    position = 8
    for _ in range(MAX_STEPS):
        fp.seek(position)
        header = fp.read(8)
        if len(header) < 8:
            return  # no IEND: the decoder's concern, there is no more metadata
        length, kind = struct.unpack(">I4s", header)
        end = position + 12 + length
        if end > size:
            found.problems.append("a PNG chunk runs past the end of the file")
            return
        if kind == b"eXIf" or kind in _PNG_TEXT:
            if length > MAX_METADATA:
                if kind == b"eXIf" or _png_keyword(fp.read(80)) in (_PNG_XMP_KEYWORD, *_PNG_RAW_EXIF_KEYWORDS):
                    found.problems.append("a PNG metadata chunk is too large to examine")
            else:
                data = fp.read(length)
                _examine_png_chunk(kind, data, position, end, found)
        elif kind == b"IEND":
            return
        position = end
    found.problems.append("the PNG has too many chunks")


def _png_keyword(data: bytes) -> bytes:
    return data.split(b"\x00", 1)[0]


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _examine_png_chunk(kind: bytes, data: bytes, start: int, end: int, found: _Collector) -> None:
    if kind == b"eXIf":
        skip = len(_EXIF_HEADER) if data.startswith(_EXIF_HEADER) else 0
        has_location, edited, problem = strip_tiff(data[skip:])
        _note(found, has_location, problem)
        if edited is not None:
            found.edits.append(Edit(start, end, _png_chunk(kind, data[:skip] + edited)))
        return
    keyword, _, rest = data.partition(b"\x00")
    if keyword != _PNG_XMP_KEYWORD and keyword not in _PNG_RAW_EXIF_KEYWORDS:
        return
    try:
        prefix, text, compressed = _png_text(kind, rest)
    except ValueError as e:
        found.problems.append(f"the PNG text chunk {keyword.decode('latin-1')!r} {e}")
        return
    if keyword == _PNG_XMP_KEYWORD:
        has_location, edited, problem = strip_xmp(text)
    else:
        has_location, edited, problem = _strip_raw_profile(text)
    _note(found, has_location, problem)
    if edited is not None:
        body = zlib.compress(edited) if compressed else edited
        found.edits.append(Edit(start, end, _png_chunk(kind, keyword + b"\x00" + prefix + body)))


def _note(found: _Collector, has_location: bool, problem: str | None) -> None:
    found.has_location |= has_location
    if problem is not None:
        found.problems.append(problem)


def _png_text(kind: bytes, rest: bytes) -> tuple[bytes, bytes, bool]:
    """(the bytes between keyword and text, the text, whether it was compressed);
    ValueError when malformed."""
    if kind == b"tEXt":
        return b"", rest, False
    if kind == b"zTXt":
        if rest[:1] != b"\x00":
            raise ValueError("has an unknown compression method")
        return rest[:1], _inflate(rest[1:]), True
    # iTXt: compression flag, method, language\0, translated keyword\0, text
    if len(rest) < 2:
        raise ValueError("is truncated")
    flag, method = rest[0], rest[1]
    language_end = rest.find(b"\x00", 2)
    translated_end = rest.find(b"\x00", language_end + 1) if language_end >= 0 else -1
    if translated_end < 0:
        raise ValueError("is truncated")
    prefix, text = rest[:translated_end + 1], rest[translated_end + 1:]
    if flag == 0:
        return prefix, text, False
    if flag != 1 or method != 0:
        raise ValueError("has an unknown compression method")
    return prefix, _inflate(text), True


def _inflate(data: bytes) -> bytes:
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(data, MAX_METADATA)
    except zlib.error:
        raise ValueError("does not inflate") from None
    if inflater.unconsumed_tail:
        raise ValueError("inflates past the size examined")
    return text


def _strip_raw_profile(text: bytes) -> tuple[bool, bytes | None, str | None]:
    """ImageMagick's raw profile text: ``\\n<name>\\n<length>\\n<hex lines>``, the
    hex being an EXIF block (with or without its ``Exif\\0\\0`` header)."""
    parts = text.split(b"\n", 3)
    try:
        if len(parts) != 4 or parts[0] != b"":
            raise ValueError
        declared = int(parts[2])
        payload = bytes.fromhex(parts[3].decode("ascii"))
    except ValueError:
        return False, None, "a PNG raw EXIF profile is not hexadecimal text"
    if declared != len(payload):
        return False, None, "a PNG raw EXIF profile's length is wrong"
    skip = len(_EXIF_HEADER) if payload.startswith(_EXIF_HEADER) else 0
    has_location, edited, problem = strip_tiff(payload[skip:])
    if edited is None:
        return has_location, None, problem
    payload = payload[:skip] + edited
    digits = payload.hex()
    lines = "\n".join(digits[i:i + 72] for i in range(0, len(digits), 72))
    rebuilt = b"\n" + parts[1] + b"\n" + f"{len(payload):8d}".encode() + b"\n" + lines.encode() + b"\n"
    return has_location, rebuilt, problem


# ------------------------------------------------------------------------ WEBP


def _examine_webp(fp: BinaryIO, size: int, found: _Collector) -> None:
    """Walk the RIFF chunks; ``EXIF`` and ``XMP `` are examined (same-length edits,
    so the RIFF sizes stay right)."""
    fp.seek(4)
    (riff_size,) = struct.unpack("<I", fp.read(4))
    limit = min(size, 8 + riff_size)
    position = 12
    for _ in range(MAX_STEPS):
        if position + 8 > limit:
            return
        fp.seek(position)
        kind, length = struct.unpack("<4sI", fp.read(8))
        start = position + 8
        if start + length > size:
            found.problems.append("a WEBP chunk runs past the end of the file")
            return
        if kind in (b"EXIF", b"XMP "):
            if length > MAX_METADATA:
                found.problems.append("a WEBP metadata chunk is too large to examine")
            else:
                data = fp.read(length)
                if kind == b"EXIF":
                    skip = len(_EXIF_HEADER) if data.startswith(_EXIF_HEADER) else 0
                    _record(found, strip_tiff(data[skip:]), start + skip)
                else:
                    _record(found, strip_xmp(data), start)
        position = start + length + (length & 1)
    found.problems.append("the WEBP has too many chunks")
