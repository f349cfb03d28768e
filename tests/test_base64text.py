"""Lenient streaming base64 (PEERS section 0.7) and the spooled text fields that carry it."""

import base64
import io
import os

from twisted.trial import unittest

from imgshare.domain.base64text import BadBase64, Base64Decoder
from imgshare.web.forms import _UrlencodedSpooler, parse_body

DATA = os.urandom(3000)


def decode(text: bytes, piece: int = 7) -> bytes:
    decoder = Base64Decoder()
    out = b"".join(decoder.feed(text[i:i + piece]) for i in range(0, len(text), piece))
    return out + decoder.finish()


class DecoderTests(unittest.SynchronousTestCase):
    def test_clean_and_lenient_forms(self):
        """Plain, data: URI, spaces for +, URL-safe, unpadded, wrapped lines: all decode, in any pieces."""
        plain = base64.b64encode(DATA)
        wrapped = b"\r\n".join(plain[i:i + 76] for i in range(0, len(plain), 76)) + b"\n"
        forms = [plain, b"data:image/png;base64," + plain, b"DATA:image/jpeg;name=a.jpg;base64," + plain,
                 plain.replace(b"+", b" "), base64.urlsafe_b64encode(DATA).rstrip(b"="), wrapped,
                 b"\t" + plain]
        for text in forms:
            for piece in (1, 5, 600, 10**6):
                self.assertEqual(decode(text, piece), DATA, (text[:30], piece))

    def test_every_padding(self):
        """Lengths 1 to 6 with and without their padding."""
        for n in range(1, 7):
            data = DATA[:n]
            self.assertEqual(decode(base64.b64encode(data), 1), data)
            self.assertEqual(decode(base64.b64encode(data).rstrip(b"="), 3), data)

    def test_invalid(self):
        """Still invalid after the leniency: BadBase64 (400)."""
        for text in [b"", b"   ", b"A", b"AAAAA", b"QQ==QQ", b"Q===A", b"!!!!", b"QQ%3D",
                     b"data:image/png,QQ==", b"data:;base64,", b"=QQQ"]:
            with self.assertRaises(BadBase64, msg=text):
                decode(text)


class SpooledFieldTests(unittest.TestCase):
    def setUp(self):
        self.spool = self.mktemp()

    def read(self, form, name):
        with open(form.spooled[name].path, "rb") as f:
            return f.read()

    def test_urlencoded_spooler_across_pieces(self):
        """Percent escapes and + split across reads decode like parse_qsl; other fields stay in memory."""
        body = b"key=abc&source=a%2Bb+c%3D%3D%E2%82%AC&&flag&source=second&x=%41"
        for piece in (1, 2, 3, len(body)):
            spooler = _UrlencodedSpooler(self.spool, ("source",), 1000)
            for i in range(0, len(body), piece):
                spooler.feed(body[i:i + piece])
            form = spooler.finish()
            self.assertEqual(self.read(form, "source"), "a+b c==€".encode(), piece)
            self.assertEqual(form.fields, {"key": "abc", "flag": "", "x": "A"}, piece)
            form.discard()
        self.assertEqual(os.listdir(self.spool), [])

    def test_limits(self):
        """A spooled field over its limit is 413 and leaves nothing behind."""
        from imgshare.domain.errors import TooLarge

        body = b"source=" + b"A" * 2000
        with self.assertRaises(TooLarge):
            parse_body(io.BytesIO(body), b"application/x-www-form-urlencoded", self.spool, 10,
                       spooled_fields=("source",), max_spooled=1000)
        self.assertEqual(os.listdir(self.spool), [])
        multipart = (b'--b\r\nContent-Disposition: form-data; name="source"\r\n\r\n' + b"A" * 2000
                     + b"\r\n--b--\r\n")
        with self.assertRaises(TooLarge):
            parse_body(io.BytesIO(multipart), b"multipart/form-data; boundary=b", self.spool, 10,
                       spooled_fields=("source",), max_spooled=1000)
        self.assertEqual(os.listdir(self.spool), [])

    def test_multipart_text_part_spooled(self):
        """A multipart text part named in spooled_fields is spooled past the 64 KiB field limit."""
        value = b"B" * (100 * 1024)
        multipart = (b'--b\r\nContent-Disposition: form-data; name="key"\r\n\r\nk\r\n'
                     b'--b\r\nContent-Disposition: form-data; name="source"\r\n\r\n' + value + b"\r\n--b--\r\n")
        form = parse_body(io.BytesIO(multipart), b"multipart/form-data; boundary=b", self.spool, 10,
                          spooled_fields=("source",), max_spooled=200 * 1024)
        self.assertEqual((self.read(form, "source"), form.fields), (value, {"key": "k"}))
        form.discard()
