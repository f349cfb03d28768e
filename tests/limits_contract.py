"""The contract of a limits store (``ratelimit.Limits``) and of a gather error cache:
the in-memory ones and the database's (``sharedlimits``) pass these unchanged.

A test case mixes ``LimitsContract`` into a trial TestCase and defines
``async def make_limits(self, clock)`` and ``async def make_error_cache(self, clock)``.
Every time comes from the ``task.Clock`` given, so nothing waits on real time.
"""

from __future__ import annotations

from twisted.internet.task import Clock

from imgshare.config import RateLimit
from imgshare.domain import errors
from imgshare.domain.errors import RateLimited
from imgshare.ratelimit import KNOWN_FOR, KNOWN_PER_ACCOUNT, LoginThrottle, RateLimiter

T = 1_771_061_400.0


class LimitsContract:
    async def make_limits(self, clock):
        raise NotImplementedError

    async def make_error_cache(self, clock):
        raise NotImplementedError

    async def _limits(self):
        self.clock = Clock()
        self.clock.advance(T)
        self.limits = await self.make_limits(self.clock)
        return self.limits

    async def refused(self, limiter, key) -> int:
        """The Retry-After of a check that must be refused."""
        try:
            await limiter.check(key)
        except RateLimited as e:
            return e.retry_after
        self.fail(f"{key} was not limited")

    async def test_bucket_burst_and_refill(self):
        """3 per 60 s: a burst of three, the fourth waits 20 s; each 20 s buys one more."""
        limiter = RateLimiter(RateLimit(3, 60.0), await self._limits(), "api", "token")
        for _ in range(3):
            await limiter.check("token:1")
        self.assertEqual(await self.refused(limiter, "token:1"), 20)
        self.clock.advance(5)
        self.assertEqual(await self.refused(limiter, "token:1"), 15, "a refusal spends nothing")
        self.clock.advance(15)
        await limiter.check("token:1")
        self.assertEqual(await self.refused(limiter, "token:1"), 20)
        self.clock.advance(600)
        for _ in range(3):  # a bucket never holds more than its burst
            await limiter.check("token:1")
        self.assertEqual(await self.refused(limiter, "token:1"), 20)

    async def test_keys_and_names_keep_apart(self):
        """Each key has its own bucket, and limiters of different names on one store too."""
        limits = await self._limits()
        api = RateLimiter(RateLimit(1, 60.0), limits, "api", "client address")
        delete = RateLimiter(RateLimit(1, 60.0), limits, "delete", "client address")
        await api.check("192.0.2.1")
        await api.check("192.0.2.2")
        await delete.check("192.0.2.1")
        self.assertEqual(await self.refused(api, "192.0.2.1"), 60)
        self.assertEqual(await self.refused(delete, "192.0.2.1"), 60)

    async def test_take_all_is_all_or_nothing(self):
        """When one bucket is empty nothing is taken from the others; the wait is the longest."""
        limits = await self._limits()
        small, large = RateLimit(1, 60.0), RateLimit(2, 60.0)
        self.assertEqual(await limits.take_all([("a", small), ("b", large)]), 0)
        self.assertEqual(await limits.take_all([("a", small), ("b", large)]), 60)
        self.assertEqual(await limits.take_all([("b", large)]), 0, "b still had one")
        self.assertEqual(await limits.take_all([("b", large)]), 30)

    async def test_give_back_and_forget(self):
        """A request given back can be taken again (never beyond a full bucket); a forgotten
        bucket is full at once."""
        limits = await self._limits()
        limit = RateLimit(2, 60.0)
        for _ in range(2):
            self.assertEqual(await limits.take("k", limit), 0)
        await limits.give_back([("k", limit)])
        self.assertEqual(await limits.take("k", limit), 0)
        self.assertGreater(await limits.take("k", limit), 0)
        for _ in range(5):
            await limits.give_back([("k", limit)])
        for _ in range(2):
            self.assertEqual(await limits.take("k", limit), 0)
        self.assertGreater(await limits.take("k", limit), 0)
        await limits.forget("k")
        self.assertEqual(await limits.take("k", limit), 0)
        await limits.give_back([("never-taken", limit)])
        self.assertEqual(await limits.take("never-taken", limit), 0)

    async def test_known_addresses(self):
        """An address that logged in is known to that account for KNOWN_FOR, and only the
        KNOWN_PER_ACCOUNT most recent ones are kept."""
        limits = await self._limits()
        await limits.remember("kitten", "192.0.2.1")
        self.assertTrue(await limits.knows("kitten", "192.0.2.1"))
        self.assertFalse(await limits.knows("bear", "192.0.2.1"))
        self.clock.advance(KNOWN_FOR - 1)
        self.assertTrue(await limits.knows("kitten", "192.0.2.1"))
        await limits.remember("kitten", "192.0.2.9")
        self.clock.advance(1)
        self.assertFalse(await limits.knows("kitten", "192.0.2.1"))
        self.assertTrue(await limits.knows("kitten", "192.0.2.9"))
        for i in range(KNOWN_PER_ACCOUNT):
            self.clock.advance(1)
            await limits.remember("kitten", f"198.51.100.{i}")
        self.assertFalse(await limits.knows("kitten", "192.0.2.9"), "pushed out by newer ones")
        self.assertTrue(await limits.knows("kitten", "198.51.100.0"))

    # --------------------------------------------------- the login throttle

    async def _throttle(self):
        return LoginThrottle(RateLimit(6, 60.0), RateLimit(3, 60.0), RateLimit(4, 60.0), await self._limits())

    async def test_attempts_in_flight_count(self):
        """An attempt reserves its failure before the password is checked, so attempts started
        together cannot get past the limit; a success gives the reservation back."""
        throttle = await self._throttle()
        attempts = [await throttle.begin("kitten", "192.0.2.1") for _ in range(3)]
        with self.assertRaises(RateLimited):
            await throttle.begin("kitten", "192.0.2.1")
        await attempts[0].succeeded()
        await throttle.begin("kitten", "192.0.2.1")

    async def test_an_abandoned_attempt_spends_nothing(self):
        throttle = await self._throttle()
        for _ in range(5):
            await (await throttle.begin("kitten", "192.0.2.1")).abandoned()
        await throttle.begin("kitten", "192.0.2.1")

    async def test_retry_after_is_the_longest_wait(self):
        throttle = await self._throttle()
        for _ in range(3):
            (await throttle.begin("kitten", "192.0.2.1")).failed()
        with self.assertRaises(RateLimited) as caught:
            await throttle.begin("kitten", "192.0.2.1")
        self.assertEqual(caught.exception.retry_after, 20)

    async def test_strangers_wait_when_the_account_is_under_attack(self):
        """The account's own bucket counts failures from addresses that never logged in to it; when it
        is spent they wait, but not a known address (for KNOWN_FOR) or a visitor with a session."""
        throttle = await self._throttle()
        await (await throttle.begin("kitten", "192.0.2.1")).succeeded()
        for i in range(4):
            (await throttle.begin("kitten", f"203.0.113.{i}")).failed()
        with self.assertRaises(RateLimited):
            await throttle.begin("kitten", "203.0.113.9")
        (await throttle.begin("kitten", "192.0.2.1")).failed()
        (await throttle.begin("kitten", "203.0.113.9", session=True)).failed()
        (await throttle.begin("bear", "203.0.113.9")).failed()
        self.clock.advance(KNOWN_FOR)
        for i in range(4):
            (await throttle.begin("kitten", f"198.51.100.{i}")).failed()
        with self.assertRaises(RateLimited):
            await throttle.begin("kitten", "192.0.2.1")

    async def test_setup_and_register_spend_the_address_bucket(self):
        throttle = await self._throttle()
        for _ in range(6):
            await throttle.check_address("2001:db8:1:2::1")
        with self.assertRaises(RateLimited) as caught:
            await throttle.check_address("2001:db8:1:2::ffff")  # the same /64
        self.assertEqual(caught.exception.retry_after, 10)
        with self.assertRaises(RateLimited):
            await throttle.begin("kitten", "2001:db8:1:2::7")
        await throttle.check_address("2001:db8:1:3::1")

    # ------------------------------------------------------ gather errors

    async def test_error_cache_keeps_an_error_for_its_lifetime(self):
        """The error's kind, status and message come back until the lifetime ends."""
        clock = Clock()
        clock.advance(T)
        cache = await self.make_error_cache(clock)
        self.assertIsNone(await cache.lookup("https://example.com/a.png"))
        await cache.remember("https://example.com/a.png", errors.TooLarge("the source's file is too large"))
        found = await cache.lookup("https://example.com/a.png")
        self.assertEqual((type(found), found.status, found.message),
                         (errors.TooLarge, 413, "the source's file is too large"))
        self.assertIsNone(await cache.lookup("https://example.com/b.png"))
        await cache.remember("https://example.com/a.png", errors.GatherFailed("connection refused"))
        self.assertEqual((await cache.lookup("https://example.com/a.png")).status, 502)
        clock.advance(cache.lifetime - 1)
        self.assertIsNotNone(await cache.lookup("https://example.com/a.png"))
        clock.advance(1)
        self.assertIsNone(await cache.lookup("https://example.com/a.png"))
