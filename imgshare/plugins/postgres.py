"""The production Database: PostgreSQL through txpostgres, on the reactor.

The shared operations of ``imgshare.db`` are coroutines over a ``Tx``; here
each runs inside one txpostgres interaction (``BEGIN`` ... ``COMMIT``, or
``ROLLBACK`` when it raises), awaiting the Deferred of every
``cursor.execute``.  No threads: psycopg2's asynchronous connections are
polled by the reactor.

Connections come from a fixed-size txpostgres ``ConnectionPool``.  Each
connection carries a ``DeadConnectionDetector``: when the server goes away
(restart, ``pg_terminate_backend``, network failure) the connection is
reconnected in the background with backoff, and every operation meanwhile
fails at once with ``DatabaseUnavailable`` (503 to clients) instead of waiting.
An operation cut off mid-transaction is rolled back by the server, so nothing
is ever half-written.

URL: ``postgresql://USER:PASSWORD@HOST:PORT/DBNAME?sslmode=require&pool_size=8``;
every query parameter but ``pool_size`` goes to libpq unchanged.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg2
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.logger import Logger
from twisted.plugin import IPlugin
from twisted.python.failure import Failure
from txpostgres import reconnection, retrying, txpostgres
from zope.interface import implementer

from imgshare import db
from imgshare.outage import Outage

log = Logger()

UNIQUE_VIOLATION = "23505"
#: ``pg_advisory_xact_lock`` key held while migrating ("imgsha" in ASCII), so
#: processes starting at once migrate one after the other.
MIGRATION_LOCK = 0x696D67736861
#: The first key of the advisory locks of ``_PgTx.lock`` (the second is the hashed text key).
XACT_LOCK_SPACE = 0x696D67
DEFAULT_POOL_SIZE = 8
#: Seconds an operation whose caller stopped waiting (a client that went away, a
#: readiness probe's deadline) may still run before it is cancelled for real: by then
#: its connection is taken for stuck, and cancelling it makes the pool reconnect.
ABANDONED_GRACE = 10.0
#: Seconds a connection attempt may take before it is given up (libpq's own
#: ``connect_timeout`` does not apply to asynchronous connections).
CONNECT_TIMEOUT = 15.0
#: TCP keepalives, so a server that vanished without a word is noticed.
KEEPALIVES = {"keepalives": "1", "keepalives_idle": "30", "keepalives_interval": "10",
              "keepalives_count": "3"}

# A quoted literal or identifier, or one placeholder: placeholders inside quotes stay.
_SQL_TOKEN = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|\?")


@functools.lru_cache(maxsize=512)
def to_pyformat(sql: str) -> str:
    """Translate ``?`` placeholders to psycopg2's ``%s`` (outside quotes), escaping ``%``."""
    escaped = sql.replace("%", "%%")
    return _SQL_TOKEN.sub(lambda m: "%s" if m.group(0) == "?" else m.group(0), escaped)


def is_connection_failure(failure: Failure) -> bool:
    """True when ``failure`` means the connection itself is gone (not merely the query)."""
    error = failure.value
    if isinstance(error, psycopg2.InterfaceError | txpostgres.RollbackFailed | reconnection.ConnectionDead):
        return True
    if isinstance(error, psycopg2.OperationalError):
        code = error.pgcode
        # No SQLSTATE: libpq lost the socket. Class 08: connection exception.
        # 57P01-57P03: the server is shutting down, crashed, or not accepting yet.
        return code is None or code.startswith("08") or code.startswith("57P")
    return False


def is_unavailable(failure: Failure) -> bool:
    """True when an operation failed because the database could not serve it (503 material)."""
    return bool(failure.check(
        psycopg2.OperationalError, psycopg2.InterfaceError, reconnection.ConnectionDead,
        txpostgres.RollbackFailed, ConnectionDone, ConnectionLost,
    ))


def parse_url(url: str) -> tuple[str, int]:
    """Split our ``pool_size`` off a PostgreSQL URL: (libpq DSN, pool size)."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError(f"not a PostgreSQL URL: {url!r}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    size = DEFAULT_POOL_SIZE
    kept = []
    for key, value in query:
        if key == "pool_size":
            try:
                size = int(value)
            except ValueError:
                raise ValueError(f"pool_size must be a whole number, not {value!r}") from None
            if size < 1:
                raise ValueError("pool_size must be at least 1")
        else:
            kept.append((key, value))
    names = {k for k, _ in kept}
    kept += [(k, v) for k, v in KEEPALIVES.items() if k not in names]
    return urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(kept), "")), size


def needs_lookup(dsn: str) -> tuple[str, int] | None:
    """(host, port) when libpq would look a host name up itself, else None.

    libpq resolves names synchronously inside ``connect``, which txpostgres calls
    on the reactor thread; an IP address, a socket folder, several hosts or an
    explicit ``hostaddr`` need no lookup.
    """
    parts = urlsplit(dsn)
    if "," in parts.netloc or any(k == "hostaddr" for k, _ in parse_qsl(parts.query)):
        return None
    host = parts.hostname
    if not host or host.startswith("/") or "%2f" in parts.netloc.lower():
        return None
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        return host, parts.port or 5432


def with_hostaddr(dsn: str, address: str) -> str:
    """The DSN with libpq's ``hostaddr`` set: connect there, still verify ``host`` for TLS."""
    parts = urlsplit(dsn)
    query = parse_qsl(parts.query, keep_blank_values=True) + [("hostaddr", address)]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


def redact(url: str) -> str:
    """The URL without its password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class _PgTx:
    """One transaction (a ``db.Tx``) on a txpostgres cursor."""

    share_lock = " FOR SHARE"
    update_lock = " FOR UPDATE"
    skip_locked = " FOR UPDATE SKIP LOCKED"
    least = "LEAST"
    greatest = "GREATEST"
    byte_order = ' COLLATE "C"'
    search_key = "search_key"

    def __init__(self, cursor: Any):
        self._cursor = cursor

    @staticmethod
    def positive_number(expr: str) -> str:
        return f"{expr} ~ '^[1-9][0-9]*$'"

    async def lock(self, key: str) -> None:
        """A transaction advisory lock on ``key``: later holders queue until commit."""
        await self.execute("SELECT pg_advisory_xact_lock(?, hashtext(?))", (XACT_LOCK_SPACE, key))

    async def execute(self, sql: str, params: Any = ()) -> list[tuple]:
        try:
            await self._cursor.execute(to_pyformat(sql), tuple(params))
        except psycopg2.IntegrityError as e:
            if e.pgcode == UNIQUE_VIOLATION:
                raise db.Conflict(e.diag.message_primary or str(e)) from e
            raise
        if self._cursor.description is None:
            return []
        return self._cursor.fetchall()


def _reconnection_delays() -> Any:
    """At once, then backoff from 0.5 s up to 5 s, forever."""
    return retrying.simpleBackoffIterator(initialDelay=0.5, maxDelay=5.0, factor=1.6,
                                          maxRetries=0, now=True)


class _Detector(reconnection.DeadConnectionDetector):
    """txpostgres' reconnection, with a bounded connection attempt, a stop, and a report
    to the database's ``Outage`` (one line for the whole pool, not one per connection)."""

    stopped = False
    _retrying: Deferred[Any] | None = None
    outage: Outage | None = None
    source = "a connection"

    def startReconnecting(self, f: Failure) -> None:
        if self.stopped:
            return
        reason = (f.getErrorMessage().strip().splitlines() or [f.type.__name__])[0]
        if self.outage is not None:
            self.outage.failed(f"PostgreSQL connection lost: {reason}; reconnecting", self.source)
        rc = retrying.RetryingCall(self.reconnect)
        rc.reactor = self.reactor
        self._retrying = rc.start(self.reconnectionIterator())
        self._retrying.addCallback(lambda _: self.connectionRecovered())
        self._retrying.addErrback(lambda f: None if self.stopped else log.failure("reconnecting", f))

    def reconnect(self) -> Deferred[Any]:
        if self.stopped:
            return fail(reconnection.ConnectionDead("the database is closed"))
        d = super().reconnect()
        connection = self.reconnectable
        timer = self.reactor.callLater(CONNECT_TIMEOUT, _close_quietly, connection)
        return d.addBoth(lambda result: (timer.active() and timer.cancel(), result)[1])

    def connectionRecovered(self) -> Any:
        if self.outage is not None:
            self.outage.recovered(self.source)
        return super().connectionRecovered()

    def stop(self) -> None:
        self.stopped = True
        retrying_call, self._retrying = self._retrying, None
        if retrying_call is not None and not retrying_call.called:
            try:
                retrying_call.cancel()
            except Exception:  # txpostgres refuses to cancel a connection attempt midway
                pass


def _close_quietly(connection: Any) -> None:
    if getattr(connection, "_connection", None) is not None:
        try:
            connection.close()
        except Exception:
            pass


class _Connection(txpostgres.Connection):
    """A txpostgres connection that loses its server quietly and never rolls back on a
    connection that is already gone."""

    def doRead(self) -> Exception | None:  # noqa: N802
        try:
            super().doRead()
        except psycopg2.Error as e:
            # Returned, not raised: the reactor then calls connectionLost (and the
            # detector reconnects) without logging a traceback for a routine event.
            return e
        except ValueError:
            # libpq dropped the socket while psycopg2 still calls the connection
            # open: txpostgres then re-adds a reader for descriptor -1.
            return psycopg2.InterfaceError("the connection's socket is gone")
        return None

    def doWrite(self) -> Exception | None:  # noqa: N802
        try:
            super().doWrite()
        except psycopg2.Error as e:
            return e
        except ValueError:
            return psycopg2.InterfaceError("the connection's socket is gone")
        return None

    def cursorFinished(self, cursor: Any) -> None:  # noqa: N802
        try:
            super().cursorFinished(cursor)
        except ValueError:
            pass  # socket gone: the next query fails and the detector reconnects

    def _runInteraction(self, interaction: Any, *args: Any, **kwargs: Any) -> Deferred[Any]:  # noqa: N802
        cursor = self.cursor()
        d = cursor.execute("BEGIN")
        d.addCallback(lambda _: interaction(cursor, *args, **kwargs))
        d.addCallback(self._commit, cursor)
        d.addErrback(self._rollback, cursor)
        return d

    def runStatement(self, interaction: Any, *args: Any) -> Deferred[Any]:  # noqa: N802
        """Run ``interaction(cursor, *args)`` without ``BEGIN``/``COMMIT``: for one
        statement, which the (autocommit) connection runs as its own transaction."""
        return self._doit(self._runStatement, interaction, *args)

    def _runStatement(self, interaction: Any, *args: Any) -> Deferred[Any]:  # noqa: N802
        return maybeDeferred(interaction, self.cursor(), *args)

    @staticmethod
    def _commit(result: Any, cursor: Any) -> Deferred[Any]:
        return cursor.execute("COMMIT").addCallback(lambda _: result)

    def _rollback(self, failure: Failure, cursor: Any) -> Any:
        if self._connection is None or self._connection.closed:
            return failure  # the server ended the transaction along with the connection
        d = maybeDeferred(cursor.execute, "ROLLBACK")

        def rollback_failed(error: Failure) -> Failure:
            log.debug("rolling back failed ({error}); reconnecting", error=error.getErrorMessage())
            return Failure(txpostgres.RollbackFailed(self, failure))

        return d.addCallbacks(lambda _: failure, rollback_failed)


class _Pool(txpostgres.ConnectionPool):
    """A txpostgres pool whose connections reconnect by themselves."""

    def __init__(self, reactor: Any, dsn: str, size: int, outage: Outage | None = None):
        self.reactor = reactor
        self.outage = outage
        self._made = 0
        super().__init__(None, dsn, min=size)
        #: Every connection, including those checked out (``connections`` holds the idle ones).
        self.every = list(self.connections)

    def connectionFactory(self, reactor: Any, cooperator: Any) -> txpostgres.Connection:  # noqa: N802
        detector = _Detector(deathChecker=is_connection_failure,
                             reconnectionIterator=_reconnection_delays, reactor=reactor)
        self._made += 1
        detector.outage = self.outage
        detector.source = f"connection {self._made}"
        return _Connection(reactor, cooperator, detector=detector)

    def runStatement(self, interaction: Any, *args: Any) -> Deferred[Any]:  # noqa: N802
        """``_Connection.runStatement`` on a pooled connection."""
        return self._semaphore.run(self._runStatement, interaction, *args)

    def _runStatement(self, interaction: Any, *args: Any) -> Deferred[Any]:  # noqa: N802
        connection = self.connections.pop()
        d = connection.runStatement(interaction, *args)
        return d.addBoth(self._putBackAndPassthrough, connection)

    def shut(self) -> None:
        """Close every connection and stop reconnecting."""
        for connection in self.every:
            connection.detector.stop()
            _close_quietly(connection)


@implementer(db.IDatabase)
class PostgresDatabase:
    """An IDatabase on one PostgreSQL database."""

    dialect = "postgresql"
    #: Several processes commonly share one PostgreSQL database: the rate limits, login
    #: throttles and gather error cache are kept in it (``compose.build``).
    shared = True

    def __init__(self, url: str, reactor: Any, runner: Any = None):
        self.url = url
        self.dsn, self.pool_size = parse_url(url)
        self._reactor = reactor
        self._runner = runner
        self._pool: _Pool | None = None
        #: Lost connections and failed operations report here: one line per outage.
        self.outage = Outage("the database (PostgreSQL)", reactor)

    async def _pin_address(self) -> None:
        """Look the server's name up once, in the runner, and connect by address from
        then on: libpq would otherwise resolve it on the reactor at every (re)connect.
        A server that moves to another address needs a restart."""
        target = needs_lookup(self.dsn)
        if target is None or self._runner is None:
            return
        try:
            found = await self._runner.run(socket.getaddrinfo, *target, type=socket.SOCK_STREAM)
        except OSError:
            return  # libpq reports the failure in its own words
        self.dsn = with_hostaddr(self.dsn, found[0][4][0])

    async def start(self, create: bool = True) -> None:
        """Open every pooled connection, then migrate (one process at a time); without
        ``create``, NoSchema on a database without IMGSHARE's tables (left untouched)."""
        await self._pin_address()
        pool = _Pool(self._reactor, self.dsn, self.pool_size, self.outage)
        timed_out: list[bool] = []

        def give_up() -> None:
            timed_out.append(True)
            pool.shut()

        timer = self._reactor.callLater(CONNECT_TIMEOUT, give_up)
        try:
            await pool.start()
        except Exception as e:
            pool.shut()
            error = e.subFailure.getErrorMessage() if hasattr(e, "subFailure") else str(e)
            if timed_out:
                error = f"no answer within {CONNECT_TIMEOUT:.0f} s"
            raise db.DatabaseUnavailable(
                f"cannot connect to PostgreSQL at {redact(self.url)}: {error.strip()}") from e
        finally:
            if timer.active():
                timer.cancel()
        self._pool = pool
        try:
            version = await self.run(migrate_locked, db.schema_files(self.dialect), create)
        except BaseException:
            await self.stop()
            raise
        log.info("PostgreSQL ready at {url}: schema version {version}, {size} connections",
                 url=redact(self.url), version=version, size=self.pool_size)

    def stop(self) -> Deferred[None]:
        """Close every connection and stop reconnecting (closing a psycopg2
        connection is immediate)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shut()
        self.outage.close()
        return succeed(None)

    def run(self, operation: Any, *args: Any) -> Deferred[Any]:
        """Run ``operation(tx, *args)`` in one transaction on a pooled connection;
        an operation marked ``db.one_statement`` or ``db.single_read`` without
        ``BEGIN``/``COMMIT`` (its one statement is a transaction by itself), so it costs
        one round trip: /img/'s lookup is one statement instead of three."""
        if self._pool is None:
            return fail(db.DatabaseUnavailable("the database is not open"))
        if getattr(operation, "one_statement", False) or getattr(operation, "single_statement", False):
            d = self._pool.runStatement(_interaction, operation, args)
        else:
            d = self._pool.runInteraction(_interaction, operation, args)
        return _detached(self._reactor, d.addErrback(_unavailable))


def _detached(reactor: Any, running: Deferred[Any]) -> Deferred[Any]:
    """``running``'s result, in a Deferred whose ``cancel`` leaves ``running`` alone.

    Klein cancels a request's Deferred when its client disconnects, and that
    cancellation would reach txpostgres mid-statement: the query is cancelled, the
    rollback then fails ("an asynchronous query is underway"), the connection is
    dropped and the pool declares the database unavailable, so every request of the
    process answers 503 until it has reconnected.  Instead the caller gets
    ``CancelledError`` at once and the transaction runs to its end (committed or
    rolled back, as it would have been), its result dropped; only one still running
    ``ABANDONED_GRACE`` seconds later is cancelled for real.
    """

    def abandon(_: Deferred[Any]) -> None:
        timer = reactor.callLater(ABANDONED_GRACE, running.cancel)
        running.addBoth(lambda _: timer.cancel() if timer.active() else None)

    caller: Deferred[Any] = Deferred(abandon)

    def forward(result: Any) -> None:
        if not caller.called:
            if isinstance(result, Failure):
                caller.errback(result)
            else:
                caller.callback(result)
        # else: the caller is gone; a failure here was already rolled back, and is dropped

    running.addBoth(forward)
    return caller


def _interaction(cursor: Any, operation: Any, args: tuple) -> Deferred[Any]:
    if getattr(operation, "recoverable", False):
        return Deferred.fromCoroutine(_without_waiting_for_disk(_PgTx(cursor), operation, args))
    return Deferred.fromCoroutine(operation(_PgTx(cursor), *args))


async def _without_waiting_for_disk(tx: _PgTx, operation: Any, args: tuple) -> Any:
    """A ``db.recoverable`` operation, committed without waiting for its WAL to reach
    the disk: the next durable commit (or the WAL writer, within 3 × wal_writer_delay)
    flushes it."""
    await tx.execute("SET LOCAL synchronous_commit TO OFF")
    return await operation(tx, *args)


def _unavailable(failure: Failure) -> Failure:
    if is_unavailable(failure):
        raise db.DatabaseUnavailable(failure.getErrorMessage().strip() or failure.type.__name__)
    return failure


async def migrate_locked(tx: db.Tx, files: list[tuple[int, str]], create: bool = True) -> int:
    """``db.migrate`` under a transaction-scoped advisory lock: when several processes
    start at once, the first migrates and the others then find nothing to do."""
    await tx.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,))
    return await db.migrate(tx, files, create)


@implementer(IPlugin, db.IDatabaseFactory)
class PostgresFactory:
    """Opens ``postgresql://`` (and ``postgres://``) URLs; the runner looks the server's
    name up (libpq would do it on the reactor thread)."""

    schemes = ("postgresql", "postgres")

    def open(self, url: str, reactor: Any, runner: Any) -> PostgresDatabase:
        return PostgresDatabase(url, reactor, runner)

    def missing(self, url: str) -> str | None:
        """None: connecting never creates a PostgreSQL database (a missing one is an error then)."""
        return None


postgres_backend = PostgresFactory()
