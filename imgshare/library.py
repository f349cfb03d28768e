"""What the web layer asks for: authenticate, upload, delete, look up, purge.

Routes call this; it calls the pure domain logic, the Database and the
Storage.  It holds no HTTP and no SQL.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import os
import secrets
import shutil
from collections.abc import Callable, Sequence
from typing import Any

import attrs
from twisted.internet.defer import Deferred, DeferredSemaphore, gatherResults
from twisted.logger import Logger

from imgshare import auth, db
from imgshare.config import Config
from imgshare.domain import cursors, errors, lifetime, location, naming, quota, sniff
from imgshare.domain.records import DELETED, LIVE, UPLOADING, Image, Token, Usage, Variant
from imgshare.gateway import run_query
from imgshare.metrics import Metrics
from imgshare.spool import remove_if_present
from imgshare.storage import StorageUnavailable

#: An upload still "uploading" after this long was abandoned by a crash.
STALE_UPLOAD_SECONDS = 3600.0
#: Retry delays for removing objects while storage is down (then the last, forever).
PURGE_BACKOFF = (10.0, 30.0, 60.0, 300.0, 900.0)
#: How long one purge may hold an image before another may try (a crashed purger).
PURGE_LEASE = 600.0
#: Images whose objects a batch of purges removes at once.
PURGE_CONCURRENCY = 8
#: Spooled temporary files older than this were left by a crash and are removed.
SPOOL_STALE_SECONDS = 3600.0
#: How long the derived-file worker's copy of an original lingers once its job is gone.
SPOOL_ORIGINAL_GRACE = 60.0
#: How long a request for a derived file that is still being made waits for it.
DERIVED_WAIT_SECONDS = 10.0
#: How often a waiting request looks in the database (another process may make the file).
DERIVED_POLL_SECONDS = 0.25
#: Reservations of a kept name: each takes the next free suffix in one query, so
#: another attempt is needed only when a concurrent upload took that very name.
KEPT_NAME_ATTEMPTS = 5
#: Random names drawn before giving up (36**8 of them: a second draw is rare already).
RANDOM_NAME_ATTEMPTS = 10
#: The longest gallery search (``?q=``), in characters: the longest file name is shorter.
MAX_SEARCH_CHARACTERS = 100
#: Images one multiple delete may name (a gallery page shows 24; a form holds at most
#: 64 fields, ``web.forms.MAX_FIELDS``, and this leaves room for the others).
MAX_SELECTED = 50

log = Logger()

#: The gallery's orders (newest first by default).
SORTS = db.SORTS


def new_delete_secret() -> str:
    """A fresh delete-link secret: 128 random bits as 32 lowercase hex characters."""
    return secrets.token_hex(16)


def delete_secret_digest(secret: str) -> str:
    """The SHA-256 (hex) under which a delete link's secret is stored."""
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def all_keys(image: Image) -> list[str]:
    """Every storage key an image may have: the original and its derived files."""
    keys = [naming.storage_key(image.account, image.name)]
    keys += [naming.storage_key(image.account, image.name, v) for v in (*naming.VARIANTS, "thumb")]
    return keys


@attrs.define
class ImageLibrary:
    """The image host's operations, over injected backends and clock."""

    config: Config
    database: Any  # IDatabase
    storage: Any  # IStorage
    io: Any  # Runner for blocking file work
    clock: Any  # IReactorTime
    #: Called with each newly committed image (the derived-file worker wakes up).
    on_committed: Callable[[Image], None] = lambda image: None
    _waiting: dict[int, list[Any]] = attrs.Factory(dict)
    _background: set[Any] = attrs.Factory(set)
    #: Uploads that failed after reserving their names, by image id, until undone.
    _failed: dict[int, Image] = attrs.Factory(dict)
    #: The undoing of a failed upload under way, by image id.
    _undoing: dict[int, Any] = attrs.Factory(dict)
    metrics: Metrics = attrs.Factory(Metrics)
    #: Why a deleted image goes, by image id, for its purge's log line (this process's
    #: deletions; one deleted by another process, or before a restart, is just "deleted").
    _deleted_because: dict[int, str] = attrs.Factory(dict)

    def now(self) -> float:
        return self.clock.seconds()

    def spool_path(self, image_id: int) -> str:
        """Where the original of a new image is kept until its derived files exist."""
        return os.path.join(self.config.spool_dir, f"{image_id}.original")

    # ---------------------------------------------------------------- tokens

    async def authenticate(self, token: str | None) -> Token:
        """The live token ``token`` names, or Unauthorized (401)."""
        if not token:
            raise errors.Unauthorized("missing token")
        if not auth.looks_like_token(token):
            raise errors.Unauthorized("unknown or expired token")
        found = await self._db(db.find_token, auth.token_digest(token), self.now())
        if found is None:
            raise errors.Unauthorized("unknown or expired token")
        return found

    # --------------------------------------------------------------- uploads

    async def upload(
        self, account: str, path: str, client_filename: str | None, *,
        keep_name: bool = False, name: str | None = None, expire: str | None = None,
        also: tuple | None = None, strip_location: bool | None = None,
    ) -> Image:
        """Store the file at ``path`` for ``account``; return its live record.

        ``strip_location`` removes the file's location metadata first (in place, see
        ``domain.location``), so its stored bytes, size and SHA-256 are those of the
        stripped file; None takes the account's setting.  A file whose metadata could
        not be checked is then refused (400).  The record's ``has_location`` says
        whether what is stored carries coordinates.

        ``also`` (``(operation, *args)``) runs in the commit's transaction: a
        presigned upload spends its grant there; its ``db.NotHeld`` undoes the
        upload like any failed commit and is raised as it is.

        Answers only after the original is durably stored and its row committed.
        On a storage or database failure the answer is 503 at once and nothing is
        served; what the reservation left is removed in the background (see
        ``_forget_upload``).
        """
        started = self.now()
        info = await self.io.run(sniff.inspect_file, path, self.config.max_pixels)
        if info.size > self.config.max_size:
            raise errors.TooLarge(f"file too large: the limit is {self.config.max_size} bytes")
        has_location, stripped = await self._settle_location(account, path, strip_location)
        if stripped:  # the stored bytes, size and SHA-256 are the stripped file's
            info = await self.io.run(sniff.inspect_file, path, self.config.max_pixels)
        decision = lifetime.decide(info.size, lifetime.parse_expire(expire), self.config.tiers)
        chosen = name if name else (client_filename if keep_name else None)
        base = naming.sanitize_base(chosen) if chosen else None
        ext = naming.choose_extension(chosen, info.type)
        now = self.now()
        expires = None if decision.lifetime is None else now + decision.lifetime
        secret = new_delete_secret()
        extra = (naming.original_name(client_filename), delete_secret_digest(secret),
                 lifetime.format_asked(decision.asked), has_location)
        try:
            image = await self._reserve(account, base, ext, info, now, expires, extra)
        except db.AccountGone:
            raise errors.Unauthorized("this token's account was removed") from None
        except db.OverQuota as e:  # nothing was reserved, nothing reaches storage
            log.info("refused an upload of {size} bytes for {account}: over its quota", size=info.size,
                     account=account)
            raise quota.QuotaFull(quota.refusal(e.usage, e.size) or "Storage quota full.") from None
        key = naming.storage_key(account, image.name)
        try:
            await self.storage.put(key, path, info.type.mime)
        except Exception as e:
            if not isinstance(e, StorageUnavailable):  # an outage is logged once, not per upload
                log.warn("storing {key} failed: {error}", key=key, error=e)
            self._forget_upload(image)
            raise errors.Unavailable("storage is unavailable; nothing was stored") from e
        try:
            image = await self._db(db.commit_image, image.id, self.now(), also)
        except db.NotHeld:
            self._forget_upload(image)
            raise
        except (db.AccountGone, db.Conflict):
            # The account was removed while the file was being stored.
            self._forget_upload(image)
            raise errors.Unauthorized("this token's account was removed") from None
        except Exception as e:
            if not isinstance(e, errors.Unavailable):  # an outage is logged once, not per upload
                log.warn("recording {key} failed: {error}", key=key, error=e)
            self._forget_upload(image)
            raise
        image = attrs.evolve(image, delete_secret=secret)  # returned once, never stored
        self.metrics.upload_seconds.observe(self.now() - started)
        log.info("stored {account}/{name} ({size} bytes)", account=account, name=image.name, size=image.size)
        try:  # keep the upload as the derived-file worker's source
            await self.io.run(os.replace, path, self.spool_path(image.id))
        except OSError as e:
            log.warn("could not keep {path} for derivation ({error}); it will be fetched", path=path, error=e)
        self.on_committed(image)
        return image

    async def _settle_location(self, account: str, path: str, strip: bool | None) -> tuple[bool, bool]:
        """Remove the location metadata of the upload at ``path`` (an image already
        checked) when asked (or when the account's setting says so); whether the file
        kept coordinates, and whether it was changed.  The account's setting is read
        only for a file that has location metadata (or metadata that could not be
        checked)."""
        findings = await self.io.run(location.examine, path)
        if not findings.edits and not findings.problems:
            return findings.has_location, False
        if strip is None:
            strip = await self._db(db.get_strip_location, account)
        if not strip:
            return findings.has_location, False
        try:
            await self.io.run(location.strip_location, path, findings)
        except errors.BadImage as e:
            raise errors.BadImage(f"{e.message} (strip_location=0 stores the file as it is)") from None
        return False, True

    async def strip_location_default(self, account: str) -> bool:
        """The account's setting: remove location metadata at upload unless told otherwise."""
        return await self._db(db.get_strip_location, account)

    async def set_strip_location_default(self, account: str, strip: bool) -> None:
        """Change the account's setting (Unauthorized if the account is gone)."""
        if not await self._db(db.set_strip_location, account, strip):
            raise errors.Unauthorized("this account was removed")

    async def _reserve(
        self, account: str, base: str | None, ext: str, info: Any, now: float, expires: float | None,
        extra: tuple[str, str, str | None, bool],
    ) -> Image:
        day = datetime.datetime.fromtimestamp(now, datetime.UTC).date()
        details = (info.type.mime, info.size, info.width, info.height, info.sha256, now, expires)
        if base is None:
            for _ in range(RANDOM_NAME_ATTEMPTS):  # a random name is simply drawn again
                name = next(naming.candidate_names(day, naming.random_base(), ext))
                try:
                    return await self._db(db.reserve_image, account, name, naming.name_stem(name), *details,
                                          False, *extra)
                except db.Conflict:
                    continue
        else:
            name = next(naming.candidate_names(day, base, ext))
            stem = naming.name_stem(name)
            if self._failed and not await self.undo_failed_uploads(account, stem):
                # A failed upload of this very name could not give it back yet (the
                # database is still unavailable): 503 rather than a needless _2.
                raise errors.Unavailable("the database is unavailable")
            for _ in range(KEPT_NAME_ATTEMPTS):  # the database picks the next free suffix
                try:
                    return await self._db(db.reserve_image, account, name, stem, *details, True, *extra)
                except db.Conflict:
                    continue
        raise errors.Unavailable("no free name could be reserved for this file; try again")

    def _forget_upload(self, image: Image) -> None:
        """An upload failed after reserving its name: nothing of it is ever served.

        Its row and whatever reached storage are removed in the background, never
        before the answer (a hung storage or a locked database would hold it up):
        at once when both allow, else before the next upload of the same name
        (which then gets the name, not ``_2``), else by the next expiry pass.
        """
        self._failed[image.id] = image
        self._in_background(self._undo, image)

    async def undo_failed_uploads(self, account: str | None = None, stem: str | None = None) -> bool:
        """Undo the uploads that failed after reserving their names: all of them, or
        those of ``account`` whose names a kept ``stem`` may clash with.  False if
        one of them could not be undone yet (the database is unavailable)."""
        undone = True
        for image in list(self._failed.values()):
            if account is None or (image.account == account and (
                    image.stem == stem or image.stem.startswith(f"{stem}_"))):
                await self._undo(image)
                undone = undone and image.id not in self._failed
        return undone

    async def _undo(self, image: Image) -> None:
        """Undo one failed upload, or wait for the undoing already under way."""
        running = self._undoing.get(image.id)
        if running is None:
            running = self._undoing[image.id] = Deferred.fromCoroutine(self._undo_once(image))

            def finished(result: Any) -> Any:
                self._undoing.pop(image.id, None)
                return result

            running.addBoth(finished)
        done: Deferred[None] = Deferred()

        def settled(result: Any) -> Any:
            done.callback(None)
            return result

        running.addBoth(settled)
        await done

    async def _undo_once(self, image: Image) -> None:
        """The row becomes deleted (unless the commit went through after all), then a
        purge removes the objects and the row; never raises."""
        if image.id not in self._failed:
            return
        try:
            state = await self._db(db.abandon_upload, image.id, self.now())
        except Exception as e:
            log.warn("undoing the failed upload of {account}/{name} waits ({error})",
                     account=image.account, name=image.name, error=e)
            return
        self._failed.pop(image.id, None)
        if state != DELETED:  # live: committed after all; None: purged already
            return
        self._deleted_because[image.id] = "failed upload"
        try:
            await self.purge(image)  # on failure the row stays deleted: the expiry service retries
        except Exception as e:
            log.warn("purging the failed upload {account}/{name} failed ({error}); retrying later",
                     account=image.account, name=image.name, error=e)

    # ---------------------------------------------------------------- quotas

    async def usage(self, account: str) -> Usage:
        """What ``account``'s images hold and its quotas; NotFound without the account."""
        found = await self._db(db.account_usage, account)
        if found is None:
            raise errors.NotFound("no such account")
        return found

    async def check_quota(self, account: str, size: int | None = None) -> None:
        """QuotaFull (413) when ``account`` cannot take one more image of ``size`` bytes
        now (None: of any size, refused only when full to the byte or the image): the
        early refusal, before a body is parsed or fetched or a grant made.  Uploads are
        held to the quota again, exactly, when they reserve their names."""
        found = await self._db(db.account_usage, account)
        if found is not None:
            quota.check(found, size)

    # ---------------------------------------------------------------- lookup

    async def served_image(self, account: str, name: str) -> Image | None:
        """The image ``account/name`` if it is served right now."""
        if not naming.is_valid_account_name(account, allow_reserved=True) or not naming.is_valid_file_name(name):
            return None
        image = await self._db(db.get_image, account, name)
        return image if image is not None and image.is_served(self.now()) else None

    async def served_by_stem(self, account: str, stem: str) -> Image | None:
        """The served image whose derived files are named ``stem``."""
        if not naming.is_valid_account_name(account, allow_reserved=True) or not naming.is_valid_file_name(stem + ".jpg"):
            return None
        image = await self._db(db.get_image_by_stem, account, stem)
        return image if image is not None and image.is_served(self.now()) else None

    async def account_images(self, account: str, offset: int, limit: int) -> list[Image]:
        """The account's served images, newest first: ``limit`` of them after the first ``offset``."""
        return await self._db(db.list_images, account, self.now(), offset, limit)

    async def image_page(self, account: str, page: int, limit: int, *, sort: str = "newest",
                         search: str = "") -> tuple[list[Image], int, bool]:
        """Page ``page`` (from 1) of ``limit`` of the account's served images, in the
        order ``sort`` (``SORTS``; newest first by default), how many it has in all
        (expiry is checked in the query), and False.  With ``search`` (see
        ``search_text``) only the images whose file name or original name contains it,
        any case, and how many match, up to ``SEARCH_COUNT_CAP``; True when more do
        (only the first ``SEARCH_COUNT_CAP`` are paged through).  BadRequest for an
        unknown ``sort`` or a search refused."""
        if sort not in db.ORDERS:
            raise errors.BadRequest(f"sort: one of {', '.join(db.SORTS)}")
        search = search_text(search)
        offset = (page - 1) * limit
        if sort == "newest" and not search:
            return (*await self._db(db.list_images_page, account, self.now(), offset, limit), False)
        found, total = await self._db(db.find_images_page, account, self.now(), offset, limit, sort, search)
        capped = bool(search) and total > db.SEARCH_COUNT_CAP
        return found, min(total, db.SEARCH_COUNT_CAP) if capped else total, capped

    async def image_page_at(self, account: str, cursor: str, before: bool, limit: int, *,
                            sort: str = "newest", search: str = "") -> tuple[list[Image], bool, int, bool]:
        """Keyset pagination: the ``limit`` images following the place ``cursor`` names
        in the order ``sort`` (preceding it when ``before``), as ``image_page`` filters
        them; whether more follow (precede); the total and whether it is capped, as
        ``image_page`` counts them.  A cursor pages through every match of a search, not
        only the counted ones.  BadRequest for an unknown ``sort``, a search refused, or
        a cursor that is not one of ``sort`` (``cursors.decode``)."""
        if sort not in db.ORDERS:
            raise errors.BadRequest(f"sort: one of {', '.join(db.SORTS)}")
        search = search_text(search)
        position = cursors.decode(cursor, sort)
        found, more, total = await self._db(db.find_images_at, account, self.now(), position.key, position.id,
                                            before, limit, sort, search)
        capped = bool(search) and total > db.SEARCH_COUNT_CAP
        return found, more, min(total, db.SEARCH_COUNT_CAP) if capped else total, capped

    async def pending_derivations(self, image_ids: list[int]) -> set[int]:
        """Which of these images still wait for their derived files."""
        return await self._db(db.pending_images, image_ids)

    async def made_variants(self, image: Image) -> dict[str, Variant]:
        """The image's derived files made so far, by variant (no waiting)."""
        made = {}
        for variant in naming.VARIANTS:
            found = await self._db(db.get_variant, image.id, variant)
            if found is not None:
                made[variant] = found
        return made

    async def derived_file(self, image: Image, variant: str, wait: float = DERIVED_WAIT_SECONDS) -> Variant:
        """The record of one derived file, waiting up to ``wait`` seconds (its job moved
        to the front) while it is being made.  NotFound if it will never exist,
        DerivedPending (503) if it is still not ready."""
        found = await self._db(db.get_variant, image.id, variant)
        if found is not None:
            return found
        if not await self._db(db.prioritize_job, image.id):
            return await self._variant_or_404(image, variant)  # it may have just been made
        deadline = self.now() + wait
        while self.now() < deadline:
            await self._until_ready_or(image.id, min(DERIVED_POLL_SECONDS, deadline - self.now()))
            found = await self._db(db.get_variant, image.id, variant)
            if found is not None:
                return found
            if not await self._db(db.has_job, image.id):
                return await self._variant_or_404(image, variant)
        raise DerivedPending("this file is still being made; retry shortly")

    async def _variant_or_404(self, image: Image, variant: str) -> Variant:
        """The variant, read once more after its job was found gone; else 404 (broken)."""
        found = await self._db(db.get_variant, image.id, variant)
        if found is None:
            raise errors.NotFound("no such file")
        return found

    async def _until_ready_or(self, image_id: int, seconds: float) -> None:
        d: Deferred[None] = Deferred()
        self._waiting.setdefault(image_id, []).append(d)
        call = self.clock.callLater(max(seconds, 0), lambda: d.called or d.callback(None))
        try:
            await d
        finally:
            if call.active():
                call.cancel()
            waiters = self._waiting.get(image_id, [])
            if d in waiters:
                waiters.remove(d)
            if not waiters:
                self._waiting.pop(image_id, None)

    def derived_ready(self, image_id: int) -> None:
        """Wake the requests waiting for this image's derived files."""
        for d in self._waiting.pop(image_id, []):
            if not d.called:
                d.callback(None)

    async def break_image(self, image: Image, reason: str) -> None:
        """An image the library cannot decode: delete every version and its row."""
        log.warn("{account}/{name} is broken and was deleted: {reason}",
                 account=image.account, name=image.name, reason=reason)
        self._deleted_because[image.id] = "broken"
        await self._db(db.mark_deleted, image.id, self.now())
        self.derived_ready(image.id)
        await self.purge(image)

    # ---------------------------------------------------------------- delete

    async def delete(self, account: str, reference: str) -> Image:
        """Delete one of ``account``'s images by name or by the URL of any version.

        Every version answers 404 from the moment this returns; the objects are
        removed at once when storage allows, else retried by the expiry service.
        """
        ref = naming.parse_file_reference(reference, account)
        if ref.account != account:
            raise errors.Forbidden("not your file")
        if ref.name is not None:
            image = await self._db(db.get_image, account, ref.name)
        else:
            image = await self._db(db.get_image_by_stem, account, ref.stem)
        if image is None or not image.is_served(self.now()):
            raise errors.NotFound("no such file")
        return await self._delete_served(image, "by its owner")

    async def delete_named(self, caller: str, account: str, name: str) -> Image:
        """Delete ``account``'s image ``name`` for ``caller`` (an id already parsed):
        Forbidden unless it is the caller's own account, as ``delete`` answers a URL
        of another account's file; NotFound unless it is served right now."""
        if account != caller:
            raise errors.Forbidden("not your file")
        image = await self.served_image(account, name)
        if image is None:
            raise errors.NotFound("no such file")
        return await self._delete_served(image, "by its owner")

    async def delete_several(self, account: str, names: list[str]) -> tuple[list[Image], list[str]]:
        """Delete several of ``account``'s images in one transaction, all or none:
        ``(deleted, [])``, or ``([], the names not served right now)`` and nothing
        deleted.  ``names`` must be distinct (``selected_names`` checks a form's).
        Every version of each answers 404 from the moment this returns."""
        if any(not naming.is_valid_file_name(name) for name in names):
            return [], [name for name in names if not naming.is_valid_file_name(name)]
        try:
            deleted, missing = await self._db(db.delete_served_named, account, names, self.now())
        except db.NotHeld as e:  # another request deleted one of them meanwhile
            return [], [str(e.args[0])]
        for image in deleted:
            self._after_delete(image, "by its owner")
        return deleted, missing

    async def _delete_served(self, image: Image, how: str) -> Image:
        """Stop serving ``image`` now (NotFound if it went meanwhile), then purge it;
        ``how``: "by its owner", "through its delete link"."""
        if not await self._db(db.mark_deleted, image.id, self.now()):
            raise errors.NotFound("no such file")
        self._after_delete(image, how)
        return image

    def _after_delete(self, image: Image, how: str) -> None:
        """Log a deletion just committed and purge its objects soon."""
        self._deleted_because[image.id] = f"deleted {how}"
        log.info("deleted {account}/{name} {how}", account=image.account, name=image.name, how=how)
        self.purge_soon(image)

    async def linked_image(self, account: str, name: str, secret: str) -> Image | None:
        """The served image ``account/name`` if ``secret`` is its delete link's secret,
        else None (whatever the reason: no such image, deleted, expired, broken, a
        wrong secret, or an image from before delete links, which has none).  The
        digests are compared in constant time."""
        if not naming.is_valid_account_name(account, allow_reserved=True) or not naming.is_valid_file_name(name):
            return None
        given = delete_secret_digest(secret) if auth.looks_like_token(secret) else ""
        found = await self._db(db.get_image_and_delete_digest, account, name)
        if found is None:
            return None
        image, digest = found
        if not hmac.compare_digest(given.encode("ascii"), (digest or "").encode("ascii")) or not given:
            return None
        return image if image.is_served(self.now()) else None

    async def delete_linked(self, account: str, name: str, secret: str) -> Image:
        """Delete an image through its secret delete link (no token needed; it works
        after the uploading token is gone); NotFound for every kind of failure."""
        image = await self.linked_image(account, name, secret)
        if image is None:
            raise errors.NotFound("no such delete link")
        return await self._delete_served(image, "through its delete link")

    def purge_soon(self, image: Image) -> None:
        """Try to purge ``image`` right away, in the background (the expiry service retries)."""
        self._in_background(self.purge, image)

    def _in_background(self, work: Callable[[Image], Any], image: Image) -> None:
        """Run ``await work(image)`` soon, tracked until it ends (see ``drain``)."""
        self.clock.callLater(0, self._start_background, work, image)

    def _start_background(self, work: Callable[[Image], Any], image: Image) -> None:
        d = Deferred.fromCoroutine(work(image))
        d.addErrback(lambda f: log.failure("cleaning up {name}", f, name=image.name))
        self._background.add(d)
        d.addBoth(lambda _: self._background.discard(d))

    async def drain(self) -> None:
        """Wait for the background purges under way (before closing the database)."""
        from twisted.internet.defer import DeferredList

        while self._background:
            await DeferredList(list(self._background))

    # ----------------------------------------------------------------- purge

    async def purge(self, image: Image, attempts: int = 0, now: float | None = None) -> bool:
        """Remove every object of a deleted, expired or abandoned image, then its row.

        The row is claimed first, so two purges never overlap and none runs while
        a derived-file worker still holds the image.  On a storage failure the row
        stays and is retried later (backoff).
        """
        now = self.now() if now is None else now
        return await self.purge_many([(image, attempts)], now) == 1

    async def purge_many(self, batch: Sequence[tuple[Image, int]], now: float) -> int:
        """``purge`` for a batch of ``(image, failed attempts)``: one transaction claims
        them all, their objects are removed ``PURGE_CONCURRENCY`` images at a time, and
        one transaction drops the rows of those whose objects are gone (a storage failure
        postpones only its own image).  How many were purged."""
        claimed = set(await self._db(db.claim_purges, [image.id for image, _ in batch], now,
                                     now - STALE_UPLOAD_SECONDS, PURGE_LEASE))
        gate = DeferredSemaphore(PURGE_CONCURRENCY)

        async def remove(image: Image, attempts: int) -> Image | None:
            try:
                await gate.run(lambda: Deferred.fromCoroutine(self.remove_objects(image)))
            except StorageUnavailable as e:
                delay = PURGE_BACKOFF[min(attempts, len(PURGE_BACKOFF) - 1)]
                # The storage outage itself is logged once (imgshare.outage).
                log.debug("removing {name} failed ({error}); retrying in {delay:.0f} s",
                          name=image.name, error=e, delay=delay)
                await self._db(db.postpone_purge, image.id, now + delay)
                return None
            return image

        done = await gatherResults([Deferred.fromCoroutine(remove(image, attempts))
                                    for image, attempts in batch if image.id in claimed], consumeErrors=True)
        gone = [image for image in done if image is not None]
        if gone:
            await self._db(db.remove_images, [(image.account, image.id) for image in gone])
        for image in gone:
            await self.io.run(remove_if_present, self.spool_path(image.id))
            log.info("purged {account}/{name} ({why})", account=image.account, name=image.name,
                     why=self._purge_reason(image, now))
        return len(gone)

    def _purge_reason(self, image: Image, now: float) -> str:
        """Why a purged image went: expired, deleted by its owner or through its delete
        link, broken, a failed or abandoned upload."""
        why = self._deleted_because.pop(image.id, None)
        if why is not None:
            return why
        if image.state == LIVE and image.expires is not None and image.expires <= now:
            return "expired"
        if image.state == UPLOADING:
            return "abandoned upload"
        return "deleted"

    async def sweep_spool(self, now: float) -> int:
        """Remove spool files nobody needs: worker copies of originals whose job is
        gone (another process ran it) and temporary files left by a crash."""
        originals, stale = await self.io.run(_scan_spool, self.config.spool_dir, now)
        waiting = await self._db(db.pending_images, list(originals)) if originals else set()
        doomed = stale + [path for image_id, path in originals.items() if image_id not in waiting]
        await self.io.run(_remove_all, doomed)
        return len(doomed)

    async def remove_objects(self, image: Image) -> None:
        """Delete every object an image may have in storage."""
        for key in all_keys(image):
            await self.storage.delete(key)

    async def _db(self, operation: Any, *args: Any) -> Any:
        return await run_query(self.database, operation, *args)


def search_text(text: str | None) -> str:
    """A gallery search as given (``?q=``), surrounding spaces dropped; BadRequest when
    longer than MAX_SEARCH_CHARACTERS or holding control characters (no file name has
    them)."""
    text = (text or "").strip()
    if len(text) > MAX_SEARCH_CHARACTERS:
        raise errors.BadRequest(f"search for at most {MAX_SEARCH_CHARACTERS} characters "
                                f"(this search has {len(text)})")
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in text):
        raise errors.BadRequest("a search may not contain control characters")
    return text


def selected_names(names: list[str]) -> list[str]:
    """The names of a multiple delete (a form's repeated ``name`` fields), checked:
    BadRequest for none, a duplicate, or more than MAX_SELECTED."""
    names = [name.strip() for name in names]
    if not [name for name in names if name]:
        raise errors.BadRequest("select at least one image to delete")
    if len(names) > MAX_SELECTED:
        raise errors.BadRequest(f"select at most {MAX_SELECTED} images at once ({len(names)} were selected)")
    if len(set(names)) < len(names) or "" in names:
        raise errors.BadRequest("each image may be selected once, by its name")
    return names


class DerivedPending(errors.ApiError):
    """A derived file still being made after the wait (503 with Retry-After)."""

    status = 503
    retry_after = 5


def _scan_spool(folder: str, now: float) -> tuple[dict[int, str], list[str]]:
    """(worker copies of originals by image id, stale temporary files) in ``folder``."""
    originals: dict[int, str] = {}
    stale: list[str] = []
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return originals, stale
    for entry in entries:
        try:
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except FileNotFoundError:
            continue
        stem, _, suffix = entry.name.partition(".")
        if suffix == "original" and stem.isdigit():
            if age > SPOOL_ORIGINAL_GRACE:
                originals[int(stem)] = entry.path
        elif entry.name.startswith(("upload-", "gather-", "derive-")) and age > SPOOL_STALE_SECONDS:
            stale.append(entry.path)
    return originals, stale


def _remove_all(paths: list[str]) -> None:
    for path in paths:
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            remove_if_present(path)
