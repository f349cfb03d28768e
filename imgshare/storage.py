"""The Storage interface: where originals and derived files live ("the cloud server").

Keys are built from database rows (``imgshare.domain.naming.storage_key``),
never from request paths.  Every method returns a Deferred and never blocks
the reactor.
"""

from __future__ import annotations

import re

from zope.interface import Attribute, Interface

_SEGMENT = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$")


def check_key(key: str) -> list[str]:
    """The path segments of a storage key; ValueError for anything that could escape
    a folder (every backend checks its keys with this, whatever it maps them to)."""
    segments = key.split("/")
    if not key or any(not _SEGMENT.match(s) or ".." in s for s in segments):
        raise ValueError(f"invalid storage key {key!r}")
    return segments


class StorageUnavailable(Exception):
    """Storage could not be reached or refused the operation."""


class ObjectMissing(Exception):
    """No object under that key."""


class IStorage(Interface):
    url = Attribute("The URL this storage was opened from.")

    def start():
        """Prepare the backend (create folders, clients)."""

    def stop():
        """Release resources; fires once they are released."""

    def probe():
        """A cheap check that storage answers (for /readyz); fails with StorageUnavailable."""

    def put(key, path, content_type):
        """Store the file at ``path`` under ``key``; fires once it is durable.

        Readers never see a partial object. Fails with StorageUnavailable."""

    def fetch(key, path):
        """Copy the object under ``key`` into the local file ``path``.

        Fails with ObjectMissing or StorageUnavailable."""

    def delete(key):
        """Remove ``key``; removing a missing key succeeds. Fails with StorageUnavailable."""

    def stream(key, consumer, offset, length, version=None):
        """Write ``length`` bytes of the object from ``offset`` to ``consumer``,
        honouring its flow control; fires when they are all written.

        ``version``, when given, is the SHA-256 (hex) the database records for the
        object: a cache in front of storage (``imgshare.cache``) keys its entries by
        it; backends ignore it.

        Fails with ObjectMissing (before writing anything) or StorageUnavailable."""


class IStorageFactory(Interface):
    """A Storage backend plugin, found by URL scheme."""

    schemes = Attribute("URL schemes handled, e.g. ('file',).")

    def open(url, reactor, runner):
        """Return an IStorage for ``url`` (not started yet)."""
