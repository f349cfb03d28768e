"""The derived-file worker: claims jobs from the database and makes XGA, VGA,
QVGA and thumbnail JPEGs in the image thread pool.

Jobs live in the database (written with the image row), so a restart, even
after ``kill -9``, resumes them.  A claim holds a job for ``LEASE_SECONDS``,
and the worker renews that lease every ``RENEW_SECONDS`` while it works, so a
live job is never claimed twice, by any process; once the holder dies (or its
process freezes) the lease runs out and whoever is running claims the job
again.  Jobs held by a dead process on this host are also released at
start-up, without waiting for their leases.  Every claim counts as an attempt,
a crash included; past ``MAX_ATTEMPTS`` (outages of storage or the database
excepted) the image is broken instead of being tried again.  The original is
read from the spool copy kept since upload, or fetched from storage when that
copy is gone (another process took the upload, or the spool was cleared).
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
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from imgshare import db, derive, memory
from imgshare.domain import naming
from imgshare.domain.records import Image, Job, Variant
from imgshare.library import ImageLibrary
from imgshare.metrics import Metrics
from imgshare.spool import remove_if_present
from imgshare.storage import ObjectMissing, StorageUnavailable

log = Logger()

#: How long a claim holds a job without being renewed: a worker that dies (or
#: freezes) lets go of its job this long after its last renewal.
LEASE_SECONDS = 30.0
#: How often a worker renews the lease of the job it works on.
RENEW_SECONDS = 10.0
#: Claims a job may take (those given back in an outage excepted); the next one
#: breaks the image instead: a file that crashes or hangs its worker every time.
MAX_ATTEMPTS = 5
#: Delays before retrying a job after a transient failure (then the last, forever).
RETRY_BACKOFF = (2.0, 10.0, 30.0, 120.0, 600.0)
#: How long an idle worker sleeps before looking for work another process queued.
POLL_SECONDS = 1.0
#: Seconds without a derivation after which the memory derivations took is given back
#: to the system (``memory.trim``).  Kept meanwhile, the next derivation reuses it
#: instead of faulting fresh pages in: in two threads at once those faults and unmaps
#: cost 24-33 ms of system time per 12-megapixel image, against 5-8 ms reused
#: (``imgshare.memory``; bench/derive.py's 2-thread throughput).
TRIM_AFTER = 1.0


def claimant_id() -> str:
    """``host:pid:nonce``, the id a process claims jobs under: lets a restarted process
    recognise jobs its dead predecessor held."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def is_dead_local_claimant(claimant: str, host: str | None = None) -> bool:
    """True if ``claimant`` ran on this host in a process that no longer exists (or is us)."""
    try:
        claimant_host, pid_text, _ = claimant.rsplit(":", 2)
        pid = int(pid_text)
    except ValueError:
        return False
    if claimant_host != (host or socket.gethostname()):
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
    """Derive every variant and hash each file (blocking: run it in the image pool).

    The memory it took is kept for the next derivation; ``Derivations`` gives it
    back to the system once derivations pause (``TRIM_AFTER``).
    """
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
    database: Any  # IDatabase: the job queue
    image_runner: Any  # Runner for image work (its own thread pool)
    threads: int
    poll_seconds: float = POLL_SECONDS
    #: The id this process claims jobs under (``claimant_id``).
    claimant: str = attrs.Factory(claimant_id)
    #: The lease of every job being worked on, by image id.
    leases: dict[int, Lease] = attrs.Factory(dict)
    _loops: list[Deferred[None]] = attrs.Factory(list)
    _sleepers: list[Deferred[None]] = attrs.Factory(list)
    metrics: Metrics = attrs.Factory(Metrics)
    #: True from the first loop that found the database unavailable until one that reached it.
    waiting_for_database: bool = False
    #: Derivations running now, and the trim waiting for them to pause (``TRIM_AFTER``).
    _deriving: int = 0
    _trim: Any = None

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
        self._cancel_trim()
        self.wake()
        loops, self._loops = self._loops, []
        return DeferredList(loops)

    def wake(self, image: Image | None = None) -> None:
        """New work may be waiting: stop sleeping."""
        sleepers, self._sleepers = self._sleepers, []
        for d in sleepers:
            if not d.called:
                d.callback(None)

    async def release_dead_claimants(self) -> int:
        """Make jobs held by dead processes on this host due again at once (called at
        start-up); the jobs of any other dead holder are free when their leases end."""
        dead = [c for c in await self.database.run(db.running_claimants) if is_dead_local_claimant(c)]
        released = await self.database.run(db.release_jobs_of, dead) if dead else 0
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
                self.waiting_for_database = False  # the database's own line says it is back
            except db.DatabaseUnavailable as e:
                if not self.waiting_for_database:  # once per outage, not at every poll of every loop
                    self.waiting_for_database = True
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
        job = await self.database.run(db.claim_job, self.claimant, now, now + LEASE_SECONDS)
        if job is None:
            return False
        await self.process(job)
        return True

    async def process(self, job: Job) -> None:
        """Derive one image's files, store them and record them; retry or break on
        failure.  The job's lease is renewed meanwhile; a worker that finds it lost
        the job to another (its lease ran out) drops its work and touches nothing."""
        image = job.image
        try:
            if not image.is_served(self.clock.seconds()):
                await self.database.run(db.finish_job, job, [])
                return
            if job.attempts - job.outages > MAX_ATTEMPTS:
                await self._break(job, f"its derived files could not be made in {MAX_ATTEMPTS} attempts "
                                       "(each one crashed, hung or failed)")
                return
            lease = self.leases[image.id] = Lease(self.database, self.clock, job)
            lease.start()
            try:
                await self._derive(job, lease)
            finally:
                await lease.stop()
                if self.leases.get(image.id) is lease:
                    del self.leases[image.id]
        except db.LostClaim:
            log.warn("dropped the derived files of {account}/{name}: another worker claimed the job "
                     "after this one's lease ran out", account=image.account, name=image.name)

    async def _derive(self, job: Job, lease: Lease) -> None:
        image = job.image
        library = self.library
        out_dir = await library.io.run(tempfile.mkdtemp, dir=library.config.spool_dir, prefix="derive-")
        try:
            source = await self._original(image, out_dir)
            started = self.clock.seconds()
            derived = await self._in_image_pool(source, out_dir, image.stem)
            self.metrics.derive_seconds.observe(self.clock.seconds() - started)
            await lease.confirm()  # the derivation may have outlived the lease
            for d, _ in derived:
                lease.check()
                await library.storage.put(naming.storage_key(image.account, image.name, d.variant), d.path, "image/jpeg")
            now = self.clock.seconds()
            variants = [Variant(image.id, d.variant, d.size, d.width, d.height, digest, now) for d, digest in derived]
            if await self.database.run(db.finish_job, job, variants):
                log.info("derived {account}/{name} in {seconds:.2f} s", account=image.account,
                         name=image.name, seconds=now - started)
            else:  # deleted while we worked: the purge takes what we stored too
                library.purge_soon(image)
            await library.io.run(remove_if_present, library.spool_path(image.id))
            library.derived_ready(image.id)
        except db.LostClaim:
            raise
        except derive.BrokenImage as e:
            await self._break(job, str(e))
        except ObjectMissing:
            await self._break(job, "its original is missing from storage")
        except Exception as e:
            outage = isinstance(e, StorageUnavailable | db.DatabaseUnavailable)
            delay = RETRY_BACKOFF[min(job.attempts - 1, len(RETRY_BACKOFF) - 1)]
            # An outage is logged once by itself (imgshare.outage), not per job.
            (log.debug if outage else log.warn)("deriving {name} failed ({error!r}); retrying in {delay:.0f} s",
                                                name=image.name, error=e, delay=delay)
            await self.database.run(db.retry_job, job, self.clock.seconds() + delay, outage)
        finally:
            await library.io.run(shutil.rmtree, out_dir, True)

    async def _in_image_pool(self, source: str, out_dir: str, stem: str) -> list[tuple[derive.Derived, str]]:
        """``derive_and_hash`` in the image pool; once no derivation has run for
        ``TRIM_AFTER`` seconds, the memory they took goes back to the system."""
        self._cancel_trim()
        self._deriving += 1
        try:
            return await self.image_runner.run(
                derive_and_hash, source, out_dir, stem, self.library.config.max_pixels)
        finally:
            self._deriving -= 1
            if not self._deriving:
                self._trim = self.clock.callLater(TRIM_AFTER, self._trim_memory)

    def _cancel_trim(self) -> None:
        if self._trim is not None and self._trim.active():
            self._trim.cancel()

    def _trim_memory(self) -> None:
        self.image_runner.run(memory.trim).addErrback(lambda f: log.failure("trimming memory failed", f))

    async def _break(self, job: Job, reason: str) -> None:
        """Drop the job and delete its image, original and derived files (SPEC §6)."""
        await self.database.run(db.finish_job, job, [])
        await self.library.break_image(job.image, reason)

    async def _original(self, image: Image, out_dir: str) -> str:
        """The local spool copy of the original, fetched from storage if it is gone."""
        path = self.library.spool_path(image.id)
        if await self.library.io.run(os.path.exists, path):
            return path
        fetched = os.path.join(out_dir, "original")
        await self.library.storage.fetch(naming.storage_key(image.account, image.name), fetched)
        return fetched


@attrs.define
class Lease:
    """Keeps one claim's lease on its job: renewed every ``RENEW_SECONDS`` on the clock
    while the worker works.  ``lost`` once a renewal found another worker holds the job."""

    database: Any
    clock: Any
    job: Job
    #: When the lease ends, as last recorded.
    until: float = 0.0
    #: How many renewals succeeded, and how many could not reach the database.
    renewals: int = 0
    failures: int = 0
    lost: bool = False
    _stopped: bool = False
    _loop: LoopingCall | None = None
    _done: Deferred[Any] | None = None

    def start(self) -> None:
        self.until = self.clock.seconds() + LEASE_SECONDS
        self._loop = LoopingCall(lambda: Deferred.fromCoroutine(self.renew()))
        self._loop.clock = self.clock
        self._done = self._loop.start(RENEW_SECONDS, now=False)

    async def stop(self) -> None:
        """Stop renewing; waits for a renewal under way."""
        self._stopped = True
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self._done is not None:
            await self._done

    async def renew(self) -> None:
        """Extend the lease; a failure to reach the database is logged and tried again
        at the next period (the lease may run out meanwhile)."""
        if self.lost or self._stopped:
            return
        until = self.clock.seconds() + LEASE_SECONDS
        image = self.job.image
        try:
            held = await self.database.run(db.renew_lease, self.job, until)
        except Exception as e:
            self.failures += 1
            if self.failures == 1:  # once per lease: an outage would repeat it every period
                log.warn("renewing the lease on the job of {account}/{name} failed ({error}); trying again",
                         account=image.account, name=image.name, error=e)
            return
        if self._stopped:
            return
        if held:
            self.until = until
            self.renewals += 1
            return
        self.lost = True
        log.warn("the lease on the job of {account}/{name} ran out and another worker claimed it; "
                 "this worker drops its work when the derivation returns",
                 account=image.account, name=image.name)
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    async def confirm(self) -> None:
        """Renew now; LostClaim if another worker holds the job."""
        await self.renew()
        self.check()

    def check(self) -> None:
        """LostClaim if a renewal found another worker holds the job."""
        if self.lost:
            raise db.LostClaim(self.job.image.id)

