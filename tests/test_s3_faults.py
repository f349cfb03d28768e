"""A hung S3 endpoint: the process is there (it accepts connections) but never answers.

The tests put a small TCP relay of their own between S3Storage and the shared
``moto_server`` (never stopping that one: other tests use it in parallel).  The
relay forwards, or, once hung, accepts connections and never reads or answers
them, as a stopped (SIGSTOP) server does.  Short deadlines come from the URL.
"""

from __future__ import annotations

import json
import os
import threading
import time

from twisted.internet import reactor
from twisted.internet.protocol import ClientFactory
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.protocols import portforward
from twisted.trial import unittest
from twisted.web import server

from imgshare.expiry import expire_once
from imgshare.plugins import s3
from imgshare.plugins.s3 import Location, S3Storage
from imgshare.storage import StorageUnavailable
from imgshare.testing import image_bytes, make_fixture, multipart
from tests import backends
from tests.storage_contract import stored_size
from tests.test_backends_production import (
    SlowReader,
    StreamResource,
    read_to_the_end,
    settled_relay,
)

MiB = 1024 * 1024
API = "http://img.example/api/v1/img_upload.php"


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


class _RelayServer(portforward.ProxyServer):
    def connectionMade(self):
        self.factory.connections.add(self)
        if self.factory.hung:
            self.transport.pauseProducing()  # accepted, never read, never answered
            return
        super().connectionMade()

    def connectionLost(self, reason):
        self.factory.connections.discard(self)
        super().connectionLost(reason)


class HangingRelay(portforward.ProxyFactory):
    """Forwards to an endpoint until ``hang()``; from then on a stopped server."""

    protocol = _RelayServer
    noisy = False

    def __init__(self, host: str, port: int):
        super().__init__(host, port)
        self.hung = False
        self.connections: set[_RelayServer] = set()

    def _drop_all(self) -> None:
        for connection in list(self.connections):
            if connection.peer is not None:
                connection.peer.transport.abortConnection()
            connection.transport.abortConnection()

    def hang(self) -> None:
        """Hang: kept-alive connections go too (else they would still forward)."""
        self.hung = True
        self._drop_all()

    def resume(self) -> None:
        """Forward again; the connections held while hung are reset."""
        self.hung = False
        self._drop_all()


class HungS3Tests(unittest.TestCase):
    timeout = 120

    async def relayed_storage(self, relayed: bool = True, **options: str) -> tuple[S3Storage, HangingRelay, str]:
        """S3Storage on a fresh moto bucket, through a relay; (storage, relay, bucket)."""
        endpoint, bucket = await backends.create_bucket(self)
        host, port = endpoint.rsplit("//", 1)[1].split(":")
        relay = HangingRelay(host, int(port))
        listening = reactor.listenTCP(0, relay, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        self.addCleanup(relay._drop_all)
        through = f"http://127.0.0.1:{listening.getHost().port}" if relayed else endpoint
        url = backends.storage_url(through, bucket, **options)
        storage = S3Storage(url, reactor, threads=4)
        await storage.start()
        self.addCleanup(storage.stop)
        self.moto = backends.s3_client(endpoint)
        return storage, relay, bucket

    def objects(self, bucket: str) -> list[str]:
        return [o["Key"] for o in self.moto.list_objects_v2(Bucket=bucket).get("Contents", [])]

    async def fixture(self, storage):
        f = await make_fixture(self, storage=storage, threaded=True)
        await f.account("kitten")
        self.token = await f.token("kitten")
        self.client = f.client()
        return f

    async def upload(self, **fields):
        body, headers = multipart({"token": self.token, "keep_name": "1", **fields},
                                  {"file": ("photo.jpg", image_bytes())})
        response, out = await self.client.request("POST", API, data=body, headers=headers)
        return response.code, json.loads(out)

    async def test_hung_put_answers_503_and_the_purge_leaves_nothing(self):
        """An upload to a hung S3 answers 503 within the put deadline (1 s here, not
        minutes), with no clean-up before the answer; once S3 answers again the purge
        removes whatever the abandoned put left, row and object, and the name is free."""
        storage, relay, bucket = await self.relayed_storage(put_timeout="1", read_timeout="1")
        f = await self.fixture(storage)
        relay.hang()
        started = time.monotonic()
        code, record = await self.upload()
        elapsed = time.monotonic() - started
        self.assertEqual(code, 503, record)
        self.assertLess(elapsed, 10, f"503 after {elapsed:.1f} s")

        async def rows(tx):
            return await tx.execute("SELECT name, state FROM images")

        self.assertEqual(await f.database.run(rows), [("20260214_photo.jpg", "uploading")],
                         "nothing was cleaned up before the answer (the fake clock has not moved)")
        response, _ = await self.client.request("GET", "http://img.example/img/kitten/20260214_photo.jpg")
        self.assertEqual(response.code, 404)
        relay.resume()

        async def leftovers():
            return await f.database.run(rows), await deferToThread(self.objects, bucket)

        for _ in range(60):  # the abandoned put's thread ends by itself (boto3 timeouts)
            f.clock.advance(1000)  # past any purge backoff
            await expire_once(f.database, f.library, f.clock.seconds())
            if await leftovers() == ([], []):
                break
            await sleep(0.5)
        self.assertEqual(await leftovers(), ([], []))
        code, record = await self.upload()
        self.assertEqual((code, record.get("file")), (200, "20260214_photo.jpg"), record)
        self.assertEqual(await deferToThread(self.objects, bucket), ["kitten/20260214_photo.jpg"])

    async def test_hung_reads_answer_503(self):
        """With S3 hung, /img/ answers 503, and fetch and delete fail, each within the
        read deadline (1 s here); once S3 answers again /img/ serves the file."""
        storage, relay, _ = await self.relayed_storage(put_timeout="1", read_timeout="1")
        await self.fixture(storage)
        code, record = await self.upload()
        self.assertEqual(code, 200, record)
        key = f"kitten/{record['file']}"
        relay.hang()
        started = time.monotonic()
        response, _ = await self.client.request("GET", record["urls"]["original"])
        self.assertEqual(response.code, 503)
        self.assertLess(time.monotonic() - started, 10)
        for call in (lambda: storage.fetch(key, self.mktemp()), lambda: storage.delete(key)):
            started = time.monotonic()
            with self.assertRaises(StorageUnavailable):
                await call()
            self.assertLess(time.monotonic() - started, 10)
        relay.resume()
        response, content = await self.client.request("GET", record["urls"]["original"])
        self.assertEqual((response.code, content), (200, image_bytes()))

    async def test_a_slow_client_is_not_cut(self):
        """The read deadline bounds S3's silence, not a download: a client that stops
        reading for longer than it still gets every byte."""
        storage, _, _ = await self.relayed_storage(relayed=False, read_timeout="1")
        data = os.urandom(16 * MiB)
        path = self.mktemp()
        with open(path, "wb") as out:
            out.write(data)
        await storage.put("kitten/20260214_big.jpg", path, "image/jpeg")
        site = StreamResource(storage, "kitten/20260214_big.jpg", len(data))
        port = reactor.listenTCP(0, server.Site(site), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        client = SlowReader()
        reactor.connectTCP("127.0.0.1", port.getHost().port, ClientFactory.forProtocol(lambda: client))
        relay = await settled_relay(storage)
        self.assertTrue(relay.upstream_paused)
        await sleep(3)  # three read deadlines with the client not reading
        self.assertEqual(await read_to_the_end(client, site, len(data), tries=600), data)

    async def test_a_write_still_running_holds_its_key(self):
        """A put given up at its deadline may still land: until its thread ends, the same
        key is neither deleted nor written again (a purge would otherwise delete it first
        and the late put bring it back, or overwrite a newer image)."""
        storage, _, _ = await self.relayed_storage(put_timeout="0.5")
        release = threading.Event()
        real_put = storage._put

        def slow_put(*args):
            release.wait(30)
            return real_put(*args)

        self.patch(storage, "_put", slow_put)
        path = self.mktemp()
        with open(path, "wb") as out:
            out.write(b"late")
        with self.assertRaises(StorageUnavailable):
            await storage.put("kitten/20260214_late.jpg", path, "image/jpeg")
        with self.assertRaises(StorageUnavailable):
            await storage.delete("kitten/20260214_late.jpg")
        with self.assertRaises(StorageUnavailable):
            await storage.put("kitten/20260214_late.jpg", path, "image/jpeg")
        await storage.delete("kitten/20260214_other.jpg")  # other keys are free
        release.set()
        for _ in range(100):  # the object appears just before the put's thread lets go of the key
            if (await stored_size(self, storage, "kitten/20260214_late.jpg") == 4
                    and storage._key("kitten/20260214_late.jpg") not in storage.writing):
                break
            await sleep(0.05)
        await storage.delete("kitten/20260214_late.jpg")
        self.assertIsNone(await stored_size(self, storage, "kitten/20260214_late.jpg"))


class S3TimeoutOptionTests(unittest.TestCase):
    def test_timeouts_in_the_url(self):
        """put_timeout and read_timeout come from the URL: seconds, positive and finite."""
        loc = Location.parse("s3://pics?put_timeout=2.5&read_timeout=4")
        self.assertEqual((loc.put_timeout, loc.read_timeout), (2.5, 4.0))
        loc = Location.parse("s3://pics")
        self.assertEqual((loc.put_timeout, loc.read_timeout), (s3.PUT_TIMEOUT, None))
        for bad in ["0", "-1", "x", "inf", "nan", ""]:
            self.assertRaises(ValueError, Location.parse, f"s3://pics?put_timeout={bad}")
            self.assertRaises(ValueError, Location.parse, f"s3://pics?read_timeout={bad}")

