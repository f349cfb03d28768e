"""The HTTP channel, request and site: limits while a request arrives, no parsing here.

twisted.web's own ``Request`` parses multipart bodies in memory on the reactor
(seconds of blocked reactor for a large upload).  This request keeps the body
spooled (memory for small bodies, a temporary file for large ones), leaves
parsing to ``imgshare.web.forms`` in a worker thread, and refuses a body over
the site's ``max_body`` as soon as its length is known or exceeded.

The channel bounds what one connection may hold or cost:

- the request head must be complete within ``head_timeout`` seconds of the
  connection (or, on a kept-alive connection, of its first byte), 408 if not;
- a body must arrive at ``min_body_rate`` (at least *count* bytes in every
  *period* seconds), 408 if not;
- a chunked body whose chunks are absurdly small on average is 400;
- a ``Content-Length`` that is not a plain number of at most 18 digits is 400
  (twisted.web would otherwise raise on Python's 4300-digit limit);
- at most ``max_connections_per_address`` connections per client address (an
  IPv6 client counts by its /64) are open at once: past it an idle one of them
  (between requests, or silent since it opened) is closed to make room, and if
  none is idle the new one is answered 429; on a PROXY-protocol listener the
  address is the real client's, from the header;
- a client that stops reading its answer for ``send_timeout`` seconds is dropped.

A refused request is answered at once (``Connection: close``), the write side
half-closed so the client gets the answer, reading stopped (the transport is
paused: nothing more is read or discarded), and the connection dropped
``LINGER_SECONDS`` later.  Every limit that bites is logged, one line per kind
of limit a minute at most, naming the client address (never the request line,
whose query may hold a token).
"""

from __future__ import annotations

import json
import time
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.logger import Logger
from twisted.web import http, server
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAccessLogFormatter
from zope.interface import provider

from imgshare.config import HEAD_TIMEOUT, MAX_CONNECTIONS_PER_ADDRESS, MIN_BODY_RATE, RateLimit
from imgshare.ratelimit import ip_group
from imgshare.web.redact import redact_uri, redact_url

try:  # PROXY-protocol connections learn their real client address from the first bytes
    from twisted.protocols.haproxy._wrapper import HAProxyProtocolWrapper, HAProxyWrappingFactory
except ImportError:  # pragma: no cover - every supported Twisted has it
    HAProxyProtocolWrapper = HAProxyWrappingFactory = None

log = Logger()

#: How long a refused client may keep its connection (reading its answer) before it is dropped.
LINGER_SECONDS = 2.0
#: How long a client may leave its answer unread (the transport paused us) before it is dropped.
SEND_TIMEOUT = 60.0
#: A chunked body is refused once it has more than this many pieces...
TINY_CHUNK_GRACE = 64
#: ...averaging fewer bytes than this: each piece costs the reactor about what 256 bytes do.
MIN_AVERAGE_CHUNK = 256
#: The longest Content-Length accepted, in digits (10**18 bytes is far beyond any limit).
MAX_LENGTH_DIGITS = 18
#: A refused connection over the per-address cap reads (and drops) at most this much while it lingers.
REFUSED_DRAIN_BYTES = 16 * 1024
#: At most this many refused connections per address linger with their 429 answer; more are dropped unanswered.
REFUSED_LINGERING = 8
#: One log line per kind of limit in this many seconds; the next line counts those left out.
LIMIT_LOG_INTERVAL = 60.0

_REASONS = {
    400: b"Bad Request", 408: b"Request Timeout", 413: b"Content Too Large", 429: b"Too Many Requests",
}


def error_answer(status: int, message: str, headers: tuple[bytes, ...] = ()) -> bytes:
    """A whole JSON error response that ends the connection."""
    body = json.dumps({"status": "error", "error": message}).encode() + b"\n"
    head = [b"HTTP/1.1 %d %s" % (status, _REASONS[status]), b"Content-Type: application/json",
            b"Content-Length: %d" % len(body), b"Connection: close", *headers]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def address_key(address: Any) -> str | None:
    """What the per-address cap counts: an IPv4 address, an IPv6 /64; None for other transports."""
    if not isinstance(address, IPv4Address | IPv6Address):
        return None
    return ip_group(address.host)


def _client(address: Any) -> str:
    key = address_key(address)
    return key if key is not None else type(address).__name__


if HAProxyWrappingFactory is not None:
    class _QuietHAProxyWrappingFactory(HAProxyWrappingFactory):
        noisy = False


def quiet_endpoint(endpoint: Any) -> Any:
    """``endpoint`` (from ``serverFromString``), its PROXY-protocol wrapper made quiet: Twisted's
    logs "Starting factory <...HAProxyWrappingFactory object at 0x...>" at every listen."""
    if HAProxyWrappingFactory is not None and getattr(endpoint, "_wrapperFactory", None) is HAProxyWrappingFactory:
        endpoint._wrapperFactory = _QuietHAProxyWrappingFactory
    return endpoint


class LimitLog:
    """Log lines about limits, at most one per kind per ``interval`` seconds."""

    def __init__(self, clock: Any, interval: float = LIMIT_LOG_INTERVAL):
        self.clock = clock
        self.interval = interval
        self._last: dict[str, float] = {}
        self._left_out: dict[str, int] = {}

    def __call__(self, kind: str, text: str, level: str = "warn") -> None:
        """Log ``Limit reached: <kind> (<text>)`` unless a line of this kind was logged lately."""
        now = self.clock.seconds()
        last = self._last.get(kind)
        if last is not None and now - last < self.interval:
            self._left_out[kind] = self._left_out.get(kind, 0) + 1
            return
        self._last[kind] = now
        left_out = self._left_out.pop(kind, 0)
        more = f"; {left_out} more since the last such line" if left_out else ""
        emit = log.info if level == "info" else log.warn
        emit("Limit reached: {kind} ({text}{more}); further such lines are held back for {interval:.0f} s",
             kind=kind, text=text, more=more, interval=self.interval)


def answer_and_close(channel: Any, status: int | None, message: str = "", headers: tuple[bytes, ...] = ()) -> None:
    """Answer ``status`` (unless None), stop reading, half-close; drop the connection shortly after.

    Works on any ``HTTPChannel``; ``ImgshareChannel.answer_and_close`` also stops its timers.
    """
    transport = channel.transport
    channel.paused = True  # the line parser stops at once, even inside this read's loop
    channel.setTimeout(None)
    try:
        transport.pauseProducing()
    except RuntimeError:  # a test transport already closed
        pass
    if status is None:
        transport.loseConnection()
    else:
        transport.write(error_answer(status, message, headers))
        try:
            transport.loseWriteConnection()
        except (AttributeError, NotImplementedError):
            transport.loseConnection()
            return
    channel._linger_call = channel.callLater(LINGER_SECONDS, transport.abortConnection)


class ImgshareChannel(http.HTTPChannel):
    """An ``HTTPChannel`` with a head deadline, a minimum body rate, a per-address cap and
    clear 400 answers; its site is an ``ImgshareSite``."""

    _phase = "head"  # head: reading a request head; body: its body; handling: answering; idle
    _closing = False
    _draining: int | None = None  # bytes a refused connection may still read and drop (over the cap)
    _counted = False
    _address: str | None = None
    _refused_address: str | None = None
    _head_call: Any = None
    _body_call: Any = None
    _send_call: Any = None
    _linger_call: Any = None
    _head_started = False
    _window_bytes = 0
    _write_paused = False
    _host: Any = None

    # -- connection

    def writeHeaders(self, version: bytes, code: bytes, reason: bytes, headers: Any) -> None:
        """The response head as ``HTTPChannel.writeHeaders`` writes it, in one piece:
        Twisted hands the transport four pieces per header, each checked and buffered
        on its own (6 % of the instructions of an /img/ request of 60 KB)."""
        if not isinstance(headers, Headers):
            super().writeHeaders(version, code, reason, headers)
            return
        parts = [version, b" ", code, b" ", reason, b"\r\n"]
        for name, values in headers.getAllRawHeaders():
            for value in values:
                parts += (name, b": ", value, b"\r\n")
        parts.append(b"\r\n")
        self.transport.write(b"".join(parts))

    def getHost(self) -> Any:
        """The connection's local address (behind the PROXY protocol, the one its header
        named), asked of the transport once: twisted.web asks for every request, a
        ``getsockname`` each time."""
        if self._host is None:
            self._host = super().getHost()
        return self._host

    def connectionMade(self) -> None:
        super().connectionMade()
        self._start_head()
        if HAProxyProtocolWrapper is None or not isinstance(self.transport, HAProxyProtocolWrapper):
            self._count_address()
        else:
            self._watch_proxy_header(self.transport)

    def _watch_proxy_header(self, wrapper: Any) -> None:
        """Log (rate-limited, with the peer's address) a connection to a PROXY-protocol
        listener whose first bytes are not a PROXY header: Twisted drops it silently,
        and a proxy that does not send the header would otherwise fail with no trace."""
        original = wrapper.dataReceived
        site = self.site

        def data_received(data: bytes) -> None:
            original(data)
            if wrapper._proxyInfo is not None:
                del wrapper.dataReceived  # the header is in: the wrapper's own method from now on
            elif wrapper._parser is None or getattr(wrapper.transport, "disconnecting", False):
                del wrapper.dataReceived
                peer = wrapper.transport.getPeer()
                site.limit_log(
                    "PROXY protocol header missing",
                    f"a connection from {getattr(peer, 'host', peer)} to a haproxy: listener began without a "
                    f"PROXY header and was closed; make the proxy send one (nginx: proxy_protocol on; "
                    f"HAProxy: send-proxy) or listen without haproxy:")

        wrapper.dataReceived = data_received

    def connectionLost(self, reason: Any) -> None:
        self._stop_timers()
        if self._linger_call is not None and self._linger_call.active():
            self._linger_call.cancel()
        if self._address is not None:
            self.site.connection_closed(self._address, self)
            self._address = None
        if self._refused_address is not None:
            self.site.refusal_ended(self._refused_address)
            self._refused_address = None
        super().connectionLost(reason)

    def _count_address(self) -> bool:
        """Count this connection against its address; refuse it (429) over the cap."""
        self._counted = True
        key = address_key(self.transport.getPeer())
        if key is None:
            return True
        if self.site.connection_opened(key, self):
            self._address = key
            return True
        cap = self.site.max_connections_per_address
        self.site.limit_log("concurrent connections per address",
                            f"{cap} from {key} already open and busy: refused one more")
        if not self.site.refusal_started(key):
            self._closing = True
            self._stop_timers()
            self.transport.abortConnection()  # a flood: no answer, no lingering
            return False
        self._refused_address = key
        self.answer_and_close(429, f"too many connections from your address: at most {cap} at once",
                              (b"Retry-After: 5",))
        # Read on (dropping it) to see the client close after reading our answer: its place
        # is freed at once instead of after the linger.
        self._draining = REFUSED_DRAIN_BYTES
        self.transport.resumeProducing()
        return False

    # -- receiving

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            if self._draining is not None:
                self._draining -= len(data)
                if self._draining < 0:
                    self.transport.abortConnection()
            return
        if not self._counted and not self._count_address():
            return
        if self._phase == "idle":
            self._phase = "head"
            self._start_head()
        if self._phase == "head":
            self._head_started = True
        super().dataReceived(data)

    def rawDataReceived(self, data: bytes) -> None:
        if self._phase == "body":
            self._window_bytes += len(data)
        super().rawDataReceived(data)

    def headerReceived(self, line: bytes) -> bool:
        name, colon, value = line.partition(b":")
        if colon and name.lower() == b"content-length":
            value = value.strip(b" \t")
            if not value.isdigit() or len(value) > MAX_LENGTH_DIGITS:
                self.site.limit_log("bad request", "a Content-Length that is not a number of bytes")
                self.answer_and_close(400, "Content-Length must be a number of bytes")
                return False
        return super().headerReceived(line)

    def allHeadersReceived(self) -> None:
        self._cancel("_head_call")
        super().allHeadersReceived()
        if self._closing:
            return
        if self.length != 0:
            self._phase = "body"
            self._window_bytes = 0
            self._start_body_window()

    def allContentReceived(self) -> None:
        self._cancel("_body_call")
        self._cancel("_head_call")
        self._phase = "handling"
        super().allContentReceived()

    def requestDone(self, request: Any) -> None:
        if not self._closing:
            self._phase = "idle"  # the next head's deadline starts with its first byte
        super().requestDone(request)
        if self._phase == "idle" and self._buffer and not self._closing:
            self._phase = "head"  # it came in the same read as the request just answered
            self._start_head()
            self._head_started = True

    # -- deadlines

    def _start_head(self) -> None:
        timeout = self.site.head_timeout
        self._head_started = False
        if timeout and not self._closing and self._head_call is None:
            self._head_call = self.callLater(timeout, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self._head_call = None
        if self._phase != "head" or self._closing:
            return
        timeout = self.site.head_timeout
        client = _client(self.transport.getPeer())
        if self._head_started:
            self.site.limit_log("request head deadline", f"no whole request head within {timeout:g} s from {client}")
            self.answer_and_close(408, f"the request head took longer than {timeout:g} s")
        else:  # browsers open spare connections they may never use: worth a line, not a warning
            self.site.limit_log("silent connection", f"nothing received within {timeout:g} s from {client}", "info")
            self.answer_and_close(None)

    def _start_body_window(self) -> None:
        rate = self.site.min_body_rate
        if rate is not None and not self._closing:
            self._body_call = self.callLater(rate.period, self._body_window_ended)

    def _body_window_ended(self) -> None:
        self._body_call = None
        if self._phase != "body" or self._closing:
            return
        rate = self.site.min_body_rate
        if self._window_bytes < rate.count and not self._write_paused:
            self.site.limit_log(
                "minimum request body rate",
                f"{self._window_bytes} bytes in {rate.period:g} s, below {rate.count}, "
                f"from {_client(self.transport.getPeer())}")
            self.answer_and_close(408, f"the request body arrived slower than {rate.count} bytes "
                                       f"in {rate.period:g} s")
            return
        self._window_bytes = 0
        self._start_body_window()

    def timeoutConnection(self) -> None:
        """The idle timeout: quiet between requests (twisted.web logged every one), a rate-limited
        line in the middle of one."""
        if self._phase != "idle":
            self.site.limit_log("idle timeout", f"nothing received for {self.timeOut} s in the middle of a "
                                                f"request from {_client(self.transport.getPeer())}")
        self.answer_and_close(None)

    # -- sending

    def pauseProducing(self) -> None:
        self._write_paused = True
        if self._send_call is None and self.site.send_timeout and not self._closing:
            self._send_call = self.callLater(self.site.send_timeout, self._send_stalled)
        super().pauseProducing()

    def resumeProducing(self) -> None:
        self._write_paused = False
        self._cancel("_send_call")
        super().resumeProducing()
        if self._closing and self._draining is None:
            self.transport.pauseProducing()  # reading stays stopped

    def _send_stalled(self) -> None:
        self._send_call = None
        self.site.limit_log("send timeout", f"answer unread for {self.site.send_timeout:g} s by "
                                            f"{_client(self.transport.getPeer())}")
        self.transport.abortConnection()

    # -- refusing

    def answer_and_close(self, status: int | None, message: str = "", headers: tuple[bytes, ...] = ()) -> None:
        """Answer (unless ``status`` is None), stop reading, half-close, drop shortly after."""
        if self._closing:
            return
        self._closing = True
        self._stop_timers()
        answer_and_close(self, status, message, headers)

    def _respondToBadRequestAndDisconnect(self) -> None:
        # twisted.web's bare "400 Bad Request" (malformed head, chunk framing, duplicate lengths...).
        self.answer_and_close(400, "malformed request")

    def lineLengthExceeded(self, line: bytes) -> None:
        self.answer_and_close(400, "request head line too long")

    @property
    def reclaimable(self) -> bool:
        """Idle between requests, or not a byte received yet: closing it loses nothing."""
        return not self._closing and (self._phase == "idle" or (self._phase == "head" and not self._head_started))

    def reclaim(self) -> None:
        """Close this idle connection to make room for another from its address."""
        self._address = None  # no longer counted
        self.answer_and_close(None)

    def _stop_timers(self) -> None:
        for name in ("_head_call", "_body_call", "_send_call"):
            self._cancel(name)

    def _cancel(self, name: str) -> None:
        call = getattr(self, name)
        if call is not None:
            if call.active():
                call.cancel()
            setattr(self, name, None)


class ImgshareRequest(server.Request):
    """A ``Request`` with a body limit and no form parsing on the reactor."""

    _refused = False
    _received = 0
    _pieces = 0
    _chunked = False
    #: This request's body limit, once asked (its headers are all in by then).
    _limit: int | None = None
    #: The account the request acted as, once a route authenticated it (the access log's user).
    imgshare_account: str | None = None

    def __init__(self, channel: Any, *args: Any, **kwargs: Any):
        kwargs["parsePOSTFormSubmission"] = False
        super().__init__(channel, *args, **kwargs)
        #: When the request began (its head was read), for the access log's duration.
        self.started = time.monotonic()

    def _max_body(self) -> int:
        """The body limit of this request's path (asked before the path is parsed: the
        channel holds the request line's target)."""
        if self._limit is not None:
            return self._limit
        site = self.channel.site
        limit_for = getattr(site, "max_body_for", None)
        if limit_for is not None:
            target = getattr(self.channel, "_path", None) or getattr(self, "uri", None) or b""
            self._limit = limit_for(target, self)
        else:
            self._limit = getattr(site, "max_body", 32 * 1024 * 1024)
        return self._limit

    def gotLength(self, length: int | None) -> None:
        self._chunked = length is None
        if length is not None and length > self._max_body():
            super().gotLength(0)
            self._refuse()
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
            return
        self._received += len(data)
        if self._received > self._max_body():
            self._refuse()
            return
        if self._chunked:
            self._pieces += 1
            if self._pieces > TINY_CHUNK_GRACE and self._received < self._pieces * MIN_AVERAGE_CHUNK:
                self._refuse_tiny_chunks()
                return
        super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self._refused:
            return
        super().requestReceived(command, path, version)

    def _close(self, status: int, message: str) -> None:
        self._refused = True
        self.requestHeaders.removeHeader(b"Expect")  # no "100 Continue" after this
        close = getattr(self.channel, "answer_and_close", None)
        if close is not None:
            close(status, message)
        else:  # a plain HTTPChannel (treq's StubTreq in tests)
            answer_and_close(self.channel, status, message)

    def _refuse(self) -> None:
        """Answer 413 before the body is read, then close the connection."""
        self._close(413, f"request body too large: the limit is {self._max_body()} bytes")

    def _refuse_tiny_chunks(self) -> None:
        site = self.channel.site
        if hasattr(site, "limit_log"):
            site.limit_log("chunk size", f"{self._pieces} chunks averaging under {MIN_AVERAGE_CHUNK} bytes "
                                         f"from {_client(self.getClientAddress())}")
        self._close(400, f"chunked body of tiny chunks: they must average at least {MIN_AVERAGE_CHUNK} bytes")


def _escape(value: bytes | str) -> str:
    """A value for a quoted field of the access log: non-printable bytes and quotes escaped."""
    if isinstance(value, str):
        value = value.encode("utf-8", "replace")
    return repr(value)[2:-1].replace('"', '\\"')


@provider(IAccessLogFormatter)
def access_log_formatter(timestamp: str, request: Any) -> str:
    """The combined log format with the account as its user field (``-`` when no route
    authenticated one) and the duration appended (``12.3ms``); the secret path segment
    of a delete link or a presigned upload and every query value are redacted, in the
    request line and in the Referer (``imgshare.web.redact``)."""
    address = request.getClientAddress()
    ip = address.host if isinstance(address, IPv4Address | IPv6Address) else "-"
    referrer = request.getHeader(b"referer")
    agent = request.getHeader(b"user-agent")
    account = getattr(request, "imgshare_account", None) or "-"
    started = getattr(request, "started", None)
    duration = "-" if started is None else f"{(time.monotonic() - started) * 1000:.1f}ms"
    quoted_referrer = _escape(redact_url(referrer)) if referrer else "-"
    quoted_agent = _escape(agent) if agent else "-"
    return (f'"{_escape(ip)}" - {_escape(account)} {timestamp} '
            f'"{_escape(request.method)} {_escape(redact_uri(request.uri))} {_escape(request.clientproto)}" '
            f'{request.code:d} {request.sentLength or "-"} "{quoted_referrer}" "{quoted_agent}" {duration}')


class ImgshareSite(server.Site):
    """A ``Site`` of ``ImgshareChannel`` connections and ``ImgshareRequest`` requests.

    ``max_body`` is the largest request body, except under the path prefixes of
    ``body_limits`` (``{b"/api/1/": limit}``: routes whose bodies may carry base64 or
    several files; a limit may be a function, see ``max_body_for``);
    ``head_timeout`` (seconds),
    ``min_body_rate`` (a ``RateLimit``: at least ``count`` bytes in every ``period``
    seconds), ``max_connections_per_address`` and ``send_timeout`` (seconds) are
    the connection limits, each off when 0 or None.
    """

    requestFactory = ImgshareRequest
    protocol = ImgshareChannel
    #: No "Starting factory <ImgshareSite object at 0x...>" at every listen and stop.
    noisy = False

    def __init__(
        self,
        resource: Any,
        max_body: int,
        *,
        head_timeout: float | None = HEAD_TIMEOUT,
        min_body_rate: RateLimit | None = MIN_BODY_RATE,
        max_connections_per_address: int | None = MAX_CONNECTIONS_PER_ADDRESS,
        send_timeout: float | None = SEND_TIMEOUT,
        body_limits: dict[bytes, Any] | None = None,
        metrics: Any = None,
        access_log: Any = None,
        **kwargs: Any,
    ):
        kwargs.setdefault("logFormatter", access_log_formatter)
        if access_log is not None:
            kwargs["logPath"] = access_log.path
        super().__init__(resource, **kwargs)
        self.max_body = max_body
        #: Longest prefix first, so the most specific limit wins.
        self.body_limits = sorted((body_limits or {}).items(), key=lambda item: -len(item[0]))
        self.head_timeout = head_timeout or None
        self.min_body_rate = min_body_rate
        self.max_connections_per_address = max_connections_per_address or None
        self.send_timeout = send_timeout or None
        self.limit_log = LimitLog(self.reactor)
        #: ``imgshare.metrics.Metrics`` counting every answered request, or None.
        self.metrics = metrics
        #: ``imgshare.web.accesslog.AccessLog`` for the access lines, or None: the twistd log.
        self.access_log = access_log
        self.connections: dict[str, set[Any]] = {}  # open channels by address_key
        self.refused: dict[str, int] = {}  # refused connections still lingering, by address_key

    def _openLogFile(self, path: str | bytes) -> Any:  # noqa: N802
        """The access log (twisted.web's hook for a log file of another kind): opened at
        ``startFactory``, closed by ``stopFactory``, which writes what it holds."""
        return self.access_log

    def log(self, request: Any) -> None:
        """Count the answered request (route family, status, bytes), then write its access line."""
        if self.metrics is not None:
            self.metrics.request_done(getattr(request, "path", b""), request.code, request.sentLength)
        super().log(request)

    def max_body_for(self, target: bytes, request: Any = None) -> int:
        """The body limit of a request for ``target`` (its path, with or without a query).

        A limit in ``body_limits`` is a number, or a function of the path and the
        request (its headers are in when it is asked) that returns one."""
        path = target.split(b"?", 1)[0]
        for prefix, limit in self.body_limits:
            if path.startswith(prefix):
                return limit(path, request) if callable(limit) else limit
        return self.max_body

    def connection_opened(self, key: str, channel: Any) -> bool:
        """Count ``channel`` against ``key``; False (not counted) when its connections are at
        the cap and none of them is idle (an idle one is closed to make room)."""
        held = self.connections.setdefault(key, set())
        cap = self.max_connections_per_address
        if cap is not None and len(held) >= cap:
            idle = next((c for c in held if c.reclaimable), None)
            if idle is None:
                return False
            held.discard(idle)
            idle.reclaim()
        held.add(channel)
        return True

    def connection_closed(self, key: str, channel: Any) -> None:
        held = self.connections.get(key)
        if held is not None:
            held.discard(channel)
            if not held:
                del self.connections[key]

    def refusal_started(self, key: str) -> bool:
        """Count one more refused connection lingering with its answer; False past REFUSED_LINGERING."""
        count = self.refused.get(key, 0)
        if count >= REFUSED_LINGERING:
            return False
        self.refused[key] = count + 1
        return True

    def refusal_ended(self, key: str) -> None:
        count = self.refused.get(key, 0) - 1
        if count > 0:
            self.refused[key] = count
        else:
            self.refused.pop(key, None)

    def connection_counts(self) -> dict[str, int]:
        """Open connections by address (IPv6 by /64)."""
        return {key: len(held) for key, held in self.connections.items()}
