"""The real ``twistd imgshare`` on a loopback port, driven over sockets as a user would."""

from __future__ import annotations

import html
import io
import json
import os
import re
import select
import socket
import struct
import time
import zlib

from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.threads import deferToThread
from twisted.trial import unittest
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers

from imgshare.testing import image_bytes
from tests import backends
from tests.serverprocess import ServerProcess, admin

MiB = 1024 * 1024


def raw_exchange(port: int, request: bytes, body_chunks=(), read_timeout: float = 10.0) -> tuple[bytes, bool]:
    """Send a raw request and body chunks while reading; return (response bytes, closed by server).

    Sending stops as soon as the server answers, closes or resets.
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=read_timeout)
    response = b""
    closed = False
    try:
        sock.sendall(request)
        sock.setblocking(False)
        pending = [memoryview(c) for c in body_chunks]
        deadline = time.monotonic() + read_timeout
        while not closed and time.monotonic() < deadline:
            want_write = [sock] if pending and not response else []
            readable, writable, _ = select.select([sock], want_write, [], 0.5)
            if readable:
                try:
                    data = sock.recv(65536)
                except OSError:
                    closed = True
                    break
                if not data:
                    closed = True
                    break
                response += data
                deadline = time.monotonic() + read_timeout
            if writable:
                try:
                    sent = sock.send(pending[0])
                except BlockingIOError:
                    continue
                except OSError:
                    pending = []
                    continue
                pending[0] = pending[0][sent:]
                if not len(pending[0]):
                    pending.pop(0)
    finally:
        sock.close()
    return response, closed


class NewcomerFlow:
    """The newcomer flow over sockets; each backend pair's test class runs it.

    Expects ``self.server``, ``self.data``, ``self.http`` and ``self.admin_env``
    (the backend settings the admin command needs)."""

    admin_env: dict[str, str] = {}

    async def newcomer_flow(self) -> dict:
        """Setup link, account and token from the admin command, upload, read back, delete."""
        self.assertRegex(self.server.log(), r"https://img\.example/setup\?code=[A-Za-z0-9_-]{20,}")
        admin(self.data, "user", "add", "kitten", stdin="a long password\n", **self.admin_env)
        token = admin(self.data, "token", "create", "kitten", **self.admin_env).strip()
        photo = image_bytes("JPEG", (1200, 900), quality=92)
        response = await self.http.post(
            self.server.url + "/api/v1/img_upload.php",
            data={"token": token, "keep_name": "1"}, files={"file": ("photo.jpg", "image/jpeg", photo)},
        )
        record = json.loads(await response.content())
        self.assertEqual(response.code, 200, record)
        self.assertRegex(record["file"], r"^\d{8}_photo\.jpg$")
        self.assertEqual((record["width"], record["height"], record["size"]), (1200, 900, len(photo)))
        self.assertTrue(record["urls"]["original"].startswith("https://img.example/img/kitten/"))
        path = record["urls"]["original"].removeprefix("https://img.example")
        response = await self.http.get(self.server.url + path)
        self.assertEqual(response.code, 200)
        self.assertEqual(await response.content(), photo)

        head, _ = raw_exchange(self.server.port, f"HEAD {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        self.assertIn(f"Content-Length: {len(photo)}\r\n".encode(), head)
        self.assertTrue(head.endswith(b"\r\n\r\n"), "HEAD has no body")

        response = await self.http.post(self.server.url + "/api/v1/img_delete.php",
                                   data={"token": token, "file": record["urls"]["xga"]})
        self.assertEqual(response.code, 200)
        response = await self.http.get(self.server.url + path)
        self.assertEqual(response.code, 404)
        self.assertIn('"POST /api/v1/img_upload.php HTTP/1.1" 200', self.server.log())
        return record


class EndToEndTests(NewcomerFlow, unittest.TestCase):
    """One server for the class: start-up costs a second or two."""

    timeout = 240

    async def setUp(self):
        self.data = os.path.abspath(self.mktemp())
        self.server = await ServerProcess(self.data, "--public-url", "https://img.example").start()
        self.addCleanup(self.server.stop)
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.http = HTTPClient(Agent(reactor, pool=pool))

    async def test_newcomer_flow(self):
        """First start logs the setup link; the admin command makes an account and a token;
        an upload over a socket answers the SPEC record and the original comes back identical."""
        await self.newcomer_flow()

    async def test_oversize_body_with_length(self):
        """A 33 MiB Content-Length is refused with 413 before the body is read, with no
        '100 Continue', and the connection is closed rather than left hanging."""
        headers = ("POST /api/v1/img_upload.php HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
                   f"boundary=b\r\nContent-Length: {33 * MiB}\r\nExpect: 100-continue\r\n\r\n").encode()
        started = time.monotonic()
        response, closed = raw_exchange(self.server.port, headers)
        self.assertTrue(response.startswith(b"HTTP/1.1 413 "), response[:200])
        self.assertNotIn(b"100 Continue", response)
        self.assertIn(b'"status": "error"', response)
        self.assertTrue(closed)
        self.assertLess(time.monotonic() - started, 9, "closed by the server, not by our read timeout")

    async def test_oversize_body_streamed(self):
        """A 33 MiB body actually being sent (no Expect) gets 413 and the connection closes."""
        headers = ("POST /api/v1/img_upload.php HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
                   f"boundary=b\r\nContent-Length: {33 * MiB}\r\n\r\n").encode()
        response, closed = raw_exchange(self.server.port, headers, [b"x" * MiB] * 33)
        self.assertTrue(response.startswith(b"HTTP/1.1 413 "), response[:200])
        self.assertTrue(closed)

    async def test_oversize_chunked_body(self):
        """A chunked body without a length is cut off with 413 once it passes the limit."""
        headers = (b"POST /api/v1/img_upload.php HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
                   b"boundary=b\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n%s\r\n" % (MiB, b"y" * MiB)
        response, closed = raw_exchange(self.server.port, headers, [chunk] * 34)
        self.assertTrue(response.startswith(b"HTTP/1.1 413 "), response[:200])
        self.assertTrue(closed)

    async def test_bomb_and_garbage_over_socket(self):
        """Over a real socket: a PNG header claiming 20000x20000 is 413, garbage is 415, a path
        traversal is 404, and the server keeps serving."""
        admin(self.data, "user", "add", "kitten", stdin="a long password\n")
        token = admin(self.data, "token", "create", "kitten").strip()
        chunk = b"IHDR" + struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
        bomb = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))
        for data, status in [(bomb, 413), (os.urandom(5000), 415)]:
            response = await self.http.post(self.server.url + "/api/v1/img_upload.php", data={"token": token},
                                       files={"file": ("x.png", "image/png", data)})
            self.assertEqual(response.code, status)
            await response.content()
        response, _ = raw_exchange(
            self.server.port, b"GET /img/kitten/../../imgshare.sqlite3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        self.assertTrue(response.startswith(b"HTTP/1.1 404 "), response[:100])
        response = await self.http.get(self.server.url + "/api/v1/limits")
        self.assertEqual(response.code, 200)
        await response.content()


# ------------------------------------------------- PostgreSQL + S3 (moto_server)


def query_rows(dsn: str, sql: str) -> list[tuple]:
    """The rows of one query on ``dsn`` (in a thread: psycopg2 blocks)."""
    import psycopg2

    connection = psycopg2.connect(dsn)
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql)
            return cursor.fetchall()
    finally:
        connection.close()


async def production_backends(testcase) -> tuple[str, str]:
    """A fresh PostgreSQL database and S3 bucket for ``testcase``: (db URL, storage URL)."""
    dsn = await backends.create_database(testcase)
    endpoint, bucket = await backends.create_bucket(testcase)
    return dsn, backends.storage_url(endpoint, bucket)


def original_photo(seed: int) -> bytes:
    """A photo-sized JPEG, different for every seed."""
    from PIL import Image

    img = Image.linear_gradient("L").resize((2000, 1500)).convert("RGB")
    img.putpixel((seed, seed), (255, 0, 0))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=90)
    return out.getvalue()


class ProductionEndToEndTests(NewcomerFlow, unittest.TestCase):
    """The newcomer flow on PostgreSQL and S3: the server's --db and --storage options,
    credentials from the AWS environment variables."""

    timeout = 240

    async def setUp(self):
        self.data = os.path.abspath(self.mktemp())
        dsn, storage = await production_backends(self)
        self.admin_env = {"IMGSHARE_DB": dsn, "IMGSHARE_STORAGE": storage}
        self.server = await ServerProcess(
            self.data, "--public-url", "https://img.example", "--db", dsn, "--storage", storage).start()
        self.addCleanup(self.server.stop)
        self.http = HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))

    async def test_newcomer_flow(self):
        """The same newcomer flow as on the embedded backends, with PostgreSQL and an S3 bucket;
        the log shows both backends ready and no SQLite file or local storage is created."""
        await self.newcomer_flow()
        log = self.server.log()
        self.assertIn("PostgreSQL ready", log)
        self.assertIn("S3 storage ready", log)
        self.assertFalse(os.path.exists(os.path.join(self.data, "imgshare.sqlite3")))
        self.assertFalse(os.path.exists(os.path.join(self.data, "storage")))


class TwoProcessTests(unittest.TestCase):
    """Two ``twistd imgshare`` processes on one PostgreSQL database and one bucket."""

    timeout = 300

    async def test_two_processes_one_database_one_bucket(self):
        """An upload through one process is served by the other; every derived-file job runs
        exactly once across both; a delete through one is 404 on both at once."""
        dsn, storage = await production_backends(self)
        env = {"IMGSHARE_DB": dsn, "IMGSHARE_STORAGE": storage}
        first_data, second_data = (os.path.abspath(self.mktemp()) for _ in range(2))
        admin(first_data, "user", "add", "kitten", stdin="a long password\n", **env)
        token = admin(first_data, "token", "create", "kitten", **env).strip()
        servers = [ServerProcess(d, "--db", dsn, "--storage", storage, "--resize-threads", "2")
                   for d in (first_data, second_data)]
        for server in servers:
            self.addCleanup(server.stop)
        await gatherResults([Deferred.fromCoroutine(s.start()) for s in servers])
        http = HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))

        uploaded = []
        for i in range(8):
            body = original_photo(i)
            through = servers[i % 2]
            response = await http.post(through.url + "/api/v1/img_upload.php", data={"token": token},
                                       files={"file": (f"{i}.jpg", "image/jpeg", body)})
            record = json.loads(await response.content())
            self.assertEqual(response.code, 200, record)
            uploaded.append((record, body, servers[(i + 1) % 2]))
        for record, body, other in uploaded:
            response = await http.get(f"{other.url}/img/kitten/{record['file']}")
            self.assertEqual((response.code, await response.content()), (200, body))
            for _attempt in range(6):  # each GET waits up to 10 s for the derived file
                response = await http.get(f"{other.url}/img/kitten/xga/{record['file']}")
                content = await response.content()
                if response.code != 503:
                    break
            self.assertEqual(response.code, 200, content[:200])
            self.assertTrue(content.startswith(b"\xff\xd8"))

        logs = servers[0].log() + servers[1].log()
        for record, _, _ in uploaded:
            self.assertEqual(logs.count(f"derived kitten/{record['file']} "), 1, record["file"])
        self.assertTrue(all("derived kitten/" in s.log() for s in servers), "both processes worked")

        record = uploaded[0][0]
        response = await http.post(servers[1].url + "/api/v1/img_delete.php",
                                   data={"token": token, "file": record["file"]})
        self.assertEqual(response.code, 200)
        for server in servers:
            for path in (record["file"], f"xga/{record['file']}"):
                response = await http.get(f"{server.url}/img/kitten/{path}")
                await response.content()
                self.assertEqual(response.code, 404, (server.url, path))

    async def test_limits_hold_across_two_processes(self):
        """With --rate-limit-token 3/60 three requests spread over two processes pass and the
        fourth is 429 on either; ten failed logins spread over both trip the login throttle on
        both; a gather failure is kept in the database, by digest only."""
        dsn, storage = await production_backends(self)
        env = {"IMGSHARE_DB": dsn, "IMGSHARE_STORAGE": storage}
        first_data, second_data = (os.path.abspath(self.mktemp()) for _ in range(2))
        admin(first_data, "user", "add", "kitten", stdin="a long password\n", **env)
        token = admin(first_data, "token", "create", "kitten", **env).strip()
        other_token = admin(first_data, "token", "create", "kitten", **env).strip()
        servers = [ServerProcess(d, "--db", dsn, "--storage", storage, "--rate-limit-token", "3/60")
                   for d in (first_data, second_data)]
        for server in servers:
            self.addCleanup(server.stop)
        await gatherResults([Deferred.fromCoroutine(s.start()) for s in servers])
        http = HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))

        async def delete(server):
            response = await http.post(server.url + "/api/v1/img_delete.php",
                                       data={"token": token, "file": "20260214_none.jpg"})
            return response.code, json.loads(await response.content())

        answers = [await delete(servers[i % 2]) for i in range(3)]
        self.assertEqual([code for code, _ in answers], [404, 404, 404], answers)
        for server in servers:
            code, body = await delete(server)
            self.assertEqual(code, 429, body)

        # The login form's pre-login CSRF cookie is signed with the servers' shared secret.
        response = await http.get(servers[0].url + "/login")
        page = (await response.content()).decode()
        cookie = next(c.split(";", 1)[0] for c in response.headers.getRawHeaders("set-cookie")
                      if c.startswith("imgshare_pre="))
        csrf = html.unescape(re.search(r'name="csrf" value="([^"]+)"', page).group(1))

        async def login(server, password):
            response = await http.post(server.url + "/login",
                                       data={"csrf": csrf, "name": "kitten", "password": password},
                                       headers=Headers({"Cookie": [cookie]}))
            await response.content()
            return response.code, response.headers.getRawHeaders("retry-after")

        for i in range(10):  # the failures allowed per account and address, spread over both
            self.assertEqual(await login(servers[i % 2], "wrong password"), (400, None))
        for server in servers:
            code, retry_after = await login(server, "a long password")
            self.assertEqual(code, 429, "the right password waits too: no guess is checked")
            self.assertTrue(retry_after and int(retry_after[0]) > 0, retry_after)

        url = "http://127.0.0.1:9/secret-token-in-the-url/x.png"
        for server in servers:
            response = await http.post(server.url + "/api/v1/img_gather.php",
                                       data={"token": other_token, "url": url})
            self.assertEqual(response.code, 403, await response.content())
        rows = await deferToThread(query_rows, dsn, "SELECT digest, status, message FROM gather_errors")
        self.assertEqual(len(rows), 1, rows)
        self.assertEqual(rows[0][1], 403)
        self.assertNotIn("secret-token-in-the-url", repr(rows))
        keys = [key for (key,) in await deferToThread(query_rows, dsn, "SELECT key FROM rate_buckets")]
        self.assertIn("api:127.0.0.1", keys)
        self.assertTrue([key for key in keys if key.startswith("api:token:")], keys)
        self.assertTrue([key for key in keys if key.startswith("login-pair:kitten/")], keys)
        self.assertFalse([key for key in keys if token in key or other_token in key], "no secret in a key")

class FreshOpenServerTests(unittest.TestCase):
    """A fresh real server started with ``--registration open``: nobody registers before the
    setup link has made the first account (an admin)."""

    timeout = 120

    async def setUp(self):
        self.data = os.path.abspath(self.mktemp())
        self.server = await ServerProcess(self.data, "--registration", "open").start()
        self.addCleanup(self.server.stop)

    async def test_stranger_cannot_take_a_fresh_open_server(self):
        await deferToThread(self._stranger_then_owner)

    def _stranger_then_owner(self) -> None:
        import requests

        url = self.server.url
        m = re.search(r"/setup\?code=([A-Za-z0-9_-]+)", self.server.log())
        self.assertIsNotNone(m, "the server logs the one-time setup link")
        setup = f"/setup?code={m.group(1)}"

        stranger = requests.Session()
        login = stranger.get(url + "/login", timeout=10)
        self.assertNotIn('href="/register"', login.text)
        self.assertEqual(stranger.get(url + "/register", timeout=10).status_code, 403)
        fields = {"csrf": _csrf(login.text), "name": "mallory", "password": "a long password",
                  "repeat": "a long password"}
        refused = stranger.post(url + "/register", data=fields, allow_redirects=False, timeout=10)
        self.assertEqual(refused.status_code, 403, refused.text)
        self.assertIn("the first account comes from the setup link", refused.text)
        self.assertEqual(admin(self.data, "user", "list"), "", "no account was made")

        owner = requests.Session()
        form = owner.get(url + setup, timeout=10)
        self.assertEqual(form.status_code, 200)
        made = owner.post(url + "/setup", data={"csrf": _csrf(form.text), "code": m.group(1), "name": "boss",
                                                "password": "a long password", "repeat": "a long password"},
                          allow_redirects=False, timeout=10)
        self.assertEqual((made.status_code, made.headers.get("Location")), (303, "/images?done=welcome"))
        self.assertTrue(admin(self.data, "user", "list").startswith("boss\tadmin\t"))

        page = stranger.get(url + "/register", timeout=10)
        self.assertEqual(page.status_code, 200)
        fields["csrf"] = _csrf(page.text)
        joined = stranger.post(url + "/register", data=fields, allow_redirects=False, timeout=10)
        self.assertEqual(joined.status_code, 303, joined.text)
        self.assertIn("mallory\tuser\t", admin(self.data, "user", "list"))
        self.assertNotIn("a long password", self.server.log())


def _csrf(page: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', page)
    assert m, "the page has a form"
    return html.unescape(m.group(1))

