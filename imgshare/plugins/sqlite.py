"""The embedded Database: SQLite through ``twisted.enterprise.adbapi``.

Writes go through one connection in one adbapi thread: SQLite serializes
writers anyway, and a single connection keeps ``BEGIN IMMEDIATE`` transactions
from ever waiting on each other inside the process.  Reads (operations marked
``@readonly``) go through another connection (or several), in a thread of its
own: in WAL mode a reader never waits for a writer, so a write waiting for
another process's lock (``busy_timeout``) never holds up ``/img/``.

A single read (``@single_read``: one SELECT of a row or two by an index, the
lookups of ``/img/``) runs at once on the reactor's thread, on a connection of
its own with no busy timeout: a WAL read takes microseconds and never waits for
a writer, and the hop to a thread and back costs many times that.  Should it
ever meet a lock (a WAL being recovered or reset) or any other trouble, it is
run again in the read thread, which waits and reports as every read does.
WAL mode also lets the admin command read and write while the server runs.

``SyncSqliteDatabase`` is the same database on one connection used in the
caller's thread, for unit tests: no threads, and every ``run`` has already
fired when it returns.

Every failure of the database itself (locked past ``busy_timeout``, full disk,
I/O error, unreadable or read-only file) is ``db.DatabaseUnavailable`` (503);
only mistakes in the SQL stay what they are (500).
"""

from __future__ import annotations

import functools
import os
import sqlite3
from typing import Any
from urllib.parse import unquote, urlsplit

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred, fail, succeed
from twisted.plugin import IPlugin
from twisted.python.failure import Failure
from zope.interface import implementer

from imgshare import db

#: Seconds a write waits for another connection's write lock before it fails (503).
BUSY_TIMEOUT = 10.0
#: Connections (and threads) for reads; writes have their own single connection.
#: One is enough (a read is tens of microseconds) and the cheapest: with several,
#: Twisted's thread pool hands sequential reads to alternating threads, which
#: costs about 15 us of CPU per read.
READ_CONNECTIONS = 1

#: Primary SQLite result codes meaning "the database cannot be used right now"
#: (as opposed to SQLITE_ERROR, a mistake in the SQL, or SQLITE_MISUSE, a bug).
_UNAVAILABLE_CODES = frozenset({
    sqlite3.SQLITE_PERM, sqlite3.SQLITE_ABORT, sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED,
    sqlite3.SQLITE_NOMEM, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_INTERRUPT, sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_FULL, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PROTOCOL,
    sqlite3.SQLITE_NOLFS, sqlite3.SQLITE_AUTH, sqlite3.SQLITE_NOTADB,
})


def is_unavailable(error: BaseException) -> bool:
    """True when ``error`` says the database cannot be used (locked, full, I/O error,
    unreadable, read-only), not that an operation is wrong."""
    if not isinstance(error, sqlite3.DatabaseError) or isinstance(
        error, sqlite3.IntegrityError | sqlite3.ProgrammingError | sqlite3.DataError | sqlite3.NotSupportedError
    ):
        return False
    code = getattr(error, "sqlite_errorcode", None)
    if code is None:  # raised by the module, not by SQLite: trust the class
        return True
    return (code & 0xFF) in _UNAVAILABLE_CODES


def _translate(failure: Failure) -> Failure:
    if is_unavailable(failure.value):
        raise db.DatabaseUnavailable(str(failure.value)) from failure.value
    return failure


def drive(coro: Any) -> Any:
    """Run a coroutine that never suspends to completion; return its result."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise RuntimeError("a SQLite operation tried to wait for something")


class _SqliteTx:
    """A ``db.Tx`` on a SQLite cursor.  No row locks (writers hold the database's one
    write lock from ``BEGIN IMMEDIATE`` on), so the locking clauses are empty and
    ``lock`` has nothing to do."""

    share_lock = ""
    update_lock = ""
    skip_locked = ""
    least = "MIN"
    greatest = "MAX"
    byte_order = ""  # SQLite compares text byte by byte (BINARY) unless told otherwise
    search_key = ""  # SQLite's LIKE ignores the case of ASCII letters

    def __init__(self, cursor: Any):
        self._cursor = cursor

    @staticmethod
    def positive_number(expr: str) -> str:
        return f"{expr} GLOB '[1-9]*' AND {expr} NOT GLOB '*[^0-9]*'"

    async def lock(self, key: str) -> None:
        pass

    async def execute(self, sql: str, params: Any = ()) -> list[tuple]:
        try:
            self._cursor.execute(sql, tuple(params))
        except sqlite3.IntegrityError as e:
            raise db.Conflict(str(e)) from e
        except sqlite3.DatabaseError as e:
            if is_unavailable(e):
                raise db.DatabaseUnavailable(str(e)) from e
            raise
        return self._cursor.fetchall()


def _prepare(connection: sqlite3.Connection, busy_timeout: float, reader: bool) -> None:
    connection.isolation_level = None  # transactions are begun explicitly
    pragmas = [f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}"]
    if reader:
        pragmas.append("PRAGMA query_only = ON")  # a read connection never writes
    else:
        pragmas += ["PRAGMA journal_mode = WAL", "PRAGMA synchronous = FULL"]
    for pragma in pragmas:
        connection.execute(pragma)


def _begin(operation: Any) -> str | None:
    """How a transaction for ``operation`` begins: ``BEGIN IMMEDIATE`` (take the write
    lock at once), ``BEGIN`` for one that only reads, nothing for a single read."""
    if getattr(operation, "single_statement", False):
        return None
    return "BEGIN" if getattr(operation, "readonly", False) else "BEGIN IMMEDIATE"


#: The write connection's ``synchronous`` setting for a durable commit (False) and for a
#: ``db.recoverable`` one (True): in WAL mode, NORMAL leaves the WAL's fsync to the next
#: FULL commit (or checkpoint), which makes every earlier commit durable with it.
_SYNCHRONOUS = {False: "PRAGMA synchronous = FULL", True: "PRAGMA synchronous = NORMAL"}


def path_from_url(url: str) -> str:
    """``sqlite:///abs/path.sqlite3`` -> ``/abs/path.sqlite3``; ``sqlite:rel.db`` -> ``rel.db``."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite":
        raise ValueError(f"not a sqlite URL: {url!r}")
    path = unquote(parts.netloc + parts.path)
    if path in ("/:memory:", ":memory:"):
        return ":memory:"
    if not path:
        raise ValueError("a sqlite URL needs a path, e.g. sqlite:///var/lib/imgshare/db.sqlite3")
    return path


@implementer(db.IDatabase)
class SqliteDatabase:
    """An IDatabase on one SQLite file.

    ``busy_timeout``: seconds a write waits for a lock held by another process
    (the admin command, a second server) before it fails with DatabaseUnavailable.
    ``readers``: connections for reads (0: everything on the write connection,
    as an in-memory database must, since each connection would see its own).
    """

    dialect = "sqlite"

    def __init__(self, url: str, reactor: Any, busy_timeout: float = BUSY_TIMEOUT,
                 readers: int = READ_CONNECTIONS):
        self.url = url
        self.path = path_from_url(url)
        self.busy_timeout = busy_timeout
        self.readers = 0 if self.path == ":memory:" else readers
        self._reactor = reactor
        self._pool: adbapi.ConnectionPool | None = None
        self._read_pool: adbapi.ConnectionPool | None = None
        #: The reactor thread's connection for single reads (None: they use the pools).
        self._inline: sqlite3.Connection | None = None
        #: Whether the write connection commits without waiting for the disk (_SYNCHRONOUS).
        self._relaxed = False

    def _make_pool(self, connections: int, reader: bool) -> adbapi.ConnectionPool:
        return adbapi.ConnectionPool(
            "sqlite3", self.path, check_same_thread=False, cp_min=1, cp_max=connections,
            cp_openfun=functools.partial(_prepare, busy_timeout=self.busy_timeout, reader=reader),
            cp_reactor=self._reactor,
        )

    async def start(self, create: bool = True) -> None:
        if self.path != ":memory:" and create:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self._pool = self._make_pool(1, reader=False)
        self._pool.start()
        await self.run(db.migrate, db.schema_files(self.dialect), create)
        if self.readers:  # after the migration: the file exists, in WAL mode
            self._read_pool = self._make_pool(self.readers, reader=True)
            self._read_pool.start()
            try:
                inline = sqlite3.connect(self.path)
                _prepare(inline, 0, reader=True)
            except sqlite3.Error:
                pass  # single reads take the read thread, as every read does
            else:
                self._inline = inline

    def stop(self) -> Deferred[None]:
        """Close both pools (their threads end at once: nothing runs after a stop)."""
        for pool in (self._read_pool, self._pool):
            if pool is not None:
                pool.close()
        self._pool = self._read_pool = None
        inline, self._inline = self._inline, None
        if inline is not None:
            inline.close()
        return succeed(None)

    def _read_inline(self, operation: Any, args: tuple) -> tuple[bool, Any]:
        """``(True, result)`` of a single read on the reactor thread's connection, or
        ``(False, None)`` when it met a lock or any trouble of the database's own (it is
        then run in the read thread: one place waits and reports)."""
        assert self._inline is not None
        cursor = self._inline.cursor()
        try:
            return True, drive(operation(_SqliteTx(cursor), *args))
        except db.DatabaseUnavailable:
            return False, None
        finally:
            cursor.close()

    def run(self, operation: Any, *args: Any) -> Deferred[Any]:
        """Run ``operation(tx, *args)`` in one transaction: ``BEGIN IMMEDIATE`` on the
        write connection (take the write lock at once, so two writers never
        deadlock), or ``BEGIN`` on a read connection for an operation that only
        reads, except a single-statement read, which is atomic on its own and
        runs without the extra round trips (the hot path of /img/)."""
        if self._pool is None:
            return fail(db.DatabaseUnavailable("the database is not open"))
        begin = _begin(operation)
        if begin is None and self._inline is not None:
            try:
                done, result = self._read_inline(operation, args)
            except Exception:
                return fail()
            if done:
                return succeed(result)
        readonly = getattr(operation, "readonly", False)
        pool = self._read_pool if readonly and self._read_pool is not None else self._pool
        relaxed = getattr(operation, "recoverable", False)

        def interaction(cursor: Any) -> Any:
            if not readonly and relaxed != self._relaxed:  # the write pool's one thread
                cursor.execute(_SYNCHRONOUS[relaxed])
                self._relaxed = relaxed
            if begin:
                cursor.execute(begin)
            return drive(operation(_SqliteTx(cursor), *args))

        return pool.runInteraction(interaction).addErrback(_translate)


@implementer(db.IDatabase)
class SyncSqliteDatabase:
    """An IDatabase on one SQLite connection used in the calling thread, for unit tests.

    The same schema, operations, transactions (``BEGIN IMMEDIATE``, ``BEGIN`` or
    none, as ``SqliteDatabase`` chooses) and error translation, but no threads and
    no pools: ``run`` does the whole transaction before it returns an
    already-fired Deferred, so a test's only clock can be a fake one.  It blocks
    its caller for every transaction: never use it in a server.
    """

    dialect = "sqlite"

    def __init__(self, url: str, busy_timeout: float = BUSY_TIMEOUT):
        self.url = url
        self.path = path_from_url(url)
        self.busy_timeout = busy_timeout
        self._connection: sqlite3.Connection | None = None
        self._relaxed = False

    def start(self, create: bool = True) -> Deferred[None]:
        if self.path != ":memory:" and create:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        connection = None
        try:
            connection = sqlite3.connect(self.path)
            _prepare(connection, self.busy_timeout, reader=False)
        except Exception:
            failure = Failure()
            if connection is not None:
                connection.close()
            return fail(failure).addErrback(_translate)
        self._connection = connection
        return self.run(db.migrate, db.schema_files(self.dialect), create).addCallback(lambda _: None)

    def stop(self) -> Deferred[None]:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()
        return succeed(None)

    def run(self, operation: Any, *args: Any) -> Deferred[Any]:
        """Run ``operation(tx, *args)`` in one transaction, now; commit, or roll back
        if it raised."""
        connection = self._connection
        if connection is None:
            return fail(db.DatabaseUnavailable("the database is not open"))
        begin = _begin(operation)
        cursor = connection.cursor()
        try:
            relaxed = getattr(operation, "recoverable", False)
            if relaxed != self._relaxed:
                cursor.execute(_SYNCHRONOUS[relaxed])
                self._relaxed = relaxed
            if begin:
                cursor.execute(begin)
            result = drive(operation(_SqliteTx(cursor), *args))
            connection.commit()
        except Exception:
            failure = Failure()
            if connection.in_transaction:
                try:
                    connection.rollback()
                except sqlite3.Error:
                    pass
            return fail(failure).addErrback(_translate)
        finally:
            cursor.close()
        return succeed(result)


@implementer(IPlugin, db.IDatabaseFactory)
class SqliteFactory:
    schemes = ("sqlite",)

    def open(self, url: str, reactor: Any, runner: Any) -> SqliteDatabase:
        return SqliteDatabase(url, reactor)

    def missing(self, url: str) -> str | None:
        """The file's path when it does not exist (starting would create it, and its folder)."""
        path = path_from_url(url)
        if path == ":memory:" or os.path.exists(path):
            return None
        path = os.path.abspath(path)
        return "/" + path.lstrip("/") if path.startswith("//") else path  # sqlite:////abs/path


sqlite_backend = SqliteFactory()
