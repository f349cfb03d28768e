"""Crash safety of the real server: ``kill -9`` right after uploads, then restart."""

from __future__ import annotations

import io
import json
import os
import signal

from PIL import Image
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.trial import unittest
from twisted.web.client import Agent, HTTPConnectionPool

from tests.serverprocess import ServerProcess, admin


def photo(seed: int) -> bytes:
    out = io.BytesIO()
    img = Image.linear_gradient("L").resize((2400, 1800)).convert("RGB")
    img.putpixel((seed, seed), (255, 0, 0))  # every file different
    img.save(out, "JPEG", quality=90)
    return out.getvalue()


class KillNineTests(unittest.TestCase):
    timeout = 300

    async def test_kill_9_after_uploads(self):
        """kill -9 right after 10 uploads, restart: every original is served identical and every
        derived file appears."""
        data = os.path.abspath(self.mktemp())
        admin(data, "user", "add", "kitten", stdin="a long password\n")
        token = admin(data, "token", "create", "kitten").strip()
        http = HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))
        server = await ServerProcess(data, "--resize-threads", "1").start()
        self.addCleanup(server.stop)
        uploaded = []
        for i in range(10):
            body = photo(i)
            response = await http.post(server.url + "/api/v1/img_upload.php", data={"token": token},
                                       files={"file": (f"{i}.jpg", "image/jpeg", body)})
            record = json.loads(await response.content())
            self.assertEqual(response.code, 200, record)
            uploaded.append((record, body))
        server.stop(signal.SIGKILL)

        server = await ServerProcess(data).start()
        self.addCleanup(server.stop)
        for record, body in uploaded:
            path = record["urls"]["original"].split("/img/", 1)[1]
            response = await http.get(f"{server.url}/img/{path}")
            self.assertEqual((response.code, await response.content()), (200, body))
            for variant in ("xga", "vga", "qvga"):
                path = record["urls"][variant].split("/img/", 1)[1]
                for _attempt in range(6):  # each GET waits up to 10 s server-side
                    response = await http.get(f"{server.url}/img/{path}")
                    content = await response.content()
                    if response.code != 503:
                        break
                self.assertEqual(response.code, 200, (variant, content[:200]))
                self.assertEqual(Image.open(io.BytesIO(content)).format, "JPEG")
