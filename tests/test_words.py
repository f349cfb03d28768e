"""Sizes and times in words for the pages, and the ShareX uploader file."""

from __future__ import annotations

import json

from twisted.trial import unittest

from imgshare.domain import sharex, words
from imgshare.domain.lifetime import DAY, DEFAULT_TIERS, HOUR


class WordsTests(unittest.TestCase):
    def test_sizes(self):
        """Bytes, KiB, MiB and GiB with one decimal."""
        self.assertEqual(words.size_in_words(1), "1 byte")
        self.assertEqual(words.size_in_words(532), "532 bytes")
        self.assertEqual(words.size_in_words(12_700), "12.4 KiB")
        self.assertEqual(words.size_in_words(2 * 1024 * 1024), "2.0 MiB")
        self.assertEqual(words.size_in_words(3 * 1024**3), "3.0 GiB")

    def test_until(self):
        """Expiry in words: never, in N units (rounded down), expired."""
        now = 1000.0
        self.assertEqual(words.until_in_words(None, now), "never")
        self.assertEqual(words.until_in_words(now + 3 * DAY + 5, now), "in 3 days")
        self.assertEqual(words.until_in_words(now + 90 * DAY, now), "in 90 days")
        self.assertEqual(words.until_in_words(now + HOUR, now), "in 1 hour")
        self.assertEqual(words.until_in_words(now + 30, now), "in less than a minute")
        self.assertEqual(words.until_in_words(now + 400 * DAY, now), "in 1 year")
        self.assertEqual(words.until_in_words(now, now), "expired")

    def test_since(self):
        """Past moments: never, just now, N units ago."""
        self.assertEqual(words.since_in_words(None, 100.0), "never")
        self.assertEqual(words.since_in_words(100.0, 130.0), "just now")
        self.assertEqual(words.since_in_words(0.0, 2 * HOUR + 5), "2 hours ago")

    def test_tiers(self):
        """The default tiers are explained in one sentence each."""
        self.assertEqual(words.tiers_in_words(DEFAULT_TIERS), [
            "Up to 2.0 MiB: kept as long as you like, forever by default.",
            "Up to 8.0 MiB: kept at most 90 days.",
            "Up to 32.0 MiB: kept at most 7 days.",
        ])


class ShareXTests(unittest.TestCase):
    def test_uploader_file(self):
        """The .sxcu file is an image uploader posting the file as multipart 'file' with the token
        in X-API-Key, reading the URL and the error from our JSON."""
        data = json.loads(sharex.uploader_file("https://img.example/", "ab" * 16))
        self.assertEqual(data["RequestURL"], "https://img.example/api/v1/img_upload.php")
        self.assertEqual(data["Headers"], {"X-API-Key": "ab" * 16})
        self.assertEqual((data["DestinationType"], data["RequestMethod"], data["Body"], data["FileFormName"]),
                         ("ImageUploader", "POST", "MultipartFormData", "file"))
        self.assertEqual((data["URL"], data["ThumbnailURL"], data["ErrorMessage"]),
                         ("{json:urls.original}", "{json:urls.qvga}", "{json:error}"))
        self.assertEqual(data["Name"], "IMGSHARE (img.example)")

    def test_file_name(self):
        """The download is named after the host, with nothing unsafe for a header."""
        self.assertEqual(sharex.file_name("https://img.example:8443"), "img.example_8443.sxcu")
        self.assertEqual(sharex.file_name("http://a\"b"), "a_b.sxcu")
