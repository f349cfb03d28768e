"""img_gather.php: the address guard, the vetting connection layer, downloads and the route.

Network use is loopback only. Names are looked up by injected fake resolvers,
never by real DNS; loopback test servers are reachable only because a test
injects a policy that allows that one port.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import reactor as global_reactor
from twisted.internet import ssl
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.error import ConnectionRefusedError as ConnectionRefused
from twisted.internet.error import TimeoutError as ConnectTimeoutError
from twisted.internet.interfaces import IHostnameResolver
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.protocols.policies import WrappingFactory
from twisted.python.failure import Failure
from twisted.trial import unittest
from twisted.web import resource, server
from zope.interface import implementer

import imgshare
from imgshare.domain import errors
from imgshare.domain.addresses import address_allowed, parse_host_literal
from imgshare.gather import ErrorCache, Gatherer, parse_target, url_filename, user_agent
from imgshare.testing import MemoryNetwork, image_bytes, make_fixture, test_config

LOOPBACK = ipaddress.IPv4Address("127.0.0.1")
API = "http://img.example/api/v1/"
SMALL_LIMIT = 64 * 1024

# (address, allowed?) -- the guard as a pure function.
ADDRESSES = [
    # IPv4 that must be refused
    ("127.0.0.1", False), ("127.255.255.254", False), ("10.0.0.1", False),
    ("10.255.255.255", False), ("172.16.0.1", False), ("172.31.255.255", False),
    ("192.168.0.1", False), ("192.168.1.1", False), ("169.254.169.254", False),
    ("169.254.0.1", False), ("100.64.0.1", False), ("100.127.255.254", False),
    ("0.0.0.0", False), ("0.1.2.3", False), ("224.0.0.1", False), ("239.255.255.250", False),
    ("240.0.0.1", False), ("255.255.255.255", False), ("192.0.0.8", False), ("192.0.2.1", False),
    ("198.18.0.1", False), ("198.51.100.7", False), ("203.0.113.9", False),
    ("192.88.99.1", False),
    # IPv4 that must pass (including the neighbours of refused blocks)
    ("8.8.8.8", True), ("1.1.1.1", True), ("93.184.216.34", True), ("9.9.9.9", True),
    ("172.15.255.255", True), ("172.32.0.1", True), ("100.63.255.255", True),
    ("100.128.0.1", True), ("169.253.255.255", True), ("192.169.0.1", True), ("11.0.0.1", True),
    # IPv6 that must be refused
    ("::1", False), ("::", False), ("fc00::1", False), ("fd12:3456::1", False),
    ("fe80::1", False), ("febf::1", False), ("fec0::1", False), ("feff::1", False),
    ("ff02::1", False), ("ff0e::1", False), ("2001:db8::1", False), ("100::1", False),
    ("3fff::1", False), ("5f00::1", False), ("fe80::1%1", False), ("2606:4700::1111%1", False),
    # ...and the forms that carry a refused IPv4 address
    ("::ffff:127.0.0.1", False), ("::ffff:10.0.0.1", False), ("::ffff:169.254.169.254", False),
    ("::ffff:0.0.0.0", False), ("::127.0.0.1", False), ("::8.8.8.8", False),
    ("::ffff:0:8.8.8.8", False), ("2002:7f00:1::", False), ("2002:c0a8:101::", False),
    ("2002:a00:1::1", False), ("64:ff9b::7f00:1", False), ("64:ff9b::a00:1", False),
    ("64:ff9b::a9fe:a9fe", False), ("64:ff9b:1::808:808", False), ("64:ff9b:1::7f00:1", False),
    # Teredo: server 65.54.227.120, client 192.168.1.1 / 127.0.0.1 (stored inverted)
    ("2001:0:4136:e378:8000:63bf:3f57:fefe", False),
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", False),
    # Teredo with a private server 10.0.0.1 and a public client 8.8.8.8
    ("2001:0:a00:1:8000:63bf:f7f7:f7f7", False),
    # IPv6 that must pass
    ("2606:4700::1111", True), ("2001:4860:4860::8888", True), ("2a00:1450:4001:80b::200e", True),
    ("::ffff:8.8.8.8", True), ("::ffff:1.1.1.1", True), ("64:ff9b::808:808", True),
    ("64:ff9b::101:101", True), ("2002:808:808::1", True),
    ("2001:0:4136:e378:8000:63bf:f7f7:f7f7", True),
]

# host as written in a URL -> the address it denotes (None: a name to resolve)
LITERALS = [
    ("127.1", "127.0.0.1"), ("0x7f.1", "127.0.0.1"), ("2130706433", "127.0.0.1"),
    ("017700000001", "127.0.0.1"), ("0177.0.0.1", "127.0.0.1"), ("0x7f000001", "127.0.0.1"),
    ("0X7F.0.0.1", "127.0.0.1"), ("127.0.1", "127.0.0.1"), ("127.0.0.1.", "127.0.0.1"),
    ("0", "0.0.0.0"), ("10.1", "10.0.0.1"), ("3232235777", "192.168.1.1"),
    ("0xa9.0xfe.0xa9.0xfe", "169.254.169.254"), ("134744072", "8.8.8.8"),
    ("[::ffff:7f00:1]", "::ffff:7f00:1"), ("[::127.0.0.1]", "::7f00:1"),
    ("[64:ff9b::7f00:1]", "64:ff9b::7f00:1"), ("::1", "::1"),
    ("example.com", None), ("localhost", None), ("1.example", None), ("0x7f.example", None),
]

HOSTILE_URLS = [
    "http://127.1/a.jpg", "http://0x7f.1/a.jpg", "http://2130706433/a.jpg",
    "http://017700000001/a.jpg", "http://0177.0.0.1/a.jpg", "http://[::ffff:7f00:1]/a.jpg",
    "http://[::127.0.0.1]/a.jpg", "http://[64:ff9b::7f00:1]/a.jpg", "http://[::1]:8080/a.jpg",
    "http://0/a.jpg", "http://169.254.169.254/latest/meta-data/", "https://[fe80::1]/a.jpg",
    "http://10.1/a.jpg", "http://\uff11\uff12\uff17.\uff10.\uff10.\uff11/a.jpg",
    "http://127.0.0.1./a.jpg", "http://[2002:7f00:1::]/a.jpg",
]


@implementer(IHostnameResolver)
class FakeResolver:
    """Answers lookups from a dict and records every name it was asked for."""

    def __init__(self, names: dict[str, list[str]] | None = None):
        self.names = names or {}
        self.lookups: list[str] = []

    def resolveHostName(self, receiver, hostName, portNumber=0, addressTypes=None,
                        transportSemantics="TCP"):
        self.lookups.append(hostName)
        receiver.resolutionBegan(None)
        for text in self.names.get(hostName, []):
            kind = IPv6Address if ":" in text else IPv4Address
            receiver.addressResolved(kind("TCP", text, portNumber))
        receiver.resolutionComplete()
        return receiver


class CountingReactor:
    """The real reactor, with every outgoing TCP connection attempt recorded."""

    def __init__(self, reactor):
        self._reactor = reactor
        self.attempts: list[tuple[str, int]] = []

    def connectTCP(self, host, port, factory, timeout=30, bindAddress=None):
        self.attempts.append((host, port))
        return self._reactor.connectTCP(host, port, factory, timeout, bindAddress)

    def __getattr__(self, name):
        return getattr(self._reactor, name)


def only_port(port: int):
    """A policy: the production one, plus loopback on ``port`` (tests only)."""
    return lambda ip, p: address_allowed(ip) or (ip == LOOPBACK and p == port)


def jpeg_stream_chunk(size: int) -> bytes:
    """``size`` bytes that start like a JPEG (enough to pass the early type check)."""
    return (b"\xff\xd8\xff\xe0" + b"\0" * size)[:size]


class Source(resource.Resource):
    """A loopback web server with scripted paths; it records every request it gets.

    ``outcomes[path]`` fires with "completed" when a response was fully sent,
    or "cut" when the client dropped the connection first.

    With ``network`` (a ``testing.MemoryNetwork``) it listens there instead, on
    127.0.0.1:``MEMORY_PORT``, and answers in memory when the network is flushed.
    """

    isLeaf = True
    MEMORY_PORT = 8080

    def __init__(self, testcase, tls_options=None, network=None):
        super().__init__()
        self.requests: list[server.Request] = []
        self.outcomes: dict[str, Deferred] = {}
        self.sent: dict[str, int] = {}
        self.arrived: Deferred = Deferred()
        self.redirects: dict[str, str] = {}
        self.image = image_bytes("JPEG", (80, 60))
        self.routes = {
            "/img.jpg": lambda r: self.image,
            "/pics/cat%20photo.jpg": lambda r: self.image,
            "/page.html": self._html,
            "/missing": self._missing,
            "/declared-huge": self._declared_huge,
            "/endless": self._endless,
            "/slow": self._slow,
        }
        if network is not None:
            self.factory = WrappingFactory(server.Site(self, reactor=Clock()))
            self.port = network.listenTCP(self.MEMORY_PORT, self.factory, interface="127.0.0.1")
        elif tls_options is None:
            self.factory = WrappingFactory(server.Site(self))  # knows its live connections
            self.port = global_reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        else:
            self.factory = WrappingFactory(server.Site(self))
            self.port = global_reactor.listenSSL(0, self.factory, tls_options, interface="127.0.0.1")
        self.number = self.port.getHost().port
        self.network = network
        testcase.addCleanup(self.close)

    def url(self, path: str, host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.number}{path}"

    def hits(self, path: str) -> int:
        return sum(1 for r in self.requests if r.uri.decode().split("?")[0] == path)

    async def close(self):
        """Stop listening, drop what is still connected, and wait until it is gone."""
        if self.network is not None:  # in memory: gone once the network is flushed
            self.port.stopListening()
            for protocol in list(self.factory.protocols):
                protocol.transport.abortConnection()
            self.network.flush()
            return
        await self.port.stopListening()
        for protocol in list(self.factory.protocols):
            protocol.transport.abortConnection()
        for _ in range(500):
            if not self.factory.protocols:
                break
            await deferLater(global_reactor, 0.005, lambda: None)
        await deferLater(global_reactor, 0.01, lambda: None)  # the client side notices too

    def render_GET(self, request):
        path = request.uri.decode().split("?")[0]
        self.requests.append(request)
        outcome: Deferred = Deferred()
        self.outcomes[path] = outcome
        request.notifyFinish().addCallbacks(
            lambda _: outcome.callback("completed"), lambda _: outcome.callback("cut")
        )
        if not self.arrived.called:
            self.arrived.callback(request)
        if path.startswith("/r/"):
            return self._redirect_chain(request, int(path[3:]))
        if path in self.redirects:
            request.redirect(self.redirects[path].encode())
            return b""
        handler = self.routes.get(path)
        if handler is None:
            return self._missing(request)
        return handler(request)

    def _redirect_chain(self, request, n):
        if n == 0:
            return self.image
        request.redirect(f"/r/{n - 1}".encode())
        return b""

    def _html(self, request):
        request.setHeader(b"content-type", b"text/html")
        return b"<!doctype html><html><body>" + b"not an image " * 20 + b"</body></html>"

    def _missing(self, request):
        request.setResponseCode(404)
        return b"no such thing"

    def _declared_huge(self, request):
        request.setHeader(b"content-length", str(10 * 1024 * 1024).encode())
        request.write(jpeg_stream_chunk(4096))
        self.sent["/declared-huge"] = 4096
        return server.NOT_DONE_YET

    def _endless(self, request):
        total = 8 * 1024 * 1024
        self.sent["/endless"] = 0
        finished = []
        request.notifyFinish().addBoth(finished.append)

        def more():
            if finished or self.sent["/endless"] >= total:
                if not finished:
                    request.finish()
                return
            request.write(jpeg_stream_chunk(16 * 1024))
            self.sent["/endless"] += 16 * 1024
            global_reactor.callLater(0.001, more)

        more()
        return server.NOT_DONE_YET

    def _slow(self, request):
        request.write(jpeg_stream_chunk(100))
        return server.NOT_DONE_YET


def self_signed(hostname: str = "localhost") -> tuple[ssl.PrivateCertificate, ssl.Certificate]:
    """A fresh self-signed certificate for ``hostname`` (DNS name only), generated here."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return ssl.PrivateCertificate.loadPEM(key_pem + cert_pem), ssl.Certificate.loadPEM(cert_pem)


class AddressGuardTests(unittest.SynchronousTestCase):
    def test_address_table(self):
        """Every special-purpose address (and each IPv6 form carrying one) is refused; public ones pass."""
        self.assertGreaterEqual(len(ADDRESSES), 60)
        wrong = [
            (text, expected) for text, expected in ADDRESSES
            if address_allowed(ipaddress.ip_address(text)) is not expected
        ]
        self.assertEqual(wrong, [])

    def test_hostile_spellings_decode_like_browsers(self):
        """Short, hexadecimal, octal and single-number IPv4 spellings decode to the address they reach."""
        wrong = []
        for host, expected in LITERALS:
            found = parse_host_literal(host)
            if (None if found is None else str(found)) != expected:
                wrong.append((host, found, expected))
        self.assertEqual(wrong, [])

    def test_invalid_numeric_hosts_are_refused(self):
        """A host ending in a number that is no valid IPv4 spelling is an error, not a name to look up."""
        for host in ["09.1", "1.2.3.4.5", "256.1.1.1", "127.0.0.0x100", "4294967296", "1..1",
                     "example.123", "0x7f.0x100000000", "[fe80::1%25eth0]", "[::1"]:
            self.assertRaises(ValueError, parse_host_literal, host.replace("%25", "%"))

    def test_parse_target(self):
        """URLs are canonicalized: literal hosts spelled out, IDNA names, encoded paths, no fragment."""
        cases = {
            "http://127.1/a.jpg#frag": "http://127.0.0.1/a.jpg",
            "HTTPS://Example.COM:443/a%20b/\u00e4.jpg?x=\u00fc": "https://example.com/a%20b/%C3%A4.jpg?x=%C3%BC",
            "http://B\u00fccher.example/": "http://xn--bcher-kva.example/",
            "http://[::FFFF:7f00:1]:8080": "http://[::ffff:7f00:1]:8080/",
            "http://example.com:80/": "http://example.com/",
        }
        for url, canonical in cases.items():
            self.assertEqual(parse_target(url).url, canonical)

    def test_parse_target_refusals(self):
        """Other schemes, credentials, bad ports, spaces and hosts that are neither names nor addresses: 400."""
        for url in ["ftp://example.com/a.jpg", "file:///etc/passwd", "javascript:alert(1)",
                    "http://user:pw@example.com/", "http://127.0.0.1@example.com/",
                    "http://example.com:0/", "http://example.com:99999/", "http://exa mple.com/",
                    "http://example.com/\n", "http:///a.jpg", "http://ex\\ample.com/", "example.com/a.jpg",
                    "http://09.1/", "http://" + "a" * 9000 + ".com/"]:
            error = self.assertRaises(errors.BadRequest, parse_target, url)
            self.assertEqual(error.status, 400)

    def test_url_filename(self):
        """keep_name's source is the URL's last path segment, percent-decoded."""
        self.assertEqual(url_filename("https://e.example/pics/cat%20photo.jpg?size=2"), "cat photo.jpg")
        self.assertEqual(url_filename("https://e.example/"), "")
        self.assertEqual(url_filename("https://e.example"), "")

    def test_user_agent(self):
        """The User-Agent names the version, the public URL, the user and the contact."""
        self.assertEqual(
            user_agent("https://img.example", "kitten", "ops@img.example"),
            f"IMGSHARE/{imgshare.__version__} (+https://img.example; user kitten; contact ops@img.example)",
        )
        self.assertNotIn("\n", user_agent("https://img.example", "kitten", "a\r\nX-Evil: 1"))

    async def test_error_cache_is_bounded_and_ages(self):
        """The cache keeps the most recently used entries only, each for ten minutes."""
        clock = Clock()
        cache = ErrorCache(clock, size=3)
        for n in range(4):
            await cache.remember(f"u{n}", errors.GatherFailed(f"failed {n}"))
        self.assertIsNone(await cache.lookup("u0"))
        self.assertEqual((await cache.lookup("u1")).message, "failed 1")
        await cache.remember("u4", errors.TooLarge("big"))
        self.assertIsNone(await cache.lookup("u2"))  # u1 was used more recently
        self.assertEqual(((await cache.lookup("u4")).status, type(await cache.lookup("u4"))), (413, errors.TooLarge))
        clock.advance(599)
        self.assertIsNotNone(await cache.lookup("u4"))
        clock.advance(1)
        self.assertIsNone(await cache.lookup("u4"))


class InMemoryTests(unittest.TestCase):
    """Gathers over a MemoryReactorClock: every connection attempt is visible, none is real."""

    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.resolver = FakeResolver({
            "images.example": ["93.184.216.34"],
            "mixed.example": ["93.184.216.34", "10.0.0.1"],
            "mixed6.example": ["2606:4700::1111", "::1"],
            "mapped.example": ["::ffff:127.0.0.1"],
            "rebind.example": ["8.8.8.8"],
        })
        data_dir = self.mktemp()
        os.makedirs(data_dir)
        self.config = test_config(data_dir, contact="ops@img.example")
        self.gatherer = Gatherer(self.reactor, self.config, resolver=self.resolver)

    def fetch(self, url: str) -> Deferred:
        return Deferred.fromCoroutine(self.gatherer.fetch(url, "kitten"))

    def test_hostile_literals_refused_before_connecting(self):
        """Every hostile IP-literal spelling answers 403 with no lookup and no connection attempt."""
        for url in HOSTILE_URLS:
            error = self.failureResultOf(self.fetch(url), errors.Forbidden).value
            self.assertEqual(error.status, 403, url)
            self.assertIn("forbidden address", error.message)
        self.assertEqual(self.reactor.tcpClients, [])
        self.assertEqual(self.resolver.lookups, [])

    def test_name_resolving_to_private_address(self):
        """A name with any refused address among its answers (IPv4 or IPv6) is 403 before any connection."""
        for name in ["mixed.example", "mixed6.example", "mapped.example"]:
            error = self.failureResultOf(self.fetch(f"https://{name}/a.jpg"), errors.Forbidden).value
            self.assertIn(name, error.message)
        self.assertEqual(self.reactor.tcpClients, [])
        self.assertEqual(self.resolver.lookups, ["mixed.example", "mixed6.example", "mapped.example"])

    def test_dns_failure(self):
        """A name without addresses answers 502 without a connection attempt."""
        error = self.failureResultOf(self.fetch("http://nowhere.example/a.jpg"), errors.GatherFailed).value
        self.assertEqual((error.status, error.message), (502, "DNS lookup for nowhere.example failed: no addresses"))
        self.assertEqual(self.reactor.tcpClients, [])

    def test_connects_to_the_vetted_address_once_with_the_name_in_host(self):
        """One lookup; the connection goes to that vetted IP (10 s timeout); Host and User-Agent are right."""
        d = self.fetch("http://images.example/pics/cat%20photo.jpg")
        [(host, port, factory, timeout, _)] = self.reactor.tcpClients
        self.assertEqual((host, port, timeout), ("93.184.216.34", 80, 10.0))
        protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
        transport = StringTransport()
        protocol.makeConnection(transport)
        head = transport.value().decode("latin-1").split("\r\n")
        self.assertEqual(head[0], "GET /pics/cat%20photo.jpg HTTP/1.1")
        self.assertIn("Host: images.example", head)
        self.assertIn(f"User-Agent: IMGSHARE/{imgshare.__version__} (+https://img.example; "
                      "user kitten; contact ops@img.example)", head)
        body = image_bytes()
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        path, filename = self.successResultOf(d)
        self.addCleanup(os.unlink, path)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), body)
        self.assertEqual(filename, "cat photo.jpg")
        self.assertTrue(path.startswith(self.config.spool_dir))
        self.assertEqual(self.resolver.lookups, ["images.example"])

    def test_connect_timeout(self):
        """A connection that cannot be made within its 10 s timeout answers 502."""
        d = self.fetch("http://images.example/a.jpg")
        [(_, _, factory, timeout, _)] = self.reactor.tcpClients
        self.assertEqual(timeout, 10.0)
        factory.clientConnectionFailed(self.reactor.connectors[0], Failure(ConnectTimeoutError()))
        error = self.failureResultOf(d, errors.GatherFailed).value
        self.assertEqual(error.message, "connecting to images.example:80 timed out")

    def test_ipv6_address_connected_as_ipv6(self):
        """A name with a public IPv6 address is connected to at that address."""
        self.resolver.names["v6.example"] = ["2606:4700::1111"]
        self.fetch("https://v6.example/a.jpg")
        [(host, port, _, _, _)] = self.reactor.tcpClients
        self.assertEqual((host, port), ("2606:4700::1111", 443))

    def test_next_vetted_address_after_refusal(self):
        """When the first vetted address refuses, the next one is tried; nothing else is."""
        self.resolver.names["two.example"] = ["93.184.216.34", "93.184.216.35"]
        d = self.fetch("http://two.example/a.jpg")
        factory = self.reactor.tcpClients[0][2]
        factory.clientConnectionFailed(self.reactor.connectors[0], Failure(ConnectionRefused()))
        self.assertEqual([c[0] for c in self.reactor.tcpClients], ["93.184.216.34", "93.184.216.35"])
        factory = self.reactor.tcpClients[1][2]
        factory.clientConnectionFailed(self.reactor.connectors[1], Failure(ConnectionRefused()))
        error = self.failureResultOf(d, errors.GatherFailed).value
        self.assertEqual(error.message, "connection to two.example:80 refused")
        self.assertEqual(self.resolver.lookups, ["two.example"])

    def test_body_cut_short(self):
        """A source that closes before the declared length arrived answers 502; nothing stays spooled."""
        d = self.fetch("http://images.example/a.jpg")
        [(host, port, factory, _, _)] = self.reactor.tcpClients
        protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
        protocol.makeConnection(StringTransport())
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + image_bytes()[:100])
        protocol.connectionLost(Failure(ConnectionDone()))
        error = self.failureResultOf(d, errors.GatherFailed).value
        self.assertEqual(error.message, "the source closed the connection before the end of the file")
        self.assertEqual(os.listdir(self.config.spool_dir), [])

    def test_total_timeout(self):
        """The whole gather is abandoned after 60 s on the injected clock (here: never connected)."""
        d = self.fetch("http://images.example/a.jpg")
        self.reactor.advance(59)
        self.assertNoResult(d)
        self.reactor.advance(1)
        error = self.failureResultOf(d, errors.GatherFailed).value
        self.assertEqual(error.message, "the source did not deliver within 60 seconds")

    def test_forbidden_answer_is_cached(self):
        """A refused URL answers the same 403 again from the cache, without a second lookup."""
        first = self.failureResultOf(self.fetch("https://mixed.example/a.jpg"), errors.Forbidden).value
        second = self.failureResultOf(self.fetch("https://mixed.example/a.jpg"), errors.Forbidden).value
        self.assertEqual((first.status, first.message), (second.status, second.message))
        self.assertEqual(self.resolver.lookups, ["mixed.example"])


class LoopbackTests(unittest.TestCase):
    """Gathers from real twisted.web servers on 127.0.0.1, allowed only by an injected policy."""

    def setUp(self):
        self.source = Source(self)
        self.clock = Clock()
        self.reactor = CountingReactor(global_reactor)
        data_dir = self.mktemp()
        os.makedirs(data_dir)
        self.config = test_config(data_dir, contact="ops@img.example", max_size=SMALL_LIMIT)

    def gatherer(self, port: int | None = None, **kwargs) -> Gatherer:
        kwargs.setdefault("resolver", FakeResolver({"localhost": ["127.0.0.1"]}))
        kwargs.setdefault("clock", self.clock)
        return Gatherer(self.reactor, self.config, allow=only_port(port or self.source.number), **kwargs)

    async def gather(self, url: str, gatherer: Gatherer | None = None):
        return await (gatherer or self.gatherer()).fetch(url, "kitten")

    async def refused(self, url: str, kind: type[errors.ApiError], gatherer=None) -> errors.ApiError:
        try:
            await self.gather(url, gatherer)
        except kind as e:
            return e
        self.fail(f"{url} did not fail with {kind.__name__}")

    def spooled(self) -> list[str]:
        spool = self.config.spool_dir
        return os.listdir(spool) if os.path.isdir(spool) else []

    async def test_success_and_user_agent(self):
        """A gather downloads the exact bytes into the spool folder, naming the user in the User-Agent."""
        path, filename = await self.gather(self.source.url("/pics/cat%20photo.jpg"))
        with open(path, "rb") as f:
            self.assertEqual(f.read(), self.source.image)
        self.assertEqual(filename, "cat photo.jpg")
        self.assertEqual(os.path.dirname(path), self.config.spool_dir)
        [request] = self.source.requests
        self.assertEqual(
            request.getHeader(b"user-agent").decode(),
            f"IMGSHARE/{imgshare.__version__} (+https://img.example; user kitten; contact ops@img.example)",
        )
        self.assertEqual(request.getHeader(b"host").decode(), f"127.0.0.1:{self.source.number}")
        self.assertEqual(self.reactor.attempts, [("127.0.0.1", self.source.number)])

    async def test_only_the_allowed_port(self):
        """The injected policy opens one port only: loopback on another port is still 403, unattempted."""
        other = Source(self)
        error = await self.refused(other.url("/img.jpg"), errors.Forbidden)
        self.assertEqual(error.status, 403)
        self.assertEqual((self.reactor.attempts, other.requests), ([], []))

    async def test_name_resolved_by_injected_resolver(self):
        """A name is looked up with the injected resolver, connected to by IP, and sent as Host."""
        path, _ = await self.gather(self.source.url("/img.jpg", host="localhost"))
        os.unlink(path)
        [request] = self.source.requests
        self.assertEqual(request.getHeader(b"host").decode(), f"localhost:{self.source.number}")
        self.assertEqual(self.reactor.attempts, [("127.0.0.1", self.source.number)])

    async def test_proxy_environment_ignored(self):
        """http_proxy, https_proxy and all_proxy are not used: the source is reached directly."""
        proxy = Source(self)
        saved = {k: os.environ.get(k) for k in ("http_proxy", "HTTP_PROXY", "https_proxy", "ALL_PROXY")}

        def restore():
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

        self.addCleanup(restore)
        for key in saved:
            os.environ[key] = proxy.url("/")
        path, _ = await self.gather(self.source.url("/img.jpg"))
        os.unlink(path)
        self.assertEqual((len(self.source.requests), proxy.requests), (1, []))

    async def test_oversize_by_header(self):
        """A Content-Length over the limit is 413 before the body is read, and the transfer is cut."""
        error = await self.refused(self.source.url("/declared-huge"), errors.TooLarge)
        self.assertEqual(error.status, 413)
        self.assertIn(str(10 * 1024 * 1024), error.message)
        self.assertEqual(await self.source.outcomes["/declared-huge"], "cut")
        self.assertEqual(self.spooled(), [])

    async def test_oversize_by_stream(self):
        """A body without a length is cut off as soon as it passes the limit: 413, transfer not completed."""
        error = await self.refused(self.source.url("/endless"), errors.TooLarge)
        self.assertIn(str(SMALL_LIMIT), error.message)
        self.assertEqual(await self.source.outcomes["/endless"], "cut")
        self.assertLess(self.source.sent["/endless"], 16 * SMALL_LIMIT)  # of 8 MiB on offer
        self.assertEqual(self.spooled(), [])

    async def test_slow_source_times_out(self):
        """A source that stalls is abandoned at the total timeout (injected clock): 502, connection cut."""
        d = Deferred.fromCoroutine(self.refused(self.source.url("/slow"), errors.GatherFailed))
        await self.source.arrived
        await deferLater(global_reactor, 0.05, lambda: None)  # the first bytes arrive
        self.clock.advance(60)
        error = await d
        self.assertEqual((error.status, error.message), (502, "the source did not deliver within 60 seconds"))
        self.assertEqual(await self.source.outcomes["/slow"], "cut")
        self.assertEqual(self.spooled(), [])

    async def test_short_total_timeout(self):
        """The total timeout is a constructor argument: a short one on the real clock also cuts a stall."""
        gatherer = self.gatherer(clock=global_reactor, total_timeout=0.2)
        error = await self.refused(self.source.url("/slow"), errors.GatherFailed, gatherer)
        self.assertIn("0.2 seconds", error.message)

    async def test_redirect_to_loopback_is_vetted(self):
        """A redirect to a loopback address that the policy does not allow is 403, never connected to."""
        target = Source(self)
        self.source.redirects = {"/go": target.url("/img.jpg")}
        error = await self.refused(self.source.url("/go"), errors.Forbidden)
        self.assertEqual(error.status, 403)
        self.assertEqual(target.requests, [])
        self.assertEqual(self.reactor.attempts, [("127.0.0.1", self.source.number)])

    async def test_redirect_to_name_with_private_address(self):
        """A redirect to a name that resolves to a private address is 403, never connected to."""
        self.source.redirects = {"/go": "http://intranet.example/img.jpg"}
        gatherer = self.gatherer(resolver=FakeResolver({"intranet.example": ["192.168.1.10"]}))
        await self.refused(self.source.url("/go"), errors.Forbidden, gatherer)
        self.assertEqual(self.reactor.attempts, [("127.0.0.1", self.source.number)])

    async def test_five_redirects_followed(self):
        """Up to five redirects are followed, each Location resolved against the current URL."""
        path, filename = await self.gather(self.source.url("/r/5"))
        os.unlink(path)
        self.assertEqual([r.uri for r in self.source.requests], [b"/r/%d" % n for n in range(5, -1, -1)])
        self.assertEqual(filename, "5")

    async def test_six_redirects_refused(self):
        """A sixth redirect is not followed: 502."""
        error = await self.refused(self.source.url("/r/6"), errors.GatherFailed)
        self.assertEqual(error.message, "too many redirects (more than 5)")
        self.assertEqual(len(self.source.requests), 6)

    async def test_redirect_to_other_scheme(self):
        """A redirect to anything but http or https is not followed: 502."""
        self.source.redirects = {"/go": "file:///etc/passwd"}
        error = await self.refused(self.source.url("/go"), errors.GatherFailed)
        self.assertIn("http://", error.message)

    async def test_non_image_content(self):
        """A body that is not JPEG, PNG, BMP or WEBP is refused with 415 from its first bytes."""
        error = await self.refused(self.source.url("/page.html"), errors.UnsupportedType)
        self.assertEqual(error.status, 415)
        self.assertEqual(self.spooled(), [])

    async def test_http_error_status(self):
        """A non-2xx answer from the source is 502 naming the status."""
        error = await self.refused(self.source.url("/missing"), errors.GatherFailed)
        self.assertEqual((error.status, error.message), (502, "the source answered HTTP 404 Not Found"))

    async def test_connection_refused(self):
        """A closed port answers 502."""
        closed = global_reactor.listenTCP(0, server.Site(resource.Resource()), interface="127.0.0.1")
        number = closed.getHost().port
        await closed.stopListening()
        error = await self.refused(f"http://127.0.0.1:{number}/a.jpg", errors.GatherFailed,
                                   self.gatherer(port=number))
        self.assertEqual(error.message, f"connection to 127.0.0.1:{number} refused")

    async def test_error_cache(self):
        """A failed URL answers the same error for ten minutes without contacting the source again."""
        gatherer = self.gatherer()
        url = self.source.url("/missing")
        first = await self.refused(url, errors.GatherFailed, gatherer)
        second = await self.refused(url, errors.GatherFailed, gatherer)
        self.assertEqual((first.status, first.message), (second.status, second.message))
        self.assertEqual(self.source.hits("/missing"), 1)
        self.clock.advance(599)
        await self.refused(url, errors.GatherFailed, gatherer)
        self.assertEqual(self.source.hits("/missing"), 1)
        self.clock.advance(1)
        await self.refused(url, errors.GatherFailed, gatherer)
        self.assertEqual(self.source.hits("/missing"), 2)

    async def test_error_cache_covers_oversize(self):
        """An oversize source's 413 is repeated from the cache too."""
        gatherer = self.gatherer()
        first = await self.refused(self.source.url("/declared-huge"), errors.TooLarge, gatherer)
        second = await self.refused(self.source.url("/declared-huge"), errors.TooLarge, gatherer)
        self.assertEqual(first.message, second.message)
        self.assertEqual(self.source.hits("/declared-huge"), 1)


class TlsTests(unittest.TestCase):
    """https sources: certificates are verified against the name in the URL."""

    def setUp(self):
        self.server_cert, self.public_cert = self_signed("localhost")
        options = self.server_cert.options()
        self.sni: list[bytes | None] = []
        options.getContext().set_tlsext_servername_callback(
            lambda connection: self.sni.append(connection.get_servername())
        )
        self.source = Source(self, tls_options=options)
        data_dir = self.mktemp()
        os.makedirs(data_dir)
        self.config = test_config(data_dir)

    def gatherer(self, **kwargs) -> Gatherer:
        return Gatherer(
            global_reactor, self.config, resolver=FakeResolver({"localhost": ["127.0.0.1"]}),
            allow=only_port(self.source.number), **kwargs,
        )

    async def failure(self, url: str, **kwargs) -> errors.ApiError:
        try:
            await self.gatherer(**kwargs).fetch(url, "kitten")
        except errors.GatherFailed as e:
            return e
        self.fail("the gather succeeded")

    async def test_self_signed_certificate(self):
        """A self-signed certificate is refused: 502 with the reason, nothing requested."""
        error = await self.failure(self.source.url("/img.jpg", host="localhost", scheme="https"))
        self.assertEqual(error.status, 502)
        self.assertIn("certificate", error.message)
        self.assertEqual(self.source.requests, [])

    async def test_trusted_certificate_with_sni(self):
        """With the certificate's issuer trusted, the gather works; SNI carries the name, not the IP."""
        path, _ = await self.gatherer(trust_root=self.public_cert).fetch(
            self.source.url("/img.jpg", host="localhost", scheme="https"), "kitten"
        )
        os.unlink(path)
        self.assertEqual(self.sni, [b"localhost"])
        self.assertEqual(len(self.source.requests), 1)

    async def test_certificate_for_another_name(self):
        """A trusted certificate that does not name the host in the URL is refused: 502."""
        error = await self.failure(
            self.source.url("/img.jpg", host="127.0.0.1", scheme="https"), trust_root=self.public_cert
        )
        self.assertIn("certificate", error.message)
        self.assertEqual(self.source.requests, [])


async def fixture_with_source(testcase: Any, **config: Any) -> None:
    """Give ``testcase`` a fixture whose img_gather.php fetches from a ``Source`` on the
    fixture's in-memory network (``source``; a request's flush carries the whole fetch,
    on the fake clock only), an account kitten, its ``token``, a ``client`` and the
    gatherer's ``config``."""
    network = MemoryNetwork()
    testcase.source = Source(testcase, network=network)

    def make_gatherer(settings, clock):
        testcase.config = settings
        return Gatherer(network, settings, resolver=FakeResolver(), clock=clock,
                        allow=only_port(testcase.source.number))

    testcase.f = await make_fixture(testcase, make_gatherer=make_gatherer, network=network, **config)
    await testcase.f.account("kitten")
    testcase.token = await testcase.f.token("kitten")
    testcase.client = testcase.f.client()


class GatherRouteTests(unittest.TestCase):
    """img_gather.php through StubTreq: the same checks and answer as an upload."""

    async def setUp(self):
        await fixture_with_source(self)

    async def post(self, **fields):
        response, body = await self.client.request("POST", API + "img_gather.php", data=fields)
        return response, json.loads(body)

    def spooled(self) -> list[str]:
        return [n for n in os.listdir(self.config.spool_dir) if n.startswith("gather-")]

    async def test_gather_answers_like_an_upload(self):
        """A gather answers the upload's image record, stores the bytes and leaves no spooled file."""
        response, record = await self.post(token=self.token, url=self.source.url("/img.jpg"))
        self.assertEqual(response.code, 200, record)
        self.assertEqual((record["status"], record["user"], record["mime"]), ("ok", "kitten", "image/jpeg"))
        self.assertEqual((record["width"], record["height"], record["size"]), (80, 60, len(self.source.image)))
        self.assertRegex(record["file"], r"^20260214_[a-z0-9]{8}\.jpg$")
        self.assertEqual(self.f.storage.objects[f"kitten/{record['file']}"], self.source.image)
        self.assertEqual(self.spooled(), [])

    async def test_keep_name_takes_the_last_segment(self):
        """keep_name uses the URL's last path segment, decoded and sanitized; name= and expire= work too."""
        response, record = await self.post(
            token=self.token, url=self.source.url("/pics/cat%20photo.jpg"), keep_name="1"
        )
        self.assertEqual(record["file"], "20260214_cat_photo.jpg")
        response, record = await self.post(
            token=self.token, url=self.source.url("/img.jpg"), name="fountain", expire="3600"
        )
        self.assertEqual((record["file"], record["expires"]), ("20260214_fountain.jpg", "2026-02-14T10:30:00Z"))
        self.assertEqual(response.headers.getRawHeaders("imgshare-expires"), ["2026-02-14T10:30:00Z"])

    async def test_text_format(self):
        """format=text answers Key=Value lines, like an upload."""
        response, body = await self.client.request(
            "POST", API + "img_gather.php",
            data={"token": self.token, "url": self.source.url("/img.jpg"), "format": "text"},
        )
        self.assertEqual(response.code, 200)
        self.assertIn(b"status=ok\n", body)

    async def test_missing_and_bad_url(self):
        """A missing url or one that is not http/https is 400, without contacting anything."""
        for fields in [{}, {"url": ""}, {"url": "ftp://example.com/a.jpg"},
                       {"url": "file:///etc/passwd"}, {"url": "http://user@example.com/a.jpg"}]:
            response, body = await self.post(token=self.token, **fields)
            self.assertEqual((response.code, body["status"]), (400, "error"), fields)
        self.assertEqual(self.source.requests, [])

    async def test_token_required(self):
        """Without a valid token the answer is 401 and nothing is fetched."""
        for token in [None, "not-a-token"]:
            fields = {"url": self.source.url("/img.jpg")}
            if token:
                fields["token"] = token
            response, body = await self.post(**fields)
            self.assertEqual(response.code, 401)
        self.assertEqual(self.source.requests, [])

    async def test_get_is_refused(self):
        """img_gather.php is POST only."""
        response, body = await self.client.request("GET", API + f"img_gather.php?token={self.token}")
        self.assertEqual(response.code, 405)

    async def test_forbidden_addresses(self):
        """Hostile IP literals answer 403 through the API too."""
        for url in ["http://127.1/a.jpg", "http://[::ffff:7f00:1]/a.jpg", "http://2130706433/"]:
            response, body = await self.post(token=self.token, url=url)
            self.assertEqual(response.code, 403, url)
            self.assertIn("forbidden address", body["error"])

    async def test_non_image_is_415(self):
        """Content that is not an accepted image answers 415 and leaves no spooled file."""
        response, body = await self.post(token=self.token, url=self.source.url("/page.html"))
        self.assertEqual(response.code, 415)
        self.assertEqual(self.spooled(), [])

    async def test_source_failure_is_502(self):
        """A source answering 404 makes the gather 502, and the repeat comes from the cache."""
        for _ in range(2):
            response, body = await self.post(token=self.token, url=self.source.url("/missing"))
            self.assertEqual(response.code, 502)
            self.assertEqual(body["error"], "the source answered HTTP 404 Not Found")
        self.assertEqual(self.source.hits("/missing"), 1)

    async def test_unreadable_image_is_cached(self):
        """An image the library cannot read (400) is also repeated from the cache for the URL."""
        self.source.routes["/broken.png"] = lambda r: b"\x89PNG\r\n\x1a\n" + b"\0" * 40
        for _ in range(2):
            response, body = await self.post(token=self.token, url=self.source.url("/broken.png"))
            self.assertEqual(response.code, 400, body)
        self.assertEqual(self.source.hits("/broken.png"), 1)
        self.assertEqual(self.spooled(), [])

    async def test_without_gatherer_501(self):
        """A server built without a gatherer answers 501 (fixtures that never touch the network)."""
        f = await make_fixture(self)
        await f.account("kitten")
        token = await f.token("kitten")
        response, body = await f.client().request(
            "POST", API + "img_gather.php", data={"token": token, "url": "https://example.com/a.jpg"}
        )
        self.assertEqual(response.code, 501)
