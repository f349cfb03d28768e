"""The Database contract: every backend passes these tests unchanged.

A backend's test case mixes ``DatabaseContract`` into a trial TestCase and
defines ``async def make_database(self)`` returning a started database that
is cleaned up with the test.
"""

from __future__ import annotations

from twisted.internet.task import Clock

from imgshare import db
from imgshare.config import RateLimit
from imgshare.domain import errors
from imgshare.domain.records import DELETED, LIVE, UPLOADING, Variant
from imgshare.gather import ERROR_CACHE_SECONDS
from imgshare.sharedlimits import DatabaseErrorCache, DatabaseLimits, url_digest
from tests.limits_contract import LimitsContract

T = 1_771_061_400.0


class DatabaseContract(LimitsContract):
    """Also the limits contract, on the database's limits store (``sharedlimits``)."""

    async def make_database(self):
        raise NotImplementedError

    async def make_durable_database(self):
        """A database whose commits wait for the disk unless told otherwise."""
        return await self.make_database()

    async def make_limits(self, clock):
        return DatabaseLimits(await self._db(), clock)

    async def make_error_cache(self, clock):
        return DatabaseErrorCache(await self._db(), clock, ERROR_CACHE_SECONDS)

    async def test_shared_limits_are_pruned(self):
        """The expiry pass drops full buckets, logins older than its limit and expired gather
        errors, and keeps the rest; keys and digests are what is stored, never a URL."""
        clock = Clock()
        clock.advance(T)
        limits = DatabaseLimits(await self._db(), clock)
        cache = DatabaseErrorCache(self.database, clock, 60.0)
        await limits.take("api:token:1", RateLimit(2, 60.0))  # full again at T + 30
        await limits.take("api:token:2", RateLimit(1, 600.0))  # full again at T + 600
        await limits.remember("kitten", "192.0.2.1")
        await cache.remember("https://example.com/a.png?secret=x", errors.GatherFailed("refused"))
        clock.advance(60)
        dropped = await self.q(db.prune_shared_limits, clock.seconds(), T - 1)
        self.assertEqual(dropped, 2)
        self.assertIsNone(await self.q(db.bucket_time, "api:token:1"))
        self.assertEqual(await self.q(db.bucket_time, "api:token:2"), T + 600)
        self.assertTrue(await limits.knows("kitten", "192.0.2.1"))
        self.assertEqual(await self.q(db.prune_shared_limits, clock.seconds(), T + 1), 1)
        self.assertFalse(await limits.knows("kitten", "192.0.2.1"))
        self.assertEqual(len(url_digest("https://example.com/a.png?secret=x")), 64)

    async def test_only_recoverable_writes_commit_without_waiting_for_the_disk(self):
        """The jobs' bookkeeping (db.recoverable) commits without waiting for the disk; every
        other write, before and after it on the same connection, waits."""
        database = await self.make_durable_database()

        async def setting(tx):
            if database.dialect == "sqlite":
                return {1: "relaxed", 2: "durable"}[(await tx.execute("PRAGMA synchronous"))[0][0]]
            return {"off": "relaxed", "on": "durable"}[(await tx.execute("SHOW synchronous_commit"))[0][0]]

        relaxed = db.recoverable(lambda tx: setting(tx))
        for operation, expected in ((setting, "durable"), (relaxed, "relaxed"), (relaxed, "relaxed"),
                                    (setting, "durable")):
            self.assertEqual(await database.run(operation), expected)
        for operation in (db.claim_job, db.renew_lease, db.finish_job, db.retry_job):
            self.assertTrue(getattr(operation, "recoverable", False), operation.__name__)
        for operation in (db.reserve_image, db.commit_image, db.mark_deleted, db.delete_served_named):
            self.assertFalse(getattr(operation, "recoverable", False), operation.__name__)

    async def _db(self):
        self.database = await self.make_database()
        return self.database

    def q(self, *args):
        return self.database.run(*args)

    async def _image(self, account="kitten", name="20260214_a.jpg", now=T, expires=None, live=True):
        if await self.q(db.get_account, account) is None:
            await self.q(db.create_account, account, "h", False, T)
        image = await self.q(
            db.reserve_image, account, name, name.rsplit(".", 1)[0], "image/jpeg", 10, 4, 3,
            "ab" * 32, now, expires,
        )
        if live:
            image = await self.q(db.commit_image, image.id, now)
        return image

    async def test_migrations_are_idempotent(self):
        """Migrating an up-to-date database changes nothing and reports the same version."""
        await self._db()
        files = db.schema_files(self.database.dialect)
        version = await self.q(db.migrate, files)
        self.assertEqual(version, files[-1][0])
        self.assertEqual(await self.q(db.migrate, files), version)

    async def test_a_newer_schema_is_refused(self):
        """A database a newer IMGSHARE migrated (a downgrade) is refused, naming both versions."""
        await self._db()
        files = db.schema_files(self.database.dialect)
        with self.assertRaises(db.SchemaTooNew) as e:
            await self.q(db.migrate, files[:-1])
        self.assertIn(f"version {files[-1][0]}", str(e.exception))

    async def test_delete_digest_and_original_name(self):
        """An image keeps the client's file name and its delete link's digest; an image
        without a link reads back None."""
        await self._db()
        await self.q(db.create_account, "kitten", "h", False, T)
        image = await self.q(
            db.reserve_image, "kitten", "20260214_a.jpg", "20260214_a", "image/jpeg", 10, 4, 3,
            "ab" * 32, T, None, False, "Fountain, Rome.jpg", "cd" * 32,
        )
        await self.q(db.commit_image, image.id, T)
        found, digest = await self.q(db.get_image_and_delete_digest, "kitten", "20260214_a.jpg")
        self.assertEqual((found.original_name, digest), ("Fountain, Rome.jpg", "cd" * 32))
        await self._image(name="20260214_b.jpg")
        found, digest = await self.q(db.get_image_and_delete_digest, "kitten", "20260214_b.jpg")
        self.assertEqual((found.original_name, digest), ("", None))
        self.assertIsNone(await self.q(db.get_image_and_delete_digest, "kitten", "20260214_c.jpg"))

    async def test_accounts(self):
        """Accounts are created once per name, listed by name, and removable."""
        await self._db()
        self.assertEqual(await self.q(db.count_accounts), 0)
        a = await self.q(db.create_account, "kitten", "hash1", True, T)
        self.assertEqual((a.name, a.is_admin, a.created), ("kitten", True, T))
        await self.q(db.create_account, "bear", "hash2", False, T)
        with self.assertRaises(db.Conflict):
            await self.q(db.create_account, "kitten", "x", False, T)
        self.assertEqual([x.name for x in await self.q(db.list_accounts)], ["bear", "kitten"])
        self.assertEqual((await self.q(db.get_account, "kitten")).id, a.id)
        self.assertIsNone(await self.q(db.get_account, "nobody"))
        self.assertEqual(await self.q(db.get_password_hash, "kitten"), "hash1")
        self.assertTrue(await self.q(db.set_password_hash, "kitten", "hash3"))
        self.assertEqual(await self.q(db.get_password_hash, "kitten"), "hash3")
        self.assertFalse(await self.q(db.set_password_hash, "nobody", "x"))

    async def test_no_image_for_a_removed_account(self):
        """An upload cannot reserve or commit a name for an account that is gone."""
        await self._db()
        with self.assertRaises(db.AccountGone):
            await self.q(db.reserve_image, "ghost", "20260214_a.jpg", "20260214_a", "image/jpeg", 1, 1, 1,
                         "0" * 64, T, None)
        reserved = await self._image(live=False)
        await self.q(db.delete_account, "kitten", T)
        with self.assertRaises((db.AccountGone, db.Conflict)):
            await self.q(db.commit_image, reserved.id, T)

    async def test_purge_claims_are_exclusive(self):
        """Only one purge holds an image at a time, none while a worker holds its job,
        and none of a served image."""
        await self._db()
        live = await self._image(name="20260214_live.jpg")
        self.assertFalse(await self.q(db.claim_purge, live.id, T, T - 3600, 600))
        image = await self._image(name="20260214_b.jpg")
        job = await self.q(db.claim_job, "w", T, T + 30)
        self.assertEqual(job.image.id, live.id)
        job = await self.q(db.claim_job, "w", T, T + 30)
        await self.q(db.mark_deleted, image.id, T)
        self.assertTrue(await self.q(db.has_job, image.id), "a running job survives the delete")
        self.assertFalse(await self.q(db.claim_purge, image.id, T, T - 3600, 600))
        self.assertNotIn(image.id, [i.id for i, _ in await self.q(db.purgeable_images, T, T - 3600, 10)])
        await self.q(db.finish_job, job, [])
        self.assertTrue(await self.q(db.claim_purge, image.id, T, T - 3600, 600))
        self.assertFalse(await self.q(db.claim_purge, image.id, T + 1, T - 3600, 600))
        self.assertTrue(await self.q(db.claim_purge, image.id, T + 600, T - 3600, 600))

    async def test_setup_code_used_once(self):
        """The one-time setup code creates one admin; used again it does nothing."""
        await self._db()
        await self.q(db.setting_or_insert, "setup", "code")
        self.assertIsNone(await self.q(db.create_first_account, "setup", "wrong", "a", "h", T))
        first = await self.q(db.create_first_account, "setup", "code", "a", "h", T)
        self.assertTrue(first.is_admin)
        self.assertIsNone(await self.q(db.create_first_account, "setup", "code", "b", "h", T))

    async def test_delete_account_removes_tokens_and_deletes_images(self):
        """Removing an account drops its tokens and marks its images deleted; the
        name stays taken until those images are purged."""
        await self._db()
        await self.q(db.create_account, "kitten", "h", False, T)
        await self.q(db.create_token, "kitten", "d" * 64, "", T, None)
        image = await self._image()
        self.assertTrue(await self.q(db.delete_account, "kitten", T + 1))
        self.assertFalse(await self.q(db.delete_account, "kitten", T + 1))
        self.assertIsNone(await self.q(db.find_token, "d" * 64, T + 1))
        self.assertEqual((await self.q(db.get_image, "kitten", image.name)).state, DELETED)
        with self.assertRaises(db.Conflict):
            await self.q(db.create_account, "kitten", "h", False, T + 2)
        await self.q(db.remove_image, image.id)
        await self.q(db.create_account, "kitten", "h", False, T + 3)

    async def test_admin_rights_keep_an_admin(self):
        """set_admin changes the role; neither it nor delete_account removes the last administrator
        while other accounts exist (LastAdmin, nothing changed)."""
        await self._db()
        await self.q(db.create_account, "kitten", "h", True, T)
        await self.q(db.create_account, "bear", "h", False, T)
        with self.assertRaises(db.LastAdmin):
            await self.q(db.set_admin, "kitten", False)
        with self.assertRaises(db.LastAdmin):
            await self.q(db.delete_account, "kitten", T)
        self.assertTrue((await self.q(db.get_account, "kitten")).is_admin)
        self.assertTrue(await self.q(db.set_admin, "bear", True))
        self.assertTrue(await self.q(db.set_admin, "kitten", False))
        self.assertFalse((await self.q(db.get_account, "kitten")).is_admin)
        self.assertFalse(await self.q(db.set_admin, "nobody", True))
        self.assertTrue(await self.q(db.delete_account, "kitten", T))
        self.assertTrue(await self.q(db.delete_account, "bear", T), "the last account may go")

    async def test_register_reset_and_count(self):
        """register_account needs an existing account; reset_password ends the account's sessions;
        count_images counts what is not deleted."""
        await self._db()
        self.assertIsNone(await self.q(db.register_account, "mallory", "h", T))
        self.assertEqual(await self.q(db.count_accounts), 0)
        await self.q(db.create_account, "kitten", "h", True, T)
        self.assertFalse((await self.q(db.register_account, "bear", "h", T)).is_admin)
        with self.assertRaises(db.Conflict):
            await self.q(db.register_account, "bear", "h", T)
        await self.q(db.create_session, "1" * 64, "bear", T, T + 60)
        await self.q(db.create_session, "2" * 64, "kitten", T, T + 60)
        self.assertEqual(await self.q(db.reset_password, "bear", "h2"), 1)
        self.assertEqual(await self.q(db.get_password_hash, "bear"), "h2")
        self.assertIsNotNone(await self.q(db.find_session, "2" * 64, T))
        self.assertIsNone(await self.q(db.reset_password, "nobody", "h"))
        self.assertEqual(await self.q(db.count_images, "bear"), 0)
        await self._image("bear", "20260214_a.jpg")
        gone = await self._image("bear", "20260214_b.jpg")
        await self._image("bear", "20260214_c.jpg", live=False)
        await self.q(db.mark_deleted, gone.id, T)
        self.assertEqual(await self.q(db.count_images, "bear"), 2)

    async def test_tokens_expire_at_the_instant(self):
        """A token is found until its expiry instant and never from then on."""
        await self._db()
        token = await self.q(db.create_token, "kitten", "a" * 64, "ci", T, T + 60)
        self.assertEqual((token.label, token.expires, token.last_used), ("ci", T + 60, None))
        found = await self.q(db.find_token, "a" * 64, T + 59.999)
        self.assertEqual(found.id, token.id)
        self.assertIsNone(await self.q(db.find_token, "a" * 64, T + 60))
        self.assertEqual(await self.q(db.list_tokens, "kitten", T + 60), [])
        self.assertIsNone(await self.q(db.find_token, "b" * 64, T))

    async def test_token_use_is_recorded(self):
        """Finding a token records when it was last used."""
        await self._db()
        await self.q(db.create_token, "kitten", "a" * 64, "", T, None)
        await self.q(db.find_token, "a" * 64, T + 5)
        [token] = await self.q(db.list_tokens, "kitten", T + 6)
        self.assertEqual(token.last_used, T + 5)

    async def test_token_list_and_delete(self):
        """Tokens are listed newest first per account and deleted only by their owner."""
        await self._db()
        t1 = await self.q(db.create_token, "kitten", "1" * 64, "one", T, None)
        t2 = await self.q(db.create_token, "kitten", "2" * 64, "two", T + 1, None)
        await self.q(db.create_token, "bear", "3" * 64, "bear's", T, None)
        self.assertEqual([t.id for t in await self.q(db.list_tokens, "kitten", T + 2)], [t2.id, t1.id])
        self.assertFalse(await self.q(db.delete_token, "bear", t1.id))
        self.assertTrue(await self.q(db.delete_token, "kitten", t1.id))
        self.assertIsNone(await self.q(db.find_token, "1" * 64, T + 3))
        self.assertEqual(len(await self.q(db.list_tokens, "kitten", T + 3)), 1)

    async def test_delete_expired_tokens(self):
        """The expiry pass deletes exactly the tokens whose expiry has passed."""
        await self._db()
        await self.q(db.create_token, "kitten", "1" * 64, "", T, T + 10)
        await self.q(db.create_token, "kitten", "2" * 64, "", T, T + 100)
        await self.q(db.create_token, "kitten", "3" * 64, "", T, None)
        self.assertEqual(await self.q(db.delete_expired_tokens, T + 10), ["kitten"])
        self.assertEqual(await self.q(db.delete_expired_tokens, T + 10), [])
        self.assertEqual(len(await self.q(db.list_tokens, "kitten", T)), 2)

    async def test_image_names_are_reserved_by_stem(self):
        """A name is reserved per account by its stem, whatever the extension."""
        await self._db()
        image = await self._image(live=False)
        self.assertEqual(image.state, UPLOADING)
        with self.assertRaises(db.Conflict):
            await self._image(name="20260214_a.png", live=False)
        await self._image(account="bear", live=False)  # another account may
        self.assertEqual((await self.q(db.commit_image, image.id, T)).state, LIVE)
        with self.assertRaises(db.Conflict):
            await self.q(db.commit_image, image.id, T)

    async def _reserve_kept(self, name, account="kitten", now=T):
        return await self.q(db.reserve_image, account, name, name.rsplit(".", 1)[0], "image/jpeg", 10, 4, 3,
                            "ab" * 32, now, None, True)

    async def test_kept_names_take_the_next_suffix(self):
        """A kept name whose stem is taken gets one past the highest _N, found in one query,
        after 1200 clashes as after one; lookalikes never count."""
        await self._db()
        await self.q(db.create_account, "kitten", "h", False, T)
        await self.q(db.create_account, "bear", "h", False, T)

        async def many(tx):
            stems = ["20260214_a"] + [f"20260214_a_{n}" for n in range(2, 1201)]
            stems += ["20260214_a_09999", "20260214_a_12x", "20260214_a-5000", "20260214_a_5000_2",
                      "20260214_a%_7000", "20260214_aa_8000", "20260214_A_9000", "20260214_a.6000"]
            for stem in stems:
                await db.reserve_image(tx, "kitten", stem + ".png", stem, "image/png", 1, 1, 1, "0" * 64, T, None)
            await db.reserve_image(tx, "bear", "20260214_a_9999.png", "20260214_a_9999", "image/png", 1, 1, 1,
                                   "0" * 64, T, None)

        await self.q(many)
        first = await self._reserve_kept("20260214_a.jpg")
        self.assertEqual((first.name, first.state), ("20260214_a_1201.jpg", UPLOADING))
        self.assertEqual((await self._reserve_kept("20260214_a.jpg")).name, "20260214_a_1202.jpg")
        self.assertEqual((await self._reserve_kept("20260214_a.jpg", account="bear")).name, "20260214_a.jpg")
        self.assertEqual((await self._reserve_kept("20260214_a.jpg", account="bear")).name, "20260214_a_10000.jpg")

    async def test_kept_name_suffix_rules(self):
        """The plain name when its stem is free (whatever suffixes exist); _2 after it; a base
        that itself ends in _3 counts its own suffixes; the highest is numeric, not textual."""
        await self._db()
        await self.q(db.create_account, "kitten", "h", False, T)
        await self._image(name="20260214_b_7.jpg")
        self.assertEqual((await self._reserve_kept("20260214_b.png")).name, "20260214_b.png")
        self.assertEqual((await self._reserve_kept("20260214_b.jpg")).name, "20260214_b_8.jpg")
        self.assertEqual((await self._reserve_kept("20260214_c_3.jpg")).name, "20260214_c_3.jpg")
        self.assertEqual((await self._reserve_kept("20260214_c_3.jpg")).name, "20260214_c_3_2.jpg")
        self.assertEqual((await self._reserve_kept("20260214_c.jpg")).name, "20260214_c.jpg")
        self.assertEqual((await self._reserve_kept("20260214_c.jpg")).name, "20260214_c_4.jpg")
        await self._image(name="20260214_d.jpg")
        await self._image(name="20260214_d_9.jpg")
        await self._image(name="20260214_d_10.jpg")
        self.assertEqual((await self._reserve_kept("20260214_d.jpg")).name, "20260214_d_11.jpg")
        base = "x" * 40
        await self._image(name=f"20260214_{base}.jpg")
        self.assertEqual((await self._reserve_kept(f"20260214_{base}.jpg")).name, f"20260214_{base}_2.jpg")
        with self.assertRaises(db.Conflict):  # without next_free a taken stem is refused
            await self._image(name="20260214_d.webp", live=False)

    async def test_concurrent_kept_names(self):
        """Concurrent reservations of one kept name all succeed, each with its own suffix."""
        from twisted.internet.defer import gatherResults

        await self._db()
        await self.q(db.create_account, "kitten", "h", False, T)
        images = await gatherResults([self.q(db.reserve_image, "kitten", "20260214_same.jpg", "20260214_same",
                                             "image/jpeg", 1, 1, 1, "0" * 64, T, None, True) for _ in range(12)])
        self.assertEqual(sorted(i.name for i in images),
                         sorted(["20260214_same.jpg"] + [f"20260214_same_{n}.jpg" for n in range(2, 13)]))

    async def test_image_lookup(self):
        """Images are found by exact name or by stem, within their account only."""
        await self._db()
        image = await self._image(name="20260214_pic.png")
        self.assertEqual(await self.q(db.get_image, "kitten", "20260214_pic.png"), image)
        self.assertEqual(await self.q(db.get_image_by_stem, "kitten", "20260214_pic"), image)
        self.assertIsNone(await self.q(db.get_image, "bear", "20260214_pic.png"))
        self.assertIsNone(await self.q(db.get_image, "kitten", "20260214_pic.jpg"))
        self.assertEqual(
            (image.mime, image.size, image.width, image.height, image.sha256, image.uploaded, image.expires),
            ("image/jpeg", 10, 4, 3, "ab" * 32, T, None),
        )

    async def test_discard_reservation(self):
        """A reservation whose upload failed is forgotten; a live image is not."""
        await self._db()
        reserved = await self._image(live=False)
        await self.q(db.discard_image, reserved.id)
        self.assertIsNone(await self.q(db.get_image, "kitten", reserved.name))
        live = await self._image()
        await self.q(db.discard_image, live.id)
        self.assertIsNotNone(await self.q(db.get_image, "kitten", live.name))

    async def test_list_images_newest_first(self):
        """The listing holds only served images, newest first, paginated."""
        await self._db()
        for i in range(5):
            await self._image(name=f"20260214_{i}.jpg", now=T + i)
        await self._image(name="20260214_old.jpg", now=T, expires=T + 1)
        await self._image(name="20260214_up.jpg", live=False)
        gone = await self._image(name="20260214_gone.jpg")
        await self.q(db.mark_deleted, gone.id, T)
        page1 = await self.q(db.list_images, "kitten", T + 10, 0, 3)
        page2 = await self.q(db.list_images, "kitten", T + 10, 3, 3)
        self.assertEqual([i.name for i in page1], ["20260214_4.jpg", "20260214_3.jpg", "20260214_2.jpg"])
        self.assertEqual([i.name for i in page2], ["20260214_1.jpg", "20260214_0.jpg"])

    async def test_list_images_page_and_total(self):
        """A page and the total agree on what is listed: served images only, expiry
        checked at ``now``, ties on the upload time broken by id, newest first; past
        the end (an offset beyond any integer SQL takes, too) an empty page."""
        await self._db()
        names = []
        for i in range(4):
            names.append((await self._image(name=f"20260214_{i}.jpg", now=T + i // 2)).name)
        await self._image(name="20260214_brief.jpg", now=T, expires=T + 5)
        await self._image(name="20260214_up.jpg", live=False)
        gone = await self._image(name="20260214_gone.jpg", now=T + 9)
        await self.q(db.mark_deleted, gone.id, T)
        await self._image(account="bear", name="20260214_bear.jpg", now=T + 9)
        page, total = await self.q(db.list_images_page, "kitten", T + 5, 0, 2)
        self.assertEqual(([i.name for i in page], total), ([names[3], names[2]], 4))
        page, total = await self.q(db.list_images_page, "kitten", T + 4, 2, 10)
        self.assertEqual(([i.name for i in page], total), (["20260214_brief.jpg", names[1], names[0]], 5))
        self.assertEqual(await self.q(db.list_images_page, "kitten", T + 5, 4, 2), ([], 4))
        self.assertEqual(await self.q(db.list_images_page, "kitten", T + 5, 10**30, 2), ([], 4))
        self.assertEqual(await self.q(db.list_images_page, "nobody", T, 0, 2), ([], 0))

    async def test_list_images_page_from_either_end(self):
        """Every page of every size is the same slice of the listing, whether it is
        read from the newest end or (in the older half) from the oldest."""
        await self._db()
        for i in range(7):
            await self._image(name=f"20260214_{i}.jpg", now=T + i // 3)
        await self._image(name="20260214_brief.jpg", now=T + 1, expires=T + 5)
        gone = await self._image(name="20260214_gone.jpg", now=T + 1)
        await self.q(db.mark_deleted, gone.id, T)
        listing = [i.name for i in await self.q(db.list_images, "kitten", T + 5, 0, 100)]
        self.assertEqual(len(listing), 7)
        for limit in range(1, 9):
            for offset in range(0, 9):
                page, total = await self.q(db.list_images_page, "kitten", T + 5, offset, limit)
                self.assertEqual(([i.name for i in page], total), (listing[offset:offset + limit], 7),
                                 (offset, limit))

    # ------------------------------------------------ gallery search and sort (012)

    async def _named(self, name, original="", size=10, now=T, account="kitten", expires=None):
        if await self.q(db.get_account, account) is None:
            await self.q(db.create_account, account, "h", False, T)
        image = await self.q(
            db.reserve_image, account, name, name.rsplit(".", 1)[0], "image/jpeg", size, 4, 3,
            "ab" * 32, now, expires, False, original,
        )
        return await self.q(db.commit_image, image.id, now)

    async def _found(self, search="", sort="newest", offset=0, limit=100, now=T + 100):
        page, total = await self.q(db.find_images_page, "kitten", now, offset, limit, sort, search)
        return [i.name for i in page], total

    async def test_search_by_file_name_and_original_name_any_case(self):
        """A search finds the served images whose file name or original name contains it,
        ignoring the case of letters, and counts only those; other accounts', deleted,
        expired and unfinished images never match."""
        await self._db()
        await self._named("20260214_cat.jpg", "Holiday.JPG", now=T)
        await self._named("20260214_dog.jpg", "my CAT photo.jpg", now=T + 1)
        await self._named("20260214_bird.jpg", "bird.jpg", now=T + 2)
        await self._named("20260214_cats.jpg", account="bear", now=T + 3)
        gone = await self._named("20260214_catgone.jpg", now=T + 4)
        await self.q(db.mark_deleted, gone.id, T + 5)
        await self._named("20260214_catold.jpg", now=T + 5, expires=T + 6)
        await self.q(db.reserve_image, "kitten", "20260214_catup.jpg", "20260214_catup", "image/jpeg", 1, 1, 1,
                     "ab" * 32, T, None)
        self.assertEqual(await self._found("cat"), (["20260214_dog.jpg", "20260214_cat.jpg"], 2))
        self.assertEqual(await self._found("CaT"), (["20260214_dog.jpg", "20260214_cat.jpg"], 2))
        self.assertEqual(await self._found("holiday"), (["20260214_cat.jpg"], 1))
        self.assertEqual(await self._found("zebra"), ([], 0))
        self.assertEqual(await self._found("cat", now=T + 5.5), (["20260214_catold.jpg", "20260214_dog.jpg",
                                                                  "20260214_cat.jpg"], 3))
        self.assertEqual((await self._found(""))[1], 3, "no search: every served image")

    async def test_search_counts_up_to_its_cap(self):
        """A search counts its matches up to SEARCH_COUNT_CAP (more: the cap + 1) and pages
        only through the first SEARCH_COUNT_CAP of them, newest first."""
        self.patch(db, "SEARCH_COUNT_CAP", 5)
        await self._db()
        for i in range(8):
            await self._named(f"20260214_cat{i}.jpg", now=T + i)
        await self._named("20260214_dog.jpg", now=T + 9)
        pages = [await self.q(db.find_images_page, "kitten", T + 20, offset, 3, "newest", "cat")
                 for offset in (0, 3, 6)]
        self.assertEqual([([i.name for i in found], total) for found, total in pages], [
            (["20260214_cat7.jpg", "20260214_cat6.jpg", "20260214_cat5.jpg"], 6),
            (["20260214_cat4.jpg", "20260214_cat3.jpg"], 6),
            ([], 6)])
        found, total = await self.q(db.find_images_page, "kitten", T + 20, 3, 3, "oldest", "cat")
        self.assertEqual(([i.name for i in found], total), (["20260214_cat3.jpg", "20260214_cat4.jpg"], 6))
        found, total = await self.q(db.find_images_page, "kitten", T + 20, 0, 3, "newest", "dog")
        self.assertEqual(total, 1, "under the cap: the exact count")

    async def test_search_characters_are_literal(self):
        """``%``, ``_`` and backslash in a search match only themselves, never as LIKE wildcards
        or an escape."""
        await self._db()
        await self._named("20260214_a.jpg", "100% real.jpg", now=T)
        await self._named("20260214_b.jpg", "1000 real.jpg", now=T + 1)
        await self._named("20260214_c.jpg", "a_b.png", now=T + 2)
        await self._named("20260214_d.jpg", "axb.png", now=T + 3)
        await self._named("20260214_e.jpg", "back\\slash.png", now=T + 4)
        await self._named("20260214_f.jpg", "backslash.png", now=T + 5)
        self.assertEqual(await self._found("0%"), (["20260214_a.jpg"], 1))
        self.assertEqual(await self._found("%"), (["20260214_a.jpg"], 1))
        self.assertEqual(await self._found("a_b"), (["20260214_c.jpg"], 1))
        self.assertEqual(await self._found("a_"), (["20260214_c.jpg"], 1))
        self.assertEqual(await self._found("k\\s"), (["20260214_e.jpg"], 1))
        self.assertEqual(await self._found("\\"), (["20260214_e.jpg"], 1))
        self.assertEqual(await self._found("\\%"), ([], 0))
        self.assertEqual((await self._found("_"))[1], 6, "every stored name has an underscore")

    async def test_sort_orders_and_their_pages(self):
        """newest, oldest and largest (ties on size: the newer first); every page of every
        size is the same slice of the order, read from either end, with and without a search."""
        await self._db()
        sizes = [30, 10, 30, 50, 20, 10, 40]
        for i, size in enumerate(sizes):
            await self._named(f"20260214_{i}.jpg", "kept.jpg" if i % 2 else "other.jpg", size=size, now=T + i)
        gone = await self._named("20260214_gone.jpg", size=99, now=T + 9)
        await self.q(db.mark_deleted, gone.id, T)
        names = [f"20260214_{i}.jpg" for i in range(7)]
        self.assertEqual((await self._found(sort="newest"))[0], names[::-1])
        self.assertEqual((await self._found(sort="oldest"))[0], names)
        largest = [names[i] for i in (3, 6, 2, 0, 4, 5, 1)]
        self.assertEqual(await self._found(sort="largest"), (largest, 7))
        self.assertEqual(await self._found("kept", sort="largest"), ([names[i] for i in (3, 5, 1)], 3))
        for sort in db.SORTS:
            for search in ("", "kept"):
                listing, total = await self._found(search, sort)
                for limit in range(1, 5):
                    for offset in range(0, 9):
                        self.assertEqual(await self._found(search, sort, offset, limit),
                                         (listing[offset:offset + limit], total), (sort, search, offset, limit))
        self.assertEqual(await self._found(sort="largest", offset=10**30), ([], 7))

    async def test_delete_served_named_all_or_nothing(self):
        """Several images are deleted in one transaction; if any name is not served (unknown,
        deleted, expired, another account's), nothing is deleted and those names are returned."""
        await self._db()
        a = await self._named("20260214_a.jpg")
        b = await self._named("20260214_b.jpg")
        await self._named("20260214_other.jpg", account="bear")
        gone = await self._named("20260214_gone.jpg")
        await self.q(db.mark_deleted, gone.id, T)
        for refused in (["20260214_a.jpg", "20260214_nope.jpg"], ["20260214_b.jpg", "20260214_other.jpg"],
                        ["20260214_gone.jpg", "20260214_a.jpg"]):
            deleted, missing = await self.q(db.delete_served_named, "kitten", refused, T + 1)
            self.assertEqual(deleted, [])
            self.assertEqual(missing, [n for n in refused if n not in ("20260214_a.jpg", "20260214_b.jpg")])
            self.assertTrue((await self.q(db.get_image, "kitten", "20260214_a.jpg")).is_served(T + 1))
        deleted, missing = await self.q(db.delete_served_named, "kitten", [b.name, a.name], T + 1)
        self.assertEqual(([i.name for i in deleted], missing), ([b.name, a.name], []))
        for name in (a.name, b.name):
            self.assertEqual((await self.q(db.get_image, "kitten", name)).state, DELETED)
        self.assertTrue((await self.q(db.get_image, "bear", "20260214_other.jpg")).is_served(T + 1))
        self.assertEqual(await self.q(db.delete_served_named, "kitten", [a.name], T + 2), ([], [a.name]))

    async def test_mark_deleted_once(self):
        """Deleting marks a live image deleted once; a second delete finds nothing."""
        await self._db()
        image = await self._image()
        self.assertTrue(await self.q(db.mark_deleted, image.id, T))
        self.assertFalse(await self.q(db.mark_deleted, image.id, T))
        self.assertFalse((await self.q(db.get_image, "kitten", image.name)).is_served(T))

    async def test_location_flags(self):
        """An image's has_location reads back as a boolean everywhere (lookups, listings, the
        purge list); the account's strip_location setting defaults to off and is per account."""
        await self._db()
        await self.q(db.create_account, "kitten", "h", False, T)
        await self.q(db.create_account, "bear", "h", False, T)
        with_location = await self.q(
            db.reserve_image, "kitten", "20260214_gps.jpg", "20260214_gps", "image/jpeg", 10, 4, 3,
            "ab" * 32, T, None, False, "", None, None, True,
        )
        self.assertIs(with_location.has_location, True)
        await self.q(db.commit_image, with_location.id, T)
        plain = await self._image(name="20260214_plain.jpg")
        self.assertIs((await self.q(db.get_image, "kitten", "20260214_gps.jpg")).has_location, True)
        self.assertIs((await self.q(db.get_image, "kitten", plain.name)).has_location, False)
        listed = await self.q(db.list_images, "kitten", T, 0, 10)
        self.assertEqual({i.name: i.has_location for i in listed},
                         {"20260214_gps.jpg": True, plain.name: False})
        await self.q(db.mark_deleted, with_location.id, T)
        ((purgeable, _),) = await self.q(db.purgeable_images, T + 1, T - 100, 10)
        self.assertIs(purgeable.has_location, True)
        self.assertIs(await self.q(db.get_strip_location, "kitten"), False)
        self.assertTrue(await self.q(db.set_strip_location, "kitten", True))
        self.assertIs(await self.q(db.get_strip_location, "kitten"), True)
        self.assertIs(await self.q(db.get_strip_location, "bear"), False)
        self.assertFalse(await self.q(db.set_strip_location, "ghost", True))
        self.assertIs(await self.q(db.get_strip_location, "ghost"), False)

    async def test_purgeable_images(self):
        """Deleted, expired and abandoned uploads are purgeable; postponed ones wait."""
        await self._db()
        live = await self._image(name="20260214_live.jpg")
        expired = await self._image(name="20260214_exp.jpg", expires=T + 5)
        deleted = await self._image(name="20260214_del.jpg")
        await self.q(db.mark_deleted, deleted.id, T)
        stale = await self._image(name="20260214_stale.jpg", live=False)
        fresh = await self._image(name="20260214_fresh.jpg", now=T + 50, live=False)
        found = await self.q(db.purgeable_images, T + 10, T + 20, 100)
        self.assertEqual({i.id for i, _ in found}, {expired.id, deleted.id, stale.id})
        self.assertNotIn(live.id, {i.id for i, _ in found})
        self.assertNotIn(fresh.id, {i.id for i, _ in found})
        await self.q(db.postpone_purge, deleted.id, T + 30)
        found = await self.q(db.purgeable_images, T + 10, T + 20, 100)
        self.assertNotIn(deleted.id, {i.id for i, _ in found})
        found = dict((i.id, n) for i, n in await self.q(db.purgeable_images, T + 30, T + 20, 100))
        self.assertEqual(found[deleted.id], 1)
        await self.q(db.remove_image, deleted.id)
        self.assertIsNone(await self.q(db.get_image, "kitten", deleted.name))

    async def test_settings(self):
        """Settings are stored by key, the first value kept, and removed by the
        operation that uses them up (the setup code)."""
        await self._db()
        self.assertIsNone(await self.q(db.get_setting, "k"))
        self.assertEqual(await self.q(db.setting_or_insert, "k", "v1"), "v1")
        self.assertEqual(await self.q(db.setting_or_insert, "k", "v2"), "v1")
        self.assertEqual(await self.q(db.get_setting, "k"), "v1")
        await self.q(db.create_first_account, "k", "v1", "boss", "h", T)
        self.assertIsNone(await self.q(db.get_setting, "k"))

    async def test_failed_operation_rolls_back(self):
        """An operation that fails half-way leaves nothing behind."""
        await self._db()

        async def half(tx):
            await db.create_account(tx, "kitten", "h", False, T)
            raise ValueError("boom")

        with self.assertRaises(ValueError):
            await self.q(half)
        self.assertIsNone(await self.q(db.get_account, "kitten"))

    # ---------------------------------------------------------------- jobs

    def _variants(self, image_id):
        return [Variant(image_id, v, 100, 10, 8, "cd" * 32, T) for v in ("xga", "vga", "qvga", "thumb")]

    async def test_commit_queues_a_job(self):
        """Committing an image queues its derived-file job in the same transaction."""
        await self._db()
        reserved = await self._image(live=False)
        self.assertFalse(await self.q(db.has_job, reserved.id))
        await self.q(db.commit_image, reserved.id, T)
        self.assertTrue(await self.q(db.has_job, reserved.id))
        self.assertEqual(await self.q(db.pending_images, [reserved.id, 999]), {reserved.id})

    async def test_claim_order_and_exclusivity(self):
        """Jobs are claimed oldest first, prioritized ones before all, each by one worker only."""
        await self._db()
        a = await self._image(name="20260214_a.jpg", now=T)
        b = await self._image(name="20260214_b.jpg", now=T + 1)
        c = await self._image(name="20260214_c.jpg", now=T + 2)
        self.assertTrue(await self.q(db.prioritize_job, c.id))
        first = await self.q(db.claim_job, "w1", T + 5, T + 35)
        second = await self.q(db.claim_job, "w2", T + 5, T + 35)
        third = await self.q(db.claim_job, "w1", T + 5, T + 35)
        self.assertEqual([j.image.id for j in (first, second, third)], [c.id, a.id, b.id])
        self.assertEqual((first.attempts, first.claimant, first.outages), (1, "w1", 0))
        self.assertIsNone(await self.q(db.claim_job, "w3", T + 5, T + 35))

    async def test_jobs_not_due_wait(self):
        """A job given back with a retry time is not claimed before it."""
        await self._db()
        a = await self._image()
        job = await self.q(db.claim_job, "w1", T, T + 30)
        await self.q(db.retry_job, job, T + 30)
        self.assertIsNone(await self.q(db.claim_job, "w1", T + 29, T + 59))
        again = await self.q(db.claim_job, "w1", T + 30, T + 60)
        self.assertEqual((again.image.id, again.attempts), (a.id, 2))

    async def test_renewed_lease_keeps_the_job(self):
        """A job whose lease is renewed is never claimed by another worker, however long
        its worker takes (here three minutes, renewing every 20 s for 30 s)."""
        await self._db()
        image = await self._image()
        job = await self.q(db.claim_job, "w1", T, T + 30)
        for step in range(1, 10):
            now = T + 20 * step
            self.assertIsNone(await self.q(db.claim_job, "w2", now, now + 30), f"claimed at +{now - T:.0f} s")
            self.assertTrue(await self.q(db.renew_lease, job, now + 30))
        self.assertIsNone(await self.q(db.claim_job, "w2", T + 209, T + 239))
        self.assertTrue(await self.q(db.finish_job, job, self._variants(image.id)))

    async def test_expired_lease_lets_another_claim(self):
        """A job whose holder stopped renewing (it died) is claimed again once its lease ends."""
        await self._db()
        await self._image()
        await self.q(db.claim_job, "dead", T, T + 30)
        self.assertIsNone(await self.q(db.claim_job, "w2", T + 29.5, T + 59.5))
        job = await self.q(db.claim_job, "w2", T + 30, T + 60)
        self.assertEqual((job.claimant, job.attempts), ("w2", 2))
        self.assertIsNone(await self.q(db.claim_job, "w3", T + 59, T + 89), "the new claim has its own lease")

    async def test_lost_claim_changes_nothing(self):
        """A worker whose lease ran out and whose job another worker claimed can neither
        renew, finish nor give back the job: the new holder's claim stands."""
        await self._db()
        image = await self._image()
        old = await self.q(db.claim_job, "w1", T, T + 30)
        new = await self.q(db.claim_job, "w2", T + 31, T + 61)
        self.assertFalse(await self.q(db.renew_lease, old, T + 70))
        with self.assertRaises(db.LostClaim):
            await self.q(db.finish_job, old, self._variants(image.id))
        self.assertIsNone(await self.q(db.get_variant, image.id, "xga"))
        with self.assertRaises(db.LostClaim):
            await self.q(db.retry_job, old, T + 32)
        self.assertIsNone(await self.q(db.claim_job, "w3", T + 60, T + 90), "still w2's until T + 61")
        self.assertTrue(await self.q(db.renew_lease, new, T + 90))
        self.assertIsNone(await self.q(db.claim_job, "w3", T + 89, T + 119))
        self.assertTrue(await self.q(db.finish_job, new, self._variants(image.id)))
        self.assertFalse(await self.q(db.renew_lease, new, T + 120), "a finished job has no lease")

    async def test_claims_of_one_worker_id_are_told_apart(self):
        """The loops of one process share a worker id: a claim taken again under that id
        after the lease ran out is a new claim, which the earlier one cannot touch."""
        await self._db()
        image = await self._image()
        first = await self.q(db.claim_job, "w", T, T + 30)
        second = await self.q(db.claim_job, "w", T + 30, T + 60)
        self.assertFalse(await self.q(db.renew_lease, first, T + 70))
        with self.assertRaises(db.LostClaim):
            await self.q(db.finish_job, first, [])
        self.assertTrue(await self.q(db.finish_job, second, self._variants(image.id)))

    async def test_attempts_counted_at_claim(self):
        """Every claim is an attempt, counted when it is taken, so crashes count: a lease
        that ran out, a release at restart, a give-back after a failure.  Give-backs in
        an outage of storage or the database are counted apart."""
        await self._db()
        await self._image()
        job = await self.q(db.claim_job, "w", T, T + 30)
        self.assertEqual((job.attempts, job.outages), (1, 0))
        job = await self.q(db.claim_job, "w", T + 30, T + 60)  # the first holder died
        self.assertEqual(await self.q(db.release_jobs_of, ["w"]), 1)  # a restart
        job = await self.q(db.claim_job, "w2", T + 31, T + 61)
        self.assertEqual((job.attempts, job.outages), (3, 0))
        await self.q(db.retry_job, job, T + 32)
        job = await self.q(db.claim_job, "w2", T + 32, T + 62)
        await self.q(db.retry_job, job, T + 33, True)
        job = await self.q(db.claim_job, "w2", T + 33, T + 63)
        self.assertEqual((job.attempts, job.outages), (5, 1))

    async def test_running_job_without_lease(self):
        """A job running since before leases existed (migration 004) is free 120 s after
        its claim, as it was then."""
        await self._db()
        await self._image()
        await self.q(db.claim_job, "old", T, T + 30)

        async def forget_lease(tx):
            await tx.execute("UPDATE jobs SET lease_until = NULL")

        await self.q(forget_lease)
        self.assertIsNone(await self.q(db.claim_job, "w2", T + 119, T + 149))
        self.assertIsNotNone(await self.q(db.claim_job, "w2", T + 120, T + 150))

    async def test_release_jobs_of_dead_claimants(self):
        """Jobs held by a worker known to be dead are due again at once, lease or not."""
        await self._db()
        await self._image()
        await self.q(db.claim_job, "host:123:x", T, T + 30)
        self.assertEqual(await self.q(db.running_claimants), ["host:123:x"])
        self.assertEqual(await self.q(db.release_jobs_of, ["host:123:x"]), 1)
        self.assertEqual(await self.q(db.running_claimants), [])
        self.assertIsNotNone(await self.q(db.claim_job, "w2", T, T + 30))

    async def test_finish_job_records_variants(self):
        """Finishing records the four derived files and drops the job."""
        await self._db()
        image = await self._image()
        job = await self.q(db.claim_job, "w", T, T + 30)
        self.assertTrue(await self.q(db.finish_job, job, self._variants(image.id)))
        self.assertFalse(await self.q(db.has_job, image.id))
        xga = await self.q(db.get_variant, image.id, "xga")
        self.assertEqual((xga.size, xga.width, xga.height), (100, 10, 8))
        self.assertIsNone(await self.q(db.get_variant, image.id, "huge"))

    async def test_finish_after_delete(self):
        """A job finishing after its image was deleted records nothing."""
        await self._db()
        image = await self._image()
        job = await self.q(db.claim_job, "w", T, T + 30)
        await self.q(db.mark_deleted, image.id, T)
        self.assertFalse(await self.q(db.finish_job, job, self._variants(image.id)))
        self.assertIsNone(await self.q(db.get_variant, image.id, "xga"))

    async def test_remove_image_drops_everything(self):
        """Removing an image's row removes its job and variant rows too."""
        await self._db()
        image = await self._image()
        job = await self.q(db.claim_job, "w", T, T + 30)
        await self.q(db.finish_job, job, self._variants(image.id))
        await self.q(db.remove_image, image.id)
        self.assertIsNone(await self.q(db.get_variant, image.id, "xga"))
        self.assertFalse(await self.q(db.has_job, image.id))

    async def test_sessions(self):
        """Sessions are found until they expire, with their account's admin flag; they can be
        extended, ended one by one, all but one, with their account, or by the expiry pass."""
        await self._db()
        await self.q(db.create_account, "kitten", "h", True, T)
        await self.q(db.create_account, "bear", "h", False, T)
        await self.q(db.create_session, "s1", "kitten", T, T + 100)
        await self.q(db.create_session, "s2", "kitten", T, T + 100)
        await self.q(db.create_session, "s3", "bear", T, T + 50)
        found = await self.q(db.find_session, "s1", T)
        self.assertEqual((found.account, found.is_admin, found.created, found.expires), ("kitten", True, T, T + 100))
        self.assertIsNone(await self.q(db.find_session, "s1", T + 100), "expired at its instant")
        self.assertIsNone(await self.q(db.find_session, "nope", T))
        await self.q(db.extend_session, "s1", T + 500)
        self.assertEqual((await self.q(db.find_session, "s1", T + 200)).expires, T + 500)
        self.assertEqual(await self.q(db.delete_expired_sessions, T + 60), 1)
        self.assertIsNone(await self.q(db.find_session, "s3", T))
        self.assertEqual(await self.q(db.delete_other_sessions, "kitten", "s1"), 1)
        self.assertIsNone(await self.q(db.find_session, "s2", T))
        await self.q(db.create_session, "s4", "bear", T, T + 100)
        await self.q(db.delete_session, "s4")
        self.assertIsNone(await self.q(db.find_session, "s4", T))
        await self.q(db.set_admin, "bear", True)  # the only admin is not removed while others exist
        await self.q(db.delete_account, "kitten", T)
        self.assertIsNone(await self.q(db.find_session, "s1", T), "gone with its account")

    async def test_first_account_and_settings(self):
        """The setup code makes the first admin once; setting_or_insert keeps the first value."""
        await self._db()
        await self.q(db.setting_or_insert, "code", "digest")
        self.assertIsNone(await self.q(db.create_first_account, "code", "wrong", "boss", "h", T))
        account = await self.q(db.create_first_account, "code", "digest", "boss", "h", T)
        self.assertTrue(account.is_admin)
        self.assertIsNone(await self.q(db.get_setting, "code"))
        await self.q(db.setting_or_insert, "code", "digest")
        self.assertIsNone(await self.q(db.create_first_account, "code", "digest", "other", "h", T),
                          "not once an account exists")
        self.assertEqual(await self.q(db.setting_or_insert, "secret", "first"), "first")
        self.assertEqual(await self.q(db.setting_or_insert, "secret", "second"), "first")

    async def _grant(self, grant_id="ab" * 16, digest="cd" * 32, expires=T + 900):
        if await self.q(db.get_account, "kitten") is None:
            await self.q(db.create_account, "kitten", "h", False, T)
        return await self.q(db.create_grant, grant_id, "kitten", digest, "a.jpg", 100, True, None, "1d", T, expires)

    async def test_upload_grants(self):
        """A grant's life: PUT attempts counted while open, staged once, claimed by one
        completion at a time (a dead holder's claim freed by its lease), given back,
        spent only under its claim, then swept."""
        await self._db()
        grant = await self._grant()
        self.assertEqual((grant.state, grant.keep_name, grant.expire, grant.put_attempts), ("open", True, "1d", 0))
        self.assertEqual(await self.q(db.claim_grant, "cd" * 32, "kitten", "c0", T, T + 300), ("not_staged", None))
        self.assertEqual(await self.q(db.begin_grant_put, grant.id, T, 2), 1)
        self.assertEqual(await self.q(db.begin_grant_put, grant.id, T, 2), 2)
        self.assertIsNone(await self.q(db.begin_grant_put, grant.id, T, 2), "out of attempts")
        self.assertTrue(await self.q(db.stage_grant, grant.id, 2, 90, "ef" * 32, T))
        self.assertFalse(await self.q(db.stage_grant, grant.id, 1, 90, "ef" * 32, T), "staged once")
        self.assertEqual(await self.q(db.claim_grant, "cd" * 32, "bear", "c1", T, T + 300), ("other_account", None))
        outcome, claimed = await self.q(db.claim_grant, "cd" * 32, "kitten", "c1", T, T + 300)
        self.assertEqual((outcome, claimed.state, claimed.staged_attempt, claimed.staged_size), ("claimed", "completing", 2, 90))
        self.assertEqual(await self.q(db.claim_grant, "cd" * 32, "kitten", "c2", T + 10, T + 310), ("busy", None))
        outcome, _ = await self.q(db.claim_grant, "cd" * 32, "kitten", "c2", T + 300, T + 600)
        self.assertEqual(outcome, "claimed", "the first holder's lease ran out")
        self.assertFalse(await self.q(db.release_grant, grant.id, "c1"))
        with self.assertRaises(db.NotHeld):
            await self.q(db.spend_grant, grant.id, "c1")
        self.assertTrue(await self.q(db.release_grant, grant.id, "c2"))
        self.assertEqual((await self.q(db.get_grant, grant.id)).state, "staged")
        self.assertEqual(await self.q(db.sweepable_grants, T, T, 10), [])
        await self.q(db.claim_grant, "cd" * 32, "kitten", "c3", T, T + 300)
        await self.q(db.spend_grant, grant.id, "c3")
        self.assertEqual(await self.q(db.claim_grant, "cd" * 32, "kitten", "c4", T, T + 300), ("missing", None))
        self.assertEqual([g.id for g in await self.q(db.sweepable_grants, T, T, 10)], [grant.id], "spent: at once")
        await self.q(db.remove_grant, grant.id)
        self.assertIsNone(await self.q(db.get_grant, grant.id))

    async def test_expired_grants(self):
        """An expired grant takes no PUT and no claim, and is swept once past the grace,
        unless a live claim still holds it."""
        await self._db()
        grant = await self._grant(expires=T + 900)
        self.assertIsNone(await self.q(db.begin_grant_put, grant.id, T + 900, 10))
        self.assertEqual(await self.q(db.sweepable_grants, T + 1000, T + 899, 10), [])
        self.assertEqual([g.id for g in await self.q(db.sweepable_grants, T + 1200, T + 900, 10)], [grant.id])
        held = await self._grant("12" * 16, "34" * 32, expires=T + 900)
        await self.q(db.begin_grant_put, held.id, T, 10)
        await self.q(db.stage_grant, held.id, 1, 5, "ef" * 32, T)
        await self.q(db.claim_grant, "34" * 32, "kitten", "c", T + 800, T + 1100)
        self.assertEqual(await self.q(db.claim_grant, "34" * 32, "kitten", "d", T + 900, T + 1200), ("missing", None))
        swept = [g.id for g in await self.q(db.sweepable_grants, T + 1000, T + 950, 10)]
        self.assertEqual(swept, [grant.id], "the held grant waits for its claim to end")
        swept = [g.id for g in await self.q(db.sweepable_grants, T + 1100, T + 950, 10)]
        self.assertEqual(sorted(swept), sorted([grant.id, held.id]))

    async def test_grant_spent_with_the_image_commit(self):
        """commit_image runs ``also`` in its transaction: under a lost claim the image stays
        uncommitted and the grant untouched; under the live claim both commit together."""
        await self._db()
        grant = await self._grant()
        await self.q(db.begin_grant_put, grant.id, T, 10)
        await self.q(db.stage_grant, grant.id, 1, 5, "ef" * 32, T)
        await self.q(db.claim_grant, "cd" * 32, "kitten", "mine", T, T + 300)
        image = await self._image(live=False)
        with self.assertRaises(db.NotHeld):
            await self.q(db.commit_image, image.id, T, (db.spend_grant, grant.id, "not mine"))
        self.assertEqual((await self.q(db.get_image, "kitten", image.name)).state, UPLOADING)
        self.assertFalse(await self.q(db.has_job, image.id), "rolled back with the grant")
        self.assertEqual((await self.q(db.get_grant, grant.id)).state, "completing")
        live = await self.q(db.commit_image, image.id, T, (db.spend_grant, grant.id, "mine"))
        self.assertEqual(live.state, LIVE)
        self.assertEqual((await self.q(db.get_grant, grant.id)).state, "spent")
