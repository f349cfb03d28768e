"""Database faults on the embedded backend, and name clashes past any number of suffixes.

A second ``sqlite3`` connection holds SQLite's write lock, as the admin command or a
second server process may: reads must still answer at once, writes answer 503 (never
500) once ``busy_timeout`` runs out, and an upload whose commit failed leaves neither
its row nor its object behind, nor its name taken.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time

from twisted.internet import reactor
from twisted.internet.task import Clock, deferLater
from twisted.trial import unittest

from imgshare import db
from imgshare.domain import naming
from imgshare.expiry import expire_once
from imgshare.plugins import sqlite as sqlite_plugin
from imgshare.plugins.sqlite import SqliteDatabase
from imgshare.testing import (
    T0,
    Fixture,
    MemoryNetwork,
    MemoryStorage,
    image_bytes,
    multipart,
    test_config,
)

API = "http://img.example/api/v1/img_upload.php"


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


class WriteLock:
    """Another connection to the same file that can hold its write lock."""

    def __init__(self, path: str):
        self.connection = sqlite3.connect(path, isolation_level=None, timeout=5)

    def take(self) -> None:
        self.connection.execute("BEGIN IMMEDIATE")

    def release(self) -> None:
        if self.connection.in_transaction:
            self.connection.execute("ROLLBACK")

    def close(self) -> None:
        self.release()
        self.connection.close()

    def rows(self, sql: str) -> list[tuple]:
        return self.connection.execute(sql).fetchall()


class LockedDatabaseTestCase(unittest.TestCase):
    timeout = 60
    #: busy_timeout of the server's database (production keeps 10 s).
    busy_timeout = 0.3

    async def setUp(self):
        folder = self.mktemp()
        os.makedirs(folder)
        self.path = os.path.join(folder, "imgshare.sqlite3")
        self.database = SqliteDatabase(f"sqlite://{self.path}", reactor, busy_timeout=self.busy_timeout)
        await self.database.start()
        self.addCleanup(self.database.stop)
        self.lock = WriteLock(self.path)
        self.addCleanup(self.lock.close)
        clock = Clock()
        clock.advance(T0)
        data_dir = os.path.join(folder, "data")
        os.makedirs(data_dir)
        self.storage = self.make_storage()
        self.f = Fixture(self, self.database, self.storage, clock, test_config(data_dir),
                         network=MemoryNetwork(live=reactor))  # the database answers from threads
        await self.f.account("kitten")
        self.token = await self.f.token("kitten")
        self.client = self.f.client()

    def make_storage(self):
        return MemoryStorage()

    async def upload(self, filename="photo.jpg", **fields):
        fields = {"token": self.token, "keep_name": "1", **fields}
        body, headers = multipart(fields, {"file": (filename, image_bytes())})
        response, out = await self.client.request("POST", API, data=body, headers=headers)
        return response.code, json.loads(out)


class ReadsWhileLockedTests(LockedDatabaseTestCase):
    busy_timeout = sqlite_plugin.BUSY_TIMEOUT  # the production value: a writer waits 10 s

    async def test_reads_never_wait_behind_a_waiting_writer(self):
        """While a write waits for the lock another connection holds, reads (a single
        SELECT, a read-only transaction, /img/) still answer at once."""
        code, record = await self.upload()
        self.assertEqual(code, 200, record)
        self.lock.take()
        writer = self.database.run(db.setting_or_insert, "k", "v")  # waits on busy_timeout
        await sleep(0.3)
        self.assertFalse(writer.called, "the writer is waiting for the lock")
        started = time.monotonic()
        self.assertEqual((await self.database.run(db.get_account, "kitten")).name, "kitten")
        self.assertEqual(len(await self.database.run(db.list_images, "kitten", T0, 0, 10)), 1)
        response, content = await self.client.request("GET", record["urls"]["original"])
        elapsed = time.monotonic() - started
        self.assertFalse(writer.called, "the writer was still waiting")
        self.lock.release()
        await writer  # and it goes through once the lock is free
        self.assertEqual(await self.database.run(db.get_setting, "k"), "v")
        self.assertEqual(response.code, 200)
        self.assertEqual(content, image_bytes())
        self.assertLess(elapsed, 3.0, f"reads took {elapsed:.2f} s behind a waiting writer")


class LockedWritesTests(LockedDatabaseTestCase):
    async def test_locked_database_answers_503(self):
        """An upload while another connection holds the write lock answers 503 once
        busy_timeout runs out (never 500), stores nothing; /img/ keeps serving."""
        code, first = await self.upload()
        self.assertEqual(code, 200, first)
        self.lock.take()
        started = time.monotonic()
        code, record = await self.upload(filename="other.jpg")
        self.assertEqual((code, record["status"]), (503, "error"), record)
        self.assertLess(time.monotonic() - started, 10)
        response, _ = await self.client.request("GET", first["urls"]["original"])
        self.assertEqual(response.code, 200)
        self.lock.release()
        self.assertEqual(set(self.storage.objects), {f"kitten/{first['file']}"})

    async def test_unwritable_database_answers_503(self):
        """A database that cannot be written (read-only file) answers 503, not 500."""
        async def read_only(tx):
            await tx.execute("PRAGMA query_only = ON")  # on the write connection

        await self.database.run(read_only)
        code, record = await self.upload()
        self.assertEqual(code, 503, record)
        with self.assertRaises(db.DatabaseUnavailable):
            await self.database.run(db.setting_or_insert, "k", "v")

    async def test_mistakes_in_sql_stay_errors(self):
        """A wrong statement is a bug (500), not an outage."""
        async def wrong(tx):
            await tx.execute("SELECT * FROM no_such_table")

        with self.assertRaises(sqlite3.OperationalError):
            await self.database.run(wrong)

    def test_which_errors_are_outages(self):
        """Locks, I/O errors, full disks, unreadable and read-only files are outages;
        SQL mistakes and constraint violations are not."""
        def error(cls, message, code):
            e = cls(message)
            e.sqlite_errorcode = code
            return e

        for e in [error(sqlite3.OperationalError, "database is locked", sqlite3.SQLITE_BUSY),
                  error(sqlite3.OperationalError, "database table is locked", sqlite3.SQLITE_LOCKED),
                  error(sqlite3.OperationalError, "disk I/O error", sqlite3.SQLITE_IOERR | (3 << 8)),
                  error(sqlite3.OperationalError, "database or disk is full", sqlite3.SQLITE_FULL),
                  error(sqlite3.OperationalError, "unable to open database file", sqlite3.SQLITE_CANTOPEN),
                  error(sqlite3.OperationalError, "attempt to write a readonly database", sqlite3.SQLITE_READONLY),
                  error(sqlite3.DatabaseError, "database disk image is malformed", sqlite3.SQLITE_CORRUPT),
                  error(sqlite3.DatabaseError, "file is not a database", sqlite3.SQLITE_NOTADB)]:
            self.assertTrue(sqlite_plugin.is_unavailable(e), e)
        for e in [error(sqlite3.OperationalError, "no such table: x", sqlite3.SQLITE_ERROR),
                  error(sqlite3.IntegrityError, "UNIQUE constraint failed", sqlite3.SQLITE_CONSTRAINT),
                  sqlite3.ProgrammingError("Cannot operate on a closed database."), ValueError("x")]:
            self.assertFalse(sqlite_plugin.is_unavailable(e), e)


class LockingStorage(MemoryStorage):
    """Memory storage that, once armed, takes the database's write lock right after
    storing an object: the upload's commit then finds the database locked."""

    def __init__(self):
        super().__init__()
        self.lock_after_put: WriteLock | None = None

    def put(self, key, path, content_type):
        d = super().put(key, path, content_type)
        if self.lock_after_put is not None:
            self.lock_after_put.take()
            self.lock_after_put = None
        return d


class FailedCommitTests(LockedDatabaseTestCase):
    def make_storage(self):
        return LockingStorage()

    def images(self) -> list[tuple]:
        return self.lock.rows("SELECT name, state FROM images ORDER BY id")

    async def test_failed_commit_leaves_nothing_and_keeps_the_name_free(self):
        """A lock between reserve and commit: 503; once the lock is gone the same kept
        name is stored without _2, and no uploading row or object is left."""
        self.storage.lock_after_put = self.lock
        code, record = await self.upload()
        self.assertEqual(code, 503, record)
        self.lock.release()
        code, record = await self.upload()
        self.assertEqual(code, 200, record)
        self.assertEqual(record["file"], "20260214_photo.jpg")
        self.assertEqual(self.images(), [("20260214_photo.jpg", "live")])
        self.assertEqual(set(self.storage.objects), {"kitten/20260214_photo.jpg"})

    async def test_failed_commit_cleaned_by_the_next_expiry_pass(self):
        """Without a retry, the next expiry pass (not an hour later) removes the row and
        the object a failed commit left."""
        self.storage.lock_after_put = self.lock
        code, record = await self.upload()
        self.assertEqual(code, 503, record)
        self.lock.release()
        await expire_once(self.f.database, self.f.library, self.f.clock.seconds() + 10)
        self.assertEqual(self.images(), [])
        self.assertEqual(self.storage.objects, {})


class ManyClashesTests(LockedDatabaseTestCase):
    async def _taken(self, stems: list[str]) -> None:
        async def insert(tx):
            for stem in stems:
                await db.reserve_image(tx, "kitten", stem + ".jpg", stem, "image/jpeg", 1, 1, 1,
                                       "0" * 64, T0, None)

        await self.database.run(insert)

    async def test_twelve_hundred_clashes(self):
        """With photo, photo_2 ... photo_1200 taken, the next kept photo.jpg is photo_1201
        (no 409, no walk through a thousand candidates), then photo_1202."""
        await self._taken(["20260214_photo"] + [f"20260214_photo_{n}" for n in range(2, 1201)])
        started = time.monotonic()
        code, record = await self.upload()
        self.assertEqual(code, 200, record)
        self.assertEqual(record["file"], "20260214_photo_1201.jpg")
        code, record = await self.upload()
        self.assertEqual(record["file"], "20260214_photo_1202.jpg")
        self.assertLess(time.monotonic() - started, 5)

    async def test_random_names_draw_again(self):
        """A random name that clashes is drawn again, never suffixed."""
        await self._taken(["20260214_aaaaaaaa"])
        draws = iter(["aaaaaaaa", "aaaaaaaa", "bbbbbbbb"])
        self.patch(naming, "random_base", lambda: next(draws))
        code, record = await self.upload(keep_name="0")
        self.assertEqual((code, record["file"]), (200, "20260214_bbbbbbbb.jpg"), record)
