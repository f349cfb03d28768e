"""The embedded Storage: a local directory, written atomically.

An object is written to a hidden temporary file beside its final name,
flushed to disk, then renamed into place, so a reader sees either nothing or
the whole object.  Keys are checked again here, so no key can name a path
outside the root.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any
from urllib.parse import unquote, urlsplit

from twisted.internet.defer import Deferred, fail, succeed
from twisted.plugin import IPlugin
from zope.interface import implementer

from imgshare.producers import send_range
from imgshare.storage import IStorage, IStorageFactory, ObjectMissing, StorageUnavailable, check_key


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@implementer(IStorage)
class LocalStorage:
    """Objects as files under ``root``."""

    def __init__(self, url: str, root: str, runner: Any):
        self.url = url
        self.root = os.path.abspath(root)
        self._runner = runner

    def _path(self, key: str) -> str:
        return os.path.join(self.root, *check_key(key))

    def start(self) -> Deferred[None]:
        return self._runner.run(os.makedirs, self.root, exist_ok=True)

    def stop(self) -> Deferred[None]:
        return succeed(None)

    def probe(self) -> Deferred[None]:
        """The folder is there and writable (a ``stat``, in the runner: a hung mount
        must not hang the reactor)."""
        return self._runner.run(self._probe)

    def _probe(self) -> None:
        import stat

        try:
            info = os.stat(self.root)
        except OSError as e:
            raise StorageUnavailable(f"cannot reach {self.root}: {e.strerror or e}") from e
        if not stat.S_ISDIR(info.st_mode):
            raise StorageUnavailable(f"{self.root} is not a folder")
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StorageUnavailable(f"{self.root} is not writable")

    def put(self, key: str, path: str, content_type: str) -> Deferred[None]:
        return self._runner.run(self._put, self._path(key), path)

    def _put(self, target: str, source: str) -> None:
        folder = os.path.dirname(target)
        try:
            os.makedirs(folder, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
                    shutil.copyfileobj(src, out, 1024 * 1024)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, target)
            except BaseException:
                os.unlink(tmp)
                raise
            _fsync_dir(folder)
        except OSError as e:
            raise StorageUnavailable(f"cannot write {target}: {e.strerror or e}") from e

    def fetch(self, key: str, path: str) -> Deferred[None]:
        return self._runner.run(self._fetch, self._path(key), path)

    def _fetch(self, source: str, target: str) -> None:
        try:
            shutil.copyfile(source, target)
        except FileNotFoundError as e:
            raise ObjectMissing(source) from e
        except OSError as e:
            raise StorageUnavailable(str(e)) from e

    def delete(self, key: str) -> Deferred[None]:
        return self._runner.run(self._delete, self._path(key))

    @staticmethod
    def _delete(path: str) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise StorageUnavailable(str(e)) from e

    def stream(self, key: str, consumer: Any, offset: int, length: int, version: str | None = None) -> Deferred[None]:
        # Opening and reading a local file is what twisted.web.static does on the
        # reactor too: each read is one bounded chunk.  Unbuffered, as the senders read
        # whole chunks (a buffered file costs an isatty ioctl and a seek more).
        try:
            f = open(self._path(key), "rb", buffering=0)  # noqa: SIM115 - closed by the sender
        except FileNotFoundError:
            return fail(ObjectMissing(key))
        except OSError as e:
            return fail(StorageUnavailable(str(e)))
        if offset:
            f.seek(offset)
        return send_range(f, length, consumer)


@implementer(IPlugin, IStorageFactory)
class LocalStorageFactory:
    schemes = ("file",)

    def open(self, url: str, reactor: Any, runner: Any) -> LocalStorage:
        parts = urlsplit(url)
        root = unquote(parts.netloc + parts.path)
        if not root:
            raise ValueError("a file URL needs a folder, e.g. file:///var/lib/imgshare/storage")
        return LocalStorage(url, root, runner)


local_files_backend = LocalStorageFactory()
