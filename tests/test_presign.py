"""Presigned uploads (PEERS section 2): presign -> PUT -> complete, through the in-memory
client; the grant and its staged bytes shared by two "processes" (two sets of
components over one database and one storage) on SQLite + memory storage and on
PostgreSQL + S3; and two real twistd processes on PostgreSQL + S3."""

from __future__ import annotations

import hashlib
import json
import os

from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.trial import unittest
from twisted.web.client import Agent, HTTPConnectionPool

from imgshare import db, presign
from imgshare.domain import naming
from imgshare.domain import presign as rules
from imgshare.domain.records import GRANT_OPEN, GRANT_STAGED
from imgshare.expiry import expire_once
from imgshare.testing import Fixture, MemoryNetwork, MemoryStorage, image_bytes, test_config
from imgshare.web.redact import redact_uri
from tests import backends
from tests.serverprocess import ServerProcess, admin
from tests.test_connections import _Transport
from tests.test_jsonapi import B, JsonApiTestCase

PRESIGN = B + "/api/v1/upload/presign"
COMPLETE = B + "/api/v1/upload/complete"
JSON = {b"Content-Type": [b"application/json"]}


def local(url: str) -> str:
    """A URL the server handed out (on the public URL), as the test client reaches it."""
    return B + url.split("://", 1)[1].partition("/")[1] + url.split("://", 1)[1].partition("/")[2]


def staged_keys(storage) -> list[str]:
    return sorted(k for k in storage.objects if k.startswith(rules.STAGING_PREFIX + "/"))


class PresignFlow:
    """Helpers over ``self.call``/``self.bearer`` (JsonApiTestCase)."""

    async def presign(self, size: int, filename: str = "shot.jpg", headers: dict | None = None, **fields):
        body = json.dumps({"filename": filename, "contentType": "image/jpeg", "sizeBytes": size, **fields})
        return await self.call("POST", PRESIGN, body.encode(), {**JSON, **(headers or self.bearer())})

    async def granted(self, data: bytes, **fields) -> dict:
        response, answer = await self.presign(len(data), **fields)
        self.assertEqual(response.code, 200, answer)
        return answer

    async def put(self, answer: dict, data: bytes, client=None):
        client = client or self.client
        response, out = await client.request("PUT", local(answer["put_url"]), data=data or None)
        return response, json.loads(out)

    async def complete(self, token: str, headers: dict | None = None, field: str = "completion_token"):
        body = json.dumps({field: token}).encode()
        return await self.call("POST", COMPLETE, body, {**JSON, **(headers or self.bearer())})


class PresignTests(PresignFlow, JsonApiTestCase):
    async def test_presign_put_complete(self):
        """The whole flow: nothing is an image before complete; then the answer of a
        one-file upload, the file served at /img/, and the staged bytes and grant gone."""
        photo = image_bytes("JPEG", (400, 300))
        answer = await self.granted(photo, keep_name="1")
        self.assertEqual((answer["success"], answer["status"]), (True, "ok"))
        self.assertTrue(answer["put_url"].startswith("https://img.example/api/v1/upload/put/"))
        self.assertEqual(answer["expires"], "2026-02-14T09:45:00Z")
        self.assertTrue(rules.looks_like_completion_token(answer["completion_token"]))

        response, put = await self.put(answer, photo)
        self.assertEqual(response.code, 200, put)
        self.assertEqual((put["size"], put["sha256"]), (len(photo), hashlib.sha256(photo).hexdigest()))
        self.assertEqual(len(staged_keys(self.f.storage)), 1)
        self.assertEqual(await self.f.database.run(db.list_images, "kitten", self.f.clock.seconds(), 0, 10), [],
                         "nothing is recorded as an image before complete")

        response, done = await self.complete(answer["completion_token"])
        self.assertEqual(response.code, 200, done)
        self.assertEqual(done["success"], True)
        self.assertRegex(done["file"], r"^20260214_shot\.jpg$")
        self.assertEqual(done["images"][0]["url"], done["url"])
        self.assertEqual((done["width"], done["height"], done["size"]), (400, 300, len(photo)))
        self.assertEqual(done["original_name"], "shot.jpg")
        self.assertIn("delete_url", done)
        self.assertEqual(response.headers.getRawHeaders("imgshare-expires"), ["never"])
        response, served = await self.client.request("GET", local(done["url"]))
        self.assertEqual((response.code, served), (200, photo))
        self.assertEqual(staged_keys(self.f.storage), [])
        grant_id = answer["put_url"].rsplit("/", 1)[1].split(".")[0]
        self.assertIsNone(await self.f.database.run(db.get_grant, grant_id))

    async def test_complete_answers_as_a_one_file_upload(self):
        """The same keys, in the same order, as POST /api/v1/upload's answer for one file."""
        photo = image_bytes("JPEG", (400, 300))
        answer = await self.granted(photo)
        await self.put(answer, photo)
        _, done = await self.complete(answer["completion_token"])
        uploaded = await self.upload_one(photo)
        self.assertEqual(list(done), list(uploaded))
        self.assertEqual(list(done["images"][0]), list(uploaded["images"][0]))

    async def test_auth_by_x_api_key_and_key_field(self):
        """Auth as on every endpoint of the family: X-API-Key, or ``key`` in the JSON body."""
        response, answer = await self.presign(10, headers={b"X-API-Key": [self.token.encode()]})
        self.assertEqual(response.code, 200, answer)
        body = json.dumps({"filename": "a.png", "sizeBytes": 10, "key": self.token}).encode()
        response, answer = await self.call("POST", PRESIGN, body, JSON)
        self.assertEqual(response.code, 200, answer)
        response, answer = await self.call("POST", PRESIGN, body.replace(b'"key"', b'"token"'), JSON)
        self.assertEqual(response.code, 200, answer)
        response, answer = await self.call("POST", PRESIGN, b'{"filename": "a.png", "sizeBytes": 10}', JSON)
        self.error(response, answer, 401)

    async def test_put_over_declared_size_is_413_while_it_arrives(self):
        """A body longer than sizeBytes is refused with 413 from its Content-Length, and a
        chunked one as soon as it passes: nothing is stored, the grant stays open."""
        photo = image_bytes("PNG", (64, 48))
        answer = await self.granted(photo[:-1])
        path = local(answer["put_url"]).removeprefix(B).encode()
        for head, body in [
            (b"Content-Length: %d\r\n" % len(photo), photo[:100]),
            (b"Transfer-Encoding: chunked\r\n", b"%x\r\n%s\r\n" % (len(photo), photo)),
        ]:
            channel = self.f.components.site.buildProtocol(None)
            transport = _Transport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
            channel.makeConnection(transport)
            self.addCleanup(lambda c=channel, t=transport: t.disconnected or c.connectionLost(Failure(ConnectionDone())))
            channel.dataReceived(b"PUT " + path + b" HTTP/1.1\r\nHost: img.example\r\n" + head + b"\r\n" + body)
            self.assertTrue(transport.value().startswith(b"HTTP/1.1 413 "), transport.value()[:200])
            self.assertIn(b"the limit is %d bytes" % (len(photo) - 1), transport.value())
        self.assertEqual(staged_keys(self.f.storage), [])
        spool = self.f.config.spool_dir
        self.assertEqual([f for f in os.listdir(spool) if "staged" in f] if os.path.isdir(spool) else [], [])
        response, put = await self.put(answer, photo[:-1])
        self.assertEqual(response.code, 200, put)

    async def test_upload_options_kept_until_complete(self):
        """``expire`` and ``name`` given at presign apply to the completed image."""
        photo = image_bytes()
        answer = await self.granted(photo, expire="2h", name="holiday")
        await self.put(answer, photo)
        response, done = await self.complete(answer["completion_token"])
        self.assertEqual(done["file"], "20260214_holiday.jpg")
        self.assertEqual(done["expires"], "2026-02-14T11:30:00Z")
        self.assertEqual(response.headers.getRawHeaders("imgshare-expires"), ["2026-02-14T11:30:00Z"])

    async def test_put_shorter_than_declared_is_accepted(self):
        photo = image_bytes("JPEG", (40, 30))
        answer = await self.granted(photo + b"\0" * 100)
        response, put = await self.put(answer, photo)
        self.assertEqual((response.code, put["size"]), (200, len(photo)))
        response, done = await self.complete(answer["completion_token"])
        self.assertEqual((response.code, done["size"]), (200, len(photo)))

    async def test_max_size(self):
        """sizeBytes over --max-size is 413 at presign; a grant signed for more (made under
        a larger --max-size) still takes at most --max-size."""
        limit = self.f.config.max_size
        response, answer = await self.presign(limit + 1)
        self.assertIn(str(limit), self.error(response, answer, 413))
        response, answer = await self.presign(limit)
        self.assertEqual(response.code, 200, answer)
        uploads = self.f.components.presigned
        opaque = rules.sign_put(uploads._secret, "ab" * 16, limit * 2, int(self.f.clock.seconds()) + 60)
        self.assertEqual(uploads.body_limit(opaque), limit)
        self.assertEqual(self.f.components.site.max_body_for(b"/api/v1/upload/put/" + opaque.encode()), limit)

    async def test_completing_twice(self):
        """A grant makes one image: the second complete is 404 and records nothing."""
        photo = image_bytes()
        answer = await self.granted(photo)
        await self.put(answer, photo)
        response, done = await self.complete(answer["completion_token"])
        self.assertEqual(response.code, 200, done)
        response, again = await self.complete(answer["completion_token"], field="token")
        self.assertIn("invalid or expired", self.error(response, again, 404))
        images = await self.f.database.run(db.list_images, "kitten", self.f.clock.seconds(), 0, 10)
        self.assertEqual(len(images), 1)

    async def test_second_put_is_404(self):
        photo = image_bytes()
        answer = await self.granted(photo)
        self.assertEqual((await self.put(answer, photo))[0].code, 200)
        response, put = await self.put(answer, photo)
        self.error(response, put, 404)
        self.assertEqual(len(staged_keys(self.f.storage)), 1)

    async def test_expired_grant(self):
        """15 minutes after presign, neither PUT nor complete works (404)."""
        photo = image_bytes()
        first, second = await self.granted(photo), await self.granted(photo)
        await self.put(second, photo)
        self.f.clock.advance(rules.LIFETIME)
        response, put = await self.put(first, photo)
        self.error(response, put, 404)
        response, done = await self.complete(second["completion_token"])
        self.error(response, done, 404)
        self.assertEqual(await self.f.database.run(db.list_images, "kitten", self.f.clock.seconds(), 0, 10), [])

    async def test_forged_opaque(self):
        """A URL not signed by this server is 404, whatever it claims."""
        photo = image_bytes()
        answer = await self.granted(photo)
        gid, size, expires, mac = answer["put_url"].rsplit("/", 1)[1].split(".")
        for opaque in [f"{gid}.{size + '0'}.{expires}.{mac}", f"{gid}.{size}.{int(expires) + 3600}.{mac}",
                       f"{'0' * 32}.{size}.{expires}.{mac}", "nothing", f"{gid}.{size}.{expires}.{'A' * 43}"]:
            forged = {"put_url": "https://img.example/api/v1/upload/put/" + opaque}
            response, put = await self.put(forged, photo)
            self.assertIn("no such upload", self.error(response, put, 404))
        self.assertEqual(staged_keys(self.f.storage), [])
        grant = await self.f.database.run(db.get_grant, gid)
        self.assertEqual((grant.state, grant.put_attempts), (GRANT_OPEN, 0))

    async def test_put_without_body_or_with_wrong_method(self):
        answer = await self.granted(image_bytes())
        response, put = await self.put(answer, b"")
        self.assertIn("empty body", self.error(response, put, 400))
        response, out = await self.call("POST", local(answer["put_url"]), b"x")
        self.error(response, out, 405)
        self.assertEqual(response.headers.getRawHeaders("allow"), ["PUT"])

    async def test_another_accounts_complete(self):
        """403 for a token of another account, and the grant is still its owner's."""
        await self.f.account("mallory")
        other = await self.f.token("mallory")
        photo = image_bytes()
        answer = await self.granted(photo)
        await self.put(answer, photo)
        response, done = await self.complete(answer["completion_token"], headers=self.bearer(other))
        self.assertIn("another account", self.error(response, done, 403))
        self.assertEqual(await self.f.database.run(db.list_images, "mallory", self.f.clock.seconds(), 0, 10), [])
        response, done = await self.complete(answer["completion_token"])
        self.assertEqual((response.code, done["user"]), (200, "kitten"))

    async def test_complete_before_put_is_409(self):
        answer = await self.granted(image_bytes())
        response, done = await self.complete(answer["completion_token"])
        self.assertIn("PUT", self.error(response, done, 409))

    async def test_bad_bytes_spend_the_grant(self):
        """Bytes the library refuses (415 here) spend the grant and remove the staged object."""
        junk = os.urandom(5000)
        answer = await self.granted(junk)
        await self.put(answer, junk)
        response, done = await self.complete(answer["completion_token"])
        self.error(response, done, 415)
        self.assertEqual(staged_keys(self.f.storage), [])
        response, done = await self.complete(answer["completion_token"])
        self.error(response, done, 404)

    async def test_storage_outage_gives_the_grant_back(self):
        """A complete that fails on storage is 503 and may be retried."""
        photo = image_bytes()
        answer = await self.granted(photo)
        await self.put(answer, photo)
        self.f.storage.available = False
        response, done = await self.complete(answer["completion_token"])
        self.error(response, done, 503)
        self.f.storage.available = True
        response, done = await self.complete(answer["completion_token"])
        self.assertEqual(response.code, 200, done)

    async def test_put_during_storage_outage(self):
        photo = image_bytes()
        answer = await self.granted(photo)
        self.f.storage.available = False
        response, put = await self.put(answer, photo)
        self.error(response, put, 503)
        self.f.storage.available = True
        response, put = await self.put(answer, photo)
        self.assertEqual(response.code, 200, put)
        grant_id = answer["put_url"].rsplit("/", 1)[1].split(".")[0]
        self.assertEqual(staged_keys(self.f.storage), [rules.staging_key(grant_id, 2)])
        grant = await self.f.database.run(db.get_grant, grant_id)
        self.assertEqual((grant.state, grant.put_attempts, grant.staged_attempt), (GRANT_STAGED, 2, 2))

    async def test_bad_requests(self):
        """Each is a clear 4xx in the family's shape, and no grant is recorded."""
        cases = [
            (b"{", JSON, 400, "malformed"),
            (b"[1, 2]", JSON, 400, "object"),
            (b"", JSON, 400, "empty"),
            (b'{"sizeBytes": 10}', JSON, 400, "filename required"),
            (b'{"filename": "  ", "sizeBytes": 10}', JSON, 400, "filename required"),
            (b'{"filename": "a.jpg"}', JSON, 400, "sizeBytes required"),
            (b'{"filename": "a.jpg", "sizeBytes": "ten"}', JSON, 400, "positive integer"),
            (b'{"filename": "a.jpg", "sizeBytes": 0}', JSON, 400, "positive integer"),
            (b'{"filename": "a.jpg", "sizeBytes": 1.5}', JSON, 400, "positive integer"),
            (b'{"filename": "a.jpg", "sizeBytes": true}', JSON, 400, "positive integer"),
            (b'{"filename": "a.jpg", "sizeBytes": 10}', {b"Content-Type": [b"text/plain"]}, 415, "JSON"),
            (b"filename=a.jpg&sizeBytes=10", {b"Content-Type": [b"application/x-www-form-urlencoded"]}, 415, "JSON"),
        ]
        for body, headers, status, words in cases:
            response, answer = await self.call("POST", PRESIGN, body, {**headers, **self.bearer()})
            self.assertIn(words, self.error(response, answer, status), body)
        response, answer = await self.call("GET", PRESIGN)
        self.error(response, answer, 405)
        response, answer = await self.call("POST", COMPLETE, b"{}", {**JSON, **self.bearer()})
        self.assertIn("completion_token required", self.error(response, answer, 400))
        response, answer = await self.complete("not a token")
        self.error(response, answer, 404)
        response, answer = await self.complete(12345)
        self.assertIn("string", self.error(response, answer, 400))
        rows = await self.f.database.run(db.sweepable_grants, 1e12, 1e12, 100)
        self.assertEqual(rows, [])

    async def test_string_size_accepted(self):
        response, answer = await self.presign("1234")
        self.assertEqual(response.code, 200, answer)

    async def test_presign_batch(self):
        """Results in input order; a bad entry as {error, status}; a good one still works."""
        photo = image_bytes()
        files = [{"filename": "a.jpg", "sizeBytes": len(photo)}, {"sizeBytes": 5},
                 {"filename": "c.jpg", "sizeBytes": 10**12}, "nonsense"]
        body = json.dumps({"files": files, "keep_name": True}).encode()
        response, answer = await self.call("POST", PRESIGN + "/batch", body, {**JSON, **self.bearer()})
        self.assertEqual(response.code, 200, answer)
        first, *bad = answer["uploads"]
        self.assertEqual(bad, [{"error": "filename required", "status": 400},
                               {"error": f"file too large: the limit is {self.f.config.max_size} bytes", "status": 413},
                               {"error": "each file must be a JSON object", "status": 400}])
        await self.put(first, photo)
        response, done = await self.complete(first["completion_token"])
        self.assertRegex(done["file"], r"^20260214_a\.jpg$")

    async def test_presign_batch_limits(self):
        too_many = json.dumps({"files": [{"filename": "a.jpg", "sizeBytes": 5}] * 21}).encode()
        response, answer = await self.call("POST", PRESIGN + "/batch", too_many, {**JSON, **self.bearer()})
        self.assertIn("at most 20", self.error(response, answer, 400))
        for body in (b"{}", b'{"files": []}', b'{"files": "a.jpg"}'):
            response, answer = await self.call("POST", PRESIGN + "/batch", body, {**JSON, **self.bearer()})
            self.assertIn("files", self.error(response, answer, 400))
        all_bad = json.dumps({"files": [{"sizeBytes": 5}, {"filename": "b"}]}).encode()
        response, answer = await self.call("POST", PRESIGN + "/batch", all_bad, {**JSON, **self.bearer()})
        self.assertEqual(self.error(response, answer, 400), "filename required")
        self.assertEqual(len(answer["uploads"]), 2)

    async def test_complete_batch(self):
        """Up to 20 tokens (``completion_tokens`` or ``tokens``), each on its own, in order."""
        photos = [image_bytes(color=(i * 40, 0, 0)) for i in range(2)]
        grants = [await self.granted(p) for p in photos]
        for grant, photo in zip(grants, photos, strict=True):
            await self.put(grant, photo)
        body = json.dumps({"tokens": [grants[0]["completion_token"], "x" * 43, grants[1]["completion_token"]]})
        response, answer = await self.call("POST", COMPLETE + "/batch", body.encode(), {**JSON, **self.bearer()})
        self.assertEqual(response.code, 200, answer)
        self.assertEqual((answer["success"], answer["status"]), (True, "ok"))
        one, missing, two = answer["images"]
        self.assertEqual(missing, {"error": "invalid or expired upload token", "status": 404})
        self.assertEqual((one["sha256"], two["sha256"]), tuple(hashlib.sha256(p).hexdigest() for p in photos))
        body = json.dumps({"completion_tokens": [grants[0]["completion_token"]]}).encode()
        response, answer = await self.call("POST", COMPLETE + "/batch", body, {**JSON, **self.bearer()})
        self.error(response, answer, 404)
        body = json.dumps({"completion_tokens": ["x" * 43] * 21}).encode()
        response, answer = await self.call("POST", COMPLETE + "/batch", body, {**JSON, **self.bearer()})
        self.assertIn("at most 20", self.error(response, answer, 400))

    async def test_concurrent_completion_is_409(self):
        """While one completion holds a grant another gets 409; a holder that died is
        replaced once its lease ends, and a commit under the lost claim is refused."""
        photo = image_bytes()
        answer = await self.granted(photo)
        await self.put(answer, photo)
        digest = rules.completion_digest(answer["completion_token"])
        now = self.f.clock.seconds()
        outcome, grant = await self.f.database.run(db.claim_grant, digest, "kitten", "dead", now, now + 300)
        self.assertEqual(outcome, "claimed")
        response, done = await self.complete(answer["completion_token"])
        self.assertIn("being completed", self.error(response, done, 409))
        self.f.clock.advance(301)
        response, done = await self.complete(answer["completion_token"])
        self.assertEqual(response.code, 200, done)
        with self.assertRaises(db.NotHeld):
            await self.f.database.run(db.spend_grant, grant.id, "dead")

    async def test_sweep(self):
        """Expired grants go with their staged objects and spool copies; fresh ones stay."""
        photo = image_bytes()
        old = await self.granted(photo)
        await self.put(old, photo)
        await self.granted(photo)  # never PUT
        self.assertEqual(len(os.listdir(self.f.config.spool_dir)), 1)
        self.f.clock.advance(rules.LIFETIME + presign.SWEEP_GRACE)
        fresh = await self.granted(photo)
        await self.put(fresh, photo)
        uploads = self.f.components.presigned
        await expire_once(self.f.database, self.f.library, self.f.clock.seconds(), uploads)
        self.assertEqual(len(staged_keys(self.f.storage)), 1, "only the fresh grant's bytes stay")
        left = await self.f.database.run(db.sweepable_grants, 1e12, 1e12, 100)
        self.assertEqual([g.id for g in left], [fresh["put_url"].rsplit("/", 1)[1].split(".")[0]])
        self.assertEqual(len(os.listdir(self.f.config.spool_dir)), 1)
        response, done = await self.complete(fresh["completion_token"])
        self.assertEqual(response.code, 200, done)

    async def test_expiry_service_sweeps(self):
        photo = image_bytes()
        answer = await self.granted(photo)
        await self.put(answer, photo)
        self.f.clock.advance(rules.LIFETIME + presign.SWEEP_GRACE)
        self.f.components.expiry.startService()
        self.addCleanup(self.f.components.expiry.stopService)
        self.assertEqual(staged_keys(self.f.storage), [])

    async def test_discovery(self):
        response, answer = await self.call("GET", B + "/api/v1/upload")
        self.assertEqual(answer["presign_lifetime"], 900)
        self.assertEqual(answer["routes"]["complete_batch"], "POST /api/v1/upload/complete/batch")
        self.assertEqual(answer["routes"]["put"], "PUT /api/v1/upload/put/<opaque>")

    def test_secrets_stay_out_of_logs(self):
        self.assertEqual(redact_uri(b"/api/v1/upload/put/abc.1.2.xyz"), b"/api/v1/upload/put/***")
        self.assertEqual(redact_uri(b"/api/v1/upload/put/abc?token=t"), b"/api/v1/upload/put/***?token=*")
        self.assertEqual(redact_uri(b"/api/v1/upload?key=k"), b"/api/v1/upload?key=*")

    def test_staging_keys_are_no_image_keys(self):
        """No account can be named like the staging prefix, so no image key is under it."""
        self.assertFalse(naming.is_valid_account_name(rules.STAGING_PREFIX, allow_reserved=True))
        self.assertTrue(rules.staging_key("ab" * 16, 1).startswith("_staging/"))


# --------------------------------------------- two processes: one database, one storage


class SharedGrantsFlow(PresignFlow):
    """Two sets of components (as two processes build them) over one database and one
    storage, each with its own data folder (spool) and client: a PUT and its complete
    may reach either.  Subclasses set ``self.first``/``self.second`` (Fixtures)."""

    async def make_processes(self, database, storage, network):
        from twisted.internet.task import Clock

        clock = Clock()
        clock.advance(1771061400.0)
        processes = []
        for _ in range(2):
            data_dir = self.mktemp()
            os.makedirs(data_dir)
            fixture = Fixture(self, database, storage, clock, test_config(data_dir), network=network)
            await fixture.components.presigned.start()
            processes.append(fixture)
        self.first, self.second = processes
        self.f = self.first
        await self.first.account("kitten")
        self.token = await self.first.token("kitten")
        self.client = self.first.client()
        self.other_client = self.second.client()

    async def complete_on(self, client, token: str):
        """Complete through ``client`` (another process than ``self.client``'s)."""
        body = json.dumps({"completion_token": token}).encode()
        response, out = await client.request("POST", COMPLETE, data=body, headers={**JSON, **self.bearer()})
        return response, json.loads(out)

    async def check_two_processes(self):
        """presign on 1, PUT and complete on 2; presign and PUT on 1, complete on 2 (which
        fetches the staged bytes from storage); each image served by both."""
        served = []
        for put_client in (self.other_client, self.client):
            photo = image_bytes("JPEG", (300, 200), color=(len(served) * 90, 20, 20))
            answer = await self.granted(photo)
            response, put = await self.put(answer, photo, client=put_client)
            self.assertEqual(response.code, 200, put)
            response, done = await self.complete_on(self.other_client, answer["completion_token"])
            self.assertEqual(response.code, 200, done)
            response, again = await self.complete(answer["completion_token"])
            self.error(response, again, 404)
            served.append((done, photo))
        for done, photo in served:
            for client in (self.client, self.other_client):
                response, content = await client.request("GET", local(done["url"]))
                self.assertEqual((response.code, content), (200, photo))
        self.assertEqual(await self.staged(), [])

    async def check_restart(self):
        """A grant outlives the components that made it: new ones (a restart) load the
        same signing secret from the database and take its PUT and complete."""
        photo = image_bytes()
        answer = await self.granted(photo)
        restarted = Fixture(self, self.first.database, self.first.storage, self.first.clock,
                            self.first.config, network=self.first.network)
        await restarted.components.presigned.start()
        self.assertEqual(restarted.components.presigned._secret, self.first.components.presigned._secret)
        client = restarted.client()
        response, put = await self.put(answer, photo, client=client)
        self.assertEqual(response.code, 200, put)
        response, done = await self.complete_on(client, answer["completion_token"])
        self.assertEqual(response.code, 200, done)


class SharedGrantsMemoryTests(SharedGrantsFlow, JsonApiTestCase):
    async def setUp(self):
        from imgshare.testing import open_sqlite_sync

        database = await open_sqlite_sync(self)
        self.storage = MemoryStorage()
        await self.make_processes(database, self.storage, MemoryNetwork())

    async def staged(self):
        return staged_keys(self.storage)

    async def test_two_processes(self):
        await self.check_two_processes()
        fetched = [key for op, key in self.storage.calls if op == "fetch" and key.startswith("_staging/")]
        self.assertEqual(len(fetched), 1, "only the complete away from its PUT fetched the bytes")

    async def test_restart(self):
        await self.check_restart()


class SharedGrantsProductionTests(SharedGrantsFlow, JsonApiTestCase):
    """The same on PostgreSQL and S3 (moto_server)."""

    timeout = 120

    async def setUp(self):
        from tests.test_backends_production import open_postgres, open_s3

        database = await open_postgres(self)
        self.storage = await open_s3(self)
        await self.make_processes(database, self.storage, MemoryNetwork(live=reactor))

    async def staged(self):
        from twisted.internet.threads import deferToThread

        client = backends.s3_client(self.storage.location.endpoint_url)
        listing = await deferToThread(client.list_objects_v2, Bucket=self.storage.location.bucket)
        return [o["Key"] for o in listing.get("Contents", []) if "_staging/" in o["Key"]]

    async def test_two_processes(self):
        await self.check_two_processes()

    async def test_restart(self):
        await self.check_restart()


class TwoProcessPresignTests(unittest.TestCase):
    """Two real ``twistd imgshare`` processes on one PostgreSQL database and one bucket."""

    timeout = 300

    async def test_presign_on_one_put_and_complete_on_the_other(self):
        from tests.test_end_to_end import production_backends

        dsn, storage = await production_backends(self)
        env = {"IMGSHARE_DB": dsn, "IMGSHARE_STORAGE": storage}
        data = [os.path.abspath(self.mktemp()) for _ in range(2)]
        admin(data[0], "user", "add", "kitten", stdin="a long password\n", **env)
        token = admin(data[0], "token", "create", "kitten", **env).strip()
        servers = [ServerProcess(d, "--db", dsn, "--storage", storage, "--public-url", "https://img.example")
                   for d in data]
        for server in servers:
            self.addCleanup(server.stop)
        await gatherResults([Deferred.fromCoroutine(s.start()) for s in servers])
        http = HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))
        auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

        async def post(server, path, body):
            response = await http.post(server.url + path, data=json.dumps(body).encode(), headers=auth)
            return response.code, json.loads(await response.content())

        done = []
        for put_on in (1, 0):  # presign on 1; PUT on 2 (then on 1); complete on 2
            photo = image_bytes("JPEG", (320, 240), color=(put_on * 100, 50, 50))
            code, grant = await post(servers[0], "/api/v1/upload/presign",
                                     {"filename": f"p{put_on}.jpg", "contentType": "image/jpeg",
                                      "sizeBytes": len(photo)})
            self.assertEqual(code, 200, grant)
            path = grant["put_url"].removeprefix("https://img.example")
            response = await http.put(servers[put_on].url + path, data=photo)
            put = json.loads(await response.content())
            self.assertEqual(response.code, 200, put)
            code, image = await post(servers[1], "/api/v1/upload/complete",
                                     {"completion_token": grant["completion_token"]})
            self.assertEqual(code, 200, image)
            done.append((image, photo))
            code, again = await post(servers[0], "/api/v1/upload/complete", {"token": grant["completion_token"]})
            self.assertEqual(code, 404, again)
        for image, photo in done:
            for server in servers:
                response = await http.get(server.url + image["url"].removeprefix("https://img.example"))
                self.assertEqual((response.code, await response.content()), (200, photo))
        logs = servers[0].log() + servers[1].log()
        self.assertIn("PUT /api/v1/upload/put/*** HTTP/1.1", logs)
        for image, _ in done:
            self.assertNotIn(image["delete_url"].rsplit("/", 1)[1], logs)
        self.assertNotIn(grant["completion_token"], logs)
        self.assertNotIn(grant["put_url"].rsplit("/", 1)[1], logs)
