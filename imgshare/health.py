"""The backends as the rest of the process sees them: watched, counted and probed.

``WatchedDatabase`` and ``WatchedStorage`` wrap a backend (``compose.build`` wraps
both, so every component uses them): an operation that fails because the
backend is unavailable counts in the metrics and reports to the backend's
``Outage`` (one log line when an outage starts, one when it ends); any other
result reports a recovery.  They add one errback per operation (and, during an
outage, the callback that notices the recovery), nothing more.

``Readiness`` answers ``/readyz``: ``SELECT 1`` on the database and the storage's
``probe()`` (S3 ``HeadBucket``, a folder ``stat``), each bounded by
``PROBE_TIMEOUT``; the result is kept ``CACHE_SECONDS``, and callers meanwhile
share one probe, so a load balancer asking many times a second costs the
backends one probe a second.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.defer import Deferred, gatherResults, succeed

from imgshare import db
from imgshare.outage import Outage
from imgshare.storage import StorageUnavailable

#: How long a readiness answer is reused.
CACHE_SECONDS = 1.0
#: How long a probe may take before its backend counts as failed.
PROBE_TIMEOUT = 5.0


class _Watched:
    """What both watched backends share: reporting each operation's outcome to ``outage``
    (unavailability, the ``unavailable`` exception, also counted in ``errors``, a
    prometheus Counter); everything else is the wrapped backend's."""

    unavailable: type[Exception]

    def __init__(self, backend: Any, outage: Outage, errors: Any):
        self._backend = backend
        self.outage = outage
        self._errors = errors

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    def _watch(self, d: Deferred[Any]) -> Deferred[Any]:
        if self.outage.down:  # only then can a success change anything
            d.addCallbacks(self._answered, self._failed)
        else:
            d.addErrback(self._failed)
        return d

    def _answered(self, result: Any) -> Any:
        self.outage.recovered()
        return result

    def _failed(self, failure: Any) -> Any:
        if failure.check(self.unavailable):
            self._errors.inc()
            self.outage.failed(failure.getErrorMessage())
        else:
            self.outage.recovered()  # it answered (with an error of the operation's own)
        return failure


class WatchedDatabase(_Watched):
    """An IDatabase whose unavailability (``db.DatabaseUnavailable``) is watched."""

    unavailable = db.DatabaseUnavailable

    @property
    def database(self) -> Any:
        return self._backend

    def run(self, operation: Any, *args: Any) -> Deferred[Any]:
        return self._watch(self._backend.run(operation, *args))


class WatchedStorage(_Watched):
    """An IStorage whose unavailability (``StorageUnavailable``) is watched; a missing
    object is an answer, not an outage."""

    unavailable = StorageUnavailable

    @property
    def storage(self) -> Any:
        return self._backend

    def put(self, key: str, path: str, content_type: str) -> Deferred[None]:
        return self._watch(self._backend.put(key, path, content_type))

    def fetch(self, key: str, path: str) -> Deferred[None]:
        return self._watch(self._backend.fetch(key, path))

    def delete(self, key: str) -> Deferred[None]:
        return self._watch(self._backend.delete(key))

    def stream(self, key: str, consumer: Any, offset: int, length: int, version: str | None = None) -> Deferred[None]:
        return self._watch(self._backend.stream(key, consumer, offset, length, version=version))

    def probe(self) -> Deferred[None]:
        return self._watch(self._backend.probe())


@attrs.frozen
class Check:
    """One readiness answer: ``failed`` maps each backend that did not answer to why."""

    failed: dict[str, str]

    @property
    def ready(self) -> bool:
        return not self.failed


class Readiness:
    """Probes the database and the storage; reuses an answer ``cache_seconds``."""

    def __init__(self, database: Any, storage: Any, clock: Any, cache_seconds: float = CACHE_SECONDS,
                 timeout: float = PROBE_TIMEOUT):
        self.database = database
        self.storage = storage
        self.clock = clock
        self.cache_seconds = cache_seconds
        self.timeout = timeout
        self._last: Check | None = None
        self._at = 0.0
        self._running: Deferred[Check] | None = None
        self._waiting: list[Deferred[Check]] = []
        #: How many probes ran (each probes both backends).
        self.probes = 0

    def check(self) -> Deferred[Check]:
        """The current answer: cached, the probe under way, or a new probe."""
        now = self.clock.seconds()
        if self._last is not None and now - self._at < self.cache_seconds:
            return succeed(self._last)
        d: Deferred[Check] = Deferred()
        self._waiting.append(d)
        if self._running is None:
            self._running = Deferred.fromCoroutine(self._probe())
            self._running.addBoth(self._settled)
        return d

    def _settled(self, result: Any) -> None:
        self._running = None
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(result)

    async def _probe(self) -> Check:
        self.probes += 1
        names = ("database", "storage")
        attempts = [self._bounded(self.database.run(db.ping)), self._bounded(self.storage.probe())]
        results = await gatherResults([Deferred.fromCoroutine(_outcome(a)) for a in attempts])
        failed = {name: reason for name, reason in zip(names, results, strict=True) if reason is not None}
        check = Check(failed)
        self._last, self._at = check, self.clock.seconds()
        return check

    def _bounded(self, d: Deferred[Any]) -> Deferred[Any]:
        def timed_out(result: Any, timeout: float) -> Any:
            raise TimeoutError(f"no answer within {timeout:g} s")

        return d.addTimeout(self.timeout, self.clock, onTimeoutCancel=timed_out)


async def _outcome(d: Deferred[Any]) -> str | None:
    """None when ``d`` succeeds, else a short reason."""
    try:
        await d
    except Exception as e:
        return (str(e).strip().splitlines() or [type(e).__name__])[0]
    return None
