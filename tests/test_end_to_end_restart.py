"""Crash safety of the real server: ``kill -9`` right after uploads, then restart."""

from __future__ import annotations

import io
import json
import os
import signal

from PIL import Image
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial import unittest
from twisted.web.client import Agent, HTTPConnectionPool

from tests.serverprocess import ServerProcess, admin


def photo(seed: int) -> bytes:
    out = io.BytesIO()
    img = Image.linear_gradient("L").resize((2400, 1800)).convert("RGB")
    img.putpixel((seed, seed), (255, 0, 0))  # every file different
    img.save(out, "JPEG", quality=90)
    return out.getvalue()


def http_client() -> HTTPClient:
    return HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))


async def server_with_uploads(testcase: unittest.TestCase, count: int, *args: str):
    """A data folder with account kitten and its token, a server on it, and ``count``
    photos uploaded through img_upload.php: (data folder, token, server, [(record, bytes)])."""
    data = os.path.abspath(testcase.mktemp())
    admin(data, "user", "add", "kitten", stdin="a long password\n")
    token = admin(data, "token", "create", "kitten").strip()
    server = await ServerProcess(data, *args).start()
    testcase.addCleanup(server.stop)
    http = http_client()
    uploaded = []
    for i in range(count):
        body = photo(i)
        response = await http.post(server.url + "/api/v1/img_upload.php", data={"token": token},
                                   files={"file": (f"{i}.jpg", "image/jpeg", body)})
        record = json.loads(await response.content())
        testcase.assertEqual(response.code, 200, record)
        uploaded.append((record, body))
    return data, token, server, uploaded


async def assert_all_served(testcase: unittest.TestCase, server: ServerProcess, uploaded: list) -> None:
    """Every original identical, and every resized copy a JPEG (made now if it was not yet)."""
    http = http_client()
    for record, body in uploaded:
        path = record["urls"]["original"].split("/img/", 1)[1]
        response = await http.get(f"{server.url}/img/{path}")
        testcase.assertEqual((response.code, await response.content()), (200, body))
        for variant in ("xga", "vga", "qvga"):
            path = record["urls"][variant].split("/img/", 1)[1]
            for _attempt in range(6):  # each GET waits up to 10 s server-side
                response = await http.get(f"{server.url}/img/{path}")
                content = await response.content()
                if response.code != 503:
                    break
            testcase.assertEqual(response.code, 200, (variant, content[:200]))
            testcase.assertEqual(Image.open(io.BytesIO(content)).format, "JPEG")


class KillNineTests(unittest.TestCase):
    timeout = 300

    async def test_kill_9_after_uploads(self):
        """kill -9 right after 10 uploads, restart: every original is served identical and every
        derived file appears."""
        data, _, server, uploaded = await server_with_uploads(self, 10, "--resize-threads", "1")
        server.stop(signal.SIGKILL)

        server = await ServerProcess(data).start()
        self.addCleanup(server.stop)
        await assert_all_served(self, server, uploaded)


def noisy_photo(seed: int) -> bytes:
    """A photo of noise, a few MB: each one takes the server a while to store."""
    out = io.BytesIO()
    Image.frombytes("RGB", (1600, 1200), os.urandom(1600 * 1200 * 3)).save(out, "JPEG", quality=95)
    return out.getvalue()


class KillNineBatchTests(unittest.TestCase):
    timeout = 300

    async def test_kill_9_halfway_through_a_batch(self):
        """kill -9 while POST /api/v1/upload stores a batch of 10: after a restart every file is
        either served whole (and identical) or absent, and no stored object without its
        record is served."""
        import hashlib
        import sqlite3

        from tests.test_jsonapi import files_body

        data = os.path.abspath(self.mktemp())
        admin(data, "user", "add", "kitten", stdin="a long password\n")
        token = admin(data, "token", "create", "kitten").strip()
        http = http_client()
        photos = [noisy_photo(i) for i in range(10)]
        digests = {hashlib.sha256(p).hexdigest(): p for p in photos}
        body, headers = files_body([("file", f"{i}.jpg", p) for i, p in enumerate(photos)])
        headers[b"Authorization"] = [f"Bearer {token}".encode()]
        for _attempt in range(5):  # until the kill lands inside the batch
            server = await ServerProcess(data, "--resize-threads", "1").start()
            self.addCleanup(server.stop)
            before = server.log().count("stored kitten/")
            answer = http.post(server.url + "/api/v1/upload", data=body, headers=headers)
            answer.addErrback(lambda f: None)  # the connection dies with the server
            while server.log().count("stored kitten/") < before + 3:
                await deferLater(reactor, 0.005, lambda: None)
            server.stop(signal.SIGKILL)
            stored = server.log().count("stored kitten/") - before
            if stored < len(photos):
                break
        self.assertLess(stored, len(photos), "the kill never landed inside the batch")

        server = await ServerProcess(data).start()
        self.addCleanup(server.stop)
        database = sqlite3.connect(f"file:{data}/imgshare.sqlite3?mode=ro", uri=True)
        self.addCleanup(database.close)
        rows = database.execute("SELECT name, state, sha256 FROM images WHERE account = 'kitten'").fetchall()
        live = {name: sha for name, state, sha in rows if state == "live"}
        self.assertGreaterEqual(len(live), 3)
        for name, sha in live.items():
            self.assertIn(sha, digests)
            response = await http.get(f"{server.url}/img/kitten/{name}")
            self.assertEqual((response.code, await response.content()), (200, digests[sha]), name)
        # An object whose record is not live (the upload under way when the server died) is never served.
        for name in os.listdir(os.path.join(data, "storage", "kitten")):
            if os.path.isfile(os.path.join(data, "storage", "kitten", name)) and name not in live:
                response = await http.get(f"{server.url}/img/kitten/{name}")
                await response.content()
                self.assertEqual(response.code, 404, name)


class BackupRestoreTests(unittest.TestCase):
    timeout = 300

    async def test_online_backup_restored_into_a_fresh_data_folder(self):
        """docs/deploy.md's backup of the embedded backends, taken while the server runs
        (SQLite's online backup, then the storage folder), restored into a new data folder:
        the restored server serves every image and its resized copies, and the tokens work."""
        import shutil
        import sqlite3

        data, token, server, uploaded = await server_with_uploads(self, 3)
        backup = os.path.abspath(self.mktemp())
        os.makedirs(backup)
        # 1. the database, online (what `sqlite3 imgshare.sqlite3 ".backup backup.sqlite3"` does)
        source = sqlite3.connect(os.path.join(data, "imgshare.sqlite3"))
        target = sqlite3.connect(os.path.join(backup, "imgshare.sqlite3"))
        source.backup(target)
        source.close()
        target.close()
        # 2. then the files (any object newer than the database copy has no row: never served)
        shutil.copytree(os.path.join(data, "storage"), os.path.join(backup, "storage"))
        server.stop()

        restored = await ServerProcess(backup).start()
        self.addCleanup(restored.stop)
        await assert_all_served(self, restored, uploaded)
        http = http_client()
        response = await http.post(restored.url + "/api/v1/img_upload.php", data={"token": token},
                                   files={"file": ("after.jpg", "image/jpeg", photo(9))})
        self.assertEqual(response.code, 200, await response.content())
