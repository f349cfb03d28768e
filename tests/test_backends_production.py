"""The production backends: PostgreSQL (txpostgres) and S3 (boto3 + treq).

They pass the same contracts as the embedded backends, against a real
PostgreSQL server and a real ``moto_server`` process (see ``tests.backends``:
a missing server fails these tests, it never skips them), plus what only they
have: several pools sharing one database, reconnection, streamed reads with
flow control in both directions.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
from urllib.parse import urlsplit

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.internet.task import Clock, deferLater
from twisted.internet.threads import deferToThread
from twisted.logger import capturedLogs, formatEvent
from twisted.trial import unittest
from twisted.web import resource, server

from imgshare import backends as plugins
from imgshare import db
from imgshare.config import RateLimit
from imgshare.domain.errors import RateLimited
from imgshare.outage import OPERATIONS, SETTLE_SECONDS
from imgshare.plugins import postgres, s3
from imgshare.plugins.postgres import PostgresDatabase, to_pyformat
from imgshare.plugins.s3 import Location, S3Storage
from imgshare.ratelimit import LoginThrottle
from imgshare.sharedlimits import DatabaseLimits
from imgshare.storage import ObjectMissing, StorageUnavailable
from imgshare.testing import (
    T0,
    Fixture,
    MemoryNetwork,
    MemoryStorage,
    image_bytes,
    multipart,
    test_config,
)
from tests import backends
from tests.db_contract import DatabaseContract, T
from tests.storage_contract import CollectingConsumer, StorageContract, stored_size

MiB = 1024 * 1024


async def open_postgres(testcase, dsn: str | None = None, pool_size: int = 2) -> PostgresDatabase:
    """A started PostgresDatabase on a fresh database (or ``dsn``), stopped at cleanup."""
    dsn = dsn or await backends.create_database(testcase)
    database = PostgresDatabase(f"{dsn}{'&' if '?' in dsn else '?'}pool_size={pool_size}", reactor)
    await database.start()
    testcase.addCleanup(database.stop)
    return database


async def open_s3(testcase, endpoint: str | None = None, bucket: str | None = None) -> S3Storage:
    """A started S3Storage on a fresh bucket of the test moto_server (or the given endpoint)."""
    if endpoint is None:
        endpoint, bucket = await backends.create_bucket(testcase)
    storage = S3Storage(backends.storage_url(endpoint, bucket or "fake-bucket"), reactor, threads=4)
    await storage.start()
    testcase.addCleanup(storage.stop)
    return storage


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


def put_file(testcase, data: bytes) -> str:
    path = testcase.mktemp()
    with open(path, "wb") as f:
        f.write(data)
    return path


# ------------------------------------------------------------------ PostgreSQL


class PostgresContractTests(DatabaseContract, unittest.TestCase):
    async def make_database(self):
        return await open_postgres(self)

    async def make_durable_database(self):
        """The test server does not wait for the disk (``synchronous_commit=off``); this
        database's connections do, as a production server's."""
        dsn = await backends.create_database(self)
        await backends.database_admin(f"ALTER DATABASE {urlsplit(dsn).path.lstrip('/')} SET synchronous_commit = on")
        return await open_postgres(self, dsn)


class PostgresUnitTests(unittest.TestCase):
    def test_host_names_looked_up_off_the_reactor(self):
        """A server given by name is looked up once in the worker and reached by address;
        addresses, socket folders, several hosts and explicit hostaddr are left alone."""
        from imgshare.plugins.postgres import PostgresDatabase, needs_lookup
        from imgshare.threads import InlineRunner

        self.assertEqual(needs_lookup("postgresql://u@db.example:6543/x"), ("db.example", 6543))
        self.assertEqual(needs_lookup("postgresql://u@localhost/x"), ("localhost", 5432))
        for dsn in ["postgresql://u@127.0.0.1/x", "postgresql://u@[::1]/x", "postgresql:///x?host=/run/pg",
                    "postgresql://%2Frun%2Fpg/x", "postgresql://a,b/x", "postgresql://u@h/x?hostaddr=10.0.0.1"]:
            self.assertIsNone(needs_lookup(dsn), dsn)
        seen = []

        def getaddrinfo(host, port, type=0):
            seen.append((host, port))
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.7", port))]

        self.patch(socket, "getaddrinfo", getaddrinfo)
        database = PostgresDatabase("postgresql://u@db.example/x", None, InlineRunner())
        from imgshare.plugins.sqlite import drive

        drive(database._pin_address())  # never waits: the worker is inline
        self.assertEqual(seen[-1], ("db.example", 5432))
        self.assertIn("hostaddr=192.0.2.7", database.dsn)
        self.assertIn("@db.example/", database.dsn, "the name stays for TLS checks")

    def test_placeholders(self):
        """``?`` becomes ``%s`` outside quotes, and every ``%`` is escaped for psycopg2."""
        self.assertEqual(to_pyformat("SELECT a FROM t WHERE b = ? AND c = ?"),
                         "SELECT a FROM t WHERE b = %s AND c = %s")
        self.assertEqual(to_pyformat("SELECT '?', \"odd?\" FROM t WHERE x LIKE 'a%' AND y = ?"),
                         "SELECT '?', \"odd?\" FROM t WHERE x LIKE 'a%%' AND y = %s")

    def test_urls(self):
        """Our pool_size is split off; libpq parameters pass through; keepalives are on by default;
        passwords never reach the logs."""
        dsn, size = postgres.parse_url("postgresql://u:pw@db.example:5433/img?sslmode=require&pool_size=3")
        self.assertEqual(size, 3)
        self.assertTrue(dsn.startswith("postgresql://u:pw@db.example:5433/img?sslmode=require&"))
        self.assertIn("keepalives=1", dsn)
        self.assertNotIn("pool_size", dsn)
        self.assertEqual(postgres.parse_url("postgres://h/d")[1], postgres.DEFAULT_POOL_SIZE)
        self.assertIn("keepalives_idle=5", postgres.parse_url("postgresql://h/d?keepalives_idle=5")[0])
        for bad in ["postgresql://h/d?pool_size=0", "postgresql://h/d?pool_size=x", "mysql://h/d"]:
            self.assertRaises(ValueError, postgres.parse_url, bad)
        self.assertEqual(postgres.redact("postgresql://u:secret@h/d"), "postgresql://u:***@h/d")

    def test_plugins_found_by_scheme(self):
        """postgresql:// and s3:// URLs find the production plugins."""
        self.assertIsInstance(plugins.open_database("postgresql://h/d", reactor, None), PostgresDatabase)
        self.assertIsInstance(plugins.open_database("postgres://h/d", reactor, None), PostgresDatabase)
        self.assertIsInstance(plugins.open_storage("s3://bucket?region=eu-west-1", reactor, None), S3Storage)

    async def test_unreachable_server(self):
        """Starting against a server that is not there fails with DatabaseUnavailable,
        without the password in the message."""
        port = backends.free_port()
        database = PostgresDatabase(f"postgresql://u:hunter2@127.0.0.1:{port}/x", reactor)
        with self.assertRaises(db.DatabaseUnavailable) as e:
            await database.start()
        self.assertNotIn("hunter2", str(e.exception))
        with self.assertRaises(db.DatabaseUnavailable):
            await database.run(db.count_accounts)


async def _terminate_backends(dsn: str) -> None:
    name = dsn.rsplit("/", 1)[1].split("?")[0]
    await backends.database_admin(
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")


class PostgresTests(unittest.TestCase):
    timeout = 120

    async def test_concurrent_migration(self):
        """Processes starting at once on an empty database migrate it exactly once."""
        dsn = await backends.create_database(self)
        databases = [PostgresDatabase(f"{dsn}?pool_size=1", reactor) for _ in range(4)]
        for database in databases:
            self.addCleanup(database.stop)
        await gatherResults([Deferred.fromCoroutine(d.start()) for d in databases])

        async def versions(tx):
            return [r[0] for r in await tx.execute("SELECT version FROM schema_version ORDER BY version")]

        numbers = [n for n, _ in db.schema_files("postgresql")]
        self.assertEqual(await databases[0].run(versions), numbers)

    async def test_two_pools_claim_each_job_once(self):
        """Two pools (two processes) claiming concurrently get every job exactly once:
        a claim holding its row lock is skipped, not waited for or repeated."""
        dsn = await backends.create_database(self)
        first = await open_postgres(self, dsn, pool_size=4)
        second = await open_postgres(self, dsn, pool_size=4)
        await first.run(db.create_account, "kitten", "h", False, T)
        images = []
        for i in range(24):
            image = await first.run(db.reserve_image, "kitten", f"20260214_{i}.jpg", f"20260214_{i}",
                                    "image/jpeg", 10, 4, 3, "ab" * 32, T, None)
            images.append(await first.run(db.commit_image, image.id, T))

        async def claim_slowly(tx, worker):
            job = await db.claim_job(tx, worker, T + 5, T + 35)
            await tx.execute("SELECT pg_sleep(0.02)")  # hold the row lock while others claim
            return job

        claims: list[tuple[str, int]] = []

        async def worker(database, name):
            while (job := await database.run(claim_slowly, name)) is not None:
                claims.append((name, job.image.id))

        loops = [Deferred.fromCoroutine(worker(database, f"{label}-{n}"))
                 for database, label in ((first, "a"), (second, "b")) for n in range(4)]
        await gatherResults(loops)
        self.assertEqual(sorted(i for _, i in claims), sorted(i.id for i in images))
        self.assertEqual({name[0] for name, _ in claims}, {"a", "b"}, "both pools took jobs")

    async def test_one_outage_line_for_the_whole_pool(self):
        """Every pooled connection killed at once is one "unavailable" line and one "available
        again" line, not one per connection (nor one per failed operation)."""
        from twisted.logger import formatEvent, globalLogPublisher

        lines: list[str] = []

        def observe(event: dict) -> None:
            lines.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        dsn = await backends.create_database(self)
        database = await open_postgres(self, dsn, pool_size=6)
        await _terminate_backends(dsn)
        answered = 0
        for _attempt in range(200):  # every connection is used, so each finds out it was killed
            try:
                await database.run(db.list_accounts)
                answered += 1
            except db.DatabaseUnavailable:
                await sleep(0.05)
            if answered >= 12:
                break
        self.assertEqual(answered, 12, "the pool did not reconnect")
        await sleep(SETTLE_SECONDS + 0.5)
        outage = [line for line in lines if "PostgreSQL" in line and "available" in line]
        self.assertEqual(len(outage), 2, outage)
        self.assertRegex(outage[0], r"^The database \(PostgreSQL\) is unavailable \(PostgreSQL connection lost: ")
        self.assertRegex(outage[1], r"^The database \(PostgreSQL\) is available again after ")
        self.assertEqual([line for line in lines if "connection lost" in line and line not in outage], [])

    async def test_single_statements_run_without_a_transaction_block(self):
        """An operation marked db.single_read or db.one_statement is sent alone (autocommit:
        its transaction starts with it), any other inside BEGIN ... COMMIT (its statements
        start after the transaction did)."""
        database = await open_postgres(self, pool_size=1)

        async def alone(tx):
            rows = await tx.execute("SELECT transaction_timestamp() = statement_timestamp()")
            return rows[0][0]

        read, write = db.single_read(lambda tx: alone(tx)), db.one_statement(lambda tx: alone(tx))
        self.assertTrue(await database.run(read))
        self.assertTrue(await database.run(write))
        self.assertFalse(await database.run(alone))
        self.assertIsNone(await database.run(db.get_image, "kitten", "20260214_x.jpg"))

    async def test_a_cancelled_operation_leaves_the_pool_alone(self):
        """A request whose client goes away cancels its Deferred (Klein does) while its
        statement runs: the caller gets CancelledError at once, the statement finishes on
        its connection, and the pool neither loses a connection nor declares an outage
        (bench/cluster.py met a 503 for every request after wrk closed its connections)."""
        from twisted.internet.defer import CancelledError
        from twisted.logger import globalLogPublisher

        lines: list[str] = []

        def observe(event: dict) -> None:
            lines.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        database = await open_postgres(self, pool_size=1)
        await database.run(db.create_account, "kitten", "h", False, T)

        async def slow(tx):
            await tx.execute("SELECT pg_sleep(0.3)")
            return [r[0] for r in await tx.execute("SELECT name FROM accounts")]

        for _ in range(3):
            running = database.run(slow)
            await sleep(0.05)
            running.cancel()
            with self.assertRaises(CancelledError):
                await running
        self.assertEqual([a.name for a in await database.run(db.list_accounts)], ["kitten"])
        self.assertEqual(await database.run(slow), ["kitten"], "the one connection still works")
        self.assertEqual([line for line in lines if "unavailable" in line or "connection lost" in line], [])

    async def test_an_abandoned_operation_still_running_is_cancelled_for_real(self):
        """A statement still running ABANDONED_GRACE after its caller left is taken for
        stuck: it is cancelled, the pool reconnects, and the next operation is answered."""
        from twisted.internet.defer import CancelledError

        self.patch(postgres, "ABANDONED_GRACE", 0.2)
        database = await open_postgres(self, pool_size=1)

        async def stuck(tx):
            await tx.execute("SELECT pg_sleep(30)")

        running = database.run(stuck)
        await sleep(0.05)
        running.cancel()
        with self.assertRaises(CancelledError):
            await running
        answered = None
        for _attempt in range(100):  # well before the 30 s statement could have ended
            try:
                answered = await database.run(db.list_accounts)
                break
            except db.DatabaseUnavailable:
                await sleep(0.05)
        self.assertEqual(answered, [])

    async def test_reconnects_after_connections_are_killed(self):
        """Connections killed on the server are re-established; meanwhile an operation fails
        with DatabaseUnavailable and never leaves half of its writes behind."""
        dsn = await backends.create_database(self)
        database = await open_postgres(self, dsn, pool_size=2)

        async def half_then_wait(tx):
            await db.create_account(tx, "kitten", "h", False, T)
            await tx.execute("SELECT pg_sleep(5)")
            await db.create_account(tx, "bear", "h", False, T)

        interrupted = database.run(half_then_wait)
        await sleep(0.3)
        await _terminate_backends(dsn)
        with self.assertRaises(db.DatabaseUnavailable):
            await interrupted
        answered = 0
        for _attempt in range(100):
            # Both pooled connections must answer: an idle one learns it was killed only
            # when it is next used (then it fails at once and reconnects).
            try:
                accounts = await database.run(db.list_accounts)
                answered += 1
                if answered == 2:
                    break
            except db.DatabaseUnavailable:
                answered = 0
                await sleep(0.1)
        else:
            self.fail("the pool did not reconnect within 10 s")
        self.assertEqual(accounts, [], "the interrupted transaction left nothing behind")
        await database.run(db.create_account, "kitten", "h", False, T)
        self.assertEqual(await database.run(db.count_accounts), 1)

    async def test_reconnects_after_server_restart(self):
        """A PostgreSQL restart (on a private server, not the shared one): operations fail
        with DatabaseUnavailable while it is down and succeed again once it is back."""
        server = backends.LocalPostgres()
        self.addCleanup(deferToThread, server.stop)
        await deferToThread(server.start)
        database = await open_postgres(self, server.dsn, pool_size=2)
        await database.run(db.create_account, "kitten", "h", False, T)
        await deferToThread(server.stop_server)
        with self.assertRaises(db.DatabaseUnavailable):
            await database.run(db.count_accounts)
        await deferToThread(server.start_server)
        for _attempt in range(150):
            try:
                self.assertEqual(await database.run(db.count_accounts), 1)
                break
            except db.DatabaseUnavailable:
                await sleep(0.1)
        else:
            self.fail("the pool did not reconnect within 15 s")

    async def test_outage_answers_503_then_recovers(self):
        """While the database refuses connections the API answers 503 and nothing is written;
        once it is back, the same requests succeed."""
        dsn = await backends.create_database(self)
        name = dsn.rsplit("/", 1)[1]
        database = await open_postgres(self, dsn, pool_size=2)
        data_dir = self.mktemp()
        os.makedirs(data_dir)
        clock = Clock()
        clock.advance(T0)
        f = Fixture(self, database, MemoryStorage(), clock, test_config(data_dir),
                    network=MemoryNetwork(live=reactor))  # PostgreSQL answers on the real reactor
        await f.account("kitten")
        token = await f.token("kitten")
        client = f.client()
        api = "http://img.example/api/v1/img_upload.php"
        body, headers = multipart({"token": token}, {"file": ("a.jpg", image_bytes())})
        response, out = await client.request("POST", api, data=body, headers=headers)
        self.assertEqual(response.code, 200, out)
        first = json.loads(out)["file"]

        self.addCleanup(backends.database_admin, f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
        await backends.database_admin(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
        await _terminate_backends(dsn)
        await sleep(0.3)
        stored = dict(f.storage.objects)
        response, out = await client.request("POST", api, data=body, headers=headers)
        self.assertEqual(response.code, 503, out)
        response, _ = await client.request("GET", f"http://img.example/img/kitten/{first}")
        self.assertEqual(response.code, 503)
        self.assertEqual(f.storage.objects, stored, "nothing was stored during the outage")

        await backends.database_admin(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
        for _attempt in range(150):
            response, out = await client.request("POST", api, data=body, headers=headers)
            if response.code != 503:
                break
            await sleep(0.1)
        self.assertEqual(response.code, 200, out)
        listed = await database.run(db.list_images, "kitten", clock.seconds(), 0, 10)
        self.assertEqual(len(listed), 2, "the failed upload recorded nothing")


class SharedLimitsTests(unittest.TestCase):
    """Rate limits and login throttles on PostgreSQL hold across pools (processes)."""

    async def test_one_bucket_across_pools(self):
        """30 checks at once through two pools on a bucket of 10: exactly 10 pass."""
        dsn = await backends.create_database(self)
        pools = [await open_postgres(self, dsn, pool_size=4) for _ in range(2)]
        clock = Clock()
        clock.advance(T)
        stores = [DatabaseLimits(database, clock) for database in pools]
        limit = RateLimit(10, 60.0)
        waits = await gatherResults([
            Deferred.fromCoroutine(stores[i % 2].take("api:token:1", limit)) for i in range(30)
        ])
        self.assertEqual(waits.count(0.0), 10)
        self.assertEqual(sorted(w for w in waits if w)[0], 6.0)

    async def test_login_reservations_across_pools(self):
        """12 password checks started at once through two pools for one (account, address),
        whose limit is 3: exactly 3 may go on; the rest are refused before any password work."""
        dsn = await backends.create_database(self)
        pools = [await open_postgres(self, dsn, pool_size=4) for _ in range(2)]
        clock = Clock()
        clock.advance(T)
        throttles = [LoginThrottle(RateLimit(30, 60.0), RateLimit(3, 60.0), RateLimit(50, 60.0),
                                   DatabaseLimits(database, clock)) for database in pools]

        async def attempt(i):
            try:
                (await throttles[i % 2].begin("kitten", "192.0.2.1")).failed()
            except RateLimited:
                return False
            return True

        results = await gatherResults([Deferred.fromCoroutine(attempt(i)) for i in range(12)])
        self.assertEqual(results.count(True), 3)

    async def test_two_sites_share_limits_and_fall_back_in_an_outage(self):
        """Two sites on one database (as two processes): 3 requests per token per minute in all;
        while the database is down each counts on its own (no 500) and says so once, and
        once it is back they share again."""
        dsn = await backends.create_database(self)
        name = dsn.rsplit("/", 1)[1]
        clock = Clock()
        clock.advance(T0)
        sites = []
        for _ in range(2):
            data_dir = self.mktemp()
            os.makedirs(data_dir)
            database = await open_postgres(self, dsn, pool_size=2)
            config = test_config(data_dir, rate_token=RateLimit(3, 60.0), rate_ip=RateLimit(4, 60.0))
            sites.append(Fixture(self, database, MemoryStorage(), clock, config, network=MemoryNetwork(live=reactor)))
        await sites[0].account("kitten")
        token = await sites[0].token("kitten")
        clients = [site.client() for site in sites]
        delete = "http://img.example/api/v1/img_delete.php"
        codes = []
        for i in range(4):
            response, _ = await clients[i % 2].request("POST", delete, data={"token": token, "file": "20260214_x.jpg"})
            codes.append(response.code)
        self.assertEqual(codes, [404, 404, 404, 429])
        response, _ = await clients[0].request("POST", delete, data={"token": token, "file": "20260214_x.jpg"})
        self.assertEqual(response.code, 429)
        response, _ = await clients[1].request("GET", "http://img.example/api/v1/limits")
        self.assertEqual(response.code, 429, "the address's 4 per minute are spent across both")

        clock.advance(60)
        self.addCleanup(backends.database_admin, f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
        await backends.database_admin(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
        await _terminate_backends(dsn)
        await sleep(0.3)
        with capturedLogs() as events:
            codes = []
            for _ in range(6):
                response, _ = await clients[0].request("GET", "http://img.example/api/v1/limits")
                codes.append(response.code)
        self.assertEqual(codes, [200, 200, 200, 200, 429, 429], "counted in this process")
        lines = [formatEvent(e) for e in events]
        self.assertEqual(sum("the database is unavailable: rate limits" in line for line in lines), 1, lines)
        response, _ = await clients[1].request("GET", "http://img.example/api/v1/limits")
        self.assertEqual(response.code, 200, "the other process counts on its own")

        with capturedLogs() as events:
            await backends.database_admin(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
            for _attempt in range(300):  # every pooled connection (2 sites x 2) reconnects by itself
                if all(set(site.database.outage._failing) <= {OPERATIONS} for site in sites):
                    break
                await sleep(0.1)
            else:
                self.fail("the pools did not reconnect within 30 s")
            clock.advance(60)
            codes = []
            for i in range(5):
                response, _ = await clients[i % 2].request("GET", "http://img.example/api/v1/limits")
                codes.append(response.code)
        lines = [formatEvent(e) for e in events]
        self.assertEqual(sum("rate limits and login throttles are shared again" in line for line in lines), 2, lines)
        self.assertEqual(codes, [200, 200, 200, 200, 429], "4 per minute across both again")


# ------------------------------------------------------------------------- S3


class S3ContractTests(StorageContract, unittest.TestCase):
    async def make_storage(self):
        return await open_s3(self)


class S3UnitTests(unittest.TestCase):
    def test_urls(self):
        """s3 URLs name a bucket, an optional key prefix, endpoint, region and addressing style;
        credentials and unknown parameters are refused."""
        loc = Location.parse("s3://pics/site-a?endpoint_url=http://127.0.0.1:9000&region=eu-west-1"
                             "&addressing_style=path")
        self.assertEqual((loc.bucket, loc.prefix, loc.endpoint_url, loc.region, loc.addressing_style),
                         ("pics", "site-a/", "http://127.0.0.1:9000", "eu-west-1", "path"))
        self.assertEqual(Location.parse("s3://pics").endpoint_url, None)
        for bad in ["s3://KEY:SECRET@pics", "s3://pics?aws_secret_access_key=x", "s3://",
                    "s3://pics?addressing_style=odd", "s3://pics/../x", "file:///x"]:
            self.assertRaises(ValueError, Location.parse, bad)


class FakeS3Protocol(Protocol):
    """A canned HTTP server: HEAD answers 200; GET answers what the factory's ``answer`` says."""

    def connectionMade(self):
        self.buffer = b""

    def dataReceived(self, data):
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            self.factory.requests.append(head)
            if head.startswith(b"HEAD "):
                self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                continue
            response, close = self.factory.answer(head)
            self.transport.write(response)
            if close:
                self.transport.loseConnection()


class FakeS3(Factory):
    protocol = FakeS3Protocol

    def __init__(self, answer):
        self.answer = answer
        self.requests: list[bytes] = []
        self.connections: list[Protocol] = []

    def buildProtocol(self, addr):
        protocol = super().buildProtocol(addr)
        self.connections.append(protocol)
        return protocol

    async def close(self):
        for protocol in self.connections:
            protocol.transport.abortConnection()
        await sleep(0.01)


def http_response(status: str, body: bytes, content_length: int | None = None, **headers: str) -> bytes:
    lines = [f"HTTP/1.1 {status}", f"Content-Length: {len(body) if content_length is None else content_length}"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class GatedConsumer:
    """A push consumer (like twisted.web's request over a full socket) that pauses its
    producer at once and delivers nothing until ``release``: what it is written
    meanwhile waits in its buffer, as in a transport's."""

    def __init__(self):
        self.data = bytearray()
        self.buffered = bytearray()
        self.producer = None
        self.open = False

    def registerProducer(self, producer, streaming):
        assert streaming
        self.producer = producer
        if not self.open:
            producer.pauseProducing()

    def unregisterProducer(self):
        self.producer = None

    def write(self, data):
        (self.data if self.open else self.buffered).extend(data)

    def release(self):
        self.open = True
        self.data += self.buffered
        self.buffered.clear()
        if self.producer is not None:
            self.producer.resumeProducing()


class StreamResource(resource.Resource):
    """``GET /`` streams one object like ``/img/`` does; outcomes are recorded."""

    isLeaf = True

    def __init__(self, storage, key, size):
        super().__init__()
        self.storage, self.key, self.size = storage, key, size
        self.outcomes: list = []
        #: Each finished request's ``sentLength``.
        self.sent: list[int] = []

    def span(self, request) -> tuple[int, int]:
        """The first byte and the length to stream: the whole object."""
        return 0, self.size

    def render_GET(self, request):
        first, length = self.span(request)
        request.setHeader(b"Content-Length", str(length).encode())
        d = self.storage.stream(self.key, request, first, length)

        def done(_):
            self.outcomes.append("done")
            self.sent.append(request.sentLength)
            request.finish()

        def failed(f):
            self.outcomes.append(f.value)
            if request.channel is not None:
                request.channel.transport.abortConnection()

        d.addCallbacks(done, failed)
        return server.NOT_DONE_YET


class SlowReader(Protocol):
    """An HTTP client with a small receive buffer that reads only when told to."""

    def __init__(self, read_at_once: bool = False, stop_after: int | None = None):
        self.data = b""
        self.closed: Deferred[None] = Deferred()
        self.read_at_once = read_at_once
        self.stop_after = stop_after

    def connectionMade(self):
        self.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        self.transport.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        if not self.read_at_once:
            self.transport.pauseProducing()

    def dataReceived(self, data):
        self.data += data
        if self.stop_after is not None and len(self.data) >= self.stop_after:
            self.transport.abortConnection()

    def connectionLost(self, reason):
        self.closed.callback(None)


async def read_to_the_end(client, site, size: int, tries: int) -> bytes:
    """Let a paused ``SlowReader`` read on until ``size`` body bytes arrived and the
    site's stream ended ("done"); close it and return the body it got."""
    client.transport.resumeProducing()
    for _ in range(tries):
        if site.outcomes and b"\r\n\r\n" in client.data:
            if len(client.data.split(b"\r\n\r\n", 1)[1]) >= size:
                break
        await sleep(0.05)
    assert site.outcomes == ["done"], site.outcomes
    client.transport.loseConnection()
    await client.closed
    return client.data.split(b"\r\n\r\n", 1)[1]


async def settled_relay(storage, timeout: float = 30.0):
    """The storage's one read in progress, once it has paused its upstream and taken
    nothing more for half a second."""
    last = -1
    for _ in range(int(timeout / 0.25)):
        await sleep(0.25)
        relays = list(storage.streams)
        if len(relays) == 1 and relays[0].upstream_paused:
            if relays[0].received == last:
                return relays[0]
            last = relays[0].received
    raise AssertionError(f"the read did not settle: {[(r.received, r.upstream_paused) for r in relays]}")


class RecordingSet(set):
    """A set that also remembers everything ever added (to catch short-lived relays)."""

    def __init__(self, record: list):
        super().__init__()
        self.record = record

    def add(self, item):
        self.record.append(item)
        super().add(item)


class S3Tests(unittest.TestCase):
    timeout = 120

    async def _stored(self, storage, data: bytes, key="kitten/20260214_big.jpg") -> str:
        await storage.put(key, put_file(self, data), "image/jpeg")
        return key

    async def test_checksum_and_type_sent(self):
        """Uploads carry a SHA-256 checksum that S3 verified and stored, and the Content-Type."""
        storage = await open_s3(self)
        data = os.urandom(200_000)
        key = await self._stored(storage, data, "kitten/20260214_c.png")
        head = await storage.runner.run(storage.client.head_object, Bucket=storage.location.bucket,
                                        Key=key, ChecksumMode="ENABLED")
        self.assertEqual(head["ChecksumSHA256"], base64.b64encode(hashlib.sha256(data).digest()).decode())
        self.assertEqual(head["ContentType"], "image/jpeg")

    async def test_key_prefix(self):
        """With a prefix in the URL every object lives under it."""
        endpoint, bucket = await backends.create_bucket(self)
        storage = S3Storage(f"s3://{bucket}/site-a?endpoint_url={endpoint}&region=us-east-1", reactor)
        await storage.start()
        self.addCleanup(storage.stop)
        await self._stored(storage, b"abc", "kitten/20260214_a.jpg")
        listing = await storage.runner.run(storage.client.list_objects_v2, Bucket=bucket)
        self.assertEqual([o["Key"] for o in listing["Contents"]], ["site-a/kitten/20260214_a.jpg"])
        self.assertEqual(await stored_size(self, storage, "kitten/20260214_a.jpg"), 3)

    async def test_paused_consumer_pauses_upstream(self):
        """A consumer that takes nothing makes the relay pause the upstream read after a
        bounded amount; once it pulls, every byte arrives."""
        storage = await open_s3(self)
        data = os.urandom(5 * MiB)
        key = await self._stored(storage, data)
        consumer = GatedConsumer()
        d = storage.stream(key, consumer, 0, len(data))
        relay = await settled_relay(storage)
        self.assertTrue(relay.upstream_paused)
        self.assertLessEqual(relay.received, s3.HIGH_WATER + 64 * 1024)
        self.assertEqual(len(consumer.data), 0)
        consumer.release()
        await d
        self.assertEqual(bytes(consumer.data), data)

    async def test_slow_client_pauses_upstream_through_twisted_web(self):
        """Through a real twisted.web server, a client that stops reading stops the upstream read
        (the server holds a bounded amount), and then gets every byte once it reads."""
        storage = await open_s3(self)
        data = os.urandom(16 * MiB)
        key = await self._stored(storage, data)
        site = StreamResource(storage, key, len(data))
        port = reactor.listenTCP(0, server.Site(site), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        client = SlowReader()
        reactor.connectTCP("127.0.0.1", port.getHost().port, ClientFactory.forProtocol(lambda: client))
        relay = await settled_relay(storage)
        self.assertTrue(relay.upstream_paused, "the upstream read stopped")
        self.assertLess(relay.received, 8 * MiB, "server-side buffering stays bounded")
        self.assertEqual(await read_to_the_end(client, site, len(data), tries=300), data)

    async def test_client_disconnect_aborts_upstream(self):
        """A client that goes away mid-body makes the stream fail with ConnectionError and
        closes the upstream connection."""
        storage = await open_s3(self)
        data = os.urandom(8 * MiB)
        key = await self._stored(storage, data)
        site = StreamResource(storage, key, len(data))
        port = reactor.listenTCP(0, server.Site(site), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        relays = []
        storage.streams = RecordingSet(relays)
        client = SlowReader(read_at_once=True, stop_after=300_000)
        reactor.connectTCP("127.0.0.1", port.getHost().port, ClientFactory.forProtocol(lambda: client))
        await client.closed
        for _ in range(100):
            if site.outcomes:
                break
            await sleep(0.05)
        [outcome] = site.outcomes
        self.assertIsInstance(outcome, ConnectionError)
        [relay] = relays
        self.assertTrue(relay.upstream_aborted)
        self.assertLess(relay.received, len(data))
        self.assertEqual(storage.streams, set())

    async def _fake(self, answer) -> S3Storage:
        fake = FakeS3(answer)
        port = reactor.listenTCP(0, fake, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.addCleanup(fake.close)
        storage = await open_s3(self, f"http://127.0.0.1:{port.getHost().port}", "fake-bucket")
        storage.fake = fake
        return storage

    async def test_upstream_dying_mid_body_raises(self):
        """An upstream connection that dies mid-body fails the stream with StorageUnavailable
        after the bytes that did arrive (so the web layer aborts the client)."""
        storage = await self._fake(lambda head: (http_response(
            "206 Partial Content", b"x" * 50_000, content_length=100_000,
            Content_Range="bytes 0-99999/100000"), True))
        consumer = CollectingConsumer()
        with self.assertRaises(StorageUnavailable):
            await storage.stream("kitten/a.jpg", consumer, 0, 100_000)
        self.assertLess(len(consumer.data), 100_000)

    async def test_upstream_stalling_fails(self):
        """An upstream that stops sending mid-body fails the stream after the idle timeout."""
        self.patch(s3, "IDLE_TIMEOUT", 0.5)
        storage = await self._fake(lambda head: (http_response(
            "206 Partial Content", b"x" * 1000, content_length=100_000,
            Content_Range="bytes 0-99999/100000"), False))
        with self.assertRaises(StorageUnavailable):
            await storage.stream("kitten/a.jpg", CollectingConsumer(), 0, 100_000)

    async def test_range_sent_and_checked(self):
        """A partial read sends exactly its Range upstream; a 206 for another range is refused
        before anything is written."""
        body = bytes(range(256)) * 40
        storage = await self._fake(lambda head: (http_response(
            "206 Partial Content", body[100:200], Content_Range="bytes 100-199/10240"), False))
        consumer = CollectingConsumer()
        await storage.stream("kitten/a.jpg", consumer, 100, 100)
        self.assertEqual(bytes(consumer.data), body[100:200])
        self.assertIn(b"\r\nRange: bytes=100-199", storage.fake.requests[-1])
        consumer = CollectingConsumer()
        with self.assertRaises(StorageUnavailable):
            await storage.stream("kitten/a.jpg", consumer, 300, 100)
        self.assertEqual(consumer.data, b"")

    async def test_range_ignored_by_upstream(self):
        """A store that answers a range request with the whole object (200) still yields
        exactly the bytes asked for."""
        body = os.urandom(300_000)
        storage = await self._fake(lambda head: (http_response("200 OK", body), False))
        consumer = CollectingConsumer()
        await storage.stream("kitten/a.jpg", consumer, 70_000, 100_001)
        self.assertEqual(bytes(consumer.data), body[70_000:170_001])

    async def test_upstream_errors(self):
        """404 upstream is ObjectMissing; 5xx and 403 are StorageUnavailable; nothing is written."""
        status = {}
        storage = await self._fake(lambda head: (http_response(status["line"], b"<Error/>"), False))
        for line, error in [("404 Not Found", ObjectMissing), ("503 Slow Down", StorageUnavailable),
                            ("403 Forbidden", StorageUnavailable), ("416 Range Not Satisfiable", StorageUnavailable)]:
            status["line"] = line
            consumer = CollectingConsumer()
            with self.assertRaises(error):
                await storage.stream("kitten/a.jpg", consumer, 0, 10)
            self.assertEqual(consumer.data, b"")

    async def test_unreachable_endpoint(self):
        """With nothing listening at the endpoint, writes and reads fail with StorageUnavailable."""
        storage = S3Storage(f"s3://nowhere?endpoint_url=http://127.0.0.1:{backends.free_port()}"
                            "&region=us-east-1", reactor, threads=2)
        await storage.start()  # only logged: the endpoint may come back
        self.addCleanup(storage.stop)
        with self.assertRaises(StorageUnavailable):
            await storage.stream("kitten/a.jpg", CollectingConsumer(), 0, 10)
        with self.assertRaises(StorageUnavailable):
            await storage.delete("kitten/a.jpg")

    async def test_served_through_img_without_leaking_upstream(self):
        """/img/ on S3 storage: 200, 206 and 304 as on any storage, and no response header
        mentions the bucket, its endpoint or S3."""
        storage = await open_s3(self)
        from imgshare.testing import make_fixture

        f = await make_fixture(self, storage=storage, threaded=True)
        await f.account("kitten")
        token = await f.token("kitten")
        photo = image_bytes("JPEG", (800, 600), quality=95)
        body, headers = multipart({"token": token}, {"file": ("a.jpg", photo)})
        client = f.client()
        response, out = await client.request("POST", "http://img.example/api/v1/img_upload.php",
                                              data=body, headers=headers)
        self.assertEqual(response.code, 200, out)
        url = "http://img.example/img/kitten/" + json.loads(out)["file"]
        response, content = await client.request("GET", url)
        self.assertEqual((response.code, content), (200, photo))
        leaked = [(k, v) for k, vs in response.headers.getAllRawHeaders() for v in vs
                  if storage.location.bucket.encode() in v or b"127.0.0.1" in v or b"amz" in k.lower()]
        self.assertEqual(leaked, [])
        response, content = await client.request("GET", url, headers={b"Range": [b"bytes=10-19"]})
        self.assertEqual((response.code, content), (206, photo[10:20]))
        etag = response.headers.getRawHeaders(b"ETag")[0]
        response, content = await client.request("GET", url, headers={b"If-None-Match": [etag]})
        self.assertEqual((response.code, content), (304, b""))
