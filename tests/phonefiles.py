"""Phone-like test files: pictures with an sRGB ICC profile, a hand-made EXIF block (camera, orientation 6,
a MakerNote whose inner offset points elsewhere in the block, DateTimeOriginal, a GPS
IFD with latitude, longitude and altitude, an IFD1 thumbnail) and an XMP packet with
GPS properties, as JPEG, PNG (eXIf, or ImageMagick's raw profile text) and WEBP."""

from __future__ import annotations

import functools
import io
import struct

from PIL import Image, ImageCms, PngImagePlugin

MAKE = "Fairphone"
MODEL = "FP5"
TAKEN = "2026:11:30 14:02:11"
#: The string the MakerNote's inner offset points to (outside the MakerNote).
LENS_SERIAL = b"LENS-SERIAL-123\x00"
XMP_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"

#: Stored 64 x 48; orientation 6 shows it 48 x 64.
STORED_SIZE = (64, 48)

XMP_PACKET = (
    b'<?xpacket begin="\xef\xbb\xbf" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
    b' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
    b'  <rdf:Description rdf:about="" xmlns:exif="http://ns.adobe.com/exif/1.0/"\n'
    b'    xmlns:tiff="http://ns.adobe.com/tiff/1.0/" xmlns:xmp="http://ns.adobe.com/xap/1.0/"\n'
    b'    exif:GPSLatitude="52,31.2083N" exif:GPSLongitude="13,24.6042E"\n'
    b'    tiff:Make="Fairphone" xmp:CreatorTool="Camera 5.1">\n'
    b'   <exif:GPSAltitude>3412/100</exif:GPSAltitude>\n'
    b'   <exif:GPSVersionID>2.3.0.0</exif:GPSVersionID>\n'
    b'   <tiff:Orientation>6</tiff:Orientation>\n'
    b'  </rdf:Description>\n'
    b' </rdf:RDF>\n'
    b'</x:xmpmeta>\n'
    + b" " * 200 + b'\n<?xpacket end="w"?>'
)

_TYPES = {"BYTE": 1, "ASCII": 2, "SHORT": 3, "LONG": 4, "RATIONAL": 5, "UNDEFINED": 7}
_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 7: 1}


def _value(order: str, kind: int, value) -> tuple[bytes, int]:
    """(the encoded value, its count) for one entry."""
    if kind == 2:
        data = value.encode() + b"\x00"
        return data, len(data)
    if kind in (1, 7):
        return bytes(value), len(value)
    if kind == 3:
        return struct.pack(order + "H" * len(value), *value), len(value)
    if kind == 4:
        return struct.pack(order + "I" * len(value), *value), len(value)
    if kind == 5:
        flat = [n for pair in value for n in pair]
        return struct.pack(order + "I" * len(flat), *flat), len(value)
    raise ValueError(kind)


def _rational(degrees: float) -> list[tuple[int, int]]:
    d = int(degrees)
    minutes = (degrees - d) * 60
    m = int(minutes)
    return [(d, 1), (m, 1), (round((minutes - m) * 60 * 100), 100)]


@functools.cache
def icc_profile() -> bytes:
    """An sRGB ICC profile, as phones embed one (made once: it records when it was made)."""
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def thumbnail_jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 12), (10, 120, 200)).save(out, "JPEG", quality=80)
    return out.getvalue()


def phone_exif(order: str = ">", gps: bool = True, lat: float = 52.520, lon: float = 13.410) -> bytes:
    """A TIFF (EXIF) block as a phone writes it, without the ``Exif\\0\\0`` header."""
    thumb = thumbnail_jpeg()
    # IFDs in order; a pointer value ("->", name) is resolved to that IFD's offset,
    # ("@", name) to the offset of a named blob in the data area.
    ifd0 = [(0x010F, "ASCII", MAKE), (0x0110, "ASCII", MODEL), (0x0112, "SHORT", [6]),
            (0x0131, "ASCII", "Camera 5.1"), (0x8769, "LONG", ("->", "exif"))]
    if gps:
        ifd0.append((0x8825, "LONG", ("->", "gps")))
    exif_ifd = [(0x9003, "ASCII", TAKEN), (0x927C, "UNDEFINED", ("makernote",)),
                (0xA002, "LONG", [STORED_SIZE[0]]), (0xA003, "LONG", [STORED_SIZE[1]])]
    gps_ifd = [(0x0000, "BYTE", [2, 3, 0, 0]), (0x0001, "ASCII", "N"), (0x0002, "RATIONAL", _rational(lat)),
               (0x0003, "ASCII", "E"), (0x0004, "RATIONAL", _rational(lon)), (0x0005, "BYTE", [0]),
               (0x0006, "RATIONAL", [(3412, 100)])]
    ifd1 = [(0x0103, "SHORT", [6]), (0x0201, "LONG", ("@", "thumb")), (0x0202, "LONG", [len(thumb)])]
    ifds = [("ifd0", ifd0), ("exif", exif_ifd)] + ([("gps", gps_ifd)] if gps else []) + [("ifd1", ifd1)]
    offsets = {}
    position = 8
    for name, entries in ifds:
        offsets[name] = position
        position += 2 + 12 * len(entries) + 4
    data_start = position
    # The blobs: the lens serial, then the MakerNote pointing at it, then the thumbnail.
    blobs = {"serial": LENS_SERIAL}
    offsets["serial"] = data_start
    offsets["makernote"] = data_start + len(LENS_SERIAL)
    blobs["makernote"] = b"ACME\x00\x01" + struct.pack(order + "I", offsets["serial"]) + b"\x00" * 6
    area = bytearray(LENS_SERIAL + blobs["makernote"])
    offsets["thumb"] = data_start + len(area)
    area += thumb
    if len(area) % 2:
        area += b"\x00"
    out = bytearray((b"MM" if order == ">" else b"II") + struct.pack(order + "HI", 42, 8))
    for name, entries in ifds:
        out += struct.pack(order + "H", len(entries))
        for tag, kind_name, value in entries:
            kind = _TYPES[kind_name]
            if isinstance(value, tuple) and value[0] in ("->", "@"):
                encoded, count = struct.pack(order + "I", offsets[value[1]]), 1
            elif isinstance(value, tuple):  # a blob of the data area
                encoded, count = blobs[value[0]], len(blobs[value[0]])
                out += struct.pack(order + "HHI", tag, kind, count) + struct.pack(order + "I", offsets[value[0]])
                continue
            else:
                encoded, count = _value(order, kind, value)
            if len(encoded) <= 4:
                out += struct.pack(order + "HHI", tag, kind, count) + encoded.ljust(4, b"\x00")
            else:
                out += struct.pack(order + "HHI", tag, kind, count) + struct.pack(order + "I", data_start + len(area))
                area += encoded + (b"\x00" if len(encoded) % 2 else b"")
        following = offsets["ifd1"] if name == "ifd0" else 0
        out += struct.pack(order + "I", following)
    assert len(out) == data_start
    return bytes(out + area)


def pixels(size=STORED_SIZE) -> Image.Image:
    image = Image.new("RGB", size)
    image.putdata([((x * 4) % 256, (y * 5) % 256, (x * y) % 256) for y in range(size[1]) for x in range(size[0])])
    return image


def phone_jpeg(gps: bool = True, xmp: bool = True, order: str = ">") -> bytes:
    """A JPEG with APP1 Exif (the phone block) and APP1 XMP (with GPS) after SOI."""
    out = io.BytesIO()
    pixels().save(out, "JPEG", quality=90, icc_profile=icc_profile())
    plain = out.getvalue()
    exif = b"Exif\x00\x00" + phone_exif(order, gps=gps)
    segments = b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif
    if xmp:
        body = XMP_HEADER + xmp_packet(gps)
        segments += b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body
    return plain[:2] + segments + plain[2:]


def xmp_packet(gps: bool = True) -> bytes:
    """The XMP packet, with its GPS properties or (``gps=False``) the same without."""
    return XMP_PACKET if gps else XMP_PACKET.replace(b"GPS", b"Alt")


def phone_png(gps: bool = True, raw_profile: bool = False) -> bytes:
    """A PNG with the phone block in eXIf (or in ImageMagick's zTXt "Raw profile type
    exif") and the XMP packet in an iTXt chunk."""
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", xmp_packet(gps).decode("utf-8"))
    block = phone_exif("<", gps=gps)
    out = io.BytesIO()
    if raw_profile:
        payload = b"Exif\x00\x00" + block
        digits = payload.hex()
        lines = "\n".join(digits[i:i + 72] for i in range(0, len(digits), 72))
        info.add_text("Raw profile type exif", f"\nexif\n{len(payload):8d}\n{lines}\n", zip=True)
        pixels().save(out, "PNG", pnginfo=info, icc_profile=icc_profile())
    else:
        pixels().save(out, "PNG", pnginfo=info, exif=b"Exif\x00\x00" + block, icc_profile=icc_profile())
    return out.getvalue()


def phone_webp(gps: bool = True, lossless: bool = False) -> bytes:
    """A WEBP (VP8X) with the phone block in EXIF and the XMP packet in "XMP "."""
    out = io.BytesIO()
    pixels().save(out, "WEBP", exif=b"Exif\x00\x00" + phone_exif("<", gps=gps), xmp=xmp_packet(gps),
                  lossless=lossless, quality=90, icc_profile=icc_profile())
    return out.getvalue()


def image_data(data: bytes) -> bytes:
    """The image-data bytes of a JPEG (from the first SOS on), PNG (every IDAT chunk)
    or WEBP (the VP8/VP8L/ALPH chunks): what removing metadata must not touch."""
    if data[:2] == b"\xff\xd8":
        position = 2
        while True:
            marker = data[position + 1]
            if marker == 0xDA:
                return data[position:]
            (length,) = struct.unpack_from(">H", data, position + 2)
            position += 2 + length
    chunks = []
    if data[:4] == b"\x89PNG":
        position = 8
        while position < len(data):
            (length,) = struct.unpack_from(">I", data, position)
            kind = data[position + 4:position + 8]
            if kind == b"IDAT":
                chunks.append(data[position:position + 12 + length])
            position += 12 + length
        return b"".join(chunks)
    position = 12
    while position + 8 <= len(data):
        kind, length = struct.unpack_from("<4sI", data, position)
        if kind in (b"VP8 ", b"VP8L", b"ALPH"):
            chunks.append(data[position:position + 8 + length])
        position += 8 + length + (length & 1)
    return b"".join(chunks)
