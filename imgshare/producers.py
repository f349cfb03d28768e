"""Producers that copy a byte range into a consumer (a twisted.web request):
``RangeSender`` pulls it from an open file, ``SocketFileSender`` has the kernel
send it from the file (``send_range`` picks one of the two), ``BodyRelay`` pushes
it on from an upstream HTTP response body."""

from __future__ import annotations

import errno
import os
from socket import socket as socket_type
from typing import IO, Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPullProducer, IPushProducer, ISSLTransport
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from zope.interface import implementer

from imgshare.storage import StorageUnavailable

CHUNK = 128 * 1024


class _FileRange:
    """What both file senders share: ``length`` bytes of ``file`` to send, the
    consumer while sending, and ``done``, which fires once every byte was written
    (or fails with why not); the file is closed at the end either way."""

    def __init__(self, file: IO[bytes], length: int):
        self._file = file
        self._remaining = length
        self._consumer: Any = None
        self.done: Deferred[None] = Deferred()

    def _read(self, size: int) -> bytes | None:
        """The next ``size`` bytes at most, counted as sent; None (and finished) when
        reading failed or the file ended early."""
        try:
            chunk = self._file.read(min(size, self._remaining))
        except OSError as e:
            self._finish(e)
            return None
        if not chunk:
            self._finish(OSError("the file ended early"))
            return None
        self._remaining -= len(chunk)
        return chunk

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


@implementer(IPullProducer)
class RangeSender(_FileRange):
    """Send ``length`` bytes of ``file`` from its current position to ``consumer``.

    Registered as a pull producer, so the consumer asks for each chunk only
    when its buffer has room: a slow client never makes memory grow.
    """

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
        chunk = self._read(CHUNK)
        if chunk is None:
            return
        self._consumer.write(chunk)
        if self._remaining <= 0:
            self._finish(None)


def send_range(file: IO[bytes], length: int, consumer: Any) -> Deferred[None]:
    """Send ``length`` bytes of ``file`` from its current position to ``consumer``: by
    ``sendfile(2)`` when the consumer is a twisted.web request on a plain TCP connection
    and the range is larger than one chunk (``SocketFileSender``), else by reading it
    into the consumer (``RangeSender``)."""
    socket = _plain_socket(consumer) if length > CHUNK else None
    if socket is not None:
        return SocketFileSender(file, length, socket).begin(consumer)
    return RangeSender(file, length).begin(consumer)


def _plain_socket(request: Any) -> Any:
    """The socket under ``request``'s connection when bytes written to it reach the client
    as they are (TCP, not TLS); None otherwise (tests' fake transports among them)."""
    if not hasattr(os, "sendfile") or getattr(request, "isSecure", lambda: True)():
        return None
    transport = getattr(getattr(request, "channel", None), "transport", None)
    if transport is None or ISSLTransport.providedBy(transport):
        return None
    get_handle = getattr(transport, "getHandle", None)  # through a PROXY-protocol wrapper too
    handle = get_handle() if get_handle is not None else None
    return handle if isinstance(handle, socket_type) else None


@implementer(IPushProducer)
class SocketFileSender(_FileRange):
    """Send ``length`` bytes of ``file`` from its current position to a twisted.web
    request's client with ``sendfile(2)``: the kernel copies from the page cache to the
    socket, and the bytes never pass through Python.

    Registered as the request's streaming producer.  It writes one chunk through the
    request (the response head goes with it), which fills the transport's buffer past
    its limit, so the transport pauses it; the transport resumes its producer only
    once it has sent everything it held, so from ``resumeProducing`` on, the socket is
    the stream's end, and ``sendfile`` goes on from there until the socket is full.
    Then one more chunk through the request waits for the client, as any write does:
    a slow client is paused, and the send timeout of ``ImgshareChannel`` sees it.  A
    socket that refuses ``sendfile`` falls back to writing chunks.  ``done`` as
    ``RangeSender``'s; the bytes count in the request's ``sentLength``.
    """

    #: Each write through the request: just more than the transport's buffer limit
    #: (64 KiB), so every such write pauses us until it has been sent, and as little
    #: as that, so the client gets the rest from ``sendfile`` (with 128 KiB copied at
    #: each full socket, wrk spent 12 % more CPU per 5.4 MB than on nginx's stream and
    #: /img/ reached 0.81-1.06 of nginx; with this, 1.00-1.14: bench/serve.py).
    WRITE = 64 * 1024 + 1

    def __init__(self, file: IO[bytes], length: int, socket: Any):
        super().__init__(file, length)
        self._socket = socket
        self._offset = file.tell()
        self._paused = False
        self._copy_only = False

    def begin(self, consumer: Any) -> Deferred[None]:
        self._consumer = consumer
        consumer.registerProducer(self, True)
        self._write_chunk()
        return self.done

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        if self._consumer is None:
            return
        if not self._copy_only:
            self._send_from_kernel()
        while self._consumer is not None and not self._paused:
            self._write_chunk()

    def _send_from_kernel(self) -> None:
        fd = self._socket.fileno()
        while self._remaining > 0:
            try:
                sent = os.sendfile(fd, self._file.fileno(), self._offset, self._remaining)
            except BlockingIOError:
                return  # the socket is full: the next chunk waits for the client
            except InterruptedError:
                continue
            except OSError as e:
                if e.errno in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                    self._copy_only = True  # this socket or file cannot: copy instead
                    return
                self._finish(ConnectionError(f"sendfile failed: {e.strerror or e}"))
                return
            if sent == 0:
                self._finish(OSError("the file ended early"))
                return
            self._offset += sent
            self._remaining -= sent
            self._consumer.sentLength += sent
        self._finish(None)

    def _write_chunk(self) -> None:
        """One chunk through the request (the transport pauses us if it cannot send it at once)."""
        if self._consumer is None:
            return
        if self._remaining <= 0:
            self._finish(None)
            return
        try:
            self._file.seek(self._offset)  # sendfile does not move the file's position
        except OSError as e:
            self._finish(e)
            return
        chunk = self._read(self.WRITE)
        if chunk is None:
            return
        self._offset += len(chunk)
        self._consumer.write(chunk)  # may pause us at once
        if self._remaining <= 0:
            self._finish(None)


@implementer(IPushProducer)
class BodyRelay(Protocol):
    """Copies ``length`` bytes of an upstream HTTP response body into ``consumer`` (a
    twisted.web request), with flow control both ways.

    Given to ``Response.deliverBody``, the relay registers itself as the consumer's
    streaming (push) producer and is a thin proxy for the upstream body's
    transport: bytes are written as they arrive, after skipping the first ``skip``
    and cut to ``length`` (a store that ignored the range sends more);
    ``pauseProducing``/``resumeProducing`` pause and resume the reading of the
    upstream socket, so when the client's socket buffer fills, twisted.web pauses
    us and TCP pushes back on the upstream; ``stopProducing`` (the client went
    away) closes the upstream connection.  At most one socket read (64 KiB) is
    ever written past the point where the consumer asked us to pause.

    A body of at most ``CHUNK`` bytes is held until it is whole and written at once, as
    ``RangeSender`` writes a small file: one write to the client instead of one per
    socket read, and an upstream failure midway leaves nothing written (the client
    then gets a clean 503, not a cut connection).

    ``done`` fires once every byte was written and the upstream response has ended
    (its connection then serves the next read); it fails with ``ConnectionError``
    when the consumer stopped, and with ``StorageUnavailable`` when the upstream
    failed, ended early or stalled for ``idle_timeout`` seconds while we were
    reading (the web layer then aborts the client connection: never a short 200).
    While the consumer holds us paused, no timeout runs: a slow client is never
    cut.  ``source`` names the upstream in those errors.
    """

    def __init__(self, consumer: Any, length: int, skip: int, reactor: Any, idle_timeout: float,
                 upstream_length: int | None = None, source: str = "upstream"):
        self.consumer = consumer
        self.idle_timeout = idle_timeout
        self.remaining = length
        self.skip = skip
        #: Body bytes upstream has still to send (None: unknown).
        self.upstream_left = upstream_length
        self.reactor = reactor
        self.source = source
        self.done: Deferred[None] = Deferred()
        #: Body bytes taken from upstream so far (after skipping), for tests and benchmarks.
        self.received = 0
        self.upstream_paused = False
        self.upstream_aborted = False
        self._registered = False
        self._upstream_ended = False
        self._idle: Any = None
        #: The pieces of a small body until it is whole (None: written as they arrive).
        self._held: list[bytes] | None = [] if length <= CHUNK else None
        notify = getattr(consumer, "notifyFinish", None)
        if notify is not None:  # a twisted.web request: hear of a client leaving at once
            notify().addErrback(lambda _: self.abort(ConnectionError("the client went away")))

    # upstream side (IProtocol)

    def connectionMade(self) -> None:
        self._arm_idle()
        self._register()

    def dataReceived(self, data: bytes) -> None:
        if self.done.called:
            return
        if self.upstream_left is not None:
            self.upstream_left -= len(data)
        if self.skip:
            dropped = min(self.skip, len(data))
            self.skip -= dropped
            data = data[dropped:]
        if len(data) > self.remaining:  # a store that ignored the range: the rest is not ours
            data = data[:self.remaining]
        self.received += len(data)
        if data:
            self.remaining -= len(data)
            if self._held is None:
                self.consumer.write(data)  # may pause us at once
            else:
                self._held.append(data)
                if self.remaining == 0:
                    self.consumer.write(b"".join(self._held))
                    self._held = None
        if self.remaining == 0:
            self._complete()
        elif not self.upstream_paused:
            self._arm_idle()

    def connectionLost(self, reason: Failure) -> None:
        self._upstream_ended = True
        self._cancel_idle()
        if self.done.called:
            return
        if not reason.check(ResponseDone, PotentialDataLoss):
            self._finish(StorageUnavailable(f"the {self.source} body failed midway: {reason.getErrorMessage()}"))
        elif self.remaining == 0:
            self._finish(None)
        else:
            self._finish(StorageUnavailable(f"the {self.source} body ended {self.remaining} bytes early"))

    def settle(self) -> None:
        """Re-apply our pause after ``Response.deliverBody``, which resumes the transport."""
        if self.upstream_paused and self.transport is not None:
            self.transport.pauseProducing()

    # consumer side (IPushProducer)

    def pauseProducing(self) -> None:
        self._pause_upstream()

    def resumeProducing(self) -> None:
        if not self.done.called:
            self._resume_upstream()

    def stopProducing(self) -> None:
        self.abort(ConnectionError("the client went away"))

    def abort(self, error: Exception) -> None:
        """Stop at once: close the upstream connection and fail ``done``."""
        self._finish(error)

    # helpers

    def _complete(self) -> None:
        """Every byte is written: finish now, or once the upstream response has ended."""
        if self._upstream_ended or self.upstream_left != 0:
            self._finish(None)
        else:  # the response's end is in the same socket read: it follows at once
            self._unregister()
            self._arm_idle()

    def _register(self) -> None:
        if self._registered or self.done.called:
            return
        self._registered = True
        try:
            self.consumer.registerProducer(self, True)
        except Exception:  # the request is gone (twisted.web drops its channel)
            self._registered = False
            self._finish(ConnectionError("the client went away"))

    def _unregister(self) -> None:
        if self._registered:
            self._registered = False
            try:
                self.consumer.unregisterProducer()
            except Exception:
                pass

    def _pause_upstream(self) -> None:
        self._cancel_idle()
        if not self.upstream_paused and not self._upstream_ended and self.transport is not None:
            self.upstream_paused = True
            self.transport.pauseProducing()

    def _resume_upstream(self) -> None:
        if self.upstream_paused and not self._upstream_ended and self.transport is not None:
            self.upstream_paused = False
            self.transport.resumeProducing()
        if not self._upstream_ended:
            self._arm_idle()

    def _arm_idle(self) -> None:
        if self._idle is not None and self._idle.active():
            self._idle.reset(self.idle_timeout)
        elif not self.done.called:
            self._idle = self.reactor.callLater(self.idle_timeout, self._stalled)

    def _cancel_idle(self) -> None:
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        self._idle = None

    def _stalled(self) -> None:
        self._idle = None
        self._finish(StorageUnavailable(f"{self.source} sent nothing for {self.idle_timeout:g} s"))

    def _finish(self, error: Exception | None) -> None:
        if self.done.called:
            return
        self._cancel_idle()
        self._unregister()
        if not self._upstream_ended and self.upstream_left != 0 and self.transport is not None:
            # Closing the socket with unread data resets the connection: upstream stops sending.
            # (A body read to its end instead goes back to the pool for the next read.)
            self.upstream_aborted = True
            self.transport.stopProducing()
        if error is None:
            self.done.callback(None)
        else:
            self.done.errback(error)
