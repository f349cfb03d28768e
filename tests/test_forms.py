"""Form bodies parsed off the reactor: multipart streaming, limits, hostile bodies."""

from __future__ import annotations

import io
import os

from twisted.trial import unittest

from imgshare.domain.errors import BadRequest, TooLarge
from imgshare.testing import multipart
from imgshare.web.forms import MAX_FIELDS, parse_body


class ParseBodyTests(unittest.TestCase):
    def setUp(self):
        self.spool = self.mktemp()

    def parse(self, body, ctype, max_file=1000):
        return parse_body(io.BytesIO(body), ctype, self.spool, max_file)

    def spooled(self):
        return os.listdir(self.spool) if os.path.exists(self.spool) else []

    def test_fields_and_file(self):
        """Text fields are kept, the file part is spooled to disk with the client's filename."""
        body, headers = multipart({"token": "t", "keep_name": "1"}, {"file": ("фото.jpg", b"\xff\xd8data")})
        form = self.parse(body, headers[b"Content-Type"][0])
        self.assertEqual(form.fields, {"token": "t", "keep_name": "1"})
        self.assertEqual((form.file.filename, form.file.size), ("фото.jpg", 6))
        with open(form.file.path, "rb") as f:
            self.assertEqual(f.read(), b"\xff\xd8data")
        self.assertEqual(os.path.dirname(form.file.path), os.path.abspath(self.spool))
        form.discard()
        self.assertEqual(self.spooled(), [])

    def test_file_over_limit(self):
        """A file part over the limit raises TooLarge and leaves nothing spooled."""
        body, headers = multipart({}, {"file": ("a.jpg", b"x" * 1001)})
        self.assertRaises(TooLarge, self.parse, body, headers[b"Content-Type"][0])
        self.assertEqual(self.spooled(), [])

    def test_extra_file_parts_ignored(self):
        """Only the first 'file' part is kept; other file parts are read past."""
        body, headers = multipart({}, {"file": ("a.jpg", b"1"), "other": ("b.jpg", b"2")})
        form = self.parse(body, headers[b"Content-Type"][0])
        self.assertEqual(form.file.filename, "a.jpg")
        self.assertEqual(len(self.spooled()), 1)

    def test_hostile_multipart(self):
        """Garbage, a missing boundary, no closing boundary, nameless parts, huge headers: BadRequest, nothing spooled."""
        ct = b"multipart/form-data; boundary=b"
        cases = [
            (b"garbage", ct),
            (b"x", b"multipart/form-data"),
            (b'--b\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\nabc', ct),
            (b"--b\r\nContent-Type: text/plain\r\n\r\nabc\r\n--b--\r\n", ct),
            (b"--b\r\nX-Long: " + b"a" * 20000 + b"\r\n\r\nabc\r\n--b--\r\n", ct),
            (b"--b\r\n" + b"Content-Disposition: attachment\r\n\r\nx\r\n--b--\r\n", ct),
        ]
        for body, ctype in cases:
            self.assertRaises(BadRequest, self.parse, body, ctype)
        self.assertEqual(self.spooled(), [])

    def test_field_limits(self):
        """Too many fields or an overlong field: BadRequest."""
        body, headers = multipart({f"f{i}": "v" for i in range(MAX_FIELDS + 1)})
        self.assertRaises(BadRequest, self.parse, body, headers[b"Content-Type"][0])
        body, headers = multipart({"token": "x" * 70_000})
        self.assertRaises(BadRequest, self.parse, body, headers[b"Content-Type"][0])

    def test_urlencoded(self):
        """urlencoded bodies are parsed; the first value of a repeated field wins."""
        form = self.parse(b"token=abc&file=20260214_a.jpg&token=zzz", b"application/x-www-form-urlencoded")
        self.assertEqual(form.fields, {"token": "abc", "file": "20260214_a.jpg"})
        self.assertIsNone(form.file)

    def test_other_bodies_are_empty_forms(self):
        """A body of another type contributes no fields."""
        self.assertEqual(self.parse(b"{}", b"application/json").fields, {})
        self.assertEqual(self.parse(b"abc", None).fields, {})

    def test_several_file_parts(self):
        """With max_files, every 'file' part up to that count is spooled in order; the rest are read past."""
        body, headers = multipart({})
        boundary = headers[b"Content-Type"][0].split(b"boundary=")[1]
        parts = b""
        for i in range(3):
            parts += (b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="%d.jpg"'
                      b"\r\n\r\n" % i + b"data%d\r\n" % i)
        body = parts + b"--" + boundary + b"--\r\n"
        form = parse_body(io.BytesIO(body), headers[b"Content-Type"][0], self.spool, 1000, max_files=2)
        self.assertEqual([f.filename for f in form.files], ["0.jpg", "1.jpg"])
        self.assertEqual(form.file, form.files[0])
        self.assertEqual(len(self.spooled()), 2)
        form.discard()
        self.assertEqual(self.spooled(), [])

    def test_several_files_over_limit(self):
        """A second file part over the limit removes the first one too."""
        body, headers = multipart({})
        boundary = headers[b"Content-Type"][0].split(b"boundary=")[1]
        body = b"".join(
            b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\n' + data + b"\r\n"
            for data in (b"small", b"x" * 2000)
        ) + b"--" + boundary + b"--\r\n"
        self.assertRaises(TooLarge, parse_body, io.BytesIO(body), headers[b"Content-Type"][0], self.spool, 1000,
                          max_files=5)
        self.assertEqual(self.spooled(), [])
