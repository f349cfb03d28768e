"""Where blocking work runs: thread pools owned by services, or inline in tests.

Every blocking call (file I/O on large bodies, hashing, multipart parsing,
image work, boto3) goes through a ``Runner`` so the reactor thread never does it.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

T = TypeVar("T")

#: How far below the reactor's CPU priority the pools' threads run (nice values, Linux):
#: image work most; the io and S3 pools' parsing, hashing and boto3 calls a little; so
#: that requests are never queued behind them on a busy core (bench/reactor_block.py).
IO_NICENESS = 5
IMAGE_NICENESS = 10


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


def lower_priority(niceness: int) -> bool:
    """Lower the CPU priority of the calling thread by ``niceness`` (Linux, where the nice
    value belongs to each thread); False where that cannot be done."""
    if niceness <= 0 or not sys.platform.startswith("linux"):
        return False
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + niceness))
    except OSError:
        return False
    return True


class BackgroundThreadPool(ThreadPool):
    """A ``ThreadPool`` whose threads run at a lower CPU priority than the reactor's.

    Image work and body parsing are throughput work: when they share a core with the
    reactor, the scheduler should run the reactor first, or every request waits behind
    a derivation (bench/reactor_block.py's mixed load).
    """

    def __init__(self, *args: Any, niceness: int = 0, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.niceness = niceness

    def threadFactory(self, target: Callable[[], object], name: str) -> threading.Thread:  # noqa: N802
        niceness = self.niceness

        def lowered() -> None:
            lower_priority(niceness)
            target()

        return threading.Thread(target=lowered, name=name)


class ThreadPoolService(Service):
    """Owns a named ``ThreadPool``: started with the service, stopped with it.  Its threads
    run ``niceness`` below the reactor's priority (see ``BackgroundThreadPool``)."""

    def __init__(self, reactor: Any, name: str, threads: int, niceness: int = 0):
        self.pool = BackgroundThreadPool(minthreads=0, maxthreads=max(1, threads), name=name, niceness=niceness)
        self.runner = PoolRunner(reactor, self.pool)
        self.setName(name)

    def startService(self) -> None:
        super().startService()
        self.pool.start()

    def stopService(self) -> None:
        super().stopService()
        self.pool.stop()
