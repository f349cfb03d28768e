"""Find the Database and Storage plugins for a URL's scheme."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

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


def missing_database(url: str) -> str | None:
    """Where the database at ``url`` would be created if opening it now would create it
    (a SQLite file that does not exist yet), else None."""
    return _find(IDatabaseFactory, url, "database").missing(url)


#: Query parameters whose values are secrets (a libpq ``password=``, an S3 secret key).
_SECRET_PARAMETER = re.compile(r"pass|secret|token|key|credential", re.IGNORECASE)


def redact_url(url: str) -> str:
    """``url`` with any password (``user:***@host``) and secret-looking query values
    replaced by ``***``, for messages and logs; unchanged when it holds none."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            netloc = userinfo.split(":", 1)[0] + ":***@" + host
    query = parse_qsl(parts.query, keep_blank_values=True)
    hidden = [(k, "***" if _SECRET_PARAMETER.search(k) and v else v) for k, v in query]
    if netloc == parts.netloc and hidden == query:
        return url
    rebuilt = urlencode(hidden, safe="*/:") if hidden != query else parts.query
    return urlunsplit((parts.scheme, netloc, parts.path, rebuilt, parts.fragment))


def open_storage(url: str, reactor: Any, worker: Any) -> Any:
    """An unstarted IStorage for ``url``."""
    return _find(IStorageFactory, url, "--storage").open(url, reactor, worker)
