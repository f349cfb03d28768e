"""Large local files sent by the kernel (sendfile): every byte, in order, on a real TCP
connection, to fast, slow and vanishing clients, with a fallback when the kernel refuses."""

from __future__ import annotations

import errno
import os

import treq
from twisted.internet import reactor
from twisted.internet.protocol import ClientFactory
from twisted.trial import unittest

from imgshare import producers
from imgshare.plugins.localfiles import LocalStorage
from imgshare.threads import InlineRunner
from imgshare.web.request import ImgshareSite
from tests.test_backends_production import SlowReader, StreamResource, read_to_the_end, sleep

MiB = 1024 * 1024


class RangeResource(StreamResource):
    """``GET /?first=N&length=M`` streams that range of the object."""

    def span(self, request):
        first = int(request.args.get(b"first", [b"0"])[0])
        return first, int(request.args.get(b"length", [str(self.size).encode()])[0])


class SendfileTests(unittest.TestCase):
    timeout = 60

    def setUp(self):
        self.calls = {"sendfile": 0}
        real = os.sendfile

        def counting(*args):
            self.calls["sendfile"] += 1
            return real(*args)

        self.patch(producers.os, "sendfile", counting)
        root = os.path.abspath(self.mktemp())
        self.storage = LocalStorage("file://" + root, root, InlineRunner())
        os.makedirs(os.path.join(root, "kitten"))
        self.data = os.urandom(5 * MiB + 12345)
        with open(os.path.join(root, "kitten", "20260214_big.jpg"), "wb") as f:
            f.write(self.data)
        self.site_resource = RangeResource(self.storage, "kitten/20260214_big.jpg", len(self.data))
        site = ImgshareSite(self.site_resource, max_body=1024)
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.port = port.getHost().port

    async def get(self, query: str = "") -> bytes:
        response = await treq.get(f"http://127.0.0.1:{self.port}/{query}", persistent=False)
        self.assertEqual(response.code, 200)
        return await response.content()

    async def test_a_large_file_goes_by_the_kernel(self):
        self.assertEqual(await self.get(), self.data)
        self.assertGreater(self.calls["sendfile"], 0)
        self.assertEqual(self.site_resource.sent, [len(self.data)])  # counted for the access log

    async def test_a_range_from_the_middle(self):
        body = await self.get("?first=1000001&length=3000000")
        self.assertEqual(body, self.data[1000001:4000001])
        self.assertGreater(self.calls["sendfile"], 0)

    async def test_a_small_range_is_copied(self):
        """One chunk or less: written at once, no sendfile."""
        body = await self.get(f"?first=7&length={producers.CHUNK}")
        self.assertEqual(body, self.data[7:7 + producers.CHUNK])
        self.assertEqual(self.calls["sendfile"], 0)

    async def test_a_slow_reader_gets_every_byte(self):
        """A client that stops reading is waited for (paused), then served to the end."""
        client = SlowReader()
        reactor.connectTCP("127.0.0.1", self.port, ClientFactory.forProtocol(lambda: client))
        await sleep(1)
        self.assertEqual(self.site_resource.outcomes, [])
        body = await read_to_the_end(client, self.site_resource, len(self.data), tries=600)
        self.assertEqual(body, self.data)

    async def test_a_client_gone_midway(self):
        """A client that stops reading, then goes: the send fails and the file is let go."""
        client = SlowReader()
        reactor.connectTCP("127.0.0.1", self.port, ClientFactory.forProtocol(lambda: client))
        await sleep(1)  # the socket buffers are full; the sender waits
        self.assertEqual(self.site_resource.outcomes, [])
        client.transport.abortConnection()
        await client.closed
        for _ in range(100):
            if self.site_resource.outcomes:
                break
            await sleep(0.05)
        self.assertEqual(len(self.site_resource.outcomes), 1)
        self.assertIsInstance(self.site_resource.outcomes[0], ConnectionError)

    async def test_a_socket_that_refuses_sendfile_is_copied_to(self):
        def refuse(*args):
            self.calls["sendfile"] += 1
            raise OSError(errno.EINVAL, "Invalid argument")

        self.patch(producers.os, "sendfile", refuse)
        self.assertEqual(await self.get(), self.data)
        self.assertEqual(self.calls["sendfile"], 1)  # tried once, then copied


class PlainSocketTests(unittest.TestCase):
    def test_only_plain_tcp_requests(self):
        class Request:
            def __init__(self, secure, transport):
                self.secure = secure
                self.channel = type("Channel", (), {"transport": transport})()

            def isSecure(self):  # noqa: N802
                return self.secure

        class Transport:
            def getHandle(self):  # noqa: N802
                import socket

                return socket.socket()

        plain = Request(False, Transport())
        sock = producers._plain_socket(plain)
        self.assertIsNotNone(sock)
        sock.close()
        self.assertIsNone(producers._plain_socket(Request(True, Transport())))  # TLS: bytes must be encrypted
        self.assertIsNone(producers._plain_socket(Request(False, object())))  # no socket under it
        self.assertIsNone(producers._plain_socket(object()))  # not a request
