"""The production Storage: an S3 bucket (AWS, or any S3-compatible store).

URL: ``s3://BUCKET[/PREFIX]?endpoint_url=https://...&region=eu-west-1&addressing_style=path``
``&put_timeout=30&read_timeout=30`` (every parameter optional).  Credentials never
come from the URL: boto3's standard chain finds them (``AWS_ACCESS_KEY_ID``/
``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE`` and ``~/.aws``, container or instance roles).

Deadlines: a put that has not succeeded within ``put_timeout`` seconds (default
30) fails with StorageUnavailable (the upload answers 503); a delete (and the
bucket check at start-up) within ``read_timeout``; a read (``fetch``, ``stream``) must begin within
``read_timeout`` (default 30 s) and may then stay silent that long between body
bytes while we read (default 60 s); a client that stops reading is never cut.
A boto3 call cannot be interrupted: its thread ends by itself (boto3's own
connect and read timeouts follow these values), and until it has, the key of a
put or delete given up on is neither written nor deleted again (a late put
could otherwise bring an object back after its purge, or overwrite a newer one).

Writes, deletes and fetches are boto3 calls on one shared client, in
this backend's own thread pool (never on the reactor, and never starving the
server's other file work).  Uploads carry a SHA-256 checksum that S3 verifies
before it stores the object; standard retry mode retries throttling and
transient errors.

Reads for ``/img/`` are one header-signed SigV4 ``GET`` with a ``Range`` header for
exactly the bytes the response needs, signed on the reactor by
``imgshare.sigv4.RangeSigner`` (no boto3 call, no thread hop; credentials frozen
and refreshed in this backend's pool by ``CredentialKeeper``), sent by a Twisted
``Agent`` over a persistent connection pool (plain TCP endpoints for an endpoint
given by IP address; reads of 256 KiB per socket read measured no faster).  The URL layout (virtual or path
addressing, regional endpoints, a custom ``endpoint_url`` with its port) is the one
botocore builds for ``GetObject``, taken once at start-up.  The upstream body's
transport is paused and resumed by the client's flow control
(``imgshare.producers.BodyRelay``, the request's push producer).  Nothing from
the upstream response reaches the client but body bytes: the web layer sets
every header from the database row.

Measured with ``bench/serve.py --storage s3 --requests 1000 --big-requests 60``
(moto_server on loopback, which answers ``Connection: close``, so every read also
pays a new TCP connection; 2 cores shared with other work: best of 3 runs each):

==========================================  ================  ====================
                                             before (presign)  now
==========================================  ================  ====================
60 KB, IMGSHARE CPU per request              4.66 ms           2.61 ms
60 KB, cache hit (``--cache-dir``)           -                 0.71 ms (local 0.68)
5 MB, /img/ on S3 vs the endpoint directly   0.54x             0.46x (moto-bound)
5 MB, cache hit vs the endpoint directly     -                 1.08-1.37x
==========================================  ================  ====================

What is left per uncached read with moto is mostly kernel time of a new loopback
connection per request (connect, send, shutdown top the profile; Python's own work
fell by a third in function calls).  For 5 MB the two cores are the limit: moto
(6-7 ms CPU per 5 MB), the load generator and IMGSHARE (11-13 ms) share them, where
the direct column has no IMGSHARE at all.  Against a store that keeps connections
alive (AWS S3) the pool reuses them (``tests/test_s3_reads.py`` counts connections).
"""

from __future__ import annotations

import math
import os
import re
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs
from twisted.internet.abstract import isIPAddress
from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.plugin import IPlugin
from twisted.python.failure import Failure
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from imgshare import threads as threading_priority
from imgshare.httpclient import quiet_pool
from imgshare.producers import BodyRelay
from imgshare.sigv4 import CredentialKeeper, RangeSigner, encode_path
from imgshare.storage import IStorage, IStorageFactory, ObjectMissing, StorageUnavailable, check_key
from imgshare.threads import BackgroundThreadPool, PoolRunner

log = Logger()

#: Threads (and pooled HTTP connections of the boto3 client) for boto3 calls.
DEFAULT_THREADS = 10
#: An unwanted (error) body longer than this closes its connection instead of being read.
HIGH_WATER = 64 * 1024
#: Seconds to wait for S3's response headers, and for body bytes while reading
#: (both ``read_timeout`` when the URL gives one).
HEADERS_TIMEOUT = 30.0
IDLE_TIMEOUT = 60.0
#: Seconds a put may take in all (``put_timeout``) before the upload answers 503.
PUT_TIMEOUT = 30.0
#: The longest connect wait of any call.
CONNECT_TIMEOUT = 10.0
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_MISSING_CODES = {"404", "NoSuchKey", "NotFound"}


@attrs.frozen
class Location:
    """Where the objects live, parsed from an ``s3://`` URL."""

    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    addressing_style: str = "auto"
    #: Seconds a put may take in all.
    put_timeout: float = PUT_TIMEOUT
    #: Seconds S3 may stay silent during any other call (None: the defaults above).
    read_timeout: float | None = None

    @property
    def first_byte_timeout(self) -> float:
        """Seconds a delete, the bucket check or the start of a read may take."""
        return self.read_timeout or HEADERS_TIMEOUT

    @classmethod
    def parse(cls, url: str) -> Location:
        """Parse and check an ``s3://`` URL (ValueError explains what is wrong)."""
        parts = urlsplit(url)
        if parts.scheme != "s3":
            raise ValueError(f"not an s3 URL: {url!r}")
        if "@" in parts.netloc or parts.password is not None:
            raise ValueError("s3 URLs never carry credentials: use the standard AWS chain "
                             "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, instance roles)")
        if not parts.hostname:
            raise ValueError("an s3 URL needs a bucket, e.g. s3://my-images?region=eu-west-1")
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        known = ("endpoint_url", "region", "addressing_style", "put_timeout", "read_timeout")
        unknown = set(query) - set(known)
        if unknown:
            raise ValueError(f"unknown s3 URL parameter(s): {', '.join(sorted(unknown))} "
                             f"(known: {', '.join(known)})")
        style = query.get("addressing_style") or "auto"
        if style not in ("auto", "path", "virtual"):
            raise ValueError("addressing_style must be auto, path or virtual")
        prefix = parts.path.strip("/")
        if prefix:
            check_key(prefix)
            prefix += "/"
        read_timeout = _seconds(query, "read_timeout")
        return cls(bucket=parts.netloc, prefix=prefix, endpoint_url=query.get("endpoint_url") or None,
                   region=query.get("region") or None, addressing_style=style,
                   put_timeout=_seconds(query, "put_timeout") or PUT_TIMEOUT, read_timeout=read_timeout)


def _seconds(query: dict[str, str], name: str) -> float | None:
    """A timeout parameter: seconds, positive and finite; None when absent."""
    if name not in query:
        return None
    try:
        value = float(query[name])
    except ValueError:
        value = math.nan
    if not (0 < value < math.inf):
        raise ValueError(f"{name} must be a number of seconds above 0, e.g. {name}=30")
    return value


def _is_missing(error: Exception) -> bool:
    from botocore.exceptions import ClientError

    return isinstance(error, ClientError) and str(error.response.get("Error", {}).get("Code")) in _MISSING_CODES


def _describe(error: Exception) -> str:
    """A short reason for logs and exceptions, never including a URL or credentials."""
    from botocore.exceptions import ClientError

    if isinstance(error, ClientError):
        info = error.response.get("Error", {})
        return f"S3 refused: {info.get('Code', '?')} {info.get('Message', '')}".strip()
    return f"{type(error).__name__}: {error}"


@implementer(IStorage)
class S3Storage:
    """An IStorage on one S3 bucket."""

    def __init__(self, url: str, reactor: Any, threads: int = DEFAULT_THREADS):
        self.url = url
        self.location = Location.parse(url)
        self._reactor = reactor
        self._threads = threads
        self.pool = BackgroundThreadPool(minthreads=0, maxthreads=threads, name="imgshare-s3",
                                         niceness=threading_priority.IO_NICENESS)
        self.runner = PoolRunner(reactor, self.pool)
        self.client: Any = None
        self._http_pool = quiet_pool(reactor, persistent=True)  # no log lines per S3 connection
        self._http_pool.maxPersistentPerHost = 32
        self._http_pool.cachedConnectionTimeout = 20
        self._agent: Any = None
        #: Set at start: the signer of reads, where objects are, and the credentials.
        self._signer: RangeSigner | None = None
        self._origin = b""
        self._base_path = "/"
        self.credentials: CredentialKeeper | None = None
        self._credential_source: Any = None
        #: The reads in progress (each a ``BodyRelay``).
        self.streams: set[BodyRelay] = set()
        #: Keys with a put or delete still running in a thread (maybe given up on).
        self.writing: set[str] = set()

    # ---------------------------------------------------------------- setup

    async def start(self) -> None:
        """Start the thread pool, make the boto3 client and check that the bucket answers.

        A missing bucket or refused credentials stop the start-up; an
        unreachable endpoint is only logged (requests get 503 until it is back).
        """
        self.pool.start()
        try:
            await self._start()
        except BaseException:
            self.pool.stop()  # its threads would keep the process alive
            raise

    async def _start(self) -> None:
        connect = min(CONNECT_TIMEOUT, self.location.first_byte_timeout)
        self._agent = Agent.usingEndpointFactory(
            self._reactor, _Endpoints(self._reactor, connect), pool=self._http_pool)
        self.client = await self.runner.run(self._make_client)
        self.credentials = CredentialKeeper(self._credential_source, self.runner)
        try:
            await self._call(self.location.first_byte_timeout, "looking up the bucket",
                             self.client.head_bucket, Bucket=self.location.bucket)
        except Exception as e:
            from botocore.exceptions import ClientError, NoCredentialsError

            if isinstance(e, ClientError | NoCredentialsError):
                raise StorageUnavailable(f"bucket {self.location.bucket!r}: {_describe(e)}") from e
            log.warn("S3 bucket {bucket} does not answer yet ({error}); serving 503 until it does",
                     bucket=self.location.bucket, error=_describe(e))
        try:
            await self.credentials.start()
        except Exception as e:  # e.g. an instance role's endpoint that is slow: reads ask again
            log.warn("S3 credentials are not available yet ({error})", error=_describe(e))
        try:
            origin, host, self._base_path, region = await self.runner.run(self._layout)
        except Exception as e:
            raise StorageUnavailable(f"cannot sign reads of bucket {self.location.bucket!r}: {_describe(e)}") from e
        self._origin = origin
        self._signer = RangeSigner(host, region)
        log.info("S3 storage ready: bucket {bucket}", bucket=self.location.bucket)

    def _make_client(self) -> Any:
        import boto3
        from botocore.config import Config

        # Each attempt is bounded (a silent socket fails after ``silence``), so a
        # thread whose answer was given up on at its deadline ends by itself.
        silence = max(self.location.put_timeout, self.location.first_byte_timeout)
        config = Config(
            retries={"mode": "standard"}, signature_version="s3v4",
            s3={"addressing_style": self.location.addressing_style},
            max_pool_connections=self._threads, connect_timeout=min(CONNECT_TIMEOUT, silence),
            read_timeout=silence,
        )
        session = boto3.session.Session()
        client = session.client(
            "s3", endpoint_url=self.location.endpoint_url, region_name=self.location.region, config=config,
        )
        # The very object the client signs with (botocore caches it in the session).
        self._credential_source = session.get_credentials()
        return client

    def stop(self) -> Deferred[None]:
        """Abort reads in progress, stop the thread pool, close pooled connections."""
        for relay in list(self.streams):
            relay.abort(StorageUnavailable("storage is shutting down"))
        if self.pool.started:
            self.pool.stop()
        return self._http_pool.closeCachedConnections()

    def probe(self) -> Deferred[None]:
        """``HeadBucket`` within the read deadline: the bucket answers."""
        return self._call(self.location.first_byte_timeout, "looking up the bucket", self._head_bucket)

    def _head_bucket(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.location.bucket)
        except Exception as e:
            raise StorageUnavailable(f"bucket {self.location.bucket!r}: {_describe(e)}") from e

    def _key(self, key: str) -> str:
        check_key(key)
        return self.location.prefix + key

    # ------------------------------------------------------- boto3 (threads)

    def _call(self, seconds: float, what: str, f: Any, *args: Any, on_late: Any = None,
              key: str | None = None, **kwargs: Any) -> Deferred[Any]:
        """Run ``f(*args, **kwargs)`` in the pool; StorageUnavailable unless it has answered
        within ``seconds`` (waiting for a thread included: a call that had not begun by
        then never does).  The thread of a call given up on runs to its end; a late
        result goes to ``on_late``.  ``key`` is held in ``writing`` until the thread ends."""
        deadline = time.monotonic() + seconds
        answer: Deferred[Any] = Deferred()

        def unless_late() -> Any:
            if time.monotonic() >= deadline:
                raise StorageUnavailable(f"gave up {what} before it began (every S3 thread was busy)")
            return f(*args, **kwargs)

        def ended(result: Any) -> None:
            if key is not None:
                self.writing.discard(key)
            if not answer.called:
                if isinstance(result, Failure):
                    answer.errback(result)
                else:
                    answer.callback(result)
            elif on_late is not None and not isinstance(result, Failure):
                on_late(result)

        def timed_out(result: Any, timeout: float) -> Failure:
            # No line per call: the outage is logged once (imgshare.outage).
            return Failure(StorageUnavailable(f"S3 did not answer {what} within {seconds:g} s"))

        if key is not None:
            self.writing.add(key)
        self.runner.run(unless_late).addBoth(ended)
        answer.addTimeout(seconds, self._reactor, onTimeoutCancel=timed_out)
        return answer

    def _write(self, key: str, seconds: float, what: str, f: Any, *args: Any) -> Deferred[None]:
        """A put or delete of ``key``, refused while an earlier one still runs."""
        if key in self.writing:
            return fail(StorageUnavailable(f"an earlier write or delete of {key} is still under way"))
        return self._call(seconds, what, f, *args, key=key)

    def put(self, key: str, path: str, content_type: str) -> Deferred[None]:
        key = self._key(key)
        return self._write(key, self.location.put_timeout, f"storing {key}", self._put, key, path, content_type)

    def _put(self, key: str, path: str, content_type: str) -> None:
        try:
            with open(path, "rb") as body:
                self.client.put_object(
                    Bucket=self.location.bucket, Key=key, Body=body, ContentType=content_type,
                    ChecksumAlgorithm="SHA256",
                )
        except Exception as e:
            raise StorageUnavailable(f"cannot store {key}: {_describe(e)}") from e

    def fetch(self, key: str, path: str) -> Deferred[None]:
        return Deferred.fromCoroutine(self._fetch(self._key(key), path))

    async def _fetch(self, key: str, path: str) -> None:
        """The answer must begin within the read deadline; the body may then take as long
        as S3 keeps sending (a silent socket fails after the same deadline)."""
        response = await self._call(self.location.first_byte_timeout, f"reading {key}", self._get, key,
                                    on_late=self._close_body)
        await self.runner.run(self._save, key, response, path)

    def _close_body(self, response: Any) -> None:
        self.runner.run(response["Body"].close).addErrback(lambda _: None)

    def _get(self, key: str) -> Any:
        try:
            return self.client.get_object(Bucket=self.location.bucket, Key=key, ChecksumMode="ENABLED")
        except Exception as e:
            if _is_missing(e):
                raise ObjectMissing(key) from e
            raise StorageUnavailable(f"cannot read {key}: {_describe(e)}") from e

    def _save(self, key: str, response: Any, path: str) -> None:
        try:
            with open(path, "wb") as out:
                for chunk in response["Body"].iter_chunks(1024 * 1024):
                    out.write(chunk)
        except Exception as e:
            try:
                os.unlink(path)
            except OSError:
                pass
            raise StorageUnavailable(f"cannot read {key}: {_describe(e)}") from e

    def delete(self, key: str) -> Deferred[None]:
        key = self._key(key)
        return self._write(key, self.location.first_byte_timeout, f"deleting {key}", self._delete, key)

    def _delete(self, key: str) -> None:
        try:  # S3 answers 204 for a key that is not there: deleting is idempotent
            self.client.delete_object(Bucket=self.location.bucket, Key=key)
        except Exception as e:
            raise StorageUnavailable(f"cannot delete {key}: {_describe(e)}") from e

    # ------------------------------------------------------- streamed reads

    def _layout(self) -> tuple[bytes, str, str, str]:
        """Where a key's object is, exactly as botocore addresses a GetObject (blocking:
        one request built and signed locally at start-up, never sent): the origin
        (``http://host:port``), the ``Host`` header, the path before the key, and
        the signing region."""
        placeholder = "k"
        seen: dict[str, Any] = {}

        def captured(request: Any, **kwargs: Any) -> None:
            seen["url"], seen["authorization"] = request.url, request.headers["Authorization"]
            raise _Captured()

        events = self.client.meta.events
        events.register_first("before-send.s3.GetObject", captured, unique_id="imgshare-layout")
        try:
            self.client.get_object(Bucket=self.location.bucket, Key=placeholder)
        except _Captured:
            pass
        finally:
            events.unregister("before-send.s3.GetObject", unique_id="imgshare-layout")
        parts = urlsplit(seen["url"])
        authorization = seen["authorization"]
        authorization = authorization.decode() if isinstance(authorization, bytes) else authorization
        region = authorization.split("Credential=", 1)[1].split("/")[2]
        if not parts.path.endswith("/" + placeholder):
            raise StorageUnavailable(f"unexpected object URL layout for bucket {self.location.bucket!r}")
        origin = f"{parts.scheme}://{parts.netloc}".encode()
        return origin, parts.netloc, parts.path[:-len(placeholder)], region

    def stream(self, key: str, consumer: Any, offset: int, length: int, version: str | None = None) -> Deferred[None]:
        return Deferred.fromCoroutine(self._stream(self._key(key), consumer, offset, length))

    async def _stream(self, key: str, consumer: Any, offset: int, length: int) -> None:
        if length <= 0:
            return
        if self._signer is None:
            raise StorageUnavailable("S3 storage is not started")
        # Waiting for credentials (rarely: a mandatory refresh) and S3's answer share one deadline.
        deadline = time.monotonic() + self.location.first_byte_timeout
        credentials = self.credentials.current()
        if isinstance(credentials, Deferred):
            try:
                credentials = await _within(credentials, self.location.first_byte_timeout, self._reactor)
            except Exception as e:
                raise StorageUnavailable(f"cannot sign a read of {key}: {_describe(e)}") from e
        path = self._base_path + encode_path(key)
        range_value = f"bytes={offset}-{offset + length - 1}"
        headers = Headers()
        for name, value in self._signer.headers(credentials, path, range_value):
            headers.addRawHeader(name, value)
        try:
            response = await _within(self._agent.request(b"GET", self._origin + path.encode(), headers),
                                     max(deadline - time.monotonic(), 0.001), self._reactor)
        except CancelledError as e:
            raise StorageUnavailable(
                f"S3 did not answer reading {key} within {self.location.first_byte_timeout:g} s") from e
        except Exception as e:
            # Twisted's messages may name the endpoint; the type is enough here.
            raise StorageUnavailable(f"cannot reach S3 to read {key}: {type(e).__name__}") from e
        skip = _plan_body(response, key, offset, length)
        if isinstance(skip, Exception):
            discard = _Discard()
            response.deliverBody(discard)
            await discard.done
            if isinstance(skip, ObjectMissing) and b"<Code>NoSuchBucket</Code>" in discard.head:
                raise StorageUnavailable(f"bucket {self.location.bucket!r} does not exist (S3 answered 404)")
            raise skip
        total = response.length if isinstance(response.length, int) else None
        relay = BodyRelay(consumer, length, skip, self._reactor, self.location.read_timeout or IDLE_TIMEOUT,
                          total, source="S3")
        self.streams.add(relay)
        try:
            response.deliverBody(relay)
            relay.settle()
            await relay.done
        finally:
            self.streams.discard(relay)


def _within(d: Deferred[Any], seconds: float, reactor: Any) -> Deferred[Any]:
    """``d``, cancelled (CancelledError) unless it has fired within ``seconds``."""
    return d.addTimeout(seconds, reactor)


def _plan_body(response: Any, key: str, offset: int, length: int) -> int | Exception:
    """Check S3's answer to a range request: how many leading body bytes to skip,
    or the error to fail with.

    206 must name exactly the range asked for.  A 200 (a store that ignores
    ``Range``) is accepted when the whole object is long enough: the relay
    skips to ``offset`` and stops after ``length`` bytes.
    """
    code = response.code
    if code == 206:
        value = response.headers.getRawHeaders(b"content-range", [b""])[0].decode("latin-1")
        m = _CONTENT_RANGE.match(value.strip())
        if m and int(m.group(1)) == offset and int(m.group(2)) == offset + length - 1:
            return 0
        return StorageUnavailable(f"S3 answered another range ({value!r}) than bytes {offset}-{offset + length - 1}")
    if code == 200:
        total = response.length
        if isinstance(total, int) and total >= offset + length:
            return offset
        return StorageUnavailable(f"S3 ignored the range and its object is not long enough ({total})")
    if code == 404:
        return ObjectMissing(key)
    if code == 416:
        return StorageUnavailable("the object in S3 is shorter than recorded (416)")
    return StorageUnavailable(f"S3 answered {code} reading {key}")


@implementer(IAgentEndpointFactory)
class _Endpoints:
    """The endpoints of S3 connections: plain TCP for an ``http://`` endpoint given by
    IPv4 address (an S3 gateway on the local network: a ``HostnameEndpoint`` would
    resolve the address in a thread for every new connection), else a
    ``HostnameEndpoint``, wrapped in TLS for ``https://`` (a browser-like policy: the
    certificate must match the host)."""

    def __init__(self, reactor: Any, timeout: float):
        self._reactor = reactor
        self._timeout = timeout
        self._tls = BrowserLikePolicyForHTTPS()

    def endpointForURI(self, uri: Any) -> Any:
        host = uri.host.decode("ascii", "replace")
        if uri.scheme == b"http" and isIPAddress(host):
            return TCP4ClientEndpoint(self._reactor, host, uri.port, timeout=self._timeout)
        endpoint = HostnameEndpoint(self._reactor, uri.host, uri.port, timeout=self._timeout)
        if uri.scheme == b"https":
            endpoint = wrapClientTLS(self._tls.creatorForNetloc(uri.host, uri.port), endpoint)
        return endpoint


class _Captured(Exception):
    """Stops botocore before it sends the request whose layout ``_layout`` wanted."""


class _Discard(Protocol):
    """Read and drop an unwanted (error) body, so its connection can serve the next read;
    a long one closes the connection instead."""

    def __init__(self) -> None:
        self.done: Deferred[None] = Deferred()
        self._seen = 0
        #: The body's first bytes (S3's error document names its code).
        self.head = b""

    def dataReceived(self, data: bytes) -> None:
        if len(self.head) < 4096:
            self.head += data[:4096 - len(self.head)]
        self._seen += len(data)
        if self._seen > HIGH_WATER:
            self.transport.stopProducing()

    def connectionLost(self, reason: Failure) -> None:
        self.done.callback(None)


@implementer(IPlugin, IStorageFactory)
class S3StorageFactory:
    """Opens ``s3://`` URLs.  The shared runner is not used: boto3 calls get their own
    pool, so a slow S3 never holds up the server's local file work."""

    schemes = ("s3",)

    def open(self, url: str, reactor: Any, runner: Any) -> S3Storage:
        return S3Storage(url, reactor)


s3_backend = S3StorageFactory()
