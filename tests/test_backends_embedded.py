"""The embedded backends (SQLite, local files) and the memory fake pass the contracts."""

from __future__ import annotations

import os

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial import unittest

from imgshare import backends
from imgshare.plugins.localfiles import LocalStorage
from imgshare.plugins.sqlite import SqliteDatabase, path_from_url
from imgshare.storage import check_key
from imgshare.testing import MemoryStorage, open_sqlite, open_sqlite_sync
from imgshare.threads import InlineRunner
from tests.db_contract import DatabaseContract
from tests.storage_contract import StorageContract


class SqliteContractTests(DatabaseContract, unittest.TestCase):
    async def make_database(self):
        return await open_sqlite(self)


class SyncSqliteContractTests(DatabaseContract, unittest.TestCase):
    """The synchronous SQLite database of the unit tests, on a file like the threaded one."""

    async def make_database(self):
        return await open_sqlite_sync(self, os.path.join(self.mktemp(), "imgshare.sqlite3"))


class SyncSqliteMemoryContractTests(DatabaseContract, unittest.TestCase):
    """The synchronous SQLite database in memory, as unit tests use it by default."""

    async def make_database(self):
        return await open_sqlite_sync(self)


class SyncSqliteTests(unittest.TestCase):
    def test_run_has_fired(self):
        """Every operation of the synchronous database has its result when run returns:
        no thread, no reactor turn."""
        from imgshare import db

        database = self.successResultOf(Deferred.fromCoroutine(open_sqlite_sync(self)))
        account = self.successResultOf(database.run(db.create_account, "kitten", "h", False, 1.0))
        self.assertEqual(self.successResultOf(database.run(db.get_account, "kitten")), account)
        self.failureResultOf(database.run(db.create_account, "kitten", "h", False, 1.0), db.Conflict)
        self.assertEqual(self.successResultOf(database.run(db.count_accounts)), 1)

    def test_unavailable_when_unreadable(self):
        """A file that is not a database is DatabaseUnavailable (503 material), as on the
        threaded backend; so is every operation of a stopped database."""
        from imgshare import db
        from imgshare.plugins.sqlite import SyncSqliteDatabase

        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"not a database, " * 512)
        database = SyncSqliteDatabase(f"sqlite://{os.path.abspath(path)}")
        self.failureResultOf(database.start(), db.DatabaseUnavailable)
        database = self.successResultOf(Deferred.fromCoroutine(open_sqlite_sync(self)))
        self.successResultOf(database.stop())
        self.failureResultOf(database.run(db.count_accounts), db.DatabaseUnavailable)


class SqliteTests(unittest.TestCase):
    def test_urls(self):
        """sqlite URLs name absolute, relative and in-memory databases."""
        self.assertEqual(path_from_url("sqlite:///var/lib/x.db"), "/var/lib/x.db")
        self.assertEqual(path_from_url("sqlite:rel.db"), "rel.db")
        self.assertEqual(path_from_url("sqlite:///:memory:"), ":memory:")
        self.assertRaises(ValueError, path_from_url, "sqlite://")
        self.assertRaises(ValueError, path_from_url, "postgresql://x/y")

    async def test_survives_reopen(self):
        """Data committed before a restart is there after it, and migrations are not redone."""
        from imgshare import db

        path = os.path.join(self.mktemp(), "x.sqlite3")
        first = SqliteDatabase(f"sqlite://{path}", reactor)
        await first.start()
        await first.run(db.create_account, "kitten", "h", False, 1.0)
        await first.stop()
        second = await open_sqlite(self, path)
        self.assertEqual((await second.run(db.get_account, "kitten")).name, "kitten")

    async def test_single_reads_need_no_thread_and_wait_in_one_when_locked(self):
        """A single read (the lookups of /img/) is answered before ``run`` returns, on the
        reactor's thread; one that meets a lock is run again in the read thread, which
        waits for locks and reports trouble like every read."""
        import sqlite3

        from imgshare import db

        path = os.path.join(self.mktemp(), "x.sqlite3")
        database = await open_sqlite(self, path)
        await database.run(db.create_account, "kitten", "h", False, 1.0)
        answer = database.run(db.get_account, "kitten")
        self.assertTrue(answer.called, "answered at once, no thread hop")
        self.assertEqual((await answer).name, "kitten")
        # A connection that meets a lock (here, one that always does): the read thread's
        # connection answers instead.
        inline = database._inline

        class Locked:
            def cursor(self):
                return self

            def execute(self, sql, params=()):
                raise sqlite3.OperationalError("database is locked")

            def close(self):
                pass

        database._inline = Locked()
        waiting = database.run(db.get_account, "kitten")
        self.assertFalse(waiting.called, "run again in the read thread")
        self.assertEqual((await waiting).name, "kitten")
        database._inline = inline
        self.assertTrue(database.run(db.get_account, "kitten").called, "inline again")

    async def test_listing_skips_index_entries_only(self):
        """The listing's count (the account's counters less its uploads in flight, a range
        of a covering index on (account, state), and its expired rows, a range of
        images_state_expires) and the skip of its page, from either end, read no row
        they do not need; only the page's rows are read from the table, by id."""
        from imgshare import db
        from tests.db_contract import T

        database = await open_sqlite_sync(self)
        await database.run(db.create_account, "kitten", "h", False, T)
        for i in range(3):
            image = await database.run(db.reserve_image, "kitten", f"20260214_{i}.jpg", f"20260214_{i}",
                                       "image/jpeg", 1, 1, 1, "ab" * 32, T + i, None)
            await database.run(db.commit_image, image.id, T)
        search = "SEARCH images USING COVERING INDEX images_search (account=? AND state=?)"
        for offset, expected in [(0, "20260214_2.jpg"), (2, "20260214_0.jpg")]:  # newest end, oldest end
            explaining = _Explaining()
            page, total = await database.run(explaining.run, db.list_images_page, "kitten", T, offset, 1)
            self.assertEqual(([i.name for i in page], total), ([expected], 3))
            count, listing = explaining.plans
            # The uploads in flight: a range of any covering index on (account, state).
            self.assertRegex(count[4], r"^SEARCH images USING COVERING INDEX images_(listing|search|by_size) "
                                       r"\(account=\? AND state=\?\)$")
            self.assertEqual(count[:4] + count[5:], [
                "SCAN CONSTANT ROW", "SCALAR SUBQUERY 1",
                "SEARCH accounts USING INDEX sqlite_autoindex_accounts_1 (name=?)", "SCALAR SUBQUERY 2",
                "SCALAR SUBQUERY 3", "SEARCH images USING INDEX images_state_expires (state=? AND expires<?)"])
            self.assertIn(search, listing)
            self.assertIn("SEARCH images USING INTEGER PRIMARY KEY (rowid=?)", listing)
            self.assertFalse([line for line in listing if line.startswith("SCAN")], listing)

    def test_plugins_found_by_scheme(self):
        """The backend plugins are found by URL scheme; an unknown scheme is explained."""
        self.assertIsInstance(backends.open_database("sqlite:///tmp/x.db", reactor, None), SqliteDatabase)
        self.assertIsInstance(backends.open_storage("file:///tmp/x", reactor, None), LocalStorage)
        with self.assertRaises(ValueError) as e:
            backends.open_storage("ftp://x", reactor, None)
        self.assertIn("file", str(e.exception))


class _Explaining:
    """Runs an operation on a transaction that records the plan (EXPLAIN QUERY PLAN)
    of every statement before running it."""

    def __init__(self) -> None:
        self.plans: list[list[str]] = []

    async def run(self, tx, operation, *args):
        explaining = self

        class Tx:
            def __getattr__(self, name):
                return getattr(tx, name)

            async def execute(self, sql, params=()):
                rows = await tx.execute("EXPLAIN QUERY PLAN " + sql, params)
                explaining.plans.append([row[-1] for row in rows])
                return await tx.execute(sql, params)

        return await operation(Tx(), *args)


class LocalStorageContractTests(StorageContract, unittest.TestCase):
    async def make_storage(self):
        storage = LocalStorage("file:///x", self.mktemp(), InlineRunner())
        await storage.start()
        return storage


class MemoryStorageContractTests(StorageContract, unittest.TestCase):
    async def make_storage(self):
        return MemoryStorage()


class LocalStorageTests(unittest.TestCase):
    def test_hostile_keys_refused(self):
        """Keys that could leave the storage folder are refused."""
        for key in ["", "../x", "a/../b", "/etc/passwd", "a//b", ".hidden/x", "a/.tmp-1", "a\\..\\b", "a/b\x00"]:
            self.assertRaises(ValueError, check_key, key)
        self.assertEqual(check_key("kitten/xga/20260214_a.jpg"), ["kitten", "xga", "20260214_a.jpg"])

    async def test_no_partial_file_visible(self):
        """A write that fails midway leaves neither a partial object nor a temp file."""
        root = self.mktemp()
        storage = LocalStorage("file:///x", root, InlineRunner())
        await storage.start()
        from imgshare.storage import StorageUnavailable

        with self.assertRaises(StorageUnavailable):
            await storage.put("kitten/20260214_a.jpg", os.path.join(root, "no-such-source"), "image/jpeg")
        self.assertEqual(os.listdir(os.path.join(root, "kitten")), [])


class SetupCodeTests(unittest.TestCase):
    async def test_processes_agree_on_the_setup_code(self):
        """Two processes starting on an empty database log the same one-time setup code,
        and a restart logs it again instead of voiding it."""
        from twisted.internet.defer import gatherResults

        from imgshare import db
        from imgshare.accounts import SETUP_CODE_SETTING

        database = await open_sqlite(self)
        first, second = await gatherResults([
            database.run(db.setting_or_insert, SETUP_CODE_SETTING, "code-one"),
            database.run(db.setting_or_insert, SETUP_CODE_SETTING, "code-two"),
        ])
        self.assertEqual(first, second)
        self.assertEqual(await database.run(db.get_setting, SETUP_CODE_SETTING), first)
