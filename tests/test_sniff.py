"""Tests for imgshare.domain.sniff: type sniffing, header dimensions, inspection."""

import hashlib
import struct
import zlib

from PIL import Image, ImageFile
from twisted.python.monkey import MonkeyPatcher
from twisted.trial import unittest

from imgshare.domain import errors, sniff
from imgshare.testing import exif_orientation

SAVE_OPTIONS = {
    sniff.JPEG: ("JPEG", "RGB"),
    sniff.PNG: ("PNG", "RGBA"),
    sniff.BMP: ("BMP", "RGB"),
    sniff.WEBP: ("WEBP", "RGB"),
}


def png_header(width: int, height: int, crc_ok: bool = True) -> bytes:
    """A PNG signature and IHDR chunk (no pixel data) declaring width x height."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    crc = zlib.crc32(b"IHDR" + ihdr)
    if not crc_ok:
        crc ^= 1
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", crc)


def webp_vp8x_header(width: int, height: int) -> bytes:
    """A WEBP file start with a VP8X chunk declaring a width x height canvas."""
    chunk = b"\x00\x00\x00\x00" + (width - 1).to_bytes(3, "little")
    chunk += (height - 1).to_bytes(3, "little")
    body = b"WEBP" + b"VP8X" + struct.pack("<I", len(chunk)) + chunk
    return b"RIFF" + struct.pack("<I", len(body)) + body


class SniffTypeTests(unittest.TestCase):
    """sniff_type identifies images from their first bytes only."""

    def write_image(self, image_type, size=(37, 21), name="image.bin"):
        """Save a Pillow image of ``image_type`` to a fresh path and return it."""
        fmt, mode = SAVE_OPTIONS[image_type]
        path = self.mktemp() + name
        Image.new(mode, size, "orange").save(path, fmt)
        return path

    def head(self, path):
        """The first SNIFF_BYTES bytes of a file."""
        with open(path, "rb") as fp:
            return fp.read(sniff.SNIFF_BYTES)

    def test_types_constants(self):
        """The four accepted types have the documented MIME, extension and Pillow format."""
        self.assertEqual(
            [(t.mime, t.ext, t.pil_format) for t in sniff.TYPES],
            [
                ("image/jpeg", ".jpg", "JPEG"),
                ("image/png", ".png", "PNG"),
                ("image/bmp", ".bmp", "BMP"),
                ("image/webp", ".webp", "WEBP"),
            ],
        )
        self.assertEqual(sniff.SNIFF_BYTES, 32)

    def test_every_type_sniffed(self):
        """A JPEG, PNG, BMP and WEBP written by Pillow are each recognised."""
        for image_type in sniff.TYPES:
            path = self.write_image(image_type)
            self.assertIs(sniff.sniff_type(self.head(path)), image_type)

    def test_lossless_and_alpha_webp_sniffed(self):
        """Lossless (VP8L) and extended (VP8X) WEBP files are recognised too."""
        for options in ({"lossless": True}, {"exif": b"Exif\x00\x00"}):
            path = self.mktemp()
            Image.new("RGBA", (5, 5)).save(path, "WEBP", **options)
            self.assertIs(sniff.sniff_type(self.head(path)), sniff.WEBP)

    def test_other_formats_refused(self):
        """GIF, TIFF, ICO and PPM images written by Pillow are not accepted types."""
        for fmt in ("GIF", "TIFF", "ICO", "PPM"):
            path = self.mktemp()
            Image.new("RGB", (8, 8)).save(path, fmt)
            self.assertIsNone(sniff.sniff_type(self.head(path)), fmt)

    def test_non_images_refused(self):
        """Empty input, garbage, SVG, HTML, a WAVE RIFF and near-misses are refused."""
        samples = [
            b"",
            b"\x00" * 32,
            b"hello world, this is not an image",
            b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>',
            b"<svg><script>alert(1)</script></svg>",
            b"<html><body>hi</body></html>",
            b"RIFF\x24\x00\x00\x00WAVEfmt ",
            b"\xff\xd8",  # JPEG SOI without a marker
            b"\x89PNG\r\n\x1a",  # signature one byte short
            b"BM" + b"\x00" * 30,  # BMP magic with a DIB header size of 0
            b"BMP is a nice format, isn't it?",
            b"GIF89a\x01\x00\x01\x00",
            b"II*\x00\x08\x00\x00\x00",
        ]
        for sample in samples:
            self.assertIsNone(sniff.sniff_type(sample), sample)


def measured(path, image_type):
    """(width, height) as inspect_file measures them: from the header, confirmed by
    Pillow's reading of it unless it declares more than Pillow's own limit."""
    info = sniff.inspect_file(path, 10**9)
    assert info.type is image_type, (info.type, image_type)
    return info.width, info.height


class DimensionsTests(unittest.TestCase):
    """inspect_file and declared_dimensions report header dimensions without decoding pixels."""

    def write(self, data):
        """Write bytes to a fresh path and return it."""
        path = self.mktemp()
        with open(path, "wb") as fp:
            fp.write(data)
        return path

    def test_dimensions_of_every_type(self):
        """Width and height come back in that order for all four types."""
        for image_type, (fmt, mode) in SAVE_OPTIONS.items():
            path = self.mktemp()
            Image.new(mode, (123, 45)).save(path, fmt)
            self.assertEqual(measured(path, image_type), (123, 45))

    def test_jpeg_variants(self):
        """Progressive, greyscale and CMYK JPEGs report their size."""
        for mode, options in (("RGB", {"progressive": True}), ("L", {}), ("CMYK", {})):
            path = self.mktemp()
            Image.new(mode, (64, 48)).save(path, "JPEG", **options)
            self.assertEqual(measured(path, sniff.JPEG), (64, 48))

    def test_top_down_bmp(self):
        """A top-down BMP (negative height in its header) reports a positive height."""
        path = self.mktemp()
        Image.new("RGB", (10, 7)).save(path, "BMP")
        with open(path, "r+b") as fp:
            fp.seek(22)
            fp.write(struct.pack("<i", -7))
        self.assertEqual(measured(path, sniff.BMP), (10, 7))

    def test_huge_png_header_returns_declared_size(self):
        """A 20000x20000 PNG header is reported as such, with no bomb warning or error."""
        path = self.write(png_header(20000, 20000))
        self.assertEqual(measured(path, sniff.PNG), (20000, 20000))
        bombs = self.flushWarnings()
        self.assertEqual([w for w in bombs if w["category"] is Image.DecompressionBombWarning], [])

    def test_above_pillow_warning_limit_no_warning(self):
        """A header just above Pillow's warning threshold triggers no warning."""
        side = int(Image.MAX_IMAGE_PIXELS**0.5) + 10
        path = self.write(png_header(side, side))
        self.assertEqual(measured(path, sniff.PNG), (side, side))
        categories = [w["category"] for w in self.flushWarnings()]
        self.assertNotIn(Image.DecompressionBombWarning, categories)

    def test_huge_webp_canvas(self):
        """A WEBP VP8X header declaring a 16383x16383 canvas is reported as declared."""
        path = self.write(webp_vp8x_header(16383, 16383))
        self.assertEqual(measured(path, sniff.WEBP), (16383, 16383))

    def test_png_bad_crc(self):
        """A PNG whose IHDR checksum is wrong has an unreadable header."""
        path = self.write(png_header(10, 10, crc_ok=False))
        self.assertRaises(errors.BadImage, sniff.declared_dimensions, path, sniff.PNG)

    def test_wrong_format_for_file(self):
        """Reading a PNG as a JPEG fails: Pillow is restricted to the given format."""
        path = self.mktemp()
        Image.new("RGB", (5, 5)).save(path, "PNG")
        self.assertRaises(errors.BadImage, sniff.declared_dimensions, path, sniff.JPEG)


class InspectFileTests(unittest.TestCase):
    """inspect_file hashes, sniffs, measures and enforces the pixel limit."""

    def write(self, data):
        """Write bytes to a fresh path and return it."""
        path = self.mktemp()
        with open(path, "wb") as fp:
            fp.write(data)
        return path

    def image_bytes(self, fmt, mode="RGB", size=(40, 30)):
        """The bytes of a Pillow image in ``fmt``."""
        path = self.mktemp()
        Image.new(mode, size, "teal").save(path, fmt)
        with open(path, "rb") as fp:
            return fp.read()

    def test_every_type_inspected(self):
        """Each accepted type yields its type, dimensions, size and SHA-256."""
        for image_type, (fmt, mode) in SAVE_OPTIONS.items():
            data = self.image_bytes(fmt, mode)
            info = sniff.inspect_file(self.write(data), 100_000_000)
            self.assertIs(info.type, image_type)
            self.assertEqual((info.width, info.height), (40, 30))
            self.assertEqual(info.size, len(data))
            self.assertEqual(info.sha256, hashlib.sha256(data).hexdigest())

    def test_type_from_bytes_not_name(self):
        """A PNG saved as photo.jpg is inspected as a PNG."""
        path = self.mktemp() + "photo.jpg"
        Image.new("RGB", (9, 9)).save(path, "PNG")
        self.assertIs(sniff.inspect_file(path, 10**8).type, sniff.PNG)

    def test_hash_spans_chunks(self):
        """A file larger than one read chunk is hashed and sized in full."""
        data = self.image_bytes("PNG") + b"\x00" * (sniff.CHUNK_SIZE * 2 + 17)
        info = sniff.inspect_file(self.write(data), 10**8)
        self.assertEqual(info.size, len(data))
        self.assertEqual(info.sha256, hashlib.sha256(data).hexdigest())

    def test_empty_file(self):
        """An empty file is a BadRequest (400) saying so."""
        exc = self.assertRaises(errors.BadRequest, sniff.inspect_file, self.write(b""), 10**8)
        self.assertEqual(exc.message, "empty file")
        self.assertEqual(exc.status, 400)

    def test_unsupported_types(self):
        """GIF, TIFF, SVG and garbage are refused with 415 and the documented message."""
        samples = [
            self.image_bytes("GIF"),
            self.image_bytes("TIFF"),
            b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
            b"\x00garbage" * 100,
        ]
        for data in samples:
            exc = self.assertRaises(
                errors.UnsupportedType, sniff.inspect_file, self.write(data), 10**8
            )
            self.assertEqual(exc.status, 415)
            self.assertEqual(
                exc.message, "unsupported type: only JPEG, PNG, BMP and WEBP are accepted"
            )

    def test_huge_png_header_too_large(self):
        """A PNG whose IHDR claims 20000x20000 is TooLarge (413), naming both numbers."""
        path = self.write(png_header(20000, 20000))
        exc = self.assertRaises(errors.TooLarge, sniff.inspect_file, path, 100_000_000)
        self.assertEqual(exc.status, 413)
        self.assertIn("400000000", exc.message)
        self.assertIn("100000000", exc.message)

    def test_huge_webp_too_large(self):
        """A WEBP header declaring a huge canvas is TooLarge before Pillow sees it."""
        path = self.write(webp_vp8x_header(16383, 16383))
        self.assertRaises(errors.TooLarge, sniff.inspect_file, path, 100_000_000)

    def test_pixel_limit_boundary(self):
        """Exactly max_pixels is accepted; one pixel fewer allowed is TooLarge."""
        path = self.write(self.image_bytes("PNG", size=(100, 50)))
        self.assertEqual(sniff.inspect_file(path, 5000).width, 100)
        self.assertRaises(errors.TooLarge, sniff.inspect_file, path, 4999)

    def test_zero_dimension(self):
        """A header with a zero width or height is a BadImage (400)."""
        for width, height in ((0, 10), (10, 0)):
            path = self.write(png_header(width, height))
            exc = self.assertRaises(errors.BadImage, sniff.inspect_file, path, 10**8)
            self.assertEqual(exc.status, 400)

    def test_truncated_headers(self):
        """Files cut inside their header are BadImage (400), for every type."""
        for fmt, mode in SAVE_OPTIONS.values():
            data = self.image_bytes(fmt, mode)
            for length in (sniff.SNIFF_BYTES, 20):
                path = self.write(data[:length])
                try:
                    sniff.inspect_file(path, 10**8)
                except errors.BadImage as exc:
                    self.assertEqual(exc.message, "cannot read the image header")
                except errors.UnsupportedType:
                    self.assertLess(length, sniff.SNIFF_BYTES)
                else:
                    self.fail(f"{fmt} cut to {length} bytes was accepted")

    def test_jpeg_without_scan(self):
        """A JPEG cut just before its start-of-scan marker is a BadImage."""
        data = self.image_bytes("JPEG")
        cut = data.index(b"\xff\xda")
        path = self.write(data[:cut])
        self.assertRaises(errors.BadImage, sniff.inspect_file, path, 10**8)

    def test_jpeg_without_frame(self):
        """A JPEG with markers but no start-of-frame segment is a BadImage."""
        data = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
        data += b"\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00" + b"\x00" * 64
        self.assertRaises(errors.BadImage, sniff.inspect_file, self.write(data), 10**8)

    def test_png_bad_crc(self):
        """A PNG whose header checksum is wrong is a BadImage."""
        path = self.write(png_header(10, 10, crc_ok=False) + b"\x00" * 64)
        self.assertRaises(errors.BadImage, sniff.inspect_file, path, 10**8)

    def test_webp_unknown_chunk(self):
        """A RIFF/WEBP file whose first chunk is not VP8, VP8L or VP8X is a BadImage."""
        data = b"RIFF\x30\x00\x00\x00WEBPJUNK" + b"\x00" * 40
        self.assertRaises(errors.BadImage, sniff.inspect_file, self.write(data), 10**8)

    def test_bmp_header_pillow_refuses(self):
        """A BMP header that parses but that Pillow cannot read is a BadImage."""
        data = bytearray(self.image_bytes("BMP"))
        data[28:30] = struct.pack("<H", 7)  # 7 bits per pixel does not exist
        self.assertRaises(errors.BadImage, sniff.inspect_file, self.write(bytes(data)), 10**8)


# A JPEG APP1 segment whose Exif block is not a TIFF structure at all, and one
# whose directory claims more entries than it holds.
BAD_EXIF_HEADER = b"Exif\x00\x00XXnot a TIFF header at all"
TRUNCATED_EXIF = b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x05\x01\x12\x00\x03"


class OrientationTests(unittest.TestCase):
    """inspect_file reports the upright (displayed) size: the stored size with the EXIF
    orientation applied, read from the header without decoding any pixels."""

    def write(self, fmt, size=(40, 30), **save):
        path = self.mktemp()
        Image.new("RGB", size, "teal").save(path, fmt, **save)
        return path

    def inspect(self, path, max_pixels=10**8):
        """inspect_file with every pixel decoder of Pillow made to fail: a call that
        decoded the image would raise instead of answering."""
        def no_decoding(image, *args, **kwargs):
            raise AssertionError(f"{image.format} pixels decoded while inspecting")

        patcher = MonkeyPatcher((ImageFile.ImageFile, "load", no_decoding), (Image.Image, "load", no_decoding))
        return patcher.runWithPatches(sniff.inspect_file, path, max_pixels)

    def test_jpeg_orientations(self):
        """JPEG orientations 5-8 swap width and height, 1-4 keep them; the limits are
        judged on the same product and sides."""
        for orientation in range(1, 9):
            info = self.inspect(self.write("JPEG", exif=exif_orientation(orientation)))
            expected = (30, 40) if orientation in (5, 6, 7, 8) else (40, 30)
            self.assertEqual((info.width, info.height), expected, orientation)
            self.assertEqual(info.orientation, orientation)

    def test_orientation_6_8_and_3(self):
        """The phone cases named in the issue: 6 and 8 (a quarter turn either way) and
        3 (upside down)."""
        six = self.inspect(self.write("JPEG", (4032 // 8, 3024 // 8), exif=exif_orientation(6)))
        eight = self.inspect(self.write("JPEG", (4032 // 8, 3024 // 8), exif=exif_orientation(8)))
        three = self.inspect(self.write("JPEG", (4032 // 8, 3024 // 8), exif=exif_orientation(3)))
        self.assertEqual((six.width, six.height), (378, 504))
        self.assertEqual((eight.width, eight.height), (378, 504))
        self.assertEqual((three.width, three.height), (504, 378))

    def test_webp_and_png_exif(self):
        """WEBP's EXIF chunk and PNG's eXIf chunk are read as well (Pillow writes both)."""
        for fmt in ("WEBP", "PNG"):
            info = self.inspect(self.write(fmt, exif=exif_orientation(6)))
            self.assertEqual((info.width, info.height, info.orientation), (30, 40, 6), fmt)

    def test_xmp_orientation(self):
        """An orientation given only in the XMP packet counts, as it does for the
        derived copies (ImageOps.exif_transpose reads it too)."""
        xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:Description tiff:Orientation="8"/></x:xmpmeta>'
        info = self.inspect(self.write("JPEG", xmp=xmp))
        self.assertEqual((info.width, info.height, info.orientation), (30, 40, 8))

    def test_png_without_exif_is_not_decoded(self):
        """A PNG without eXIf is answered from its header: PNG's own getexif would
        decode the whole image looking for a late eXIf chunk."""
        info = self.inspect(self.write("PNG"))
        self.assertEqual((info.width, info.height, info.orientation), (40, 30, 1))

    def test_corrupt_exif_falls_back_to_the_stored_size(self):
        """A corrupt EXIF block is no orientation: the header size, as stored."""
        for block in (BAD_EXIF_HEADER, TRUNCATED_EXIF):
            info = self.inspect(self.write("JPEG", exif=block))
            self.assertEqual((info.width, info.height, info.orientation), (40, 30, 1), block)

    def test_out_of_range_orientation(self):
        """An orientation outside 1-8 is ignored."""
        for value in (0, 9, 300):
            info = self.inspect(self.write("JPEG", exif=exif_orientation(value)))
            self.assertEqual((info.width, info.height, info.orientation), (40, 30, 1), value)

    def test_pixel_limit_unchanged(self):
        """A turned 40 x 30 JPEG passes a limit of 1200 pixels and fails 1199, as unturned."""
        path = self.write("JPEG", exif=exif_orientation(6))
        self.assertEqual(self.inspect(path, 1200).width, 30)
        self.assertRaises(errors.TooLarge, self.inspect, path, 1199)
