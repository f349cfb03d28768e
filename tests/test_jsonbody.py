"""The streaming JSON body reader: big base64 strings spooled, the rest parsed."""

from __future__ import annotations

import io
import json
import os

from twisted.trial import unittest

from imgshare.domain.errors import BadRequest, TooLarge
from imgshare.web.jsonbody import parse_json_body


class JsonBodyTests(unittest.TestCase):
    def setUp(self):
        self.spool = self.mktemp()
        os.makedirs(self.spool)

    def parse(self, raw: bytes, chunk: int = 7, limit: int = 10_000):
        return parse_json_body(io.BytesIO(raw), self.spool, ("file_base64", "base64"), limit, chunk=chunk)

    def spooled(self, form, name="file_base64") -> bytes:
        with open(form.spooled[name].path, "rb") as f:
            return f.read()

    def test_fields_and_spooled_value_at_every_chunk_size(self):
        raw = json.dumps({"filename": "a \u00e9\"b\".png", "contentType": "image/png",
                          "file_base64": "data:image\\/png;base64,QUJD\nREVG\u002b/=", "keep_name": True,
                          "expire": 3600, "albumId": None, "nested": {"x": [1, "}", {"y": "]"}]},
                          "nsfw": False}).encode()
        raw = raw.replace(b"\\\\/", b"\\/")  # a client that escapes slashes
        for chunk in (1, 2, 3, 5, 64, 1 << 16):
            form = self.parse(raw, chunk)
            self.assertEqual(form.fields["filename"], 'a \u00e9"b".png')
            self.assertEqual(form.fields["keep_name"], "1")
            self.assertEqual(form.fields["expire"], "3600")
            self.assertNotIn("albumId", form.fields)
            self.assertNotIn("nsfw", form.fields)
            self.assertEqual(self.spooled(form), b"data:image/png;base64,QUJD\nREVG+/=")
            self.assertEqual(form.spooled["file_base64"].size, len(self.spooled(form)))
            form.discard()
        self.assertEqual(os.listdir(self.spool), [])

    def test_first_value_counts(self):
        form = self.parse(b'{"name": "a", "name": "b", "base64": "QQ==", "base64": "Qg=="}')
        self.assertEqual(form.fields["name"], "a")
        self.assertEqual(self.spooled(form, "base64"), b"QQ==")

    def test_whitespace_bom_and_empty_object(self):
        self.assertEqual(self.parse(b"\xef\xbb\xbf \n { } \n").fields, {})

    def test_malformed_bodies_are_400_and_leave_nothing(self):
        for raw in (b"", b"   ", b"[1]", b'"x"', b"{", b'{"a"}', b'{"a":}', b'{"a":1,}', b'{"a":1}x',
                    b'{"a":1 "b":2}', b'{"file_base64": "QUJD', b'{"a": "x\ny"}', b'{"a": tru}',
                    b'{"file_base64": "QQ\\q"}', b'{"file_base64": "\\u12G4"}', b'{"a": ]}',
                    b'{"a": [1}', b"{" + b'"a":[' * 5000 + b"]" * 5000 + b"}"):
            with self.assertRaises(BadRequest, msg=raw[:40]):
                self.parse(raw)
        self.assertEqual(os.listdir(self.spool), [])

    def test_limits(self):
        with self.assertRaises(TooLarge):
            self.parse(b'{"file_base64": "' + b"A" * 10_001 + b'"}')
        with self.assertRaises(TooLarge):
            self.parse(b'{"other": "' + b"A" * (1024 * 1024 + 1) + b'"}', chunk=1 << 16)
        with self.assertRaises(BadRequest):
            self.parse(b"{" + b",".join(b'"k%d":1' % i for i in range(65)) + b"}")
        self.assertEqual(os.listdir(self.spool), [])
