"""One log line when an outage starts and one when it ends.

An ``Outage`` follows one backend (the database, the storage).  Several sources
may report on it (each pooled PostgreSQL connection, the operations run through
it): the outage starts when the first source fails and ends when the last one
has recovered, so eight connections lost at once are one line, not eight, and a
poll that keeps failing adds nothing.  Plugins may use it (it imports nothing of
IMGSHARE).
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

log = Logger()

#: The source the operations run through a backend report as.
OPERATIONS = "operations"


class Outage:
    """The state of one backend: ``down`` from the first failure until every failing
    source has recovered.  ``failed`` and ``recovered`` cost an attribute test when
    nothing changes (``recovered`` runs after every successful operation)."""

    def __init__(self, what: str, clock: Any):
        #: What is out, as the log names it: "the database", "storage".
        self.what = what
        self.clock = clock
        self._failing: dict[str, str] = {}
        self._since = 0.0
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
        if not self._failing:
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
        log.info("{what} is available again after {seconds:.1f} s ({failures} failed operation(s) meanwhile)",
                 what=_capital(self.what), seconds=self.clock.seconds() - self._since, failures=self.failures)


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _first_line(text: str) -> str:
    lines = str(text).strip().splitlines()
    return lines[0] if lines else "no reason given"
