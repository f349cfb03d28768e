"""The local cache of hot objects (``imgshare.cache``) in front of remote storage."""

from __future__ import annotations

import hashlib
import json
import os

from twisted.internet.defer import Deferred
from twisted.trial import unittest

from imgshare import cache
from imgshare.cache import CachedStorage, entry_name, with_cache
from imgshare.options import build_config, resolve
from imgshare.producers import send_range
from imgshare.testing import MemoryStorage, image_bytes, make_fixture, multipart
from imgshare.threads import InlineRunner
from tests.storage_contract import CollectingConsumer, StorageContract


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class SlowFetches(MemoryStorage):
    """A MemoryStorage whose fetches wait until ``release`` (fills in flight)."""

    def __init__(self):
        super().__init__()
        self.pending: list[tuple[Deferred, str, str]] = []

    def fetch(self, key, path):
        self.calls.append(("fetch", key))
        d = Deferred()
        self.pending.append((d, key, path))
        return d

    def release(self):
        for d, key, path in self.pending:
            with open(path, "wb") as f:
                f.write(self.objects[key])
            d.callback(None)
        self.pending.clear()


class CacheTests(unittest.TestCase):
    async def make(self, size=1_000_000, backend=None, folder=None) -> CachedStorage:
        backend = backend or MemoryStorage()
        storage = CachedStorage(backend, folder or self.mktemp(), size, InlineRunner())
        await storage.start()
        return storage

    def put(self, storage, key, data):
        storage.storage.objects[key] = data
        return digest(data)

    async def read(self, storage, key, version, offset=0, length=None):
        consumer = CollectingConsumer()
        size = len(storage.storage.objects.get(key, b"")) if length is None else length
        await storage.stream(key, consumer, offset, size, version=version)
        return bytes(consumer.data)

    def streams(self, storage):
        return sum(op == "stream" for op, _ in storage.storage.calls)

    async def test_miss_then_hit(self):
        """A miss streams from storage and fills the cache; the next read (whole or a range)
        is served from the cache file, with the local-files producer."""
        storage = await self.make()
        data = os.urandom(200_000)
        version = self.put(storage, "kitten/20260214_a.jpg", data)
        self.assertEqual(await self.read(storage, "kitten/20260214_a.jpg", version), data)
        self.assertEqual((storage.misses, storage.hits, self.streams(storage)), (1, 0, 1))
        self.assertEqual(os.listdir(storage.folder), [entry_name("kitten/20260214_a.jpg", version)])
        senders = []
        real = cache.send_range
        self.patch(cache, "send_range", lambda *a: senders.append(a) or real(*a))
        self.assertEqual(await self.read(storage, "kitten/20260214_a.jpg", version), data)
        self.assertEqual(await self.read(storage, "kitten/20260214_a.jpg", version, 1000, 5), data[1000:1005])
        self.assertEqual((storage.hits, self.streams(storage), len(senders)), (2, 1, 2))
        self.assertIs(real, send_range)  # the local-files backend's own

    async def test_reads_without_a_version_are_not_cached(self):
        """Without a version (a caller that knows no digest) reads go to storage, uncached."""
        storage = await self.make()
        self.put(storage, "kitten/a.jpg", b"abc")
        self.assertEqual(await self.read(storage, "kitten/a.jpg", None), b"abc")
        self.assertEqual(os.listdir(storage.folder), [])

    async def test_stale_digest_never_served(self):
        """A name used again for other bytes (another digest) misses, and a fetched object
        whose bytes do not have the recorded digest is never kept."""
        storage = await self.make()
        old = self.put(storage, "kitten/a.jpg", b"old bytes")
        await self.read(storage, "kitten/a.jpg", old)
        new = self.put(storage, "kitten/a.jpg", b"new bytes!")
        self.assertEqual(await self.read(storage, "kitten/a.jpg", new), b"new bytes!")
        self.assertEqual(storage.hits, 0)
        self.assertEqual(await self.read(storage, "kitten/a.jpg", new), b"new bytes!")
        self.assertEqual(storage.hits, 1)
        wrong = digest(b"what the database says")
        storage.storage.objects["kitten/b.jpg"] = b"other bytes"
        await self.read(storage, "kitten/b.jpg", wrong)
        self.assertNotIn(entry_name("kitten/b.jpg", wrong), os.listdir(storage.folder))
        self.assertNotIn(entry_name("kitten/b.jpg", wrong), storage.entries)

    async def test_lru_eviction_by_bytes(self):
        """The total stays within the size; the least recently used entries go first."""
        storage = await self.make(size=250_000)
        versions = {}
        for name in "abc":
            versions[name] = self.put(storage, f"kitten/{name}.jpg", os.urandom(100_000))
        await self.read(storage, "kitten/a.jpg", versions["a"])
        await self.read(storage, "kitten/b.jpg", versions["b"])
        await self.read(storage, "kitten/a.jpg", versions["a"])  # a hit: a is now the newest
        await self.read(storage, "kitten/c.jpg", versions["c"])  # b must go
        self.assertEqual(set(storage.entries), {entry_name("kitten/a.jpg", versions["a"]),
                                                entry_name("kitten/c.jpg", versions["c"])})
        self.assertEqual(storage.total, 200_000)
        self.assertEqual(sorted(os.listdir(storage.folder)), sorted(storage.entries))
        big = self.put(storage, "kitten/big.jpg", os.urandom(300_000))  # larger than the cache
        await self.read(storage, "kitten/big.jpg", big)
        self.assertLessEqual(storage.total, 250_000)
        self.assertNotIn(entry_name("kitten/big.jpg", big), storage.entries)

    async def test_temporary_files_never_served_and_removed_at_start(self):
        """A half-written entry (a temporary file left by a crash) is never an entry: the
        restart removes it and the read goes to storage."""
        folder = self.mktemp()
        os.makedirs(folder)
        version = digest(b"whole object")
        name = entry_name("kitten/a.jpg", version)
        with open(os.path.join(folder, cache.TMP_PREFIX + name), "wb") as f:
            f.write(b"whole")
        with open(os.path.join(folder, "unrelated.txt"), "wb") as f:
            f.write(b"not an entry")
        backend = MemoryStorage()
        backend.objects["kitten/a.jpg"] = b"whole object"
        storage = await self.make(backend=backend, folder=folder)
        self.assertEqual(storage.entries, {})
        self.assertNotIn(cache.TMP_PREFIX + name, os.listdir(folder))
        self.assertEqual(await self.read(storage, "kitten/a.jpg", version), b"whole object")
        self.assertEqual(storage.hits, 0)

    async def test_rebuilt_after_restart(self):
        """A new process finds the entries of the last one (oldest first) and serves them."""
        folder = self.mktemp()
        first = await self.make(folder=folder)
        versions = [self.put(first, f"kitten/{n}.jpg", n.encode() * 1000) for n in "ab"]
        for n, v in zip("ab", versions, strict=True):
            await self.read(first, f"kitten/{n}.jpg", v)
        backend = MemoryStorage()
        backend.objects = dict(first.storage.objects)
        second = await self.make(backend=backend, folder=folder)
        self.assertEqual(set(second.entries), set(first.entries))
        self.assertEqual(second.total, 2000)
        self.assertEqual(await self.read(second, "kitten/a.jpg", versions[0]), b"a" * 1000)
        self.assertEqual((second.hits, self.streams(second)), (1, 0))
        smaller = await self.make(size=1500, backend=backend, folder=folder)  # restarted smaller
        self.assertLessEqual(smaller.total, 1500)
        self.assertEqual(len(os.listdir(folder)), 1)

    async def test_vanished_file_falls_back_to_storage(self):
        """An entry whose file was removed under the cache is read from storage and refilled."""
        storage = await self.make()
        version = self.put(storage, "kitten/a.jpg", b"bytes" * 100)
        await self.read(storage, "kitten/a.jpg", version)
        os.unlink(os.path.join(storage.folder, entry_name("kitten/a.jpg", version)))
        self.assertEqual(await self.read(storage, "kitten/a.jpg", version), b"bytes" * 100)
        self.assertEqual((storage.hits, self.streams(storage)), (0, 2))
        self.assertEqual(await self.read(storage, "kitten/a.jpg", version), b"bytes" * 100)
        self.assertEqual(storage.hits, 1)

    async def test_concurrent_misses_fill_once(self):
        """Several misses of one object while it is being filled start one fetch; fills are
        bounded; a delete during a fill keeps the entry out."""
        backend = SlowFetches()
        storage = await self.make(backend=backend)
        version = self.put(storage, "kitten/a.jpg", b"x" * 5000)
        for _ in range(3):
            self.assertEqual(await self.read(storage, "kitten/a.jpg", version), b"x" * 5000)
        self.assertEqual([op for op, _ in backend.calls].count("fetch"), 1)
        others = [self.put(storage, f"kitten/{i}.jpg", bytes([i]) * 10) for i in range(10)]
        for i, v in enumerate(others):
            await self.read(storage, f"kitten/{i}.jpg", v)
        self.assertEqual(len(backend.pending), cache.FILLS)
        backend.release()
        self.assertIn(entry_name("kitten/a.jpg", version), storage.entries)
        self.assertEqual(storage.filling, {})
        # a delete while a fill is under way: the filled file is not kept
        await self.read(storage, "kitten/5.jpg", others[5])
        await storage.delete("kitten/5.jpg")
        backend.objects["kitten/5.jpg"] = bytes([5]) * 10  # the fetch still finds it
        backend.release()
        self.assertNotIn(entry_name("kitten/5.jpg", others[5]), storage.entries)
        self.assertNotIn(entry_name("kitten/5.jpg", others[5]), os.listdir(storage.folder))

    async def test_delete_removes_entries(self):
        """Deleting a key removes its cached entries at once."""
        storage = await self.make()
        version = self.put(storage, "kitten/a.jpg", b"abc")
        await self.read(storage, "kitten/a.jpg", version)
        await storage.delete("kitten/a.jpg")
        self.assertEqual((storage.entries, storage.total, os.listdir(storage.folder)), ({}, 0, []))

    def test_local_files_storage_is_not_cached(self):
        """--cache-dir with local-files storage: the storage itself, uncached."""
        local = MemoryStorage()
        local.url = "file:///var/lib/imgshare/storage"
        self.assertIs(with_cache(local, "/tmp/cache", 1000, InlineRunner()), local)
        self.assertIsInstance(with_cache(MemoryStorage(), "", 1000, InlineRunner()), MemoryStorage)
        self.assertIsInstance(with_cache(MemoryStorage(), self.mktemp(), 1000, InlineRunner()), CachedStorage)

    def test_options(self):
        """--cache-dir and --cache-size (and their variables); sizes as everywhere; off by default."""
        config = build_config(resolve({}, {"IMGSHARE_CACHE_DIR": "/var/cache/imgshare",
                                           "IMGSHARE_CACHE_SIZE": "2GiB"}))
        self.assertEqual((config.cache_dir, config.cache_size), ("/var/cache/imgshare", 2 * 1024 ** 3))
        self.assertEqual(build_config(resolve({}, {})).cache_dir, "")
        self.assertEqual(build_config(resolve({"cache-dir": "/c"}, {})).cache_size, 1024 ** 3)
        for bad in [{"cache-dir": "/c", "cache-size": "lots"}, {"cache-dir": "/c", "cache-size": "0"},
                    {"cache-size": "1GiB"}]:
            with self.assertRaises(ValueError):
                build_config(resolve(bad, {}))

    async def test_through_img(self):
        """/img/ through the cache: the second view is a hit; after a delete the image is a 404
        at once, and its entry goes with its objects."""
        backend = MemoryStorage()
        storage = CachedStorage(backend, self.mktemp(), 10_000_000, InlineRunner())
        await storage.start()
        f = await make_fixture(self, storage=storage)
        await f.account("kitten")
        token = await f.token("kitten")
        photo = image_bytes("JPEG", (320, 240), quality=90)
        body, headers = multipart({"token": token}, {"file": ("a.jpg", photo)})
        client = f.client()
        response, out = await client.request("POST", "http://img.example/api/v1/img_upload.php",
                                              data=body, headers=headers)
        self.assertEqual(response.code, 200, out)
        name = json.loads(out)["file"]
        url = "http://img.example/img/kitten/" + name
        for _ in range(2):
            response, content = await client.request("GET", url)
            self.assertEqual((response.code, content), (200, photo))
        response, content = await client.request("GET", url, headers={b"Range": [b"bytes=10-19"]})
        self.assertEqual((response.code, content), (206, photo[10:20]))
        self.assertEqual((storage.misses, storage.hits), (1, 2))
        image = await f.library.delete("kitten", name)
        response, content = await client.request("GET", url)
        self.assertEqual(response.code, 404)  # the row is gone: the entry is unreachable
        await f.library.remove_objects(image)  # what the purge does
        self.assertNotIn(entry_name(f"kitten/{name}", digest(photo)), storage.entries)


class CachedContractTests(StorageContract, unittest.TestCase):
    """The cache in front of a backend still passes the storage contract."""

    async def make_storage(self):
        storage = CachedStorage(MemoryStorage(), self.mktemp(), 1_000_000, InlineRunner())
        await storage.start()
        return storage




class CachedS3Tests(unittest.TestCase):
    timeout = 120

    async def test_hit_after_fill_from_moto(self):
        """In front of S3 (moto_server), with real threads: a miss streams from the bucket and
        fills the entry in the background; the next read of that version is a hit."""
        from twisted.internet import reactor

        from imgshare.threads import PoolRunner
        from tests.test_backends_production import open_s3, put_file

        s3 = await open_s3(self)
        data = os.urandom(300_000)
        await s3.put("kitten/20260214_a.jpg", put_file(self, data), "image/jpeg")
        storage = CachedStorage(s3, self.mktemp(), 10_000_000, PoolRunner(reactor, s3.pool))
        await storage.start()
        version = digest(data)
        consumer = CollectingConsumer()
        await storage.stream("kitten/20260214_a.jpg", consumer, 0, len(data), version=version)
        self.assertEqual(bytes(consumer.data), data)
        for d in list(storage.fills):
            await d
        consumer = CollectingConsumer()
        await storage.stream("kitten/20260214_a.jpg", consumer, 1000, 2000, version=version)
        self.assertEqual(bytes(consumer.data), data[1000:3000])
        self.assertEqual((storage.misses, storage.hits), (1, 1))
