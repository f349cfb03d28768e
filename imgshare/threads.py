"""Where blocking work runs: thread pools owned by services, or inline in tests.

Every blocking call (file I/O on large bodies, hashing, multipart parsing,
image work, boto3) goes through a ``Runner`` so the reactor thread never does it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

T = TypeVar("T")


class Runner(Protocol):
    """Runs a blocking callable somewhere other than the reactor thread."""

    def run(self, f: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]: ...


@attrs.define
class PoolRunner:
    """Runs callables in a Twisted ``ThreadPool`` via ``deferToThreadPool``."""

    reactor: Any
    pool: ThreadPool

    def run(self, f: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        return deferToThreadPool(self.reactor, self.pool, f, *args, **kwargs)



class InlineRunner:
    """Runs callables at once in the calling thread (tests only)."""

    def run(self, f: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        try:
            return succeed(f(*args, **kwargs))
        except BaseException:
            return fail(Failure())


class ThreadPoolService(Service):
    """Owns a named ``ThreadPool``: started with the service, stopped with it."""

    def __init__(self, reactor: Any, name: str, threads: int):
        self.pool = ThreadPool(minthreads=0, maxthreads=max(1, threads), name=name)
        self.runner = PoolRunner(reactor, self.pool)
        self.setName(name)

    def startService(self) -> None:
        super().startService()
        self.pool.start()

    def stopService(self) -> None:
        super().stopService()
        self.pool.stop()
