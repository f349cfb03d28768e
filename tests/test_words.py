"""Sizes and times in words for the pages, and the ShareX uploader files."""

from __future__ import annotations

import json

from twisted.trial import unittest

from imgshare.domain import lifetime, sharex, words
from imgshare.domain.lifetime import DAY, DEFAULT_TIERS, HOUR, MIB

TOKEN = "ab" * 16


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

    def test_native_file(self):
        """The native file, exactly (PEERS section 4): img_upload.php, X-API-Key, our record's paths."""
        self.assertEqual(json.loads(sharex.uploader_file("https://img.example/", TOKEN, "native")), {
            "Version": "17.0.0", "Name": "IMGSHARE (img.example)", "DestinationType": "ImageUploader",
            "RequestMethod": "POST", "RequestURL": "https://img.example/api/v1/img_upload.php",
            "Headers": {"X-API-Key": TOKEN}, "Body": "MultipartFormData", "FileFormName": "file",
            "URL": "{json:urls.original}", "ThumbnailURL": "{json:urls.qvga}",
            "DeletionURL": "{json:delete_url}", "ErrorMessage": "{json:error}",
        })
        self.assertEqual(sharex.uploader_file("https://img.example", TOKEN),
                         sharex.uploader_file("https://img.example/", TOKEN, "native"), "native is the default")

    def test_v1_file(self):
        """The v1 file, exactly: /api/v1/upload with the token as a Bearer, the v1 answer's fields."""
        self.assertEqual(json.loads(sharex.uploader_file("https://img.example/", TOKEN, "v1")), {
            "Version": "17.0.0", "Name": "IMGSHARE v1 (img.example)", "DestinationType": "ImageUploader",
            "RequestMethod": "POST", "RequestURL": "https://img.example/api/v1/upload",
            "Headers": {"Authorization": "Bearer " + TOKEN}, "Body": "MultipartFormData",
            "FileFormName": "file", "URL": "{json:url}", "ThumbnailURL": "{json:thumbnail}",
            "DeletionURL": "{json:delete_url}", "ErrorMessage": "{json:error}",
        })

    def test_chevereto_file(self):
        """The Chevereto file, exactly: /api/1/upload, X-API-Key, the file as ``source``, the
        Chevereto answer's fields."""
        self.assertEqual(json.loads(sharex.uploader_file("https://img.example/", TOKEN, "chevereto")), {
            "Version": "17.0.0", "Name": "IMGSHARE Chevereto (img.example)",
            "DestinationType": "ImageUploader", "RequestMethod": "POST",
            "RequestURL": "https://img.example/api/1/upload", "Headers": {"X-API-Key": TOKEN},
            "Body": "MultipartFormData", "FileFormName": "source", "URL": "{json:image.url}",
            "ThumbnailURL": "{json:image.thumb.url}", "DeletionURL": "{json:image.delete_url}",
            "ErrorMessage": "{json:error.message}",
        })

    def test_every_flavour(self):
        """Every flavour: Version 17.0.0, a Name of its own, the token in a header and not in
        Arguments, {json:...} syntax only, a DeletionURL, and a download name of its own."""
        files = {f: sharex.uploader("https://img.example:8443/", TOKEN, f) for f in sharex.FLAVOURS}
        self.assertEqual(set(files), {"native", "v1", "chevereto"})
        self.assertEqual(len({f["Name"] for f in files.values()}), 3)
        for flavour, data in files.items():
            self.assertEqual(data["Version"], "17.0.0", flavour)
            self.assertNotIn("Arguments", data, flavour)
            self.assertIn(TOKEN, json.dumps(data["Headers"]), flavour)
            for key in ("URL", "ThumbnailURL", "DeletionURL", "ErrorMessage"):
                self.assertRegex(data[key], r"^\{json:[a-z_.]+\}$", (flavour, key))
            self.assertTrue(data["RequestURL"].startswith("https://img.example:8443/api/"), flavour)
        self.assertEqual([sharex.file_name("https://img.example:8443", f) for f in sharex.FLAVOURS],
                         ["img.example_8443.sxcu", "img.example_8443-v1.sxcu",
                          "img.example_8443-chevereto.sxcu"])
        with self.assertRaises(KeyError):
            sharex.uploader("https://img.example", TOKEN, "imgur")
        with self.assertRaises(KeyError):
            sharex.file_name("https://img.example", "imgur")


class DateInWordsTests(unittest.TestCase):
    def test_dates(self):
        from imgshare.domain.words import date_in_words

        self.assertEqual(date_in_words(1771061400.9), "14 Feb 2026, 09:30 UTC")
        self.assertEqual(date_in_words(None), "")


class LifetimeWordsTests(unittest.TestCase):
    """What a file got as its lifetime and why, in words."""

    def why(self, size, asked, tiers=DEFAULT_TIERS):
        return words.change_in_words(lifetime.decide(size, asked, tiers), tiers)

    def test_tier_sizes(self):
        small, middle, large = DEFAULT_TIERS
        self.assertEqual(words.sizes_of_tier(small, DEFAULT_TIERS), "files up to 2.0 MiB")
        self.assertEqual(words.sizes_of_tier(middle, DEFAULT_TIERS), "files over 2.0 MiB and up to 8.0 MiB")
        self.assertEqual(words.sizes_of_tier(large, DEFAULT_TIERS), "files over 8.0 MiB")
        only = lifetime.parse_tiers("1MiB:30d")
        self.assertEqual(words.sizes_of_tier(only[0], only), "all files")

    def test_reasons(self):
        self.assertEqual(self.why(3 * MIB, "never"), "Shortened from forever to 90 days: files over 2.0 MiB "
                                                     "and up to 8.0 MiB are kept at most 90 days.")
        self.assertEqual(self.why(20 * MIB, "30d"), "Shortened from 30 days to 7 days: files over 8.0 MiB are "
                                                    "kept at most 7 days.")
        self.assertEqual(self.why(100, "400d"), "Lengthened from 400 days to forever: no lifetime may be longer "
                                                "than 1 year, so it gets the default of files up to 2.0 MiB.")
        self.assertEqual(self.why(100, "10m"), "Lengthened from 10 minutes to 1 hour: the shortest lifetime "
                                               "is 1 hour.")
        for granted in [(100, "never"), (100, ""), (3 * MIB, "90d"), (3 * MIB, "bogus")]:
            self.assertEqual(self.why(*granted), "", granted)
        only = lifetime.parse_tiers("1MiB:30d")
        self.assertEqual(self.why(5, "never", only), "Shortened from forever to 30 days: all files are kept at "
                                                     "most 30 days.")
        # A tier whose default is shorter than its longest says what it gives instead.
        odd = (lifetime.Tier(max_size=MIB, permanent=False, longest=30 * DAY, default=7 * DAY),)
        self.assertEqual(self.why(5, "90d", odd), "Shortened from 90 days to 7 days: all files are kept at most "
                                                  "30 days, and 7 days when asked for more.")

    def test_kept(self):
        self.assertEqual(words.kept_in_words(None, None), "Kept forever.")
        self.assertEqual(words.kept_in_words(1771061400.0 + 90 * DAY, 90 * DAY),
                         "Kept 90 days, until 15 May 2026, 09:30 UTC.")

    def test_stored_images(self):
        """A stored image's note, from what it asked and what it got; tiers changed since the
        upload only say what was asked and given."""
        self.assertEqual(words.stored_change_in_words(3 * MIB, "never", 90 * DAY, DEFAULT_TIERS),
                         self.why(3 * MIB, "never"))
        self.assertEqual(words.stored_change_in_words(3 * MIB, None, 90 * DAY, DEFAULT_TIERS), "")
        self.assertEqual(words.stored_change_in_words(100, "never", None, DEFAULT_TIERS), "")
        today = lifetime.parse_tiers("1MiB:30d")
        # Granted forever under the old tiers: nothing to say.
        self.assertEqual(words.stored_change_in_words(100, "never", None, today), "")
        # Shortened under old tiers that today's would treat otherwise.
        self.assertEqual(words.stored_change_in_words(100, "never", 90 * DAY, today),
                         "You chose forever; the size limits in force at the upload gave 90 days.")
        # Larger than any tier today.
        self.assertEqual(words.stored_change_in_words(3 * MIB, "never", 90 * DAY, today),
                         "You chose forever; the size limits in force at the upload gave 90 days.")
