"""The embedded Database: SQLite through ``twisted.enterprise.adbapi``.

One connection in one adbapi thread: SQLite serializes writers anyway, and a
single connection keeps ``BEGIN IMMEDIATE`` transactions from ever waiting on
each other inside the process.  WAL mode lets the admin command read and write
while the server runs.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any
from urllib.parse import unquote, urlsplit

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred
from twisted.plugin import IPlugin
from zope.interface import implementer

from imgshare import db


def drive(coro: Any) -> Any:
    """Run a coroutine that never suspends to completion; return its result."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise RuntimeError("a SQLite operation tried to wait for something")


class _SqliteTx:
    dialect = "sqlite"

    def __init__(self, cursor: Any):
        self._cursor = cursor

    async def execute(self, sql: str, params: Any = ()) -> list[tuple]:
        try:
            self._cursor.execute(sql, tuple(params))
        except sqlite3.IntegrityError as e:
            raise db.Conflict(str(e)) from e
        except sqlite3.OperationalError as e:
            if "locked" in str(e) or "unable to open" in str(e) or "disk" in str(e):
                raise db.DatabaseUnavailable(str(e)) from e
            raise
        return self._cursor.fetchall()


def _prepare(connection: sqlite3.Connection) -> None:
    connection.isolation_level = None  # transactions are begun explicitly
    for pragma in (
        "PRAGMA journal_mode = WAL",
        "PRAGMA synchronous = FULL",
        "PRAGMA busy_timeout = 10000",
    ):
        connection.execute(pragma)


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
    """An IDatabase on one SQLite file."""

    dialect = "sqlite"

    def __init__(self, url: str, reactor: Any):
        self.url = url
        self.path = path_from_url(url)
        self._reactor = reactor
        self._pool: adbapi.ConnectionPool | None = None

    async def start(self) -> None:
        if self.path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self._pool = adbapi.ConnectionPool(
            "sqlite3", self.path, check_same_thread=False, cp_min=1, cp_max=1,
            cp_openfun=_prepare, cp_reactor=self._reactor,
        )
        self._pool.start()
        await self.run(db.migrate, db.schema_files(self.dialect))

    def stop(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def run(self, operation: Any, *args: Any) -> Deferred[Any]:
        """Run ``operation(tx, *args)`` in one transaction: ``BEGIN IMMEDIATE`` (take the
        write lock at once, so two writers never deadlock), or ``BEGIN`` for an
        operation that only reads, except a single-statement read, which is atomic
        on its own and runs without the extra round trips (the hot path of /img/)."""
        if self._pool is None:
            raise db.DatabaseUnavailable("the database is not open")
        readonly = getattr(operation, "readonly", False)
        begin = "BEGIN" if readonly else "BEGIN IMMEDIATE"
        if getattr(operation, "single_statement", False):
            begin = None

        def interaction(cursor: Any) -> Any:
            if begin:
                cursor.execute(begin)
            return drive(operation(_SqliteTx(cursor), *args))

        return self._pool.runInteraction(interaction)


@implementer(IPlugin, db.IDatabaseFactory)
class SqliteFactory:
    schemes = ("sqlite",)

    def open(self, url: str, reactor: Any, worker: Any) -> SqliteDatabase:
        return SqliteDatabase(url, reactor)


sqlite_backend = SqliteFactory()
