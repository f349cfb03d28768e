"""Hostile connections: slow heads and bodies, connection floods, tiny chunks, bad lengths, 413s.

The real ``twistd imgshare`` is driven over raw sockets on loopback addresses, with short
deadlines given through ``IMGSHARE_*`` variables so the file stays fast.  Nothing here
measures time: each test asserts what the server did (answered, closed, kept serving),
within bounds far above what the behaviour needs.
"""

from __future__ import annotations

import io
import os
import re
import resource
import select
import socket
import subprocess
import sys
import time

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.protocols.haproxy._wrapper import HAProxyWrappingFactory
from twisted.python.failure import Failure
from twisted.trial import unittest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from imgshare.config import RateLimit
from imgshare.options import build_config, resolve
from imgshare.web.request import LINGER_SECONDS, ImgshareSite
from tests.serverprocess import ServerProcess

MiB = 1024 * 1024
#: A bound far above every deadline the test servers use: a connection still open then was kept.
BOUND = 15.0
LIMITS = b"GET /api/v1/limits HTTP/1.1\r\nHost: x\r\n\r\n"


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(BOUND)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def drip(sock: socket.socket, data: bytes, pieces: int, interval: float, within: float = BOUND) -> tuple[bytes, bool]:
    """Send ``data`` in ``pieces`` bytes every ``interval`` s while reading, until the server
    answers and closes or ``within`` s pass; return (what was read, closed by the server)."""
    sock.setblocking(False)
    response = b""
    deadline = time.monotonic() + within
    next_send = 0.0
    while time.monotonic() < deadline:
        now = time.monotonic()
        if data and now >= next_send:
            try:
                sent = sock.send(data[:pieces])
            except BlockingIOError:
                sent = 0
            except OSError:
                data = b""  # reset: what was read so far is the answer
                sent = 0
            data = data[sent:]
            next_send = now + interval
        readable, _, _ = select.select([sock], [], [], max(0.0, min(interval, deadline - now)) if data else 0.5)
        if readable:
            try:
                chunk = sock.recv(65536)
            except OSError:
                return response, True
            if not chunk:
                return response, True
            response += chunk
    return response, False


def read_response(sock: socket.socket, within: float = BOUND) -> bytes:
    """One whole response (head and Content-Length body) from a kept-alive connection."""
    sock.settimeout(within)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    m = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    want = int(m.group(1)) if m else 0
    while len(body) < want:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def exchange(port: int, request: bytes, source: str = "127.0.0.1") -> tuple[bytes, bool]:
    """Send a whole request at once; return (the answer, closed by the server)."""
    with connect(port, source) as sock:
        sock.sendall(request)
        return drip(sock, b"", 1, 0.1)


def served(port: int, source: str = "127.0.0.1") -> bool:
    """A fresh client from ``source`` gets its ``GET /api/v1/limits`` answered 200."""
    response, _ = exchange(port, LIMITS.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"), source)
    return response.startswith(b"HTTP/1.1 200 ")


def limit_lines(log: str, words: str) -> list[str]:
    return [line for line in log.splitlines() if "Limit reached" in line and words in line]


class ServerTestCase(unittest.TestCase):
    timeout = 120
    env: dict[str, str] = {}
    args: tuple[str, ...] = ()

    async def setUp(self):
        self.data = os.path.abspath(self.mktemp())
        self.server = await ServerProcess(self.data, *self.args, **self.env).start()
        self.addCleanup(self.server.stop)
        self.port = self.server.port

    def assertNoTraceback(self):
        log = self.server.log()
        for word in ("Traceback", "Unhandled Error", "Unhandled error"):
            self.assertNotIn(word, log)


class SlowClientTests(ServerTestCase):
    """Item 4: a deadline for the request head and a minimum body rate."""

    env = {"IMGSHARE_HEAD_TIMEOUT": "1", "IMGSHARE_MIN_BODY_RATE": "4096/1"}

    async def test_slow_head(self):
        """A head sent a byte at a time is answered 408 and closed at the head deadline (the
        idle timeout alone would keep it forever); a connection that sends nothing is closed
        too; others are served meanwhile; one log line names the limit, never the query."""
        head = b"GET /api/v1/limits?token=SECRET-IN-QUERY HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 200 + b"\r\n\r\n"
        with connect(self.port) as slow:
            response, closed = drip(slow, head, 1, 0.2)
        self.assertTrue(response.startswith(b"HTTP/1.1 408 "), response[:200])
        self.assertTrue(closed, "the server closed the slow connection")
        with connect(self.port) as silent:
            response, closed = drip(silent, b"", 1, 0.2)
        self.assertEqual((response, closed), (b"", True))
        self.assertTrue(served(self.port))
        log = self.server.log()
        self.assertEqual(len(limit_lines(log, "request head deadline")), 1, log[-3000:])
        self.assertEqual(len(limit_lines(log, "silent connection")), 1, log[-3000:])
        self.assertNotIn("SECRET-IN-QUERY", log)

    async def test_slow_body(self):
        """A body arriving below the minimum rate is answered 408 and closed; a body sent at
        once is not; the server keeps serving."""
        head = (b"POST /api/v1/img_upload.php?token=SECRET-IN-QUERY HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n")
        with connect(self.port) as slow:
            slow.sendall(head)
            response, closed = drip(slow, b"z" * 100000, 10, 0.2)
        self.assertTrue(response.startswith(b"HTTP/1.1 408 "), response[:200])
        self.assertTrue(closed)
        response, _ = exchange(self.port, head.replace(b"Host: x", b"Host: x\r\nConnection: close") + b"z" * 100000)
        self.assertRegex(response[:12], rb"^HTTP/1\.1 [1-9]\d\d")
        self.assertFalse(response.startswith(b"HTTP/1.1 408 "), response[:200])
        self.assertTrue(served(self.port))
        log = self.server.log()
        self.assertEqual(len(limit_lines(log, "request body")), 1, log[-3000:])
        self.assertNotIn("SECRET-IN-QUERY", log)


class ConnectionCapTests(ServerTestCase):
    """Item 4: a cap on concurrent connections per client address, also behind the PROXY protocol."""

    env = {"IMGSHARE_MAX_CONNECTIONS_PER_ADDRESS": "3", "IMGSHARE_HEAD_TIMEOUT": "60"}
    args = ("--listen", "haproxy:tcp:0:interface=127.0.0.1")

    def keep_alive(self, port: int, preface: bytes = b"", source: str = "127.0.0.1", busy: bool = True) -> socket.socket:
        """A connection that was served and stays open: busy (half its next head sent) or idle."""
        sock = connect(port, source)
        self.addCleanup(sock.close)
        sock.sendall(preface + LIMITS)
        response = read_response(sock)
        self.assertTrue(response.startswith(b"HTTP/1.1 200 "), response[:200])
        if busy:
            sock.sendall(LIMITS[:20])
        return sock

    def refused(self, port: int, preface: bytes = b"", source: str = "127.0.0.1") -> bytes:
        response, closed = exchange(port, preface + LIMITS, source)
        self.assertTrue(closed)
        return response

    async def test_cap_per_address(self):
        """With a cap of 3 busy connections, a fourth from one address gets 429 and is closed
        while another address is served; closing one frees a place; a flood of refusals logs one
        line; idle connections are closed to make room instead."""
        held = [self.keep_alive(self.port) for _ in range(3)]
        self.assertTrue(self.refused(self.port).startswith(b"HTTP/1.1 429 "))
        self.assertTrue(served(self.port, "127.0.0.2"))
        held.pop().close()
        deadline = time.monotonic() + BOUND
        while not served(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertTrue(served(self.port), "a place was freed")
        held.append(self.keep_alive(self.port))
        for _ in range(10):
            self.assertTrue(self.refused(self.port).startswith(b"HTTP/1.1 429 "))
        log = self.server.log()
        self.assertEqual(len(limit_lines(log, "connections per address")), 1, log[-3000:])

        for sock in held:
            sock.close()
        idle = [self.keep_alive(self.port, source="127.0.0.3", busy=False) for _ in range(3)]
        self.assertTrue(served(self.port, "127.0.0.3"), "an idle connection made room")
        closed = [drip(sock, b"", 1, 0.1, within=0.5)[1] for sock in idle]
        self.assertEqual(sorted(closed), [False, False, True], "exactly one idle connection was closed")

    async def test_cap_behind_proxy_protocol(self):
        """On a PROXY-protocol listener the cap counts the real client's address from the
        header: the proxy's own address (already at the cap here) does not matter."""
        log = ""
        deadline = time.monotonic() + BOUND
        while len(re.findall(r"IMGSHARE listening on", log)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
            log = self.server.log()
        proxied = int(re.findall(r"IMGSHARE listening on IPv4Address\(.*port=(\d+)\)", log)[1])
        for _ in range(3):
            self.keep_alive(self.port)  # 127.0.0.1 is at its cap on the direct port
        first = b"PROXY TCP4 192.0.2.1 127.0.0.1 40000 80\r\n"
        second = b"PROXY TCP4 192.0.2.2 127.0.0.1 40001 80\r\n"
        for _ in range(3):
            self.keep_alive(proxied, first)
        self.assertTrue(self.refused(proxied, first).startswith(b"HTTP/1.1 429 "))
        self.keep_alive(proxied, second)
        self.assertIn("192.0.2.1", "\n".join(limit_lines(self.server.log(), "connections per address")))


class HostileBodyTests(ServerTestCase):
    """Items 7, 12 and 14: tiny chunks, absurd Content-Length values, reading after a 413."""

    async def test_tiny_chunks(self):
        """A chunked body of 1-byte chunks is answered 400 and closed; ordinary chunks are not."""
        head = (b"POST /api/v1/img_upload.php HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: multipart/form-data; boundary=b\r\nTransfer-Encoding: chunked\r\n\r\n")
        with connect(self.port) as sock:
            sock.sendall(head)
            response, closed = drip(sock, b"1\r\nA\r\n" * 20000, 6 * 500, 0.01)
        self.assertTrue(response.startswith(b"HTTP/1.1 400 "), response[:200])
        self.assertIn(b"chunk", response)
        self.assertTrue(closed)
        chunk = b"%x\r\n%s\r\n" % (4096, b"c" * 4096)
        ordinary = head.replace(b"img_upload.php", b"limits").replace(b"Host: x", b"Host: x\r\nConnection: close")
        response, _ = exchange(self.port, ordinary + chunk * 20 + b"0\r\n\r\n")
        self.assertFalse(response.startswith(b"HTTP/1.1 400 "), response[:200])
        self.assertTrue(served(self.port))
        self.assertEqual(len(limit_lines(self.server.log(), "chunk")), 1)

    async def test_bad_content_length(self):
        """A 5000-digit Content-Length is 400 (not a traceback and silence); so are non-numeric,
        signed, conflicting or repeated lengths and a length with chunked; nothing is logged
        as an error and the server keeps serving."""
        post = b"POST /api/v1/img_upload.php HTTP/1.1\r\nHost: x\r\n"
        for headers in (b"Content-Length: " + b"9" * 5000, b"Content-Length: " + b"0" * 4999 + b"5",
                        b"Content-Length: 12abc", b"Content-Length: -1", b"Content-Length: +5",
                        b"Content-Length: 5\r\nContent-Length: 6", b"Content-Length: 5, 6",
                        b"Content-Length: 5\r\nTransfer-Encoding: chunked", b"Content-Length:"):
            response, closed = exchange(self.port, post + headers + b"\r\n\r\nhello")
            self.assertTrue(response.startswith(b"HTTP/1.1 400 "), (headers[:40], response[:200]))
            self.assertTrue(closed, headers[:40])
        self.assertTrue(served(self.port))
        self.assertNoTraceback()

    async def test_stops_reading_after_413(self):
        """After a 413 the server stops reading: a client pushing its body as fast as it can
        gets the 413 and then its sending stalls or is reset, instead of the server swallowing
        gigabytes; the server keeps serving."""
        head = (b"POST /api/v1/img_upload.php HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
                b"boundary=b\r\nContent-Length: %d\r\n\r\n" % (100 * 1024 * MiB))
        block = memoryview(b"x" * MiB)
        response, after, reset = b"", 0, False
        with connect(self.port) as sock:
            sock.sendall(head)
            sock.setblocking(False)
            deadline = time.monotonic() + BOUND
            while not reset and time.monotonic() < deadline:
                readable, writable, _ = select.select([sock], [sock], [], 0.5)
                if readable:
                    try:
                        response += sock.recv(65536)  # b"" after the server's half-close
                    except OSError:
                        reset = True
                if writable:
                    try:
                        sent = sock.send(block)
                    except BlockingIOError:
                        sent = 0
                    except OSError:
                        reset = True
                        sent = 0
                    if response:
                        after += sent
        self.assertTrue(response.startswith(b"HTTP/1.1 413 "), response[:200])
        self.assertTrue(reset, "the server dropped the connection after its answer")
        self.assertLess(after, 64 * MiB, "bytes the server took after its 413 (socket buffers hold a few MiB)")
        self.assertTrue(served(self.port))


class OpenFileLimitTests(unittest.TestCase):
    """Item 4: the soft RLIMIT_NOFILE is raised at start-up, with a log line."""

    timeout = 120

    async def test_soft_limit_raised(self):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        # Start the server with a soft limit below the hard one, whatever the hard one is.
        low = 256 if hard == resource.RLIM_INFINITY or hard > 256 else max(hard // 2, 1)
        server = ServerProcess(os.path.abspath(self.mktemp()))
        self.addCleanup(server.stop)
        resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
        try:
            started = Deferred.fromCoroutine(server.start())  # spawns twistd before its first wait
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        await started
        with open(f"/proc/{server.process.pid}/limits") as f:
            line = next(line for line in f if line.startswith("Max open files"))
        self.assertGreater(int(line.split()[3]), low, line)
        self.assertIn(f"Open-file limit raised from {low} to", server.log())


class RaiseLimitFunctionTests(unittest.TestCase):
    def test_raise_in_a_child(self):
        """``raise_open_file_limit`` lifts a low soft limit to the hard one (or the cap)."""
        code = (
            "import resource\n"
            "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
            "resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))\n"
            "from imgshare.service import raise_open_file_limit, OPEN_FILES_CAP\n"
            "raise_open_file_limit()\n"
            "new = resource.getrlimit(resource.RLIMIT_NOFILE)[0]\n"
            "want = OPEN_FILES_CAP if hard == resource.RLIM_INFINITY else min(hard, OPEN_FILES_CAP)\n"
            "assert new == want, (new, want)\n"
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                              env=dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(__file__))))
        self.assertEqual(done.returncode, 0, done.stderr)


# ------------------------------------------------------------ the channel in memory


class _Transport(StringTransport):
    """A StringTransport that can half-close, as TCP can."""

    write_closed = False

    def loseWriteConnection(self):
        self.write_closed = True


class _Ok(Resource):
    isLeaf = True

    def __init__(self):
        super().__init__()
        self.requests = []
        self.bodies = []

    def render(self, request):
        self.requests.append(request)
        self.bodies.append(request.content.read())
        if request.path == b"/slow":
            request.write(b"part of an answer")
            return NOT_DONE_YET
        return b"ok"


class ChannelTests(unittest.TestCase):
    """ImgshareChannel on a StringTransport and a Clock: every limit, with exact times."""

    def setUp(self):
        self.clock = Clock()
        self.resource = _Ok()
        self.site = ImgshareSite(self.resource, max_body=100_000, reactor=self.clock, head_timeout=10,
                                 min_body_rate=RateLimit(100, 5.0), max_connections_per_address=2, send_timeout=60)
        self.site.startFactory()
        self.addCleanup(self.site.stopFactory)
        self.site.logFile = io.StringIO()

    def connect(self, host="192.0.2.1"):
        channel = self.site.buildProtocol(None)
        address = (IPv6Address if ":" in host else IPv4Address)("TCP", host, 40000)
        transport = _Transport(peerAddress=address, lenient=True)
        channel.makeConnection(transport)
        self.addCleanup(lambda: transport.disconnected or channel.connectionLost(Failure(ConnectionDone())))
        return channel, transport

    def busy(self, host="192.0.2.1"):
        """A connection halfway through its request head (not idle, so never closed for room)."""
        channel, transport = self.connect(host)
        channel.dataReceived(b"GET / HTTP/1.1\r\n")
        return channel, transport

    def lose(self, channel, transport):
        transport.disconnected = True
        channel.connectionLost(Failure(ConnectionDone()))

    def assertClosedWith(self, transport, status):
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 %d " % status), transport.value()[:200])
        self.assertIn(b"\r\nConnection: close\r\n", transport.value())
        self.assertTrue(transport.write_closed, "half-closed after the answer")
        self.assertEqual(transport.producerState, "paused", "reading stopped")
        self.assertFalse(transport.disconnected)
        self.clock.advance(LINGER_SECONDS)
        self.assertTrue(transport.disconnected, "dropped after the linger")

    def test_head_deadline(self):
        """A head still incomplete 10 s after the connection is answered 408."""
        channel, transport = self.connect()
        for _ in range(9):
            channel.dataReceived(b"G")
            self.clock.advance(1)
        self.assertEqual(transport.value(), b"")
        self.clock.advance(1)
        self.assertClosedWith(transport, 408)

    def test_silent_connection(self):
        """A connection that sends nothing is closed, without an answer, at the head deadline."""
        _, transport = self.connect()
        self.clock.advance(10)
        self.assertEqual(transport.value(), b"")
        self.assertTrue(transport.disconnecting)

    def test_kept_alive_connection(self):
        """Between requests only the idle timeout counts; the next head has 10 s from its first byte."""
        channel, transport = self.connect()
        channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 "))
        self.clock.advance(30)
        self.assertFalse(transport.disconnecting)
        transport.clear()
        channel.dataReceived(b"GET / HTT")
        self.clock.advance(9)
        self.assertEqual(transport.value(), b"")
        self.clock.advance(1)
        self.assertClosedWith(transport, 408)

    def test_pipelined_head_deadline(self):
        """A next head that came in the read of an answered request has its deadline too."""
        channel, transport = self.connect()
        channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HT")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 "))
        transport.clear()
        self.clock.advance(10)
        self.assertClosedWith(transport, 408)

    def test_minimum_body_rate(self):
        """A body must bring 100 bytes in every 5 s window: 150 per window passes, 50 is 408."""
        channel, transport = self.connect()
        channel.dataReceived(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
        for _ in range(4):
            channel.dataReceived(b"b" * 150)
            self.clock.advance(5)
        self.assertEqual(transport.value(), b"")
        channel.dataReceived(b"b" * 50)
        self.clock.advance(5)
        self.assertClosedWith(transport, 408)
        self.assertEqual(self.resource.requests, [])

    def test_body_within_rate_is_served(self):
        channel, transport = self.connect()
        channel.dataReceived(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 300\r\n\r\n")
        for _ in range(3):
            self.clock.advance(4)
            channel.dataReceived(b"b" * 100)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 "))
        self.assertEqual(self.resource.bodies, [b"b" * 300])

    def test_cap_per_address(self):
        """Two connections per address: the third is 429 with Retry-After; others and freed places are served."""
        held = [self.busy("192.0.2.1") for _ in range(2)]
        _, refused = self.connect("192.0.2.1")
        self.assertTrue(refused.value().startswith(b"HTTP/1.1 429 "))
        self.assertIn(b"\r\nRetry-After: 5\r\n", refused.value())
        self.assertEqual(refused.producerState, "producing", "reads on to see the client close")
        _, other = self.connect("192.0.2.2")
        self.assertEqual(other.value(), b"")
        self.lose(*held.pop())
        channel, transport = self.connect("192.0.2.1")
        channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 "))
        self.assertEqual(self.site.connection_counts(), {"192.0.2.1": 2, "192.0.2.2": 1})

    def test_idle_connections_make_room(self):
        """At the cap, an idle connection (between requests, or silent since it opened) is closed
        for the new one; one that is mid-request is not."""
        served, _ = self.connect("192.0.2.1")
        served.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        _, silent = self.connect("192.0.2.1")
        _, newer = self.connect("192.0.2.1")
        self.assertEqual(newer.value(), b"")
        self.assertEqual(self.site.connection_counts(), {"192.0.2.1": 2})
        self.assertEqual(sum(t.disconnecting for t in (served.transport, silent)), 1)
        busy = self.busy("192.0.2.2"), self.busy("192.0.2.2")
        _, refused = self.connect("192.0.2.2")
        self.assertTrue(refused.value().startswith(b"HTTP/1.1 429 "))
        self.assertFalse(any(t.disconnecting for _, t in busy))

    def test_refused_flood_is_dropped(self):
        """Past 8 refused connections still lingering, more are dropped unanswered."""
        for _ in range(2):
            self.busy("192.0.2.1")
        answered = [self.connect("192.0.2.1")[1] for _ in range(8)]
        self.assertTrue(all(t.value().startswith(b"HTTP/1.1 429 ") for t in answered))
        _, dropped = self.connect("192.0.2.1")
        self.assertEqual(dropped.value(), b"")
        self.assertTrue(dropped.disconnected)

    def test_cap_counts_ipv6_by_64(self):
        for host in ("2001:db8::1", "2001:db8::2"):
            self.assertEqual(self.busy(host)[1].value(), b"")
        self.assertTrue(self.connect("2001:db8::ffff:3")[1].value().startswith(b"HTTP/1.1 429 "))
        self.assertEqual(self.connect("2001:db8:0:1::1")[1].value(), b"")
        self.assertEqual(self.connect("::ffff:192.0.2.9")[1].value(), b"")
        self.assertEqual(self.site.connection_counts(), {"2001:db8::/64": 2, "2001:db8:0:1::/64": 1, "192.0.2.9": 1})

    def test_cap_behind_proxy_protocol(self):
        """Behind the PROXY protocol the real client's address counts, once the header is read."""
        factory = HAProxyWrappingFactory(self.site)
        transports = []
        for source in ("198.51.100.7", "198.51.100.7", "198.51.100.8", "198.51.100.7"):
            protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
            transport = _Transport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000), lenient=True)
            protocol.makeConnection(transport)
            self.assertNotIn("127.0.0.1", self.site.connection_counts())
            protocol.dataReceived(b"PROXY TCP4 %s 127.0.0.1 5555 80\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\nGET / "
                                  % source.encode())
            transports.append(transport)
        self.assertEqual([t.value()[:12] for t in transports], [b"HTTP/1.1 200"] * 3 + [b"HTTP/1.1 429"])
        self.assertEqual(self.site.connection_counts(), {"198.51.100.7": 2, "198.51.100.8": 1})

    def test_tiny_chunks(self):
        """More than 64 chunks averaging under 256 bytes: 400; large chunks are fine."""
        channel, transport = self.connect()
        channel.dataReceived(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1\r\nA\r\n" * 64)
        self.assertEqual(transport.value(), b"")
        channel.dataReceived(b"1\r\nA\r\n" * 1000)
        self.assertClosedWith(transport, 400)
        self.assertIn(b"chunk", transport.value())
        self.assertEqual(self.resource.requests, [])

        channel, transport = self.connect("192.0.2.2")
        channel.dataReceived(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                             + b"1\r\nA\r\n" * 10 + b"400\r\n" + b"B" * 1024 + b"\r\n" + b"0\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 "))

    def test_bad_content_lengths(self):
        """Each is 400 with a JSON answer, and nothing is raised (Python's 4300-digit int limit)."""
        for value in (b"9" * 5000, b"1" * 19, b"0" * 4999 + b"5", b"12abc", b"-1", b"+5", b"", b"5, 5", b"\xd9\xa3"):
            channel, transport = self.connect()
            channel.dataReceived(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: " + value + b"\r\n\r\nhello")
            self.assertClosedWith(transport, 400)
            self.lose(channel, transport)
        for headers in (b"Content-Length: 5\r\nContent-Length: 6", b"Content-Length: 5\r\nContent-Length: 5",
                        b"Content-Length: 5\r\nTransfer-Encoding: chunked", b"Transfer-Encoding: gzip"):
            channel, transport = self.connect()
            channel.dataReceived(b"POST / HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n\r\nhello")
            self.assertClosedWith(transport, 400)
            self.lose(channel, transport)
        self.assertEqual(self.resource.requests, [])

    def test_413_stops_reading(self):
        """A 413 pauses the transport; resuming it (its buffer drained) does not start reading again."""
        channel, transport = self.connect()
        channel.dataReceived(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100001\r\n\r\n" + b"x" * 1000)
        self.assertEqual(transport.producerState, "paused")
        channel.resumeProducing()
        self.assertEqual(transport.producerState, "paused")
        channel.dataReceived(b"x" * 1000)  # what was already in flight is ignored
        self.assertClosedWith(transport, 413)
        self.assertEqual(self.resource.requests, [])

    def test_413_when_a_chunked_body_passes_the_limit(self):
        channel, transport = self.connect()
        channel.dataReceived(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        channel.dataReceived((b"%x\r\n%s\r\n" % (50_000, b"x" * 50_000)) * 3)
        self.assertClosedWith(transport, 413)

    def test_send_timeout(self):
        """A client that leaves its answer unread for 60 s (the transport paused us) is dropped."""
        channel, transport = self.connect()
        channel.dataReceived(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        for _ in range(3):
            channel.pauseProducing()
            self.clock.advance(59)
            channel.resumeProducing()
        channel.pauseProducing()
        self.clock.advance(59)
        self.assertFalse(transport.disconnected)
        self.clock.advance(1)
        self.assertTrue(transport.disconnected)

    def test_idle_timeout(self):
        """The idle timeout still closes a kept-alive connection, quietly."""
        channel, transport = self.connect()
        channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        transport.clear()
        self.clock.advance(self.site.timeOut)
        self.assertEqual(transport.value(), b"")
        self.assertTrue(transport.disconnecting)

    def test_limits_off(self):
        """0 or None turns each limit off."""
        site = ImgshareSite(self.resource, max_body=100, reactor=self.clock, head_timeout=0,
                            min_body_rate=None, max_connections_per_address=0, send_timeout=0)
        channels = []
        for _ in range(100):
            channel = site.buildProtocol(None)
            transport = _Transport(peerAddress=IPv4Address("TCP", "192.0.2.1", 1), lenient=True)
            channel.makeConnection(transport)
            channels.append((channel, transport))
        channel.dataReceived(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
        channel.pauseProducing()
        self.clock.advance(59)  # the idle timeout (60 s) still counts
        self.assertEqual([t.value() for _, t in channels], [b""] * 100)
        self.assertFalse(any(t.disconnecting for _, t in channels))
        for channel, transport in channels:
            self.lose(channel, transport)

    def test_log_lines(self):
        """A limit logs one line a minute per kind, counting the ones held back; never the query."""
        with capturedLogs() as events:
            for _ in range(5):
                channel, transport = self.connect()
                channel.dataReceived(b"GET /?token=SECRET HTTP/1.1\r\n")
                self.clock.advance(10)
                self.lose(channel, transport)
            self.clock.advance(60)
            channel, transport = self.connect()
            channel.dataReceived(b"G")
            self.clock.advance(10)
        lines = [formatEvent(e) for e in events if "Limit reached" in formatEvent(e)]
        self.assertEqual(len(lines), 2, lines)
        self.assertIn("request head deadline", lines[0])
        self.assertIn("192.0.2.1", lines[0])
        self.assertIn("4 more since the last such line", lines[1])
        self.assertNotIn("SECRET", "\n".join(lines))
        with capturedLogs() as events:
            channel, transport = self.connect()
            self.clock.advance(10)  # a silent connection: its own kind of line, at info level
            channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            self.lose(channel, transport)
            channel, transport = self.connect()
            channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            self.clock.advance(self.site.timeOut)  # idle between requests: no line
        lines = [(e["log_level"].name, formatEvent(e)) for e in events if "Limit reached" in formatEvent(e)]
        self.assertEqual(len(lines), 1, lines)
        self.assertEqual(lines[0][0], "info")
        self.assertIn("silent connection", lines[0][1])

    def test_access_log_has_no_query_values(self):
        channel, transport = self.connect()
        channel.dataReceived(b"GET /api/v1/img_gather.php?token=SECRET&url=x HTTP/1.1\r\nHost: x\r\n"
                             b"Referer: https://img.example/setup?code=CODE\r\n\r\n")
        logged = self.site.logFile.getvalue()
        self.assertIn('"GET /api/v1/img_gather.php?token=*&url=* HTTP/1.1" 200', logged)
        self.assertIn('"https://img.example/setup?code=*"', logged)
        self.assertNotIn("SECRET", logged)
        self.assertNotIn("CODE", logged)


class HeadWritingTests(unittest.TestCase):
    """ImgshareChannel writes a response head in one piece, byte for byte the head
    twisted.web's HTTPChannel writes (several values of a header included)."""

    def heads(self, headers):
        from twisted.web.http import HTTPChannel

        written = []
        for channel in (ImgshareSite(_Ok(), max_body=1000).buildProtocol(None), HTTPChannel()):
            transport = StringTransport()
            channel.transport = transport
            channel.writeHeaders(b"HTTP/1.1", b"200", b"OK", headers)
            written.append(transport.value())
        return written

    def test_same_head_in_one_write(self):
        from twisted.web.http_headers import Headers

        headers = Headers({b"Content-Type": [b"image/jpeg"], b"Set-Cookie": [b"a=1", b"b=2"],
                           b"ETag": [b'"abc"']})
        ours, twisted = self.heads(headers)
        self.assertEqual(ours, twisted)
        self.assertTrue(ours.startswith(b"HTTP/1.1 200 OK\r\n") and ours.endswith(b"\r\n\r\n"))
        self.assertIn(b"Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n", ours)
        transport = StringTransport()
        channel = ImgshareSite(_Ok(), max_body=1000).buildProtocol(None)
        channel.transport = transport
        writes = []
        transport.write = writes.append
        channel.writeHeaders(b"HTTP/1.1", b"200", b"OK", headers)
        self.assertEqual(len(writes), 1)

    def test_pairs_as_twisted_takes_them(self):
        ours, twisted = self.heads([(b"X-One", b"1"), (b"X-Two", b"2")])
        self.assertEqual(ours, twisted)


class LimitOptionsTests(unittest.TestCase):
    def test_options(self):
        """--head-timeout, --min-body-rate and --max-connections-per-address, from the command
        line or IMGSHARE_*; 0 turns each off; the defaults are 10 s, 16384/30 and 64."""
        config = build_config({})
        self.assertEqual((config.head_timeout, config.min_body_rate, config.max_connections_per_address),
                         (10.0, RateLimit(16384, 30.0), 64))
        values = resolve({"head-timeout": "2.5"}, {"IMGSHARE_MIN_BODY_RATE": "1000/1m",
                                                   "IMGSHARE_MAX_CONNECTIONS_PER_ADDRESS": "500"})
        config = build_config(values)
        self.assertEqual((config.head_timeout, config.min_body_rate, config.max_connections_per_address),
                         (2.5, RateLimit(1000, 60.0), 500))
        config = build_config({"head_timeout": "0", "min_body_rate": "0", "max_connections_per_address": "0"})
        self.assertEqual((config.head_timeout, config.min_body_rate, config.max_connections_per_address),
                         (0.0, None, 0))
        for key, bad in (("head_timeout", "soon"), ("head_timeout", "nan"), ("head_timeout", "-1"),
                         ("min_body_rate", "fast"), ("max_connections_per_address", "many"),
                         ("max_connections_per_address", "-1")):
            self.assertRaises(ValueError, build_config, {key: bad})
