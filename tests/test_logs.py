"""What the logs say: secrets redacted, one line per outage, purges that say why, access lines
with the account and the duration, no factory noise."""

from __future__ import annotations

import io
import json
import re

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest
from twisted.web.http_headers import Headers

from imgshare import db
from imgshare.expiry import expire_once
from imgshare.gather import Gatherer
from imgshare.health import WatchedDatabase
from imgshare.metrics import Metrics
from imgshare.outage import Outage
from imgshare.testing import (
    T0,
    MemoryNetwork,
    SwitchableDatabase,
    image_bytes,
    make_fixture,
    multipart,
    open_sqlite_sync,
    test_config,
)
from imgshare.web.redact import redact_path, redact_query, redact_uri, redact_url
from imgshare.web.request import ImgshareSite, access_log_formatter

BASE = "http://img.example"
SECRET = "0123456789abcdef0123456789abcdef"


class Captured:
    """The text of every log event emitted while it is installed."""

    def __init__(self, testcase: unittest.TestCase):
        self.lines: list[str] = []
        globalLogPublisher.addObserver(self)
        testcase.addCleanup(globalLogPublisher.removeObserver, self)

    def __call__(self, event: dict) -> None:
        self.lines.append(formatEvent(event))

    def matching(self, pattern: str) -> list[str]:
        return [line for line in self.lines if re.search(pattern, line)]


class RedactionTests(unittest.TestCase):
    def test_query_values(self):
        self.assertEqual(redact_query(b"/api/v1/limits?token=abc&format=json"), b"/api/v1/limits?token=*&format=*")
        self.assertEqual(redact_query(b"/plain"), b"/plain")

    def test_delete_link(self):
        """The secret of a delete link, and anything after it, is ***."""
        path = f"/delete/kitten/20260214_x.jpg/{SECRET}".encode()
        self.assertEqual(redact_path(path), b"/delete/kitten/20260214_x.jpg/***")
        self.assertEqual(redact_path(path + b"/more"), b"/delete/kitten/20260214_x.jpg/***")
        self.assertEqual(redact_path(f"//Delete/kitten//x.jpg/{SECRET}".encode()), b"//Delete/kitten//x.jpg/***")
        self.assertEqual(redact_path(f"/%64elete/kitten/x.jpg/{SECRET}".encode()), b"/%64elete/kitten/x.jpg/***")
        self.assertEqual(redact_path(b"/delete/kitten/x.jpg"), b"/delete/kitten/x.jpg")  # no secret: nothing to hide

    def test_presigned_put(self):
        self.assertEqual(redact_path(b"/api/v1/upload/put/opaque.secret.value"), b"/api/v1/upload/put/***")
        self.assertEqual(redact_path(b"/api/v1/upload"), b"/api/v1/upload")

    def test_other_paths_unchanged(self):
        for path in (b"/img/kitten/x.jpg", b"/", b"/images", b"/i/kitten/delete.jpg", b"/api/v1/images"):
            self.assertEqual(redact_path(path), path)

    def test_uri_and_referer(self):
        self.assertEqual(redact_uri(f"/delete/kitten/x.jpg/{SECRET}?confirm=1".encode()),
                         b"/delete/kitten/x.jpg/***?confirm=*")
        self.assertEqual(redact_url(f"https://img.example/delete/kitten/x.jpg/{SECRET}?token=t".encode()),
                         b"https://img.example/delete/kitten/x.jpg/***?token=*")
        self.assertEqual(redact_url(b"https://img.example?token=t"), b"https://img.example?token=*")
        self.assertEqual(redact_url(b"https://img.example"), b"https://img.example")


class _Request:
    """What the access log formatter reads of a request."""

    method = b"GET"
    clientproto = b"HTTP/1.1"
    code = 200
    sentLength = 1234

    def __init__(self, uri: bytes, referer: bytes | None = None, account: str | None = None):
        self.uri = uri
        self.headers = Headers({b"user-agent": [b'curl/8 "quoted"']})
        if referer:
            self.headers.setRawHeaders(b"referer", [referer])
        if account:
            self.imgshare_account = account
        import time

        self.started = time.monotonic()

    def getClientAddress(self):  # noqa: N802
        return IPv4Address("TCP", "198.51.100.7", 50000)

    def getHeader(self, name):  # noqa: N802
        values = self.headers.getRawHeaders(name)
        return values[0] if values else None


class AccessLogTests(unittest.TestCase):
    LINE = re.compile(
        r'^"198\.51\.100\.7" - (?P<account>\S+) \[01/Dec/2026:00:00:00 \+0000\] "GET (?P<uri>\S+) HTTP/1\.1" '
        r'200 1234 "(?P<referer>[^"]*)" "curl/8 \\"quoted\\"" (?P<ms>\d+\.\d)ms$')

    def line(self, *args, **kwargs):
        text = access_log_formatter("[01/Dec/2026:00:00:00 +0000]", _Request(*args, **kwargs))
        m = self.LINE.match(text)
        self.assertIsNotNone(m, text)
        return m

    def test_combined_with_account_and_duration(self):
        m = self.line(b"/img/kitten/x.jpg", account="kitten")
        self.assertEqual((m["account"], m["uri"], m["referer"]), ("kitten", "/img/kitten/x.jpg", "-"))
        self.assertEqual(self.line(b"/").group("account"), "-")

    def test_secrets_redacted(self):
        m = self.line(f"/delete/kitten/x.jpg/{SECRET}".encode(),
                      referer=f"https://img.example/delete/kitten/x.jpg/{SECRET}?token=tok".encode())
        self.assertEqual(m["uri"], "/delete/kitten/x.jpg/***")
        self.assertEqual(m["referer"], "https://img.example/delete/kitten/x.jpg/***?token=*")
        self.assertEqual(self.line(b"/api/v1/limits?token=tok&key=k").group("uri"), "/api/v1/limits?token=*&key=*")


class SiteLogTests(unittest.TestCase):
    """Access lines from the fixture's own site, as twisted.web writes them."""

    async def test_account_from_token_and_session(self):
        f = await make_fixture(self)
        await f.account("kitten")
        token = await f.token("kitten")
        site = f.components.site
        site._logFile = out = io.StringIO()
        site._updateLogDateTime()
        client = f.client()
        body, headers = multipart({}, {"file": ("a.png", image_bytes("PNG"))})
        response, _ = await client.request("POST", BASE + f"/api/v1/img_upload.php?token={token}",
                                           data=body, headers=headers)
        self.assertEqual(response.code, 200)
        await client.request("GET", BASE + "/api/v1/limits")
        lines = out.getvalue().splitlines()
        self.assertRegex(lines[0], r'^"127\.0\.0\.1" - kitten \[.*\] "POST /api/v1/img_upload\.php\?token=\* '
                                   r'HTTP/1\.1" 200 \d+ "-" "-" \d+\.\dms$')
        self.assertRegex(lines[1], r'^"127\.0\.0\.1" - - ')
        self.assertNotIn(token, out.getvalue())

    def test_site_is_quiet(self):
        """No "Starting factory" lines for the site, nor for the gatherer's connections."""
        self.assertFalse(ImgshareSite.noisy)
        gatherer = Gatherer(MemoryNetwork(), test_config(self.mktemp()))
        self.assertFalse(gatherer.agent._pool._factory.noisy)

    async def test_idle_timeout_is_not_twisted_line(self):
        """The idle timeout between requests closes quietly: no "Timing out client"."""
        captured = Captured(self)
        f = await make_fixture(self)
        client = f.client()
        response, _ = await client.request("GET", BASE + "/healthz", headers={b"connection": [b"keep-alive"]})
        self.assertEqual(response.code, 200)
        f.clock.advance(61 * 5)
        client.flush()
        self.assertEqual(captured.matching("Timing out client"), [])


class OutageTests(unittest.TestCase):
    async def test_one_line_at_start_and_end(self):
        """A database failing many times logs one line when the outage starts, one when it ends."""
        captured = Captured(self)
        clock = Clock()
        raw = SwitchableDatabase(await open_sqlite_sync(self))
        errors = Metrics().database_errors
        database = WatchedDatabase(raw, Outage("the database", clock), errors)
        raw.available = False
        for _ in range(50):
            with self.assertRaises(db.DatabaseUnavailable):
                await database.run(db.ping)
            clock.advance(0.5)
        raw.available = True
        await database.run(db.ping)
        clock.advance(1)
        raw.available = False  # a blip within the settling time: the same outage
        with self.assertRaises(db.DatabaseUnavailable):
            await database.run(db.ping)
        raw.available = True
        for _ in range(5):
            await database.run(db.ping)
            clock.advance(0.5)
        starts = captured.matching("unavailable")
        ends = captured.matching("available again")
        self.assertEqual(starts, ["The database is unavailable (connection refused (test)); answering 503 until "
                                  "it is back"])
        self.assertEqual(ends, ["The database is available again after 26.0 s (51 failed operation(s) meanwhile)"])
        self.assertEqual(errors._value.get(), 51)

    def test_sources(self):
        """Eight pooled connections lost at once are one outage; it ends with the last of them."""
        captured = Captured(self)
        clock = Clock()
        outage = Outage("the database (PostgreSQL)", clock)
        for n in range(8):
            outage.failed("PostgreSQL connection lost: server closed the connection", f"connection {n}")
        for n in range(7):
            outage.recovered(f"connection {n}")
            self.assertTrue(outage.down)
        outage.recovered()  # an operation that was not failing: changes nothing
        self.assertTrue(outage.down)
        outage.recovered("connection 7")
        self.assertFalse(outage.down)
        self.assertEqual(captured.matching("available again"), [])  # settling
        outage.failed("PostgreSQL connection lost", "connection 3")  # found dead only when next used
        outage.recovered("connection 3")
        clock.advance(2)
        self.assertEqual(len(captured.matching("unavailable")), 1)
        self.assertEqual(len(captured.matching("available again")), 1)

    async def test_storage_outage(self):
        """A storage outage seen by many requests is one line, then one when it is back."""
        captured = Captured(self)
        f = await make_fixture(self)
        await f.account("kitten")
        token = await f.token("kitten")
        client = f.client()
        body, headers = multipart({"token": token}, {"file": ("a.png", image_bytes("PNG"))})
        response, out = await client.request("POST", BASE + "/api/v1/img_upload.php", data=body, headers=headers)
        url = json.loads(out)["urls"]["original"].replace("https://img.example", BASE)
        f.storage.available = False
        for _ in range(10):
            response, _ = await client.request("GET", url)
            self.assertEqual(response.code, 503)
        f.storage.available = True
        response, _ = await client.request("GET", url)
        self.assertEqual(response.code, 200)
        f.clock.advance(2)
        self.assertEqual(len(captured.matching("unavailable")), 1)
        self.assertEqual(len(captured.matching("Storage is available again")), 1)
        self.assertEqual(captured.matching("streaming .* failed"), [])

    async def test_worker_waits_once(self):
        """The derived-file worker says it waits for the database once per outage, not at every poll."""
        captured = Captured(self)
        f = await make_fixture(self, switchable=True)
        f.database.available = False
        f.derivations.startService()
        self.addCleanup(f.derivations.stopService)
        for _ in range(30):
            f.clock.advance(0.5)
        f.database.available = True
        for _ in range(10):
            f.clock.advance(0.5)
        f.database.available = False
        for _ in range(4):
            f.clock.advance(0.5)
        self.assertGreater(f.database.refused, 10)
        self.assertEqual(len(captured.matching("worker waiting for the database")), 2)  # two outages
        self.assertEqual(len(captured.matching("The database is unavailable")), 2)
        self.assertEqual(len(captured.matching("The database is available again")), 1)


class PurgeLineTests(unittest.TestCase):
    async def setUp(self):
        self.captured = Captured(self)
        self.f = await make_fixture(self)
        await self.f.account("kitten")
        self.token = await self.f.token("kitten")
        self.client = self.f.client()

    async def upload(self, data=None, **fields):
        body, headers = multipart({"token": self.token, **fields}, {"file": ("a.png", data or image_bytes("PNG"))})
        response, out = await self.client.request("POST", BASE + "/api/v1/img_upload.php", data=body,
                                                  headers=headers)
        self.assertEqual(response.code, 200, out)
        return json.loads(out)

    def purged(self, name):
        return self.captured.matching(f"^purged kitten/{re.escape(name)} ")

    async def test_owner_delete(self):
        record = await self.upload()
        response, _ = await self.client.request("POST", BASE + "/api/v1/img_delete.php",
                                                data={"token": self.token, "file": record["file"]})
        self.assertEqual(response.code, 200)
        self.f.clock.advance(0)
        self.assertEqual(self.purged(record["file"]), [f"purged kitten/{record['file']} (deleted by its owner)"])

    async def test_delete_link(self):
        record = await self.upload()
        response, _ = await self.client.request("DELETE", record["delete_url"].replace("https://img.example", BASE))
        self.assertEqual(response.code, 200)
        self.f.clock.advance(0)
        self.assertEqual(self.purged(record["file"]),
                         [f"purged kitten/{record['file']} (deleted through its delete link)"])

    async def test_expired(self):
        record = await self.upload(expire="1h")
        await expire_once(self.f.database, self.f.library, T0 + 3600)
        self.assertEqual(self.purged(record["file"]), [f"purged kitten/{record['file']} (expired)"])

    async def test_broken(self):
        record = await self.upload(data=image_bytes("PNG", (40, 30)))
        key = f"kitten/{record['file']}"
        self.f.storage.objects[key] = self.f.storage.objects[key][:60]  # truncated: cannot be decoded
        import os

        for name in os.listdir(self.f.config.spool_dir):  # the worker reads the truncated one from storage
            if name.endswith(".original"):
                os.remove(os.path.join(self.f.config.spool_dir, name))
        await self.f.derivations.run_one()
        self.f.clock.advance(0)
        self.assertEqual(self.purged(record["file"]), [f"purged kitten/{record['file']} (broken)"])

    async def test_expired_tokens_name_accounts(self):
        await self.f.account("bear")
        await self.f.token("kitten", expires=T0 + 5)
        await self.f.token("kitten", expires=T0 + 5)
        await self.f.token("bear", expires=T0 + 5)
        await expire_once(self.f.database, self.f.library, T0 + 10)
        self.assertEqual(self.captured.matching("^expired .* token"), ["expired 3 token(s) of bear, kitten (2)"])


class ExpiryOutageTests(unittest.TestCase):
    async def test_no_traceback_per_pass(self):
        """During a database outage the expiry service logs no failure at each pass."""
        captured = Captured(self)
        f = await make_fixture(self, switchable=True)
        f.database.available = False
        f.components.expiry.startService()
        self.addCleanup(f.components.expiry.stopService)
        for _ in range(10):
            f.clock.advance(10)
        self.assertEqual(captured.matching("expiry pass failed"), [])
        self.assertEqual(len(captured.matching("The database is unavailable")), 1)
        self.assertEqual(self.flushLoggedErrors(), [])
