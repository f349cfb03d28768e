"""Safe URL fetching for ``img_gather.php`` (SPEC section 8).

The server fetches a URL for a user, so any URL a user sends must not be able to
reach what only the server can reach. The defence lives in the connection layer,
where it cannot be skipped:

* :func:`imgshare.domain.addresses.address_allowed` says whether an IP address
  is globally routable. IPv6 forms that carry an IPv4 address (IPv4-mapped,
  NAT64, 6to4, Teredo) are judged by the IPv4 address they carry.
* :func:`parse_target` reads a URL the way a browser would, including the odd
  IPv4 spellings (``127.1``, ``0x7f.1``, ``2130706433``, ``017700000001``),
  which are decoded and then vetted like any other literal address.
* :class:`VettingEndpointFactory` gives ``twisted.web.client.Agent`` endpoints
  that resolve the name once, refuse (403) unless *every* address it resolves
  to is allowed, and then connect to a vetted IP address: there is no second
  lookup, so DNS rebinding cannot swap the address. The ``Host`` header, TLS SNI
  and the certificate check still use the name from the URL.
* :class:`Gatherer` follows redirects itself (each target goes through the same
  endpoints again), streams the body into the spool folder with the size cap,
  enforces the timeouts and remembers failed URLs for ten minutes.

Proxy environment variables (``http_proxy``, ``HTTPS_PROXY``, ``ALL_PROXY``...)
are never consulted: ``Agent`` does not read them, and no proxy agent is used.

The only way to relax the address policy is the ``allow`` argument of
:class:`Gatherer`, given in code (the tests use it to reach a loopback server);
no option, environment variable or configuration key changes it.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tempfile
from collections import OrderedDict
from typing import IO, Any
from urllib.parse import quote, unquote, urljoin, urlsplit

import attrs
import idna
from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet import address as taddress
from twisted.internet import error as terror
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import IResolutionReceiver, IStreamClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.internet.ssl import optionsForClientTLS
from twisted.python.failure import Failure
from twisted.web.client import Agent, ResponseDone
from twisted.web.error import SchemeNotSupported
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IAgentEndpointFactory
from zope.interface import implementer

import imgshare
from imgshare.domain import errors, sniff
from imgshare.domain.addresses import AddressPolicy, IPAddress, parse_host_literal, public_only
from imgshare.httpclient import quiet_pool
from imgshare.spool import remove_if_present

MAX_REDIRECTS = 5
CONNECT_TIMEOUT = 10.0
TOTAL_TIMEOUT = 60.0
ERROR_CACHE_SECONDS = 600.0
ERROR_CACHE_SIZE = 1000
MAX_URL_LENGTH = 8192
REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
ACCEPT = b"image/webp,image/png,image/jpeg,image/bmp,image/*;q=0.8,*/*;q=0.5"

_HOSTNAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*\.?")
_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f]")


@attrs.frozen
class Target:
    """One URL to fetch, in the canonical form it is requested with."""

    scheme: str  # "http" or "https"
    host: str  # IDNA-encoded lower-case name, or the canonical IP address text
    port: int
    target: str  # path and query, percent-encoded ("origin-form")
    address: IPAddress | None  # set when the URL names an IP address

    @property
    def url(self) -> str:
        """The canonical URL: what is requested, and the error cache key."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        port = "" if self.port == default else f":{self.port}"
        return f"{self.scheme}://{host}{port}{self.target}"


def parse_target(url: str) -> Target:
    """Check and canonicalize a user's URL; BadRequest (400) explains a refusal.

    Only ``http`` and ``https`` with a host are accepted; credentials in the URL,
    control characters and spaces are refused. The fragment is dropped;
    non-ASCII in the path and query is percent-encoded.
    """
    if len(url) > MAX_URL_LENGTH:
        raise errors.BadRequest(f"url is too long (at most {MAX_URL_LENGTH} characters)")
    if _CONTROL_OR_SPACE.search(url):
        raise errors.BadRequest("url must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise errors.BadRequest(f"malformed url: {e}") from e
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise errors.BadRequest("url must be http:// or https://")
    if parts.username is not None or parts.password is not None:
        raise errors.BadRequest("url must not contain a user name or password")
    if "\\" in parts.netloc:
        raise errors.BadRequest("malformed url: backslash in the host")
    raw_host = parts.hostname or ""
    if not raw_host:
        raise errors.BadRequest("url has no host")
    if port == 0:
        raise errors.BadRequest("malformed url: port 0")
    try:
        host = raw_host if raw_host.isascii() else idna.encode(raw_host, uts46=True).decode("ascii")
        address = parse_host_literal(host)
    except (ValueError, idna.IDNAError) as e:
        raise errors.BadRequest(f"malformed url host: {e}") from e
    if address is not None:
        host = str(address)
    elif not _HOSTNAME.fullmatch(host.lower()):
        raise errors.BadRequest("malformed url host")
    path = quote(parts.path or "/", safe="/:@!$&'()*+,;=-._~%")
    query = quote(parts.query, safe="/?:@!$&'()*+,;=-._~%")
    return Target(
        scheme=scheme, host=host.lower(), port=port or (443 if scheme == "https" else 80),
        target=path + (f"?{query}" if query else ""), address=address,
    )


def url_filename(url: str) -> str:
    """The last path segment of ``url``, percent-decoded (the ``keep_name`` source)."""
    return unquote(urlsplit(url).path.rsplit("/", 1)[-1], errors="replace")


# ------------------------------------------------------------------ resolving

@implementer(IResolutionReceiver)
class _Collector:
    """Gathers the addresses of one ``IHostnameResolver`` lookup into a Deferred."""

    def __init__(self, done: Deferred[list[str]]):
        self.done = done
        self.hosts: list[str] = []

    def resolutionBegan(self, resolution: Any) -> None:
        pass

    def addressResolved(self, address: Any) -> None:
        self.hosts.append(address.host)

    def resolutionComplete(self) -> None:
        if not self.done.called:  # not cancelled meanwhile
            self.done.callback(self.hosts)


def resolve(resolver: Any, host: str, port: int) -> Deferred[list[str]]:
    """Every address (IPv4 and IPv6) ``resolver`` (an IHostnameResolver) gives ``host``."""
    done: Deferred[list[str]] = Deferred()
    resolver.resolveHostName(
        _Collector(done), host, port,
        addressTypes=(taddress.IPv4Address, taddress.IPv6Address), transportSemantics="TCP",
    )
    return done


@implementer(IAgentEndpointFactory)
@attrs.define
class VettingEndpointFactory:
    """Endpoints for ``Agent.usingEndpointFactory`` that connect to vetted addresses only."""

    reactor: Any
    resolver: Any  # IHostnameResolver
    allow: AddressPolicy = public_only
    connect_timeout: float = CONNECT_TIMEOUT
    trust_root: Any = None  # IOpenSSLTrustRoot; None: the platform's CA certificates

    def endpointForURI(self, uri: Any) -> VettedEndpoint:
        """The endpoint for ``uri`` (a ``twisted.web.client.URI``)."""
        scheme = uri.scheme.decode("ascii")
        if scheme not in ("http", "https"):
            raise SchemeNotSupported(f"unsupported scheme: {scheme}")
        return VettedEndpoint(self, uri.host.decode("ascii"), uri.port, scheme == "https")

    async def vetted_addresses(self, host: str, port: int) -> list[IPAddress]:
        """Every address ``host`` stands for, if all are allowed; Forbidden (403) otherwise."""
        literal = parse_host_literal(host)
        if literal is not None:
            found = [literal]
        else:
            hosts = await resolve(self.resolver, host, port)
            if not hosts:
                raise errors.GatherFailed(f"DNS lookup for {host} failed: no addresses")
            found = []
            for text in dict.fromkeys(hosts):
                try:
                    found.append(ipaddress.ip_address(text))
                except ValueError as e:
                    raise errors.Forbidden(f"forbidden address: {host} resolves to {text!r}") from e
        for ip in found:
            if not self.allow(ip, port):
                shown = host if literal is not None else f"{host} resolves to {ip}, which"
                raise errors.Forbidden(
                    f"forbidden address: {shown} is not a public internet address"
                )
        return found


@implementer(IStreamClientEndpoint)
@attrs.define
class VettedEndpoint:
    """Resolve and vet when asked to connect; then connect by IP, with TLS for the name."""

    factory: VettingEndpointFactory
    host: str  # as in the request URL (brackets around IPv6)
    port: int
    tls: bool

    def connect(self, protocol_factory: Any) -> Deferred[Any]:
        """Vet every address, then try the vetted addresses in order."""
        return Deferred.fromCoroutine(self._connect(protocol_factory))

    async def _connect(self, protocol_factory: Any) -> Any:
        addresses = await self.factory.vetted_addresses(self.host, self.port)
        name = self.host.strip("[]")
        last: Exception | None = None
        for ip in addresses:
            kind = TCP6ClientEndpoint if ip.version == 6 else TCP4ClientEndpoint
            endpoint: Any = kind(
                self.factory.reactor, str(ip), self.port, timeout=self.factory.connect_timeout
            )
            if self.tls:
                options = optionsForClientTLS(name, trustRoot=self.factory.trust_root)
                endpoint = wrapClientTLS(options, endpoint)
            try:
                return await endpoint.connect(protocol_factory)
            except terror.ConnectingCancelledError:
                raise
            except terror.ConnectError as e:
                last = e  # try the next vetted address
        assert last is not None
        raise last


# ------------------------------------------------------------------- the body

class _Discard(Protocol):
    """A body protocol that stops the transfer at once (we do not want the body)."""

    def connectionMade(self) -> None:
        self.transport.stopProducing()


def abandon(response: Any) -> None:
    """Drop ``response``'s body and close its connection without reading it."""
    response.deliverBody(_Discard())


class _Spooler(Protocol):
    """Writes a response body to ``out``; cuts the transfer once it passes ``limit``.

    The first bytes are sniffed as they arrive, so a body that is not one of
    the accepted image types is refused (415) without downloading the rest.
    """

    def __init__(self, out: IO[bytes], limit: int):
        self.out = out
        self.limit = limit
        self.received = 0
        self.head: bytes | None = b""
        self.stopped = False
        self.done: Deferred[int] = Deferred(lambda d: self._cut())

    def dataReceived(self, data: bytes) -> None:
        if self.stopped:
            return
        self.received += len(data)
        if self.received > self.limit:
            self._fail(errors.TooLarge(
                f"the source sent more than the limit of {self.limit} bytes; download stopped"
            ))
            return
        if self.head is not None:
            self.head += data[: sniff.SNIFF_BYTES]
            if len(self.head) >= sniff.SNIFF_BYTES and not self._type_ok():
                return
        self.out.write(data)

    def _type_ok(self) -> bool:
        head, self.head = self.head or b"", None
        if sniff.sniff_type(head[: sniff.SNIFF_BYTES]) is None:
            self._fail(errors.UnsupportedType(sniff.UNSUPPORTED_MESSAGE))
            return False
        return True

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        if self.stopped or self.done.called:
            return
        self.stopped = True
        if not reason.check(ResponseDone, PotentialDataLoss):
            self.done.errback(errors.GatherFailed(
                "the source closed the connection before the end of the file"
            ))
        elif self.head is None or self._type_ok():
            self.done.callback(self.received)

    def _cut(self) -> None:
        self.stopped = True
        if self.transport is not None:
            self.transport.stopProducing()

    def _fail(self, error: errors.ApiError) -> None:
        self._cut()
        if not self.done.called:
            self.done.errback(error)


# ----------------------------------------------------------------- the errors

def describe_failure(error: BaseException, target: Target) -> BaseException:
    """The API error for a failed request to ``target`` (cancellation passes through)."""
    reasons = getattr(error, "reasons", None)  # ResponseNeverReceived, ResponseFailed...
    if reasons:
        error = reasons[0].value
    where = f"{target.host}:{target.port}"
    if isinstance(error, errors.ApiError | CancelledError | terror.ConnectingCancelledError):
        return error
    if isinstance(error, SSL.Error):
        reason = _ssl_reason(error)
        if "certificate" in reason:
            return errors.GatherFailed(f"TLS certificate of {target.host} rejected: {reason}")
        return errors.GatherFailed(f"TLS handshake with {target.host} failed: {reason}")
    if isinstance(error, VerificationError):
        return errors.GatherFailed(f"TLS certificate rejected: it is not valid for {target.host}")
    if isinstance(error, terror.ConnectionRefusedError):
        return errors.GatherFailed(f"connection to {where} refused")
    if isinstance(error, terror.TimeoutError | terror.TCPTimedOutError):
        return errors.GatherFailed(f"connecting to {where} timed out")
    if isinstance(error, terror.DNSLookupError):
        return errors.GatherFailed(f"DNS lookup for {target.host} failed")
    if isinstance(error, terror.ConnectError):
        return errors.GatherFailed(f"could not connect to {where}: {error}")
    if isinstance(error, terror.ConnectionLost | terror.ConnectionDone):
        return errors.GatherFailed(f"{where} closed the connection without an answer")
    return errors.GatherFailed(f"fetching from {where} failed ({type(error).__name__})")


def _ssl_reason(error: SSL.Error) -> str:
    """OpenSSL's reasons, e.g. "certificate verify failed"."""
    details = error.args[0] if error.args and isinstance(error.args[0], list) else []
    found = [str(item[2]) for item in details if isinstance(item, tuple) and len(item) == 3]
    return "; ".join(found) or str(error)


@attrs.define
class ErrorCache:
    """The last error of recently failed URLs: at most ``size`` of them, for ``lifetime``
    seconds, in this process's memory (``sharedlimits.DatabaseErrorCache`` keeps them in
    the database, with the same coroutines)."""

    clock: Any
    lifetime: float = ERROR_CACHE_SECONDS
    size: int = ERROR_CACHE_SIZE
    _entries: OrderedDict[str, tuple[float, type[errors.ApiError], int, str]] = attrs.Factory(
        OrderedDict
    )

    async def remember(self, key: str, error: errors.ApiError) -> None:
        """Keep ``error`` as the answer for ``key``."""
        self._entries[key] = (self.clock.seconds() + self.lifetime, type(error), error.status, error.message)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    async def lookup(self, key: str) -> errors.ApiError | None:
        """A fresh copy of the error remembered for ``key``, if it has not expired."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, kind, status, message = entry
        if self.clock.seconds() >= expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        error = kind(message)
        error.status = status
        return error


# ---------------------------------------------------------------- the gatherer

def user_agent(public_url: str, account: str, contact: str) -> str:
    """``IMGSHARE/<version> (+<public-url>; user <name>; contact <contact>)``."""
    text = (
        f"IMGSHARE/{imgshare.__version__} (+{public_url}; user {account}; "
        f"contact {contact or 'not configured'})"
    )
    return "".join(c for c in text if " " <= c <= "~")


class Gatherer:
    """Fetches images from URLs for ``img_gather.php``.

    ``reactor`` makes the connections; ``resolver`` (an IHostnameResolver,
    default ``reactor.nameResolver``) looks names up; ``clock`` (default the
    reactor) runs the total timeout and ages the error cache. ``allow`` is the
    address policy, relaxed only by tests, in code. ``trust_root`` replaces the
    platform's CA certificates (tests use their own CA).  ``error_cache`` is the error
    cache (default: an ``ErrorCache`` in memory; ``compose.build`` gives the shared
    one on PostgreSQL).
    """

    def __init__(
        self, reactor: Any, config: Any, *, resolver: Any = None, clock: Any = None,
        allow: AddressPolicy = public_only, trust_root: Any = None,
        connect_timeout: float = CONNECT_TIMEOUT, total_timeout: float = TOTAL_TIMEOUT,
        error_cache: Any = None,
    ):
        self.config = config
        self.clock = clock if clock is not None else reactor
        self.total_timeout = total_timeout
        self.endpoints = VettingEndpointFactory(
            reactor, resolver if resolver is not None else reactor.nameResolver,
            allow, connect_timeout, trust_root,
        )
        self.agent = Agent.usingEndpointFactory(reactor, self.endpoints, quiet_pool(reactor, persistent=False))
        self.errors = error_cache if error_cache is not None else ErrorCache(self.clock)

    async def fetch(self, url: str, account: str) -> tuple[str, str]:
        """Download ``url`` into the spool folder for ``account``.

        Returns (spooled file path, the URL's last path segment percent-decoded);
        the caller removes the file. Raises BadRequest (400) for a URL that is
        not acceptable, else Forbidden (403), TooLarge (413), UnsupportedType
        (415) or GatherFailed (502), each also remembered for the URL.
        """
        target = parse_target(url.strip())
        cached = await self.errors.lookup(target.url)
        if cached is not None:
            raise cached
        timed_out = False

        def expire() -> None:
            nonlocal timed_out
            timed_out = True
            download.cancel()

        download = Deferred.fromCoroutine(self._download(target, account))
        timer = self.clock.callLater(self.total_timeout, expire)
        try:
            path = await download
        except Exception as e:
            error = e
            if timed_out:
                error = errors.GatherFailed(
                    f"the source did not deliver within {self.total_timeout:g} seconds"
                )
            if isinstance(error, errors.ApiError):
                await self.errors.remember(target.url, error)
            if error is e:
                raise
            raise error from e
        finally:
            if timer.active():
                timer.cancel()
        return path, url_filename(url.strip())

    async def remember_failure(self, url: str, error: errors.ApiError) -> None:
        """Cache an error found in the gathered content (e.g. an unreadable image)."""
        try:
            key = parse_target(url.strip()).url
        except errors.BadRequest:
            return
        await self.errors.remember(key, error)

    async def _download(self, target: Target, account: str) -> str:
        headers = Headers({
            b"User-Agent": [user_agent(self.config.public_url, account, self.config.contact).encode()],
            b"Accept": [ACCEPT],
        })
        for redirects in range(MAX_REDIRECTS + 1):
            response = await self._request(target, headers)
            if response.code in REDIRECT_CODES:
                location = response.headers.getRawHeaders(b"location")
                abandon(response)
                if not location:
                    raise errors.GatherFailed(f"the source answered {response.code} without a Location")
                if redirects == MAX_REDIRECTS:
                    raise errors.GatherFailed(f"too many redirects (more than {MAX_REDIRECTS})")
                target = _redirect_target(target, location[0].decode("latin-1"))
                continue
            if not 200 <= response.code < 300:
                abandon(response)
                phrase = response.phrase.decode("latin-1", "replace")
                raise errors.GatherFailed(f"the source answered HTTP {response.code} {phrase}".rstrip())
            return await self._spool(response)
        raise AssertionError("unreachable")

    async def _request(self, target: Target, headers: Headers) -> Any:
        try:
            return await self.agent.request(b"GET", target.url.encode("ascii"), headers)
        except Exception as e:
            error = describe_failure(e, target)
            if error is e:
                raise
            raise error from e

    async def _spool(self, response: Any) -> str:
        limit = self.config.max_size
        if response.length is not UNKNOWN_LENGTH and response.length > limit:
            abandon(response)
            raise errors.TooLarge(
                f"the source's file is too large: {response.length} bytes, the limit is {limit}"
            )
        os.makedirs(self.config.spool_dir, exist_ok=True)
        fd, path = tempfile.mkstemp(dir=self.config.spool_dir, prefix="gather-")
        try:
            with os.fdopen(fd, "wb") as out:
                spooler = _Spooler(out, limit)
                response.deliverBody(spooler)
                await spooler.done
        except BaseException:
            discard_spooled(path)
            raise
        return path


def _redirect_target(current: Target, location: str) -> Target:
    """The next target of a redirect: ``location`` resolved against the current URL."""
    try:
        return parse_target(urljoin(current.url, location.strip()))
    except errors.BadRequest as e:
        raise errors.GatherFailed(f"the source redirected to an unusable URL: {e.message}") from e


#: Removes a spooled download, if it is still there (the name web/api.py imports).
discard_spooled = remove_if_present

