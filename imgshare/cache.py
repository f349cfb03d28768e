"""A local disk cache of hot objects in front of remote storage (``--cache-dir``, ``--cache-size``).

``CachedStorage`` wraps an IStorage.  A read that names the object's version
(``stream(..., version=DIGEST)``: ``/img/`` passes the row's SHA-256) is served
from ``cache-dir`` when an entry for that key *and* that digest is there, with
the producers local-files storage uses (``producers.send_range``, the file opened on the
reactor): a hit costs what ``/img/`` on local files costs.  An entry's name is
``sha256(key)`` and the digest, so a deleted image, or a name used again for
other bytes, can never meet a stale entry: its row has another digest, or none
(the row check of ``imgshare.web.files`` comes first).

A miss streams from the wrapped storage as before and starts a background fill
(one per entry at a time, at most ``FILLS`` at once, others are simply not
filled): the object is fetched into a hidden temporary file in the cache folder
(in the I/O runner), its SHA-256 is checked against the digest (a mismatch is
never kept), and it is renamed into place; only renamed entries are in the
index, so a partly written one is never served.  Memory is bounded: the index
holds one small record per entry, fills copy through files.

Eviction is least recently used, by bytes: after each fill, the oldest entries
are removed until the total is at most ``cache-size``.  The index is rebuilt at
start by scanning the folder in the runner (leftover temporary files are
removed; entries are ordered by modification time, the time they were filled).
A file that vanished under the cache is dropped from the index and the read
falls back to the wrapped storage.  ``delete`` removes the key's entries too.

With local-files storage the cache is not used (the objects are local files
already); start-up says so in the log.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import OrderedDict
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from imgshare.producers import send_range
from imgshare.storage import IStorage

log = Logger()

#: Background fills running at once, at most.
FILLS = 4
_ENTRY = re.compile(r"^([0-9a-f]{64})\.([0-9a-f]{64})$")
TMP_PREFIX = ".tmp-"


def entry_name(key: str, version: str) -> str:
    """The file name of the entry of ``key`` at ``version`` (a SHA-256 hex digest)."""
    return f"{hashlib.sha256(key.encode()).hexdigest()}.{version}"


@implementer(IStorage)
class CachedStorage:
    """An IStorage: ``backend`` with a cache of at most ``size`` bytes in ``folder``."""

    def __init__(self, backend: Any, folder: str, size: int, runner: Any):
        self._backend = backend
        self.folder = os.path.abspath(folder)
        self.size = size
        self._runner = runner
        #: name -> bytes, least recently used first.
        self.entries: OrderedDict[str, int] = OrderedDict()
        #: sha256(key) -> the names of its entries.
        self._by_key: dict[str, set[str]] = {}
        self.total = 0
        #: Entries being filled -> True while still wanted (a delete clears it).
        self.filling: dict[str, bool] = {}
        self.hits = 0
        self.misses = 0
        self.fills: list[Deferred[None]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    @property
    def storage(self) -> Any:
        return self._backend

    # lifecycle

    def start(self) -> Deferred[None]:
        """Start the wrapped storage, then rebuild the index from the folder (in the runner)."""
        return Deferred.fromCoroutine(self._start())

    async def _start(self) -> None:
        await self._backend.start()
        found = await self._runner.run(self._scan)
        for name, size in found:
            self._add(name, size)
        await self._evict()
        log.info("Storage cache in {folder}: {count} entries, {total} of {size} bytes",
                 folder=self.folder, count=len(self.entries), total=self.total, size=self.size)

    def _scan(self) -> list[tuple[str, int]]:
        """Every complete entry in the folder, oldest first; temporary files are removed."""
        os.makedirs(self.folder, exist_ok=True)
        found = []
        for item in os.scandir(self.folder):
            if item.name.startswith(TMP_PREFIX):
                try:
                    os.unlink(item.path)
                except OSError:
                    pass
                continue
            if not _ENTRY.match(item.name) or not item.is_file():
                continue
            try:
                info = item.stat()
            except OSError:
                continue
            found.append((info.st_mtime, item.name, info.st_size))
        found.sort()
        return [(name, size) for _, name, size in found]

    def stop(self) -> Any:
        return self._backend.stop()

    # IStorage

    def probe(self) -> Deferred[None]:
        return self._backend.probe()

    def put(self, key: str, path: str, content_type: str) -> Deferred[None]:
        return self._backend.put(key, path, content_type)

    def fetch(self, key: str, path: str) -> Deferred[None]:
        return self._backend.fetch(key, path)

    def delete(self, key: str) -> Deferred[None]:
        key_hash = hashlib.sha256(key.encode()).hexdigest()
        for name in self._by_key.pop(key_hash, set()):
            self.total -= self.entries.pop(name, 0)
            self._runner.run(_unlink, os.path.join(self.folder, name)).addErrback(lambda _: None)
        for name in self.filling:
            if name.startswith(key_hash):
                self.filling[name] = False
        return self._backend.delete(key)

    def stream(self, key: str, consumer: Any, offset: int, length: int, version: str | None = None) -> Deferred[None]:
        if version is None:
            return self._backend.stream(key, consumer, offset, length)
        name = entry_name(key, version)
        if name in self.entries:
            try:
                f = open(os.path.join(self.folder, name), "rb")  # noqa: SIM115 - closed by the sender
            except OSError:
                self._forget(name)  # vanished under us: read from storage
            else:
                self.hits += 1
                self.entries.move_to_end(name)
                f.seek(offset)
                return send_range(f, length, consumer)
        self.misses += 1
        if name not in self.filling and len(self.filling) < FILLS:
            self.filling[name] = True
            self.fills.append(Deferred.fromCoroutine(self._fill(key, version, name)))
            self.fills = [d for d in self.fills if not d.called]
        return self._backend.stream(key, consumer, offset, length)

    # helpers

    def _add(self, name: str, size: int) -> None:
        if name in self.entries:
            self.total -= self.entries[name]
        self.entries[name] = size
        self.total += size
        self._by_key.setdefault(name.split(".", 1)[0], set()).add(name)

    def _forget(self, name: str) -> None:
        size = self.entries.pop(name, None)
        if size is not None:
            self.total -= size
        names = self._by_key.get(name.split(".", 1)[0])
        if names is not None:
            names.discard(name)
            if not names:
                del self._by_key[name.split(".", 1)[0]]

    async def _fill(self, key: str, version: str, name: str) -> None:
        tmp = os.path.join(self.folder, f"{TMP_PREFIX}{name}")
        try:
            await self._backend.fetch(key, tmp)
            size = await self._runner.run(_check_and_place, tmp, version, os.path.join(self.folder, name))
            if size is None:
                log.warn("{key} in storage does not have the digest recorded for it: not cached", key=key)
            elif not self.filling.get(name) or size > self.size:
                await self._runner.run(_unlink, os.path.join(self.folder, name))
            else:
                self._add(name, size)
                await self._evict()
        except Exception as e:  # the read itself is served by storage: a fill is only a bonus
            log.info("could not cache {key}: {error}", key=key, error=e)
            await self._runner.run(_unlink, tmp)
        finally:
            self.filling.pop(name, None)

    async def _evict(self) -> None:
        doomed = []
        while self.total > self.size and self.entries:
            name = next(iter(self.entries))
            self._forget(name)
            doomed.append(os.path.join(self.folder, name))
        if doomed:
            await self._runner.run(_unlink_all, doomed)


def _check_and_place(tmp: str, version: str, target: str) -> int | None:
    """Rename ``tmp`` to ``target`` if its SHA-256 is ``version``; its size, or None (and
    ``tmp`` removed) if not."""
    digest = hashlib.sha256()
    with open(tmp, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    if digest.hexdigest() != version:
        os.unlink(tmp)
        return None
    size = os.path.getsize(tmp)
    os.replace(tmp, target)
    return size


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _unlink_all(paths: list[str]) -> None:
    for path in paths:
        _unlink(path)


def with_cache(storage: Any, folder: str, size: int, runner: Any) -> Any:
    """``storage`` behind a cache in ``folder`` (``--cache-dir``), or ``storage`` itself
    without a folder or on local-files storage (already local: logged)."""
    if not folder:
        return storage
    if storage.url.startswith("file:"):
        log.warn("--cache-dir is ignored: storage is local files already ({url})", url=storage.url)
        return storage
    return CachedStorage(storage, folder, size, runner)

