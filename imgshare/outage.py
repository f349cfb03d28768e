"""One log line when an outage starts and one when it ends.

An ``Outage`` follows one backend (the database, the storage).  Several sources
may report on it (each pooled PostgreSQL connection, the operations run through
it): the outage starts when the first source fails and ends when the last one
has recovered, so eight connections lost at once are one line, not eight, and a
poll that keeps failing adds nothing.  The end is logged once every source has
stayed well for ``SETTLE_SECONDS``: a pooled connection found dead only when it
is next used (after the others came back), or a database lock that times out
one write in ten, is part of the same outage, not a new one.  Plugins may use it
(it imports nothing of IMGSHARE).
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

log = Logger()

#: The source the operations run through a backend report as.
OPERATIONS = "operations"
#: How long every source must stay well before the outage's end is logged.
SETTLE_SECONDS = 2.0


class Outage:
    """The state of one backend: ``down`` from the first failure until every failing
    source has recovered.  ``failed`` and ``recovered`` cost an attribute test when
    nothing changes (``recovered`` runs after every successful operation)."""

    def __init__(self, what: str, clock: Any, settle: float = SETTLE_SECONDS):
        #: What is out, as the log names it: "the database", "storage".
        self.what = what
        self.clock = clock
        self.settle = settle
        self._failing: dict[str, str] = {}
        self._since = 0.0
        self._recovered_at = 0.0
        self._ending: Any = None  # the delayed call that logs the end
        #: Failures reported during the current outage (or the last one).
        self.failures = 0
        #: How many outages started so far.
        self.count = 0

    @property
    def down(self) -> bool:
        return bool(self._failing)

    @property
    def reason(self) -> str | None:
        """Why the outage started (None when there is none)."""
        return next(iter(self._failing.values()), None)

    def failed(self, reason: str, source: str = OPERATIONS) -> None:
        """``source`` failed because the backend is unavailable."""
        if self._ending is not None:  # back too briefly: the same outage goes on
            self._ending.cancel()
            self._ending = None
        elif not self._failing:
            self._since = self.clock.seconds()
            self.failures = 0
            self.count += 1
            log.warn("{what} is unavailable ({reason}); answering 503 until it is back",
                     what=_capital(self.what), reason=_first_line(reason))
        self.failures += 1
        self._failing.setdefault(source, reason)

    def recovered(self, source: str = OPERATIONS) -> None:
        """``source`` works again."""
        if not self._failing or self._failing.pop(source, None) is None or self._failing:
            return
        self._recovered_at = self.clock.seconds()
        self._ending = self.clock.callLater(self.settle, self._ended)

    def close(self) -> None:
        """Stop: an end still settling is logged now (nothing is left on the clock)."""
        if self._ending is not None:
            self._ending.cancel()
            self._ended()

    def _ended(self) -> None:
        self._ending = None
        log.info("{what} is available again after {seconds:.1f} s ({failures} failed operation(s) meanwhile)",
                 what=_capital(self.what), seconds=self._recovered_at - self._since, failures=self.failures)


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _first_line(text: str) -> str:
    lines = str(text).strip().splitlines()
    return lines[0] if lines else "no reason given"
