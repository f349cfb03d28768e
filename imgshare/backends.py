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
    raise ValueError(f"{role} {url!r}: no backend for {scheme + '://' if scheme else 'it'}; "
                     f"known: {', '.join(s + '://' for s in sorted(known))}")


def check_urls(db: str, storage: str) -> None:
    """ValueError unless a backend is installed for each URL's scheme."""
    _find(IDatabaseFactory, db, "--db")
    _find(IStorageFactory, storage, "--storage")


def open_database(url: str, reactor: Any, worker: Any) -> Any:
    """An unstarted IDatabase for ``url``."""
    return _find(IDatabaseFactory, url, "--db").open(url, reactor, worker)


def open_storage(url: str, reactor: Any, worker: Any) -> Any:
    """An unstarted IStorage for ``url``."""
    return _find(IStorageFactory, url, "--storage").open(url, reactor, worker)
