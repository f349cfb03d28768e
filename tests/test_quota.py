"""Storage quotas and account usage: the rules in words, the counters of schema 010 on
SQLite and PostgreSQL (racing reservations included), the 413 on every upload path,
/account, the ``imgshare user quota`` verb, and racing uploads against a real twistd."""

from __future__ import annotations

import base64
import html
import io
import json
import os

from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.trial import unittest
from twisted.web.client import Agent, HTTPConnectionPool

from imgshare import db
from imgshare.cli import Console, build_parser, run_command
from imgshare.domain import quota
from imgshare.domain.records import DELETED, Usage
from imgshare.expiry import expire_once
from imgshare.testing import (
    T0,
    image_bytes,
    make_fixture,
    multipart,
    open_sqlite,
    open_sqlite_sync,
)
from tests.db_contract import T
from tests.serverprocess import ServerProcess, admin
from tests.test_gather import fixture_with_source
from tests.test_pages import PASSWORD, Browser, csrf_of, location

B = "http://img.example"
KiB = 1024
MiB = 1024 * KiB
PHOTO = image_bytes("JPEG", (64, 48))
SIZE = len(PHOTO)


class Clock:
    def seconds(self):
        return T0


# ------------------------------------------------------------------ the rules


class QuotaRuleTests(unittest.TestCase):
    def test_parse_sizes(self):
        """Sizes take the server's units (MB in powers of 1000, MiB of 1024) and ``none``
        lifts the limit; anything else is one clear error."""
        self.assertEqual(quota.parse_quota_bytes("500MB"), 500_000_000)
        self.assertEqual(quota.parse_quota_bytes("2GiB"), 2 * 1024 * MiB)
        self.assertEqual(quota.parse_quota_bytes(" 1048576 "), MiB)
        for lifted in ("none", "None", "unlimited", "off"):
            self.assertIsNone(quota.parse_quota_bytes(lifted))
        for bad in ("", "abc", "0", "-5MB", "5 parsecs", "2PiB", "99999999999999999999TB"):
            with self.assertRaises(ValueError) as caught:
                quota.parse_quota_bytes(bad)
            self.assertIn("invalid quota", str(caught.exception))

    def test_parse_image_counts(self):
        """An image limit is a whole number of at least 1, or ``none``."""
        self.assertEqual(quota.parse_quota_images("500"), 500)
        self.assertIsNone(quota.parse_quota_images("none"))
        for bad in ("0", "-1", "1.5", "ten", "", "١٢"):
            with self.assertRaises(ValueError):
                quota.parse_quota_images(bad)

    def test_refusal_in_words(self):
        """The refusal says which quota is full and how full, in the pages' words; what
        fits exactly is taken."""
        usage = Usage("kitten", 3, 9_800_000, 10 * MiB, None)
        self.assertEqual(quota.refusal(usage, 1_200_000),
                         "Storage quota full: 9.3 MiB of 10.0 MiB used; this file is 1.1 MiB.")
        self.assertIsNone(quota.refusal(usage, 10 * MiB - 9_800_000))
        self.assertEqual(quota.refusal(Usage("kitten", 2, 100, None, 2), 1), "Image quota full: 2 of 2 images used.")
        self.assertIsNone(quota.refusal(Usage("kitten", 2, 100, None, None), 10**12))
        full = Usage("kitten", 1, 10 * MiB, 10 * MiB, None)
        self.assertEqual(quota.refusal(full, None), "Storage quota full: 10.0 MiB of 10.0 MiB used.")
        self.assertIsNone(quota.refusal(Usage("kitten", 1, 10 * MiB - 1, 10 * MiB, None), None))
        with self.assertRaises(quota.QuotaFull) as caught:
            quota.check(full, 1)
        self.assertEqual(caught.exception.status, 413)

    def test_usage_in_words(self):
        """Usage against the limits, and the limits alone, in words."""
        self.assertEqual(quota.usage_in_words(Usage("k", 1, 532, None, None)), "1 image, 532 bytes")
        self.assertEqual(quota.usage_in_words(Usage("k", 12, 3 * MiB, 10 * MiB, 500)),
                         "12 of 500 images, 3.0 MiB of 10.0 MiB (30%)")
        self.assertEqual(quota.usage_in_words(Usage("k", 2, 20 * MiB, 10 * MiB, None)),
                         "2 images, 20.0 MiB of 10.0 MiB (100%)")
        self.assertEqual(quota.quota_in_words(Usage("k", 0, 0, None, None)), "no limit")
        self.assertEqual(quota.quota_in_words(Usage("k", 0, 0, 10 * MiB, 5)), "10.0 MiB, 5 images")


# ------------------------------------------------------------ the counters


class QuotaContract:
    """The usage counters and quotas of schema 010, on every database backend."""

    async def make_database(self):
        raise NotImplementedError

    async def setUp(self):
        self.database = await self.make_database()
        await self.q(db.create_account, "kitten", "h", False, T)

    def q(self, *args):
        return self.database.run(*args)

    async def usage(self, account="kitten"):
        return await self.q(db.account_usage, account)

    async def reserve(self, name, size=10, account="kitten", expires=None, now=T):
        return await self.q(db.reserve_image, account, name, name.rsplit(".", 1)[0], "image/jpeg", size, 4, 3,
                            "ab" * 32, now, expires)

    async def live(self, name, size=10, **kwargs):
        image = await self.reserve(name, size, **kwargs)
        return await self.q(db.commit_image, image.id, kwargs.get("now", T))

    async def counted(self, account="kitten"):
        """(images, bytes) straight from the rows, to compare with the counters."""
        async def count(tx):
            rows = await tx.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM images "
                                    "WHERE account = ? AND state <> ?", (account, DELETED))
            return tuple(rows[0])

        return await self.q(count)

    async def assertCounters(self, images, stored, account="kitten"):
        usage = await self.usage(account)
        self.assertEqual((usage.images, usage.bytes), (images, stored))
        self.assertEqual(await self.counted(account), (images, stored))

    async def test_new_account_holds_nothing(self):
        """A new account counts no image and has no quota; an unknown one has no usage."""
        self.assertEqual(await self.usage(), Usage("kitten", 0, 0, None, None))
        self.assertIsNone(await self.usage("nobody"))
        self.assertIsNone(await self.q(db.set_quota, "nobody", 10, None))

    async def test_counters_follow_every_change(self):
        """A reservation counts at once (an upload in flight holds its share); its commit
        changes nothing; a discard, an abandoned upload, a delete and the purge of an expired
        image give their share back, each once; a deleted image's purge gives nothing."""
        first = await self.reserve("20260214_a.jpg", 100)
        await self.assertCounters(1, 100)
        await self.q(db.commit_image, first.id, T)
        await self.assertCounters(1, 100)
        discarded = await self.reserve("20260214_b.jpg", 20)
        await self.assertCounters(2, 120)
        await self.q(db.discard_image, discarded.id)
        await self.q(db.discard_image, discarded.id)
        await self.assertCounters(1, 100)
        abandoned = await self.reserve("20260214_c.jpg", 30)
        self.assertEqual(await self.q(db.abandon_upload, abandoned.id, T), DELETED)
        self.assertEqual(await self.q(db.abandon_upload, abandoned.id, T), DELETED)
        await self.assertCounters(1, 100)
        await self.q(db.remove_image, abandoned.id)
        await self.assertCounters(1, 100)
        self.assertTrue(await self.q(db.mark_deleted, first.id, T + 1))
        self.assertFalse(await self.q(db.mark_deleted, first.id, T + 1))
        await self.assertCounters(0, 0)
        await self.q(db.remove_image, first.id)
        await self.assertCounters(0, 0)
        expiring = await self.live("20260214_d.jpg", 40, expires=T + 60)
        await self.assertCounters(1, 40)  # expired but not purged yet: it still holds storage
        self.assertTrue(await self.q(db.claim_purge, expiring.id, T + 61, T - 3600, 600))
        await self.q(db.remove_image, expiring.id)
        await self.assertCounters(0, 0)
        stale = await self.reserve("20260214_e.jpg", 50)
        await self.q(db.remove_image, stale.id)  # an upload abandoned by a crash, purged
        await self.assertCounters(0, 0)

    async def test_batch_removal_gives_back_per_account(self):
        """``remove_images`` of a batch over two accounts, spanning several of its
        statements' chunks: every row goes (with its job and variants), each account's
        counters lose what its images not deleted before held, and nothing else."""
        self.patch(db, "_REMOVE_CHUNK", 2)
        await self.q(db.create_account, "bear", "h", False, T)
        kept = await self.live("20260214_k.jpg", 7)
        batch = [await self.live(f"20260214_{i}.jpg", 10 + i) for i in range(3)]
        batch += [await self.live(f"20260214_b{i}.jpg", 100 + i, account="bear") for i in range(2)]
        self.assertTrue(await self.q(db.mark_deleted, batch[0].id, T + 1))  # gave back at its delete
        await self.assertCounters(3, 7 + 11 + 12)
        await self.assertCounters(2, 201, "bear")
        await self.q(db.remove_images, [(i.account, i.id) for i in reversed(batch)])
        await self.assertCounters(1, 7)
        await self.assertCounters(0, 0, "bear")

        async def left(tx):
            return [tuple(r) for r in await tx.execute(
                "SELECT (SELECT COUNT(*) FROM images), (SELECT COUNT(*) FROM jobs), (SELECT COUNT(*) FROM variants)")]

        self.assertEqual(await self.q(left), [(1, 1, 0)])  # the kept image and its job
        self.assertEqual((await self.q(db.get_image, "kitten", kept.name)).id, kept.id)
        await self.q(db.remove_images, [])

    async def test_storage_quota_refuses_what_would_pass_it(self):
        """With a byte quota a reservation that fits exactly is taken; one byte more is
        OverQuota with the usage, and nothing is reserved or counted."""
        usage = await self.q(db.set_quota, "kitten", 100, None)
        self.assertEqual(usage, Usage("kitten", 0, 0, 100, None))
        await self.reserve("20260214_a.jpg", 60)
        with self.assertRaises(db.OverQuota) as caught:
            await self.reserve("20260214_b.jpg", 41)
        self.assertEqual(caught.exception.usage, Usage("kitten", 1, 60, 100, None))
        self.assertEqual(caught.exception.size, 41)
        self.assertIsNone(await self.q(db.get_image, "kitten", "20260214_b.jpg"))
        await self.assertCounters(1, 60)
        await self.reserve("20260214_b.jpg", 40)
        await self.assertCounters(2, 100)
        await self.q(db.set_quota, "kitten", None, None)  # lifted
        await self.reserve("20260214_c.jpg", 10**9)
        await self.assertCounters(3, 100 + 10**9)

    async def test_image_quota(self):
        """An image-count quota refuses the image past it, whatever its size; a delete makes room."""
        await self.q(db.set_quota, "kitten", None, 2)
        first = await self.live("20260214_a.jpg")
        await self.live("20260214_b.jpg")
        with self.assertRaises(db.OverQuota):
            await self.reserve("20260214_c.jpg", 1)
        await self.q(db.mark_deleted, first.id, T)
        await self.reserve("20260214_c.jpg", 1)
        await self.assertCounters(2, 11)

    async def test_lowering_a_quota_keeps_what_is_held(self):
        """A quota set below what the account holds keeps its images and refuses new ones."""
        await self.live("20260214_a.jpg", 500)
        usage = await self.q(db.set_quota, "kitten", 100, None)
        self.assertEqual((usage.bytes, usage.quota_bytes), (500, 100))
        self.assertIsNotNone(await self.q(db.get_image, "kitten", "20260214_a.jpg"))
        with self.assertRaises(db.OverQuota):
            await self.reserve("20260214_b.jpg", 1)

    async def test_a_refused_name_counts_nothing(self):
        """A reservation refused for its name (Conflict) rolls its count back with it;
        one for a removed account is AccountGone."""
        await self.reserve("20260214_a.jpg", 10)
        with self.assertRaises(db.Conflict):
            await self.reserve("20260214_a.jpg", 10)
        await self.assertCounters(1, 10)
        with self.assertRaises(db.AccountGone):
            await self.reserve("20260214_z.jpg", 10, account="nobody")

    async def test_accounts_are_counted_apart(self):
        """Each account counts its own images; removing one drops its counters, and a new
        account of another name starts at nothing."""
        await self.q(db.create_account, "bear", "h", False, T)
        await self.live("20260214_a.jpg", 10)
        await self.live("20260214_a.jpg", 70, account="bear")
        await self.assertCounters(1, 10)
        await self.assertCounters(1, 70, account="bear")
        self.assertEqual([(u.account, u.bytes) for u in await self.q(db.list_usage)], [("bear", 70), ("kitten", 10)])
        self.assertTrue(await self.q(db.delete_account, "bear", T))
        self.assertIsNone(await self.usage("bear"))
        await self.assertCounters(1, 10)

    async def test_backfill(self):
        """Migration 010 counts the rows there are: reserved and live (expired too), not deleted."""
        await self.live("20260214_a.jpg", 10)
        await self.live("20260214_b.jpg", 20, expires=T + 1)
        await self.reserve("20260214_c.jpg", 30)
        gone = await self.live("20260214_d.jpg", 40)
        await self.q(db.mark_deleted, gone.id, T)

        async def forget_and_backfill(tx):
            await tx.execute("UPDATE accounts SET image_count = 0, image_bytes = 0")
            script = dict(db.schema_files(self.database.dialect))[10]
            for statement in db.split_statements(script):
                if statement.startswith("UPDATE"):
                    await tx.execute(statement.rstrip(";"))

        await self.q(forget_and_backfill)
        await self.assertCounters(3, 60)


class SqliteQuotaContractTests(QuotaContract, unittest.TestCase):
    async def make_database(self):
        return await open_sqlite(self)


class SyncSqliteQuotaContractTests(QuotaContract, unittest.TestCase):
    async def make_database(self):
        return await open_sqlite_sync(self)


class PostgresQuotaContractTests(QuotaContract, unittest.TestCase):
    timeout = 120

    async def make_database(self):
        from tests.test_backends_production import open_postgres

        return await open_postgres(self, pool_size=8)

    async def test_racing_reservations_never_pass_the_quota(self):
        """Forty reservations racing on eight connections for the last bytes of a quota:
        exactly as many as fit are taken, the rest are OverQuota, and the counters equal
        the rows.  Each holds its row lock a moment, so they really overlap."""
        await self.q(db.set_quota, "kitten", 1000, None)
        await self.live("20260214_first.jpg", 380)  # 620 bytes left: six of 100 fit

        async def reserve_slowly(tx, number):
            image = await db.reserve_image(tx, "kitten", f"20260214_{number}.jpg", f"20260214_{number}",
                                           "image/jpeg", 100, 4, 3, "ab" * 32, T, None)
            await tx.execute("SELECT pg_sleep(0.01)")
            return image

        outcomes = []

        async def attempt(number):
            try:
                outcomes.append(await self.q(reserve_slowly, number))
            except db.OverQuota as e:
                self.assertLessEqual(e.usage.bytes, 1000)
                outcomes.append(None)

        await gatherResults([Deferred.fromCoroutine(attempt(n)) for n in range(40)])
        self.assertEqual(sum(o is not None for o in outcomes), 6)
        await self.assertCounters(7, 980)

    async def test_racing_deletes_and_reservations(self):
        """Deletes, purges and reservations of one account racing on eight connections
        never deadlock and leave the counters equal to the rows."""
        images = [await self.live(f"20260214_old{n}.jpg", 10) for n in range(12)]

        async def delete_then_purge(image):
            await self.q(db.mark_deleted, image.id, T)
            await self.q(db.remove_image, image.id)

        async def reserve_one(number):
            image = await self.reserve(f"20260214_new{number}.jpg", 5)
            if number % 2:
                await self.q(db.commit_image, image.id, T)
            else:
                await self.q(db.abandon_upload, image.id, T)

        work = [delete_then_purge(i) for i in images] + [reserve_one(n) for n in range(12)]
        await gatherResults([Deferred.fromCoroutine(w) for w in work])
        await self.assertCounters(6, 30)


# ------------------------------------------------------------- the uploads


class QuotaUploadTestCase(unittest.TestCase):
    """A fixture whose account kitten may hold one PHOTO and a half: the second is refused."""

    async def setUp(self):
        await fixture_with_source(self)
        await self.f.database.run(db.set_quota, "kitten", SIZE + SIZE // 2, None)
        self.first = await self.api_upload()

    async def api_upload(self):
        body, headers = multipart({"token": self.token}, {"file": ("a.jpg", PHOTO)})
        response, out = await self.client.request("POST", B + "/api/v1/img_upload.php", data=body, headers=headers)
        self.assertEqual(response.code, 200, out)
        return json.loads(out)

    async def assertNothingStored(self):
        """The refusal changed nothing: one image, its bytes, one object."""
        usage = await self.f.database.run(db.account_usage, "kitten")
        self.assertEqual((usage.images, usage.bytes), (1, SIZE))
        self.assertEqual([k for k in self.f.storage.objects if not k.startswith("_staging/")],
                         [f"kitten/{self.first['file']}"])

    FULL = (f"Storage quota full: {quota.words.size_in_words(SIZE)} of "
            f"{quota.words.size_in_words(SIZE + SIZE // 2)} used; this file is {quota.words.size_in_words(SIZE)}.")


class QuotaUploadTests(QuotaUploadTestCase):
    async def test_img_upload_php(self):
        """/api/v1/img_upload.php answers 413 with the SPEC error and the quota in words."""
        body, headers = multipart({"token": self.token}, {"file": ("b.jpg", PHOTO)})
        response, out = await self.client.request("POST", B + "/api/v1/img_upload.php", data=body, headers=headers)
        self.assertEqual(response.code, 413, out)
        self.assertEqual(json.loads(out), {"status": "error", "error": self.FULL})
        await self.assertNothingStored()

    async def test_fits_after_a_delete(self):
        """Deleting an image gives its share back at once: the next upload fits."""
        response, _ = await self.client.request("POST", B + "/api/v1/img_delete.php",
                                                data={"token": self.token, "file": self.first["file"]})
        self.assertEqual(response.code, 200)
        await self.api_upload()

    async def test_json_api_batch(self):
        """/api/v1/upload: in a batch each file is held to the quota on its own (the one that
        fits is stored, the next is an entry with the refusal); all refused is 413."""
        await self.f.database.run(db.set_quota, "kitten", 2 * SIZE, None)
        body, headers = multipart({}, {"file": ("b.jpg", PHOTO), "file2": ("c.jpg", PHOTO)})
        bearer = {b"Authorization": [f"Bearer {self.token}".encode()]}
        response, out = await self.client.request("POST", B + "/api/v1/upload", data=body,
                                                  headers={**headers, **bearer})
        answer = json.loads(out)
        self.assertEqual(response.code, 200, answer)
        self.assertIn("url", answer["images"][0])
        self.assertEqual(answer["images"][1]["error"],
                         "Storage quota full: " + f"{quota.words.size_in_words(2 * SIZE)} of "
                         f"{quota.words.size_in_words(2 * SIZE)} used; this file is {quota.words.size_in_words(SIZE)}.")
        response, out = await self.client.request("POST", B + "/api/v1/upload", data=body,
                                                  headers={**headers, **bearer})
        self.assertEqual(response.code, 413, out)
        self.assertEqual(json.loads(out)["error"], "Storage quota full: "
                         f"{quota.words.size_in_words(2 * SIZE)} of {quota.words.size_in_words(2 * SIZE)} used.")
        self.assertEqual(len([k for k in self.f.storage.objects if "/" in k]), 2)

    async def test_json_api_single_file(self):
        """/api/v1/upload with one file past the quota is 413 in the family's error shape."""
        body, headers = multipart({}, {"file": ("b.jpg", PHOTO)})
        response, out = await self.client.request(
            "POST", B + "/api/v1/upload", data=body,
            headers={**headers, b"Authorization": [f"Bearer {self.token}".encode()]})
        self.assertEqual(response.code, 413, out)
        answer = json.loads(out)
        self.assertEqual((answer["success"], answer["error"]), (False, self.FULL))
        await self.assertNothingStored()

    async def test_presign_refused_when_full(self):
        """A presigned upload is refused at grant time when its declared size does not fit;
        one that fits is granted, and refused at completion if the room went meanwhile:
        its grant is spent and its staged bytes swept."""
        bearer = {b"Authorization": [f"Bearer {self.token}".encode()], b"Content-Type": [b"application/json"]}
        ask = json.dumps({"filename": "b.jpg", "contentType": "image/jpeg", "sizeBytes": SIZE}).encode()
        response, out = await self.client.request("POST", B + "/api/v1/upload/presign", data=ask, headers=bearer)
        self.assertEqual(response.code, 413, out)
        self.assertEqual(json.loads(out)["error"], self.FULL)
        self.assertEqual(await self._grants(), 0)

        await self.f.database.run(db.set_quota, "kitten", 2 * SIZE, None)
        response, out = await self.client.request("POST", B + "/api/v1/upload/presign", data=ask, headers=bearer)
        self.assertEqual(response.code, 200, out)
        grant = json.loads(out)
        put_path = grant["put_url"].split("://", 1)[1].partition("/")[2]
        response, out = await self.client.request("PUT", f"{B}/{put_path}", data=PHOTO)
        self.assertEqual(response.code, 200, out)
        await self.f.database.run(db.set_quota, "kitten", SIZE + SIZE // 2, None)
        done = json.dumps({"completion_token": grant["completion_token"]}).encode()
        response, out = await self.client.request("POST", B + "/api/v1/upload/complete", data=done, headers=bearer)
        self.assertEqual(response.code, 413, out)
        self.assertEqual(json.loads(out)["error"], self.FULL)
        response, out = await self.client.request("POST", B + "/api/v1/upload/complete", data=done, headers=bearer)
        self.assertEqual(response.code, 404, out)  # spent: presign again once there is room
        await expire_once(self.f.database, self.f.library, self.f.clock.seconds() + 3600,
                          self.f.components.presigned)
        await self.assertNothingStored()
        self.assertEqual([k for k in self.f.storage.objects if k.startswith("_staging/")], [])

    async def test_presign_batch(self):
        """In a presign batch each entry is held to the quota on its own: one that does not
        fit is an entry with the refusal and status 413, the others are granted."""
        bearer = {b"Authorization": [f"Bearer {self.token}".encode()], b"Content-Type": [b"application/json"]}
        ask = json.dumps({"files": [{"filename": "b.jpg", "contentType": "image/jpeg", "sizeBytes": SIZE // 4},
                                    {"filename": "c.jpg", "contentType": "image/jpeg", "sizeBytes": SIZE}]})
        response, out = await self.client.request("POST", B + "/api/v1/upload/presign/batch", data=ask.encode(),
                                                  headers=bearer)
        self.assertEqual(response.code, 200, out)
        first, second = json.loads(out)["uploads"]
        self.assertIn("put_url", first)
        self.assertEqual(second, {"error": self.FULL, "status": 413})
        self.assertEqual(await self._grants(), 1)

    async def _grants(self):
        async def count(tx):
            return (await tx.execute("SELECT COUNT(*) FROM upload_grants"))[0][0]

        return await self.f.database.run(count)

    async def test_chevereto_endpoints(self):
        """/api/1/upload and /sharexapi/1/upload answer 413 in Chevereto's error shape,
        before the base64 source is even decoded."""
        await self.f.database.run(db.set_quota, "kitten", SIZE, None)  # full to the byte
        for path in ("/api/1/upload", "/sharexapi/1/upload"):
            body = f"key={self.token}&source={base64.b64encode(PHOTO).decode()}".replace("+", "%2B").encode()
            response, out = await self.client.request(
                "POST", B + path, data=body, headers={b"Content-Type": [b"application/x-www-form-urlencoded"]})
            self.assertEqual(response.code, 413, out)
            self.assertEqual(json.loads(out), {
                "status_code": 413, "error": {"message": "Storage quota full: "
                                              f"{quota.words.size_in_words(SIZE)} of "
                                              f"{quota.words.size_in_words(SIZE)} used.",
                                              "code": 413},
                "status_txt": "Request Entity Too Large"})
        await self.f.database.run(db.set_quota, "kitten", SIZE + SIZE // 2, None)
        await self.f.database.run(db.set_quota, "kitten", None, 1)
        body, headers = multipart({"key": self.token}, {"source": ("b.jpg", PHOTO)})
        response, out = await self.client.request("POST", B + "/api/1/upload", data=body, headers=headers)
        self.assertEqual(response.code, 413, out)
        self.assertEqual(json.loads(out)["error"]["message"], "Image quota full: 1 of 1 image used.")
        await self.assertNothingStored()

    async def test_chevereto_reservation_refusal(self):
        """A Chevereto upload that passes the early check (room left, but not for this
        file) is refused at its reservation, in the same shape."""
        body, headers = multipart({"key": self.token}, {"source": ("b.jpg", PHOTO)})
        response, out = await self.client.request("POST", B + "/sharexapi/1/upload", data=body, headers=headers)
        self.assertEqual(response.code, 413, out)
        self.assertEqual(json.loads(out)["error"], {"message": self.FULL, "code": 413})
        await self.assertNothingStored()

    async def test_gather(self):
        """img_gather.php of a full account fetches nothing and answers 413; the refusal is
        not remembered for the URL (another account, or this one with room, gets the image)."""
        await self.f.database.run(db.set_quota, "kitten", SIZE, None)
        url = self.source.url("/img.jpg")
        response, out = await self.client.request("POST", B + "/api/v1/img_gather.php",
                                                  data={"token": self.token, "url": url})
        self.assertEqual(response.code, 413, out)
        self.assertIn("Storage quota full", json.loads(out)["error"])
        self.assertEqual(self.source.requests, [])
        await self.f.database.run(db.set_quota, "kitten", SIZE + SIZE // 2, None)
        response, out = await self.client.request("POST", B + "/api/v1/img_gather.php",
                                                  data={"token": self.token, "url": url})
        self.assertEqual(response.code, 413, out)  # fetched, then refused at its reservation
        self.assertEqual(len(self.source.requests), 1)
        await self.f.database.run(db.set_quota, "kitten", None, None)
        response, out = await self.client.request("POST", B + "/api/v1/img_gather.php",
                                                  data={"token": self.token, "url": url})
        self.assertEqual(response.code, 200, out)

    async def test_page_upload(self):
        """The page upload (/images/upload) answers 413 with the refusal on the page, and
        the JSON the page's script reads; the file that fits is still stored."""
        browser = Browser(self.f)
        await self._set_password()
        await browser.login()
        token = csrf_of((await browser.get("/images"))[1])
        response, page = await browser.post("/images/upload", {"csrf": token}, files={"file": ("b.jpg", PHOTO)})
        self.assertEqual(response.code, 413, page)
        self.assertIn(self.FULL, html.unescape(page))
        response, out = await browser.post("/images/upload", {"csrf": token}, files={"file": ("b.jpg", PHOTO)},
                                           headers={b"Accept": [b"application/json"]})
        self.assertEqual(response.code, 413)
        self.assertEqual(json.loads(out)["error"], self.FULL)
        await self.assertNothingStored()

    async def _set_password(self):
        from imgshare import auth

        await self.f.database.run(db.set_password_hash, "kitten", auth.hash_password(PASSWORD, b"0" * 16))


# ------------------------------------------------------------------ /account


class AccountPageTests(unittest.TestCase):
    async def setUp(self):
        self.f = await make_fixture(self)
        await self.f.account("boss", PASSWORD)
        await self.f.database.run(db.set_admin, "boss", True)
        await self.f.account("kitten", PASSWORD)
        self.browser = Browser(self.f)

    async def test_usage_without_quota(self):
        """/account tells every user their image count and storage used; no meter without a quota."""
        image = await self.f.database.run(db.reserve_image, "kitten", "20260214_a.jpg", "20260214_a", "image/jpeg",
                                          3 * MiB, 4, 3, "ab" * 32, T0, None)
        await self.f.database.run(db.commit_image, image.id, T0)
        await self.browser.login("kitten")
        response, page = await self.browser.get("/account")
        self.assertEqual(response.code, 200)
        self.assertIn("You have 1 image, using 3.0 MiB. Your account has no quota.", page)
        self.assertNotIn("<meter", page)
        self.assertNotIn("/account/quota", page, "only administrators see the quota forms")

    async def test_usage_near_the_quota(self):
        """Near its quota the page shows a labelled meter with the numbers in words and a warning."""
        await self.f.database.run(db.set_quota, "kitten", 10 * MiB, 50)
        image = await self.f.database.run(db.reserve_image, "kitten", "20260214_a.jpg", "20260214_a", "image/jpeg",
                                          9_500_000, 4, 3, "ab" * 32, T0, None)
        await self.f.database.run(db.commit_image, image.id, T0)
        await self.browser.login("kitten")
        _, page = await self.browser.get("/account")
        self.assertIn("You have 1 image, using 9.1 MiB of your 10.0 MiB quota (90%); 962.7 KiB left, "
                      "at most 50 images.", page)
        self.assertIn('<label for="usage-meter-0">Storage used</label>', page)
        self.assertIn('<meter min="0" optimum="0" id="usage-meter-0" value="9500000" max="10485760"', page)
        self.assertIn("9.1 MiB of 10.0 MiB (90%)", page)
        self.assertIn('<label for="usage-meter-1">Images</label>', page)
        self.assertIn("1 of 50 images", page)
        self.assertIn("Your quota is nearly full", page)
        self.assertIn('class="card usage usage-near"', page)

    async def test_admin_sets_a_quota(self):
        """An administrator sets a quota in the accounts table (CSRF-checked); a bad size is
        a 400 naming the problem and changes nothing; empty fields lift the limits."""
        await self.browser.login("boss")
        _, page = await self.browser.get("/account")
        self.assertIn('<label for="quota-kitten">Storage</label>', page)
        token = csrf_of(page)
        response, _ = await self.browser.post("/account/quota", {"csrf": token, "name": "kitten",
                                                                 "quota": "10MB", "images": "500"})
        self.assertEqual((response.code, location(response)), (303, "/account?done=quota"))
        usage = await self.f.database.run(db.account_usage, "kitten")
        self.assertEqual((usage.quota_bytes, usage.quota_images), (10_000_000, 500))
        _, page = await self.browser.get("/account?done=quota")
        self.assertIn("The quota is set.", page)
        self.assertIn('value="10MB"', page)
        self.assertIn("0 of 500 images, 0 bytes of 9.5 MiB (0%)", page)
        for fields, words in [({"quota": "ten gigs"}, "invalid quota 'ten gigs'"),
                              ({"quota": "1GB", "images": "many"}, "invalid image quota 'many'")]:
            response, page = await self.browser.post("/account/quota", {"csrf": token, "name": "kitten", **fields})
            self.assertEqual(response.code, 400, page)
            self.assertIn(f"The quota of kitten is unchanged: {words}", html.unescape(page))
        self.assertEqual((await self.f.database.run(db.account_usage, "kitten")).quota_bytes, 10_000_000)
        response, _ = await self.browser.post("/account/quota", {"csrf": "0" * 64, "name": "kitten", "quota": "1MB"})
        self.assertEqual(response.code, 403)
        response, _ = await self.browser.post("/account/quota", {"csrf": token, "name": "nobody", "quota": "1MB"})
        self.assertEqual(response.code, 404)
        response, _ = await self.browser.post("/account/quota", {"csrf": token, "name": "kitten", "quota": "",
                                                                 "images": ""})
        self.assertEqual(response.code, 303)
        usage = await self.f.database.run(db.account_usage, "kitten")
        self.assertEqual((usage.quota_bytes, usage.quota_images), (None, None))

    async def test_only_admins_set_quotas(self):
        """A plain user's POST to /account/quota is 403 and changes nothing."""
        await self.browser.login("kitten")
        token = csrf_of((await self.browser.get("/account"))[1])
        response, _ = await self.browser.post("/account/quota", {"csrf": token, "name": "kitten", "quota": "1TB"})
        self.assertEqual(response.code, 403)
        self.assertIsNone((await self.f.database.run(db.account_usage, "kitten")).quota_bytes)


# ----------------------------------------------------------------- the verb


class QuotaCommandTests(unittest.TestCase):
    async def setUp(self):
        self.database = await open_sqlite_sync(self)
        await self.database.run(db.create_account, "kitten", "h", True, T0)
        self.err = ""

    async def cmd(self, *argv):
        out, err = io.StringIO(), io.StringIO()
        console = Console(out, err, io.StringIO(), database="sqlite:///test.sqlite3")
        try:
            await run_command(build_parser().parse_args(list(argv)), self.database, Clock(), console)
        finally:
            self.err = err.getvalue()
        return out.getvalue()

    async def test_set_and_lift(self):
        """``user quota NAME SIZE`` sets the storage limit and keeps the image limit unless
        --images is given; ``none`` lifts either; ``user list`` shows usage against it."""
        self.assertEqual(await self.cmd("user", "quota", "kitten", "500MB", "--images", "100"),
                         "kitten may now hold 476.8 MiB, 100 images; it holds 0 of 100 images, 0 bytes of "
                         "476.8 MiB (0%)\n")
        self.assertEqual(await self.cmd("user", "quota", "kitten", "2GiB"),
                         "kitten may now hold 2.0 GiB, 100 images; it holds 0 of 100 images, 0 bytes of "
                         "2.0 GiB (0%)\n")
        listing = await self.cmd("user", "list")
        self.assertEqual(listing.split("\t")[0], "kitten")
        self.assertTrue(listing.endswith("\t0 of 100 images, 0 bytes of 2.0 GiB (0%)\n"), listing)
        await self.cmd("user", "quota", "kitten", "none", "--images", "none")
        usage = await self.database.run(db.account_usage, "kitten")
        self.assertEqual((usage.quota_bytes, usage.quota_images), (None, None))
        self.assertTrue((await self.cmd("user", "list")).endswith("\t0 images, 0 bytes\n"))

    async def test_bad_input_is_one_line(self):
        """A bad size, a bad image count or an unknown account is one clear error, and nothing changes."""
        from imgshare.cli import CommandError

        for argv, message in [
            (("kitten", "lots"), "invalid quota 'lots': give a size such as 500MB or 2GiB, or none"),
            (("kitten", "1GB", "--images", "0"), "invalid image quota '0': give a whole number of images "
                                                 "(at least 1), or none"),
            (("nobody", "1GB"), "no account 'nobody'"),
        ]:
            with self.assertRaises(CommandError) as caught:
                await self.cmd("user", "quota", *argv)
            self.assertEqual(str(caught.exception), message)
        self.assertIsNone((await self.database.run(db.account_usage, "kitten")).quota_bytes)


class DefaultQuotaTests(unittest.TestCase):
    def test_option(self):
        """``--quota`` (``IMGSHARE_QUOTA``) takes a size or none; a bad one names the option."""
        from imgshare.options import build_config

        self.assertEqual(build_config({"quota": "10GiB"}).default_quota, 10 * 1024 * MiB)
        self.assertIsNone(build_config({"quota": "none"}).default_quota)
        self.assertIsNone(build_config({}).default_quota)
        with self.assertRaises(ValueError) as caught:
            build_config({"quota": "lots"}, {"quota": "IMGSHARE_QUOTA"})
        self.assertIn("IMGSHARE_QUOTA", str(caught.exception))

    async def test_new_accounts_get_the_default(self):
        """Every account made with a default quota gets it (an administrator's, a registered
        one, the command's ``user add``); changing the default changes no existing account."""
        f = await make_fixture(self, default_quota=5 * MiB, registration="open")
        await f.components.accounts.create("boss", "a long password", True)
        self.assertEqual((await f.database.run(db.account_usage, "boss")).quota_bytes, 5 * MiB)
        await f.components.accounts.register("kitten", "another long password")
        self.assertEqual((await f.database.run(db.account_usage, "kitten")).quota_bytes, 5 * MiB)
        out = io.StringIO()
        console = Console(out, io.StringIO(), io.StringIO("a third long password\n"), database="sqlite:///x")
        await run_command(build_parser().parse_args(["user", "add", "bear"]), f.database, Clock(), console,
                          default_quota=MiB)
        self.assertEqual(out.getvalue(), "created account bear, its storage quota 1.0 MiB (IMGSHARE_QUOTA)\n")
        self.assertEqual((await f.database.run(db.account_usage, "bear")).quota_bytes, MiB)
        self.assertEqual((await f.database.run(db.account_usage, "boss")).quota_bytes, 5 * MiB)


class QuotaCommandProcessTests(unittest.TestCase):
    def test_console_script(self):
        """The real console script: ``user quota`` sets the limit, a bad size exits 1 with
        one line on stderr."""
        from tests.serverprocess import run_admin

        data = os.path.abspath(self.mktemp())
        admin(data, "user", "add", "kitten", stdin="a long password\n")
        self.assertIn("kitten may now hold 10.0 MiB", admin(data, "user", "quota", "kitten", "10MiB"))
        done = run_admin(data, "user", "quota", "kitten", "ten")
        self.assertEqual(done.returncode, 1)
        self.assertEqual(done.stderr.splitlines()[-1],
                         "imgshare: invalid quota 'ten': give a size such as 500MB or 2GiB, or none")
        self.assertIn("\t0 images, 0 bytes of 10.0 MiB (0%)", admin(data, "user", "list"))
        self.assertIn("its storage quota 2.0 MiB", admin(data, "user", "add", "bear", stdin="a long password\n",
                                                        IMGSHARE_QUOTA="2MiB"))
        self.assertIn("bear\tuser\t", admin(data, "user", "list"))
        self.assertIn("\t0 images, 0 bytes of 2.0 MiB (0%)", admin(data, "user", "list"))


# ------------------------------------------------------------- end to end


class RacingUploadsEndToEndTests(unittest.TestCase):
    """A real ``twistd imgshare`` (SQLite, local files) taking concurrent uploads that race
    for the last room of a quota."""

    timeout = 120

    async def test_racing_uploads_never_pass_the_quota(self):
        """Twelve uploads at once with room for four: four are stored, eight answer 413 with
        the quota in words, and the account holds exactly the four."""
        data = os.path.abspath(self.mktemp())
        admin(data, "user", "add", "kitten", stdin="a long password\n")
        token = admin(data, "token", "create", "kitten").strip()
        admin(data, "user", "quota", "kitten", f"{4 * SIZE + SIZE // 2}B")
        server = await ServerProcess(data).start()
        self.addCleanup(server.stop)
        http = HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))

        async def upload():
            response = await http.post(server.url + "/api/v1/img_upload.php", data={"token": token},
                                       files={"file": ("a.jpg", "image/jpeg", PHOTO)})
            return response.code, json.loads(await response.content())

        answers = await gatherResults([Deferred.fromCoroutine(upload()) for _ in range(12)])
        self.assertEqual(sorted(code for code, _ in answers), [200] * 4 + [413] * 8, answers)
        refusals = {body["error"] for code, body in answers if code == 413}
        self.assertEqual(refusals, {f"Storage quota full: {quota.words.size_in_words(4 * SIZE)} of "
                                    f"{quota.words.size_in_words(4 * SIZE + SIZE // 2)} used; this file is "
                                    f"{quota.words.size_in_words(SIZE)}."})
        self.assertIn(f"\t4 images, {quota.words.size_in_words(4 * SIZE)} of ", admin(data, "user", "list"))
        self.assertIn("over its quota", server.log())

