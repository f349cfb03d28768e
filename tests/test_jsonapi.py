"""The Bearer / X-API-Key JSON API (PEERS section 2) through the in-memory client:
uploads of one file, batches and JSON bodies, and discovery."""

from __future__ import annotations

import json

from twisted.trial import unittest

from imgshare.testing import image_bytes, make_fixture, multipart

B = "http://img.example"
PUBLIC = "https://img.example"
UPLOAD = B + "/api/v1/upload"


class JsonApiTestCase(unittest.TestCase):
    """A fixture with account kitten and a token; helpers for this family's answers."""

    async def setUp(self):
        self.f = await make_fixture(self)
        await self.f.account("kitten")
        self.token = await self.f.token("kitten")
        self.client = self.f.client()

    def bearer(self, token: str | None = None) -> dict:
        return {b"Authorization": [f"Bearer {token or self.token}".encode()]}

    async def call(self, method: str, url: str, body: bytes = b"", headers: dict | None = None, **kwargs):
        """(response, parsed JSON body) of one request."""
        response, out = await self.client.request(method, url, data=body or None, headers=headers or {}, **kwargs)
        if method == "HEAD":
            return response, out
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/json"], out)
        self.assertEqual(response.headers.getRawHeaders("cache-control"), ["no-store"])
        return response, json.loads(out)

    def error(self, response, answer, status: int) -> str:
        """Check a family error answer; return its message."""
        self.assertEqual(response.code, status, answer)
        self.assertEqual(answer["success"], False)
        self.assertEqual(answer["status"], "error")
        self.assertIsInstance(answer["error"], str)
        return answer["error"]

    async def upload_one(self, data: bytes | None = None, filename: str = "shot.jpg", **fields: str) -> dict:
        """Upload one file with Bearer; the answer's image object."""
        body, headers = multipart(fields, {"file": (filename, data or image_bytes("JPEG", (400, 300)))})
        response, answer = await self.call("POST", UPLOAD, body, {**headers, **self.bearer()})
        self.assertEqual(response.code, 200, answer)
        return answer


class DiscoveryTests(JsonApiTestCase):
    async def test_discovery_needs_no_auth(self):
        response, answer = await self.call("GET", UPLOAD)
        self.assertEqual(response.code, 200)
        self.assertEqual(answer["success"], True)
        self.assertEqual(answer["max_files_per_request"], 10)
        self.assertEqual(answer["max_size"], self.f.config.max_size)
        self.assertIn("upload", answer["routes"])

    async def test_head_discovery(self):
        response, out = await self.call("HEAD", UPLOAD)
        self.assertEqual(response.code, 200)
        self.assertEqual(out, b"")
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/json"])

    async def test_unknown_path_is_json_404(self):
        response, answer = await self.call("GET", B + "/api/v1/upload/nothing-here")
        self.error(response, answer, 404)

    async def test_native_api_still_answers(self):
        response, answer = await self.call("GET", B + "/api/v1/limits")
        self.assertEqual(response.code, 200)
        self.assertEqual(answer["status"], "ok")
