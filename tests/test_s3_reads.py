"""Reads from S3 storage: the SigV4 signer against botocore's, credentials and their
refresh, reads through ``moto_server``, and the connections they use."""

from __future__ import annotations

import datetime
import os
import threading

import botocore.auth
import botocore.session
from botocore.config import Config
from botocore.credentials import Credentials, RefreshableCredentials
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread
from twisted.protocols import portforward
from twisted.python.failure import Failure
from twisted.trial import unittest
from twisted.web.client import ResponseDone

from imgshare import sigv4
from imgshare.plugins.s3 import S3Storage
from imgshare.producers import CHUNK, BodyRelay
from imgshare.sigv4 import CredentialKeeper, RangeSigner, encode_path
from imgshare.storage import ObjectMissing, StorageUnavailable
from imgshare.threads import InlineRunner
from tests import backends
from tests.storage_contract import CollectingConsumer
from tests.test_backends_production import FakeS3, http_response, open_s3, put_file, sleep

#: Fixed instants to sign at: an ordinary time, the last second of a day, the next day.
INSTANTS = [datetime.datetime(2026, 2, 14, 9, 30, 5), datetime.datetime(2026, 2, 14, 23, 59, 59),
            datetime.datetime(2026, 2, 15, 0, 0, 0)]


class _Sent(Exception):
    """Raised in botocore's before-send hook: the request was captured, never sent."""


def botocore_get(credentials: tuple, endpoint: str | None, region: str, style: str, bucket: str, key: str,
                 range_value: str, when: datetime.datetime, testcase) -> tuple[str, dict]:
    """The URL and headers botocore's own S3 client would send for a ranged GetObject at ``when``."""
    session = botocore.session.Session()
    session.set_credentials(*credentials)
    client = session.create_client(
        "s3", endpoint_url=endpoint, region_name=region,
        config=Config(signature_version="s3v4", s3={"addressing_style": style},
                      response_checksum_validation="when_required", retries={"max_attempts": 1}))
    seen = {}

    def before_send(request, **kwargs):
        seen["url"], seen["headers"] = request.url, dict(request.headers)
        raise _Sent()

    client.meta.events.register("before-send.s3.GetObject", before_send)
    testcase.patch(botocore.auth, "get_current_datetime", lambda: when)
    try:
        client.get_object(Bucket=bucket, Key=key, Range=range_value)
    except _Sent:
        pass
    return seen["url"], {k: (v.decode() if isinstance(v, bytes) else v) for k, v in seen["headers"].items()}


def environment(testcase, **values: str | None) -> None:
    """Set (or, with None, remove) environment variables until the test ends."""
    for name, value in values.items():
        old = os.environ.get(name)
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
        testcase.addCleanup(lambda n=name, o=old: os.environ.__setitem__(n, o) if o is not None
                            else os.environ.pop(n, None))


SIGNED = ("Authorization", "X-Amz-Date", "X-Amz-Content-SHA256", "X-Amz-Security-Token", "Range")


class SignerTests(unittest.TestCase):
    """``RangeSigner`` and ``S3Storage``'s addressing give exactly what botocore sends."""

    def assertSameRequest(self, ours_url: str, ours: list, theirs_url: str, theirs: dict) -> None:
        self.assertEqual(ours_url, theirs_url)
        mine = {name.decode(): value.decode() for name, value in ours}
        for name in SIGNED:
            self.assertEqual(mine.get(name), theirs.get(name), name)
        self.assertEqual(mine["Host"], theirs_url.split("/")[2])

    def test_signer_equals_botocore_for_any_key(self):
        """Keys with every kind of character (spaces, non-ASCII, reserved ones) sign and
        encode as botocore does, with and without a session token, at several instants
        (a day boundary changes the cached signing key)."""
        keys = ["kitten/20260214_a.jpg", "a b/ü+~=%&?.jpg", "x/y/z-._~!$'()*,;:@.png", "日本/猫.jpg"]
        for credentials in [("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", None),
                            ("ASIAEXAMPLE", "secret/with+chars", "FwoGZXIvYXdzEJr//////////token==")]:
            frozen = Credentials(*credentials).get_frozen_credentials()
            signer = RangeSigner("127.0.0.1:9000", "us-east-1")
            for key in keys:
                for when in INSTANTS:
                    url, theirs = botocore_get(credentials, "http://127.0.0.1:9000", "us-east-1", "path",
                                               "pics", key, "bytes=100-59999", when, self)
                    path = encode_path("/pics/" + key)
                    ours = signer.headers(frozen, path, "bytes=100-59999",
                                          now=when.replace(tzinfo=datetime.UTC).timestamp())
                    self.assertSameRequest("http://127.0.0.1:9000" + path, ours, url, theirs)

    def test_storage_addressing_equals_botocore(self):
        """S3Storage signs reads for the URL botocore would use: path and virtual addressing,
        AWS regions and custom endpoints with ports, a key prefix, a session token."""
        cases = [
            ("s3://pics?endpoint_url=http://127.0.0.1:9000&region=us-east-1", "http://127.0.0.1:9000",
             "us-east-1", "auto", None),
            ("s3://pics/site-a?endpoint_url=https://s3.example.test:8443&region=eu-west-1&addressing_style=virtual",
             "https://s3.example.test:8443", "eu-west-1", "virtual", "token-1"),
            ("s3://pics/site-a/b?region=eu-central-1", None, "eu-central-1", "auto", None),
            ("s3://pics?region=us-east-1&addressing_style=path", None, "us-east-1", "path", "token-2"),
            ("s3://my.dotted.bucket?region=ap-southeast-2", None, "ap-southeast-2", "auto", None),
        ]
        for url, endpoint, region, style, token in cases:
            environment(self, AWS_ACCESS_KEY_ID="AKIDSTORAGE", AWS_SECRET_ACCESS_KEY="storage/secret+key",
                        AWS_SESSION_TOKEN=token, AWS_PROFILE=None)
            storage = S3Storage(url, reactor)
            storage.client = storage._make_client()  # no network: both calls are local
            origin, host, base, signing_region = storage._layout()
            frozen = storage._credential_source.get_frozen_credentials()
            signer = RangeSigner(host, signing_region)
            for key in ["kitten/20260214_a.jpg", "kitten/xga/20260214_a-b_c.jpg"]:
                when = INSTANTS[0]
                theirs_url, theirs = botocore_get(
                    ("AKIDSTORAGE", "storage/secret+key", token), endpoint, region, style,
                    storage.location.bucket, storage.location.prefix + key, "bytes=0-0", when, self)
                path = base + encode_path(storage.location.prefix + key)
                ours = signer.headers(frozen, path, "bytes=0-0",
                                      now=when.replace(tzinfo=datetime.UTC).timestamp())
                self.assertSameRequest(origin.decode() + path, ours, theirs_url, theirs)

    def test_signing_key_cached_per_day(self):
        """The signing key is derived once per day and secret, not once per request."""
        derived = []
        real = sigv4.signing_key
        self.patch(sigv4, "signing_key", lambda *a: derived.append(a) or real(*a))
        frozen = Credentials("AKID", "SECRET").get_frozen_credentials()
        signer = RangeSigner("h", "us-east-1")
        day = datetime.datetime(2026, 2, 14, tzinfo=datetime.UTC).timestamp()
        for second in range(0, 86400, 3600):
            signer.headers(frozen, "/b/k", "bytes=0-1", now=day + second)
        signer.headers(frozen, "/b/k", "bytes=0-1", now=day + 86400)
        signer.headers(Credentials("AKID2", "OTHER").get_frozen_credentials(), "/b/k", "bytes=0-1",
                       now=day + 86400)
        self.assertEqual([a[1] for a in derived], ["20260214", "20260215", "20260215"])


class Refreshing:
    """A credential refresher for ``RefreshableCredentials``: each call hands out new keys
    valid ``lifetime`` seconds (from ``clock``) and records the thread it ran in."""

    def __init__(self, lifetime: float):
        self.lifetime = lifetime
        self.calls: list[str] = []
        self.fail = False
        self.now = datetime.datetime(2026, 2, 14, 12, 0, tzinfo=datetime.UTC)

    def __call__(self):
        self.calls.append(threading.current_thread().name)
        if self.fail:
            raise OSError("the instance metadata service does not answer")
        n = len(self.calls)
        expiry = self.now + datetime.timedelta(seconds=self.lifetime)
        return {"access_key": f"ASIA{n}", "secret_key": f"secret{n}", "token": f"token{n}",
                "expiry_time": expiry.isoformat()}

    def credentials(self, lifetime: float | None = None) -> RefreshableCredentials:
        """The first keys (ASIA0), valid ``lifetime`` seconds (by default the refresher's)."""
        expiry = self.now + datetime.timedelta(seconds=self.lifetime if lifetime is None else lifetime)
        return RefreshableCredentials(access_key="ASIA0", secret_key="secret0", token="token0",
                                      expiry_time=expiry, refresh_using=self, method="test",
                                      time_fetcher=lambda: self.now)


class CredentialTests(unittest.TestCase):
    def test_static_credentials_never_refreshed(self):
        """Plain keys are frozen once; reading them costs no call at all."""
        keeper = CredentialKeeper(Credentials("AKID", "SECRET"), InlineRunner(), clock=Clock().seconds)
        keeper.start()
        for _ in range(5):
            self.assertEqual(keeper.current().access_key, "AKID")
        self.assertEqual(keeper.refreshes, 1)

    def test_advisory_refresh_in_background_mandatory_waits(self):
        """Within botocore's advisory window the current keys go on signing while a refresh
        runs; within the mandatory window reads wait for it; refreshes run in the runner."""
        refresher = Refreshing(lifetime=3600)
        clock = Clock()
        runs = []

        class Runner:
            def run(self, f, *args):
                d = Deferred()
                runs.append((f, d))
                return d

        keeper = CredentialKeeper(refresher.credentials(), Runner(), clock=clock.seconds)
        started = keeper.start()
        f, d = runs.pop()
        d.callback(f())
        self.assertEqual(self.successResultOf(started).access_key, "ASIA0")
        self.assertEqual(refresher.calls, [])  # still fresh: nothing fetched
        # 14 minutes before expiry: advisory (15 min), not mandatory (10 min).
        refresher.now += datetime.timedelta(seconds=3600 - 14 * 60)
        clock.advance(sigv4.CHECK_EVERY)
        self.assertEqual(keeper.current().access_key, "ASIA0", "signs on meanwhile")
        self.assertEqual(len(runs), 1, "one refresh started")
        clock.advance(sigv4.CHECK_EVERY)
        self.assertEqual(keeper.current().access_key, "ASIA0")
        self.assertEqual(len(runs), 1, "and only one")
        f, d = runs.pop()
        d.callback(f())
        self.assertEqual(keeper.current().access_key, "ASIA1")
        # 5 minutes before the new keys expire: every read waits for the refresh.
        refresher.now += datetime.timedelta(seconds=3600 - 5 * 60)
        clock.advance(sigv4.CHECK_EVERY)
        waiting = [keeper.current(), keeper.current()]
        self.assertTrue(all(isinstance(w, Deferred) and not w.called for w in waiting))
        self.assertEqual(len(runs), 1)
        f, d = runs.pop()
        d.callback(f())
        self.assertEqual([self.successResultOf(w).access_key for w in waiting], ["ASIA2", "ASIA2"])

    def test_failed_refresh_fails_the_waiting_reads_then_retries(self):
        """A refresh that fails fails the reads that had to wait; the next read tries again."""
        refresher = Refreshing(lifetime=3600)
        clock = Clock()
        keeper = CredentialKeeper(refresher.credentials(60), InlineRunner(), clock=clock.seconds)
        refresher.fail = True
        self.failureResultOf(keeper.start(), OSError)
        refresher.fail = False
        self.assertEqual(self.successResultOf(keeper.current()).access_key, "ASIA2")

    async def test_refreshed_credentials_sign_reads_off_the_reactor(self):
        """Through S3Storage: expired temporary credentials are refreshed in the S3 thread
        pool, and the next request is signed with the new keys and token."""
        backends.use_test_credentials()
        refresher = Refreshing(lifetime=30 * 60)
        fake = FakeS3(lambda head: (http_response("206 Partial Content", b"ab", Content_Range="bytes 0-1/2"),
                                    False))
        port = reactor.listenTCP(0, fake, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.addCleanup(fake.close)
        storage = await open_s3(self, f"http://127.0.0.1:{port.getHost().port}", "fake-bucket")
        storage.credentials.source = refresher.credentials()
        storage.credentials._next_check = 0.0
        refresher.now += datetime.timedelta(seconds=25 * 60)  # 5 minutes left: mandatory
        await storage.stream("kitten/a.jpg", CollectingConsumer(), 0, 2)
        request = fake.requests[-1].decode()
        self.assertIn("Credential=ASIA1/", request)
        self.assertIn("X-Amz-Security-Token: token1", request)
        self.assertEqual(len(refresher.calls), 1)
        self.assertIn("imgshare-s3", refresher.calls[0])


class CountingProxy(portforward.ProxyFactory):
    """A TCP forwarder to the S3 endpoint that counts the connections made through it."""

    def __init__(self, host: str, port: int):
        super().__init__(host, port)
        self.connections = 0
        self.open: list[Protocol] = []

    def buildProtocol(self, addr):
        self.connections += 1
        protocol = super().buildProtocol(addr)
        self.open.append(protocol)
        return protocol


class MotoReadTests(unittest.TestCase):
    timeout = 120

    async def test_whole_range_and_missing(self):
        """Whole objects and ranges read back exactly; a missing key is ObjectMissing, with
        nothing written."""
        storage = await open_s3(self)
        data = os.urandom(700_000)
        await storage.put("kitten/20260214_a.jpg", put_file(self, data), "image/jpeg")
        for offset, length in [(0, len(data)), (0, 1), (123_456, 200_001), (len(data) - 10, 10)]:
            consumer = CollectingConsumer()
            await storage.stream("kitten/20260214_a.jpg", consumer, offset, length)
            self.assertEqual(bytes(consumer.data), data[offset:offset + length])
        consumer = CollectingConsumer()
        with self.assertRaises(ObjectMissing):
            await storage.stream("kitten/20260214_none.jpg", consumer, 0, 10)
        self.assertEqual(consumer.data, b"")

    async def test_missing_bucket_is_unavailable_not_missing(self):
        """A bucket removed under a running server is an outage (503), not a missing file."""
        endpoint = await deferToThread(backends.s3_endpoint)
        bucket = "imgshare-test-gone-" + os.urandom(4).hex()
        await deferToThread(backends._make_bucket, endpoint, bucket)
        storage = await open_s3(self, endpoint, bucket)
        await deferToThread(lambda: backends.s3_client(endpoint).delete_bucket(Bucket=bucket))
        with self.assertRaises(StorageUnavailable) as e:
            await storage.stream("kitten/20260214_a.jpg", CollectingConsumer(), 0, 10)
        self.assertIn("does not exist", str(e.exception))

    async def test_connections_to_moto(self):
        """moto_server (werkzeug) answers ``Connection: close``: each read opens one
        connection, and none is left behind."""
        endpoint, bucket = await backends.create_bucket(self)
        host, port = endpoint.split("//")[1].split(":")
        proxy = CountingProxy(host, int(port))
        listening = reactor.listenTCP(0, proxy, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        storage = await open_s3(self, f"http://127.0.0.1:{listening.getHost().port}", bucket)
        await storage.put("kitten/20260214_a.jpg", put_file(self, b"x" * 60_000), "image/jpeg")
        before = proxy.connections
        for _ in range(4):
            consumer = CollectingConsumer()
            await storage.stream("kitten/20260214_a.jpg", consumer, 0, 60_000)
            self.assertEqual(len(consumer.data), 60_000)
        self.assertEqual(proxy.connections - before, 4)
        self.assertEqual(storage._http_pool._connections, {})


class ConnectionReuseTests(unittest.TestCase):
    """Against an endpoint that keeps connections alive (as AWS S3 does)."""

    timeout = 60

    async def _storage(self):
        backends.use_test_credentials()
        body = os.urandom(60_000)
        fake = FakeS3(lambda head: (http_response("206 Partial Content", body[:1000],
                                                  Content_Range="bytes 0-999/60000"), False))
        port = reactor.listenTCP(0, fake, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.addCleanup(fake.close)
        storage = await open_s3(self, f"http://127.0.0.1:{port.getHost().port}", "fake-bucket")
        return storage, fake, body

    async def test_consecutive_reads_share_one_connection(self):
        """Reads one after another go over one pooled connection."""
        storage, fake, body = await self._storage()
        before = len(fake.connections)
        for _ in range(5):
            consumer = CollectingConsumer()
            await storage.stream("kitten/a.jpg", consumer, 0, 1000)
            self.assertEqual(bytes(consumer.data), body[:1000])
        self.assertEqual(len(fake.connections) - before, 1)
        self.assertEqual(sum(r.startswith(b"GET ") for r in fake.requests), 5)

    async def test_idle_connection_closed_by_server_is_replaced(self):
        """A pooled connection the server closed while idle is not used again: the next read
        succeeds on a new one."""
        storage, fake, body = await self._storage()
        await storage.stream("kitten/a.jpg", CollectingConsumer(), 0, 1000)
        for protocol in fake.connections:
            protocol.transport.loseConnection()
        await sleep(0.1)
        consumer = CollectingConsumer()
        await storage.stream("kitten/a.jpg", consumer, 0, 1000)
        self.assertEqual(bytes(consumer.data), body[:1000])

    async def test_connection_closed_as_the_request_is_sent_is_retried(self):
        """A pooled connection that the server closes on receiving the next request (the race
        of an idle timeout) is retried once on a new connection: the read succeeds."""
        body = os.urandom(1000)
        answered = []

        def answer(head):
            answered.append(head)
            if len(answered) == 2:
                return b"", True  # close without answering
            return http_response("206 Partial Content", body, Content_Range="bytes 0-999/1000"), False

        backends.use_test_credentials()
        fake = FakeS3(answer)
        port = reactor.listenTCP(0, fake, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.addCleanup(fake.close)
        storage = await open_s3(self, f"http://127.0.0.1:{port.getHost().port}", "fake-bucket")
        for _ in range(2):
            consumer = CollectingConsumer()
            await storage.stream("kitten/a.jpg", consumer, 0, 1000)
            self.assertEqual(bytes(consumer.data), body)
        self.assertEqual(len(answered), 3)


class _Consumer:
    """What BodyRelay writes to: the writes, and the producer it registered."""

    def __init__(self):
        self.writes: list[bytes] = []
        self.producer = None

    def registerProducer(self, producer, streaming):  # noqa: N802
        self.producer = producer

    def unregisterProducer(self):  # noqa: N802
        self.producer = None

    def write(self, data):
        self.writes.append(data)


class BodyRelayTests(unittest.TestCase):
    """How the relay hands an upstream body on: a small one whole, a large one as it comes."""

    def relay(self, length: int) -> tuple[BodyRelay, _Consumer]:
        consumer = _Consumer()
        relay = BodyRelay(consumer, length, 0, Clock(), 5.0, upstream_length=length, source="S3")
        relay.makeConnection(StringTransport())
        return relay, consumer

    def test_a_small_body_is_written_once_whole(self):
        relay, consumer = self.relay(60_000)
        for piece in (b"a" * 20_000, b"b" * 30_000, b"c" * 10_000):
            relay.dataReceived(piece)
        self.assertEqual(consumer.writes, [b"a" * 20_000 + b"b" * 30_000 + b"c" * 10_000])
        relay.connectionLost(Failure(ResponseDone()))
        self.assertIsNone(self.successResultOf(relay.done))

    def test_a_small_body_cut_midway_writes_nothing(self):
        """Nothing was written, so the client can still be told 503 (not a cut connection)."""
        relay, consumer = self.relay(60_000)
        relay.dataReceived(b"a" * 20_000)
        relay.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(consumer.writes, [])
        self.failureResultOf(relay.done, StorageUnavailable)

    def test_a_large_body_is_written_as_it_comes(self):
        size = CHUNK + 1
        relay, consumer = self.relay(size)
        relay.dataReceived(b"a" * 65_536)
        self.assertEqual(consumer.writes, [b"a" * 65_536])
        relay.dataReceived(b"b" * (size - 65_536))
        self.assertEqual(len(consumer.writes), 2)
        relay.connectionLost(Failure(ResponseDone()))
        self.assertIsNone(self.successResultOf(relay.done))
