"""Pull producers that copy a byte range of an open file into a consumer."""

from __future__ import annotations

from typing import IO, Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPullProducer
from zope.interface import implementer

CHUNK = 128 * 1024


@implementer(IPullProducer)
class RangeSender:
    """Send ``length`` bytes of ``file`` from its current position to ``consumer``.

    Registered as a pull producer, so the consumer asks for each chunk only
    when its buffer has room: a slow client never makes memory grow.
    """

    def __init__(self, file: IO[bytes], length: int):
        self._file = file
        self._remaining = length
        self._consumer: Any = None
        self.done: Deferred[None] = Deferred()

    def begin(self, consumer: Any) -> Deferred[None]:
        self._consumer = consumer
        if self._remaining <= 0:
            self._finish(None)
        elif self._remaining <= CHUNK:
            # Small enough for one write: no producer round trips through the reactor.
            self.resumeProducing()
            if not self.done.called:
                self._finish(OSError("the file ended early"))
        else:
            consumer.registerProducer(self, False)
        return self.done

    def resumeProducing(self) -> None:
        if self._consumer is None:
            return
        try:
            chunk = self._file.read(min(CHUNK, self._remaining))
        except OSError as e:
            self._finish(e)
            return
        if not chunk:
            self._finish(OSError("the file ended early"))
            return
        self._remaining -= len(chunk)
        self._consumer.write(chunk)
        if self._remaining <= 0:
            self._finish(None)

    def stopProducing(self) -> None:
        self._finish(ConnectionError("the client went away"))

    def _finish(self, error: Exception | None) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is None and self.done.called:
            return
        self._file.close()
        if consumer is not None and getattr(consumer, "producer", None) is self:
            consumer.unregisterProducer()
        if not self.done.called:
            if error is None:
                self.done.callback(None)
            else:
                self.done.errback(error)
