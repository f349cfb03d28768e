"""The shared limits' fall-back: while the database cannot answer, the process's own
memory counts, with one log line when the outage starts and one when it ends.

The database here is the synchronous SQLite one on a file, stopped (every operation
is then DatabaseUnavailable) and started again; the real outage of a PostgreSQL
server, with two sites on it, is in tests/test_backends_production.py.
"""

from __future__ import annotations

import os

from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial import unittest

from imgshare import compose
from imgshare.config import RateLimit
from imgshare.domain import errors
from imgshare.gather import ERROR_CACHE_SECONDS, ErrorCache
from imgshare.ratelimit import MemoryLimits, RateLimiter
from imgshare.sharedlimits import (
    DatabaseErrorCache,
    DatabaseLimits,
    FallbackErrorCache,
    FallbackLimits,
)
from imgshare.testing import MemoryStorage, open_sqlite_sync, test_config
from imgshare.threads import InlineRunner
from tests.limits_contract import T


class FallbackTests(unittest.TestCase):
    async def setUp(self):
        self.clock = Clock()
        self.clock.advance(T)
        self.database = await open_sqlite_sync(self, os.path.join(self.mktemp(), "imgshare.sqlite3"))

    async def test_limits_fall_back_to_memory_during_an_outage(self):
        limits = FallbackLimits(DatabaseLimits(self.database, self.clock), MemoryLimits(self.clock))
        limiter = RateLimiter(RateLimit(2, 60.0), limits, "api", "token")
        await limiter.check("token:1")
        await limiter.check("token:1")
        await self.database.stop()
        with capturedLogs() as events:
            for _ in range(2):  # the memory's own bucket, full
                await limiter.check("token:1")
            with self.assertRaises(errors.RateLimited):
                await limiter.check("token:1")
            self.assertTrue(await limits.take_all([("login-address:192.0.2.1", RateLimit(1, 60.0))]) == 0)
            await limits.remember("kitten", "192.0.2.1")
            self.assertTrue(await limits.knows("kitten", "192.0.2.1"))
        lines = [formatEvent(e) for e in events]
        self.assertEqual(lines, ["the database is unavailable: rate limits and login throttles are kept "
                                 "in this process only until it is back"])
        await self.database.start()
        with capturedLogs() as events:
            with self.assertRaises(errors.RateLimited) as caught:
                await limiter.check("token:1")  # the database's bucket, spent before the outage
            self.assertEqual(caught.exception.retry_after, 30)
            self.assertFalse(await limits.knows("kitten", "192.0.2.1"), "learnt in memory only")
        self.assertEqual([formatEvent(e) for e in events],
                         ["the database is back: rate limits and login throttles are shared again"])

    async def test_error_cache_falls_back_to_memory_during_an_outage(self):
        cache = FallbackErrorCache(DatabaseErrorCache(self.database, self.clock, ERROR_CACHE_SECONDS),
                                   ErrorCache(self.clock))
        await cache.remember("https://example.com/a.png", errors.GatherFailed("refused"))
        await self.database.stop()
        with capturedLogs() as events:
            self.assertIsNone(await cache.lookup("https://example.com/a.png"))
            await cache.remember("https://example.com/b.png", errors.TooLarge("too large"))
            self.assertEqual((await cache.lookup("https://example.com/b.png")).status, 413)
        self.assertEqual(len(events), 1)
        self.assertIn("img_gather.php failures are kept in this process only", formatEvent(events[0]))
        await self.database.start()
        self.assertEqual((await cache.lookup("https://example.com/a.png")).message, "refused")
        self.assertIsNone(await cache.lookup("https://example.com/b.png"))

    def test_compose_shares_only_on_a_shared_database(self):
        """The components over a database that says it is shared use the database's store
        and error cache; over any other, memory."""
        data_dir = self.mktemp()
        os.makedirs(data_dir)
        config = test_config(data_dir)
        reactor = MemoryReactorClock()  # the gatherer's; nothing connects
        built = compose.build(config, reactor, self.database, MemoryStorage(), InlineRunner(), InlineRunner())
        self.assertIsInstance(built.throttle.limits, MemoryLimits)
        self.assertIsInstance(built.api.gatherer.errors, ErrorCache)
        self.database.shared = True
        built = compose.build(config, reactor, self.database, MemoryStorage(), InlineRunner(), InlineRunner())
        self.assertIsInstance(built.throttle.limits, FallbackLimits)
        self.assertIsInstance(built.throttle.limits.shared, DatabaseLimits)
        self.assertIsInstance(built.api.gatherer.errors, FallbackErrorCache)
