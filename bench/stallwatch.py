"""Reactor-stall instrumentation for a benchmarked server (imported by its process before twistd runs).

Times every iteration of the epoll reactor: the timed calls (``runUntilCurrent``)
and each descriptor's dispatch, both in wall-clock time and in the reactor
thread's own CPU time (``time.thread_time``), so that a long iteration tells
whether the reactor worked (CPU close to wall) or waited for the core or the GIL
(CPU far below wall); and every collection of the cyclic garbage collector made
on the reactor thread.  At shutdown it writes to ``$IMGSHARE_STALLWATCH`` the
distribution of iteration times and the slowest iterations with their parts.

    Imgshare(prelude=stallwatch.PRELUDE, env={"IMGSHARE_STALLWATCH": path})
"""

from __future__ import annotations

import gc
import os
import threading
import time

PRELUDE = "import stallwatch; stallwatch.install()"
#: Iterations at least this long (seconds) are kept with their parts.
SLOW = 0.015
KEEP = 40


class Watch:
    def __init__(self, path: str) -> None:
        self.path = path
        self.main = threading.get_ident()
        self.schedstat = f"/proc/self/task/{threading.get_native_id()}/schedstat"
        self.queued_started = 0.0
        #: Over the slow iterations: wall, CPU and run-queue seconds of the reactor.
        self.totals = [0.0, 0.0, 0.0]
        self.iterations: list[float] = []
        self.slow: list[tuple[float, float, list[tuple[float, float, str]]]] = []
        self.parts: list[tuple[float, float, str]] = []
        self.started = None
        self.cpu_started = None
        self.gc_started = 0.0
        self.collections: list[tuple[int, float]] = []
        #: The dispatch under way: when it started, and the reactor's stack caught during it.
        self.current: float | None = None
        self.caught: str | None = None
        self.gc_in_iteration: list[str] = []
        self.in_iteration = False
        #: Collections on the reactor thread outside any iteration (start-up, shutdown).
        self.outside = 0

    def queued(self) -> float:
        """Seconds the reactor thread has waited on a run queue for a core, so far (Linux
        schedstat): its time off the CPU while runnable, as opposed to blocked."""
        try:
            with open(self.schedstat) as f:
                return int(f.read().split()[1]) / 1e9
        except (OSError, IndexError, ValueError):
            return 0.0

    def begin(self) -> None:
        self.started = time.perf_counter()
        self.cpu_started = time.thread_time()
        self.queued_started = self.queued()
        self.parts = []
        self.gc_in_iteration = []
        self.in_iteration = True

    def part(self, what: str, wall: float, cpu: float) -> None:
        if self.caught:
            what = f"{what}\n          caught in: {self.caught}"
        self.caught = None
        self.current = None
        self.parts.append((wall, cpu, what))

    def watchdog(self) -> None:
        """Catch the reactor's stack once in every dispatch that runs past SLOW."""
        import sys
        import traceback

        while True:
            time.sleep(0.004)
            started = self.current
            if started is None or self.caught or time.perf_counter() - started < SLOW:
                continue
            frame = sys._current_frames().get(self.main)
            if frame is not None:
                frames = traceback.extract_stack(frame)[-7:]
                self.caught = " < ".join(f"{f.name} ({os.path.basename(f.filename)}:{f.lineno})"
                                         for f in reversed(frames))

    def end(self) -> None:
        self.in_iteration = False
        busy = sum(p[0] for p in self.parts)
        self.iterations.append(busy)
        if busy >= SLOW:
            cpu = sum(p[1] for p in self.parts)
            queued = self.queued() - self.queued_started
            self.totals[0] += busy
            self.totals[1] += cpu
            self.totals[2] += queued
            parts = sorted(self.parts, reverse=True)[:6]
            parts += [(0.0, 0.0, g) for g in self.gc_in_iteration]
            self.slow.append((busy, cpu, queued, parts))
            if len(self.slow) > 4 * KEEP:
                self.slow.sort(reverse=True)
                del self.slow[KEEP:]

    def on_gc(self, phase: str, info: dict) -> None:
        if threading.get_ident() != self.main:
            return
        if phase == "start":
            self.gc_started = time.perf_counter()
        elif info["generation"] == 2 and self._in_freeze():
            pass  # the start-up collection of memory.freeze_startup_objects, before any load
        elif not self.in_iteration:
            self.outside += 1
        else:
            seconds = time.perf_counter() - self.gc_started
            self.collections.append((info["generation"], seconds))
            if seconds > 0.002:
                self.gc_in_iteration.append(f"(within it: gc generation {info['generation']} "
                                            f"{seconds * 1000:.1f} ms, {info['collected']} collected)")

    @staticmethod
    def _in_freeze() -> bool:
        import sys

        frame = sys._getframe(1)
        while frame is not None:
            if frame.f_code.co_name == "freeze_startup_objects":
                return True
            frame = frame.f_back
        return False

    def write(self) -> None:
        its = sorted(self.iterations)
        with open(self.path, "w") as f:
            if not its:
                f.write("no iterations\n")
                return
            def q(x: float) -> float:
                return its[min(len(its) - 1, int(x * len(its)))] * 1000
            f.write(f"reactor iterations: {len(its)}; busy time per iteration p50 {q(0.5):.2f} ms, "
                    f"p99 {q(0.99):.2f} ms, p99.9 {q(0.999):.2f} ms, worst {its[-1] * 1000:.1f} ms; "
                    f"iterations over {SLOW * 1000:g} ms: {sum(1 for i in its if i >= SLOW)}\n")
            by_gen: dict[int, list[float]] = {}
            for gen, seconds in self.collections:
                by_gen.setdefault(gen, []).append(seconds)
            for gen, times in sorted(by_gen.items()):
                f.write(f"gc generation {gen} on the reactor: {len(times)} collections, "
                        f"worst {max(times) * 1000:.1f} ms, total {sum(times) * 1000:.0f} ms\n")
            wall, cpu, queued = self.totals
            f.write(f"in the iterations over {SLOW * 1000:g} ms, {wall * 1000:.0f} ms in all: the reactor thread "
                    f"ran {cpu * 1000:.0f} ms, waited for a core {queued * 1000:.0f} ms, and was blocked "
                    f"(the GIL, a system call) {max(0.0, wall - cpu - queued) * 1000:.0f} ms\n")
            import collections

            census = collections.Counter(type(o).__name__ for o in gc.get_objects(2))
            f.write(f"at shutdown: {gc.get_freeze_count()} objects frozen, {sum(census.values())} in the "
                    f"oldest generation; most common there: "
                    f"{', '.join(f'{n} {t}' for t, n in census.most_common(8))}\n")
            f.write(f"collections outside the reactor's iterations (start-up, shutdown), not counted: "
                    f"{self.outside}\n")
            self.slow.sort(reverse=True)
            for busy, cpu, queued, parts in self.slow[:KEEP]:
                f.write(f"\niteration busy {busy * 1000:.1f} ms: reactor CPU {cpu * 1000:.1f} ms, waiting for "
                        f"a core {queued * 1000:.1f} ms, blocked {max(0.0, busy - cpu - queued) * 1000:.1f} ms\n")
                for wall, pcpu, what in parts:
                    f.write(f"    {wall * 1000:7.1f} ms wall {pcpu * 1000:7.1f} ms CPU  {what}\n")


def install() -> None:
    path = os.environ.get("IMGSHARE_STALLWATCH")
    if not path:
        return
    from twisted.internet import base, epollreactor

    watch = Watch(path)
    registered = []
    gc.callbacks.append(watch.on_gc)
    real_log = epollreactor.log

    class TimedLog:
        def __getattr__(self, name: str):
            return getattr(real_log, name)

        @staticmethod
        def callWithLogger(selectable, f, *args):
            wall, cpu = time.perf_counter(), time.thread_time()
            watch.current = wall
            try:
                return real_log.callWithLogger(selectable, f, *args)
            finally:
                protocol = getattr(selectable, "protocol", None)
                what = f"{type(selectable).__name__}/{type(protocol).__name__ if protocol else '-'}"
                watch.part(what, time.perf_counter() - wall, time.thread_time() - cpu)

    epollreactor.log = TimedLog()
    threading.Thread(target=watch.watchdog, daemon=True, name="stallwatch").start()
    run_until_current = base.ReactorBase.runUntilCurrent
    do_poll = epollreactor.EPollReactor.doPoll

    def timed_run_until_current(self):
        if not registered:
            # At shutdown, not atexit: the service may end the process with os._exit.
            self.addSystemEventTrigger("after", "shutdown", watch.write)
            registered.append(True)
        watch.begin()
        wall, cpu = time.perf_counter(), time.thread_time()
        watch.current = wall
        try:
            return run_until_current(self)
        finally:
            watch.part("timed calls", time.perf_counter() - wall, time.thread_time() - cpu)

    def timed_poll(self, timeout):
        try:
            return do_poll(self, timeout)
        finally:
            watch.end()

    base.ReactorBase.runUntilCurrent = timed_run_until_current
    epollreactor.EPollReactor.doPoll = timed_poll
    epollreactor.EPollReactor.doIteration = timed_poll
