"""The pools' threads run below the reactor's CPU priority (imgshare.threads)."""

from __future__ import annotations

import os
import sys
import threading

from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.trial import unittest

from imgshare import service
from imgshare.threads import BackgroundThreadPool, PoolRunner, ThreadPoolService, lower_priority

LINUX = sys.platform.startswith("linux")


def own_priority() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id() if LINUX else 0)


class BackgroundThreadPoolTests(unittest.TestCase):
    def pool(self, niceness: int) -> PoolRunner:
        pool = BackgroundThreadPool(minthreads=0, maxthreads=2, name="test-background", niceness=niceness)
        pool.start()
        self.addCleanup(pool.stop)
        return PoolRunner(reactor, pool)

    async def test_threads_run_below_the_reactor(self) -> None:
        here = own_priority()
        there = await self.pool(5).run(own_priority)
        self.assertEqual(there, min(19, here + 5) if LINUX else here)
        self.assertEqual(own_priority(), here, "the calling thread keeps its priority")

    async def test_niceness_zero_leaves_the_priority(self) -> None:
        self.assertEqual(await self.pool(0).run(own_priority), own_priority())

    async def test_every_thread_of_the_pool_is_lowered(self) -> None:
        runner = self.pool(3)
        barrier = threading.Barrier(2, timeout=10)

        def both() -> tuple[int, int]:
            barrier.wait()  # two threads at once: the pool had to start a second one
            return threading.get_native_id(), own_priority()

        done = await gatherResults([runner.run(both), runner.run(both)])
        self.assertEqual(len({tid for tid, _ in done}), 2)
        expected = min(19, own_priority() + 3) if LINUX else own_priority()
        self.assertEqual([p for _, p in done], [expected, expected])

    def test_lower_priority_refuses_nothing_to_do(self) -> None:
        self.assertFalse(lower_priority(0))
        self.assertFalse(lower_priority(-5), "never raises a priority")


class ServicePoolsTests(unittest.TestCase):
    def test_the_s3_pool_runs_below_the_reactor(self) -> None:
        from imgshare.plugins.s3 import S3Storage

        storage = S3Storage("s3://bucket?endpoint_url=http://127.0.0.1:9&region=us-east-1", reactor)
        self.assertIsInstance(storage.pool, BackgroundThreadPool)
        self.assertEqual(storage.pool.niceness, service.IO_NICENESS)

    def test_image_work_lowest_io_below_the_reactor(self) -> None:
        self.assertGreater(service.IMAGE_NICENESS, service.IO_NICENESS)
        self.assertGreater(service.IO_NICENESS, 0)

    def test_the_service_pool_carries_its_niceness(self) -> None:
        pool = ThreadPoolService(reactor, "test-niced", 1, 7)
        self.assertEqual(pool.pool.niceness, 7)
        self.assertEqual(pool.pool.max, 1)
