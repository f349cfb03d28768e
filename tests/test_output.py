"""Tests for imgshare.domain.output: times, image records and rendering."""

import json

from twisted.trial import unittest

from imgshare.domain import output, records

UPLOADED = 1771061400.0  # 2026-02-14T09:30:00Z


def make_image(**changes):
    """An Image record for kitten's 20260214_fountain.jpg, with changes applied."""
    fields = dict(
        id=7,
        account="kitten",
        name="20260214_fountain.jpg",
        mime="image/jpeg",
        size=1234567,
        width=4000,
        height=3000,
        sha256="ab" * 32,
        uploaded=UPLOADED,
        expires=None,
        state=records.LIVE,
    )
    fields.update(changes)
    return records.Image(**fields)


class IsoTimeTests(unittest.TestCase):
    """iso_time formats UTC timestamps to the second."""

    def test_format(self):
        """Timestamps become YYYY-MM-DDTHH:MM:SSZ in UTC."""
        self.assertEqual(output.iso_time(UPLOADED), "2026-02-14T09:30:00Z")
        self.assertEqual(output.iso_time(0), "1970-01-01T00:00:00Z")

    def test_fraction_truncated(self):
        """Fractions of a second are dropped, never rounded up."""
        self.assertEqual(output.iso_time(UPLOADED + 0.999), "2026-02-14T09:30:00Z")


class ImageRecordTests(unittest.TestCase):
    """image_record builds the documented JSON object."""

    def test_keys_and_values(self):
        """The record has the documented keys, in order, with the image's values."""
        record = output.image_record(make_image(), "https://img.example.com")
        self.assertEqual(
            list(record),
            [
                "status",
                "user",
                "file",
                "mime",
                "size",
                "width",
                "height",
                "sha256",
                "uploaded",
                "expires",
                "urls",
                "id",
                "viewer",
                "has_location",
            ],
        )
        self.assertEqual(record["status"], "ok")
        self.assertEqual(record["user"], "kitten")
        self.assertEqual(record["file"], "20260214_fountain.jpg")
        self.assertEqual(record["mime"], "image/jpeg")
        self.assertEqual((record["size"], record["width"], record["height"]), (1234567, 4000, 3000))
        self.assertEqual(record["sha256"], "ab" * 32)
        self.assertEqual(record["uploaded"], "2026-02-14T09:30:00Z")
        self.assertIsNone(record["expires"])
        self.assertEqual(record["id"], "kitten~20260214_fountain.jpg")
        self.assertEqual(record["viewer"], "https://img.example.com/i/kitten/20260214_fountain.jpg")
        self.assertNotIn("delete_url", record)  # only an upload's record knows the secret

    def test_delete_url_with_a_secret(self):
        """The record an upload returns carries the secret delete link, last."""
        record = output.image_record(make_image(delete_secret="0f" * 16), "https://img.example.com/")
        self.assertEqual(list(record)[-3:], ["viewer", "has_location", "delete_url"])
        self.assertEqual(
            record["delete_url"],
            "https://img.example.com/delete/kitten/20260214_fountain.jpg/" + "0f" * 16,
        )

    def test_expires_header(self):
        """Imgshare-Expires is the ISO expiry, or never."""
        self.assertEqual(output.expires_header(make_image()), "never")
        self.assertEqual(output.expires_header(make_image(expires=UPLOADED + 3600)), "2026-02-14T10:30:00Z")

    def test_urls(self):
        """The four URLs follow the documented layout under the public URL."""
        for public_url in ("https://img.example.com", "https://img.example.com/"):
            record = output.image_record(make_image(), public_url)
            self.assertEqual(
                record["urls"],
                {
                    "original": "https://img.example.com/img/kitten/20260214_fountain.jpg",
                    "xga": "https://img.example.com/img/kitten/xga/20260214_fountain.jpg",
                    "vga": "https://img.example.com/img/kitten/vga/20260214_fountain.jpg",
                    "qvga": "https://img.example.com/img/kitten/qvga/20260214_fountain.jpg",
                },
            )

    def test_non_jpeg_urls(self):
        """A PNG original keeps its name; its resized versions end in .jpg."""
        record = output.image_record(
            make_image(name="20260214_a.png", mime="image/png"), "http://h:8080/base/"
        )
        self.assertEqual(record["urls"]["original"], "http://h:8080/base/img/kitten/20260214_a.png")
        self.assertEqual(
            record["urls"]["qvga"], "http://h:8080/base/img/kitten/qvga/20260214_a.jpg"
        )

    def test_expiry(self):
        """An ephemeral image states its expiry instant."""
        record = output.image_record(make_image(expires=UPLOADED + 3600), "http://h")
        self.assertEqual(record["expires"], "2026-02-14T10:30:00Z")


class RenderTests(unittest.TestCase):
    """render writes compact JSON or Key=Value text."""

    def test_json(self):
        """JSON is compact, ends in a newline and parses back to the data."""
        record = output.image_record(make_image(), "http://h")
        body, content_type = output.render(record, "json")
        self.assertEqual(content_type, "application/json")
        self.assertTrue(body.endswith(b"}\n"))
        self.assertNotIn(b": ", body)
        self.assertNotIn(b", ", body)
        self.assertEqual(json.loads(body), record)
        self.assertTrue(body.startswith(b'{"status":"ok","user":"kitten"'))

    def test_text_record(self):
        """The text format has the documented keys, one per line, expires=never."""
        record = output.image_record(make_image(), "http://h")
        body, content_type = output.render(record, "text")
        self.assertEqual(content_type, "text/plain; charset=utf-8")
        self.assertEqual(
            body.decode("utf-8"),
            "status=ok\n"
            "user=kitten\n"
            "file=20260214_fountain.jpg\n"
            "mime=image/jpeg\n"
            "size=1234567\n"
            "width=4000\n"
            "height=3000\n"
            f"sha256={'ab' * 32}\n"
            "uploaded=2026-02-14T09:30:00Z\n"
            "expires=never\n"
            "url_original=http://h/img/kitten/20260214_fountain.jpg\n"
            "url_xga=http://h/img/kitten/xga/20260214_fountain.jpg\n"
            "url_vga=http://h/img/kitten/vga/20260214_fountain.jpg\n"
            "url_qvga=http://h/img/kitten/qvga/20260214_fountain.jpg\n"
            "id=kitten~20260214_fountain.jpg\n"
            "url_viewer=http://h/i/kitten/20260214_fountain.jpg\n"
            "has_location=false\n",
        )
        with_secret = output.image_record(make_image(delete_secret="0f" * 16), "http://h")
        body, _ = output.render(with_secret, "text")
        self.assertTrue(body.endswith(
            b"\ndelete_url=http://h/delete/kitten/20260214_fountain.jpg/" + b"0f" * 16 + b"\n"))

    def test_text_expiry(self):
        """An ephemeral image's expiry is written as its ISO time."""
        record = output.image_record(make_image(expires=UPLOADED + 60), "http://h")
        body, _ = output.render(record, "text")
        self.assertIn(b"\nexpires=2026-02-14T09:31:00Z\n", body)

    def test_text_injection(self):
        """Line breaks inside values become spaces: no extra lines can be injected."""
        data = output.error_body("bad\r\nstatus=ok\nx\u2028y\x85z\rw")
        body, _ = output.render(data, "text")
        self.assertEqual(body, b"status=error\nerror=bad  status=ok x y z w\n")
        self.assertEqual(len(body.decode("utf-8").splitlines()), 2)

    def test_json_injection(self):
        """JSON escapes control characters, so the body stays one line."""
        body, _ = output.render(output.error_body('a\r\nb"c'), "json")
        self.assertEqual(body.count(b"\n"), 1)
        self.assertEqual(json.loads(body)["error"], 'a\r\nb"c')

    def test_text_scalars(self):
        """None is empty (except expires), booleans are true/false, lists comma-joined."""
        data = {"a": None, "b": True, "c": False, "d": ["image/png", "image/bmp"], "e": 1.5}
        body, _ = output.render(data, "text")
        self.assertEqual(body, b"a=\nb=true\nc=false\nd=image/png,image/bmp\ne=1.5\n")

    def test_text_unicode(self):
        """Text is UTF-8 encoded."""
        body, _ = output.render({"error": "caf\u00e9"}, "text")
        self.assertEqual(body, "error=caf\u00e9\n".encode())

    def test_unknown_format_is_json(self):
        """Rendering with an unknown format name gives JSON."""
        body, content_type = output.render({"status": "ok"}, "xml")
        self.assertEqual((body, content_type), (b'{"status":"ok"}\n', "application/json"))


class ErrorAndFormatTests(unittest.TestCase):
    """error_body and pick_format."""

    def test_error_body(self):
        """Errors are {"status": "error", "error": message}."""
        self.assertEqual(
            output.error_body("no such file"), {"status": "error", "error": "no such file"}
        )
        body, _ = output.render(output.error_body("no such file"), "json")
        self.assertEqual(body, b'{"status":"error","error":"no such file"}\n')

    def test_pick_format(self):
        """json and text are recognised in any case; anything else is json."""
        self.assertEqual(output.FORMATS, ("json", "text"))
        table = [
            (None, "json"),
            ("", "json"),
            ("json", "json"),
            ("text", "text"),
            ("TEXT", "text"),
            (" text ", "text"),
            ("txt", "text"),
            ("xml", "json"),
            ("redirect", "json"),
        ]
        for value, expected in table:
            self.assertEqual(output.pick_format(value), expected, value)
