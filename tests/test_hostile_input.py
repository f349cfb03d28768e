"""Hostile input found by a red-team pass: each test reproduces one attack.

Scan bombs and absurd dimensions are refused from the header; a ``//`` path is
not found rather than redirected nowhere; a zero lifetime is the minimum, not
permanence; a token outside the body is checked before the body is parsed, and
a body of countless tiny parts is refused early.
"""

from __future__ import annotations

import json
import os

from twisted.trial import unittest

from imgshare import db, derive
from imgshare.domain import errors, sniff
from imgshare.testing import T0, image_bytes, make_fixture, multipart
from imgshare.web import forms
from tests import hostile

URL = "http://img.example/api/v1/"


def written(testcase: unittest.TestCase, data: bytes) -> str:
    """A file in the test's temp folder holding ``data``."""
    path = testcase.mktemp()
    with open(path, "wb") as f:
        f.write(data)
    return path


class ScanBombTests(unittest.TestCase):
    """A JPEG repeating a scan thousands of times is refused before decoding."""

    def write(self, data: bytes) -> str:
        return written(self, data)

    def test_scans_counted(self):
        """An ordinary progressive JPEG has a handful of scans, a baseline one has one."""
        self.assertLessEqual(sniff.count_jpeg_scans(self.write(hostile.progressive_jpeg())), 12)
        self.assertEqual(sniff.count_jpeg_scans(self.write(image_bytes("JPEG", (300, 200)))), 1)
        colour = hostile.progressive_jpeg((640, 480), "CMYK")
        scans = sniff.count_jpeg_scans(self.write(colour))
        self.assertGreater(scans, 1)
        sniff.inspect_file(self.write(colour), 10**8)  # accepted

    def test_repeated_scans_counted(self):
        """Every repeated scan counts (the count stops just past the limit)."""
        base = sniff.count_jpeg_scans(self.write(hostile.progressive_jpeg()))
        self.assertEqual(sniff.count_jpeg_scans(self.write(hostile.scan_bomb(40))), base + 40)
        self.assertEqual(
            sniff.count_jpeg_scans(self.write(hostile.scan_bomb(16000))), sniff.MAX_JPEG_SCANS + 1
        )

    def test_limit_boundary(self):
        """Exactly MAX_JPEG_SCANS scans pass; one more is a BadImage (400)."""
        base = sniff.count_jpeg_scans(self.write(hostile.progressive_jpeg()))
        at_limit = self.write(hostile.scan_bomb(sniff.MAX_JPEG_SCANS - base))
        self.assertEqual(sniff.inspect_file(at_limit, 10**8).type, sniff.JPEG)
        over = self.write(hostile.scan_bomb(sniff.MAX_JPEG_SCANS - base + 1))
        exc = self.assertRaises(errors.BadImage, sniff.inspect_file, over, 10**8)
        self.assertEqual(exc.status, 400)
        self.assertIn("scans", exc.message)

    def test_truncated_jpeg_counts_what_is_there(self):
        """A file cut inside a scan or a segment length ends the count quietly."""
        data = hostile.scan_bomb(5)
        for cut in (3, 20, len(data) // 2, len(data) - 3):
            sniff.count_jpeg_scans(self.write(data[:cut]))  # no exception

    def test_derivation_refuses_a_stored_scan_bomb(self):
        """A scan bomb stored before uploads were checked is broken, not decoded."""
        src = self.write(hostile.scan_bomb(500, size=(400, 300)))
        out = self.mktemp()
        os.makedirs(out)
        exc = self.assertRaises(BrokenImage, derive.derive_variants, src, out, "bomb", 10**8)
        self.assertIn("scans", str(exc))


BrokenImage = derive.BrokenImage


class SideLimitTests(unittest.TestCase):
    """A side over 65 535 pixels is refused (413) from the header."""

    def write(self, data: bytes) -> str:
        return written(self, data)

    def test_tall_bmp_and_png_refused(self):
        """1 x 100 000 000 BMP and 1 x 50 000 000 PNG pass the pixel limit but not the side limit."""
        for data in (hostile.bmp_claiming(1, 100_000_000), hostile.png_claiming(1, 50_000_000),
                     hostile.bmp_claiming(100_000_000, 1), hostile.png_claiming(65536, 1)):
            exc = self.assertRaises(errors.TooLarge, sniff.inspect_file, self.write(data), 10**8)
            self.assertEqual(exc.status, 413)
            self.assertIn("65535", exc.message)

    def test_side_boundary(self):
        """A side of exactly 65 535 pixels is accepted as far as the header goes."""
        path = self.write(hostile.png_claiming(65535, 1))
        self.assertEqual(sniff.declared_dimensions(path, sniff.PNG), (65535, 1))
        try:
            sniff.inspect_file(path, 10**8)
        except errors.TooLarge as e:  # pragma: no cover - the failure this test is about
            self.fail(f"a 65535 px side was refused: {e}")
        except errors.BadImage:
            pass  # Pillow may find the tiny pixel data wanting; that is not the limit

    def test_derivation_refuses_a_long_side(self):
        """The derivation checks the side limit too (files stored before the check)."""
        src = self.write(hostile.bmp_claiming(1, 100_000_000))
        out = self.mktemp()
        os.makedirs(out)
        self.assertRaises(BrokenImage, derive.derive_variants, src, out, "tall", 10**8)


class ApiHostileTests(unittest.TestCase):
    async def setUp(self):
        self.f = await make_fixture(self)
        await self.f.account("kitten")
        self.token = await self.f.token("kitten")
        self.client = self.f.client()

    async def upload(self, data: bytes, filename: str = "x.jpg", url: str = URL + "img_upload.php", **fields):
        body, headers = multipart({"token": self.token, **fields}, {"file": (filename, data)})
        return await self.client.request("POST", url, data=body, headers=headers)

    async def images(self) -> list:
        return await self.f.database.run(db.list_images, "kitten", T0, 0, 100)

    async def test_scan_bomb_upload_refused(self):
        """POST of a scan bomb: 400, nothing stored, nothing queued."""
        response, body = await self.upload(hostile.scan_bomb(16000, size=(256, 256)), "bomb.jpg")
        self.assertEqual(response.code, 400, body)
        self.assertIn("scans", json.loads(body)["error"])
        self.assertEqual(await self.images(), [])
        self.assertEqual(self.f.storage.objects, {})

    async def test_tall_images_refused(self):
        """The 102-byte 1 x 100 000 000 BMP and a 1 x 50 000 000 PNG: 413, nothing stored."""
        for name, data in (("tall.bmp", hostile.bmp_claiming(1, 100_000_000)),
                           ("tall.png", hostile.png_claiming(1, 50_000_000))):
            response, body = await self.upload(data, name)
            self.assertEqual(response.code, 413, body)
            self.assertIn("65535", json.loads(body)["error"])
        self.assertEqual(await self.images(), [])
        self.assertEqual(self.f.storage.objects, {})

    async def test_limits_state_the_header_checks(self):
        """GET limits names the side and scan limits beside the pixel limit."""
        response, body = await self.client.request("GET", URL + "limits")
        limits = json.loads(body)
        self.assertEqual((limits["max_side"], limits["max_jpeg_scans"]), (65535, 100))
        response, body = await self.client.request("GET", URL + "limits?format=text")
        self.assertIn(b"max_side=65535\n", body)

    async def test_double_slash_is_not_found(self):
        """A path with an empty segment is 404, never a redirect without a Location."""
        response, body = await self.upload(image_bytes(), "pic.jpg", keep_name="1")
        self.assertEqual(response.code, 200, body)
        name = json.loads(body)["file"]
        for path in (f"/img/kitten//{name}", f"/img/kitten/xga//{name}", f"/img//kitten/{name}",
                     f"/thumb/kitten//{name}", f"/img/kitten/{name}//", "/images//", "/tokens//delete"):
            for method in ("GET", "HEAD"):
                response, _ = await self.client.request(
                    method, "http://img.example" + path, allow_redirects=False)
                self.assertEqual(response.code, 404, (method, path))
                self.assertIsNone(response.headers.getRawHeaders("location"), path)
        response, _ = await self.client.request("GET", f"http://img.example/img/kitten/{name}")
        self.assertEqual(response.code, 200)

    async def test_zero_lifetime_is_the_minimum(self):
        """expire=0, 0s and PT0S give one hour, never a permanent file."""
        for value in ("0", "0s", "PT0S"):
            response, body = await self.upload(image_bytes(), "z.jpg", expire=value)
            self.assertEqual(response.code, 200, body)
            record = json.loads(body)
            self.assertEqual(record["expires"], "2026-02-14T10:30:00Z", value)

    async def test_query_token_checked_before_the_body(self):
        """A bad token in the query string is 401 before the body is even parsed."""
        parsed = []
        real = forms.parse_body
        self.patch(forms, "parse_body", lambda *a, **k: parsed.append(1) or real(*a, **k))
        body, headers = multipart({}, {"file": ("x.jpg", image_bytes())})
        response, out = await self.client.request(
            "POST", URL + "img_upload.php?token=" + "0" * 32, data=body, headers=headers)
        self.assertEqual(response.code, 401, out)
        self.assertEqual(parsed, [])
        # A malformed body behind a bad query token: still 401, not 400.
        response, out = await self.client.request(
            "POST", URL + "img_upload.php?token=" + "1" * 32, data=b"--x\r\ngarbage",
            headers={b"Content-Type": [b"multipart/form-data; boundary=x"]})
        self.assertEqual(response.code, 401, out)
        # A good query token works as before.
        response, out = await self.client.request(
            "POST", URL + "img_upload.php?token=" + self.token, data=body, headers=headers)
        self.assertEqual(response.code, 200, out)

    async def test_absurd_number_of_parts(self):
        """Thousands of tiny file parts are refused (400) without reading them all."""
        boundary = b"b0undary"
        part = (b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\nA\r\n')
        body = part * 5000 + b"--" + boundary + b"--\r\n"
        response, out = await self.client.request(
            "POST", URL + "img_upload.php", data=body,
            headers={b"Content-Type": [b"multipart/form-data; boundary=" + boundary]})
        self.assertEqual(response.code, 400, out)
        self.assertIn("too many parts", json.loads(out)["error"])
        self.assertEqual([n for n in os.listdir(self.f.config.spool_dir) if n.startswith("upload-")]
                         if os.path.isdir(self.f.config.spool_dir) else [], [])

    async def test_browser_form_keeps_its_fifty_files(self):
        """The limit leaves room for the fields and files a real form sends."""
        files = {f"f{i}": "v" for i in range(forms.MAX_FIELDS)}
        body, headers = multipart(files)
        with open(self.mktemp(), "w+b") as fp:
            fp.write(body)
            form = forms.parse_body(fp, headers[b"Content-Type"][0], self.mktemp(), 1000, max_files=50)
        self.assertEqual(len(form.fields), forms.MAX_FIELDS)
