"""Fakes and fixtures shared by the tests: memory storage, a ready library, a stub client."""

from __future__ import annotations

import io
import os
import secrets
from collections.abc import Callable
from typing import Any

from twisted.internet import reactor as global_reactor
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import ISSLTransport, IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import IAgentEndpointFactory, IBodyProducer
from zope.interface import directlyProvides, implementer

from imgshare import auth, compose, db
from imgshare.config import Config, RateLimit
from imgshare.gather import Gatherer
from imgshare.plugins.sqlite import SqliteDatabase
from imgshare.producers import RangeSender
from imgshare.storage import IStorage, ObjectMissing, StorageUnavailable
from imgshare.threads import InlineRunner

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

    def probe(self) -> Deferred[None]:
        try:
            self._check("probe", "")
        except Exception:
            return fail()
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

    def stream(self, key: str, consumer: Any, offset: int, length: int, version: str | None = None) -> Deferred[None]:
        try:
            self._check("stream", key)
            if key not in self.objects:
                raise ObjectMissing(key)
        except Exception:
            return fail()
        data = io.BytesIO(self.objects[key])
        data.seek(offset)
        return RangeSender(data, length).begin(consumer)


class SwitchableDatabase:
    """A database whose every operation fails with ``DatabaseUnavailable`` while
    ``available`` is False, like an outage; otherwise the wrapped one's."""

    def __init__(self, database: Any):
        self.database = database
        self.available = True
        #: Operations refused while unavailable.
        self.refused = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.database, name)

    def run(self, operation: Any, *args: Any) -> Deferred[Any]:
        if not self.available:
            self.refused += 1
            return fail(db.DatabaseUnavailable("connection refused (test)"))
        return self.database.run(operation, *args)


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
    """A library on real SQLite, with memory storage and a fake clock, plus its web root
    and site, which its clients reach over ``network`` (in memory)."""

    def __init__(
        self, testcase: Any, database: Any, storage: Any, clock: Clock, config: Config,
        gatherer: Gatherer | None = None, network: MemoryNetwork | None = None,
    ):
        """``gatherer`` serves img_gather.php; without one that endpoint answers 501."""
        self.testcase = testcase
        self.database = database
        self.storage = storage
        self.clock = clock
        self.config = config
        self.network = network if network is not None else MemoryNetwork()
        #: Every component, built as the server builds them; nothing is started
        #: (tests run derivation jobs one at a time with ``derivations.run_one``).
        self.components = compose.build(
            config, clock, database, storage, InlineRunner(), InlineRunner(), gatherer=gatherer,
        )
        # An outage's end still settling is logged at cleanup, not left on the clock.
        testcase.addCleanup(self.components.database.outage.close)
        testcase.addCleanup(self.components.storage.outage.close)
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

    def client(self, address: str = "127.0.0.1") -> StubClient:
        """A client of the fixture's site whose connections come from ``address``."""
        return StubClient(self.components.site, self.network, address)


async def make_fixture(
    testcase: Any, storage: Any = None,
    make_gatherer: Callable[[Config, Clock], Gatherer] | None = None,
    threaded: bool = False, network: MemoryNetwork | None = None, switchable: bool = False, **config: Any,
) -> Fixture:
    """A Fixture in the test's temp folder; ``make_gatherer(config, clock)`` builds its gatherer.

    The database is the synchronous SQLite (every query done when ``run`` returns),
    so a request through ``client()`` is answered within its ``flush`` and the fake
    clock is the only clock; ``threaded=True`` gives the threaded adbapi one instead,
    for tests whose backends need threads or sockets (S3 storage, locks): their
    answers arrive on the real reactor, and the clients' network is live.
    ``network`` is the in-memory network the clients use (and a gatherer may);
    by default a synchronous one, or a live one (see ``MemoryNetwork``) with ``threaded``.
    ``switchable``: the database is a ``SwitchableDatabase`` (outages on demand).
    """
    clock = Clock()
    clock.advance(T0)
    data_dir = testcase.mktemp()
    os.makedirs(data_dir)
    database = await (open_sqlite(testcase) if threaded else open_sqlite_sync(testcase))
    if switchable:  # fixture.database.available = False: a database outage
        database = SwitchableDatabase(database)
    if network is None:
        network = MemoryNetwork(live=global_reactor if threaded else None)
    settings = test_config(data_dir, **config)
    gatherer = make_gatherer(settings, clock) if make_gatherer is not None else None
    fixture = Fixture(testcase, database, storage or MemoryStorage(), clock, settings, gatherer, network)
    await fixture.components.presigned.start()  # as the service does before it listens
    return fixture


class _ServerTransport(iosim.FakeTransport):
    """The server's end of a memory connection: tells its network when the server writes."""

    def __init__(self, network: MemoryNetwork, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._network = network

    def write(self, data: bytes) -> None:
        super().write(data)
        self._network.wrote()

    def loseConnection(self) -> None:  # noqa: N802
        super().loseConnection()
        self._network.wrote()


class MemoryNetwork(MemoryReactorClock):
    """TCP connections in memory (``twisted.test.iosim`` pumps); ``flush()`` moves every byte.

    Clients connect through ``connect`` (``StubClient``) or, as a reactor, through
    ``connectTCP`` to a factory registered with ``listenTCP`` (a gatherer fetching
    from a test server); ``connectTCP`` to anything else is refused.  Nothing
    moves until ``flush``, which pumps every connection until none has anything
    left to say: with the synchronous database, memory storage and inline
    runners, a request is answered (or waits on the fake clock) when it returns.

    ``live``: a real reactor, for fixtures whose backends answer from threads or
    sockets (the threaded SQLite, S3): a server writing outside a flush then has
    the network flushed on the next turn of that reactor (no polling).
    """

    def __init__(self, live: Any = None) -> None:
        super().__init__()
        self._pumps: list[iosim.IOPump] = []
        self._live = live
        self._flushing = False
        self._scheduled: Any = None

    def wrote(self) -> None:
        """A server wrote (or closed): outside a flush on a live network, flush soon."""
        if self._live is not None and not self._flushing and self._scheduled is None:
            self._scheduled = self._live.callLater(0, self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self._scheduled = None
        self.flush()

    def connect(self, client_factory: Any, server_factory: Any, client_address: Any,
                server_address: Any, tls: bool = False) -> Any:
        """Connect a client (built by ``client_factory``) to ``server_factory``; return the client protocol."""
        server = server_factory.buildProtocol(client_address)
        client = client_factory.buildProtocol(server_address)
        server_transport = _ServerTransport(
            self, server, isServer=True, hostAddress=server_address, peerAddress=client_address)
        client_transport = iosim.FakeTransport(
            client, isServer=False, hostAddress=client_address, peerAddress=server_address)
        if tls:
            directlyProvides(server_transport, ISSLTransport)
            directlyProvides(client_transport, ISSLTransport)
        self._pumps.append(iosim.connect(server, server_transport, client, client_transport, greet=False))
        return client

    def connectTCP(self, host: str, port: int, factory: Any, timeout: float = 30,  # noqa: N802
                   bindAddress: Any = None) -> Any:  # noqa: N803
        connector = super().connectTCP(host, port, factory, timeout, bindAddress)
        factory.startedConnecting(connector)
        listening = {(server_host, server_port): server_factory
                     for server_port, server_factory, _, server_host in self.tcpServers}
        server_factory = listening.get((host, port)) or listening.get(("", port))
        if server_factory is None:
            factory.clientConnectionFailed(connector, Failure(ConnectionRefusedError(host, port)))
        else:
            address = (IPv6Address if ":" in host else IPv4Address)("TCP", host, port)
            self.connect(factory, server_factory, IPv4Address("TCP", "127.0.0.1", 40000), address)
        return connector

    def flush(self) -> None:
        """Pump every connection until none moves a byte; forget the closed ones."""
        if self._flushing:
            return
        self._flushing = True
        try:
            moved = True
            while moved:
                moved = False
                for pump in list(self._pumps):
                    moved = pump.flush() or moved
                    if pump.clientIO.disconnected and pump.serverIO.disconnected:
                        self._pumps.remove(pump)
        finally:
            self._flushing = False


@implementer(IBodyProducer)
class _BytesProducer:
    """A request body written at once (treq's default producer would wait on the real reactor)."""

    def __init__(self, body: bytes | str):
        self.body = body.encode("utf-8") if isinstance(body, str) else body
        self.length = len(self.body)

    def startProducing(self, consumer: Any) -> Deferred[None]:  # noqa: N802
        consumer.write(self.body)
        return succeed(None)

    def stopProducing(self) -> None:  # noqa: N802
        pass

    def pauseProducing(self) -> None:  # noqa: N802
        pass

    def resumeProducing(self) -> None:  # noqa: N802
        pass


@implementer(IStreamClientEndpoint)
class _SiteEndpoint:
    def __init__(self, client: StubClient, tls: bool):
        self.client = client
        self.tls = tls

    def connect(self, factory: Any) -> Deferred[Any]:
        client = self.client
        server_address = IPv4Address("TCP", "127.0.0.1", 443 if self.tls else 80)
        return succeed(client.network.connect(factory, client.site, client.address, server_address, self.tls))


@implementer(IAgentEndpointFactory)
class _SiteEndpoints:
    def __init__(self, client: StubClient):
        self.client = client

    def endpointForURI(self, uri: Any) -> _SiteEndpoint:  # noqa: N802
        return _SiteEndpoint(self.client, uri.scheme == b"https")


class StubClient:
    """treq's ``HTTPClient`` over an in-memory connection to our ``ImgshareSite``.

    Every request travels through real HTTP parsing, our channel and our
    ``ImgshareRequest``, on a ``MemoryNetwork``: ``request`` flushes it, so a
    request the server can answer at once is answered when it returns.  One
    that waits (on the fake clock, or on work a test does next) is answered
    once the test has done that work and called ``flush()``.  Connections come
    from ``address`` (IPv4 or IPv6), as the site's per-address limits see them.
    """

    def __init__(self, site: Any, network: MemoryNetwork | None = None, address: str = "127.0.0.1"):
        from treq.client import HTTPClient

        self.site = site
        self.network = network if network is not None else MemoryNetwork()
        self.address = (IPv6Address if ":" in address else IPv4Address)("TCP", address, 31337)
        agent = Agent.usingEndpointFactory(
            self.network, _SiteEndpoints(self), HTTPConnectionPool(self.network, persistent=False))
        self.http = HTTPClient(agent, data_to_body_producer=_BytesProducer)

    def flush(self) -> None:
        """Move every byte waiting on the network (both ways)."""
        self.network.flush()

    async def request(self, method: str, url: str, **kwargs: Any) -> tuple[Any, bytes]:
        """Send one request; return (response, body)."""
        import treq

        response = self.http.request(method, url, **kwargs)
        self.flush()
        response = await response
        body = treq.content(response)
        self.flush()
        return response, await body


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


def exif_orientation(orientation: int) -> bytes:
    """An EXIF block (for Pillow's ``exif=``) holding only ``orientation``."""
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


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
