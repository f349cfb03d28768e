"""The running server: backends, pools, expiry and listeners, started in order.

The listeners open only after the database is connected and migrated and the
storage is ready, so no request ever meets a half-started server.
"""

from __future__ import annotations

import atexit
import errno
import os
import sys
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.python.failure import Failure

from imgshare import backends, compose, memory
from imgshare.cache import with_cache
from imgshare.config import Config
from imgshare.threads import IMAGE_NICENESS, IO_NICENESS, ThreadPoolService
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

    def __init__(self, config: Config, reactor: Any, launch: Any = None):
        """``launch`` is twistd's own options (where a daemonized start's status pipe is)."""
        super().__init__()
        self._launch = launch
        self._status_pipe: int | None = None
        configure_process(config)
        self.config = config
        self.reactor = reactor
        self.io_pool = ThreadPoolService(reactor, "imgshare-io", IO_THREADS, IO_NICENESS)
        self.io_pool.setServiceParent(self)
        self.image_pool = ThreadPoolService(reactor, "imgshare-image", config.resize_threads,
                                            IMAGE_NICENESS)
        self.image_pool.setServiceParent(self)
        io = self.io_pool.runner
        self.database = backends.open_database(config.db, reactor, io)
        self.storage = with_cache(backends.open_storage(config.storage, reactor, io), config.cache_dir,
                                  config.cache_size, io)
        self.components = compose.build(config, reactor, self.database, self.storage, io, self.image_pool.runner)
        self.library = self.components.library
        self.site = self.components.site
        self.expiry = self.components.expiry
        self.derivations = self.components.derivations
        self.ports: list[Any] = []
        self.ready: Deferred[None] = Deferred()

    def startService(self) -> None:
        raise_open_file_limit()
        # Daemonized, twistd reports "started" to the waiting shell as soon as this
        # returns; the start-up runs on, so the report is made here once it is known.
        self._status_pipe = self._launch.pop("statusPipe", None) if self._launch is not None else None
        super().startService()
        d = Deferred.fromCoroutine(self._start())
        d.addCallbacks(self._started, self._failed_to_start)

    def _started(self, _: Any) -> None:
        self._report(b"0")
        self.ready.callback(None)

    def _failed_to_start(self, failure: Failure) -> None:
        """One line saying what failed and what to do, then the process ends with status 1."""
        error = failure.value
        if isinstance(error, StartupFailed):
            error.reason = " ".join(error.reason.split())  # libpq's messages span lines
            log.error("IMGSHARE could not start: {reason}", reason=error.reason)
        else:  # not a known cause: a bug, with its traceback
            log.failure("IMGSHARE could not start", failure)
        reason = error.reason if isinstance(error, StartupFailed) else failure.getErrorMessage()
        self._report(b"1 " + reason.encode("utf-8", "replace")[:98])
        if self._launch is not None and self._launch.get("nodaemon") and self._launch.get("logfile") not in (None, "-"):
            print(f"IMGSHARE could not start: {reason}", file=sys.__stderr__)  # the log is in a file
        self.ready.errback(failure)
        if self._launch is not None:  # under twistd (not a test's own reactor)
            exit_with_status(1)
        if self.reactor.running:
            self.reactor.stop()
        else:
            self.reactor.callWhenRunning(self.reactor.stop)

    def _report(self, status: bytes) -> None:
        """Tell the shell waiting for a daemonized start: ``0``, or ``1 <reason>``."""
        pipe, self._status_pipe = self._status_pipe, None
        if pipe is not None:
            try:
                os.write(pipe, status)
            finally:
                os.close(pipe)

    async def _start(self) -> None:
        config = self.config
        try:
            os.makedirs(config.spool_dir, exist_ok=True)
        except OSError as e:
            raise StartupFailed(f"cannot create the data folder {config.data_dir} ({e.strerror}): "
                                "give --data-dir a folder this user may write") from e
        if self.site.access_log is not None:
            try:
                self.site.access_log.open()
            except OSError as e:
                raise StartupFailed(f"cannot open the access log {config.access_log} ({e.strerror}): "
                                    "give --access-log a file this user may write") from e
        try:
            await self.database.start()
        except Exception as e:
            raise StartupFailed(f"{_message(e)}: check --db and that the database runs") from e
        try:
            await self.storage.start()
        except Exception as e:
            raise StartupFailed(f"{_message(e)}: check --storage (bucket, endpoint, credentials)") from e
        await self.components.presigned.start()  # PUT body limits are read with its secret
        if config.public_url_warning:
            log.warn("{warning}", warning=config.public_url_warning)
        await self._announce_setup()
        self.expiry.startService()
        await self.derivations.release_dead_claimants()
        self.derivations.startService()
        for description in config.listen:
            try:
                port = await quiet_endpoint(serverFromString(self.reactor, description)).listen(self.site)
            except CannotListenError as e:
                raise StartupFailed(f"cannot listen on {description} ({_message(e.socketError)}): "
                                    "stop what uses it or choose another --listen") from e
            self.ports.append(port)
            log.info("IMGSHARE listening on {address}; public URL {url}",
                     address=port.getHost(), url=config.public_url)
        if config.metrics_listen is not None:
            site = ImgshareSite(self.components.health.metrics_only(), max_body=0, reactor=self.reactor)
            try:
                port = await quiet_endpoint(serverFromString(self.reactor, config.metrics_listen)).listen(site)
            except CannotListenError as e:
                raise StartupFailed(f"cannot listen on {config.metrics_listen} for the metrics "
                                    f"({_message(e.socketError)}): stop what uses it or choose another --metrics") from e
            self.ports.append(port)
            log.info("IMGSHARE metrics on {address} (GET /metrics)", address=port.getHost())
        # What start-up made lives as long as the process: no full collection scans it again.
        memory.freeze_startup_objects()

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


class StartupFailed(Exception):
    """A start-up step that cannot complete, with what to do about it (no traceback)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _message(error: BaseException | None) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower() if error.errno == errno.EADDRINUSE else error.strerror
    return str(error) or type(error).__name__


_exit_status: list[int] = []


def exit_with_status(status: int) -> None:
    """End the process with ``status`` once twistd has cleaned up and returned (twistd
    itself always exits 0): the last thing before the interpreter exits."""
    if not _exit_status:
        atexit.register(_exit_now)
    _exit_status[:] = [status]


def _exit_now() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(_exit_status[0])


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
