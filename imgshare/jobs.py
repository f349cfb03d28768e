"""The derived-file worker: claims jobs from the database and makes XGA, VGA,
QVGA and thumbnail JPEGs in the image thread pool.

Jobs live in the database (written with the image row), so a restart, even
after ``kill -9``, resumes them: jobs held by a dead process on this host are
released at start-up, and any job silent past ``STUCK_SECONDS`` is claimed
again by whoever is running.  The original is read from the spool copy kept
since upload, or fetched from storage when that copy is gone (another process
took the upload, or the spool was cleared).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import socket
import tempfile
from typing import Any

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger

from imgshare import db, derive
from imgshare.domain import naming
from imgshare.domain.records import Image, Job, Variant
from imgshare.library import ImageLibrary
from imgshare.storage import ObjectMissing

log = Logger()

#: A job whose worker has been silent this long is claimed again.
STUCK_SECONDS = 120.0
#: Delays before retrying a job after a transient failure (then the last, forever).
RETRY_BACKOFF = (2.0, 10.0, 30.0, 120.0, 600.0)
#: How long an idle worker sleeps before looking for work another process queued.
POLL_SECONDS = 1.0


def worker_id() -> str:
    """``host:pid:nonce``: lets a restarted process recognise jobs its dead predecessor held."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def is_dead_local_worker(worker: str, host: str | None = None) -> bool:
    """True if ``worker`` ran on this host in a process that no longer exists (or is us)."""
    try:
        worker_host, pid_text, _ = worker.rsplit(":", 2)
        pid = int(pid_text)
    except ValueError:
        return False
    if worker_host != (host or socket.gethostname()):
        return False
    if pid == os.getpid():
        return True  # a predecessor with our pid: it cannot still be running
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def derive_and_hash(src: str, out_dir: str, stem: str, max_pixels: int) -> list[tuple[derive.Derived, str]]:
    """Derive every variant and hash each file (blocking: run it in the image pool)."""
    results = []
    for d in derive.derive_variants(src, out_dir, stem, max_pixels):
        h = hashlib.sha256()
        with open(d.path, "rb") as f:
            h.update(f.read())
        results.append((d, h.hexdigest()))
    return results


@attrs.define
class Derivations(Service):
    """``threads`` loops that claim and run derived-file jobs until stopped."""

    library: ImageLibrary
    image_worker: Any  # Worker for image work (its own thread pool)
    threads: int
    poll_seconds: float = POLL_SECONDS
    worker: str = attrs.Factory(worker_id)
    _loops: list[Deferred[None]] = attrs.Factory(list)
    _sleepers: list[Deferred[None]] = attrs.Factory(list)

    def __attrs_post_init__(self) -> None:
        self.library.on_committed = self.wake

    @property
    def clock(self) -> Any:
        return self.library.clock

    def startService(self) -> None:
        super().startService()
        self._loops = [Deferred.fromCoroutine(self._loop()) for _ in range(self.threads)]
        for loop in self._loops:
            loop.addErrback(lambda f: log.failure("derived-file worker stopped", f))

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        self.wake()
        loops, self._loops = self._loops, []
        return DeferredList(loops)

    def wake(self, image: Image | None = None) -> None:
        """New work may be waiting: stop sleeping."""
        sleepers, self._sleepers = self._sleepers, []
        for d in sleepers:
            if not d.called:
                d.callback(None)

    async def release_dead_workers(self) -> int:
        """Make jobs held by dead processes on this host due again (called at start-up)."""
        dead = [w for w in await self.library.database.run(db.running_workers) if is_dead_local_worker(w)]
        released = await self.library.database.run(db.release_jobs_of, dead) if dead else 0
        if released:
            log.info("resuming {count} derived-file job(s) interrupted by a restart", count=released)
        return released

    async def _sleep(self) -> None:
        d: Deferred[None] = Deferred()
        self._sleepers.append(d)
        call = self.clock.callLater(self.poll_seconds, lambda: d.called or d.callback(None))
        await d
        if call.active():
            call.cancel()

    async def _loop(self) -> None:
        while self.running:
            try:
                done = await self.run_one()
            except db.DatabaseUnavailable as e:
                log.warn("derived-file worker waiting for the database: {error}", error=e)
                done = False
            except Exception:
                log.failure("derived-file worker error; continuing")
                done = False
            if not done and self.running:
                await self._sleep()

    async def run_one(self) -> bool:
        """Claim and run one job; False when none was due."""
        now = self.clock.seconds()
        job = await self.library.database.run(db.claim_job, self.worker, now, now - STUCK_SECONDS)
        if job is None:
            return False
        await self.process(job)
        return True

    async def process(self, job: Job) -> None:
        """Derive one image's files, store them and record them; retry or break on failure."""
        image = job.image
        if not image.is_served(self.clock.seconds()):
            await self.library.database.run(db.finish_job, image.id, [])
            return
        library = self.library
        out_dir = await library.io.run(tempfile.mkdtemp, dir=library.config.spool_dir, prefix="derive-")
        try:
            source = await self._original(image, out_dir)
            started = self.clock.seconds()
            derived = await self.image_worker.run(
                derive_and_hash, source, out_dir, image.stem, library.config.max_pixels
            )
            for d, _ in derived:
                await library.storage.put(naming.storage_key(image.account, image.name, d.variant), d.path, "image/jpeg")
            now = self.clock.seconds()
            variants = [Variant(image.id, d.variant, d.size, d.width, d.height, digest, now) for d, digest in derived]
            if await library.database.run(db.finish_job, image.id, variants):
                log.info("derived {account}/{name} in {seconds:.2f} s", account=image.account,
                         name=image.name, seconds=now - started)
            else:  # deleted while we worked: the purge takes what we stored too
                library.purge_soon(image)
            await library.io.run(_remove, library.spool_path(image.id))
            library.derived_ready(image.id)
        except derive.BrokenImage as e:
            await library.database.run(db.finish_job, image.id, [])
            await library.break_image(image, str(e))
        except ObjectMissing:
            await library.database.run(db.finish_job, image.id, [])
            await library.break_image(image, "its original is missing from storage")
        except Exception as e:
            delay = RETRY_BACKOFF[min(job.attempts - 1, len(RETRY_BACKOFF) - 1)]
            log.warn("deriving {name} failed ({error!r}); retrying in {delay:.0f} s",
                     name=image.name, error=e, delay=delay)
            await library.database.run(db.retry_job, image.id, self.clock.seconds() + delay)
        finally:
            await library.io.run(shutil.rmtree, out_dir, True)

    async def _original(self, image: Image, out_dir: str) -> str:
        """The local spool copy of the original, fetched from storage if it is gone."""
        path = self.library.spool_path(image.id)
        if await self.library.io.run(os.path.exists, path):
            return path
        fetched = os.path.join(out_dir, "original")
        await self.library.storage.fetch(naming.storage_key(image.account, image.name), fetched)
        return fetched


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
