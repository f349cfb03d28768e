"""Fakes and fixtures shared by the tests: memory storage, a ready library, a stub client."""

from __future__ import annotations

import io
import os
import secrets
from collections.abc import Callable
from typing import Any

from twisted.internet import reactor as global_reactor
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock, deferLater
from zope.interface import implementer

from imgshare import auth, compose, db
from imgshare.config import Config, RateLimit
from imgshare.gather import Gatherer
from imgshare.plugins.sqlite import SqliteDatabase
from imgshare.producers import RangeSender
from imgshare.storage import IStorage, ObjectMissing, StorageUnavailable
from imgshare.threads import InlineRunner
from imgshare.web.request import ImgshareRequest

#: 2026-02-14T09:30:00Z, the moment most tests happen at.
T0 = 1771061400.0


@implementer(IStorage)
class MemoryStorage:
    """Objects in a dict. Set ``available = False`` to make every call fail like a storage outage."""

    url = "memory:"

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.types: dict[str, str] = {}
        self.available = True
        self.calls: list[tuple[str, str]] = []

    def _check(self, op: str, key: str) -> None:
        self.calls.append((op, key))
        if not self.available:
            raise StorageUnavailable("storage is down (test)")

    def start(self) -> Deferred[None]:
        return succeed(None)

    def stop(self) -> Deferred[None]:
        return succeed(None)

    def put(self, key: str, path: str, content_type: str) -> Deferred[None]:
        try:
            self._check("put", key)
            with open(path, "rb") as f:
                self.objects[key] = f.read()
            self.types[key] = content_type
        except Exception:
            return fail()
        return succeed(None)

    def fetch(self, key: str, path: str) -> Deferred[None]:
        try:
            self._check("fetch", key)
            if key not in self.objects:
                raise ObjectMissing(key)
            with open(path, "wb") as f:
                f.write(self.objects[key])
        except Exception:
            return fail()
        return succeed(None)

    def delete(self, key: str) -> Deferred[None]:
        try:
            self._check("delete", key)
        except Exception:
            return fail()
        self.objects.pop(key, None)
        self.types.pop(key, None)
        return succeed(None)

    def stream(self, key: str, consumer: Any, offset: int, length: int) -> Deferred[None]:
        try:
            self._check("stream", key)
            if key not in self.objects:
                raise ObjectMissing(key)
        except Exception:
            return fail()
        data = io.BytesIO(self.objects[key])
        data.seek(offset)
        return RangeSender(data, length).begin(consumer)


def test_config(data_dir: str, **overrides: Any) -> Config:
    """A Config for tests: everything under ``data_dir``, generous rate limits."""
    settings: dict[str, Any] = dict(
        data_dir=data_dir, public_url="https://img.example", resize_threads=1,
        rate_ip=RateLimit(10_000, 1.0), rate_token=RateLimit(10_000, 1.0),
    )
    settings.update(overrides)
    return Config(**settings)


async def open_sqlite(testcase: Any, path: str | None = None) -> SqliteDatabase:
    """A started SQLite database in the test's temp folder, closed at cleanup."""
    path = path or os.path.join(testcase.mktemp(), "imgshare.sqlite3")
    database = SqliteDatabase(f"sqlite://{os.path.abspath(path)}", global_reactor)
    await database.start()
    testcase.addCleanup(database.stop)
    return database


class Fixture:
    """A library on real SQLite, with memory storage and a fake clock, plus its web root."""

    def __init__(
        self, testcase: Any, database: Any, storage: Any, clock: Clock, config: Config,
        gatherer: Gatherer | None = None,
    ):
        """``gatherer`` serves img_gather.php; without one that endpoint answers 501."""
        self.testcase = testcase
        self.database = database
        self.storage = storage
        self.clock = clock
        self.config = config
        #: Every component, built as the server builds them; nothing is started
        #: (tests run derivation jobs one at a time with ``derivations.run_one``).
        self.components = compose.build(
            config, clock, database, storage, InlineRunner(), InlineRunner(), gatherer=gatherer,
        )
        self.library = self.components.library
        self.api = self.components.api
        self.pages = self.components.pages
        self.root = self.components.root
        self.derivations = self.components.derivations

    async def account(self, name: str = "kitten", password: str = "correct horse") -> str:
        """Create an account; return its name."""
        await self.database.run(
            db.create_account, name, auth.hash_password(password, b"0" * 16), False, self.clock.seconds()
        )
        return name

    async def token(self, account: str = "kitten", expires: float | None = None, label: str = "") -> str:
        """Create a token for ``account``; return its secret."""
        secret = auth.new_token()
        await self.database.run(
            db.create_token, account, auth.token_digest(secret), label, self.clock.seconds(), expires
        )
        return secret

    def client(self) -> StubClient:
        return StubClient(self.components.resource)


async def make_fixture(
    testcase: Any, storage: Any = None,
    make_gatherer: Callable[[Config, Clock], Gatherer] | None = None, **config: Any,
) -> Fixture:
    """A Fixture in the test's temp folder; ``make_gatherer(config, clock)`` builds its gatherer."""
    clock = Clock()
    clock.advance(T0)
    data_dir = testcase.mktemp()
    os.makedirs(data_dir)
    database = await open_sqlite(testcase)
    settings = test_config(data_dir, **config)
    gatherer = make_gatherer(settings, clock) if make_gatherer is not None else None
    return Fixture(testcase, database, storage or MemoryStorage(), clock, settings, gatherer)


class StubClient:
    """``treq.testing.StubTreq`` over our ``Request`` class, settled for threads.

    Requests travel through real HTTP parsing in memory; since the database
    answers from its own thread, the client keeps flushing until the response
    body is complete.
    """

    def __init__(self, resource: Any):
        from treq.testing import StubTreq

        self.treq = StubTreq(resource)
        self.treq._agent._serverFactory.requestFactory = ImgshareRequest
        self.treq._agent._serverFactory.max_body = 33 * 1024 * 1024 + 64 * 1024

    async def _settle(self, d: Deferred[Any]) -> Any:
        done: list[Any] = []
        d.addBoth(lambda r: done.append(r) or r)
        for _ in range(5000):
            self.treq.flush()
            if done:
                break
            await deferLater(global_reactor, 0.001, lambda: None)
        else:
            raise AssertionError("no response")
        return await d

    async def request(self, method: str, url: str, **kwargs: Any) -> tuple[Any, bytes]:
        """Send one request; return (response, body)."""
        response = await self._settle(self.treq.request(method, url, **kwargs))
        body = await self._settle(self.treq.content(response))
        return response, body


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]] | None = None) -> tuple[bytes, dict]:
    """A multipart/form-data body and its headers, for StubTreq (which takes no ``files=``)."""
    boundary = "----imgshare" + secrets.token_hex(8)
    out = io.BytesIO()
    for name, value in fields.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode())
        out.write(value.encode() + b"\r\n")
    for name, (filename, data) in (files or {}).items():
        out.write(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n".encode()
        )
        out.write(data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), {b"Content-Type": [f"multipart/form-data; boundary={boundary}".encode()]}


def image_bytes(fmt: str = "JPEG", size: tuple[int, int] = (64, 48), color: Any = (200, 60, 40), **save: Any) -> bytes:
    """A small generated image in ``fmt``."""
    from PIL import Image

    mode = "RGBA" if fmt == "PNG" and len(color) == 4 else "RGB"
    out = io.BytesIO()
    Image.new(mode, size, color).save(out, fmt, **save)
    return out.getvalue()


async def open_sqlite_sync(testcase: Any, path: str | None = None) -> db.IDatabase:
    """A started synchronous SQLite database (``SyncSqliteDatabase``: no threads, every
    ``run`` already fired when it returns), in memory unless ``path`` names a file;
    closed at cleanup.  For unit tests whose only clock is a ``task.Clock``."""
    from imgshare.plugins.sqlite import SyncSqliteDatabase

    url = f"sqlite://{os.path.abspath(path)}" if path else "sqlite:///:memory:"
    database = SyncSqliteDatabase(url)
    await database.start()
    testcase.addCleanup(database.stop)
    return database
