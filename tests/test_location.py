"""Location metadata in originals: imgshare.domain.location on phone-like files (found,
removed losslessly, other metadata intact, exiftool agreeing, hostile variants), and
strip_location on every upload path (the stored bytes, size and SHA-256 are the
stripped file's), the account setting, the gallery badge and the owner's viewer note."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import random
import re
import struct
import subprocess
import time
import zlib

from PIL import ExifTags, Image
from twisted.trial import unittest

from imgshare import db
from imgshare.domain import errors, location
from imgshare.testing import image_bytes, make_fixture, multipart
from tests import phonefiles
from tests.phonefiles import (
    LENS_SERIAL,
    MAKE,
    MODEL,
    TAKEN,
    image_data,
    phone_jpeg,
    phone_png,
    phone_webp,
)
from tests.test_gather import fixture_with_source
from tests.test_pages import Browser, csrf_of

B = "http://img.example"
API = B + "/api/v1/"
JSON = {b"Content-Type": [b"application/json"]}

#: Every phone-like file: (label, bytes).
PHONE_FILES = (
    ("JPEG (big-endian EXIF)", lambda: phone_jpeg()),
    ("JPEG (little-endian EXIF)", lambda: phone_jpeg(order="<")),
    ("PNG eXIf", lambda: phone_png()),
    ("PNG raw profile", lambda: phone_png(raw_profile=True)),
    ("WEBP lossy", lambda: phone_webp()),
    ("WEBP lossless", lambda: phone_webp(lossless=True)),
)


def exiftool(*paths: str, options: tuple[str, ...] = ()) -> list[dict]:
    """exiftool's reading of each of ``paths`` (every group, JSON, in one run).  exiftool
    must be installed (.ci/run installs it): without it this fails, it never skips."""
    out = subprocess.run(["exiftool", "-j", "-a", "-G1", "-n", *options, *paths],
                         capture_output=True, check=True, timeout=60).stdout
    return json.loads(out)


def gps_keys(reading: dict) -> list[str]:
    return [k for k in reading if "gps" in k.lower()]


def decoded(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGBA").tobytes()


def tiff_of(data: bytes) -> bytes:
    """The EXIF (TIFF) block of a file, as Pillow finds it."""
    with Image.open(io.BytesIO(data)) as image:
        raw = image.info.get("exif")
        if raw is None and "Raw profile type exif" in image.info:  # ImageMagick's raw profile text
            raw = bytes.fromhex(image.info["Raw profile type exif"].split("\n", 3)[3])
    raw = raw or b""
    return raw[6:] if raw.startswith(b"Exif\x00\x00") else raw


class LocationFileTests(unittest.TestCase):
    """examine and strip_location on phone-like JPEG, PNG and WEBP files."""

    def write(self, data: bytes, name: str = "photo") -> str:
        path = os.path.join(self.mktemp(), name)
        os.makedirs(os.path.dirname(path))
        with open(path, "wb") as f:
            f.write(data)
        return path

    def read(self, path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    def test_phone_files_carry_a_location(self):
        """Each phone-like file is found to carry a location, which Pillow and exiftool see too."""
        for label, make in PHONE_FILES:
            path = self.write(make())
            findings = location.examine(path)
            self.assertTrue(findings.has_location, label)
            self.assertEqual(findings.problems, (), label)
            self.assertTrue(findings.edits, label)
            with Image.open(path) as image:
                self.assertEqual(image.getexif().get_ifd(ExifTags.IFD.GPSInfo)[2], (52.0, 31.0, 12.0), label)
            (reading,) = exiftool(path)
            self.assertAlmostEqual(reading["Composite:GPSLatitude"], 52.52, places=3, msg=label)
            self.assertIn("XMP-exif:GPSLatitude", reading, label)

    def test_strip_removes_every_gps_field_and_nothing_else(self):
        """After stripping: no GPS in EXIF (Pillow, exiftool) nor XMP; the pixels decode the same,
        the image-data bytes are identical, and the ICC profile, orientation, camera, date, MakerNote (its inner
        offset still pointing at its data) and the IFD1 thumbnail survive, as exiftool agrees."""
        originals, paths = {}, {}
        for label, make in PHONE_FILES:
            originals[label] = make()
            paths[label] = self.write(originals[label])
        labels = list(originals)
        copies = [self.write(originals[label]) for label in labels]
        before = dict(zip(labels, exiftool(*copies, options=("-all", "-validate")), strict=True))
        for label in labels:
            location.strip_location(paths[label])
        readings = exiftool(*(paths[label] for label in labels), options=("-all", "-validate"))
        after_all = dict(zip(labels, readings, strict=True))
        for label in labels:
            original, path = originals[label], paths[label]
            stripped = self.read(path)
            self.assertEqual(location.examine(path), location.Findings(), label)
            with Image.open(path) as image:
                self.assertEqual(image.info.get("icc_profile"), phonefiles.icc_profile(), label)
                exif = image.getexif()
                self.assertEqual(dict(exif.get_ifd(ExifTags.IFD.GPSInfo)), {}, label)
                self.assertNotIn(ExifTags.IFD.GPSInfo, exif, label)
                self.assertEqual((exif[ExifTags.Base.Orientation], exif[ExifTags.Base.Make],
                                  exif[ExifTags.Base.Model]), (6, MAKE, MODEL), label)
                sub = exif.get_ifd(ExifTags.IFD.Exif)
                self.assertEqual(sub[ExifTags.Base.DateTimeOriginal], TAKEN, label)
                makernote = sub[ExifTags.Base.MakerNote]
                self.assertEqual(exif.get_ifd(ExifTags.IFD.IFD1)[ExifTags.Base.JpegIFByteCount],
                                 len(phonefiles.thumbnail_jpeg()), label)
            tiff = tiff_of(stripped)
            order = ">" if tiff[:2] == b"MM" else "<"
            (inner,) = struct.unpack_from(order + "I", makernote, 6)
            self.assertEqual(tiff[inner:inner + len(LENS_SERIAL)], LENS_SERIAL, label)
            thumbnail = phonefiles.thumbnail_jpeg()
            offset = exif.get_ifd(ExifTags.IFD.IFD1)[ExifTags.Base.JpegIFOffset]
            self.assertEqual(tiff[offset:offset + len(thumbnail)], thumbnail, label)
            self.assertNotIn(b"GPSLatitude", stripped, label)
            self.assertNotIn(b"GPSAltitude", stripped, label)
            self.assertIn(b"tiff:Orientation>6<", stripped, label)
            self.assertEqual(decoded(stripped), decoded(original), label)
            self.assertEqual(image_data(stripped), image_data(original), label)
            self.assertTrue(image_data(original), label)
            if not label.startswith("PNG"):
                self.assertEqual(len(stripped), len(original), label)  # same-length edits
            after = after_all[label]
            self.assertEqual(gps_keys(after), [], label)
            self.assertTrue(gps_keys(before[label]), label)
            # Everything else exiftool reads is unchanged, its validation verdict included.
            kept = {k: v for k, v in before[label].items()
                    if not k.startswith(("System:", "SourceFile", "Composite:GPS")) and k not in gps_keys(before[label])}
            self.assertIn("ExifTool:Validate", kept, label)
            self.assertIn("IFD1:ThumbnailImage", kept, label)
            self.assertEqual({k: after.get(k) for k in kept}, kept, label)

    def test_files_without_a_location(self):
        """Plain files, and a phone file without GPS, carry no location and need no edit;
        stripping leaves them byte for byte; BMP and other bytes are not examined."""
        plain = [image_bytes("JPEG"), image_bytes("PNG"), image_bytes("WEBP"), image_bytes("BMP"),
                 phone_jpeg(gps=False), phone_png(gps=False), phone_webp(gps=False), b"not an image", b""]
        for data in plain:
            path = self.write(data)
            self.assertEqual(location.examine(path), location.Findings())
            location.strip_location(path)
            self.assertEqual(self.read(path), data)

    def test_xmp_only_location(self):
        """GPS only in XMP (attributes or elements, any prefix) counts and is blanked,
        the packet keeping its length and staying well-formed."""
        packet = phonefiles.XMP_PACKET.replace(b"exif:", b"e:").replace(
            b'xmlns:exif="http://ns.adobe.com/exif/1.0/"', b'xmlns:e="http://ns.adobe.com/exif/1.0/"')
        has, edited, problem = location.strip_xmp(packet)
        self.assertEqual((has, problem), (True, None))
        self.assertEqual(len(edited), len(packet))
        self.assertNotIn(b"GPS", edited)
        self.assertIn(b"<tiff:Orientation>6</tiff:Orientation>", edited)
        import xml.dom.minidom
        xml.dom.minidom.parseString(edited.split(b"?>", 1)[1].rsplit(b"<?xpacket", 1)[0])
        dji = b'<x:xmpmeta><rdf:Description drone-dji:GpsLatitude="1.5" drone-dji:AbsoluteAltitude="9"/></x:xmpmeta>'
        has, edited, _ = location.strip_xmp(dji)
        self.assertTrue(has)
        self.assertIn(b'drone-dji:AbsoluteAltitude="9"', edited)
        self.assertNotIn(b"Gps", edited)
        altitude_only = b'<rdf:Description exif:GPSAltitude="12/1"/>'
        self.assertEqual(location.strip_xmp(altitude_only)[0], False)  # no coordinates...
        self.assertNotIn(b"GPS", location.strip_xmp(altitude_only)[1])  # ...but removed all the same
        # A JPEG whose EXIF has no GPS, with GPS in its XMP:
        jpeg = phone_jpeg(gps=False)
        body = phonefiles.XMP_HEADER + phonefiles.XMP_PACKET
        jpeg = jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body + jpeg[2:]
        path = self.write(jpeg)
        self.assertTrue(location.examine(path).has_location)
        location.strip_location(path)
        self.assertEqual(gps_keys(exiftool(path)[0]), [])
        self.assertEqual(image_data(self.read(path)), image_data(jpeg))

    def test_gps_without_coordinates_is_removed_but_not_counted(self):
        """A GPS IFD with only a time stamp is not "a location", but stripping removes it."""
        tiff = bytearray(phonefiles.phone_exif(">"))
        # Rename the latitude and longitude tags (2, 4) to 29 (GPSDateStamp) and 30.
        found = [m.start() for m in re.finditer(rb"\x00\x02\x00\x05\x00\x00\x00\x03|\x00\x04\x00\x05\x00\x00\x00\x03",
                                                bytes(tiff))]
        self.assertEqual(len(found), 2)
        for position, tag in zip(found, (29, 30), strict=True):
            struct.pack_into(">H", tiff, position, tag)
        has, edited, problem = location.strip_tiff(bytes(tiff))
        self.assertEqual((has, problem), (False, None))
        self.assertIsNotNone(edited)
        self.assertEqual(location.strip_tiff(edited), (False, None, None))

    def test_large_file_is_streamed(self):
        """A 12 MB PNG is stripped by seeking over its pixel data: metadata and pixels
        come out right, in well under a second."""
        pixels = Image.frombytes("RGB", (2000, 2000), os.urandom(2000 * 2000 * 3))
        out = io.BytesIO()
        pixels.save(out, "PNG", exif=b"Exif\x00\x00" + phonefiles.phone_exif("<"), compress_level=0)
        original = out.getvalue()
        self.assertGreater(len(original), 12_000_000)
        path = self.write(original)
        started = time.monotonic()
        location.strip_location(path)
        self.assertLess(time.monotonic() - started, 1.0)
        stripped = self.read(path)
        self.assertEqual(image_data(stripped), image_data(original))
        self.assertEqual(location.examine(path), location.Findings())


class HostileLocationTests(unittest.TestCase):
    """Malformed metadata never crashes or hangs: it is left alone and named as a problem,
    and stripping such a file refuses (400) rather than store what it could not check."""

    def write(self, data: bytes) -> str:
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(data)
        return path

    def examine(self, data: bytes) -> location.Findings:
        return location.examine(self.write(data))

    def test_truncated_everywhere(self):
        """Every phone file cut at many points: examine answers, and strip either succeeds or
        raises BadImage, leaving the file as it was."""
        for label, make in PHONE_FILES:
            data = make()
            for cut in range(0, len(data), 37):
                path = self.write(data[:cut])
                findings = location.examine(path)
                self.assertIsInstance(findings, location.Findings, (label, cut))
                try:
                    location.strip_location(path, findings)
                except errors.BadImage as e:
                    self.assertEqual(e.status, 400)
                    with open(path, "rb") as f:
                        self.assertEqual(f.read(), data[:cut], (label, cut))

    def test_random_corruption(self):
        """Bytes flipped in the metadata of each phone file (fixed seed): no exception but
        BadImage from strip, and no hang."""
        rng = random.Random(14)
        started = time.monotonic()
        for _label, make in PHONE_FILES:
            data = make()
            for _ in range(150):
                corrupt = bytearray(data)
                for _ in range(rng.randint(1, 8)):
                    corrupt[rng.randrange(2, min(len(data), 1800))] = rng.randrange(256)
                path = self.write(bytes(corrupt))
                try:
                    location.strip_location(path)
                except errors.BadImage:
                    pass
        self.assertLess(time.monotonic() - started, 30)

    def test_bad_offsets(self):
        """A GPS pointer out of range is dropped (no location counted); a first IFD out of
        range, or a TIFF header that is none, is a problem; an IFD chain looping back ends."""
        tiff = bytearray(phonefiles.phone_exif(">"))
        (count,) = struct.unpack_from(">H", tiff, 8)
        for i in range(count):
            if struct.unpack_from(">H", tiff, 10 + 12 * i)[0] == 0x8825:
                struct.pack_into(">I", tiff, 10 + 12 * i + 8, 0xFFFFFF00)
        has, edited, problem = location.strip_tiff(bytes(tiff))
        self.assertEqual((has, problem), (False, None))
        self.assertNotIn(struct.pack(">H", 0x8825) + b"\x00\x04", edited)
        self.assertEqual(location.strip_tiff(b"MM\x00\x2a\x7f\xff\xff\xff")[2],
                         "the EXIF block's first IFD lies outside it")
        self.assertEqual(location.strip_tiff(b"XX" + b"\x00" * 20)[2], "the EXIF block has no TIFF header")
        looped = bytearray(phonefiles.phone_exif(">"))
        struct.pack_into(">I", looped, 10 + 12 * count, 8)  # IFD0's next IFD: IFD0 again
        self.assertEqual(location.strip_tiff(bytes(looped))[2], None)
        huge = bytearray(phonefiles.phone_exif(">"))
        struct.pack_into(">H", huge, 8, 0xFFFF)  # IFD0 claims 65535 entries
        self.assertEqual(location.strip_tiff(bytes(huge))[2], "the EXIF block's first IFD lies outside it")

    def test_problems_refuse_a_strip(self):
        """Metadata that cannot be read makes strip_location refuse with BadImage (400)."""
        jpeg = phone_jpeg()
        broken_exif = jpeg.replace(b"Exif\x00\x00MM", b"Exif\x00\x00QQ", 1)
        findings = self.examine(broken_exif)
        self.assertEqual(findings.problems, ("the EXIF block has no TIFF header",))
        self.assertTrue(findings.has_location)  # the XMP packet still has GPS
        with self.assertRaises(errors.BadImage) as caught:
            location.strip_location(self.write(broken_exif))
        self.assertIn("cannot remove the location metadata", caught.exception.message)
        # A segment running past the end of the file:
        self.assertEqual(self.examine(jpeg[:300]).problems,
                         ("a JPEG metadata segment runs past the end of the file",))

    def test_png_hostile_chunks(self):
        """A zTXt profile that inflates past the bound, or does not inflate, and a chunk
        running past the end are problems; a million tiny chunks end the walk quickly."""
        png = image_bytes("PNG")
        bomb = b"Raw profile type exif\x00\x00" + zlib.compress(b"0" * (location.MAX_METADATA + 10))
        chunk = struct.pack(">I", len(bomb)) + b"zTXt" + bomb + struct.pack(">I", zlib.crc32(b"zTXt" + bomb))
        self.assertEqual(self.examine(png[:33] + chunk + png[33:]).problems,
                         ("the PNG text chunk 'Raw profile type exif' inflates past the size examined",))
        junk = b"Raw profile type exif\x00\x00not zlib"
        chunk = struct.pack(">I", len(junk)) + b"zTXt" + junk + b"\x00\x00\x00\x00"
        self.assertEqual(self.examine(png[:33] + chunk + png[33:]).problems,
                         ("the PNG text chunk 'Raw profile type exif' does not inflate",))
        past = png[:33] + struct.pack(">I", 10**9) + b"eXIf" + b"\x00" * 20
        self.assertEqual(self.examine(past).problems, ("a PNG chunk runs past the end of the file",))
        tiny = png[:33] + (struct.pack(">I", 0) + b"tIME" + b"\x00\x00\x00\x00") * 200_000 + png[33:]
        started = time.monotonic()
        self.assertEqual(self.examine(tiny).problems, ("the PNG has too many chunks",))
        self.assertLess(time.monotonic() - started, 5)

    def test_hostile_xmp_does_not_hang(self):
        """Thousands of unclosed GPS elements (quadratic for a naive search) are bounded: past
        MAX_XMP_PROPERTIES the packet is a problem; a few unclosed ones are simply not properties."""
        packet = b"<x:xmpmeta>" + b"".join(b"<a:GPS%d>" % i for i in range(20_000)) + b"x" * 3_000_000
        started = time.monotonic()
        has, edited, problem = location.strip_xmp(packet)
        self.assertLess(time.monotonic() - started, 3)
        self.assertEqual((has, edited, problem), (False, None, "the XMP packet has too many GPS properties"))
        few = b"<x:xmpmeta><a:GPSLatitude>1<b:GPSLongitude>2</b:GPSLongitude></x:xmpmeta>"
        has, edited, problem = location.strip_xmp(few)
        self.assertEqual((has, problem), (True, None))
        self.assertEqual(edited, b"<x:xmpmeta><a:GPSLatitude>1" + b" " * len(b"<b:GPSLongitude>2</b:GPSLongitude>")
                         + b"</x:xmpmeta>")
        many = b"".join(b' a:GPS%d="1"' % i for i in range(location.MAX_XMP_PROPERTIES + 1))
        self.assertEqual(location.strip_xmp(b"<r" + many + b"/>")[2], "the XMP packet has too many GPS properties")

    def test_webp_hostile_chunks(self):
        """A WEBP chunk running past the end is a problem; odd chunk padding is followed."""
        webp = phone_webp()
        cut = webp[:60]
        self.assertEqual(self.examine(cut).problems[:1], ("a WEBP chunk runs past the end of the file",))
        riff_lies = webp[:4] + struct.pack("<I", 10**9) + webp[8:]
        self.assertTrue(self.examine(riff_lies).has_location)


# ------------------------------------------------------------------ upload paths


class UploadPathTests(unittest.TestCase):
    """strip_location on each upload endpoint: the stored object, its size and SHA-256
    are the stripped file's; 0 keeps the file as sent; a bad value is 400 and stores nothing."""

    async def setUp(self):
        await fixture_with_source(self)
        self.source.image = phone_jpeg()  # the same bytes as self.photo
        self.photo = phone_jpeg()
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(self.photo)
        location.strip_location(path)
        with open(path, "rb") as f:
            self.stripped = f.read()
        self.assertNotEqual(self.stripped, self.photo)

    def originals(self) -> dict[str, bytes]:
        """The stored originals (not the derived copies), by file name."""
        return {k.split("/", 1)[1]: v for k, v in self.f.storage.objects.items() if k.count("/") == 1}

    def check_stored(self, name: str, size: int, sha256: str, stripped: bool) -> None:
        stored = self.originals()[name]
        self.assertEqual(stored, self.stripped if stripped else self.photo)
        self.assertEqual((size, sha256), (len(stored), hashlib.sha256(stored).hexdigest()))

    async def assert_refused(self, response, body) -> None:
        self.assertEqual(response.code, 400, body)
        self.assertIn("strip_location must be 1 or 0", body.decode())
        self.assertEqual(self.originals(), {})
        self.assertEqual(await self.f.database.run(db.count_images, "kitten"), 0)

    async def v1(self, **fields):
        body, headers = multipart({"token": self.token, **fields}, {"file": ("phone.jpg", self.photo)})
        return await self.client.request("POST", API + "img_upload.php", data=body, headers=headers)

    async def test_img_upload_php(self):
        """img_upload.php: strip_location=1 (form field or query) stores the stripped file;
        without it the original is stored verbatim and has_location is true."""
        response, body = await self.v1(strip_location="1")
        record = json.loads(body)
        self.assertEqual((response.code, record["has_location"]), (200, False), body)
        self.check_stored(record["file"], record["size"], record["sha256"], stripped=True)
        body, headers = multipart({"token": self.token}, {"file": ("phone.jpg", self.photo)})
        response, body = await self.client.request(
            "POST", API + "img_upload.php?strip_location=1", data=body, headers=headers)
        record = json.loads(body)
        self.check_stored(record["file"], record["size"], record["sha256"], stripped=True)
        response, body = await self.v1()
        record = json.loads(body)
        self.assertEqual(record["has_location"], True)
        self.check_stored(record["file"], record["size"], record["sha256"], stripped=False)
        response, body = await self.v1(strip_location="1", format="text")
        self.assertIn(b"has_location=false\n", body)

    async def test_the_file_is_checked_before_its_metadata(self):
        """A file that is no image is refused as such (415), with or without strip_location;
        the metadata of an image is examined only once it is known to be one."""
        for fields in ({"strip_location": "1"}, {}):
            body, headers = multipart({"token": self.token, **fields}, {"file": ("notes.jpg", b"\xff\xd8 not a jpeg")})
            response, out = await self.client.request("POST", API + "img_upload.php", data=body, headers=headers)
            self.assertEqual(response.code, 415, out)
        self.assertEqual(self.originals(), {})

    async def test_bad_values_are_refused(self):
        """strip_location=yes or 2 is 400 on every endpoint, and nothing is stored."""
        for value in ("yes", "2", "true"):
            await self.assert_refused(*await self.v1(strip_location=value))
            body, headers = multipart({"strip_location": value}, {"file": ("p.jpg", self.photo)})
            headers[b"Authorization"] = [f"Bearer {self.token}".encode()]
            await self.assert_refused(*await self.client.request("POST", API + "upload", data=body, headers=headers))
            body, headers = multipart({"key": self.token, "strip_location": value}, {"source": ("p.jpg", self.photo)})
            await self.assert_refused(*await self.client.request("POST", B + "/api/1/upload", data=body,
                                                                 headers=headers))
            response, body = await self.client.request("POST", API + "img_gather.php", data={
                "token": self.token, "url": self.source.url("/img.jpg"), "strip_location": value})
            await self.assert_refused(response, body)
        self.assertEqual(self.source.requests, [])  # refused before anything was fetched
        body = json.dumps({"file_base64": base64.b64encode(self.photo).decode(), "strip_location": "yes"})
        await self.assert_refused(*await self.client.request(
            "POST", API + "upload", data=body.encode(), headers={**JSON, b"X-API-Key": [self.token.encode()]}))

    async def test_account_default(self):
        """With the account's setting on, an upload without strip_location is stripped, and
        strip_location=0 keeps the location."""
        await self.f.database.run(db.set_strip_location, "kitten", True)
        record = json.loads((await self.v1())[1])
        self.check_stored(record["file"], record["size"], record["sha256"], stripped=True)
        record = json.loads((await self.v1(strip_location="0"))[1])
        self.assertTrue(record["has_location"])
        self.check_stored(record["file"], record["size"], record["sha256"], stripped=False)

    async def test_json_api(self):
        """/api/v1/upload: multipart with strip_location=1, and JSON bodies with true, "1", false
        (false overrides an account default of on); the image object has has_location."""
        body, headers = multipart({"strip_location": "1"}, {"file": ("p.jpg", self.photo)})
        headers[b"Authorization"] = [f"Bearer {self.token}".encode()]
        response, out = await self.client.request("POST", API + "upload", data=body, headers=headers)
        image = json.loads(out)["images"][0] if "images" in json.loads(out) else json.loads(out)
        self.assertEqual(response.code, 200, out)
        self.assertFalse(image["has_location"])
        self.check_stored(image["file"], image["size"], image["sha256"], stripped=True)
        await self.f.database.run(db.set_strip_location, "kitten", True)
        for value, stripped in ((True, True), ("1", True), (False, False), (0, False)):
            body = json.dumps({"file_base64": base64.b64encode(self.photo).decode(), "strip_location": value})
            response, out = await self.client.request(
                "POST", API + "upload", data=body.encode(), headers={**JSON, b"X-API-Key": [self.token.encode()]})
            self.assertEqual(response.code, 200, out)
            answer = json.loads(out)
            image = answer["images"][0] if "images" in answer else answer
            self.assertEqual(image["has_location"], not stripped, value)
            self.check_stored(image["file"], image["size"], image["sha256"], stripped=stripped)
        response, out = await self.client.request(
            "GET", API + "images", headers={b"Authorization": [f"Bearer {self.token}".encode()]})
        listed = json.loads(out)["images"]
        self.assertEqual(sorted(i["has_location"] for i in listed), [False, False, False, True, True])

    async def test_presigned_completion(self):
        """A presigned upload's completion takes strip_location (JSON true/false, "1"/"0"); a bad one is 400."""
        auth = {b"Authorization": [f"Bearer {self.token}".encode()]}
        results = []
        for value in (True, "0", "maybe"):
            grant = json.loads((await self.client.request("POST", API + "upload/presign", data=json.dumps(
                {"filename": "p.jpg", "contentType": "image/jpeg", "sizeBytes": len(self.photo)}).encode(),
                headers={**JSON, **auth}))[1])
            put_url = B + "/" + grant["put_url"].split("/", 3)[3]
            response, out = await self.client.request("PUT", put_url, data=self.photo)
            self.assertEqual(response.code, 200, out)
            response, out = await self.client.request("POST", API + "upload/complete", data=json.dumps(
                {"completion_token": grant["completion_token"], "strip_location": value}).encode(),
                headers={**JSON, **auth})
            results.append((response.code, json.loads(out)))
        (code, first), (code2, second), (code3, third) = results
        self.assertEqual((code, code2, code3), (200, 200, 400), results)
        image = first["images"][0] if "images" in first else first
        self.check_stored(image["file"], image["size"], image["sha256"], stripped=True)
        image = second["images"][0] if "images" in second else second
        self.check_stored(image["file"], image["size"], image["sha256"], stripped=False)
        self.assertIn("strip_location must be 1 or 0", third["error"])

    async def test_chevereto_endpoints(self):
        """/api/1/upload and /sharexapi/1/upload honour strip_location (a file part and base64)."""
        for prefix in ("/api/1/upload", "/sharexapi/1/upload"):
            body, headers = multipart({"key": self.token, "strip_location": "1"}, {"source": ("p.jpg", self.photo)})
            response, out = await self.client.request("POST", B + prefix, data=body, headers=headers)
            self.assertEqual(response.code, 200, out)
            image = json.loads(out)["image"]
            self.check_stored(image["filename"], int(image["size"]),
                              hashlib.sha256(self.originals()[image["filename"]]).hexdigest(), stripped=True)
        response, out = await self.client.request("POST", B + "/api/1/upload", data={
            "key": self.token, "source": base64.b64encode(self.photo).decode(), "strip_location": "1"})
        self.assertEqual(response.code, 200, out)
        self.assertEqual(self.originals()[json.loads(out)["image"]["filename"]], self.stripped)

    async def test_img_gather_php(self):
        """img_gather.php strips the fetched file when asked, and keeps it otherwise."""
        response, body = await self.client.request("POST", API + "img_gather.php", data={
            "token": self.token, "url": self.source.url("/img.jpg"), "strip_location": "1"})
        record = json.loads(body)
        self.assertEqual(response.code, 200, body)
        self.check_stored(record["file"], record["size"], record["sha256"], stripped=True)
        response, body = await self.client.request("POST", API + "img_gather.php", data={
            "token": self.token, "url": self.source.url("/img.jpg")})
        record = json.loads(body)
        self.assertTrue(record["has_location"])
        self.check_stored(record["file"], record["size"], record["sha256"], stripped=False)

    async def test_unreadable_metadata_is_refused_only_when_stripping(self):
        """A file whose EXIF cannot be read: 400 with strip_location=1 (nothing stored), stored as
        sent without it."""
        self.photo = self.photo.replace(b"Exif\x00\x00MM", b"Exif\x00\x00QQ", 1)
        response, body = await self.v1(strip_location="1")
        self.assertEqual(response.code, 400, body)
        self.assertIn("cannot remove the location metadata", json.loads(body)["error"])
        self.assertEqual(self.originals(), {})
        response, body = await self.v1()
        self.assertEqual(response.code, 200, body)
        self.assertEqual(list(self.originals().values()), [self.photo])


class PageTests(unittest.TestCase):
    """The upload form's checkbox, the /account setting, the gallery badge, the viewer note."""

    async def setUp(self):
        self.f = await make_fixture(self)
        await self.f.account("kitten")
        await self.f.account("bear")
        self.browser = Browser(self.f)
        await self.browser.login()

    async def upload(self, data: bytes, **fields):
        token = await self.browser.csrf("/images")
        return await self.browser.post("/images/upload", {"csrf": token, **fields},
                                       files={"file": ("phone.jpg", data)})

    def originals(self) -> list[bytes]:
        return [v for k, v in self.f.storage.objects.items() if k.count("/") == 1]

    async def test_form_checkbox_and_badge(self):
        """The form's checkbox strips; unchecked, the original is kept and its gallery card
        says "Location in original"; a plain image has no badge."""
        response, body = await self.upload(phone_jpeg(), strip_location="1")
        self.assertEqual(response.code, 200, body)
        response, body = await self.upload(phone_jpeg())
        self.assertEqual(response.code, 200, body)
        await self.upload(image_bytes())
        stored = self.originals()
        self.assertEqual(sum(location.tiff_has_location(tiff_of(d)) for d in stored if d.startswith(b"\xff\xd8")), 1)
        response, page = await self.browser.get("/images")
        self.assertEqual(page.count("Location in original"), 1)
        self.assertIn('name="strip_location" value="1"', page)
        self.assertNotIn('checked="checked" name="strip_location"', page)
        self.assertNotRegex(page, r'<input[^>]*name="strip_location"[^>]*checked')
        response, body = await self.upload(phone_jpeg(), strip_location="yes")
        self.assertEqual(response.code, 400)
        self.assertEqual(len(self.originals()), 3)

    async def test_account_setting(self):
        """/account saves the default (CSRF checked, bad values 400); the upload form's box is
        then checked; an unchecked box keeps the location even so."""
        response, page = await self.browser.get("/account")
        self.assertRegex(page, r'<input[^>]*value="0"[^>]*checked|<input[^>]*checked[^>]*value="0"')
        token = csrf_of(page)
        response, _ = await self.browser.post("/account/location", {"strip_location": "1"})
        self.assertEqual(response.code, 403)
        response, body = await self.browser.post("/account/location", {"csrf": token, "strip_location": "yes"})
        self.assertEqual(response.code, 400)
        response, body = await self.browser.post("/account/location", {"csrf": token})
        self.assertEqual(response.code, 400)
        self.assertFalse(await self.f.database.run(db.get_strip_location, "kitten"))
        response, _ = await self.browser.post("/account/location", {"csrf": token, "strip_location": "1"})
        self.assertEqual((response.code, response.headers.getRawHeaders("location")),
                         (303, ["/account?done=location-strip"]))
        self.assertTrue(await self.f.database.run(db.get_strip_location, "kitten"))
        self.assertFalse(await self.f.database.run(db.get_strip_location, "bear"))
        response, page = await self.browser.get("/account?done=location-strip")
        self.assertIn("uploads now remove location", page)
        self.assertRegex(page, r'<input[^>]*value="1"[^>]*checked|<input[^>]*checked[^>]*value="1"')
        response, page = await self.browser.get("/images")
        self.assertRegex(page, r'<input[^>]*name="strip_location"[^>]*checked|<input[^>]*checked[^>]*name="strip_location"')
        await self.upload(phone_jpeg())  # the box unchecked: kept
        self.assertTrue(location.tiff_has_location(tiff_of(self.originals()[0])))

    async def test_viewer_note_for_the_owner_only(self):
        """The viewer page tells the owner that the original carries a location; a visitor
        and another account see no such note."""
        await self.upload(phone_jpeg())
        name = next(k for k in self.f.storage.objects if k.count("/") == 1).split("/", 1)[1]
        response, page = await self.browser.get(f"/i/kitten/{name}")
        self.assertIn("Location in original", page)
        response, page = await Browser(self.f).get(f"/i/kitten/{name}")
        self.assertEqual(response.code, 200)
        self.assertNotIn("Location in original", page)
        other = Browser(self.f)
        await other.login("bear")
        response, page = await other.get(f"/i/kitten/{name}")
        self.assertNotIn("Location in original", page)
