"""The derived-file worker: jobs run from the queue, files appear, failures are handled."""

from __future__ import annotations

import io
import json
import os
import socket
import threading

from PIL import Image
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.python import threadable
from twisted.trial import unittest

from imgshare import db, derive, jobs, memory
from imgshare.domain import sniff
from imgshare.storage import StorageUnavailable
from imgshare.testing import image_bytes, make_fixture, multipart
from imgshare.threads import InlineRunner, ThreadPoolService

API = "http://img.example/api/v1/img_upload.php"


def photo(size=(1600, 1200)) -> bytes:
    out = io.BytesIO()
    Image.linear_gradient("L").resize(size).convert("RGB").save(out, "JPEG", quality=90)
    return out.getvalue()


class JobTestCase(unittest.TestCase):
    async def setUp(self):
        self.f = await make_fixture(self)
        await self.f.account("kitten")
        self.token = await self.f.token("kitten")
        self.client = self.f.client()

    async def upload(self, data=None, filename="p.jpg", **fields):
        body, headers = multipart({"token": self.token, **fields}, {"file": (filename, data or photo())})
        response, out = await self.client.request("POST", API, data=body, headers=headers)
        self.assertEqual(response.code, 200, out)
        return json.loads(out)

    async def get(self, url):
        return await self.client.request("GET", url)

    def stored(self, record, variant):
        return self.f.storage.objects.get(f"kitten/{variant}/{record['file'].rsplit('.', 1)[0]}.jpg")

    async def claim(self, claimant="w"):
        """Claim the next job as ``claimant`` would, with a lease of LEASE_SECONDS."""
        now = self.f.clock.seconds()
        return await self.f.database.run(db.claim_job, claimant, now, now + jobs.LEASE_SECONDS)


class DerivationTests(JobTestCase):
    async def test_job_makes_all_four(self):
        """One job stores XGA, VGA, QVGA and thumbnail JPEGs and they are served like originals."""
        record = await self.upload()
        self.assertTrue(await self.f.derivations.run_one())
        self.assertFalse(await self.f.derivations.run_one(), "the queue is empty afterwards")
        for variant, box in [("xga", (1024, 768)), ("vga", (640, 480)), ("qvga", (320, 240)), ("thumb", (160, 160))]:
            data = self.stored(record, variant)
            self.assertIsNotNone(data, variant)
            self.assertEqual(Image.open(io.BytesIO(data)).size, box if variant != "thumb" else (160, 120))
        for variant in ("xga", "vga", "qvga"):
            response, body = await self.get(record["urls"][variant])
            self.assertEqual(response.code, 200)
            self.assertEqual(body, self.stored(record, variant))
            self.assertEqual(response.headers.getRawHeaders("content-type"), ["image/jpeg"])
            self.assertEqual(response.headers.getRawHeaders("content-security-policy"), ["default-src 'none'; sandbox"])
        self.assertFalse(os.path.exists(self.f.library.spool_path(1)), "the spool copy is gone once done")

    async def test_spool_copy_used_then_storage(self):
        """The worker reads the spool copy kept since upload; without it, it fetches the original."""
        record = await self.upload()
        self.assertTrue(os.path.exists(self.f.library.spool_path(1)))
        await self.f.derivations.run_one()
        self.assertNotIn(("fetch", f"kitten/{record['file']}"), self.f.storage.calls)
        record = await self.upload()
        os.unlink(self.f.library.spool_path(2))
        await self.f.derivations.run_one()
        self.assertIn(("fetch", f"kitten/{record['file']}"), self.f.storage.calls)
        self.assertIsNotNone(self.stored(record, "xga"))

    async def test_memory_given_back_once_derivations_pause(self):
        """The memory derivations took is kept while they follow one another and given
        back (memory.trim) once none has run for TRIM_AFTER seconds, a broken image's too."""
        calls = []
        self.patch(memory, "trim", lambda: calls.append(1))
        for _ in range(3):
            await self.upload(photo((64, 48)))
        self.assertTrue(await self.f.derivations.run_one())
        self.f.clock.advance(jobs.TRIM_AFTER / 2)
        self.assertTrue(await self.f.derivations.run_one())  # the next one in time: no trim between
        self.f.clock.advance(jobs.TRIM_AFTER / 2)
        self.assertEqual(calls, [])
        self.f.clock.advance(jobs.TRIM_AFTER / 2)
        self.assertEqual(calls, [1])
        self.f.clock.advance(jobs.TRIM_AFTER * 10)
        self.assertEqual(calls, [1], "once per pause")

        def broken(*args):
            raise derive.BrokenImage("not decodable")

        self.patch(jobs, "derive_and_hash", broken)
        self.assertTrue(await self.f.derivations.run_one())
        self.f.clock.advance(jobs.TRIM_AFTER)
        self.assertEqual(calls, [1, 1])

    async def test_broken_image_deleted(self):
        """An image whose header passes but whose data cannot be decoded is deleted entirely."""
        data = photo()
        record = await self.upload(data[: len(data) // 3])
        self.assertIn(f"kitten/{record['file']}", self.f.storage.objects)
        await self.f.derivations.run_one()
        self.assertEqual(self.f.storage.objects, {})
        self.assertIsNone(await self.f.database.run(db.get_image, "kitten", record["file"]))
        response, _ = await self.get(record["urls"]["original"])
        self.assertEqual(response.code, 404)
        response, _ = await self.get(record["urls"]["xga"])
        self.assertEqual(response.code, 404)
        self.assertFalse(os.path.exists(self.f.library.spool_path(1)))

    async def test_transient_failure_retried(self):
        """Storage down during a job is not "broken": the job is retried later with backoff."""
        record = await self.upload()
        self.f.storage.available = False
        self.assertTrue(await self.f.derivations.run_one())
        self.f.storage.available = True
        self.assertIn(f"kitten/{record['file']}", self.f.storage.objects)
        self.assertFalse(await self.f.derivations.run_one(), "not due before the backoff")
        self.f.clock.advance(jobs.RETRY_BACKOFF[0])
        self.assertTrue(await self.f.derivations.run_one())
        self.assertIsNotNone(self.stored(record, "vga"))

    async def test_deleted_while_deriving(self):
        """An image deleted while its job runs leaves no derived objects behind."""
        record = await self.upload()
        job = await self.claim()
        await self.f.library.delete("kitten", record["file"])
        self.f.clock.advance(0)
        await self.f.library.drain()
        self.assertIn(f"kitten/{record['file']}", self.f.storage.objects, "no purge while the job runs")
        await self.f.derivations.process(job)
        self.f.clock.advance(0)
        await self.f.library.drain()
        self.assertEqual(self.f.storage.objects, {})

    async def test_every_upload_type(self):
        """PNG with alpha, BMP and WEBP originals all get JPEG derived files."""
        for fmt in ("PNG", "BMP", "WEBP"):
            data = image_bytes(fmt, (900, 300), (10, 200, 30, 128) if fmt == "PNG" else (10, 200, 30))
            record = await self.upload(data, filename="x")
            await self.f.derivations.run_one()
            self.assertEqual(Image.open(io.BytesIO(self.stored(record, "xga"))).format, "JPEG")


class RestartTests(JobTestCase):
    async def test_job_of_dead_process_is_redone(self):
        """A job left running by a process that died (kill -9) is released at start-up and redone."""
        record = await self.upload()
        dead = f"{socket.gethostname()}:999999:dead"
        await self.claim(dead)
        self.assertFalse(await self.f.derivations.run_one(), "a running job is not claimed again early")
        self.assertEqual(await self.f.derivations.release_dead_claimants(), 1)
        self.assertTrue(await self.f.derivations.run_one())
        self.assertIsNotNone(self.stored(record, "qvga"))

    async def test_live_and_foreign_workers_kept(self):
        """Jobs of a live local process or another host are not released (their leases run out instead)."""
        self.assertFalse(jobs.is_dead_local_claimant(f"{socket.gethostname()}:{os.getppid()}:x"))
        self.assertFalse(jobs.is_dead_local_claimant("other-host:1:x"))
        self.assertFalse(jobs.is_dead_local_claimant("garbage"))
        self.assertTrue(jobs.is_dead_local_claimant(f"{socket.gethostname()}:{os.getpid()}:x"))

    async def test_silent_job_reclaimed_after_its_lease(self):
        """A job whose worker (on another host) went silent is claimed again once its lease ends."""
        record = await self.upload()
        await self.claim("elsewhere:1:x")
        self.f.clock.advance(jobs.LEASE_SECONDS - 1)
        self.assertFalse(await self.f.derivations.run_one())
        self.f.clock.advance(1)
        self.assertTrue(await self.f.derivations.run_one())
        self.assertIsNotNone(self.stored(record, "xga"))

    async def test_job_of_reused_pid_free_after_its_lease(self):
        """A job held by a dead process whose pid now belongs to a live one (or a zombie)
        is not released at start-up, but is free as soon as its lease ends (issue 9, 15)."""
        record = await self.upload()
        await self.claim(f"{socket.gethostname()}:{os.getppid()}:gone")
        self.assertEqual(await self.f.derivations.release_dead_claimants(), 0)
        self.f.clock.advance(jobs.LEASE_SECONDS - 1)
        self.assertFalse(await self.f.derivations.run_one())
        self.f.clock.advance(1)
        self.assertTrue(await self.f.derivations.run_one())
        self.assertIsNotNone(self.stored(record, "xga"))


class Gate:
    """An image worker whose calls wait until the test lets them go: a derivation
    that takes as long as the test wants."""

    def __init__(self):
        self.waiting = []

    def run(self, f, *args, **kwargs):
        d = Deferred()
        self.waiting.append((d, f, args, kwargs))
        return d

    def release(self, error=None):
        d, f, args, kwargs = self.waiting.pop(0)
        if error is None:
            d.callback(f(*args, **kwargs))
        else:
            d.errback(error)


def happened(condition, what):
    """``condition()`` holds already: the database is synchronous, so whatever the last
    step (an ``advance`` of the clock, a call) set off is done when it returns."""
    if not condition():
        raise AssertionError(f"never happened: {what}")


class LeaseTests(JobTestCase):
    """A running job is leased: renewed while its worker works, free once renewals stop."""

    def derivations(self, name, image_runner=None):
        return jobs.Derivations(self.f.library, self.f.database, image_runner or InlineRunner(), 1, claimant=f"{name}:1:x")

    async def job_row(self):
        rows = await self.f.database.run(_job_rows)
        return rows[0] if rows else None

    def puts(self):
        return [key for op, key in self.f.storage.calls if op == "put"]

    async def test_renewed_lease_keeps_a_long_job(self):
        """A derivation that takes minutes keeps its job: the worker renews the lease every
        RENEW_SECONDS and no other worker claims the job, even past the old 120 s limit."""
        record = await self.upload()
        gate = Gate()
        a, b = self.derivations("a", gate), self.derivations("b")
        running = Deferred.fromCoroutine(a.run_one())
        happened(lambda: gate.waiting, "a derives")
        lease = a.leases[1]
        for step in range(1, 16):
            self.f.clock.advance(jobs.RENEW_SECONDS)
            happened(lambda: lease.renewals == step, f"renewal {step}")  # noqa: B023
            self.assertEqual(lease.until, self.f.clock.seconds() + jobs.LEASE_SECONDS)
            self.assertFalse(await b.run_one(), f"claimed twice after {step * jobs.RENEW_SECONDS:.0f} s")
        self.assertEqual((await self.job_row())[:2], ("a:1:x", 1))
        gate.release()
        self.assertTrue(await running)
        self.assertIsNotNone(self.stored(record, "xga"))
        self.assertIsNone(await self.job_row())
        self.assertEqual(a.leases, {}, "renewals stop with the job")

    async def lose_lease(self):
        """Worker a claims the job and derives; its renewals fail (it cannot reach the
        database) until its lease runs out and b claims the job and derives too; then a's
        next renewal finds the job is b's.  Returns (a's run_one, a's gate, b, b's run_one, b's gate)."""
        await self.upload()
        gate_a, gate_b = Gate(), Gate()
        a, b = self.derivations("a", gate_a), self.derivations("b", gate_b)
        running_a = Deferred.fromCoroutine(a.run_one())
        happened(lambda: gate_a.waiting, "a derives")
        lease = a.leases[1]

        async def unreachable(tx, job, lease_until):
            raise db.DatabaseUnavailable("unreachable (test)")

        self.patch(db, "renew_lease", unreachable)
        for step in range(1, 4):
            self.f.clock.advance(jobs.RENEW_SECONDS)
            happened(lambda: lease.failures == step, f"failed renewal {step}")  # noqa: B023
            if step < 3:
                self.assertFalse(await b.run_one(), "a's lease still runs")
        self.assertEqual(lease.renewals, 0)
        running_b = Deferred.fromCoroutine(b.run_one())  # a's lease ended at +30 s
        happened(lambda: gate_b.waiting, "b derives once a's lease ran out")
        self.assertEqual((await self.job_row())[:2], ("b:1:x", 2))
        self.patch(db, "renew_lease", _REAL_RENEW)
        self.f.clock.advance(jobs.RENEW_SECONDS)
        happened(lambda: lease.lost, "a notices it lost the job")
        happened(lambda: b.leases[1].renewals == 1, "b renews")
        return running_a, gate_a, b, running_b, gate_b

    async def test_worker_that_lost_its_lease_drops_its_work(self):
        """A worker whose lease ran out while another claimed the job notices at its next
        renewal; when its derivation returns it stores and records nothing, and the new
        holder's claim stands until it finishes."""
        running_a, gate_a, b, running_b, gate_b = await self.lose_lease()
        before = self.puts()
        gate_a.release()
        self.assertTrue(await running_a)
        self.assertEqual(self.puts(), before, "a stored nothing")
        self.assertEqual((await self.job_row())[:3], ("b:1:x", 2, "running"))
        self.assertFalse(await self.derivations("c").run_one(), "b still holds the job")
        gate_b.release()
        self.assertTrue(await running_b)
        self.assertEqual(len(self.puts()), len(before) + 4)
        self.assertIsNone(await self.job_row())

    async def test_worker_that_lost_its_lease_does_not_give_it_back(self):
        """A worker that lost its lease and then fails does not give the job back (which
        would let a third worker claim what b is still working on)."""
        running_a, gate_a, b, running_b, gate_b = await self.lose_lease()
        gate_a.release(StorageUnavailable("down (test)"))
        self.assertTrue(await running_a)
        self.assertEqual((await self.job_row())[:3], ("b:1:x", 2, "running"))
        self.assertFalse(await self.derivations("c").run_one(), "b still holds the job")
        gate_b.release()
        self.assertTrue(await running_b)
        self.assertIsNone(await self.job_row())

    async def test_dead_worker_job_claimed_after_lease(self):
        """A worker that dies mid-derivation stops renewing: another worker claims its job
        once the lease ends, not before."""
        record = await self.upload()
        gate = Gate()
        a, b = self.derivations("a", gate), self.derivations("b")
        Deferred.fromCoroutine(a.run_one())
        happened(lambda: gate.waiting, "a derives")
        self.f.clock.advance(jobs.RENEW_SECONDS)
        happened(lambda: a.leases[1].renewals == 1, "a renews")
        await a.leases[1].stop()  # a's process dies: no more renewals
        self.f.clock.advance(jobs.LEASE_SECONDS - 1)
        self.assertFalse(await b.run_one())
        self.f.clock.advance(1)
        self.assertTrue(await b.run_one())
        self.assertIsNotNone(self.stored(record, "thumb"))


class AttemptCapTests(JobTestCase):
    """A job claimed more than MAX_ATTEMPTS times breaks its image (SPEC §6)."""

    async def test_job_that_crashes_its_process_breaks_the_image(self):
        """Holders that die mid-job (a crash, then a restart or a lease running out) count
        as attempts; past the cap the image is deleted with its files instead of derived."""
        record = await self.upload()
        derived = []
        self.patch(jobs, "derive_and_hash", lambda *args: derived.append(args))
        for attempt in range(jobs.MAX_ATTEMPTS):
            job = await self.claim(f"{socket.gethostname()}:999999:{attempt}")  # a pid that is gone
            self.assertEqual(job.attempts, attempt + 1)
            if attempt % 2:
                self.f.clock.advance(jobs.LEASE_SECONDS)
            else:
                self.assertEqual(await self.f.derivations.release_dead_claimants(), 1)  # a restart
        self.assertTrue(await self.f.derivations.run_one())
        self.assertEqual(derived, [], "not tried again")
        self.assertEqual(self.f.storage.objects, {})
        self.assertIsNone(await self.f.database.run(db.get_image, "kitten", record["file"]))
        self.assertFalse(await self.f.database.run(db.has_job, 1))
        response, _ = await self.get(record["urls"]["original"])
        self.assertEqual(response.code, 404)
        self.assertFalse(os.path.exists(self.f.library.spool_path(1)))

    async def test_job_that_fails_every_time_breaks_the_image(self):
        """A derivation that fails every time (not an outage) is retried with backoff, then
        the image is broken instead of retried every 10 minutes forever."""
        record = await self.upload()

        def fails(*args):
            raise MemoryError("too big (test)")

        self.patch(jobs, "derive_and_hash", fails)
        for _ in range(jobs.MAX_ATTEMPTS):
            self.assertTrue(await self.f.derivations.run_one())
            self.assertIsNotNone(await self.f.database.run(db.get_image, "kitten", record["file"]))
            self.f.clock.advance(max(jobs.RETRY_BACKOFF))
        self.assertTrue(await self.f.derivations.run_one())
        self.assertIsNone(await self.f.database.run(db.get_image, "kitten", record["file"]))
        self.assertEqual(self.f.storage.objects, {})

    async def test_outages_do_not_count(self):
        """Storage down for many retries does not break an image: those attempts end in an
        outage, which says nothing about the file (a plain cap would delete it)."""
        record = await self.upload()
        self.f.storage.available = False
        for _ in range(jobs.MAX_ATTEMPTS + 2):
            self.assertTrue(await self.f.derivations.run_one())
            self.f.clock.advance(max(jobs.RETRY_BACKOFF))
        self.f.storage.available = True
        self.assertTrue(await self.f.derivations.run_one())
        self.assertIsNotNone(self.stored(record, "xga"))
        self.assertIn(f"kitten/{record['file']}", self.f.storage.objects)


class PendingVariantTests(JobTestCase):
    async def test_waits_for_pending_variant(self):
        """A request for a derived file still being made moves its job to the front, waits and serves it."""
        first = await self.upload()
        second = await self.upload()
        request = Deferred.fromCoroutine(self.get(second["urls"]["vga"]))
        self.assertFalse(request.called)
        job = await self.claim()
        self.assertEqual(job.image.name, second["file"], "the waited-for job jumped the queue")
        await self.f.derivations.process(job)
        self.client.flush()  # the answer the route wrote once the file was there
        response, body = await request
        self.assertEqual(response.code, 200)
        self.assertEqual(body, self.stored(second, "vga"))
        self.assertIsNone(self.stored(first, "vga"))

    async def test_gives_up_after_ten_seconds(self):
        """Past 10 seconds of waiting the answer is 503 with Retry-After."""
        record = await self.upload()
        request = Deferred.fromCoroutine(self.get(record["urls"]["xga"]))
        for _ in range(45):
            self.f.clock.advance(0.25)
        self.client.flush()
        response, body = await request
        self.assertEqual(response.code, 503)
        self.assertEqual(response.headers.getRawHeaders("retry-after"), ["5"])
        self.assertEqual(json.loads(body)["status"], "error")

    async def test_variant_paths(self):
        """thumb under /img/, unknown variants, non-.jpg names and unknown stems are 404."""
        record = await self.upload()
        await self.f.derivations.run_one()
        stem = record["file"].rsplit(".", 1)[0]
        for path in [f"thumb/{stem}.jpg", f"huge/{stem}.jpg", f"xga/{stem}.png", f"xga/{stem}", "xga/20260214_zzz.jpg",
                     f"xga/{stem}.JPG"]:
            response, _ = await self.get(f"http://img.example/img/kitten/{path}")
            self.assertEqual(response.code, 404, path)


class ThreadTests(unittest.TestCase):
    async def test_no_image_work_on_the_reactor_thread(self):
        """With real pools, sniffing and deriving run in worker threads, never the reactor's."""
        seen = []
        real_derive, real_inspect = derive.derive_variants, sniff.inspect_file

        def spy(real, label):
            def wrapper(*args, **kwargs):
                seen.append((label, threadable.isInIOThread(), threading.current_thread().name))
                return real(*args, **kwargs)
            return wrapper

        self.patch(derive, "derive_variants", spy(real_derive, "derive"))
        self.patch(sniff, "inspect_file", spy(real_inspect, "inspect"))
        f = await make_fixture(self, threaded=True)  # real pools: answers come from threads
        image_pool = ThreadPoolService(reactor, "test-image", 2)
        io_pool = ThreadPoolService(reactor, "test-io", 2)
        for pool in (image_pool, io_pool):
            pool.startService()
            self.addCleanup(pool.stopService)
        f.library.io = io_pool.runner
        f.api.io = io_pool.runner
        from imgshare.jobs import Derivations

        derivations = Derivations(f.library, f.database, image_pool.runner, 1)
        await f.account("kitten")
        token = await f.token("kitten")
        body, headers = multipart({"token": token}, {"file": ("a.jpg", photo((800, 600)))})
        response, out = await f.client().request("POST", API, data=body, headers=headers)
        self.assertEqual(response.code, 200, out)
        await derivations.run_one()
        self.assertEqual({label for label, _, _ in seen}, {"derive", "inspect"})
        self.assertEqual([(label, on_reactor) for label, on_reactor, _ in seen if on_reactor], [])
        pools = {label: name for label, _, name in seen}
        self.assertIn("test-image", pools["derive"], "image work runs in the image pool")
        self.assertIn("test-io", pools["inspect"])


class ServiceLoopTests(JobTestCase):
    async def test_started_service_derives_on_its_own(self):
        """A started worker wakes on commit and derives without being driven."""
        self.f.derivations.startService()
        self.addCleanup(self.f.derivations.stopService)
        record = await self.upload()  # the commit wakes the worker, which derives at once
        self.assertIsNotNone(self.stored(record, "thumb"))


class RaceTests(JobTestCase):
    async def test_variant_made_between_reads_is_served(self):
        """A derived file finished between the first look and the job check is served, not 404."""
        record = await self.upload()
        image = await self.f.library.served_by_stem("kitten", record["file"].rsplit(".", 1)[0])
        job = await self.claim()
        await self.f.derivations.process(job)  # done, job gone, before prioritize runs
        self.patch(db, "get_variant", _missing_once(db.get_variant))
        found = await self.f.library.derived_file(image, "vga")
        self.assertEqual(found.variant, "vga")

    async def test_purge_waits_for_a_running_job(self):
        """Deleting an image whose job is running: nothing is purged until the worker lets go,
        so a re-upload under the same name keeps its original."""
        record = await self.upload(filename="pic.jpg", keep_name="1")
        job = await self.claim()
        await self.f.library.delete("kitten", record["file"])
        self.f.clock.advance(0)
        await self.f.library.drain()
        again = await self.upload(filename="pic.jpg", keep_name="1")
        self.assertNotEqual(again["file"], record["file"], "the old name is still held")
        await self.f.derivations.process(job)
        self.f.clock.advance(0)
        await self.f.library.drain()
        self.assertIn(f"kitten/{again['file']}", self.f.storage.objects)
        self.assertNotIn(f"kitten/{record['file']}", self.f.storage.objects)


_REAL_RENEW = getattr(db, "renew_lease", None)


async def _job_rows(tx):
    return await tx.execute("SELECT claimed_by, attempts, state FROM jobs")


def _missing_once(real):
    calls = []

    async def get_variant(tx, image_id, variant):
        calls.append(1)
        if len(calls) == 1:
            return None
        return await real(tx, image_id, variant)

    get_variant.single_statement = True
    get_variant.readonly = True
    return get_variant
