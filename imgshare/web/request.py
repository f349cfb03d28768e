"""The HTTP request and site: bodies are limited while they arrive, never parsed here.

twisted.web's own ``Request`` parses multipart bodies in memory on the reactor
(seconds of blocked reactor for a large upload).  This request keeps the body
spooled (memory for small bodies, a temporary file for large ones), leaves
parsing to ``imgshare.web.forms`` in a worker thread, and refuses a body over
the site's ``max_body`` as soon as its length is known or exceeded: it answers
413 at once, half-closes, discards what is still in flight and drops the
connection shortly after.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.web import server

#: How long a refused client may keep sending before its connection is dropped.
LINGER_SECONDS = 2.0


class ImgshareRequest(server.Request):
    """A ``Request`` with a body limit and no form parsing on the reactor."""

    _refused = False
    _received = 0

    def __init__(self, channel: Any, *args: Any, **kwargs: Any):
        kwargs["parsePOSTFormSubmission"] = False
        super().__init__(channel, *args, **kwargs)

    def _max_body(self) -> int:
        return getattr(self.channel.site, "max_body", 32 * 1024 * 1024)

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self._max_body():
            super().gotLength(0)
            self._refuse()
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
            return
        self._received += len(data)
        if self._received > self._max_body():
            self._refuse()
            return
        super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self._refused:
            return
        super().requestReceived(command, path, version)

    def _refuse(self) -> None:
        """Answer 413 before the body is read, then close the connection."""
        self._refused = True
        self.requestHeaders.removeHeader(b"Expect")  # no "100 Continue" after this
        limit = self._max_body()
        body = json.dumps(
            {"status": "error", "error": f"request body too large: the limit is {limit} bytes"}
        ).encode() + b"\n"
        transport = self.channel.transport
        transport.write(
            b"HTTP/1.1 413 Content Too Large\r\n"
            b"Content-Type: application/json\r\n"
            b"Content-Length: %d\r\n"
            b"Connection: close\r\n\r\n%s" % (len(body), body)
        )
        try:
            transport.loseWriteConnection()
        except (AttributeError, NotImplementedError):
            transport.loseConnection()
            return
        reactor = getattr(self.channel.site, "reactor", None)
        if reactor is None:
            from twisted.internet import reactor  # type: ignore[no-redef]
        call = reactor.callLater(LINGER_SECONDS, transport.abortConnection)
        self.notifyFinish().addBoth(lambda _: call.active() and call.cancel())
        self.channel.setTimeout(None)


class ImgshareSite(server.Site):
    """A ``Site`` whose requests refuse bodies larger than ``max_body``."""

    requestFactory = ImgshareRequest

    def __init__(self, resource: Any, max_body: int, **kwargs: Any):
        super().__init__(resource, **kwargs)
        self.max_body = max_body
