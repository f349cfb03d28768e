"""Presigned uploads (PEERS section 2): presign, then PUT the bytes, then complete.

A grant is a database row (``upload_grants``), so it survives a restart and every
process sharing the database finds it.  A PUT's bytes are staged in storage under
``_staging/<grant>.<attempt>`` before the PUT answers 200, so a complete that
reaches another process finds them too; the process that took the PUT also keeps
its spool copy, which a complete there uses instead of fetching.  Nothing is an
image until complete succeeds: complete runs the bytes through
``ImageLibrary.upload`` like any upload, and the grant is spent in the very
transaction that commits the image, so a grant yields one image at most, whatever
crashes or races.  The expiry service sweeps spent and expired grants (their
staged objects, spool copies and rows).
"""

from __future__ import annotations

import hashlib
import math
import os
import secrets
from typing import Any, BinaryIO

import attrs
from twisted.logger import Logger

from imgshare import db
from imgshare.domain import errors, presign, quota
from imgshare.domain.jsonapi import OK
from imgshare.domain.records import Grant, Image
from imgshare.gateway import run_query
from imgshare.library import ImageLibrary
from imgshare.spool import remove_if_present
from imgshare.storage import ObjectMissing, StorageUnavailable

log = Logger()

#: The settings-table key of the secret signing PUT URLs (shared by every process).
SECRET_SETTING = "presign_secret"
#: Where a presigned PUT's bytes go (``<public url><PUT_PATH><opaque>``).
PUT_PATH = "/api/v1/upload/put/"
#: PUT attempts one grant may take (each stages under its own key).
MAX_PUT_ATTEMPTS = 10
#: How long one completion holds its grant before another may take it over (its
#: process died): longer than a maximal fetch, inspection and store take.
COMPLETE_LEASE = 300.0
#: An expired grant is swept this long after its expiry (a PUT that began in time
#: may still be storing its bytes).
SWEEP_GRACE = 300.0
SWEEP_BATCH = 100
#: What every refused PUT says, whatever the reason (unknown, forged, expired, used).
NO_SUCH_PUT = "no such upload: this URL is unknown, expired or already used"
NO_SUCH_COMPLETION = "invalid or expired upload token"


@attrs.define
class PresignedUploads:
    """Grants, staged bytes and completions, over injected backends and clock."""

    library: ImageLibrary
    database: Any  # IDatabase
    storage: Any  # IStorage
    io: Any  # Runner for blocking file work
    clock: Any  # IReactorTime
    lifetime: float = presign.LIFETIME
    _secret: bytes | None = None

    @property
    def config(self) -> Any:
        return self.library.config

    async def start(self) -> None:
        """Load the signing secret (made once, shared by every process through the
        settings table): the body limit of a PUT is read from its URL with it."""
        value = await self.database.run(db.setting_or_insert, SECRET_SETTING, secrets.token_hex(32))
        self._secret = value.encode("ascii")

    async def _signing_secret(self) -> bytes:
        if self._secret is None:
            try:
                await self.start()
            except db.DatabaseUnavailable as e:
                raise errors.Unavailable("the database is unavailable") from e
        assert self._secret is not None
        return self._secret

    # ------------------------------------------------------------ presign

    def body_limit(self, opaque: str) -> int | None:
        """The body limit of a PUT to ``opaque`` (asked while its head is read, so no
        database): what its grant allows, at most ``--max-size``.  None for a URL
        that is forged or expired: the ordinary limit applies and the PUT is 404."""
        grant = presign.verify_put(self._secret, opaque)
        if grant is None or grant.expires <= self.clock.seconds():
            return None
        return min(grant.size, self.config.max_size)

    async def presign(self, account: str, request: presign.PresignRequest) -> dict[str, Any]:
        """Record a grant for ``account``; its PUT URL and completion token."""
        secret = await self._signing_secret()
        now = self.clock.seconds()
        expires = float(math.floor(now) + int(self.lifetime))
        grant_id = presign.new_grant_id()
        token = presign.new_completion_token()
        await self.library.check_quota(account, request.size)  # full already: no grant, no PUT
        try:
            await self._db(
                db.create_grant, grant_id, account, presign.completion_digest(token), request.filename,
                request.size, request.keep_name, request.name, request.expire, now, expires,
            )
        except db.AccountGone:
            raise errors.Unauthorized("this token's account was removed") from None
        opaque = presign.sign_put(secret, grant_id, request.size, int(expires))
        log.info("presigned an upload of up to {size} bytes for {account}", size=request.size, account=account)
        return presign.presign_answer(f"{self.config.public_url}{PUT_PATH}{opaque}", token, expires)

    # ---------------------------------------------------------------- PUT

    def _spool_copy(self, grant_id: str, attempt: int) -> str:
        """This process's copy of one PUT attempt's bytes (``upload-*``: the library's
        spool sweep removes it if nothing else does)."""
        return os.path.join(self.config.spool_dir, f"upload-staged-{grant_id}.{attempt}")

    async def receive(self, opaque: str, body: BinaryIO) -> dict[str, Any]:
        """Stage the bytes of a PUT to ``opaque`` (its body, spooled by the site) in
        storage and record them on the grant.  404 unless the grant is open
        (unknown, forged, expired, or its bytes already came), 400 for an empty
        body; 503, and the grant still open, if storage fails."""
        grant = presign.verify_put(self._secret, opaque)
        if grant is None or grant.expires <= self.clock.seconds():
            raise errors.NotFound(NO_SUCH_PUT)
        limit = min(grant.size, self.config.max_size)
        size = await self.io.run(_body_size, body)
        if size == 0:
            raise errors.BadRequest("empty body: PUT the file's bytes")
        if size > limit:  # the site refused it while it arrived already; never stored
            raise errors.TooLarge(f"request body too large: the limit is {limit} bytes")
        attempt = await self._db(db.begin_grant_put, grant.grant_id, self.clock.seconds(), MAX_PUT_ATTEMPTS)
        if attempt is None:
            raise errors.NotFound(NO_SUCH_PUT)
        path = self._spool_copy(grant.grant_id, attempt)
        key = presign.staging_key(grant.grant_id, attempt)
        try:
            sha256 = await self.io.run(_copy_body, body, path)
            await self.storage.put(key, path, "application/octet-stream")
        except Exception as e:
            log.warn("staging a presigned upload failed: {error}", error=e)
            await self.io.run(remove_if_present, path)
            raise errors.Unavailable("storage is unavailable; nothing was stored") from e
        try:
            staged = await self._db(db.stage_grant, grant.grant_id, attempt, size, sha256, self.clock.seconds())
        except BaseException:
            await self.io.run(remove_if_present, path)  # the object's key is recorded: the sweep removes it
            raise
        if not staged:  # another PUT staged first, or the grant expired meanwhile
            await self.io.run(remove_if_present, path)
            await self._delete_quietly(key)
            raise errors.NotFound(NO_SUCH_PUT)
        log.info("staged {size} bytes for a presigned upload", size=size)
        return {**OK, "size": size, "sha256": sha256}

    # ----------------------------------------------------------- complete

    async def complete(self, account: str, token: Any, strip_location: bool | None = None) -> Image:
        """Turn a staged grant of ``account`` into an image, through the library
        (``strip_location`` as ``library.upload`` takes it).

        404 for an unknown, expired or spent token; 403 for another account's; 409
        before its PUT, or while another completion holds it.  Bytes the library
        refuses (400, 413, 415; a full quota too: presign again once there is room)
        spend the grant: they cannot change.  Any other
        failure (an outage) gives it back for a retry."""
        if token is None or (isinstance(token, str) and not token.strip()):
            raise errors.BadRequest("completion_token required")
        if not isinstance(token, str):
            raise errors.BadRequest("completion_token must be a string")
        if not presign.looks_like_completion_token(token):
            raise errors.NotFound(NO_SUCH_COMPLETION)
        claim = secrets.token_hex(8)
        now = self.clock.seconds()
        outcome, grant = await self._db(
            db.claim_grant, presign.completion_digest(token), account, claim, now, now + COMPLETE_LEASE)
        if grant is None:
            raise _refusal(outcome)
        try:
            path = await self._source(grant)
        except errors.NotFound:
            await self._spend_quietly(grant, claim)
            raise
        except BaseException:
            await self._release_quietly(grant, claim)
            raise
        try:
            image = await self.library.upload(
                grant.account, path, grant.filename, keep_name=grant.keep_name, name=grant.name,
                expire=grant.expire, also=(db.spend_grant, grant.id, claim), strip_location=strip_location,
            )
        except db.NotHeld:
            raise errors.NotFound(NO_SUCH_COMPLETION) from None
        except (errors.BadImage, errors.UnsupportedType, errors.TooLarge, quota.QuotaFull):
            await self._spend_quietly(grant, claim)
            raise
        except BaseException:
            await self._release_quietly(grant, claim)
            raise
        finally:
            await self.io.run(remove_if_present, path)
        await self._clear_quietly(grant)
        return image

    async def _source(self, grant: Grant) -> str:
        """A spool file with the grant's staged bytes: this process's copy when it took
        the PUT, else fetched from storage and checked against the recorded size
        and SHA-256.  NotFound when they are gone; Unavailable while storage is down."""
        path = os.path.join(self.config.spool_dir, f"upload-{secrets.token_hex(8)}")
        attempt = grant.staged_attempt or 0
        try:
            await self.io.run(os.replace, self._spool_copy(grant.id, attempt), path)
            return path
        except FileNotFoundError:
            pass
        try:
            await self.storage.fetch(presign.staging_key(grant.id, attempt), path)
        except ObjectMissing:
            await self.io.run(remove_if_present, path)
            raise errors.NotFound("the uploaded bytes are gone; presign again") from None
        except Exception as e:
            await self.io.run(remove_if_present, path)
            log.warn("fetching a staged upload failed: {error}", error=e)
            raise errors.Unavailable("storage is unavailable; try completing again") from e
        found = await self.io.run(_size_and_sha256, path)
        if found != (grant.staged_size, grant.staged_sha256):
            await self.io.run(remove_if_present, path)
            log.warn("a staged upload's bytes differ from those its PUT recorded; refused")
            raise errors.NotFound("the uploaded bytes are gone; presign again")
        return path

    async def _spend_quietly(self, grant: Grant, claim: str) -> None:
        """Spend a grant whose bytes can never make an image, and remove it."""
        try:
            await self.database.run(db.spend_grant, grant.id, claim)
        except Exception as e:  # NotHeld: someone else has it; an outage: it expires
            log.info("a refused presigned upload stays for the sweep ({error})", error=e)
            return
        await self._clear_quietly(grant)

    async def _release_quietly(self, grant: Grant, claim: str) -> None:
        try:
            await self.database.run(db.release_grant, grant.id, claim)
        except Exception as e:  # its claim runs out instead
            log.warn("giving back a presigned upload failed ({error}); free again after its lease", error=e)

    async def _clear_quietly(self, grant: Grant) -> None:
        """Remove a spent grant's staged objects, spool copies and row now; on failure
        the sweep does it later."""
        try:
            await self.clear(grant)
        except Exception as e:
            log.warn("removing a spent presigned upload waits for the sweep ({error})", error=e)

    async def clear(self, grant: Grant) -> None:
        """Remove every staged object and spool copy a grant's attempts may have left,
        then its row."""
        for attempt in range(1, grant.put_attempts + 1):
            await self.io.run(remove_if_present, self._spool_copy(grant.id, attempt))
        for key in presign.staging_keys(grant.id, grant.put_attempts):
            await self.storage.delete(key)
        await self.database.run(db.remove_grant, grant.id)

    async def _delete_quietly(self, key: str) -> None:
        try:
            await self.storage.delete(key)
        except Exception as e:  # its grant's row names the key: the sweep removes it
            log.warn("removing a staged object failed ({error}); the sweep retries", error=e)

    # -------------------------------------------------------------- sweep

    async def sweep(self, now: float) -> int:
        """Remove spent grants and those expired (by SWEEP_GRACE) that no completion
        holds: staged objects, spool copies, rows.  Stops at a storage outage (the
        next pass retries); returns how many went."""
        grants = await self.database.run(db.sweepable_grants, now, now - SWEEP_GRACE, SWEEP_BATCH)
        swept = 0
        for grant in grants:
            try:
                await self.clear(grant)
            except StorageUnavailable as e:
                log.warn("sweeping presigned uploads waits for storage ({error})", error=e)
                break
            swept += 1
        return swept

    async def _db(self, operation: Any, *args: Any) -> Any:
        return await run_query(self.database, operation, *args)


def _refusal(outcome: str) -> errors.ApiError:
    """The answer to a completion whose grant could not be claimed."""
    if outcome == "other_account":
        return errors.Forbidden("this upload belongs to another account")
    if outcome == "not_staged":
        return errors.ApiError("the file was not uploaded yet: PUT its bytes to put_url first", 409)
    if outcome == "busy":
        return errors.ApiError("this upload is being completed by another request", 409)
    return errors.NotFound(NO_SUCH_COMPLETION)


def _body_size(body: BinaryIO) -> int:
    body.seek(0, os.SEEK_END)
    return body.tell()


def _copy_body(body: BinaryIO, path: str) -> str:
    """Copy a spooled request body to ``path``; its SHA-256 (blocking).  The copy is
    only a shortcut for a complete in this process: storage holds the durable one."""
    digest = hashlib.sha256()
    body.seek(0)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        with open(path, "xb") as out:
            while chunk := body.read(1024 * 1024):
                digest.update(chunk)
                out.write(chunk)
    except BaseException:
        remove_if_present(path)
        raise
    return digest.hexdigest()


def _size_and_sha256(path: str) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1024 * 1024):
            size += len(chunk)
            digest.update(chunk)
    return size, digest.hexdigest()
