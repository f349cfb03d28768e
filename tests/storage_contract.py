"""The Storage contract: every backend passes these tests unchanged.

A backend's test case mixes ``StorageContract`` into a trial TestCase and
defines ``async def make_storage(self)`` returning a started storage.
"""

from __future__ import annotations

import os

from twisted.internet.interfaces import IConsumer
from zope.interface import implementer

from imgshare.storage import ObjectMissing


@implementer(IConsumer)
class CollectingConsumer:
    """A consumer that keeps what it gets, from a pull producer (it pulls in a loop) or
    a push producer (it takes every write), as twisted.web's request takes both;
    ``stop_after`` bytes it stops the producer (a client going away)."""

    def __init__(self, stop_after: int | None = None):
        self.data = bytearray()
        self.producer = None
        self.streaming = None
        self.stop_after = stop_after

    def registerProducer(self, producer, streaming):
        self.producer, self.streaming = producer, streaming
        if not streaming:
            while self.producer is not None:
                if self.stop_after is not None and len(self.data) >= self.stop_after:
                    self.producer.stopProducing()
                    break
                self.producer.resumeProducing()
        else:
            producer.resumeProducing()

    def unregisterProducer(self):
        self.producer = None

    def write(self, data):
        self.data += data
        if self.streaming and self.stop_after is not None and len(self.data) >= self.stop_after:
            self.producer.stopProducing()


async def stored_size(testcase, storage, key):
    """The size of the object under ``key`` as read back from storage, None without one
    (the Storage interface has no size lookup: production never needs one)."""
    path = testcase.mktemp()
    try:
        await storage.fetch(key, path)
    except ObjectMissing:
        return None
    return os.path.getsize(path)


class StorageContract:
    async def make_storage(self):
        raise NotImplementedError

    def _file(self, data: bytes) -> str:
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(data)
        return path

    async def _stream(self, storage, key, offset, length):
        consumer = CollectingConsumer()
        await storage.stream(key, consumer, offset, length)
        return bytes(consumer.data)

    async def test_put_then_read(self):
        """A stored object reads back byte for byte: its size, stream and fetch."""
        storage = await self.make_storage()
        data = os.urandom(300_000)
        await storage.put("kitten/20260214_a.jpg", self._file(data), "image/jpeg")
        self.assertEqual(await stored_size(self, storage, "kitten/20260214_a.jpg"), len(data))
        self.assertEqual(await self._stream(storage, "kitten/20260214_a.jpg", 0, len(data)), data)
        target = self.mktemp()
        await storage.fetch("kitten/20260214_a.jpg", target)
        with open(target, "rb") as f:
            self.assertEqual(f.read(), data)

    async def test_stream_range(self):
        """Streaming a range yields exactly those bytes."""
        storage = await self.make_storage()
        data = bytes(range(256)) * 1000
        await storage.put("kitten/xga/20260214_a.jpg", self._file(data), "image/jpeg")
        self.assertEqual(await self._stream(storage, "kitten/xga/20260214_a.jpg", 1000, 70_001), data[1000:71_001])
        self.assertEqual(await self._stream(storage, "kitten/xga/20260214_a.jpg", len(data) - 1, 1), data[-1:])

    async def test_put_replaces(self):
        """Putting a key again replaces the object whole."""
        storage = await self.make_storage()
        await storage.put("kitten/20260214_a.png", self._file(b"first version"), "image/png")
        await storage.put("kitten/20260214_a.png", self._file(b"second"), "image/png")
        self.assertEqual(await self._stream(storage, "kitten/20260214_a.png", 0, 6), b"second")
        self.assertEqual(await stored_size(self, storage, "kitten/20260214_a.png"), 6)

    async def test_delete_is_idempotent(self):
        """Deleting removes the object; deleting a missing key succeeds."""
        storage = await self.make_storage()
        await storage.put("kitten/20260214_a.jpg", self._file(b"x"), "image/jpeg")
        await storage.delete("kitten/20260214_a.jpg")
        await storage.delete("kitten/20260214_a.jpg")
        await storage.delete("kitten/never.jpg")
        self.assertIsNone(await stored_size(self, storage, "kitten/20260214_a.jpg"))

    async def test_missing_objects(self):
        """A missing key: no size, stream and fetch fail with ObjectMissing."""
        storage = await self.make_storage()
        self.assertIsNone(await stored_size(self, storage, "kitten/missing.jpg"))
        with self.assertRaises(ObjectMissing):
            await self._stream(storage, "kitten/missing.jpg", 0, 10)
        with self.assertRaises(ObjectMissing):
            await storage.fetch("kitten/missing.jpg", self.mktemp())

    async def test_stream_stops_when_consumer_stops(self):
        """A consumer that stops early (a client that went away) ends the stream with an error."""
        storage = await self.make_storage()
        data = os.urandom(1_000_000)
        await storage.put("kitten/20260214_big.jpg", self._file(data), "image/jpeg")
        consumer = CollectingConsumer(stop_after=100_000)
        with self.assertRaises(ConnectionError):
            await storage.stream("kitten/20260214_big.jpg", consumer, 0, len(data))
        self.assertLess(len(consumer.data), len(data))

    async def test_probe(self):
        """The readiness probe succeeds on a started storage (and changes nothing)."""
        storage = await self.make_storage()
        self.assertIsNone(await storage.probe())
        self.assertIsNone(await stored_size(self, storage, "kitten/missing.jpg"))
