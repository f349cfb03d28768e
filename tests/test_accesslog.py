"""The access log of its own (``--access-log``): batches, rotation, failures, and the site's lines."""

from __future__ import annotations

import os

from twisted.internet.task import Clock
from twisted.trial import unittest

from imgshare.testing import image_bytes, make_fixture, multipart
from imgshare.web.accesslog import AccessLog
from tests.test_logs import BASE, Captured


class AccessLogTests(unittest.TestCase):
    def setUp(self):
        self.folder = os.path.abspath(self.mktemp())
        os.makedirs(self.folder)
        self.path = os.path.join(self.folder, "access.log")
        self.clock = Clock()
        self.log = AccessLog(self.path, self.clock, buffer=100, flush_after=1.0)
        self.log.open()
        self.addCleanup(self.log.close)

    def written(self, path: str | None = None) -> str:
        with open(path or self.path, encoding="utf-8") as f:
            return f.read()

    def test_open_creates_the_file_private_to_its_group(self):
        self.assertEqual(self.written(), "")
        self.assertEqual(os.stat(self.path).st_mode & 0o777, 0o640)

    def test_lines_wait_at_most_a_second(self):
        self.log.write("one\n")
        self.log.write("two\n")
        self.assertEqual(self.written(), "")
        self.clock.advance(0.9)
        self.assertEqual(self.written(), "")
        self.clock.advance(0.1)
        self.assertEqual(self.written(), "one\ntwo\n")
        self.assertEqual(self.clock.getDelayedCalls(), [])  # nothing held, nothing scheduled

    def test_a_full_buffer_is_written_at_once(self):
        line = "x" * 59 + "\n"
        self.log.write(line)
        self.assertEqual(self.written(), "")
        self.log.write(line)  # 120 bytes >= the 100-byte buffer
        self.assertEqual(self.written(), line * 2)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_close_writes_what_is_held(self):
        self.log.write("last\n")
        self.log.close()
        self.assertEqual(self.written(), "last\n")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_text_that_is_not_utf8_safe_is_replaced(self):
        self.log.write("lone surrogate \udc80\n")
        self.log.flush()
        self.assertEqual(self.written(), "lone surrogate ?\n")

    def test_follows_rotation_by_rename(self):
        """logrotate's default: the file is renamed away; the next batch starts a new one."""
        self.log.write("before\n")
        self.log.flush()
        os.rename(self.path, self.path + ".1")
        self.log.write("after\n")
        self.log.flush()
        self.assertEqual(self.written(self.path + ".1"), "before\n")
        self.assertEqual(self.written(), "after\n")

    def test_follows_removal(self):
        self.log.write("before\n")
        self.log.flush()
        os.unlink(self.path)
        self.log.write("after\n")
        self.log.flush()
        self.assertEqual(self.written(), "after\n")

    def test_failure_logged_once_then_recovery(self):
        captured = Captured(self)
        os.unlink(self.path)
        os.rmdir(self.folder)  # the path cannot be created now
        for n in range(3):
            self.log.write(f"lost {n}\n")
            self.log.flush()
        failures = captured.matching("Cannot write the access log")
        self.assertEqual(len(failures), 1, captured.lines)
        self.assertIn(self.path, failures[0])
        os.makedirs(self.folder)
        self.log.write("back\n")
        self.log.flush()
        self.assertEqual(self.written(), "back\n")
        self.assertEqual(len(captured.matching("is written again")), 1)

    def test_open_refuses_a_path_it_cannot_write(self):
        log = AccessLog(os.path.join(self.folder, "missing", "access.log"), self.clock)
        self.assertRaises(OSError, log.open)


class SiteAccessLogTests(unittest.TestCase):
    async def test_site_writes_its_lines_to_the_file(self):
        """With an access log, the site's lines go to the file, not the twistd log, redacted as ever."""
        path = os.path.abspath(self.mktemp())
        captured = Captured(self)
        f = await make_fixture(self, access_log=path)
        site = f.components.site
        self.assertIsNotNone(site.access_log)
        site.access_log.open()
        site.startFactory()
        await f.account("kitten")
        token = await f.token("kitten")
        client = f.client()
        body, headers = multipart({}, {"file": ("a.png", image_bytes("PNG"))})
        response, _ = await client.request("POST", BASE + f"/api/v1/img_upload.php?token={token}",
                                           data=body, headers=headers)
        self.assertEqual(response.code, 200)
        site.stopFactory()  # writes what it holds
        with open(path, encoding="utf-8") as out:
            text = out.read()
        self.assertRegex(text, r'^"127\.0\.0\.1" - kitten \[.*\] "POST /api/v1/img_upload\.php\?token=\* '
                               r'HTTP/1\.1" 200 \d+ "-" "-" \d+\.\dms\n$')
        self.assertNotIn(token, text)
        self.assertEqual(captured.matching("img_upload"), [])
