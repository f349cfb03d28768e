"""imgshare.memory: the allocator is tuned at start-up (the trim once derivations pause: test_jobs)."""

from __future__ import annotations

import ctypes.util
import os

from twisted.trial import unittest

from imgshare import memory


class MemoryTests(unittest.TestCase):
    def test_tune_on_glibc(self):
        """On glibc (this project's platform) the allocator settings are accepted."""
        if ctypes.util.find_library("c") is None:  # pragma: no cover - not Linux/glibc
            self.assertFalse(memory.tune())
            return
        self.assertTrue(memory.tune())
        memory.trim()  # returns nothing, raises nothing

    def test_service_tunes_the_allocator(self):
        """Building the service tunes the allocator (the one process-wide place)."""
        calls = []
        self.patch(memory, "tune", lambda: calls.append(1) or True)
        from twisted.internet import reactor

        from imgshare.service import ImgshareService
        from imgshare.testing import test_config

        data = self.mktemp()
        ImgshareService(test_config(data), reactor)
        self.assertEqual(calls, [1])

    def test_freeze_startup_objects(self):
        """The objects alive at the freeze are out of the collector's reach."""
        import gc

        self.addCleanup(gc.unfreeze)
        self.assertGreater(memory.freeze_startup_objects(), 1000)
        self.assertEqual(gc.get_count()[2], 0)

    async def test_service_freezes_once_it_listens(self):
        """The started service freezes what its start-up made, once it listens."""
        import gc

        from twisted.internet import reactor

        from imgshare.service import ImgshareService
        from imgshare.testing import test_config

        frozen = []
        self.patch(memory, "freeze_startup_objects", lambda: frozen.append(1) or 0)
        self.addCleanup(gc.unfreeze)
        service = ImgshareService(test_config(os.path.abspath(self.mktemp()),
                                              listen=("tcp:0:interface=127.0.0.1",)), reactor)
        service.startService()
        await service.ready
        self.assertEqual(len(service.ports), 1)
        self.assertEqual(frozen, [1])
        await service.stopService()
