"""The expiry service: expired tokens and sessions go, expired and deleted files' objects go,
and so do the shared rate-limit rows that hold nothing any more (full buckets, old logins,
expired gather errors).

``expire_once`` is one pass as a function of ``now``; ``ExpiryService`` runs it
every few seconds on an injected clock and survives its own failures (a
failing ``TimerService`` call would stop it for good).
"""

from __future__ import annotations

from typing import Any

from twisted.application.internet import TimerService
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from imgshare import db
from imgshare.domain import errors
from imgshare.library import STALE_UPLOAD_SECONDS, ImageLibrary
from imgshare.ratelimit import KNOWN_FOR
from imgshare.storage import StorageUnavailable

log = Logger()

#: Seconds between passes: expired tokens and files are gone well within 60 s.
INTERVAL = 10.0
BATCH = 100
MAX_BATCHES = 20


async def expire_once(
    database: Any, library: ImageLibrary, now: float, presigned: Any = None,
) -> tuple[int, int]:
    """One pass at time ``now`` over ``database`` (an IDatabase) and ``library``;
    returns (tokens deleted, images purged).

    Expired browser sessions are deleted too, and spent or expired presigned-upload
    grants (``presigned.sweep``: their staged objects and rows), which are only logged."""
    accounts = await database.run(db.delete_expired_tokens, now)
    tokens = len(accounts)
    if tokens:
        log.info("expired {count} token(s) of {accounts}", count=tokens, accounts=_tally(accounts))
    sessions = await database.run(db.delete_expired_sessions, now)
    if sessions:
        log.info("expired {count} browser session(s)", count=sessions)
    await database.run(db.prune_shared_limits, now, now - KNOWN_FOR)
    await library.undo_failed_uploads()  # uploads whose commit failed: rows become deleted
    purged = 0
    for _ in range(MAX_BATCHES):
        batch = await database.run(
            db.purgeable_images, now, now - STALE_UPLOAD_SECONDS, BATCH
        )
        purged += await library.purge_many(batch, now)
        if len(batch) < BATCH:
            break
    if presigned is not None:
        grants = await presigned.sweep(now)
        if grants:
            log.info("removed {count} spent or expired presigned upload(s)", count=grants)
    swept = await library.sweep_spool(now)
    if swept:
        log.info("removed {count} leftover spool file(s)", count=swept)
    return tokens, purged


def _tally(accounts: list[str]) -> str:
    """``["bear", "kitten", "kitten"]`` -> ``"bear, kitten (2)"``."""
    counts: dict[str, int] = {}
    for account in accounts:
        counts[account] = counts.get(account, 0) + 1
    return ", ".join(name if n == 1 else f"{name} ({n})" for name, n in sorted(counts.items()))


class ExpiryService(TimerService):
    """Runs ``expire_once`` every ``interval`` seconds of ``clock``."""

    def __init__(
        self, database: Any, library: ImageLibrary, clock: Any, interval: float = INTERVAL, *,
        presigned: Any = None,
    ):
        super().__init__(interval, self.tick)
        self.clock = clock
        self.database = database
        self.library = library
        #: Presigned uploads (``imgshare.presign.PresignedUploads``), swept each pass.
        self.presigned = presigned

    def tick(self) -> Deferred[None]:
        d = Deferred.fromCoroutine(expire_once(self.database, self.library, self.clock.seconds(), self.presigned))
        d.addCallback(lambda _: None)
        d.addErrback(_failed)
        return d


def _failed(failure: Any) -> None:
    if failure.check(db.DatabaseUnavailable, errors.Unavailable, StorageUnavailable):
        # The outage is logged once, when it starts (imgshare.outage), not at every pass.
        log.debug("expiry pass skipped: {error}", error=failure.getErrorMessage())
        return
    log.failure("expiry pass failed; retrying next time", failure)
