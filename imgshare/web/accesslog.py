"""Access lines written in batches to a file of their own (``--access-log PATH``).

Without the option, every access line is an event of the twistd log (one event,
one formatted and flushed line: about 30 µs of the reactor's time per request,
a tenth of a small ``/img/`` request).  With it, lines collect in memory and go
to the file in one ``write`` when ``BUFFER`` bytes have collected, ``FLUSH_AFTER``
seconds after the first line of a batch, and when the service stops, as nginx's
``access_log … buffer= flush=`` does.  A crash loses at most the last second of
lines.

Rotation needs no signal: at each batch the path is compared with the open file
(device and inode), and a file renamed or removed by logrotate is followed by a
new one at the path, as Python's ``WatchedFileHandler`` does.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.logger import Logger

log = Logger()

#: Bytes of lines held before they are written.
BUFFER = 64 * 1024
#: Seconds a line may wait in memory.
FLUSH_AFTER = 1.0
#: The file's mode when it is created.
MODE = 0o640


class AccessLog:
    """A file of access lines, written in batches on the reactor's thread.

    ``write`` is what ``twisted.web.http.HTTPFactory.log`` calls with each line;
    ``close`` (the site's ``stopFactory``) writes what is left."""

    def __init__(self, path: str, reactor: Any, buffer: int = BUFFER, flush_after: float = FLUSH_AFTER):
        self.path = path
        self.reactor = reactor
        self.buffer = buffer
        self.flush_after = flush_after
        self._lines: list[str] = []
        self._size = 0
        self._timer: Any = None
        self._fd = -1
        self._failed = False

    def _open(self) -> int:
        """Open the file for appending (created if missing); raises OSError."""
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, MODE)

    def open(self) -> None:
        """Open the file now (start-up does, to refuse a path it cannot write); raises OSError."""
        self._follow_rotation()

    def write(self, line: str) -> None:
        self._lines.append(line)
        self._size += len(line)
        if self._size >= self.buffer:
            self.flush()
        elif self._timer is None:
            self._timer = self.reactor.callLater(self.flush_after, self.flush)

    def flush(self) -> None:
        """Write the lines held, to the file now at the path."""
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
        if not self._lines:
            return
        data = "".join(self._lines).encode("utf-8", "replace")
        self._lines.clear()
        self._size = 0
        try:
            self._follow_rotation()
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as e:
            if not self._failed:  # once per failure, not once per batch
                log.error("Cannot write the access log {path}: {error}; its lines are lost until it can",
                          path=self.path, error=e.strerror or e)
            self._failed = True
            return
        if self._failed:
            log.info("The access log {path} is written again", path=self.path)
            self._failed = False

    def _follow_rotation(self) -> None:
        """Reopen the path when the open file is no longer the one it names."""
        try:
            named = os.stat(self.path)
        except FileNotFoundError:
            named = None
        held = os.fstat(self._fd) if self._fd >= 0 else None
        if named is None or held is None or (named.st_dev, named.st_ino) != (held.st_dev, held.st_ino):
            fd = self._open()
            if self._fd >= 0:
                os.close(self._fd)
            self._fd = fd

    def close(self) -> None:
        """Write what is held and close the file (a later batch opens it again)."""
        self.flush()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
