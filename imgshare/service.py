"""The running server: backends, pools, expiry and listeners, started in order.

The listeners open only after the database is connected and migrated and the
storage is ready, so no request ever meets a half-started server.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger

from imgshare import backends, compose, memory
from imgshare.config import Config
from imgshare.threads import ThreadPoolService
from imgshare.web.request import ImgshareSite, quiet_endpoint

log = Logger()

IO_THREADS = 8
#: The open-file soft limit is raised to the hard limit at start-up, but not beyond this.
OPEN_FILES_CAP = 65536


def configure_process(config: Config) -> None:
    """The process-wide settings, made once at start-up (when the service is built)."""
    # IMGSHARE checks pixel counts itself (before decoding); Pillow's own
    # process-wide guard must not refuse what --max-pixels allows.
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = max(config.max_pixels, Image.MAX_IMAGE_PIXELS or 0)
    # Large image buffers go back to the system when freed (imgshare.memory).
    memory.tune()


class ImgshareService(MultiService):
    """One IMGSHARE process. ``ready`` fires once it listens; ``ports`` are its listeners."""

    def __init__(self, config: Config, reactor: Any):
        super().__init__()
        configure_process(config)
        self.config = config
        self.reactor = reactor
        self.io_pool = ThreadPoolService(reactor, "imgshare-io", IO_THREADS)
        self.io_pool.setServiceParent(self)
        self.image_pool = ThreadPoolService(reactor, "imgshare-image", config.resize_threads)
        self.image_pool.setServiceParent(self)
        io = self.io_pool.runner
        self.database = backends.open_database(config.db, reactor, io)
        self.storage = backends.open_storage(config.storage, reactor, io)
        self.components = compose.build(config, reactor, self.database, self.storage, io, self.image_pool.runner)
        self.library = self.components.library
        self.site = self.components.site
        self.expiry = self.components.expiry
        self.derivations = self.components.derivations
        self.ports: list[Any] = []
        self.ready: Deferred[None] = Deferred()

    def startService(self) -> None:
        raise_open_file_limit()
        super().startService()
        d = Deferred.fromCoroutine(self._start())
        d.addCallbacks(self.ready.callback, self._failed_to_start)

    def _failed_to_start(self, failure: Any) -> None:
        log.failure("IMGSHARE could not start", failure)
        self.ready.errback(failure)
        if self.reactor.running:
            self.reactor.stop()

    async def _start(self) -> None:
        os.makedirs(self.config.spool_dir, exist_ok=True)
        await self.database.start()
        await self.storage.start()
        await self._announce_setup()
        self.expiry.startService()
        await self.derivations.release_dead_claimants()
        self.derivations.startService()
        for description in self.config.listen:
            port = await quiet_endpoint(serverFromString(self.reactor, description)).listen(self.site)
            self.ports.append(port)
            log.info("IMGSHARE listening on {address}; public URL {url}",
                     address=port.getHost(), url=self.config.public_url)
        if self.config.metrics_listen is not None:
            site = ImgshareSite(self.components.health.metrics_only(), max_body=0, reactor=self.reactor)
            port = await quiet_endpoint(serverFromString(self.reactor, self.config.metrics_listen)).listen(site)
            self.ports.append(port)
            log.info("IMGSHARE metrics on {address} (GET /metrics)", address=port.getHost())

    async def _announce_setup(self) -> None:
        """With no accounts yet, log a one-time link that creates the first (admin) account."""
        code = await self.components.accounts.setup_code_if_needed()
        if code is not None:
            log.warn("No accounts yet. Create the first (admin) account at {url}/setup?code={code} "
                     "(or run: imgshare user add NAME)", url=self.config.public_url, code=code)

    def stopService(self) -> Deferred[None]:
        async def stop() -> None:
            await DeferredList([Deferred.fromCoroutine(_stop_port(p)) for p in self.ports])
            self.ports = []
            if self.expiry.running:
                await self.expiry.stopService()
            if self.derivations.running:
                await self.derivations.stopService()
            await self.library.drain()
            await self.database.stop()
            await self.storage.stop()
            self.components.database.outage.close()
            self.components.storage.outage.close()
            await super(ImgshareService, self).stopService()

        return Deferred.fromCoroutine(stop())


async def _stop_port(port: Any) -> None:
    await port.stopListening()


def raise_open_file_limit() -> None:
    """Raise the soft RLIMIT_NOFILE to the hard limit (at most OPEN_FILES_CAP) and log it.

    Every connection holds a descriptor, and a large body a temporary file too: the
    common soft default of 1024 runs out long before the machine does.
    """
    try:
        import resource
    except ImportError:  # not a Unix
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = OPEN_FILES_CAP if hard == resource.RLIM_INFINITY else min(hard, OPEN_FILES_CAP)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as e:
        log.warn("Open-file limit left at {soft}: could not raise it to {target} ({error})",
                 soft=soft, target=target, error=e)
        return
    log.info("Open-file limit raised from {soft} to {target}", soft=soft, target=target)
