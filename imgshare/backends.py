"""Find the Database and Storage plugins for a URL's scheme."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from twisted.plugin import getPlugins

from imgshare import plugins
from imgshare.db import IDatabaseFactory
from imgshare.storage import IStorageFactory


def _find(interface: Any, url: str, role: str) -> Any:
    scheme = urlsplit(url).scheme
    known = []
    for factory in getPlugins(interface, plugins):
        if scheme in factory.schemes:
            return factory
        known.extend(factory.schemes)
    raise ValueError(f"no {role} backend for {url!r}; known schemes: {', '.join(sorted(known))}")


def open_database(url: str, reactor: Any, worker: Any) -> Any:
    """An unstarted IDatabase for ``url``."""
    return _find(IDatabaseFactory, url, "database").open(url, reactor, worker)


def open_storage(url: str, reactor: Any, worker: Any) -> Any:
    """An unstarted IStorage for ``url``."""
    return _find(IStorageFactory, url, "storage").open(url, reactor, worker)
