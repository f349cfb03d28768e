"""The expiry service on a fake clock: tokens and files go on time, failed removals are retried."""

from __future__ import annotations

import json

from twisted.trial import unittest

from imgshare import db
from imgshare.expiry import ExpiryService, expire_once
from imgshare.testing import T0, image_bytes, make_fixture, multipart

API = "http://img.example/api/v1/img_upload.php"


class ExpiryTests(unittest.TestCase):
    async def setUp(self):
        self.f = await make_fixture(self)
        await self.f.account("kitten")
        self.token = await self.f.token("kitten")
        self.client = self.f.client()
        self.service = ExpiryService(self.f.database, self.f.library, self.f.clock)

    async def upload(self, **fields):
        body, headers = multipart({"token": self.token, **fields}, {"file": ("a.png", image_bytes("PNG"))})
        response, out = await self.client.request("POST", API, data=body, headers=headers)
        self.assertEqual(response.code, 200, out)
        return json.loads(out)

    async def test_tokens_deleted_within_60_seconds(self):
        """An expired token's row is gone within 60 s of its expiry, driven by the clock alone
        (the database is synchronous: each pass is done when ``advance`` returns)."""
        await self.f.token("kitten", expires=T0 + 30)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.assertEqual(len(await self.f.database.run(db.list_tokens, "kitten", T0)), 2)
        for _ in range(9):  # 90 s in 10 s steps
            self.f.clock.advance(10)
        rows = await self.f.database.run(db.delete_expired_tokens, self.f.clock.seconds())
        self.assertEqual(rows, [], "the service had already deleted the expired token")
        self.assertEqual(len(await self.f.database.run(db.list_tokens, "kitten", T0)), 1)

    async def test_expired_files_purged(self):
        """An expired file's objects and row are removed by the next pass after its expiry."""
        record = await self.upload(expire="1h")
        keep = await self.upload()
        self.assertEqual(len(self.f.storage.objects), 2)
        self.assertEqual(await expire_once(self.f.database, self.f.library, T0 + 3599), (0, 0))
        self.assertEqual(await expire_once(self.f.database, self.f.library, T0 + 3600), (0, 1))
        self.assertEqual(list(self.f.storage.objects), [f"kitten/{keep['file']}"])
        self.assertIsNone(await self.f.database.run(db.get_image, "kitten", record["file"]))

    async def test_every_version_removed(self):
        """Purging removes the original and every derived key, thumbnail included."""
        record = await self.upload(expire="1h")
        stem = record["file"][:-4]
        for variant in ("xga", "vga", "qvga", "thumb"):
            self.f.storage.objects[f"kitten/{variant}/{stem}.jpg"] = b"x"
        await expire_once(self.f.database, self.f.library, T0 + 3600)
        self.assertEqual(self.f.storage.objects, {})

    async def test_removal_retried_while_storage_is_down(self):
        """A removal that fails because storage is down is retried with backoff until it succeeds."""
        record = await self.upload(expire="1h")
        self.f.storage.available = False
        self.assertEqual(await expire_once(self.f.database, self.f.library, T0 + 3600), (0, 0))
        image = await self.f.database.run(db.get_image, "kitten", record["file"])
        self.assertIsNotNone(image)
        calls = len(self.f.storage.calls)
        await expire_once(self.f.database, self.f.library, T0 + 3605)  # still inside the first backoff
        self.assertEqual(len(self.f.storage.calls), calls)
        await expire_once(self.f.database, self.f.library, T0 + 3611)  # retried, fails again
        self.assertGreater(len(self.f.storage.calls), calls)
        self.f.storage.available = True
        self.assertEqual(await expire_once(self.f.database, self.f.library, T0 + 3611 + 31), (0, 1))
        self.assertEqual(self.f.storage.objects, {})

    async def test_purges_go_by_batches(self):
        """Many expired images go in batches: each batch is claimed in one transaction and
        its rows dropped in another (not two per image), the objects of several removed at
        once; one image whose removal fails waits for its retry alone, and every quota
        share comes back."""
        from imgshare.expiry import BATCH

        records = [await self.upload(expire="1h") for _ in range(BATCH + 30)]
        keep = await self.upload()
        failing = f"kitten/{records[7]['file']}"
        delete = self.f.storage.delete

        def delete_but_one(key):
            if key == failing:
                from imgshare.storage import StorageUnavailable

                raise StorageUnavailable("this one object cannot be removed now")
            return delete(key)

        self.f.storage.delete = delete_but_one
        database = self.f.database
        runs = []
        run = database.run

        def counting(operation, *args):
            runs.append(operation.__name__)
            return run(operation, *args)

        self.patch(database, "run", counting)
        self.assertEqual(await expire_once(database, self.f.library, T0 + 3600), (0, BATCH + 29))
        self.assertEqual(runs.count("claim_purges"), 2)
        self.assertEqual(runs.count("remove_images"), 2)
        self.assertEqual((runs.count("claim_purge"), runs.count("remove_image")), (0, 0))
        self.assertEqual(sorted(self.f.storage.objects), sorted([failing, f"kitten/{keep['file']}"]))
        usage = await run(db.account_usage, "kitten")
        self.assertEqual(usage.images, 2, "the waiting one still counts until it is purged")
        self.f.storage.delete = delete
        self.assertEqual(await expire_once(database, self.f.library, T0 + 3611), (0, 1))
        self.assertEqual((await run(db.account_usage, "kitten")).images, 1)

    async def test_abandoned_upload_cleaned(self):
        """An upload left half-done by a crash (row reserved, object stored) is removed after an hour."""
        image = await self.f.database.run(
            db.reserve_image, "kitten", "20260214_crash.png", "20260214_crash", "image/png", 3, 1, 1,
            "0" * 64, T0, None,
        )
        self.f.storage.objects["kitten/20260214_crash.png"] = b"abc"
        await expire_once(self.f.database, self.f.library, T0 + 60)
        self.assertIn("kitten/20260214_crash.png", self.f.storage.objects)
        await expire_once(self.f.database, self.f.library, T0 + 3601)
        self.assertEqual(self.f.storage.objects, {})
        self.assertIsNone(await self.f.database.run(db.get_image, "kitten", image.name))

    async def test_service_survives_failures(self):
        """A pass that raises is logged and the loop keeps running."""
        calls = []

        async def broken(tx, now):
            calls.append(now)
            raise RuntimeError("database exploded")

        import imgshare.expiry as expiry

        self.patch(expiry.db, "delete_expired_tokens", broken)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.f.clock.advance(10)
        self.assertEqual(len(calls), 2)
        self.assertTrue(self.service.running)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)


class SpoolSweepTests(unittest.TestCase):
    async def test_leftovers_removed(self):
        """The expiry pass removes worker copies whose job is gone and temp files a crash left,
        and keeps what is still needed."""
        import os

        f = await make_fixture(self)
        await f.account("kitten")
        token = await f.token("kitten")
        body, headers = multipart({"token": token}, {"file": ("a.png", image_bytes("PNG"))})
        response, _ = await f.client().request("POST", API, data=body, headers=headers)
        spool = f.config.spool_dir
        waiting = f.library.spool_path(1)
        orphan = os.path.join(spool, "77.original")
        crash = os.path.join(spool, "upload-abc")
        fresh = os.path.join(spool, "upload-def")
        folder = os.path.join(spool, "derive-xyz")
        os.makedirs(folder)
        for path in (orphan, crash, fresh):
            open(path, "wb").close()
        old = T0 - 7200
        for path in (waiting, orphan, crash, folder):
            os.utime(path, (old, old))
        await expire_once(f.database, f.library, T0)
        self.assertEqual(sorted(os.listdir(spool)), ["1.original", "upload-def"])
